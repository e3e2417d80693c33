"""Nightly reproducer job: run a scenario matrix and write a report set.

The run's full output goes to a work directory outside the repository,
DIR/<id>/ with `nightly --out DIR`, else $IPITRACE_NIGHTLY_DIR/<id>/
(default /var/tmp/ipitrace-nightly/<id>/):
  manifest.json   exact inputs: QEMU binary and series hash, kernel, module
                  and test module, agent version, repo commit, every
                  scenario's full text
  <scenario>/     per-run snapshot metadata: report.json (verdicts),
                  faults.jsonl, console.log, manifest.json (regions are kept
                  only for failed runs)
  summary.json    one row per scenario: outcome, pass/fail, failures, counts
  junit.xml       one testcase per scenario
  report.html     tables plus plots: per-stage latency, injected-vs-found
                  confusion matrix, trend across nights
Into the repository goes only results/runs/<id>.json, small enough to
commit: the manifest (inputs, scenario texts), one row per scenario
(outcome, pass/fail, failures, requests, verdict counts, injected and found
losses, per-stage latency count/p50/p99/max in microseconds), the
confusion matrix and where the full output was written.
A past run is re-run by id (`nightly --rerun ID`): the same scenario texts,
recorded in results/runs/ID.json, are run again under a new id.
"""
import datetime
import hashlib
import html
import json
import os
import subprocess
import xml.etree.ElementTree as ET

from . import abi, artifacts, runner, scenario

RUNS = os.path.join(abi.REPO, "results", "runs")
WORK = os.environ.get("IPITRACE_NIGHTLY_DIR", "/var/tmp/ipitrace-nightly")
STAGES = ("icr", "route", "inject", "kick", "entry")


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file(path):
    return {"path": path, "sha256": _sha256(path) if path else ""}


