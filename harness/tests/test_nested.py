"""The nested KVM test bed (harness/ipitrace_harness/nested.py): the traced
guest under KVM in an L1 Debian kernel that runs under TCG, with Debian's
stock QEMU for both levels, the KVM collector (`ipitrace kvm-source`) in
L1 and the TEST-ONLY kvm_fault.ko for faults.

Each nested run takes about a minute on a 2-core host (L1 boots in ~5 s,
the guest in ~20 s under nested KVM); the unit tests at the top need
nothing.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import (IN_FLIGHT_SLACK, LOSS_VERDICTS, analyze,
                      check_acks_match_proc_interrupts, independent_counts)
from ipitrace_harness import abi, artifacts, clockorder, nested, scenario, vm

# Failures of the test bed (L1 under TCG), not of what runs in it.

# The manifest keys of a TCG run (vm.run()) a nested run keeps.
TCG_KEYS = ("name", "uri", "vcpus", "seconds", "mode", "wait", "threads", "x2apic",
            "faults", "extra_cmdline", "qemu", "kernel", "initrd", "hv_capacity",
            "shm_mb", "started", "complete", "outcome", "interrupts", "finished")


# ---- unit: fault specs, L1 command line, L1's result file ----

@pytest.mark.parametrize("spec,stage,opts", [
    ("route:nth=1500", "route", {"nth": 1500}),
    ("icr:nth=3:vector=0xfc:source=1", "icr", {"nth": 3, "vector": 252, "source": 1}),
    ("inject:nth=10:target=0:count=2", "inject", {"nth": 10, "target": 0, "count": 2}),
])
def test_fault_specs_kvm_fault_takes(spec, stage, opts):
    assert nested.parse_fault(spec) == (stage, opts)


@pytest.mark.parametrize("spec,msg", [
    ("kick:nth=3", "not available"),             # QEMU-only stages
    ("entry:nth=3", "not available"),
    ("route:prob=0.5", "not available"),         # QEMU-only triggers
    ("route:nth=3:delay_us=5", "not available"),
    ("route:vector=251", "needs a trigger"),
    ("route:nth=0", "K >= 1"),
    ("route:nth=1:source=256", "below 256"),
    ("route:nth=1:vector=256", "0..255"),
    ("route:nth=1:count=0", "count"),
    ("bogus:nth=1", "unknown fault stage"),
    ("route:nth", "bad fault option"),
])
def test_fault_specs_kvm_fault_refuses(spec, msg):
    with pytest.raises(ValueError) as e:
        nested.parse_fault(spec)
    assert msg in str(e.value)


def test_bad_fault_fails_before_anything_boots(tmp_path):
    with pytest.raises(vm.HarnessError) as e:
        vm.run(str(tmp_path / "x"), hypervisor="kvm-nested", faults=["kick:nth=1"],
               log=lambda s: None)
    assert e.value.outcome == "infra-failed" and "kick" in str(e.value)
    assert not (tmp_path / "x").exists()


def test_l1_command_line_shares_the_host_root_and_the_out_dir():
    argv = nested.l1_argv("/usr/bin/qemu-system-x86_64", "/k", "/i", "/out", "/out/c.log")
    line = " ".join(argv)
    assert "-accel tcg,thread=multi" in line and "-cpu max" in line  # SVM under TCG
    assert "path=/,mount_tag=host,security_model=none,readonly=on" in line
    assert "path=/out,mount_tag=out" in line and "readonly" not in line.split("mount_tag=out")[1]
    assert "-no-reboot" in argv and "file:/out/c.log" in argv


def test_l1_result_file(tmp_path):
    p = tmp_path / "r.env"
    p.write_text("OUTCOME=guest-hung\nREASON=a=b c\nT_CONT=12.5\nnoise\n")
    assert nested.read_env(str(p)) == {"OUTCOME": "guest-hung", "REASON": "a=b c",
                                       "T_CONT": "12.5"}
    assert nested.read_env(str(tmp_path / "missing")) == {}


def test_paths_l1_cannot_see_are_refused():
    with pytest.raises(vm.HarnessError) as e:
        nested._visible("/tmp/guest/vmlinuz", "the guest kernel")
    assert "not visible in L1" in str(e.value)


class _FakeL1:
    """Stands in for L1's QEMU: writes console lines, runs until killed."""
    instances = []

    def __init__(self, argv, **kw):
        console = next(a for a in argv if a.startswith("file:"))[5:]
        with open(console, "w") as f:
            f.write(self.text)
        self.returncode = None
        self.pid = 1 << 22
        _FakeL1.instances.append(self)

    def poll(self):
        return self.returncode

    def kill(self):
        self.returncode = -9

    def wait(self, timeout=None):
        return self.returncode


