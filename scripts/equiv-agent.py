#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Do two builds of the agent judge alike?  `analyze --json` of both on the
same snapshots, compared byte for byte.

  scripts/equiv-agent.py A_BINARY B_BINARY [--random N] [--seed S]
      [--snapshots DIR...] [--make-snapshot PATH] [--keep DIR]

Snapshots: every golden (host-agent/testdata/golden/*), N random ones
(`make_snapshot DIR random:SEED`, seeds S..S+N-1: every request shape of
docs/streams.md, overlapping requests, wrapping rings; default 500), and
every end-to-end snapshot directory given with --snapshots (a directory
with a manifest.json, or a directory holding such directories).  For each,
both builds must exit alike and print the same JSON; the first difference
is shown (its JSON path and both values).  Exit status: 0 all alike, 1 some
differ, 2 usage.  A refactoring that must not change a verdict runs this
with the build before it as A; a change of behaviour shows up here, to be
listed and pinned by a test.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(REPO, "host-agent", "testdata", "golden")


def analyze(binary, snap):
    p = subprocess.run([binary, "analyze", snap, "--json"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    return p.returncode, p.stdout


def first_difference(a, b, path="$"):
    """The JSON path of the first place a and b differ, with both values."""
    if type(a) is not type(b):
        return path, a, b
    if isinstance(a, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return f"{path}.{k}", a.get(k, "<absent>"), b.get(k, "<absent>")
            d = first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        if list(a) != list(b):
            return f"{path} (key order)", list(a), list(b)
        return None
    if isinstance(a, list):
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        if len(a) != len(b):
            return f"{path} (length)", len(a), len(b)
        return None
    return None if a == b else (path, a, b)


def snapshots_under(paths):
    out = []
    for p in paths:
        if os.path.exists(os.path.join(p, "manifest.json")):
            out.append(p)
        elif os.path.isdir(p):
            out += sorted(os.path.join(p, d) for d in os.listdir(p)
                          if os.path.exists(os.path.join(p, d, "manifest.json")))
        else:
            sys.exit(f"equiv-agent: {p}: not a snapshot directory")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--random", type=int, default=500, help="random snapshots (default 500)")
    ap.add_argument("--seed", type=int, default=1, help="first random seed (default 1)")
    ap.add_argument("--snapshots", nargs="*", default=[],
                    help="end-to-end snapshot directories (or directories of them)")
    ap.add_argument("--make-snapshot", help="make_snapshot binary (default: beside A)")
    ap.add_argument("--keep", help="write the random snapshots here and keep them")
    ap.add_argument("--ignore", action="append", default=[], metavar="KEY",
                    help="a top-level key of the report left out of the comparison (e.g. "
                    "stats, when B's table has a new entry); repeatable")
    a = ap.parse_args()
    for b in (a.a, a.b):
        if not os.access(b, os.X_OK):
            ap.error(f"{b}: not an executable")
    make = a.make_snapshot or os.path.join(os.path.dirname(os.path.abspath(a.a)), "make_snapshot")
    if a.random and not os.access(make, os.X_OK):
        ap.error(f"{make}: no make_snapshot (give --make-snapshot)")

    work = a.keep or tempfile.mkdtemp(prefix="ipt-equiv-")
    os.makedirs(work, exist_ok=True)
    snaps = [("golden", os.path.join(GOLDEN, d)) for d in sorted(os.listdir(GOLDEN))]
    for seed in range(a.seed, a.seed + a.random):
        d = os.path.join(work, f"random-{seed}")
        if not os.path.exists(os.path.join(d, "manifest.json")):
            subprocess.run([make, d, f"random:{seed}"], check=True)
        snaps.append(("random", d))
    snaps += [("e2e", d) for d in snapshots_under(a.snapshots)]

    differ = []
    counts = {}
    for kind, d in snaps:
        counts[kind] = counts.get(kind, 0) + 1
        rc_a, out_a = analyze(a.a, d)
        rc_b, out_b = analyze(a.b, d)
        if rc_a == rc_b and out_a == out_b:
            continue
        if rc_a != rc_b:
            why = f"exit {rc_a} vs {rc_b}"
        else:
            try:
                ja, jb = json.loads(out_a), json.loads(out_b)
                for k in a.ignore:
                    ja.pop(k, None)
                    jb.pop(k, None)
                diff = first_difference(ja, jb)
                if diff is None and a.ignore:
                    continue  # alike but for the keys left out
            except ValueError:
                diff = None
            why = (f"{diff[0]}: {json.dumps(diff[1])[:200]} vs {json.dumps(diff[2])[:200]}"
                   if diff else "same JSON, different bytes")
        differ.append((kind, d, why))
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    total = sum(counts.values())
    print(f"equiv-agent: {total} snapshots ({', '.join(f'{n} {k}' for k, n in counts.items())}): "
          f"{total - len(differ)} alike, {len(differ)} differ"
          + (f" (leaving out {', '.join(a.ignore)})" if a.ignore else ""))
    for kind, d, why in differ:
        print(f"  {kind} {d}: {why}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
