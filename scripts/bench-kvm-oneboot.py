#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""A/B benchmark of the KVM source inside ONE nested boot.

One traced guest runs its IPI load generator without pause under L1's KVM
(the nested bed, harness/ipitrace_harness/nested.py); in L1, the host side
is switched phase by phase (scripts/bench-kvm-phases.py):

  off        nothing collects
  ipitrace   `ipitrace kvm-source` as shipped (BPF programs on the
             tracepoints, region in /dev/shm)
  ipitrace-tracefs
             the same with --backend tracefs (its own tracefs instance):
             the fallback, side by side with what chose BPF
  trace-cmd  `trace-cmd record` of the same KVM events, same threads, same
             clock, to a file
  floor      the same events enabled into a buffer nothing reads: the cost
             of the tracepoints themselves, which no reader can go below

Per phase: guest records per second (the guest module traces in every
phase: its records count IPI operations) and the collector's CPU time.
Per round, each configuration's rate over that round's off phase.  The
report gives medians of the per-round ratios (95 % bootstrap interval),
the margin of each ipitrace reader over the floor, and the collectors' CPU
per event.

  scripts/bench-kvm-oneboot.py [--rounds 6] [--phase-s 5] [--vcpus 2]
      [--out results/kvm-bench.json] [--md results/kvm-bench.md]
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "harness"))
from benchlib import median_ci  # noqa: E402
from ipitrace_harness import nested, vm  # noqa: E402

CONFIGS = ("off", "ipitrace", "ipitrace-tracefs", "trace-cmd", "floor")
READERS = ("ipitrace", "ipitrace-tracefs")
BOOTS = 3


def summarize(rows):
    by_round = {}
    for r in rows:
        by_round.setdefault(r["round"], {})[r["config"]] = r
    out = {}
    for c in CONFIGS:
        rates = [r["rate"] for r in rows if r["config"] == c]
        if not rates:
            continue
        ratios = [rd[c]["rate"] / rd["off"]["rate"] for rd in by_round.values()
                  if c in rd and "off" in rd and rd["off"]["rate"] > 0]
        s = {"phases": len(rates), "rate_median": statistics.median(rates)}
        if ratios and c != "off":
            lo, hi = median_ci(ratios)
            s.update({"ratio_median": statistics.median(ratios), "ratio_ci": [lo, hi],
                      "cost_pct": 100 * (1 - statistics.median(ratios))})
        cpu = [r["collector_cpu_s"] for r in rows if r["config"] == c]
        ev = [r.get("events") for r in rows if r["config"] == c]
        if c in (*READERS, "trace-cmd") and all(ev) and sum(ev) > 0:
            s["cpu_ns_per_event"] = 1e9 * sum(cpu) / sum(ev)
            # Over the measured window only (no start-up or exit), per
            # event of the window's share of the phase's events.
            win = [r.get("collector_window_cpu_s") for r in rows if r["config"] == c]
            if all(w is not None for w in win):
                s["window_cpu_s_per_s"] = sum(win) / sum(r["seconds"] for r in rows
                                                         if r["config"] == c)
            s["events_per_s"] = sum(ev) / sum(r["seconds"] for r in rows if r["config"] == c)
        if cpu:
            s["cpu_s_per_phase"] = statistics.median(cpu)
        out[c] = s
    # Each reader over the floor, and ipitrace over trace-cmd, round by round.
    for c, base in [(c, "floor") for c in READERS] + [("ipitrace", "trace-cmd")]:
        margins = [rd[c]["rate"] / rd[base]["rate"] for rd in by_round.values()
                   if c in rd and base in rd and rd[base]["rate"] > 0]
        if margins:
            lo, hi = median_ci(margins)
            out[f"{c}_over_{base}"] = {"ratio_median": statistics.median(margins),
                                       "ratio_ci": [lo, hi],
                                       "cost_pct": 100 * (1 - statistics.median(margins))}
    return out