@pytest.mark.parametrize("text,outcome,msg", [
    ("IPT-L1: booted 2.1 6.12\n[  40.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n",
     "infra-failed", "L1 stalled"),
    ("IPT-L1: booted 2.1 6.12\n[   9.0] Kernel panic - not syncing: boom\n",
     "infra-failed", "L1 kernel panicked"),
])
def test_a_wedged_l1_is_killed_and_reported(tmp_path, monkeypatch, text, outcome, msg):
    for k in ("KERNEL", "INITRD"):
        monkeypatch.setenv(f"IPITRACE_{k}", f"/var/cache/none/{k.lower()}")
        monkeypatch.setenv(f"IPITRACE_L1_{k}", f"/var/cache/none/l1-{k.lower()}")
    monkeypatch.setenv("IPITRACE_L1_FAULT_MODULE", "/var/cache/none/kvm_fault.ko")
    monkeypatch.setattr(nested.os, "access", lambda *a: True)
    _FakeL1.text = text
    _FakeL1.instances = []
    monkeypatch.setattr(nested.subprocess, "Popen", _FakeL1)
    out = tmp_path / "snap"
    with pytest.raises(vm.HarnessError) as e:
        nested.run(str(out), collector=False, log=lambda s: None)
    assert e.value.outcome == outcome and msg in str(e.value)
    assert [p.returncode for p in _FakeL1.instances] == [-9], "L1 killed"
    m = json.loads((out / "manifest.json").read_text())
    assert not m["complete"] and m["timings"]["l1_boot_s"] >= 0


# ---- end to end ----