def inputs():
    qemu = artifacts.qemu()
    guest = artifacts.guest()
    agent = artifacts.agent()
    ver = subprocess.run([agent, "--version"], stdout=subprocess.PIPE, text=True).stdout.strip()
    try:
        commit = subprocess.run(["git", "-C", abi.REPO, "rev-parse", "HEAD"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    return {
        "qemu": {"path": qemu, "sha256": _sha256(qemu)},
        "kernel": {"path": guest["KERNEL"], "sha256": _sha256(guest["KERNEL"]),
                   "version": artifacts.kernel_release(guest["KERNEL"])},
        "module": _file(guest.get("MODULE", "")),
        "test_module": _file(guest.get("TEST_MODULE", "")),
        "agent": {"path": agent, "version": ver, "sha256": _sha256(agent)},
        "repo_commit": commit,
    }


def new_id():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")


def run_matrix(scenarios, run_id=None, runs_dir=RUNS, work_dir=None, log=print,
               rerun_of=None):
    run_id = run_id or new_id()
    out = os.path.join(work_dir or WORK, run_id)
    if os.path.exists(summary_path(runs_dir, run_id)):
        raise FileExistsError(summary_path(runs_dir, run_id))
    os.makedirs(out, exist_ok=False)
    manifest = {"id": run_id, "rerun_of": rerun_of, "started": new_id(),
                "inputs": inputs(),
                "scenarios": [{"name": s["name"], "text": open(s["path"]).read()}
                              for s in scenarios]}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    results = []
    partial = False
    try:
        for s in scenarios:
            log(f"nightly {run_id}: {s['name']}")
            results.append(runner.run_scenario(s, os.path.join(out, s["name"]),
                                               keep_regions=False, log=log))
    except KeyboardInterrupt:
        partial = True
        log("nightly: interrupted; partial results kept")
    except OSError as e:
        partial = True
        log(f"nightly: cannot write results ({e}); partial results kept")
    summary = write_reports(out, manifest, results, partial, runs_dir)
    log(f"nightly {run_id}: full reports in {out}, summary in "
        f"{summary_path(runs_dir, run_id)}")
    return out, summary


def rerun(run_id, runs_dir=RUNS, work_dir=None, log=print):
    manifest = json.load(open(summary_path(runs_dir, run_id)))
    new = new_id()
    scen_dir = os.path.join(work_dir or WORK, new + "-scenarios")
    os.makedirs(scen_dir)
    scs = []
    for s in manifest["scenarios"]:
        p = os.path.join(scen_dir, s["name"] + ".toml")
        with open(p, "w") as f:
            f.write(s["text"])
        scs.append(scenario.load(p))
    return run_matrix(scs, run_id=new, runs_dir=runs_dir, work_dir=work_dir, log=log,
                      rerun_of=run_id)


def confusion(results):
    """{injected stage or 'none': {found verdict or 'none': count}}"""
    m = {}
    for r in results:
        found = {(x["source_vcpu"], x["target_vcpu"]): x["verdict"] for x in r["losses"]}
        used = set()
        for t in r["truth"]:
            key = (t["source"], t["target"])
            v = found.get(key, "none")
            used.add(key)
            m.setdefault(t["stage"], {}).setdefault(v, 0)
            m[t["stage"]][v] += 1
        for key, v in found.items():
            if key not in used:
                m.setdefault("none", {}).setdefault(v, 0)
                m["none"][v] += 1
        if not r["truth"] and not r["losses"]:
            m.setdefault("none", {}).setdefault("none", 0)
            m["none"]["none"] += 1
    return m


def write_junit(path, run_id, results):
    suite = ET.Element("testsuite", name=f"ipitrace-nightly-{run_id}", tests=str(len(results)),
                       failures=str(sum(1 for r in results if not r["passed"])))
    for r in results:
        tc = ET.SubElement(suite, "testcase", classname="ipitrace.nightly", name=r["scenario"],
                           time=f"{r['duration']:.1f}")
        if not r["passed"]:
            f = ET.SubElement(tc, "failure", message=r["outcome"])
            f.text = "\n".join(r["failures"])
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def _plots(out, results, conf, trend):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pngs = []
    # per-stage latency (from the agent's per-stage distributions)
    # The agent's JSON: [{"stage": "send->IRR", "count", "p50_us", "p99_us",
    # "max_us", ...}, ...], one entry per stage.
    lat = [(r["scenario"], r["latency"]) for r in results
           if isinstance(r.get("latency"), list) and r["latency"]]
    if lat:
        names = [e["stage"] for e in lat[0][1]]
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.5))
        for ax, q in zip(axes, ("p50_us", "p99_us", "max_us")):
            w = 0.8 / len(lat)
            for k, (name, entries) in enumerate(lat):
                by = {e["stage"]: e.get(q, 0) or 0 for e in entries}
                ax.bar([i + k * w for i in range(len(names))],
                       [max(by.get(n, 0), 0.1) for n in names], width=w, label=name,
                       bottom=0.05)
            ax.set_xticks([i + 0.4 - w / 2 for i in range(len(names))], names,
                          rotation=20, fontsize=7)
            ax.set_yscale("log")
            ax.set_ylim(bottom=0.05)
            ax.set_title(q.replace("_us", ""))
        axes[0].set_ylabel("microseconds")
        axes[-1].legend(fontsize=6)
        fig.suptitle("per-stage latency of served-by-ipi requests, per scenario")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "latency-percentiles.png"))
        plt.close(fig)
        pngs.append("latency-percentiles.png")
        # Histograms (the agent's log2 buckets of TSC ticks), all scenarios
        # summed per stage, in microseconds.
        khz = next((r.get("tsc_khz") for r in results if r.get("tsc_khz")), None)
        sums = {}
        for _, entries in lat:
            for e in entries:
                c = (e.get("histogram") or {}).get("counts") or []
                total = sums.setdefault(e["stage"], [])
                total.extend([0] * (len(c) - len(total)))
                for b, n in enumerate(c):
                    total[b] += n
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for name in names:
            total = sums.get(name, [])
            if not any(total):
                continue
            edges = [(2 ** (b - 1) if b else 0) for b in range(len(total))]
            xs = [x * 1000.0 / khz if khz else x for x in edges]
            ax.step([max(x, 1e-3) for x in xs], total, where="post", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("latency (us, log2 buckets)" if khz else "latency (TSC ticks, log2 buckets)")
        ax.set_ylabel("IPIs")
        ax.legend(fontsize=7)
        ax.set_title("per-stage latency histograms, all scenarios")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "latency.png"))
        plt.close(fig)
        pngs.append("latency.png")
    rows = sorted(conf)
    cols = sorted({c for r in conf.values() for c in r})
    if rows and cols:
        fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(cols), 1.2 + 0.6 * len(rows)))
        data = [[conf[r].get(c, 0) for c in cols] for r in rows]
        ax.imshow(data, cmap="Blues")
        ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
        ax.set_yticks(range(len(rows)), rows)
        for i, row in enumerate(data):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center")
        ax.set_xlabel("verdict found by the agent")
        ax.set_ylabel("stage injected")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "confusion.png"))
        plt.close(fig)
        pngs.append("confusion.png")
    if trend:
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot([t["id"] for t in trend], [t["pass_rate"] for t in trend], marker="o")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("scenarios passed")
        ax.tick_params(axis="x", rotation=30)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "trend.png"))
        plt.close(fig)
        pngs.append("trend.png")
    return pngs


