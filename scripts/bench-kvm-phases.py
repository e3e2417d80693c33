#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""The phases of the one-boot KVM benchmark, run in L1 (the KVM host) while
the traced guest (L2) runs its IPI load without pause.  Driven by
harness/nested/l1-run.sh when the run is a benchmark
(scripts/bench-kvm-oneboot.py); not for direct use.

Per phase (--phase-s of running guest), one configuration of the host:

  off       nothing collects
  ipitrace  `ipitrace kvm-source` on the guest's QEMU, as shipped (BPF
            programs on the tracepoints; the region in /dev/shm), stopped
            at the phase end
  ipitrace-tracefs
            the same with --backend tracefs (its own tracefs instance): the
            fallback, and the measurement that chose BPF
  trace-cmd `trace-cmd record` of the same KVM events for the same
            threads, with the same clock, to a file in L1's tmpfs
  floor     the same events enabled into a tracefs instance that nothing
            reads (overwrite mode): the cost of the tracepoints alone

Measured per phase: the guest's records per second (the guest module
traces in every phase, so its records count IPI operations) and the
collecting processes' CPU time (getrusage of the children, which includes
trace-cmd's per-CPU recorders).  Phases rotate (off first in each round,
the others in an order that moves by one each round).  Writes JSON lines,
one per phase, to --out.
"""
import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import guest_records  # noqa: E402

TRACEFS = "/sys/kernel/tracing"


def kvm_events(agent):
    """The events ipitrace's KVM source reads (`ipitrace kvm-events`: the
    agent's own list), less the ones it reads only at its start
    (kvm_entry, for the thread map): {name: kernel-side filter or None}."""
    out = subprocess.run([agent, "kvm-events"], check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    events = {}
    for line in out.splitlines():
        name, _, filt, when = line.split("\t")
        if when != "start":
            events[name] = None if filt == "-" else filt
    return events


def threads(pid):
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))


def present(events):
    return [e for e in events if os.path.isdir(f"{TRACEFS}/events/kvm/{e}")]


EVENTS = {}  # kvm_events(--agent), set in main()


def wfile(path, text):
    with open(path, "w") as f:
        f.write(text)


class Floor:
    """The same events into an instance buffer that nothing reads."""

    def __init__(self, pid, buffer_kb):
        self.dir = f"{TRACEFS}/instances/ipitrace-bench-floor"
        if os.path.isdir(self.dir):
            os.rmdir(self.dir)
        os.mkdir(self.dir)
        wfile(f"{self.dir}/trace_clock", "x86-tsc")
        wfile(f"{self.dir}/buffer_size_kb", str(buffer_kb))
        wfile(f"{self.dir}/options/event-fork", "1")
        wfile(f"{self.dir}/set_event_pid", " ".join(map(str, threads(pid))))
        for e in present(EVENTS):
            if EVENTS[e]:
                wfile(f"{self.dir}/events/kvm/{e}/filter", EVENTS[e])
            wfile(f"{self.dir}/events/kvm/{e}/enable", "1")

    def stop(self):
        wfile(f"{self.dir}/tracing_on", "0")
        for e in present(EVENTS):
            wfile(f"{self.dir}/events/kvm/{e}/enable", "0")
        os.rmdir(self.dir)
        return {}


class Proc:
    """A collecting process (kvm-source or trace-cmd), stopped by a signal."""

    def __init__(self, argv, sig, ready=None, log=None):
        self.sig = sig
        self.log = log
        self.p = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                  stderr=open(log, "w") if log else subprocess.DEVNULL)
        if ready:
            deadline = time.monotonic() + 30
            while not os.path.exists(ready):
                if self.p.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"bench: {argv[0]} did not start ({self.p.returncode})")
                time.sleep(0.02)

    def stop(self):
        self.p.send_signal(self.sig)
        try:
            self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        info = {"rc": self.p.returncode}
        if self.log:
            with open(self.log, errors="replace") as f:
                text = f.read()
            m = re.search(r"(\d+) events -> (\d+) records", text)
            if m:
                info["events"] = int(m.group(1))
                info["records"] = int(m.group(2))
            m = re.search(r"lost (\d+) \(kernel side (\d+)", text)
            if m:
                info["lost"] = int(m.group(1))
            info["log_tail"] = text.strip().splitlines()[-1:] if text.strip() else []
        return info


def start(config, a, work):
    if config == "off":
        return None
    if config == "floor":
        return Floor(a.qemu_pid, a.buffer_kb)
    if config in ("ipitrace", "ipitrace-tracefs"):
        ready = f"{work}/kvm-source.ready"
        if os.path.exists(ready):
            os.unlink(ready)
        argv = [a.agent, "kvm-source", "--pid", str(a.qemu_pid),
                "--out", "/dev/shm/ipt-bench-hv", "--capacity", str(a.capacity),
                "--buffer-kb", str(a.buffer_kb), "--ready-file", ready,
                "--backend", "tracefs" if config == "ipitrace-tracefs" else "bpf"]
        if a.perf_out:
            # A profile of the collector (not a measured phase: perf's own
            # sampling costs CPU too).
            argv = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-g",
                    "-o", a.perf_out, "--"] + argv
        return Proc(argv, signal.SIGTERM if not a.perf_out else signal.SIGINT, ready=ready,
                    log=f"{work}/kvm-source.log")
    if config == "trace-cmd":
        argv = ["trace-cmd", "record", "-q", "-C", "x86-tsc", "-b", str(a.buffer_kb),
                "-o", f"{work}/trace.dat"]
        for t in threads(a.qemu_pid):
            argv += ["-P", str(t)]
        for e in present(EVENTS):
            argv += ["-e", f"kvm:{e}"]
            if EVENTS[e]:
                argv += ["-f", EVENTS[e]]
        p = Proc(argv, signal.SIGINT, log=f"{work}/trace-cmd.log")
        time.sleep(0.5)  # trace-cmd arms its recorders
        return p
    raise SystemExit(f"bench: unknown config {config}")


def tree_cpu(root):
    """CPU seconds so far of process 'root' and its descendants (live ones:
    the collector's steady state over a phase, without its start-up and
    exit, which the children's rusage includes)."""
    kids, cpu = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        kids.setdefault(int(fields[1]), []).append(int(d))
        cpu[int(d)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [root]
    while todo:
        p = todo.pop()
        total += cpu.get(p, 0.0)
        todo += kids.get(p, [])
    return total


def cpu_children():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qemu-pid", type=int, required=True)
    ap.add_argument("--guest-region", required=True)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--configs", default="off,ipitrace,ipitrace-tracefs,trace-cmd,floor")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--phase-s", type=float, default=5)
    ap.add_argument("--buffer-kb", type=int, default=4096)
    ap.add_argument("--capacity", type=int, default=1 << 17)
    ap.add_argument("--work", default="/tmp/ipt-bench")
    ap.add_argument("--out", required=True)
    ap.add_argument("--perf-out", help="profile the ipitrace phases with perf record into "
                    "this file (diagnosis only: the phases' figures then include perf)")
    a = ap.parse_args()
    EVENTS.update(kvm_events(a.agent))
    if a.perf_out and not os.path.isabs(a.perf_out):
        a.perf_out = os.path.join(os.path.dirname(os.path.abspath(a.out)), a.perf_out)
    configs = a.configs.split(",")
    if configs[0] != "off":
        raise SystemExit("bench: --configs must start with off")
    os.makedirs(a.work, exist_ok=True)
    others = configs[1:]
    with open(a.out, "w") as out:
        for r in range(a.rounds):
            k = r % len(others) if others else 0
            order = ["off"] + others[k:] + others[:k]
            for config in order:
                c = start(config, a, a.work)
                cpu0 = cpu_children()
                pid = c.p.pid if isinstance(c, Proc) else None
                w0 = tree_cpu(pid) if pid else 0.0
                rec0, t0 = guest_records(a.guest_region), time.monotonic()
                time.sleep(a.phase_s)
                rec1, t1 = guest_records(a.guest_region), time.monotonic()
                w1 = tree_cpu(pid) if pid else 0.0
                info = c.stop() if c else {}
                cpu = cpu_children() - cpu0
                if rec1 < rec0:
                    # The guest's ring heads went back (its region was set
                    # up again): no rate for this phase.
                    print(f"bench: round {r} {config}: guest records went back "
                          f"({rec0} -> {rec1}); phase not counted", flush=True)
                    continue
                row = {"round": r, "config": config, "seconds": round(t1 - t0, 3),
                       "records": rec1 - rec0, "rate": (rec1 - rec0) / (t1 - t0),
                       "collector_cpu_s": round(cpu, 4),
                       "collector_window_cpu_s": round(w1 - w0, 4), **info}
                if config == "trace-cmd":
                    # Its events, counted after the phase (not measured).
                    rep = subprocess.run(["trace-cmd", "report", "-q", "-i",
                                          f"{a.work}/trace.dat"], stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True)
                    row["events"] = sum(1 for ln in rep.stdout.splitlines() if " kvm_" in ln)
                    row["trace_dat_bytes"] = os.path.getsize(f"{a.work}/trace.dat")
                out.write(json.dumps(row) + "\n")
                out.flush()
                print(f"bench: round {r} {config}: {row['rate']:.0f} guest records/s, "
                      f"collector {cpu:.3f} s CPU", flush=True)


if __name__ == "__main__":
    main()
