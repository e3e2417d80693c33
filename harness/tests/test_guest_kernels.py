"""The guest module on the kernels fleets run: Debian 12's stock 6.1 and
Debian 11's 5.10 (no csd:* or ipi:ipi_send_* tracepoints: kprobes for the
queue and the send, no function records) beside the backports 6.12 the
other tests use, and the kprobe fallback forced on 6.12.

Each guest's region header says per stage how the module observed it (read
here with the harness's own decoder); the agent judges what the guest
could see and never blames what it could not (no handler-missed-work or
callback-stuck without function records); the call-function IRQ entries
it traced match the guest's /proc/interrupts; and an injected routing
fault is named lost-in-routing, matched to the injector's ground truth.
"""
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ipitrace_harness import abi, artifacts  # noqa: E402
from conftest import (LOSS_VERDICTS, check_acks_match_proc_interrupts,  # noqa: E402
                      independent_counts)

SECONDS = 10
KPROBE_STAGES = {"queue": "kprobe", "send": "kprobe", "elide": "tracepoint",
                 "irq": "tracepoint"}
# What each configuration must show: (guest kernel, module params, the
# kernel release's prefix, stage sources from the region header).
CONFIGS = {
    "stock-6.1": ("stock", "", "6.1.", {**KPROBE_STAGES, "func": "none"}),
    "bullseye-5.10": ("bullseye", "", "5.10.", {**KPROBE_STAGES, "func": "none"}),
    "6.12-fallback": ("backports", "fallback=1", "6.12.", {**KPROBE_STAGES, "func": "none"}),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def clean(request, snapshots):
    kernel, kparams, release, stages = CONFIGS[request.param]
    extra = f"ipt.kparams={kparams}" if kparams else ""
    out, m, report = snapshots(f"kernel-{request.param}", vcpus=4, seconds=SECONDS,
                               guest_kernel=kernel, extra_cmdline=extra)
    return request.param, out, m, report


def test_the_header_says_how_each_stage_was_observed(clean):
    name, out, m, report = clean
    _, _, release, stages = CONFIGS[name]
    guest = abi.Region(os.path.join(out, "guest.region"))
    kernel_release = guest.h["kernel_release"].split(b"\0", 1)[0].decode()
    assert kernel_release.startswith(release), kernel_release
    assert abi.guest_stage_src(guest) == stages
    # The agent read the same, and says what the missing stage means.
    want = {k: ("not observable" if v == "none" else v) for k, v in stages.items()}
    got = {k: v for k, v in report["guest_stages"].items() if k != "note"}
    assert got == want, report["guest_stages"]
    assert "no function records" in report["guest_stages"]["note"]
    text = subprocess.run([artifacts.agent(), "analyze", out], check=True,
                          stdout=subprocess.PIPE, text=True).stdout
    assert "G_FUNC_ENTRY/EXIT not observable" in text
    assert report["guest_stages"]["note"] in text


def test_no_loss_and_nothing_blamed_that_the_guest_could_not_see(clean):
    name, out, m, report = clean
    counts = report["verdict_counts"]
    assert report["requests"] >= 2000, counts
    for v in LOSS_VERDICTS:
        assert counts.get(v, 0) == 0, (name, v, report["losses"][:3])
    # Judged up to the handler: served through their own IPI, nearly all.
    assert counts["served-by-ipi"] >= report["requests"] // 2, counts
    judged = counts["served-by-ipi"] + counts["served-without-ipi"] + \
        counts["service-unobserved"]
    assert judged >= report["requests"] - 16, counts


def test_traced_handler_entries_match_proc_interrupts(clean):
    name, out, m, report = clean
    ind = independent_counts(out)
    for row in report["per_cpu"]:
        assert row["guest_irq_callfunc"] == ind[row["cpu"]]["guest_irq"], (row, ind)
        assert ind[row["cpu"]]["guest_irq"] > 100, (name, ind)
    check_acks_match_proc_interrupts(m["interrupts"].get("CAL"), ind)


def test_a_route_fault_in_a_stock_debian_guest_is_lost_in_routing(snapshots):
    out, m, report = snapshots("kernel-stock-route", vcpus=4, seconds=8, guest_kernel="stock",
                               faults=("route:nth=1500:vector=251",))
    truth = [json.loads(ln) for ln in open(os.path.join(out, "faults.jsonl")) if ln.strip()]
    assert len(truth) == 1 and truth[0]["stage"] == "route", truth
    t = truth[0]
    losses = report["losses"]
    assert [x["verdict"] for x in losses] == ["lost-in-routing"], losses
    assert losses[0]["source_vcpu"] == t["source"] and losses[0]["target_vcpu"] == t["target"]
    icr = [e for e in losses[0]["evidence"] if e["stream"] == "hv" and e["type"] == "H_ICR"]
    assert icr and icr[0]["seq"] == t["icr_seq"], (icr, t)
    for v in LOSS_VERDICTS:
        assert report["verdict_counts"].get(v, 0) == (v == "lost-in-routing"), v
