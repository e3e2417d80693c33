#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Where QEMU's time goes with ipitrace off against on (a diagnostic, not a
benchmark: perf's sampling slows the guest).  Boots the benchmark guest
with the load generator, then runs REPS pairs of phases, off then
ipitrace, of SECONDS each, with `perf record -e cpu-clock` attached to
QEMU for each phase alone.  Prints, for each pair, perf's samples per
million guest records by symbol: the total, and the symbols that grew or
shrank most with ipitrace on.

  scripts/perf-phases.py QEMU MODE [SECONDS] [REPS] [OUTDIR]

MODE is icount (one thread, -icount shift=0), single or multi (TCG
threads).  OUTDIR (default: a new /tmp/ipt-perf.* directory) keeps each
phase's perf.data and record count.  The guest is the one that
scripts/build-guest.sh builds (or finds in its cache).
"""
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time

import benchlib as ob


def samples_by_symbol(data):
    """perf report's sample count per symbol (all JIT code as one)."""
    out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,symbol",
                          "--stdio", "-q", "-F", "sample,dso,symbol"],
                         check=True, capture_output=True, text=True).stdout
    counts = collections.Counter()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        if "[JIT]" in line:
            sym = "[JIT]"
        else:
            sym = " ".join(t for t in (parts[3:] if parts[2].startswith("[") else parts[2:])
                           if t != "-")
        counts[sym] += int(parts[0])
    return counts


def report(out, rep, top=20):
    per = {}
    for cfg in ("off", "ipitrace"):
        with open(f"{out}/{cfg}{rep}.rec") as f:
            records = int(f.read())
        per[cfg] = (samples_by_symbol(f"{out}/{cfg}{rep}.data"), records)
    (a, ra), (b, rb) = per["off"], per["ipitrace"]
    ta, tb = sum(a.values()) / ra * 1e6, sum(b.values()) / rb * 1e6
    print(f"pair {rep}: samples per million guest records, off {ta:.1f}, ipitrace {tb:.1f} "
          f"({tb / ta:.4f} of off)")
    rows = sorted(((b[s] / rb - a[s] / ra) * 1e6, a[s] / ra * 1e6, b[s] / rb * 1e6, s)
                  for s in set(a) | set(b))
    print(f"{'change':>9} {'off':>9} {'ipitrace':>9}  symbol")
    for row in rows[::-1][:top] + [None] + rows[:5]:
        if row is None:
            print("      ...")
            continue
        d, x, y, sym = row
        print(f"{d:+9.2f} {x:9.2f} {y:9.2f}  {sym[:70]}")


def main():
    if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2)
    qemu, mode = sys.argv[1], sys.argv[2]
    if mode not in ("icount", "single", "multi"):
        sys.exit(f"perf-phases: MODE must be icount, single or multi, not {mode!r}")
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 8
    reps = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    out = sys.argv[5] if len(sys.argv) > 5 else tempfile.mkdtemp(prefix="ipt-perf.")
    os.makedirs(out, exist_ok=True)
    kernel, initrd = ob.guest_files()
    work = tempfile.mkdtemp(prefix="ipt-perf-vm.")
    shm = f"/dev/shm/ipt-perf-{os.getpid()}-guest"
    hv = f"/dev/shm/ipt-perf-{os.getpid()}-hv"
    qmp_path, console = os.path.join(work, "qmp.sock"), os.path.join(work, "console.log")
    cmd = ob.guest_qemu_cmd(qemu, kernel, initrd, vcpus=2, tcg="single" if mode == "icount" else mode,
                            icount=0 if mode == "icount" else None, load_s=100000, threads=2,
                            console=console, shm=shm, qmp_path=qmp_path)
    q = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(work, "qemu.log"), "w"))
    try:
        ob.wait_for_load(q, console, work)
        time.sleep(2)
        qmp = ob.Qmp(qmp_path)
        for rep in range(reps):
            for cfg in ("off", "ipitrace"):
                qmp.cmd("stop")
                if cfg == "ipitrace":
                    qmp.cmd("object-add", **{"qom-type": "ipitrace", "id": "ipt0", "path": hv,
                                             "capacity": 65536})
                r0 = ob.guest_records(shm)
                perf = subprocess.Popen(["perf", "record", "-q", "-F", "4999", "-e", "cpu-clock",
                                         "-p", str(q.pid), "-o", f"{out}/{cfg}{rep}.data"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)  # perf attached before the guest runs
                qmp.cmd("cont")
                time.sleep(seconds)
                qmp.cmd("stop")
                perf.send_signal(signal.SIGINT)
                perf.wait()  # its status after SIGINT says nothing; its data does
                if not os.path.getsize(f"{out}/{cfg}{rep}.data"):
                    sys.exit(f"perf-phases: perf record wrote nothing for phase {cfg}{rep}")
                with open(f"{out}/{cfg}{rep}.rec", "w") as f:
                    f.write(str(ob.guest_records(shm) - r0))
                if cfg == "ipitrace":
                    qmp.cmd("object-del", id="ipt0")
                qmp.cmd("cont")
    finally:
        ob.stop_qemu(q, shm, hv)
    print(f"perf data and record counts in {out}")
    for rep in range(reps):
        report(out, rep)


if __name__ == "__main__":
    main()
