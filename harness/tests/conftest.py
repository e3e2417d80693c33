import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from ipitrace_harness import abi, artifacts, vm  # noqa: E402

from ipitrace_harness.scenario import LOSS_VERDICTS  # noqa: E402,F401


def analyze(snapdir, *args):
    agent = artifacts.agent()
    p = subprocess.run([agent, "analyze", snapdir, "--json", *args], stdout=subprocess.PIPE,
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


# The window starts at the guest header's start_tsc (every probe armed). An
# IPI acknowledged just before that instant but entered just after it, or
# acknowledged but not yet entered when the VM was suspended, is in flight:
# at most one per call-function vector.
IN_FLIGHT_SLACK = 2


def callfunc_vectors(guest):
    return {guest.h["vec_call_function"], guest.h["vec_call_function_single"]}


def vcpu_of(guest, hv):
    """guest CPU -> vCPU index, joined on APIC IDs (as the agent does)."""
    by_apic = {hv.apic_id[i]: i for i in range(hv.h["cpu_count"])}
    return {c: by_apic.get(guest.apic_id[c], c) for c in range(guest.h["cpu_count"])}


def independent_counts(snapdir):
    guest = abi.Region(os.path.join(snapdir, "guest.region"))
    hv = abi.Region(os.path.join(snapdir, "hv.region"))
    vecs = callfunc_vectors(guest)
    start = guest.h["start_tsc"]
    m = vcpu_of(guest, hv)
    out = {}
    for c in range(guest.h["cpu_count"]):
        v = m[c]
        g_irq = sum(1 for r in guest.records(c)
                    if r["type"] == "G_IRQ_ENTRY" and r["vector"] in vecs
                    and r["tsc"] >= start)
        acks = [r for r in hv.records(v) if r["type"] == "H_ACK" and r["vector"] in vecs]
        out[c] = {"guest_irq": g_irq,
                  "hv_ack_window": sum(1 for r in acks if r["tsc"] >= start),
                  "hv_ack_total": len(acks),
                  "hv_overwritten": hv.overwritten(v),
                  "guest_overwritten": guest.overwritten(c)}
    return out
