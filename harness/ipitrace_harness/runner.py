"""Run one scenario on one VM: boot, load, snapshot, analyze, judge."""
import json
import os
import subprocess
import time

import libvirt

from . import artifacts, scenario, vm


def analyze(snapdir):
    """The agent's JSON report for a snapshot (raises HarnessError)."""
    p = subprocess.run([artifacts.agent(), "analyze", snapdir, "--json"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise vm.HarnessError("infra-failed", f"agent exit {p.returncode}: {p.stderr.strip()}")
    return json.loads(p.stdout)


def read_truth(snapdir):
    path = os.path.join(snapdir, "faults.jsonl")
    if not os.path.exists(path):
        return []
    return [json.loads(ln) for ln in open(path) if ln.strip()]


def run_scenario(sc, out, uri=None, log=print, on_start=None, stop_event=None,
                 keep_regions=True):
    """Returns a result dict: scenario, outcome, detail, failures, report..."""
    t0 = time.time()
    res = {"scenario": sc["name"], "path": sc["path"], "out": out, "uri": uri,
           "started": t0, "faults": sc["faults"]}
    report, manifest, err = None, {}, None
    try:
        manifest = vm.run(out, vcpus=sc["vm"]["vcpus"], seconds=sc["load"]["seconds"],
                          faults=sc["faults"], uri=uri, x2apic=sc["vm"]["x2apic"],
                          mem_mb=sc["vm"]["memory_mb"], timeout=sc["timeout"], log=log,
                          extra_cmdline=sc["load"]["guest_args"],
                          on_start=on_start, stop_event=stop_event,
                          watch_hang_ms=sc["watch"]["hang_ms"] or None,
                          watch_poll_ms=sc["watch"]["poll_ms"],
                          hypervisor=sc["vm"]["hypervisor"], **scenario.vm_load_args(sc),
                          **({"hv_capacity": sc["vm"]["hv_capacity"]}
                             if sc["vm"].get("hv_capacity") else {}))
        report = analyze(out)
        with open(os.path.join(out, "report.json"), "w") as f:
            json.dump(report, f)
    except vm.HarnessError as e:
        err = e
    except libvirt.libvirtError as e:
        err = vm.HarnessError("vm-crashed" if "not found" in str(e) else "infra-failed",
                              f"libvirt: {e}")
    outcome, detail = scenario.classify(manifest, report, err)
    truth = read_truth(out)
    failures = scenario.check(sc, outcome, report, truth) if err is None else \
        [f"{outcome}: {detail}"]
    if not keep_regions:
        for fn in ("guest.region", "hv.region"):
            p = os.path.join(out, fn)
            if os.path.exists(p) and not failures:
                os.unlink(p)
    res.update({
        "outcome": outcome, "detail": detail, "failures": failures,
        "passed": not failures, "duration": time.time() - t0,
        "requests": (report or {}).get("requests", 0),
        "verdict_counts": (report or {}).get("verdict_counts", {}),
        "losses": [{k: x.get(k) for k in ("verdict", "source_vcpu", "target_vcpu", "vector",
                                                  "queue_tsc")}
                   for x in (report or {}).get("losses", [])],
        "truth": truth, "latency": (report or {}).get("latency"),
        "tsc_khz": ((report or {}).get("window") or {}).get("tsc_khz"),
        "partial": bool(manifest.get("partial")) or err is not None,
    })
    return res
