"""The KVM source (`ipitrace kvm-source`) on this host, against a paused
KVM VM: discovery, the region it writes, the life of its BPF programs and
of its tracefs instance (the two readers), the fallback from one to the
other, and its error paths (each with its own exit code).

This host's /dev/kvm cannot run a guest, but it can hold one paused
(QEMU -S with a plain CPU model): enough for everything here except
events, which the nested tests (test_nested.py) cover.
"""
import json
import os
import shutil
import signal
import struct
import subprocess
import time

import pytest

import conftest  # noqa: F401  (puts the harness on sys.path)
from ipitrace_harness import abi, artifacts as arts

QEMU = "/usr/bin/qemu-system-x86_64"
TRACEFS = "/sys/kernel/tracing"
INSTANCES = os.path.join(TRACEFS, "instances")
HHDR = abi.CONSTS["IPT_HHDR_EXT_OFFSET"]


def _mounts():
    with open("/proc/mounts") as f:
        return f.read()


@pytest.fixture(scope="module")
def host_ready():
    if os.geteuid() != 0:
        pytest.skip("needs root (tracefs, debugfs, /proc/PID/fd)")
    if not os.path.exists("/dev/kvm") or not os.path.exists(QEMU):
        pytest.skip("no /dev/kvm or no Debian QEMU")
    m = _mounts()
    if " tracefs " not in m:
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], check=False)
    if " debugfs " not in m:
        subprocess.run(["mount", "-t", "debugfs", "none", "/sys/kernel/debug"], check=False)
    if not os.path.isdir(os.path.join(TRACEFS, "events", "kvm")):
        pytest.skip("no KVM tracepoints on this host")
    return arts.agent()


