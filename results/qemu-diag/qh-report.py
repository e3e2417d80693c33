#!/usr/bin/python3
"""Summarise bench-qh.py JSON: per guest record counters, off vs each config."""
import json, statistics, sys

QH_BQL_BASE, QH_HOLD_HIST, QH_WAIT_HIST, QH_C = 8, 40, 64, 96
SITES = ["cputlb(MMIO)", "cpu-exec(intr)", "mttcg-loop", "condwait-reacq", "other"]
EVS = ["ICR", "IRR", "KICK", "HELD", "EOI", "ACK", "TARGET", "WRITE", "TSC", "MMIOW", "MMIOR",
       "DELIVER", "GETINT", "UPDIRQ_REMOTE", "UPDIRQ_SELF", "IRQPEND", "POLL", "CPUKICK", "EXEC",
       "HALTWAIT", "SETIRQ", "EOIALL"]
d = json.load(open(sys.argv[1]))
khz = d["hdr"][1]
pair = d["hdr"][2]
ns = lambda cyc: cyc * 1e6 / khz
phases = d["phases"]
cfgs = list(phases[0].keys())
print(f"TSC {khz} kHz, rdtsc pair {pair} cycles; {len(phases)} rounds")

def agg(ph, slots, f):
    return sum(f(ph["qh"][s]) for s in slots)

def table(slots, label):
    print(f"\n## {label} (slots {slots}), per guest record, median over phases (sum-ratio in brackets)")
    rows = []
    def metric(name, f, unit=""):
        vals = {}
        for c in cfgs:
            per = [agg(p[c], slots, f) / p[c]["records"] for p in phases]
            tot = sum(agg(p[c], slots, f) for p in phases) / sum(p[c]["records"] for p in phases)
            vals[c] = (statistics.median(per), tot)
        rows.append((name, vals))
    for k, site in enumerate(SITES):
        b = QH_BQL_BASE + k * 4
        metric(f"BQL acq {site}", lambda w, b=b: w[b])
        metric(f"BQL hold ns {site}", lambda w, b=b: ns(w[b + 1]))
        metric(f"BQL wait ns {site}", lambda w, b=b: ns(w[b + 2]))
        metric(f"BQL contended(>1000cyc) {site}", lambda w, b=b: w[b + 3])
    metric("BQL acq ALL", lambda w: sum(w[QH_BQL_BASE + k * 4] for k in range(5)))
    metric("BQL hold ns ALL", lambda w: ns(sum(w[QH_BQL_BASE + k * 4 + 1] for k in range(5))))
    metric("BQL wait ns ALL", lambda w: ns(sum(w[QH_BQL_BASE + k * 4 + 2] for k in range(5))))
    metric("BQL contended ALL", lambda w: sum(w[QH_BQL_BASE + k * 4 + 3] for k in range(5)))
    for i, e in enumerate(EVS):
        metric(f"ev {e} calls", lambda w, i=i: w[QH_C + 2 * i])
        metric(f"ev {e} ns", lambda w, i=i: ns(w[QH_C + 2 * i + 1]))
    print("| metric | " + " | ".join(cfgs) + " | " + " | ".join(f"{c}-off" for c in cfgs[1:]) + " |")
    for name, vals in rows:
        if all(abs(v[1]) < 1e-6 for v in vals.values()):
            continue
        print(f"| {name} | " + " | ".join(f"{vals[c][0]:.4g} [{vals[c][1]:.4g}]" for c in cfgs)
              + " | " + " | ".join(f"{vals[c][1]-vals['off'][1]:+.4g}" for c in cfgs[1:]) + " |")
    # per call ns of events
    print("\nper-call ns (sum-ratio):")
    for i, e in enumerate(EVS):
        out = []
        for c in cfgs:
            n = sum(agg(p[c], slots, lambda w: w[QH_C + 2 * i]) for p in phases)
            cy = sum(agg(p[c], slots, lambda w: w[QH_C + 2 * i + 1]) for p in phases)
            if n:
                out.append(f"{c}: {cy/n:.0f} cyc = {ns(cy)/n:.1f} ns ({n} calls)")
        if out and e not in ("UPDIRQ_REMOTE", "UPDIRQ_SELF", "IRQPEND", "POLL", "CPUKICK", "EXEC", "HALTWAIT", "SETIRQ", "EOIALL"):
            print(f"  {e}: " + "; ".join(out))
    print("\nper-acquisition ns by site (sum-ratio): hold / wait")
    for k, site in enumerate(SITES):
        b = QH_BQL_BASE + k * 4
        out = []
        for c in cfgs:
            n = sum(agg(p[c], slots, lambda w: w[b]) for p in phases)
            h = sum(agg(p[c], slots, lambda w: w[b + 1]) for p in phases)
            wt = sum(agg(p[c], slots, lambda w: w[b + 2]) for p in phases)
            ct = sum(agg(p[c], slots, lambda w: w[b + 3]) for p in phases)
            if n:
                out.append(f"{c}: hold {ns(h)/n:.0f} / wait {ns(wt)/n:.0f} ns, contended {ct/n:.3f}")
        if out:
            print(f"  {site}: " + "; ".join(out))
    print("\nhold histogram (log2 cycles: fraction of holds) :")
    for c in cfgs:
        h = [sum(agg(p[c], slots, lambda w, j=j: w[QH_HOLD_HIST + j]) for p in phases) for j in range(24)]
        t = sum(h) or 1
        print(f"  {c}: " + " ".join(f"{j}:{x/t:.3f}" for j, x in enumerate(h) if x / t > 0.001))
    print("wait histogram:")
    for c in cfgs:
        h = [sum(agg(p[c], slots, lambda w, j=j: w[QH_WAIT_HIST + j]) for p in phases) for j in range(24)]
        t = sum(h) or 1
        print(f"  {c}: " + " ".join(f"{j}:{x/t:.3f}" for j, x in enumerate(h) if x / t > 0.001))

for c in cfgs:
    print(f"{c}: median rate {statistics.median(p[c]['rate'] for p in phases):.0f} rec/s, cs/rec "
          f"{statistics.median(p[c]['cs_per_rec'] for p in phases):.3f}")
rr = [p[cfgs[1]]["rate"] / p["off"]["rate"] for p in phases]
print(f"ratio {cfgs[1]}/off median {statistics.median(rr):.3f}")
table([0, 1, 2, 3], "vCPU threads")
table([4], "main loop thread")
table([5], "other threads")
