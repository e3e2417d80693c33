import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from ipitrace_harness import artifacts, vm  # noqa: E402

from ipitrace_harness.scenario import LOSS_VERDICTS  # noqa: E402,F401


def analyze(snapdir):
    agent = artifacts.agent()
    p = subprocess.run([agent, "analyze", snapdir, "--json"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    assert p.returncode == 0, f"agent failed ({p.returncode}): {p.stderr}"
    return json.loads(p.stdout)


@pytest.fixture(scope="session")
def snapshots(tmp_path_factory):
    """Snapshots are expensive (a TCG boot each): take each once per session."""
    cache = {}

    def get(key, **kw):
        if key not in cache:
            out = str(tmp_path_factory.mktemp(key))
            m = vm.run(out, log=lambda s: print(s, file=sys.stderr), **kw)
            assert m["complete"], f"snapshot {key} incomplete"
            cache[key] = (out, m, analyze(out))
        return cache[key]

    return get
