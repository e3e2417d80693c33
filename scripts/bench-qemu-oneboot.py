#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""A/B/C benchmark of the ipitrace hooks inside ONE guest boot.

scripts/bench-qemu.sh boots a fresh guest per configuration and round; on
this host two boots of the same configuration differ by up to 1.5x in IPI
throughput, far more than the 2 % in question.  Here one guest runs its
IPI load generator without pause, and QEMU's configuration is switched
under it through QMP, while the VM is stopped:

  off       no ipitrace object, no apic_* trace event enabled
  ipitrace  `object-add ipitrace` (the same object as -object ipitrace);
            `object-del` after the phase
  log       `trace-event apic_* on` with the stock log backend to a file
            (`-trace file=...`); `off` after the phase

Phases rotate (off, ipitrace, log, then the next round starts one later),
each --phase-s seconds of running VM.  Per phase:

  rate     guest records per second of wall time: the sum of the guest
           module's ring heads in the ivshmem region (the module traces in
           every configuration, so records are proportional to IPI ops)
  cpu/rec  QEMU's CPU time (all threads, /proc/PID/task/*/schedstat, ns)
           per guest record

and per round the ratio of each configuration to that round's off phase.
The report gives medians of the per-phase values and of the per-round
ratios.  Usage:

  scripts/bench-qemu-oneboot.py --qemu QEMU --kernel K --initrd I
      [--vcpus 2] [--tcg single] [--rounds 15] [--phase-s 3]
      [--capacity 65536] [--out FILE]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import (Qmp, guest_qemu_cmd, guest_records, median_ci, qemu_cpu_ns,
                      qemu_ctxt_switches, stop_qemu, wait_for_load)

CONFIGS = ("off", "ipitrace", "log")


