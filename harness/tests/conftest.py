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


# User marks the guests write around their last /proc/interrupts read, and
# the Debian guest's driver around its baseline read (harness/debian12/).
MARK_INTR_BEGIN, MARK_INTR_END = 0x204, 0x205
MARK_BASE_BEGIN, MARK_BASE_END = 0x206, 0x207


def guest_marks(guest):
    """{mark id: tsc} of the guest's user marks (G_MARK, the last of each)."""
    marks = {}
    for c in range(guest.h["cpu_count"]):
        for r in guest.records(c):
            if r["type"] == "G_MARK":
                marks[r["arg0"]] = r["tsc"]
    return marks


def callfunc_irq_entries(guest, cpu):
    """The tsc of each call-function IRQ entry (G_IRQ_ENTRY of either
    call-function vector) on the guest CPU's ring, from the window's start."""
    vecs = callfunc_vectors(guest)
    start = guest.h["start_tsc"]
    return [r["tsc"] for r in guest.records(cpu)
            if r["type"] == "G_IRQ_ENTRY" and r["vector"] in vecs and r["tsc"] >= start]


def independent_counts(snapdir):
    """Per guest CPU: call-function IRQ entries in the guest's window, and
    the hypervisor's injections of those vectors (in the window, in all,
    and before/while the guest read /proc/interrupts, when it marked it)."""
    guest = abi.Region(os.path.join(snapdir, "guest.region"))
    hv = abi.Region(os.path.join(snapdir, "hv.region"))
    vecs = callfunc_vectors(guest)
    start = guest.h["start_tsc"]
    m = vcpu_of(guest, hv)
    marks = {k: v for k, v in guest_marks(guest).items()
             if k in (MARK_INTR_BEGIN, MARK_INTR_END)}
    out = {}
    for c in range(guest.h["cpu_count"]):
        v = m[c]
        g_irq = len(callfunc_irq_entries(guest, c))
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


def check_irq_entries_match_proc_interrupts(base_cal, cal, snapdir):
    """The guest's /proc/interrupts CAL deltas between its baseline read
    and its last read equal, per CPU, the call-function IRQ entries the
    module traced between the two reads.  Each read took a moment; the
    guest marked its start and end (MARK_BASE_*, MARK_INTR_*): an entry
    during a read may or may not be in it, so the traced count is a range,
    [entries from the end of the first read to the start of the last, from
    the start of the first to the end of the last], one number when no
    call-function IRQ came during either read.  Returns, per CPU,
    (delta, low, high)."""
    guest = abi.Region(os.path.join(snapdir, "guest.region"))
    marks = guest_marks(guest)
    want = (MARK_BASE_BEGIN, MARK_BASE_END, MARK_INTR_BEGIN, MARK_INTR_END)
    assert all(k in marks for k in want), ("the guest marks its /proc/interrupts reads",
                                           sorted(marks))
    b0, e0, b1, e1 = (marks[k] for k in want)
    assert guest.h["start_tsc"] <= b0 < e0 <= b1 < e1, (guest.h["start_tsc"], b0, e0, b1, e1)
    ncpu = guest.h["cpu_count"]
    assert len(base_cal) == len(cal) == ncpu, (base_cal, cal, ncpu)
    rows = []
    for c in range(ncpu):
        assert guest.overwritten(c) == 0, f"CPU {c}'s ring overwrote records"
        tscs = callfunc_irq_entries(guest, c)
        delta = cal[c] - base_cal[c]
        low = sum(1 for t in tscs if e0 < t < b1)
        high = sum(1 for t in tscs if b0 <= t <= e1)
        assert low <= delta <= high, (c, delta, low, high)
        rows.append((delta, low, high))
    return rows


def check_one_loss_matches_truth(report, t, verdict):
    """The agent names exactly one loss, `verdict`, and nothing else: the
    injected fault t (one line of faults.jsonl), at its source and target
    vCPUs and vector, with the injector's H_ICR as evidence.  Returns the
    loss."""
    losses = report["losses"]
    assert [x["verdict"] for x in losses] == [verdict], losses
    loss = losses[0]
    assert loss["source_vcpu"] == t["source"] and loss["target_vcpu"] == t["target"], (loss, t)
    assert loss["vector"] == t["vector"]
    icr = [e for e in loss["evidence"] if e["stream"] == "hv" and e["type"] == "H_ICR"]
    assert icr and icr[0]["seq"] == t["icr_seq"] and icr[0]["tsc"] == t["tsc"], (icr, t)
    for v in LOSS_VERDICTS:
        assert report["verdict_counts"].get(v, 0) == (1 if v == verdict else 0), v
    return loss