@pytest.fixture
def paused_vm(host_ready, tmp_path):
    """A 3-vCPU KVM VM held paused (-S), named threads as libvirt runs it."""
    pidfile = tmp_path / "qemu.pid"
    p = subprocess.run([QEMU, "-enable-kvm", "-cpu", "kvm64", "-smp", "3", "-m", "128",
                        "-S", "-display", "none", "-nodefaults",
                        "-name", "ipt-kvm-src-test,debug-threads=on",
                        "-daemonize", "-pidfile", str(pidfile)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    if p.returncode != 0:
        pytest.skip(f"this host cannot hold a paused KVM VM: {p.stderr.strip()[:200]}")
    pid = int(pidfile.read_text())
    yield pid
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _start(agent, pid, out, *extra):
    ready = out + ".ready"
    if os.path.exists(ready):
        os.unlink(ready)
    proc = subprocess.Popen([agent, "kvm-source", "--pid", str(pid), "--out", out,
                             "--capacity", "1024", "--ready-file", ready, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not os.path.exists(ready):
        if proc.poll() is not None or time.time() > deadline:
            out_, err = proc.communicate(timeout=5)
            pytest.fail(f"kvm-source never became ready (rc {proc.returncode}): {err}")
        time.sleep(0.05)
    return proc


def _ours(proc):
    return [n for n in os.listdir(INSTANCES) if n.startswith(f"ipitrace-kvm-{proc.pid}-")]


def test_region_and_instance_lifecycle(host_ready, paused_vm, tmp_path):
    out = str(tmp_path / "hv.region")
    proc = _start(host_ready, paused_vm, out, "--backend", "tracefs")
    inst = _ours(proc)
    assert len(inst) == 1, os.listdir(INSTANCES)
    idir = os.path.join(INSTANCES, inst[0])
    with open(os.path.join(idir, "trace_clock")) as f:
        assert "[x86-tsc]" in f.read()
    with open(os.path.join(idir, "events", "kvm", "kvm_apic_ipi", "enable")) as f:
        assert f.read().strip() == "1"
    # The top-level buffer other tools use is left alone.
    with open(os.path.join(TRACEFS, "events", "kvm", "kvm_apic_ipi", "enable")) as f:
        top_enabled = f.read().strip()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert not os.path.exists(idir), "the instance (and its enabled events) must go at exit"
    with open(os.path.join(TRACEFS, "events", "kvm", "kvm_apic_ipi", "enable")) as f:
        assert f.read().strip() == top_enabled

    r = abi.Region(out)
    assert r.h["producer"] == abi.CONSTS["IPT_PRODUCER_KVM"]
    assert r.h["cpu_count"] == 3 and r.h["ring_count"] == 4
    assert r.apic_id[:3] == [0, 1, 2]
    flags = r.h["flags"]
    assert flags & (1 << 2), "STOPPED"
    assert not flags & (1 << 1), "no longer TRACING"
    magic, stages, partial, accel = struct.unpack_from("<IIII", r.data, HHDR)
    assert magic == abi.CONSTS["IPT_HHDR_EXT_MAGIC"]
    # No vendor module settings here (or ones that hide nothing): every
    # stage seen but coalescing, which KVM's tracepoints never show.
    C = abi.CONSTS
    if accel == 0:
        assert stages == C["IPT_HV_STAGE_ALL"] & ~C["IPT_HV_STAGE_COALESCE"]
    # The recording window, on the guest's clock: from before the first
    # event the source could have read to its stop.
    assert 0 < r.h["start_tsc"] <= r.h["stop_tsc"]
    assert "3 vCPUs" in err and "3 named vCPU threads" in err
    assert abi.hv_source(r) == "kvm-tracefs"


BPF_PROGRAMS = ("kvm_apic_ipi", "kvm_apic_accept_irq", "kvm_inj_virq", "kvm_eoi",
                "kvm_vcpu_wakeup", "kvm_write_tsc_offset", "kvm_entry", "kvm_hypercall",
                "kvm_apicv_accept_irq")


def _our_programs():
    """Loaded BPF programs named like the KVM source's (bpftool's view)."""
    p = subprocess.run(["bpftool", "-j", "prog", "show"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    # Kernel program names are cut at 15 characters (bpftool may print the
    # whole name, from the program's BTF).
    names = set(BPF_PROGRAMS) | {n[:15] for n in BPF_PROGRAMS}
    return sorted(x.get("name", "") for x in json.loads(p.stdout) if x.get("name", "") in names)


def _programs_back_to(before):
    """The kernel frees a program once its last reference goes, after an
    RCU grace period: wait a little for it."""
    deadline = time.time() + 10
    while _our_programs() != before and time.time() < deadline:
        time.sleep(0.2)
    return _our_programs() == before


@pytest.fixture
def bpf_ready(host_ready):
    if not shutil.which("bpftool"):
        pytest.skip("no bpftool")
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        pytest.skip("no kernel BTF on this host")
    return host_ready


def test_bpf_programs_live_as_long_as_the_source(bpf_ready, paused_vm, tmp_path):
    """The default reader: BPF programs on KVM's tracepoints while it runs
    (no tracefs instance), none left after it stops."""
    before = _our_programs()
    out = str(tmp_path / "hv.region")
    proc = _start(bpf_ready, paused_vm, out, "--backend", "bpf")
    during = _our_programs()
    assert not _ours(proc), "the BPF reader makes no tracefs instance"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert len(during) - len(before) == len(BPF_PROGRAMS), (before, during)
    assert _programs_back_to(before), "programs left behind"
    r = abi.Region(out)
    assert abi.hv_source(r) == "kvm-bpf"
    assert r.h["flags"] & (1 << 2), "STOPPED"
    assert 0 < r.h["start_tsc"] <= r.h["stop_tsc"]
    assert "BPF ring buffer" in err


def test_a_killed_bpf_source_leaves_no_program(bpf_ready, paused_vm, tmp_path):
    before = _our_programs()
    out = str(tmp_path / "hv.region")
    proc = _start(bpf_ready, paused_vm, out, "--backend", "bpf")
    proc.kill()  # kill -9: the kernel releases the programs with its fds
    proc.communicate(timeout=30)
    assert _programs_back_to(before)
    assert abi.Region(out).h["producer"] == abi.CONSTS["IPT_PRODUCER_KVM"]


def test_without_bpf_auto_falls_back_to_tracefs(bpf_ready, paused_vm, tmp_path):
    """Root without CAP_BPF/CAP_SYS_ADMIN cannot load programs: --backend
    bpf fails with its own exit code, auto says why and reads tracefs."""
    nobpf = ["setpriv", "--bounding-set", "-bpf,-sys_admin,-perfmon", "--"]
    out = str(tmp_path / "hv.region")
    p = subprocess.run([*nobpf, bpf_ready, "kvm-source", "--pid", str(paused_vm),
                        "--out", out, "--backend", "bpf"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert p.returncode == 9 and "BPF" in p.stderr, p.stderr
    ready = out + ".ready"
    proc = subprocess.Popen([*nobpf, bpf_ready, "kvm-source", "--pid", str(paused_vm),
                             "--out", out, "--capacity", "1024", "--ready-file", ready],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not os.path.exists(ready) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "BPF unavailable" in err and "reading tracefs instead" in err, err
    assert abi.hv_source(abi.Region(out)) == "kvm-tracefs"


def test_accel_settings_hide_stages(host_ready, paused_vm, tmp_path):
    """A host with APICv on: the region says ACK and EOI are not observed."""
    params = tmp_path / "sysmod" / "kvm_intel" / "parameters"
    params.mkdir(parents=True)
    (params / "enable_apicv").write_text("Y\n")
    (params / "enable_ipiv").write_text("N\n")
    out = str(tmp_path / "hv.region")
    proc = _start(host_ready, paused_vm, out, "--accel-from", str(tmp_path / "sysmod"))
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    r = abi.Region(out)
    _, stages, _, accel = struct.unpack_from("<IIII", r.data, HHDR)
    C = abi.CONSTS
    assert accel == C["IPT_HV_ACCEL_APICV"]
    assert not stages & C["IPT_HV_STAGE_ACK"], "ACK hidden"
    assert not stages & C["IPT_HV_STAGE_EOI"], "EOI hidden"
    assert stages & C["IPT_HV_STAGE_ICR"] and stages & C["IPT_HV_STAGE_IRR"]


@pytest.mark.parametrize("backend", ["bpf", "tracefs"])
def test_vm_exit_mid_run_keeps_the_region(host_ready, paused_vm, tmp_path, backend):
    out = str(tmp_path / "hv.region")
    proc = _start(host_ready, paused_vm, out, "--backend", backend)
    os.kill(paused_vm, signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "VM exited" in err
    r = abi.Region(out)
    assert r.h["flags"] & (1 << 2)
    assert not _ours(proc)


def test_stale_instance_of_a_killed_collector_is_cleaned(host_ready, paused_vm, tmp_path):
    out = str(tmp_path / "hv.region")
    proc = _start(host_ready, paused_vm, out, "--backend", "tracefs")
    stale = _ours(proc)
    proc.kill()  # kill -9: no chance to clean up
    proc.communicate(timeout=30)
    assert stale and os.path.isdir(os.path.join(INSTANCES, stale[0]))
    # What it wrote so far is still a readable region.
    assert abi.Region(out).h["producer"] == abi.CONSTS["IPT_PRODUCER_KVM"]
    proc2 = _start(host_ready, paused_vm, str(tmp_path / "hv2.region"), "--backend", "tracefs")
    try:
        assert not os.path.isdir(os.path.join(INSTANCES, stale[0]))
    finally:
        proc2.send_signal(signal.SIGTERM)
        _, err = proc2.communicate(timeout=30)
    assert "removed 1 stale tracefs instance" in err


def _rc(agent, *args, user=None):
    cmd = [agent, "kvm-source", *args]
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=60)
    return p.returncode, p.stderr


def test_error_paths_have_distinct_exit_codes(host_ready, paused_vm, tmp_path):
    agent = host_ready
    out = str(tmp_path / "x.region")
    rc, err = _rc(agent, "--pid", "1", "--out", out)
    assert rc == 8 and "not a KVM VM" in err
    rc, err = _rc(agent, "--pid", "999999999", "--out", out)
    assert rc == 8 and "no process" in err
    rc, err = _rc(agent, "--pid", str(paused_vm), "--out", out, "--debugfs-kvm",
                  str(tmp_path / "no-debugfs"))
    assert rc == 7 and "debugfs" in err
    rc, err = _rc(agent, "--pid", str(paused_vm), "--out", str(tmp_path / "no" / "dir" / "x"))
    assert rc == 3 and "cannot create" in err
    rc, err = _rc(agent, "--pid", str(paused_vm), "--out", out, "--capacity", "1000")
    assert rc == 2 and "power of two" in err
    if shutil.which("setpriv"):
        rc, err = _rc(agent, "--pid", str(paused_vm), "--out", "/tmp/ipt-nobody.region",
                      user="65534")
        assert rc == 5 and "root" in err
    rc, _ = _rc(agent, "--out", out)
    assert rc == 2
