#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Side-by-side A/B of two builds of the agent on one snapshot.

The CPU time of one `ipitrace analyze --json` run on this host drifts by up
to 2x within minutes (the same binary measured 66 ms and 120 ms in one
session), so two builds are only compared in the same rounds: each round
runs every binary once, in an order rotated by one each round, and the
report gives each binary's median CPU time (user + sys of the process,
from wait4(2)), its median peak resident set (ru_maxrss) and the median of the per-round ratios to the first binary,
with a 95 % bootstrap interval.  The first round is a warm-up (not counted).

  scripts/ab-agent.py [--rounds N] [--snapshot DIR] [--out FILE] \\
      NAME=BINARY NAME=BINARY...

Without --snapshot, make_snapshot's "large" snapshot is written to a
temporary directory (make_snapshot from the first binary's build
directory, or --make-snapshot).  Both binaries must give the same JSON
report; the script fails if they do not.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

from benchlib import median_ci  # the bootstrap interval, as the QEMU one-boot A/B


def run(binary, snapshot):
    """One analyze run: (cpu s, user s, sys s, max RSS KiB, stdout bytes)."""
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen([binary, "analyze", snapshot, "--json"], stdout=out)
        _, status, ru = os.wait4(p.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"ab-agent: {binary} analyze {snapshot} failed ({status})")
        out.seek(0)
        return ru.ru_utime + ru.ru_stime, ru.ru_utime, ru.ru_stime, ru.ru_maxrss, out.read()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binaries", nargs="+", metavar="NAME=BINARY")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--snapshot")
    ap.add_argument("--make-snapshot")
    ap.add_argument("--out", help="also write the report (markdown) here")
    args = ap.parse_args()
    if len(args.binaries) < 2:
        ap.error("need at least two NAME=BINARY")
    builds = []
    for b in args.binaries:
        name, sep, path = b.partition("=")
        if not sep or not name or not os.access(path, os.X_OK):
            ap.error(f"not NAME=BINARY with an executable BINARY: {b}")
        builds.append((name, path))
    if args.rounds < 2:
        ap.error("--rounds must be at least 2")

    with tempfile.TemporaryDirectory() as tmp:
        snapshot = args.snapshot
        if not snapshot:
            maker = args.make_snapshot or os.path.join(
                os.path.dirname(builds[0][1]), "make_snapshot")
            snapshot = os.path.join(tmp, "large")
            subprocess.run([maker, snapshot, "large"], check=True,
                           stdout=subprocess.DEVNULL)
        times = {name: [] for name, _ in builds}
        reports = {}
        for r in range(args.rounds + 1):
            k = r % len(builds)
            for name, path in builds[k:] + builds[:k]:
                cpu, user, sys_, rss, out = run(path, snapshot)
                reports.setdefault(name, out)
                if r:
                    times[name].append((cpu, user, sys_, rss))
    first = builds[0][0]
    for name, _ in builds[1:]:
        if reports[name] != reports[first]:
            sys.exit(f"ab-agent: {name} and {first} give different reports")

    lines = [f"A/B of `ipitrace analyze --json` on {'make_snapshot large' if not args.snapshot else args.snapshot}, "
             f"{args.rounds} rounds (order rotated each round, after one warm-up round); "
             "CPU time = user + sys, memory = peak resident set (both from wait4)", "",
             f"| build | median CPU ms | user | sys | per-round ratio to {first} (95 % CI) | max RSS MiB (median) |",
             "|---|---:|---:|---:|---|---:|"]
    for name, path in builds:
        t = times[name]
        med = lambda i: statistics.median(x[i] for x in t) * 1e3
        ratio = "-"
        if name != first:
            rat = [a[0] / b[0] for a, b in zip(t, times[first])]
            lo, hi = median_ci(rat)
            ratio = f"{statistics.median(rat):.3f} ({lo:.3f}-{hi:.3f})"
        rss = statistics.median(x[3] for x in t) / 1024
        lines.append(f"| {name} (`{path}`) | {med(0):.1f} | {med(1):.1f} | {med(2):.1f} | {ratio} | {rss:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
