"""Harness: scenarios as data, outcome classification, reports, live reading,
and robustness (libvirt unreachable, VM that cannot start, operator stop,
results disk full, a short multi-VM soak)."""
import json
import os
import struct
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ipitrace_harness import abi, nightly, runner, scenario, soak, vm  # noqa: E402


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_library_scenarios_are_valid():
    scs = scenario.library()
    names = {s["name"] for s in scs}
    assert {"clean-soak", "route-single"} <= names
    for s in scs:
        assert s["timeout"] > s["load"]["seconds"]


@pytest.mark.parametrize("text,msg", [
    ('name="x"\n', "'timeout' is required"),
    ('timeout=200\nbogus=1\n', "unknown key 'bogus'"),
    ('timeout=200\nfaults=["teleport:nth=1"]\n', "unknown fault stage"),
    ('timeout=200\nfaults=["route"]\n', "needs a trigger"),
    ('timeout=200\n[vm]\nvcpus=1\n', "vcpus"),
    ('timeout=10\n[load]\nseconds=30\n', "shorter than the load"),
    ('timeout=200\n[expect]\nlosses={"lost-in-space"=1}\n', "expect.losses"),
    ('timeout=200\n[load]\nseconds="ten"\n', "must be int"),
    ('timeout=200\n[vm]\nguest="fedora"\n', "vm.guest must be one of"),
    ('timeout=200\n[load]\nstress="tlb-shootdown"\n', "applies to vm.guest 'debian12'"),
    ('timeout=200\n[vm]\nguest="debian12"\n[load]\nmode="many"\n', "load.mode drive"),
    ('timeout=200\n[vm]\nguest="debian12"\n[load]\nstress="tlb shootdown"\n',
     "bad stress-ng workload"),
    ('timeout=200\n[vm]\nguest="debian12"\nhypervisor="kvm-nested"\n', "'tcg' only"),
])
def test_bad_scenarios_are_rejected_with_a_reason(tmp_path, text, msg):
    with pytest.raises(scenario.ScenarioError, match=msg):
        scenario.load(write(tmp_path, "s.toml", text))


def test_classify_and_check():
    sc = scenario.load(os.path.join(scenario.LIBRARY, "route-single.toml"))
    loss = {"verdict": "lost-in-routing", "source_vcpu": 0, "target_vcpu": 3, "vector": 251}
    report = {"requests": 5000, "losses": [loss],
              "verdict_counts": {"lost-in-routing": 1, "served-by-ipi": 4999}}
    truth = [{"stage": "route", "source": 0, "target": 3, "vector": 251}]
    outcome, detail = scenario.classify({"outcome": "guest-hung"}, report)
    assert (outcome, detail) == ("lost-ipi", "lost-in-routing")
    assert scenario.check(sc, outcome, report, truth) == []
    # wrong target named: the injected loss is not found
    bad = dict(report, losses=[dict(loss, target_vcpu=2)])
    assert any("not named" in f for f in scenario.check(sc, outcome, bad, truth))
    # a guest hang with no loss found is unexplained, never "passed"
    assert scenario.classify({"outcome": "guest-hung"}, {"losses": []})[0] == "hung-unexplained"
    err = vm.HarnessError("vm-crashed", "boom")
    assert scenario.classify({}, None, err) == ("vm-crashed", "boom")


def _fake_results():
    return [
        {"scenario": "route-single", "passed": True, "outcome": "lost-ipi", "duration": 40.0,
         "requests": 9000, "failures": [], "losses": [
             {"verdict": "lost-in-routing", "source_vcpu": 0, "target_vcpu": 3, "vector": 251}],
         "truth": [{"stage": "route", "source": 0, "target": 3}],
         # the agent's JSON shape (ipitrace analyze --json: "latency")
         "tsc_khz": 2_000_000,
         "latency": [{"stage": st, "count": 9000, "p50_us": p50, "p99_us": p50 * 20,
                      "max_us": p50 * 900,
                      "histogram": {"unit": "ticks", "counts": [0] * 12 + [10, 8900, 80, 10]}}
                     for st, p50 in
                     (("send->IRR", 3.3), ("IRR->ACK", 25.3), ("ACK->IRQ", 2.9),
                      ("IRQ->function", 1.1))],
         "partial": False},
        {"scenario": "clean", "passed": False, "outcome": "hung-unexplained", "duration": 60.0,
         "requests": 100, "failures": ["outcome hung-unexplained, expected passed"],
         "losses": [], "truth": [], "latency": None, "partial": False},
    ]


