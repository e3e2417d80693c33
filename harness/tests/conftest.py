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


# ipitrace.ko's module parameters, all of them: the tracing module users
# install has no load generator's or self-test's (ipitrace_test.ko has those).
TRACING_PARAMS = {"csd_hang_ms", "device", "fallback", "probes"}


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


# User marks the guest's init writes around its last /proc/interrupts read.
MARK_INTR_BEGIN, MARK_INTR_END = 0x204, 0x205


def independent_counts(snapdir):
    """Per guest CPU: call-function IRQ entries in the guest's window, and
    the hypervisor's injections of those vectors (in the window, in all,
    and before/while the guest read /proc/interrupts, when it marked it)."""
    guest = abi.Region(os.path.join(snapdir, "guest.region"))
    hv = abi.Region(os.path.join(snapdir, "hv.region"))
    vecs = callfunc_vectors(guest)
    start = guest.h["start_tsc"]
    m = vcpu_of(guest, hv)
    marks = {}
    for c in range(guest.h["cpu_count"]):
        for r in guest.records(c):
            if r["type"] == "G_MARK" and r["arg0"] in (MARK_INTR_BEGIN, MARK_INTR_END):
                marks[r["arg0"]] = r["tsc"]
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
        if len(marks) == 2:
            out[c]["hv_ack_before_read"] = sum(1 for r in acks
                                               if r["tsc"] < marks[MARK_INTR_BEGIN])
            out[c]["hv_ack_by_read_end"] = sum(1 for r in acks
                                               if r["tsc"] <= marks[MARK_INTR_END])
    return out


def check_acks_match_proc_interrupts(cal, ind):
    """The guest's /proc/interrupts (CAL) counts, per CPU, every call-
    function IPI the hypervisor injected before the read ended, and every
    one injected before the read began but those still in flight; the guest
    marked both instants on its own clock (MARK_INTR_BEGIN/END)."""
    assert cal and len(cal) == len(ind), (cal, ind)
    for c, n in enumerate(cal):
        mine = ind[c]
        assert "hv_ack_by_read_end" in mine, "the guest marks its /proc/interrupts read"
        assert mine["hv_ack_before_read"] - IN_FLIGHT_SLACK <= n <= mine["hv_ack_by_read_end"], \
            (c, n, mine)