def parse_configs(text, capacity):
    """--configs: comma-separated off, log, ipitrace or ipitrace:CAPACITY
    (a second ipitrace object size in the same boot); off first."""
    out = []
    for c in text.split(","):
        name, _, cap = c.partition(":")
        if name not in CONFIGS or (cap and (name != "ipitrace" or not cap.isdigit())):
            sys.exit(f"bench-qemu-oneboot: bad --configs entry {c!r} "
                     "(off, log, ipitrace or ipitrace:CAPACITY)")
        out.append((c, name, int(cap) if cap else capacity))
    if not out or out[0][0] != "off" or len({c for c, _, _ in out}) != len(out):
        sys.exit("bench-qemu-oneboot: --configs must start with off and name each config once")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qemu", required=True)
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True)
    ap.add_argument("--vcpus", type=int, default=2)
    ap.add_argument("--tcg", choices=("single", "multi"), default="single")
    ap.add_argument("--icount", metavar="SHIFT",
                    help="run the guest under -icount shift=SHIFT,sleep=off (implies --tcg single)")
    ap.add_argument("--threads", type=int, help="load-generator threads (default: --vcpus)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--phase-s", type=float, default=3.0)
    ap.add_argument("--capacity", type=int, default=65536)
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help="comma-separated: off (first), ipitrace, ipitrace:CAPACITY, log")
    ap.add_argument("--out")
    args = ap.parse_args()
    configs = parse_configs(args.configs, args.capacity)
    names = [c for c, _, _ in configs]

    work = tempfile.mkdtemp(prefix="ipt-oneboot.")
    shm = f"/dev/shm/ipt-oneboot-{os.getpid()}-guest"
    hv = f"/dev/shm/ipt-oneboot-{os.getpid()}-hv"
    qmp_path = os.path.join(work, "qmp.sock")
    console = os.path.join(work, "console.log")
    tracelog = os.path.join(work, "apic-trace.log")
    load_s = int(args.rounds * len(configs) * args.phase_s * 3 + 600)
    cmd = guest_qemu_cmd(args.qemu, args.kernel, args.initrd, vcpus=args.vcpus, tcg=args.tcg,
                         icount=args.icount, load_s=load_s, threads=args.threads or args.vcpus,
                         console=console, shm=shm, qmp_path=qmp_path)
    cmd += ["-trace", f"file={tracelog}"]
    q = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "qemu.log"), "w"))
    phases = []
    try:
        wait_for_load(q, console, work)
        qmp = Qmp(qmp_path)

        def phase(config):
            cfg, kind, capacity = config
            qmp.cmd("stop")
            if kind == "ipitrace":
                qmp.cmd("object-add", **{"qom-type": "ipitrace", "id": "ipt0",
                                         "path": hv, "capacity": capacity})
            elif kind == "log":
                qmp.cmd("human-monitor-command", **{"command-line": "trace-event apic_* on"})
            x0 = qemu_ctxt_switches(q.pid)
            r0, c0, t0 = guest_records(shm), qemu_cpu_ns(q.pid), time.monotonic()
            qmp.cmd("cont")
            time.sleep(args.phase_s)
            qmp.cmd("stop")
            t1, c1, r1 = time.monotonic(), qemu_cpu_ns(q.pid), guest_records(shm)
            x1 = qemu_ctxt_switches(q.pid)
            if kind == "ipitrace":
                qmp.cmd("object-del", id="ipt0")
            elif kind == "log":
                qmp.cmd("human-monitor-command", **{"command-line": "trace-event apic_* off"})
                os.truncate(tracelog, 0)  # ~50 MB/s of text; the file stays sparse
            qmp.cmd("cont")
            recs = r1 - r0
            if recs <= 0:
                raise RuntimeError(f"no guest records in a {cfg} phase")
            return {"cfg": cfg, "records": recs, "seconds": t1 - t0,
                    "rate": recs / (t1 - t0), "cpu_per_rec": (c1 - c0) / recs,
                    "cs_per_rec": (x1 - x0) / recs}

        for config in configs:  # warm-up round, discarded
            phase(config)
        for r in range(args.rounds):
            k = r % len(configs)
            order = configs[k:] + configs[:k]
            rnd = {}
            for config in order:
                cfg = config[0]
                rnd[cfg] = phase(config)
                print(f"round {r} {cfg}: {rnd[cfg]['rate']:.0f} records/s, "
                      f"{rnd[cfg]['cpu_per_rec']:.0f} ns CPU/record", file=sys.stderr)
            phases.append(rnd)
    finally:
        stop_qemu(q, shm, hv)

    med = statistics.median
    lines = [
        "## (c) one boot, configurations switched at run time",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
        f"`scripts/bench-qemu-oneboot.py --vcpus {args.vcpus} --tcg {args.tcg} "
        f"{f'--threads {args.threads} ' if args.threads else ''}"
        f"{f'--icount {args.icount} ' if args.icount is not None else ''}"
        f"--rounds {args.rounds} --phase-s {args.phase_s:g} --capacity {args.capacity}"
        f"{'' if names == list(CONFIGS) else ' --configs ' + args.configs}` "
        f"(one guest, load generator smp_call_function_single wait=1 for the whole run; "
        f"{args.rounds} rounds of {len(configs)} phases of {args.phase_s:g} s, order rotated "
        f"each round, after one discarded warm-up round). Host load average at the end: "
        f"{' '.join(open('/proc/loadavg').read().split()[:3])}.",
        "",
        "| config | median guest records/s | vs off | median QEMU CPU ns per guest record | vs off "
        "| median QEMU context switches per guest record |",
        "|---|---|---|---|---|---|",
    ]
    off_rate = med(p["off"]["rate"] for p in phases)
    off_cpu = med(p["off"]["cpu_per_rec"] for p in phases)
    for cfg in names:
        rate = med(p[cfg]["rate"] for p in phases)
        cpu = med(p[cfg]["cpu_per_rec"] for p in phases)
        cs = med(p[cfg]["cs_per_rec"] for p in phases)
        lines.append(f"| {cfg} | {rate:,.0f} | {rate / off_rate:.3f} | {cpu:.0f} | {cpu / off_cpu:.3f} "
                     f"| {cs:.3f} |")
    lines += ["", "| config | per-round throughput ratio vs off (median) | 95 % CI of that median | "
              "per-round CPU-per-record ratio vs off (median) | rounds |",
              "|---|---|---|---|---|"]
    summary = {}
    for cfg in names[1:]:
        rr = [p[cfg]["rate"] / p["off"]["rate"] for p in phases]
        cr = [p[cfg]["cpu_per_rec"] / p["off"]["cpu_per_rec"] for p in phases]
        lo, hi = median_ci(rr)
        summary[cfg] = {"rate_ratio": med(rr), "rate_ratio_ci95": [lo, hi], "cpu_ratio": med(cr)}
        lines.append(f"| {cfg} | **{med(rr):.3f}** | {lo:.3f}-{hi:.3f} | **{med(cr):.3f}** | "
                     + ", ".join(f"{x:.3f}" for x in rr) + " |")
    lines += ["", "Per-phase values (records/s; CPU ns per record):", ""]
    for cfg in names:
        lines.append(f"- {cfg}: " + ", ".join(
            f"{p[cfg]['rate']:.0f}; {p[cfg]['cpu_per_rec']:.0f}" for p in phases))
    text = "\n".join(lines) + "\n"
    print(text)
    print(json.dumps({"summary": summary}), file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