def test_nightly_reports(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "20260101-000000.json").write_text(json.dumps({"passed": 1, "results": [{}]}))
    out = tmp_path / "work" / "20260102-000000"
    out.mkdir(parents=True)
    manifest = {"id": "20260102-000000", "inputs": {
        "qemu": {"sha256": "ab" * 32}, "kernel": {"version": "6.12"},
        "agent": {"version": "ipitrace 0.1"}, "repo_commit": "c0ffee"},
        "scenarios": [{"name": "route-single", "text": "timeout=200\n"}]}
    s = nightly.write_reports(str(out), manifest, _fake_results(), False, str(runs))
    assert (s["passed"], s["failed"]) == (1, 1)
    assert s["confusion"] == {"route": {"lost-in-routing": 1}, "none": {"none": 1}}
    suite = ET.parse(out / "junit.xml").getroot()
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    failed = [tc for tc in suite if tc.find("failure") is not None]
    assert [tc.get("name") for tc in failed] == ["clean"]
    page = (out / "report.html").read_text()
    assert "confusion.png" in page and "trend.png" in page and "FAIL" in page
    assert (out / "confusion.png").stat().st_size > 1000
    assert "latency.png" in page and (out / "latency.png").stat().st_size > 1000
    assert (out / "latency-percentiles.png").stat().st_size > 1000
    # the repository gets one small summary per run: no HTML, images or
    # per-scenario files
    assert sorted(p.name for p in runs.iterdir()) == ["20260101-000000.json",
                                                      "20260102-000000.json"]
    kept = json.loads((runs / "20260102-000000.json").read_text())
    assert (kept["passed"], kept["failed"], kept["full_output"]) == (1, 1, str(out))
    assert kept["scenarios"] == manifest["scenarios"]
    assert kept["confusion"] == s["confusion"]
    row = kept["results"][0]
    assert (row["scenario"], row["injected"], row["losses_found"]) == ("route-single", 1, 1)
    assert row["latency_us"]["IRR->ACK"] == {"count": 9000, "p50": 25.3, "p99": 506.0,
                                             "max": 22770.0}
    assert kept["results"][1]["latency_us"] == {}
    assert [t["id"] for t in nightly.trend_of(str(runs))] == ["20260101-000000",
                                                              "20260102-000000"]


