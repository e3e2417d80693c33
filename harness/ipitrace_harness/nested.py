"""One traced guest under KVM, nested: the fleet's case on a TCG-only host.

L1 is Debian's kernel (scripts/build-l1.sh: the linux-image of the guest's
kernel version, a busybox initramfs with the 9p stack and KVM, the
TEST-ONLY kvm_fault.ko) booted under TCG by Debian's stock
qemu-system-x86_64 as a plain subprocess (-cpu max: AMD SVM emulated).  L1
sees the host's root read-only (9p tag "host") and the run's out directory
read-write (9p tag "out"); its init (harness/nested/l1-init) runs
harness/nested/l1-run.sh in a chroot of the host root, which runs the
traced guest (L2: build-guest.sh's kernel and initramfs) under L1's KVM
with the same stock QEMU, the KVM collector (`ipitrace kvm-source`) and,
optionally, the live watch, and copies the snapshot into the out share.

Faults (--fault, stages icr, route and inject) are armed when the guest
prints IPITRACE-READY (its tracing module loaded): kvm_fault.ko is loaded
then, so nth=K counts from there.  A KVM guest's boot sends thousands of
call-function IPIs (2,000-3,000 with two vCPUs), so counting from L2's
start, as QEMU's injector does, would drop the IPI before anything traces
it.  The ground truth's tsc is the sender's guest TSC when KVM accepted
the IPI (route, inject) or saw the ICR write (icr), a little after the
KVM source's H_ICR stamp; icr_seq is null.

Parameters go to L1 in OUT/params.env; L1's result comes back in
OUT/l1-result.env.  The out directory then looks like a TCG run's
(manifest.json, hv.region, guest.region, faults.jsonl, console.log) plus
l1-console.log, l1-dmesg.txt and the collector's and the watch's logs.
"""
import json
import os
import shlex
import shutil
import socket
import subprocess
import time
import uuid

from . import abi, artifacts, vm
from .abi import REPO

QEMU = "/usr/bin/qemu-system-x86_64"
RUN_SCRIPT = os.path.join(REPO, "harness", "nested", "l1-run.sh")
# Stages and options kvm_fault.ko offers (harness/nested/kvm-fault).
STAGES = ("icr", "route", "inject")
OPTIONS = ("nth", "vector", "source", "target", "count")
# Host paths L1 cannot see through the host-root share: l1-init mounts its
# own tmpfs over them inside the chroot.
HIDDEN = ("/tmp/", "/run/", "/dev/", "/proc/", "/sys/")
L1_BOOT_LIMIT = 180     # s from L1's start to its init's first marker
COPY_LIMIT = 180        # s for the snapshot copy and L1's poweroff
# L1 kernel messages that mean L1 itself no longer makes progress.
L1_STALLS = ("rcu_preempt detected stalls", "rcu_sched detected stalls",
             "watchdog: BUG: soft lockup", "blocked for more than")


def parse_fault(spec):
    """vm.parse_fault() restricted to what kvm_fault.ko offers.
    Returns (stage, opts); raises ValueError."""
    stage, opts = vm.parse_fault(spec)
    if stage not in STAGES:
        raise ValueError(f"fault stage '{stage}' is not available with --hypervisor "
                         f"kvm-nested (one of {', '.join(STAGES)})")
    for k in opts:
        if k not in OPTIONS:
            raise ValueError(f"fault option '{k}' is not available with --hypervisor "
                             f"kvm-nested (one of {', '.join(OPTIONS)})")
    if "nth" not in opts:
        raise ValueError(f"fault '{spec}' needs nth=K with --hypervisor kvm-nested")
    for k in ("source", "target"):
        if k in opts and not 0 <= opts[k] < 256:
            raise ValueError(f"fault '{spec}': {k} must be a vCPU index below 256")
    if "vector" in opts and not 0 <= opts["vector"] <= 255:
        raise ValueError(f"fault '{spec}': vector must be within 0..255")
    if "count" in opts and opts["count"] < 1:
        raise ValueError(f"fault '{spec}': count must be >= 1")
    return stage, opts


