#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Helpers shared by the benchmark and diagnostic scripts (bench-qemu-oneboot.py,
ab-agent.py, sync-profile-mttcg.py, perf-phases.py): the bootstrap interval of a median,
the benchmark guest's QEMU command line, QMP, and counters read from
/proc and from the guest module's region.  Import it from a script in
this directory (`from benchlib import ...`; Python puts a script's own
directory first on sys.path), or with PYTHONPATH=scripts."""
import glob
import json
import mmap
import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import time

# The harness's agent lookup and claim, as its VMs use them.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "harness"))
from ipitrace_harness import artifacts, hosts  # noqa: E402


def median_ci(values, resamples=2000):
    """95 % bootstrap interval of the median (percentile method, fixed
    seed: the same rounds give the same interval)."""
    rng = random.Random(1)
    meds = sorted(statistics.median(rng.choices(values, k=len(values)))
                  for _ in range(resamples))
    return meds[int(resamples * 0.025)], meds[int(resamples * 0.975) - 1]


class Qmp:
    def __init__(self, path, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.s.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.f = self.s.makefile("rw")
        json.loads(self.f.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.f.write(json.dumps(msg) + "\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "event" in r:
                continue
            if "error" in r:
                raise RuntimeError(f"QMP {name}: {r['error']}")
            return r["return"]


def guest_records(path):
    """Sum of the ring heads of the guest module's region (all records)."""
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        try:
            header_size, ring_count = struct.unpack_from("<II", m, 16)
            (stride,) = struct.unpack_from("<Q", m, 32)
            total = 0
            for k in range(ring_count):
                (head,) = struct.unpack_from("<Q", m, header_size + k * stride)
                total += head
            return total
        finally:
            m.close()


def qemu_ctxt_switches(pid):
    """Context switches of all QEMU threads so far (voluntary: a thread
    waited, e.g. a halted vCPU or a contended lock; involuntary:
    preempted)."""
    total = 0
    for p in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            with open(p) as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                        total += int(value)
        except (OSError, ValueError, IndexError):
            pass  # a thread that just exited
    return total


def qemu_cpu_ns(pid):
    total = 0
    for p in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(p) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just exited
    return total


def guest_files():
    """(kernel, initrd) of the benchmark guest that scripts/build-guest.sh
    builds (or finds in its cache)."""
    out = subprocess.run(
        ["bash", os.path.join(os.path.dirname(os.path.abspath(__file__)), "build-guest.sh")],
        check=True, capture_output=True, text=True).stdout
    guest = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return guest["KERNEL"], guest["INITRD"]


def stop_qemu(q, *paths):
    """Kill the guest's QEMU, reap it and remove its region files."""
    q.kill()
    q.wait()
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def guest_qemu_cmd(qemu, kernel, initrd, *, vcpus, tcg, icount, load_s, threads, console,
                   shm, qmp_path):
    """The benchmark guest: the module's load generator
    (smp_call_function_single, wait=1) on every vCPU for load_s seconds,
    its region in the ivshmem file shm, the console in console and QMP at
    qmp_path.  icount (a shift) implies single-threaded TCG.  Claims shm
    first (the module writes only into a claimed region)."""
    hosts.LocalHost().claim_region(artifacts.agent(), shm, 64)
    cmd = [qemu, "-machine", "pc", "-accel", f"tcg,thread={tcg}",
           "-cpu", "qemu64,-x2apic", "-smp", str(vcpus), "-m", "768",
           "-L", "/usr/share/qemu", "-L", "/usr/share/seabios",
           "-display", "none", "-monitor", "none", "-serial", f"file:{console}",
           "-no-reboot", "-nic", "none",
           "-kernel", kernel, "-initrd", initrd,
           "-append", f"console=ttyS0 quiet panic=-1 ipt.seconds={load_s} "
                      f"ipt.threads={threads} ipt.mode=single ipt.wait=1 ipt.action=load",
           "-object", f"memory-backend-file,id=iptshm,mem-path={shm},size=64M,share=on",
           "-device", "ivshmem-plain,memdev=iptshm",
           "-qmp", f"unix:{qmp_path},server=on,wait=off"]
    if icount is not None:
        cmd[cmd.index("-accel") + 1] = "tcg,thread=single"
        cmd += ["-icount", f"shift={icount},sleep=off"]
    return cmd


def wait_for_load(q, console, work, timeout=240):
    """Until the guest's load generator runs (IPITRACE-LOAD-START); exits
    if QEMU dies first or the load does not start within timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        if q.poll() is not None:
            sys.exit(f"{os.path.basename(sys.argv[0])}: QEMU exited ({q.returncode}) "
                     f"before the load started; see {work}")
        if os.path.exists(console) and "IPITRACE-LOAD-START" in open(console, errors="replace").read():
            return
        if time.monotonic() > deadline:
            sys.exit(f"{os.path.basename(sys.argv[0])}: the guest load did not start in {timeout} s")
        time.sleep(0.2)