def markdown(summary, meta):
    s = summary
    L = ["# KVM source: cost in the nested bed",
         "",
         f"Regenerate: `{meta['command']}` (run {meta['when']}; {meta['rounds']} rounds of "
         f"{len(CONFIGS)} phases x {meta['phase_s']} s, each round in one boot "
         f"(boots: {', '.join(meta.get('boots', []))}) of a {meta['vcpus']}-vCPU "
         f"guest under KVM in L1 `{meta.get('l1_kernel')}`, {meta.get('l2_qemu')}).",
         "",
         "Guest IPI throughput (the guest module's records per second; it traces in "
         "every phase), each phase over the same round's `off` phase; medians of the "
         "per-round ratios with 95 % bootstrap intervals.",
         "",
         "| host side | IPI throughput vs off | cost | collector CPU per event | "
         "steady-state CPU |",
         "|---|---|---|---|---|"]
    for c in CONFIGS[1:]:
        x = s.get(c)
        if not x:
            continue
        cpe = f"{x['cpu_ns_per_event']:.0f} ns" if "cpu_ns_per_event" in x else "-"
        win = f"{100 * x['window_cpu_s_per_s']:.1f} % of a CPU" \
            if "window_cpu_s_per_s" in x else "-"
        L.append(f"| {c} | {x['ratio_median']:.3f} ({x['ratio_ci'][0]:.3f}-"
                 f"{x['ratio_ci'][1]:.3f}) | {x['cost_pct']:.1f} % | {cpe} | {win} |")
    L += ["", "Round by round (each phase over another of the same round):", ""]
    for key, what in (("ipitrace_over_floor", "ipitrace (BPF) over the floor"),
                      ("ipitrace-tracefs_over_floor", "ipitrace-tracefs over the floor"),
                      ("ipitrace_over_trace-cmd", "ipitrace (BPF) over trace-cmd")):
        f = s.get(key)
        if f:
            L.append(f"- {what}: {f['ratio_median']:.3f} ({f['ratio_ci'][0]:.3f}-"
                     f"{f['ratio_ci'][1]:.3f}), a cost of {f['cost_pct']:.1f} %")
    L += ["", "The floor is the same events enabled into an ftrace buffer nothing reads: "
          "what the tracefs readers cannot go below. The BPF reader does not write that "
          "buffer (its programs run on the tracepoints instead), so it can cost less than "
          "the floor."]
    L += ["", "Collector CPU per event: the collector's whole CPU time (start-up and exit "
          "included) over the events of its phases. Steady-state CPU: its processes' CPU "
          "over the measured window only (/proc/PID/stat of the process tree)."]
    for c in READERS:
        ip = s.get(c, {})
        if "events_per_s" in ip:
            L += ["", f"{c} read {ip['events_per_s']:.0f} events/s during its phases."]
    L += ["", "Phases per configuration: " + ", ".join(
        f"{c} {s[c]['phases']}" for c in CONFIGS if c in s) + ".", ""]
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--phase-s", type=float, default=5)
    ap.add_argument("--vcpus", type=int, default=2)
    ap.add_argument("--workdir", default="/var/tmp/ipt-kvm-bench")
    ap.add_argument("--out", default=None, help="JSON summary (default: none)")
    ap.add_argument("--md", default=None, help="markdown report (default: none)")
    a = ap.parse_args()
    # Every round's phases run side by side in one boot.  The nested bed
    # dies now and then on long boots (TCG's emulated SVM): the rounds a
    # dead boot completed are kept, and another boot runs the rest (at most
    # BOOTS boots; the report says how many).
    rows, boots, m = [], [], {}
    while len({r["round"] for r in rows}) < a.rounds and len(boots) < BOOTS:
        left = a.rounds - len({r["round"] for r in rows})
        # Load long enough for every phase, plus the collectors' start/stop.
        load_s = int(left * len(CONFIGS) * (a.phase_s + 4) + 30)
        bench = f"--configs {','.join(CONFIGS)} --rounds {left} --phase-s {a.phase_s}"
        work = os.path.join(a.workdir, f"boot{len(boots)}")
        shutil.rmtree(work, ignore_errors=True)
        try:
            m = nested.run(work, vcpus=a.vcpus, seconds=load_s, collector=False, bench=bench,
                           hang_grace=60, log=lambda s: print(s, file=sys.stderr))
            boots.append("completed")
        except vm.HarnessError as e:
            print(f"bench-kvm-oneboot: boot {len(boots)}: {e}", file=sys.stderr)
            boots.append(e.outcome)
        try:
            with open(os.path.join(work, "bench.jsonl")) as f:
                got = [json.loads(line) for line in f if line.strip()]
        except OSError:
            got = []
        # Only whole rounds: a round cut short by a dead boot compares nothing.
        whole = {r["round"] for r in got
                 if {x["config"] for x in got if x["round"] == r["round"]} >= set(CONFIGS)}
        base = len({r["round"] for r in rows})
        rows += [dict(r, round=base + sorted(whole).index(r["round"]), boot=len(boots) - 1)
                 for r in got if r["round"] in whole]
    if not rows:
        sys.exit("bench-kvm-oneboot: no phase measured (see the workdir's logs)")
    summary = summarize(rows)
    meta = {"command": "scripts/bench-kvm-oneboot.py " + " ".join(sys.argv[1:]),
            "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "rounds": len({r["round"] for r in rows}), "phase_s": a.phase_s, "vcpus": a.vcpus,
            "boots": boots,
            "l1_kernel": m.get("l1_kernel"), "l2_qemu": m.get("l2_qemu")}
    text = markdown(summary, meta)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"meta": meta, "summary": summary, "phases": rows}, f, indent=1)
    if a.md:
        with open(a.md, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
