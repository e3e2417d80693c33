"""Boot one traced TCG guest through libvirt and take a snapshot.

The VM is a transient, auto-destroyed libvirt domain that uses the patched
QEMU as <emulator>, carries an ivshmem-plain <shmem> device for the guest
module's region, and creates the QEMU `ipitrace` object (hypervisor region
plus fault injection) through <qemu:commandline>.  The guest prints markers
on the serial console; when it prints IPITRACE-DONE the VM is suspended
(freezing the evidence), both regions are copied, and the VM is destroyed.

Two guests (GUESTS): "busybox", an initramfs whose init
(guest-kmod/initramfs/init) loads the module and runs its load generator;
and "debian12", the Debian 12 image of scripts/build-debian12.sh (systemd,
Debian's kernel, the module from the ipitrace-dkms package loaded at boot)
on a qcow2 overlay of its own, whose test driver (harness/debian12/) runs
stress-ng.
"""
import functools
import json
import os
import re
import threading
import time
import uuid
from xml.sax.saxutils import quoteattr, escape

import libvirt

from . import artifacts, hosts, livewatch

DEFAULT_URI_ROOT = "/tmp/ipt-embed"

EMBED_QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
stdio_handler = "file"
"""


class HarnessError(Exception):
    """A run that could not produce a snapshot; .outcome says why."""

    def __init__(self, outcome, msg):
        super().__init__(msg)
        self.outcome = outcome


_loop_lock = threading.Lock()
_loop_started = False


def _ensure_event_loop():
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run():
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-event", daemon=True).start()
        _loop_started = True


def default_uri():
    root = f"{DEFAULT_URI_ROOT}-{os.getpid()}"
    return f"qemu:///embed?root={root}"


_embed_conns = {}
_embed_lock = threading.Lock()


def open_connection(uri):
    """A libvirt connection.  The embedded driver registers itself on every
    open and libvirt allows only a few registrations per process ("Too many
    drivers"), so an embedded connection is opened once per process and
    shared (connections are thread-safe); release() leaves it open."""
    _ensure_event_loop()
    if not uri.startswith("qemu:///embed"):
        return _open(uri)
    # One opener at a time: two soak threads opening the same embedded root
    # at once make one of them fail ("qemu state driver is not active").
    with _embed_lock:
        conn = _embed_conns.get(uri)
        if conn is None or not conn.isAlive():
            conn = _open(uri)
            _embed_conns[uri] = conn
        return conn


def release(uri, conn):
    if not uri.startswith("qemu:///embed"):
        conn.close()


def _open(uri):
    if uri.startswith("qemu:///embed"):
        root = uri.split("root=", 1)[1].split("&")[0]
        for sub in ("etc", "etc/qemu"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
            with open(os.path.join(root, sub, "qemu.conf"), "w") as f:
                f.write(EMBED_QEMU_CONF)
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise HarnessError("infra-failed", f"cannot open libvirt URI {uri}: {e}") from e


def start_flags(uri):
    # The embedded driver cannot auto-destroy (libvirt 11.3): its domains
    # die with this process, and run() destroys them in a finally block.
    return 0 if uri.startswith("qemu:///embed") else libvirt.VIR_DOMAIN_START_AUTODESTROY


def domain_xml(name, qemu, kernel, initrd, cmdline, vcpus, mem_mb, x2apic,
               console, shm_name, shm_mb, ipt_object, machine="pc", foreign_shm=None,
               disk=None):
    """x2apic=True also gives the guest an interrupt-remapping IOMMU (q35 +
    intel-iommu, eim on): without one, Linux under TCG stays in xAPIC mode.
    foreign_shm=(name, mb): another ivshmem device, not ipitrace's, ahead of
    it on the PCI bus (the module must leave it alone).  disk: a qcow2
    image, the guest's virtio disk vda."""
    vda = ""
    if disk:
        vda = (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
               f"<source file={quoteattr(disk)}/><target dev='vda' bus='virtio'/></disk>\n    ")
    foreign = ""
    if foreign_shm:
        foreign = (f"<shmem name={quoteattr(foreign_shm[0])}><model type='ivshmem-plain'/>"
                   f"<size unit='M'>{foreign_shm[1]}</size></shmem>\n    ")
    feature = "require" if x2apic else "disable"
    if x2apic:
        machine = "q35"
    iommu = ("<iommu model='intel'><driver intremap='on' eim='on'/></iommu>"
             if x2apic else "")
    features = "<acpi/><apic/><ioapic driver='qemu'/>" if x2apic else "<acpi/><apic/>"
    args = ["-L", "/usr/share/qemu", "-L", "/usr/share/seabios", "-object", ipt_object]
    qargs = "\n".join(f"    <qemu:arg value={quoteattr(a)}/>" for a in args)
    return f"""<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{mem_mb}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='{machine}'>hvm</type>
    <kernel>{escape(kernel)}</kernel>
    <initrd>{escape(initrd)}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features>{features}</features>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='allow'>qemu64</model>
    <feature policy='{feature}' name='x2apic'/>
  </cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>preserve</on_crash>
  <devices>
    <emulator>{escape(qemu)}</emulator>
    <serial type='file'><source path={quoteattr(console)}/><target port='0'/></serial>
    {vda}{foreign}<shmem name={quoteattr(shm_name)}><model type='ivshmem-plain'/><size unit='M'>{shm_mb}</size></shmem>
    <memballoon model='none'/>
    {iommu}
  </devices>
  <qemu:commandline>
{qargs}
  </qemu:commandline>
</domain>
"""


FAULT_STAGES = ("icr", "route", "inject", "kick", "entry")
FAULT_OPTIONS = ("nth", "vector", "prob", "seed", "source", "target", "count", "delay_us")


def parse_fault(spec):
    """'route:nth=3[:vector=251]' -> (stage, dict). Raises ValueError.

    The same syntax as QEMU's `ipitrace,faults=` property (one fault; QEMU
    takes several separated by ';').  Validated here so that a typo fails
    before a VM is booted; QEMU validates again (docs/system/ipitrace.rst).
    """
    parts = spec.split(":")
    stage = parts[0]
    if stage not in FAULT_STAGES:
        raise ValueError(f"unknown fault stage '{stage}' (one of {', '.join(FAULT_STAGES)})")
    opts = {}
    for p in parts[1:]:
        if "=" not in p:
            raise ValueError(f"bad fault option '{p}' in '{spec}'")
        k, v = p.split("=", 1)
        if k not in FAULT_OPTIONS:
            raise ValueError(f"unknown fault option '{k}' in '{spec}'")
        opts[k] = float(v) if k == "prob" else int(v, 0)
    if "nth" not in opts and "prob" not in opts:
        raise ValueError(f"fault '{spec}' needs a trigger: nth=K (K >= 1) or prob=P")
    if "nth" in opts and opts["nth"] < 1:
        raise ValueError(f"fault '{spec}' needs nth=K with K >= 1")
    if "prob" in opts and not 0.0 < opts["prob"] <= 1.0:
        raise ValueError(f"fault '{spec}': prob must be in (0, 1]")
    return stage, opts


def _wait_console(host, path, marker, deadline, dom, stop_event=None, watch=None):
    while time.time() < deadline:
        if stop_event is not None and stop_event.is_set():
            raise HarnessError("interrupted", "stopped by the operator")
        if watch is not None and watch.hang.is_set():
            e = HarnessError("hung-unexplained", "the agent detected a hang")
            e.by_agent = True
            raise e
        text = host.read_text(path)
        if marker in text:
            return text
        if "IPITRACE-ERROR" in text:
            line = [ln for ln in text.splitlines() if "IPITRACE-ERROR" in ln][0]
            raise HarnessError("infra-failed", f"guest reported: {line.strip()}")
        if "Kernel panic" in text:
            raise HarnessError("vm-crashed", "guest kernel panicked (see console.log)")
        try:
            active = dom.isActive()
        except libvirt.libvirtError:
            active = False  # a crashed transient domain is gone altogether
        if not active:
            raise HarnessError("vm-crashed", "VM exited before printing " + marker)
        time.sleep(1.0 if host.remote else 0.2)
    raise HarnessError("hung-unexplained", f"timed out waiting for {marker}")


GUESTS = ("busybox", "debian12")
# The Debian guest's workload: stress-ng stressors that make cross-CPU
# calls (TLB shootdowns, membarrier's IPIs), one instance per vCPU each.
DEFAULT_STRESS = "tlb-shootdown,membarrier"
_STRESS = re.compile(r"^[a-z0-9-]+(:[0-9]+)?(,[a-z0-9-]+(:[0-9]+)?)*$")
# Seconds from start to the workload (TCG, a loaded 2-core host), and from
# its planned end to IPITRACE-DONE before the guest counts as hung.
BOOT_ALLOWANCE = {"busybox": 120, "debian12": 480}
STOP_GRACE = {"busybox": 25, "debian12": 60}
# Each guest's kernel unless told (artifacts.GUEST_KERNELS): the Debian
# guest is a stock Debian 12 by default.
GUEST_KERNEL = {"busybox": "backports", "debian12": "stock"}


def parse_stress(spec):
    """'tlb-shootdown,membarrier:2' (stress-ng stressors, STRESSOR[:N]
    instances, N=0 or none: one per vCPU) -> the same string.  Raises
    ValueError."""
    if not _STRESS.match(spec):
        raise ValueError(f"bad stress-ng workload '{spec}': STRESSOR[:N] separated by commas")
    return spec


def run(out, *args, boot_retries=2, log=print, hypervisor="tcg", guest="busybox", **kw):
    """Boot, load, snapshot. Returns the manifest dict.

    hypervisor "tcg" (the patched QEMU's emulated LAPIC, through libvirt) or
    "kvm-nested" (KVM in an L1 under TCG: nested.run()).  guest one of
    GUESTS (kvm-nested: busybox only).
    A VM that crashes before its load starts (QEMU died during guest boot:
    nothing under test has happened yet) is booted again, at most
    boot_retries times; the manifest records every such crash."""
    if hypervisor not in ("tcg", "kvm-nested"):
        raise ValueError(f"unknown hypervisor '{hypervisor}' (tcg or kvm-nested)")
    if guest not in GUESTS:
        raise ValueError(f"unknown guest '{guest}' ({' or '.join(GUESTS)})")
    once = functools.partial(_run_once, guest=guest)
    if hypervisor == "kvm-nested":
        if guest != "busybox":
            raise ValueError(f"--hypervisor kvm-nested runs the busybox guest, not '{guest}'")
        from . import nested
        once = nested.run
    crashes = []
    while True:
        try:
            m = once(out, *args, log=log, **kw)
        except HarnessError as e:
            if (e.outcome == "vm-crashed" and getattr(e, "before_load", False)
                    and len(crashes) < boot_retries):
                crashes.append(str(e))
                log(f"VM crashed during boot ({e}); booting again "
                    f"({len(crashes)}/{boot_retries})")
                continue
            _note_crashes(out, crashes)
            raise
        _note_crashes(out, crashes)
        m["boot_crashes"] = crashes
        return m


def _note_crashes(out, crashes):
    if not crashes:
        return
    path = os.path.join(out, "manifest.json")
    try:
        with open(path) as f:
            m = json.load(f)
        m["boot_crashes"] = crashes
        with open(path, "w") as f:
            json.dump(m, f, indent=2)
    except (OSError, ValueError):
        pass


def _run_once(out, vcpus=4, seconds=10, faults=(), uri=None, mode="single", wait=1,
        x2apic=False, mem_mb=768, shm_mb=256, hv_capacity=1 << 19, timeout=None,
        threads=None, hang_grace=None, extra_cmdline="", machine="pc", log=print,
        on_start=None, stop_event=None, watch_hang_ms=None, watch_poll_ms=1000,
        foreign_shm=None, guest_kernel=None, guest="busybox", stress=None):
    """Boot, load, snapshot. Returns the manifest dict.  mode, wait and
    threads drive the busybox guest's load generator; stress the debian12
    guest's stress-ng (parse_stress; default DEFAULT_STRESS).  guest_kernel
    (artifacts.GUEST_KERNELS) defaults to GUEST_KERNEL[guest]."""
    os.makedirs(out, exist_ok=True)
    for stage_opts in faults:
        parse_fault(stage_opts)
    if guest == "debian12":
        if (mode, wait, threads) != ("single", 1, None):
            raise ValueError("mode, wait and threads drive the busybox guest's load "
                             "generator; the debian12 guest runs stress-ng (stress=)")
        stress = parse_stress(stress or DEFAULT_STRESS)
    elif stress is not None:
        raise ValueError("stress= (stress-ng) applies to the debian12 guest only")
    if hang_grace is None:
        hang_grace = STOP_GRACE[guest]
    guest_kernel = guest_kernel or GUEST_KERNEL[guest]
    qemu = artifacts.qemu()
    uri = uri or default_uri()
    tag = uuid.uuid4().hex[:8]
    name = f"ipt-{tag}"
    shm_name = f"ipt-guest-{tag}"
    shm_path = f"/dev/shm/{shm_name}"
    hv_path = f"/dev/shm/ipt-hv-{tag}"
    truth_path = f"/dev/shm/ipt-truth-{tag}.jsonl"
    host = hosts.for_uri(uri)
    local_console = os.path.abspath(os.path.join(out, "console.log"))
    # On a remote libvirt host the console file lives there too.
    console = f"/tmp/ipt-console-{tag}.log" if host.remote else local_console
    host.remove(shm_path, hv_path, truth_path, console)
    # Claimed before boot: the module writes only into a claimed device.
    host.claim_region(artifacts.agent(), shm_path, shm_mb)
    obj = f"ipitrace,id=ipt0,path={hv_path},capacity={hv_capacity}"
    if faults:
        obj += f",faults={';'.join(faults)},truth={truth_path}"
        host.make_shared_file(truth_path)
    disk = None
    if guest == "debian12":
        boot = artifacts.debian12(guest_kernel)
        # The image stays as built: the VM writes to an overlay of its own.
        disk = f"/var/tmp/ipt-disk-{tag}.qcow2"
        cmdline = (f"root=/dev/vda rw console=ttyS0 quiet panic=-1 "
                   f"systemd.show_status=false ipt.seconds={seconds} ipt.stress={stress} "
                   f"{extra_cmdline}").strip()
    else:
        boot = artifacts.guest(guest_kernel)
        threads = threads or vcpus
        cmdline = (f"console=ttyS0 quiet panic=-1 ipt.seconds={seconds} "
                   f"ipt.threads={threads} ipt.mode={mode} ipt.wait={wait} ipt.action=load "
                   f"{extra_cmdline}").strip()
    xml = domain_xml(name, qemu, boot["KERNEL"], boot["INITRD"], cmdline, vcpus,
                     mem_mb, x2apic, console, shm_name, shm_mb, obj, machine=machine,
                     foreign_shm=foreign_shm, disk=disk)
    manifest = {
        "name": name, "uri": uri, "guest": guest, "vcpus": vcpus, "seconds": seconds,
        "mode": mode, "wait": wait, "threads": threads, "x2apic": x2apic,
        "faults": list(faults), "extra_cmdline": extra_cmdline, "qemu": qemu, "kernel": boot["KERNEL"],
        "kernel_release": artifacts.kernel_release(boot["KERNEL"]),
        "guest_kernel": guest_kernel,
        "initrd": boot["INITRD"], "hv_capacity": hv_capacity, "shm_mb": shm_mb,
        "started": time.time(), "complete": False,
    }
    if guest == "debian12":
        manifest.update({"mode": None, "wait": None, "image": boot["IMAGE"],
                         "stress": stress})
    with open(os.path.join(out, "domain.xml"), "w") as f:
        f.write(xml)
    conn = open_connection(uri)
    dom = None
    watch = None
    try:
        if disk:
            try:
                host.make_overlay(boot["IMAGE"], disk)
            except OSError as e:
                raise HarnessError("infra-failed", str(e)) from e
        try:
            dom = conn.createXML(xml, start_flags(uri))
        except libvirt.libvirtError as e:
            raise HarnessError("infra-failed", f"VM failed to start: {e}") from e
        load = f"stress-ng {stress}" if guest == "debian12" else f"{mode} wait={wait}"
        log(f"[{name}] started: {guest}, {vcpus} vCPUs, load {seconds}s {load}")
        if on_start:
            on_start({"name": name, "guest_region": shm_path, "hv_region": hv_path,
                      "console": console, "uri": uri})
        limit = timeout or (BOOT_ALLOWANCE[guest] + 4 * seconds)
        deadline = time.time() + limit
        if watch_hang_ms:
            # The agent follows both regions live and calls a hang from the
            # streams alone (a request outstanding > watch_hang_ms).
            watch = livewatch.LiveWatch(host, hv_path, shm_path, os.path.join(out, "watch"),
                                        watch_hang_ms, poll_ms=watch_poll_ms, log=log,
                                        name=name, duration_s=limit + 120)
            manifest["watch_hang_ms"] = watch_hang_ms
        phase = "boot"
        try:
            _wait_console(host, console, "IPITRACE-LOAD-START", deadline, dom, stop_event,
                          watch)
            phase = "load"
            log(f"[{name}] load running")
            # The load stops after `seconds`; if the guest does not get
            # there (e.g. a CPU spins forever on a CSD lock because an IPI
            # was lost), it is hung: freeze it at once and keep the
            # evidence.  With the agent watching, that happens as soon as
            # it sees a request outstanding longer than watch_hang_ms.
            load_deadline = min(deadline, time.time() + seconds + hang_grace)
            text = _wait_console(host, console, "IPITRACE-DONE", load_deadline, dom,
                                 stop_event, watch)
            manifest["outcome"] = "completed"
        except HarnessError as e:
            by_agent = getattr(e, "by_agent", False)
            if not by_agent and (e.outcome != "hung-unexplained" or phase == "boot"):
                e.before_load = phase == "boot"
                raise
            text = host.read_text(console)
            manifest["outcome"] = "guest-hung"
            if getattr(e, "by_agent", False):
                manifest["hang_detected_by"] = "agent"
                log(f"[{name}] guest hung (the agent saw a request outstanding > "
                    f"{watch_hang_ms} ms)")
            else:
                manifest["hang_detected_by"] = "console"
                log(f"[{name}] guest hung (no IPITRACE-DONE {seconds + hang_grace}s after "
                    "load start)")
        dom.suspend()
        log(f"[{name}] VM suspended, taking snapshot")
        try:
            host.fetch(shm_path, os.path.join(out, "guest.region"))
            host.fetch(hv_path, os.path.join(out, "hv.region"))
            if faults:
                host.fetch(truth_path, os.path.join(out, "faults.jsonl"))
            else:
                open(os.path.join(out, "faults.jsonl"), "w").close()
        except OSError as e:
            # Free what a half-written copy took so manifest.json still fits.
            for fn in ("guest.region", "hv.region"):
                try:
                    os.unlink(os.path.join(out, fn))
                except OSError:
                    pass
            manifest["partial"] = True
            raise HarnessError("infra-failed", f"cannot write the snapshot to {out}: {e}") from e
        manifest["interrupts"] = parse_interrupts(text)
        manifest["interrupts_baseline"] = parse_interrupts(text, "INTERRUPTS-BASELINE")
        manifest["complete"] = True
    finally:
        manifest["finished"] = time.time()
        if watch is not None:
            events = watch.stop()
            manifest["watch_events"] = [e for e in events if e.get("event") != "vm_detached"][:100]
            manifest["watch_errors"] = watch.errors[:20]
            if watch.first_hang():
                manifest["agent_hang"] = watch.first_hang()
        if dom is not None:
            try:
                dom.destroy()
            except libvirt.libvirtError:
                pass
        release(uri, conn)
        if host.remote:
            try:
                host.fetch(console, local_console)
            except OSError as e:
                log(f"[{name}] cannot fetch the console log: {e}")
            host.remove(console)
        host.remove(shm_path, hv_path, truth_path, *([disk] if disk else []))
        write_manifest(out, manifest, name, log)
    return manifest


def write_manifest(out, manifest, name, log):
    """OUT/manifest.json; a failure is logged, never raised (the run's
    regions are already in place)."""
    try:
        with open(os.path.join(out, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2)
    except OSError as e:
        log(f"[{name}] cannot write manifest.json: {e}")


def parse_interrupts(console_text, block="INTERRUPTS"):
    """The guest's /proc/interrupts, printed between the markers
    IPITRACE-<block>-BEGIN/END (INTERRUPTS: the last read, after the load;
    INTERRUPTS-BASELINE: before it), as {row_name: [count per CPU]} (rows
    with per-CPU numeric columns)."""
    lines = console_text.splitlines()
    try:
        b = next(i for i, ln in enumerate(lines) if f"IPITRACE-{block}-BEGIN" in ln)
        e = next(i for i, ln in enumerate(lines) if f"IPITRACE-{block}-END" in ln)
    except StopIteration:
        return {}
    block = [ln.strip("\r") for ln in lines[b + 1:e]]
    if not block:
        return {}
    ncpu = len([c for c in block[0].split() if c.startswith("CPU")])
    rows = {}
    for ln in block[1:]:
        if ":" not in ln:
            continue
        key, rest = ln.split(":", 1)
        cols = rest.split()
        if len(cols) < ncpu or not all(c.isdigit() for c in cols[:ncpu]):
            continue
        rows[key.strip()] = [int(c) for c in cols[:ncpu]]
    return rows
