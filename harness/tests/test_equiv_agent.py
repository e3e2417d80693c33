"""scripts/equiv-agent.py: two builds compared on goldens, random snapshots
and end-to-end ones.  It must find a build alike to itself, and name the
snapshot and the JSON path where a build judges differently."""
import os
import stat
import subprocess
import sys

import pytest

from ipitrace_harness import artifacts

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "equiv-agent.py")


def _run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def agent():
    a = artifacts.agent()
    if not os.access(os.path.join(os.path.dirname(a), "make_snapshot"), os.X_OK):
        pytest.skip("no make_snapshot beside the agent (a build without tests)")
    return a


def test_random_snapshots_are_reproducible_and_varied(agent, tmp_path):
    make = os.path.join(os.path.dirname(agent), "make_snapshot")
    for d in ("a", "b"):
        subprocess.run([make, str(tmp_path / d), "random:7"], check=True)
    for f in ("guest.region", "hv.region"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    # Across seeds, the shapes reach most verdicts.
    import json
    seen = set()
    for seed in range(1, 30):
        d = tmp_path / f"r{seed}"
        subprocess.run([make, str(d), f"random:{seed}"], check=True)
        out = subprocess.run([agent, "analyze", str(d), "--json"], check=True,
                             stdout=subprocess.PIPE).stdout
        seen |= {v for v, n in json.loads(out)["verdict_counts"].items() if n}
    assert len(seen) >= 10, seen
    p = subprocess.run([make, str(tmp_path / "x"), "random:abc"], stderr=subprocess.PIPE)
    assert p.returncode == 2 and b"decimal SEED" in p.stderr


def test_a_build_is_alike_to_itself(agent):
    r = _run(agent, agent, "--random", "40")
    assert r.returncode == 0, r.stdout
    assert "46 snapshots (6 golden, 40 random): 46 alike, 0 differ" in r.stdout


def test_a_build_that_judges_otherwise_is_named(agent, tmp_path):
    """B: the same agent, except that it calls every routing loss an
    injection loss (a wrapper that edits its JSON)."""
    b = tmp_path / "ipitrace-b"
    b.write_text("#!/bin/sh\n"
                 f"{agent} \"$@\" | sed 's/\"verdict\": \"lost-in-routing\"/"
                 "\"verdict\": \"lost-in-injection\"/'\n")
    b.chmod(b.stat().st_mode | stat.S_IXUSR)
    r = _run(agent, str(b), "--random", "20", "--make-snapshot",
             os.path.join(os.path.dirname(agent), "make_snapshot"))
    assert r.returncode == 1, r.stdout
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("  ")]
    assert lines, r.stdout
    assert all(".verdict: \"lost-in-routing\" vs \"lost-in-injection\"" in ln for ln in lines), lines
    assert any(ln.startswith("  golden ") for ln in lines) and \
        any(ln.startswith("  random ") for ln in lines), lines


def test_usage_errors(tmp_path):
    r = _run("/nonexistent-a", "/nonexistent-b")
    assert r.returncode == 2 and "not an executable" in r.stdout


def _equiv_base():
    with open(os.path.join(REPO, "scripts", "equiv-base")) as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")][0]


def test_this_build_judges_as_the_base(agent):
    """Byte-identical `analyze --json` with the pinned earlier build
    (scripts/equiv-base) on every golden and 500 random snapshots: a
    refactoring changes no verdict, reason or count."""
    p = subprocess.run([os.path.join(REPO, "scripts", "build-agent-at.sh"), _equiv_base()],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode == 3:
        pytest.skip(f"the base commit is not in this clone: {p.stderr.strip()}")
    assert p.returncode == 0, p.stderr[-2000:]
    base = p.stdout.strip().splitlines()[-1]
    r = _run(base, agent, "--random", "500")
    assert r.returncode == 0, r.stdout
    assert "506 snapshots (6 golden, 500 random): 506 alike, 0 differ" in r.stdout, r.stdout