def l1_artifacts():
    """dict with KERNEL, INITRD, FAULT_MODULE (scripts/build-l1.sh, cached)."""
    env = {k: os.environ.get(f"IPITRACE_L1_{k}") for k in ("KERNEL", "INITRD", "FAULT_MODULE")}
    if all(env.values()):
        return env
    try:
        out = subprocess.run(["bash", os.path.join(REPO, "scripts", "build-l1.sh")],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
    except subprocess.CalledProcessError as e:
        raise vm.HarnessError("infra-failed", f"scripts/build-l1.sh failed ({e.returncode})")
    res = {}
    for line in out.splitlines():
        k, _, v = line.strip().partition("=")
        if k in ("KERNEL", "INITRD", "FAULT_MODULE"):
            res[k] = v
    return res


def l1_argv(qemu, kernel, initrd, out, console, vcpus=2, mem_mb=3072, cpu="max", name="l1",
            qmp=None):
    """The L1 QEMU command line (TCG; SVM comes with -cpu max).  qmp: a
    unix socket path for L1's QMP (to dump its CPUs when it wedges)."""
    argv = [
        qemu, "-name", name, "-accel", "tcg,thread=multi", "-cpu", cpu,
        "-smp", str(vcpus), "-m", str(mem_mb), "-machine", "pc",
        "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
        "-no-reboot", "-serial", f"file:{console}",
        "-kernel", kernel, "-initrd", initrd,
        "-append", "console=ttyS0 panic=-1 quiet",
        "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,"
                   "multidevs=remap",
        "-virtfs", f"local,path={out},mount_tag=out,security_model=none,multidevs=remap",
    ]
    if qmp:
        argv += ["-qmp", f"unix:{qmp},server=on,wait=off"]
    return argv


def dump_l1(qmp, path, timeout=10):
    """L1's vCPU registers (QMP `info registers -a`) into path, best effort:
    where L1 was when it stopped making progress (under TCG, a vCPU in SVM
    guest mode shows the nested guest's registers)."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(qmp)
            f = s.makefile("rw")
            f.readline()
            text = []
            for cmd in ({"execute": "qmp_capabilities"},
                        {"execute": "human-monitor-command",
                         "arguments": {"command-line": "info registers -a"}}):
                f.write(json.dumps(cmd) + "\n")
                f.flush()
                while True:
                    r = json.loads(f.readline())
                    if "return" in r or "error" in r:
                        break
                if isinstance(r.get("return"), str):
                    text.append(r["return"])
        with open(path, "w") as out:
            out.write("".join(text))
        return True
    except (OSError, ValueError):
        return False


def read_env(path):
    """KEY=VALUE lines (l1-run.sh's result) as a dict."""
    res = {}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                k, sep, v = line.rstrip("\n").partition("=")
                if sep:
                    res[k] = v
    except FileNotFoundError:
        pass
    return res


def _visible(path, what):
    p = os.path.realpath(path)
    if any(p.startswith(h) for h in HIDDEN):
        raise vm.HarnessError("infra-failed", f"{what} {p} is not visible in L1 (it mounts "
                              f"its own tmpfs over {', '.join(HIDDEN)})")
    return p


STAGE_DIR = "/var/tmp/ipitrace-l1-stage"


def _staged_repo():
    """The repository files L1 runs (its scripts and the agent), at a path
    L1 can see: the checkout itself, or (a checkout under /tmp, as a CI
    clone may be) a copy under /var/tmp keyed by the files' contents."""
    agent = os.path.realpath(artifacts.agent())
    files = {"harness/nested/l1-run.sh": RUN_SCRIPT,
             "scripts/bench-kvm-phases.py": os.path.join(REPO, "scripts", "bench-kvm-phases.py"),
             "scripts/benchlib.py": os.path.join(REPO, "scripts", "benchlib.py"),
             "build/host-agent/ipitrace": agent}
    real = os.path.realpath(REPO)
    if not any(real.startswith(h) for h in HIDDEN) and agent.startswith(real + "/"):
        return real, agent
    import hashlib
    import shutil
    h = hashlib.sha256()
    for rel, src in sorted(files.items()):
        with open(src, "rb") as f:
            h.update(rel.encode() + f.read())
    root = os.path.join(STAGE_DIR, h.hexdigest()[:16])
    if not os.path.exists(os.path.join(root, "complete")):
        for rel, src in files.items():
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(root, rel))
        open(os.path.join(root, "complete"), "w").close()
    return root, os.path.join(root, "build/host-agent/ipitrace")


def _tail(path, n=3):
    try:
        with open(path, errors="replace") as f:
            return " / ".join(ln.strip() for ln in f.read().splitlines()[-n:] if ln.strip())
    except FileNotFoundError:
        return ""


def _float(env, key):
    try:
        return float(env[key])
    except (KeyError, ValueError):
        return None


def run(out, vcpus=2, seconds=5, faults=(), mode="single", wait=1, x2apic=False,
        mem_mb=768, shm_mb=256, hv_capacity=1 << 17, timeout=None, threads=None,
        hang_grace=25, extra_cmdline="", log=print, watch_hang_ms=None,
        watch_poll_ms=1000, l1_vcpus=2, l1_mem_mb=3072, collector=True,
        stop_event=None, uri=None, on_start=None, accel_sim=None, bench=None,
        kvm_backend="auto"):
    """Boot L1, run the traced guest under its KVM, snapshot.  Returns the
    manifest dict; raises vm.HarnessError (infra-failed, vm-crashed,
    interrupted) when there is no snapshot.

    The hypervisor rings default to 2^17 records (TCG runs: 2^19): the
    regions are copied out of L1 through 9p and the live watch copies them
    in L1 for every hang check.  The guest region stays at 256 MiB: during
    a hang the waiting CPU keeps serving the other CPU's requests (about
    12,000 records a second), and a 64 MiB region wrapped within a 35 s
    console deadline, leaving the loss outside the analysable window.

    kvm_backend: how the collector reads KVM's tracepoints (auto: BPF,
    else tracefs); the manifest's hv_reader names the one it used.

    accel_sim="apicv" has the collector read an L1 host with Intel APICv
    on (tests: a source that cannot see the acknowledge stage).  bench:
    the arguments of scripts/bench-kvm-phases.py, run in L1 once the load
    started (scripts/bench-kvm-oneboot.py); its phases go to
    OUT/bench.jsonl.

    collector=False runs without the KVM collector (no hv.region; the
    manifest is then not complete): a debugging aid only.  uri must be None
    (L1 is a plain QEMU process on this host); on_start is not called."""
    if uri:
        raise vm.HarnessError("infra-failed", "--hypervisor kvm-nested runs on this host "
                              "only (no libvirt URI)")
    faults = list(faults)
    for f in faults:
        try:
            parse_fault(f)
        except ValueError as e:
            raise vm.HarnessError("infra-failed", str(e)) from e
    if watch_hang_ms and not collector:
        raise vm.HarnessError("infra-failed", "the live watch needs the KVM collector")
    if not os.access(QEMU, os.X_OK):
        raise vm.HarnessError("infra-failed", f"{QEMU} missing (Debian's qemu-system-x86)")
    os.makedirs(out, exist_ok=True)
    out = os.path.realpath(out)
    guest = artifacts.guest()
    l1 = l1_artifacts()
    agent = None
    if collector or watch_hang_ms or bench:
        try:
            agent = _visible(_staged_repo()[1], "the agent")
        except subprocess.CalledProcessError as e:
            raise vm.HarnessError("infra-failed", f"cannot build the agent ({e})") from e
        if not os.access(agent, os.X_OK):
            raise vm.HarnessError("infra-failed", f"no agent at {agent}")
    kernel = _visible(guest["KERNEL"], "the guest kernel")
    initrd = _visible(guest["INITRD"], "the guest initramfs")
    fault_module = _visible(l1["FAULT_MODULE"], "kvm_fault.ko")
    repo = _visible(_staged_repo()[0], "the repository")
    run_script = os.path.join(repo, "harness/nested/l1-run.sh")

    tag = uuid.uuid4().hex[:8]
    name = f"ipt-{tag}"
    threads = threads or vcpus
    cmdline = (f"console=ttyS0 quiet panic=-1 ipt.seconds={seconds} "
               f"ipt.threads={threads} ipt.mode={mode} ipt.wait={wait} ipt.action=load "
               f"{extra_cmdline}").strip()
    l2_limit = timeout or (300 + 4 * seconds)
    for fn in ("l1-result.env", "l1-console.log", "l1-dmesg.txt", "l1-qemu.log", "console.log",
               "l2-qemu.log", "guest.region", "hv.region", "faults.jsonl", "fault-stats.txt",
               "collector.log", "watch.jsonl", "watch.err", "manifest.json", "l2-qemu-debug.log",
               "l1-registers.txt"):
        try:
            os.unlink(os.path.join(out, fn))
        except FileNotFoundError:
            pass
    params = {
        "IPT_RUN_SCRIPT": run_script, "IPT_TAG": tag, "IPT_VCPUS": vcpus,
        "IPT_MEM_MB": mem_mb, "IPT_SHM_MB": shm_mb, "IPT_X2APIC": int(bool(x2apic)),
        "IPT_KERNEL": kernel, "IPT_INITRD": initrd, "IPT_CMDLINE": cmdline,
        "IPT_SECONDS": seconds, "IPT_HANG_GRACE": hang_grace, "IPT_TIMEOUT_S": l2_limit,
        "IPT_FAULTS": ";".join(faults), "IPT_FAULT_MODULE": fault_module,
        "IPT_AGENT": agent or "", "IPT_COLLECTOR": int(bool(collector)),
        "IPT_HV_CAPACITY": hv_capacity, "IPT_WATCH_HANG_MS": watch_hang_ms or 0,
        "IPT_WATCH_POLL_MS": watch_poll_ms, "IPT_REPO": repo,
        "IPT_ACCEL_SIM": accel_sim or "", "IPT_BENCH": bench or "",
        "IPT_KVM_BACKEND": kvm_backend,
    }
    with open(os.path.join(out, "params.env"), "w") as f:
        for k, v in params.items():
            f.write(f"{k}={shlex.quote(str(v))}\n")

    l1_console = os.path.join(out, "l1-console.log")
    l1_qmp = f"/tmp/ipt-l1-{tag}.qmp"
    argv = l1_argv(QEMU, l1["KERNEL"], l1["INITRD"], out, l1_console, vcpus=l1_vcpus,
                   mem_mb=l1_mem_mb, name=f"{name}-l1", qmp=l1_qmp)
    manifest = {
        "name": name, "uri": None, "hypervisor": "kvm-nested", "hv_source": "kvm",
        "vcpus": vcpus, "seconds": seconds, "mode": mode, "wait": wait,
        "threads": threads, "x2apic": bool(x2apic), "faults": faults,
        "extra_cmdline": extra_cmdline, "qemu": QEMU, "kernel": kernel, "initrd": initrd,
        "hv_capacity": hv_capacity, "shm_mb": shm_mb, "accel_sim": accel_sim,
        "kvm_backend": kvm_backend, "l1": {
            "qemu": QEMU, "kernel": l1["KERNEL"], "initrd": l1["INITRD"],
            "fault_module": fault_module, "vcpus": l1_vcpus, "mem_mb": l1_mem_mb,
            "argv": argv},
        "started": time.time(), "complete": False,
    }
    if watch_hang_ms:
        manifest["watch_hang_ms"] = watch_hang_ms
    log(f"[{name}] L1 starting (TCG, {l1_vcpus} vCPUs); L2: {vcpus} vCPUs under KVM, "
        f"load {seconds}s {mode} wait={wait}" + (f", faults {';'.join(faults)}" if faults else ""))
    # L1 dies with this process, however it ends (a SIGKILLed harness too).
    if shutil.which("setpriv"):
        argv = ["setpriv", "--pdeathsig", "KILL", "--"] + argv
    t0 = time.time()
    proc = None
    timings = {}
    res = {}
    try:
        with open(os.path.join(out, "l1-qemu.log"), "w") as qlog:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=qlog,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        deadline = t0 + L1_BOOT_LIMIT + l2_limit + COPY_LIMIT
        seen = 0
        booted = False
        load_seen = False
        while True:
            if stop_event is not None and stop_event.is_set():
                raise vm.HarnessError("interrupted", "stopped by the operator")
            try:
                with open(l1_console, errors="replace") as f:
                    text = f.read()
            except FileNotFoundError:
                text = ""
            for line in text[seen:].splitlines(keepends=True):
                if not line.endswith("\n"):
                    break
                seen += len(line)
                if line.startswith("IPT-L1: "):
                    msg = line[8:].strip()
                    if not booted and msg.startswith("booted"):
                        booted = True
                        timings["l1_boot_s"] = round(time.time() - t0, 1)
                    if not load_seen and msg == "L2 load running":
                        # From here the run ends within the load, the hang
                        # grace and the snapshot; anything longer is a stuck L1.
                        load_seen = True
                        deadline = min(deadline, time.time() + seconds + hang_grace
                                       + COPY_LIMIT)
                    log(f"[{name}] L1: {msg}")
                elif any(m in line for m in L1_STALLS):
                    # An L1 CPU no longer makes progress (seen with TCG's
                    # emulated SVM, a few runs in a hundred).
                    dump_l1(l1_qmp, os.path.join(out, "l1-registers.txt"))
                    raise vm.HarnessError("infra-failed", f"L1 stalled: {line.strip()[:160]} "
                                          f"(see {l1_console}, l1-registers.txt)")
            if proc.poll() is not None:
                break
            now = time.time()
            if not booted and now > t0 + L1_BOOT_LIMIT:
                raise vm.HarnessError("infra-failed", f"L1 did not boot in {L1_BOOT_LIMIT} s "
                                      f"(see {l1_console})")
            if "Kernel panic" in text:
                raise vm.HarnessError("infra-failed", f"L1 kernel panicked (see {l1_console})")
            if now > deadline:
                dump_l1(l1_qmp, os.path.join(out, "l1-registers.txt"))
                raise vm.HarnessError("infra-failed",
                                      f"the nested run did not end in {deadline - t0:.0f} s; "
                                      "L1 killed (its vCPUs in l1-registers.txt)")
            time.sleep(0.5)
        timings["run_s"] = round(time.time() - t0, 1)
        res = read_env(os.path.join(out, "l1-result.env"))
        if not res:
            qlog = _tail(os.path.join(out, "l1-qemu.log"))
            if proc.returncode > 0 and not booted:
                # QEMU refused to start L1 (a bad kernel, no memory...)
                raise vm.HarnessError("infra-failed", f"L1 QEMU failed ({proc.returncode}): "
                                      f"{qlog}")
            # L1's QEMU died under us (MTTCG has shown an iotlb_to_section
            # assertion at boot).  Before L2's load nothing under test has
            # happened: vm.run() boots again (before_load).
            e = vm.HarnessError("vm-crashed", f"L1 QEMU exited ({proc.returncode}) "
                                f"{'during' if booted else 'before'} its init without a "
                                f"result: {qlog} (see {l1_console})")
            e.before_load = "IPT-L1: L2 load running" not in text
            raise e
        manifest["l1_kernel"] = res.get("L1_KERNEL")
        manifest["l2_qemu"] = res.get("L2_QEMU")
        manifest["collector"] = res.get("COLLECTOR")
        if res.get("COLLECTOR_EXIT"):
            manifest["collector_exit"] = int(res["COLLECTOR_EXIT"])
        if "FAULT_MODULE_UNLOADED" in res:
            manifest["fault_module_unloaded"] = res["FAULT_MODULE_UNLOADED"]
        # L1's clock (uptime) between the steps of l1-run.sh
        for key, a, b in (("l2_start_s", "T_START", "T_QEMU_UP"),
                          ("collector_start_s", "T_QEMU_UP", "T_COLLECTOR_READY"),
                          ("l2_boot_s", "T_CONT", "T_LOAD_START"),
                          ("l2_load_s", "T_LOAD_START", "T_STOP"),
                          ("collector_stop_s", "T_STOP", "T_COLLECTOR_STOPPED"),
                          ("snapshot_s", "T_STOP", "T_COPIED")):
            ta, tb = _float(res, a), _float(res, b)
            if ta is not None and tb is not None:
                timings[key] = round(tb - ta, 1)
        outcome = res.get("OUTCOME")
        if outcome not in ("completed", "guest-hung"):
            e = vm.HarnessError(outcome or "infra-failed",
                                res.get("REASON") or "l1-run.sh ended without an outcome")
            e.before_load = res.get("BEFORE_LOAD") == "1"
            raise e
        manifest["outcome"] = outcome
        if outcome == "guest-hung":
            manifest["hang_detected_by"] = res.get("HANG_BY", "console")
            log(f"[{name}] L2 hung (detected by the {manifest['hang_detected_by']})")
        console = os.path.join(out, "console.log")
        with open(console, errors="replace") as f:
            manifest["interrupts"] = vm.parse_interrupts(f.read())
        _watch_into(manifest, out)
        have = [fn for fn in ("guest.region", "hv.region", "faults.jsonl")
                if os.path.exists(os.path.join(out, fn))]
        if res.get("COPIED") != "1" or "guest.region" not in have:
            manifest["partial"] = True
            raise vm.HarnessError("infra-failed", "the snapshot was not copied out of L1")
        if "hv.region" not in have:
            manifest["partial"] = True
            manifest["hv_source"] = None
            log(f"[{name}] no hypervisor region (collector {res.get('COLLECTOR')})")
        else:
            # The reader the collector used (--kvm-backend auto: BPF, else
            # tracefs), from the region it wrote.
            manifest["hv_reader"] = abi.hv_source(abi.Region(os.path.join(out, "hv.region")))
            manifest["complete"] = True
        log(f"[{name}] snapshot in {out}: L1 boot {timings.get('l1_boot_s')} s, "
            f"L2 boot {timings.get('l2_boot_s')} s, whole run {timings.get('run_s')} s")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log(f"[{name}] L1 QEMU (pid {proc.pid}) did not die")
        try:
            os.unlink(l1_qmp)
        except FileNotFoundError:
            pass
        manifest["timings"] = timings
        manifest["finished"] = time.time()
        vm.write_manifest(out, manifest, name, log)
    return manifest


def _watch_into(manifest, out):
    """The live watch's events (run in L1) into the manifest, as vm.run() does."""
    path = os.path.join(out, "watch.jsonl")
    if not os.path.exists(path):
        return
    events, errors = [], []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                events.append(json.loads(line))
            except ValueError:
                errors.append(f"not JSON: {line[:200]}")
    try:
        with open(os.path.join(out, "watch.err"), errors="replace") as f:
            errors += [ln.strip()[:500] for ln in f if ln.strip()]
    except FileNotFoundError:
        pass
    manifest["watch_events"] = [e for e in events if e.get("event") != "vm_detached"][:100]
    manifest["watch_errors"] = errors[:20]
    hang = next((e for e in events if e.get("event") == "hang_detected"), None)
    if hang:
        manifest["agent_hang"] = hang