@pytest.fixture(scope="module")
def nested_env():
    if not os.access(nested.QEMU, os.X_OK):
        pytest.skip(f"no {nested.QEMU} (Debian's qemu-system-x86)")
    if os.geteuid() != 0:
        pytest.skip("needs root (L1 exports / read-only over 9p)")
    if subprocess.run(["dpkg-query", "-W", "linux-headers-amd64"], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode != 0:
        pytest.skip("no linux-headers-amd64 (the L1 kernel's version and headers)")
    agent = artifacts.agent()
    # The collector is part of the product, not of the environment: missing
    # is a failure.
    p = subprocess.run([agent, "kvm-source", "--help"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    assert p.returncode == 0, f"{agent} has no kvm-source subcommand: {p.stderr[-300:]}"
    return agent


@pytest.fixture(scope="module")
def runs(nested_env, tmp_path_factory):
    cache = {}

    def get(key, **kw):
        if key not in cache:
            for attempt in (1, 2, 3):
                out = str(tmp_path_factory.mktemp(f"nested-{key}"))
                try:
                    kw.setdefault("vcpus", 2)
                    m = vm.run(out, hypervisor="kvm-nested",
                               log=lambda s: print(s, file=sys.stderr), **kw)
                    break
                except vm.HarnessError as e:
                    # The test bed itself fails now and then: TCG's emulated
                    # SVM resets the nested guest (a triple fault) or wedges
                    # L1 (a few runs in a hundred here; CI once saw two in a
                    # row).  Three in a row is not the bed: worth a look.
                    if attempt == 3 or e.outcome not in scenario.BED_FAILURES:
                        raise
                    print(f"nested {key}: {e}; see {out}; running it again",
                          file=sys.stderr)
            cache[key] = (out, m)
        return cache[key]

    return get


def test_clean_nested_run_has_both_regions(runs):
    out, m = runs("clean", seconds=4)
    assert m["complete"] and m["outcome"] == "completed"
    for k in TCG_KEYS:
        assert k in m, k
    assert m["hv_source"] == "kvm"
    assert m["hv_reader"] == "kvm-bpf", "the default reader on L1's 6.12 kernel"
    assert m["l1_kernel"].endswith("-amd64")
    assert m["l2_qemu"].startswith("QEMU emulator version")
    assert m["collector_exit"] == 0
    for k in ("l1_boot_s", "l2_boot_s", "run_s"):
        assert m["timings"][k] > 0, m["timings"]
    assert len(m["interrupts"]["CAL"]) == 2

    guest = abi.Region(os.path.join(out, "guest.region"))
    assert guest.h["producer"] == abi.CONSTS["IPT_PRODUCER_GUEST"]
    assert guest.h["cpu_count"] == 2
    assert sum(1 for c in range(2) for _ in guest.records(c)) > 1000

    hv = abi.Region(os.path.join(out, "hv.region"))
    assert hv.h["producer"] == abi.CONSTS["IPT_PRODUCER_KVM"]
    assert hv.h["cpu_count"] == 2 and hv.apic_id[:2] == [0, 1]
    assert hv.h["flags"] & (1 << 2), "the collector marked the region STOPPED"
    for v in range(2):
        types = {r["type"] for r in hv.records(v)}
        assert {"H_ICR", "H_IRR", "H_ACK"} <= types, (v, types)
    assert os.path.getsize(os.path.join(out, "faults.jsonl")) == 0
    with open(os.path.join(out, "console.log")) as f:
        assert "IPITRACE-DONE" in f.read()
    assert os.path.getsize(os.path.join(out, "l1-console.log")) > 0

    # One clock: no ICR before its send, no guest IRQ entry before its
    # injection, with the KVM source's guest-TSC stamps.
    c = clockorder.check(out)
    assert c["sends"] > 100 and c["icrs"] == c["sends"], c
    assert c["send_after_icr"] == 0 and c["entry_before_ack"] == 0, c

    report = analyze(out)
    for v in LOSS_VERDICTS:
        assert report["verdict_counts"].get(v, 0) == 0, (v, report["losses"][:2])


def test_route_fault_in_l1_kvm_is_named_at_its_stage(runs):
    """kvm_fault.ko skips __apic_accept_irq for the 500th call-function-
    single IPI after the guest's module loaded (a loaded 2-core host still
    gives ~400 a second): the target's IRR is never set.  With two vCPUs
    the sender waits until the target next passes through idle (the end of
    the load at the latest); the agent names the loss either way."""
    out, m = runs("route", seconds=8, faults=["route:nth=500"], watch_hang_ms=5000)
    assert m["complete"] and m["outcome"] in ("completed", "guest-hung")
    assert m.get("fault_module_unloaded") == "1", "kvm_fault.ko unloads cleanly"
    with open(os.path.join(out, "faults.jsonl")) as f:
        truth = [json.loads(ln) for ln in f if ln.strip()]
    assert len(truth) == 1, truth
    t = truth[0]
    assert (t["stage"], t["vector"], t["nth"], t["fire"], t["fault"]) == ("route", 251, 500,
                                                                          1, 0)
    assert {t["source"], t["target"]} == {0, 1} and t["icr_seq"] is None and t["tsc"] > 0
    report = analyze(out)
    lost = [x for x in report["losses"] if x["verdict"] == "lost-in-routing"]
    assert [(x["source_vcpu"], x["target_vcpu"]) for x in lost] == [(t["source"], t["target"])]
    others = {v: n for v, n in report["verdict_counts"].items()
              if v in LOSS_VERDICTS and v != "lost-in-routing" and n}
    assert not others, others


def _counts_match_the_guest(out, m, loaded=None):
    """Per target CPU, KVM's injections of the call-function vectors (the
    collector's H_ACKs) = the guest's call-function IRQ entries (the
    module's records) over the traced window, and = the guest's own
    /proc/interrupts (CAL) since boot, at the instant the guest read it.
    loaded: the CPUs the load calls (default all), which must have taken
    many."""
    ind = independent_counts(out)
    cal = m["interrupts"].get("CAL")
    assert cal and len(cal) == len(ind), m["interrupts"]
    for c, mine in ind.items():
        assert mine["hv_overwritten"] == 0 and mine["guest_overwritten"] == 0, mine
        if loaded is None or c in loaded:
            assert mine["guest_irq"] > 100, (c, mine)
        assert abs(mine["hv_ack_window"] - mine["guest_irq"]) <= IN_FLIGHT_SLACK, (c, mine)
    check_acks_match_proc_interrupts(cal, ind)


def test_clean_nested_counts_match_proc_interrupts(runs):
    out, m = runs("clean", seconds=4)
    _counts_match_the_guest(out, m)


def test_the_tracefs_reader_passes_the_same_checks(runs):
    """The fallback reader (no BPF on the host): one clock, the counts of
    the guest's own /proc/interrupts, no loss verdict."""
    out, m = runs("clean-tracefs", seconds=4, kvm_backend="tracefs")
    assert m["complete"] and m["outcome"] == "completed"
    assert m["hv_reader"] == "kvm-tracefs"
    c = clockorder.check(out)
    assert c["sends"] > 100 and c["icrs"] == c["sends"], c
    assert c["send_after_icr"] == 0 and c["entry_before_ack"] == 0, c
    _counts_match_the_guest(out, m)
    report = analyze(out)
    for v in LOSS_VERDICTS:
        assert report["verdict_counts"].get(v, 0) == 0, (v, report["losses"][:2])


def _mask_run_checks(out, m, vcpus, loaded=None):
    """Every check of a clean run, for a run of cpumask sends; returns the
    call-function ICRs by kind: (all-but-self shorthand, PV hypercall)."""
    assert m["complete"] and m["outcome"] == "completed"
    guest = abi.Region(os.path.join(out, "guest.region"))
    masks = sum(1 for c in range(vcpus) for r in guest.records(c)
                if r["type"] == "G_SEND" and r["flags"] & abi.CONSTS["IPT_SEND_F_MASK"])
    assert masks > 100, "the load should make cpumask sends"
    hv = abi.Region(os.path.join(out, "hv.region"))
    icrs = [r for v in range(vcpus) for r in hv.records(v) if r["type"] == "H_ICR"
            and r["vector"] == guest.h["vec_call_function"]]
    shorthand = sum(1 for r in icrs if (r["arg0"] >> 18) & 3 == 3)
    pv = sum(1 for r in icrs if r["flags"] & abi.CONSTS["IPT_ICR_F_PV"])
    print(f"mask sends: {masks} G_SEND records; ICRs: {shorthand} all-but-self, {pv} PV",
          file=sys.stderr)
    c = clockorder.check(out)
    assert c["send_after_icr"] == 0 and c["entry_before_ack"] == 0, c
    _counts_match_the_guest(out, m, loaded)
    report = analyze(out)
    for v in LOSS_VERDICTS:
        assert report["verdict_counts"].get(v, 0) == 0, (v, report["losses"][:2])
    assert report["verdict_counts"]["served-by-ipi"] > 1000
    return shorthand, pv


def test_mask_sends_to_every_other_cpu_use_the_shorthand(runs):
    """mode=many on 3 vCPUs in x2APIC mode: each load thread's mask holds
    every other CPU, which Linux sends with the all-but-self shorthand; the
    collector resolves it against the APIC IDs."""
    out, m = runs("many", seconds=4, mode="many", vcpus=3, x2apic=True)
    shorthand, _ = _mask_run_checks(out, m, 3)
    assert shorthand > 50, shorthand


def test_partial_mask_sends_go_by_pv_hypercall(runs):
    """mode=many on 4 vCPUs, load threads on CPUs 0-2 only: each mask holds
    two of the three other CPUs, which a KVM guest (kvm-pv-ipi, on with
    -cpu host, x2APIC only) sends by the KVM_HC_SEND_IPI hypercall; the
    collector splits each into one H_ICR per target it names."""
    out, m = runs("many-pv", seconds=4, mode="many", vcpus=4, x2apic=True,
                  extra_cmdline="ipt.kparams=load_cpus=0-2")
    _, pv = _mask_run_checks(out, m, 4, loaded={0, 1, 2})
    assert pv > 50, pv


def test_a_stage_the_source_cannot_see_is_never_blamed(runs):
    """The collector reads a host with Intel APICv on (simulated in L1):
    the acknowledge is invisible, so an IPI that kvm_fault.ko withdraws
    from the IRR before the target acknowledges it (inject) must not be
    blamed on injection (which the same fault gets with every stage seen:
    validate-kvm-inject)."""
    # Rings big enough that the withdrawn IPI stays in the window while the
    # guest waits for its idle flush.
    out, m = runs("apicv-inject", seconds=6, faults=["inject:nth=300"], accel_sim="apicv",
                  hv_capacity=1 << 19)
    assert m["complete"]
    hv = abi.Region(os.path.join(out, "hv.region"))
    assert not any(r["type"] in ("H_ACK", "H_EOI") for v in range(2) for r in hv.records(v))
    with open(os.path.join(out, "faults.jsonl")) as f:
        truth = [json.loads(ln) for ln in f if ln.strip()]
    assert [t["stage"] for t in truth] == ["inject"], truth
    report = analyze(out)
    counts = report["verdict_counts"]
    assert counts["lost-in-injection"] == 0 and counts["target-blocked"] == 0, counts
    stats = {x["name"]: x["count"] for x in report["stats"]}
    assert stats["hv_stage_unobserved"] == 1
    # The withdrawn IPI's request was either served by something other than
    # its own IPI (an idle flush or a later IPI, soon or seconds later), or
    # the guest still waited for it at the snapshot (with two busy vCPUs the
    # target may never go idle) and the interval the source cannot see is
    # named, not blamed.
    t = truth[0]

    def mine(x):
        return x["owns_ipi"] and (x["source_cpu"], x["target_cpu"]) == (t["source"], t["target"]) \
            and x["queue_tsc"] <= t["tsc"] and (x["served_tsc"] or t["tsc"] + 1) > t["tsc"]
    assert not report["served_without_ipi_truncated"]
    served = [x for x in report["served_without_ipi"] if mine(x)]
    waiting = [x for x in report["losses"] if mine(x)]
    assert len(served) + len(waiting) == 1, (served, waiting)
    for x in report["losses"]:
        assert x["verdict"] == "lost-in-unobserved-stage", x
        assert "ACK" in x["reason"] and "enable_apicv=0" in x["reason"], x