def _synthetic_region(path, rings=2, cap=8, heads=(5, 11), torn=None):
    hdr = bytearray(abi.CONSTS["IPT_HEADER_SIZE"])
    stride = abi.CONSTS["IPT_RING_HEADER_SIZE"] + cap * abi.CONSTS["IPT_RECORD_SIZE"]
    vals = [abi.CONSTS["IPT_MAGIC"], 1, 0, 2, 64, 4096, rings, cap, 1, stride,
            4096 + rings * stride, 1000, rings, 0xfc, 0xfb, 0xfd, 0, 0, 0, 1, 0, 0,
            b"test", b"\0" * 16] + [0] * abi.CONSTS["IPT_MAX_CPUS"]
    struct.pack_into(abi.HEADER_FMT, hdr, 0, *vals)
    body = bytearray(rings * stride)
    q = abi.TYPE_BY_NAME["G_QUEUE"]
    for k in range(rings):
        off = k * stride
        struct.pack_into(abi.RING_FMT, body, off, heads[k], k, 0, 0)
        for idx in range(max(0, heads[k] - cap), heads[k]):
            seq = idx if (k, idx) != torn else abi.CONSTS["IPT_SEQ_INVALID"]
            struct.pack_into(abi.RECORD_FMT, body, off + 64 + (idx % cap) * 64,
                             seq, idx, q, k, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(hdr + body)


def test_kernel_release_is_read_from_the_image(tmp_path):
    """The manifests name the kernel's release from the bzImage's own setup
    header, not the cache's file name (every image there is 'vmlinuz')."""
    from ipitrace_harness import artifacts
    img = bytearray(0x1000)
    img[0x202:0x206] = b"HdrS"
    img[0x20E:0x210] = (0x300).to_bytes(2, "little")
    img[0x500:0x500 + 40] = b"5.10.0-46-amd64 (debian-kernel@lists)\0".ljust(40, b"\0")
    (tmp_path / "vmlinuz").write_bytes(bytes(img))
    assert artifacts.kernel_release(str(tmp_path / "vmlinuz")) == "5.10.0-46-amd64"
    (tmp_path / "not-a-kernel").write_bytes(b"\0" * 0x1000)
    assert artifacts.kernel_release(str(tmp_path / "not-a-kernel")) is None
    assert artifacts.kernel_release(str(tmp_path / "missing")) is None
    # The test guest's real image: the release its build recorded (the
    # cache entry's 'complete' file, from the headers' package name).
    kernel = artifacts.guest()["KERNEL"]
    with open(os.path.join(os.path.dirname(kernel), "complete")) as f:
        built_as = f.read().strip()
    assert artifacts.kernel_release(kernel) == built_as
    assert nightly.inputs()["kernel"]["version"] == built_as


def test_nightly_out_puts_the_runs_under_dir(tmp_path, monkeypatch):
    import importlib.machinery
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "ipitrace-harness")
    loader = importlib.machinery.SourceFileLoader("ipitrace_harness_cli", path)
    cli = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(cli)
    seen = {}

    def fake_run_matrix(scs, work_dir=None, log=print, **kw):
        seen["work_dir"] = work_dir
        seen["scenarios"] = [s["name"] for s in scs]
        return os.path.join(work_dir, "ID"), {"partial": False, "failed": 0}

    monkeypatch.setattr(cli.nightly, "run_matrix", fake_run_matrix)
    sc = os.path.join(abi.REPO, "harness", "scenarios", "route-single.toml")
    monkeypatch.setattr(sys, "argv", ["ipitrace-harness", "nightly", "--out", str(tmp_path), sc])
    assert cli.main() == 0
    assert seen == {"work_dir": str(tmp_path), "scenarios": ["route-single"]}


def test_live_region_counts_incrementally_and_distrusts_torn(tmp_path):
    p = str(tmp_path / "g.region")
    _synthetic_region(p, heads=(5, 6))
    live = abi.LiveRegion(p)
    assert live.poll()
    assert live.counts["G_QUEUE"] == 11 and live.missed == 0
    # ring 1 grows to head 11 (window [3, 11)): 6..10 are new, 9 is torn
    _synthetic_region(p, heads=(5, 11), torn=(1, 9))
    assert live.poll()
    assert live.counts["G_QUEUE"] == 11 + 4
    assert live.missed == 1
    # ring 1 laps the reader: head 30, window [22, 30): 11..21 were lost
    _synthetic_region(p, heads=(5, 30))
    assert live.poll()
    assert live.counts["G_QUEUE"] == 15 + 8
    assert live.missed == 1 + 11
    live.close()
    bad = tmp_path / "zero.region"
    bad.write_bytes(b"\0" * 8192)
    assert not abi.LiveRegion(str(bad)).poll()


def test_libvirt_unreachable_is_infra_failed():
    with pytest.raises(vm.HarnessError) as e:
        vm.open_connection("qemu+unix:///system?socket=/nonexistent/ipt-libvirt-sock")
    assert e.value.outcome == "infra-failed"


def _domains(uri):
    conn = vm.open_connection(uri)
    try:
        return [d.name() for d in conn.listAllDomains()]
    finally:
        vm.release(uri, conn)


def test_vm_that_cannot_start_is_infra_failed_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("IPITRACE_QEMU", "/nonexistent/qemu-system-x86_64")
    with pytest.raises(vm.HarnessError) as e:
        vm.run(str(tmp_path / "snap"), vcpus=2, seconds=1, log=lambda s: None)
    assert e.value.outcome == "infra-failed"
    m = json.load(open(tmp_path / "snap" / "manifest.json"))
    assert m["complete"] is False
    assert _domains(vm.default_uri()) == []