def summary_path(runs_dir, run_id):
    return os.path.join(runs_dir, run_id + ".json")


def _us(x):
    return round(x, 2) if isinstance(x, (int, float)) else x


def run_summary(manifest, summary, full_output):
    """What results/runs/<id>.json keeps of a run: no plots, no per-scenario
    files, no histograms; enough to judge the night and to re-run it."""
    rows = []
    for r in summary["results"]:
        rows.append({
            "scenario": r["scenario"], "outcome": r["outcome"], "detail": r.get("detail", ""),
            "passed": r["passed"], "failures": r["failures"],
            "duration_s": round(r.get("duration", 0.0), 1), "requests": r["requests"],
            "verdict_counts": r.get("verdict_counts", {}),
            "injected": len(r.get("truth") or []), "losses_found": len(r.get("losses") or []),
            "latency_us": {e["stage"]: {"count": e.get("count"), "p50": _us(e.get("p50_us")),
                                        "p99": _us(e.get("p99_us")), "max": _us(e.get("max_us"))}
                           for e in (r.get("latency") or []) if isinstance(e, dict)},
            "partial": bool(r.get("partial")),
        })
    return {"id": manifest["id"], "rerun_of": manifest.get("rerun_of"),
            "started": manifest.get("started"), "partial": summary["partial"],
            "passed": summary["passed"], "failed": summary["failed"],
            "full_output": full_output, "inputs": manifest.get("inputs", {}),
            "scenarios": manifest.get("scenarios", []), "results": rows,
            "confusion": summary["confusion"]}


def trend_of(runs_dir):
    out = []
    if not os.path.isdir(runs_dir):
        return out
    for fn in sorted(os.listdir(runs_dir)):
        if not fn.endswith(".json"):
            continue
        try:
            s = json.load(open(os.path.join(runs_dir, fn)))
        except (OSError, ValueError):
            continue
        n = len(s.get("results", []))
        out.append({"id": fn[:-5], "pass_rate": (s.get("passed", 0) / n) if n else 0.0})
    return out


def write_reports(out, manifest, results, partial, runs_dir):
    """The full report set into out (outside the repository) and the run's
    summary into runs_dir/<id>.json."""
    summary = {"id": manifest["id"], "partial": partial, "passed":
               sum(1 for r in results if r["passed"]), "failed":
               sum(1 for r in results if not r["passed"]), "results": results,
               "confusion": confusion(results)}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    write_junit(os.path.join(out, "junit.xml"), manifest["id"], results)
    os.makedirs(runs_dir, exist_ok=True)
    with open(summary_path(runs_dir, manifest["id"]), "w") as f:
        json.dump(run_summary(manifest, summary, out), f, indent=1)
        f.write("\n")
    trend = trend_of(runs_dir)
    pngs = _plots(out, results, summary["confusion"], trend)
    rows = "\n".join(
        f"<tr><td>{html.escape(r['scenario'])}</td><td>{'PASS' if r['passed'] else 'FAIL'}</td>"
        f"<td>{html.escape(r['outcome'])}</td><td>{r['requests']}</td>"
        f"<td>{html.escape('; '.join(r['failures']))}</td></tr>" for r in results)
    inp = manifest["inputs"]
    with open(os.path.join(out, "report.html"), "w") as f:
        f.write(f"""<!doctype html><html><head><meta charset="utf-8">
<title>ipitrace nightly {manifest['id']}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{border:1px solid #ccc;padding:4px}}
table{{border-collapse:collapse}}</style></head><body>
<h1>ipitrace nightly {manifest['id']}{' (PARTIAL)' if partial else ''}</h1>
<p>{summary['passed']} passed, {summary['failed']} failed.
QEMU {html.escape(inp['qemu']['sha256'][:16])}, kernel {html.escape(inp['kernel']['version'])},
agent {html.escape(inp['agent']['version'])}, commit {html.escape(inp['repo_commit'][:12])}.</p>
<table><tr><th>scenario</th><th>result</th><th>outcome</th><th>requests</th><th>failures</th></tr>
{rows}</table>
{''.join(f'<h2>{p[:-4]}</h2><img src="{p}">' for p in pngs)}
</body></html>""")
    return summary