def test_operator_stop_destroys_the_vm_and_keeps_partial_results(tmp_path):
    stop = threading.Event()
    started = []

    def on_start(info):
        started.append(info)
        stop.set()

    with pytest.raises(vm.HarnessError) as e:
        vm.run(str(tmp_path / "snap"), vcpus=2, seconds=30, log=lambda s: None,
               on_start=on_start, stop_event=stop)
    assert e.value.outcome == "interrupted"
    assert started and not os.path.exists(started[0]["guest_region"])
    assert json.load(open(tmp_path / "snap" / "manifest.json"))["complete"] is False
    assert _domains(vm.default_uri()) == []


def test_results_disk_full_marks_partial_and_destroys(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        with pytest.raises(vm.HarnessError) as e:
            vm.run(str(mnt / "snap"), vcpus=2, seconds=2, log=lambda s: None)
        assert e.value.outcome == "infra-failed" and "No space" in str(e.value)
        assert json.load(open(mnt / "snap" / "manifest.json"))["partial"] is True
        assert _domains(vm.default_uri()) == []
    finally:
        import time
        for _ in range(50):  # QEMU may still be closing its console file
            if subprocess.run(["umount", str(mnt)], stderr=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.2)
        else:
            subprocess.run(["umount", "-l", str(mnt)])


def test_short_soak_two_vms(tmp_path):
    sc = scenario.load(os.path.join(scenario.LIBRARY, "clean-soak.toml"))
    sc["expect"]["min_requests"] = 200
    lines = []
    s = soak.soak(sc, vms=2, duration=5, out_dir=str(tmp_path), log=lines.append,
                  progress_every=3)
    assert s["outcomes"] == {"passed": 2}, [r["failures"] for r in s["results"]]
    assert s["losses"] == 0 and s["requests"] >= 400 and not s["partial"]
    assert any("VMs up" in ln and "CSD requests/s" in ln for ln in lines), lines
    assert json.load(open(tmp_path / "soak.json"))["vms"] == 2
    for r in s["results"]:   # the agent watched each VM live
        m = json.load(open(os.path.join(r["out"], "manifest.json")))
        assert any(e["event"] == "vm_attached" for e in m["watch_events"]), m["watch_events"]
        assert "agent_hang" not in m and m["watch_errors"] == []


def test_agent_watching_live_freezes_a_hung_guest(tmp_path):
    """route-single loses one IPI and the guest then spins on its CSD lock:
    the agent, following both regions live, calls the hang from the streams
    alone (outstanding > hang_ms) and the VM is suspended at once, long
    before the console deadline; the agent's live verdict names the
    injected IPI."""
    sc = scenario.load(os.path.join(scenario.LIBRARY, "route-single.toml"))
    sc["watch"]["hang_ms"] = 2000
    res = runner.run_scenario(sc, str(tmp_path / "run"), log=lambda s: None)
    m = json.load(open(tmp_path / "run" / "manifest.json"))
    assert res["outcome"] == "lost-ipi" and res["passed"], res["failures"]
    assert m["outcome"] == "guest-hung" and m["hang_detected_by"] == "agent", m.get("outcome")
    hang = m["agent_hang"]
    (t,) = res["truth"]
    assert (hang["verdict"], hang["source_cpu"], hang["target_cpu"]) == \
        ("lost-in-routing", t["source"], t["target"]), hang
    assert hang["outstanding_ms"] >= 2000
    assert any(e["event"] == "vm_attached" for e in m["watch_events"])
    # The agent's own hang snapshot holds its verdict report.
    rep = json.load(open(os.path.join(hang["snapshot"], "report.json")))
    assert rep["verdict_counts"]["lost-in-routing"] == 1
    assert m["watch_errors"] == []


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_soak_across_two_libvirt_hosts(tmp_path):
    """One VM on the embedded driver, one on a second host reached through
    qemu+ssh (this machine's system libvirtd behind an sshd on loopback);
    the second VM's regions and console are fetched over ssh."""
    from ipitrace_harness import loopback_host
    h = loopback_host.LoopbackHost(str(tmp_path / "host2"), port=_free_port())
    try:
        remote = h.start()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot start a loopback libvirt host here: {e}")
    try:
        sc = scenario.load(os.path.join(scenario.LIBRARY, "clean-soak.toml"))
        sc["expect"]["min_requests"] = 100
        s = soak.soak(sc, vms=2, duration=4, out_dir=str(tmp_path / "soak"),
                      uris=[vm.default_uri(), remote], log=lambda s: None)
    finally:
        h.stop()
    by_uri = {r["uri"]: r for r in s["results"]}
    assert set(by_uri) == {vm.default_uri(), remote}
    for r in s["results"]:
        assert r["outcome"] == "passed", (r["uri"], r["failures"])
        assert r["requests"] >= 100
        assert os.path.getsize(os.path.join(r["out"], "console.log")) > 0


def test_validation_rows_judge_each_injected_ipi(tmp_path):
    from ipitrace_harness import validation
    res = {"truth": [{"stage": "route", "source": 0, "target": 1},
                     {"stage": "route", "source": 2, "target": 3},
                     {"stage": "route", "source": 1, "target": 0}],
           "losses": [{"verdict": "lost-in-routing", "source_vcpu": 0, "target_vcpu": 1},
                      {"verdict": "lost-in-injection", "source_vcpu": 2, "target_vcpu": 3},
                      {"verdict": "lost-in-routing", "source_vcpu": 3, "target_vcpu": 2}]}
    # the 3->2 loss answers no injected line: extra
    assert validation.stage_row(res) == {"injected": 3, "right": 1, "wrong": 1, "missed": 1,
                                         "extra": 1}
    # one loss answers one line only, the one it was queued nearest before
    two = {"truth": [{"stage": "route", "source": 0, "target": 1, "tsc": 1000},
                     {"stage": "route", "source": 0, "target": 1, "tsc": 5000}],
           "losses": [{"verdict": "lost-in-routing", "source_vcpu": 0, "target_vcpu": 1,
                       "queue_tsc": 4990}]}
    assert validation.stage_row(two) == {"injected": 2, "right": 1, "wrong": 0, "missed": 1,
                                         "extra": 0}
    pairs, left = scenario.match_truth(two["truth"], two["losses"])
    assert [p[1] is not None for p in pairs] == [False, True] and left == []
    kick = {"truth": [{"stage": "kick", "source": 0, "target": 1}], "losses": []}
    assert validation.stage_row(kick)["right"] == 1
    summary = {"stages": [dict(scenario="v-route", stage="route", expected="lost-in-routing",
                               requests=1234, outcome="lost-ipi", failures=[],
                               **validation.stage_row(res))],
               "clean": {"requests": 1000001, "losses": 0, "vms": 4, "outcomes": [{"passed": 4}],
                         "seconds_per_vm": 300}}
    out = tmp_path / "validation.md"
    validation.write(summary, str(out))
    text = out.read_text()
    assert "| route | lost-in-routing | 3 | 1 | 1 | 1 | 1 | 1,234 | lost-ipi |" in text
    assert "1,000,001 CSD requests, 0 loss verdicts" in text


def test_boot_crash_is_retried_but_a_crash_under_load_is_not(tmp_path, monkeypatch):
    calls = []

    def crash_then_ok(out, **kw):
        calls.append(1)
        if len(calls) == 1:
            e = vm.HarnessError("vm-crashed", "VM exited before printing IPITRACE-LOAD-START")
            e.before_load = True
            raise e
        os.makedirs(out, exist_ok=True)
        json.dump({"complete": True}, open(os.path.join(out, "manifest.json"), "w"))
        return {"complete": True}

    monkeypatch.setattr(vm, "_run_once", crash_then_ok)
    m = vm.run(str(tmp_path / "a"), log=lambda s: None)
    assert len(calls) == 2 and len(m["boot_crashes"]) == 1
    assert len(json.load(open(tmp_path / "a" / "manifest.json"))["boot_crashes"]) == 1

    def crash_under_load(out, **kw):
        calls.append(1)
        raise vm.HarnessError("vm-crashed", "VM exited before printing IPITRACE-DONE")

    calls.clear()
    monkeypatch.setattr(vm, "_run_once", crash_under_load)
    with pytest.raises(vm.HarnessError):
        vm.run(str(tmp_path / "b"), log=lambda s: None)
    assert len(calls) == 1
