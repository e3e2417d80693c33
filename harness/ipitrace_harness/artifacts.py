"""Locate (building if needed, all cached) QEMU, guest kernel, initramfs, agent."""
import os
import subprocess

from .abi import REPO


def _run_script(name, **env):
    out = subprocess.run(["bash", os.path.join(REPO, "scripts", name)],
                         check=True, stdout=subprocess.PIPE, text=True,
                         env={**os.environ, **env}).stdout
    return [ln.strip() for ln in out.splitlines() if ln.strip()]


def qemu():
    path = os.environ.get("IPITRACE_QEMU")
    if not path:
        path = _run_script("build-qemu.sh")[-1]
    return path


# scripts/build-guest.sh's outputs
GUEST_FILES = ("KERNEL", "INITRD", "MODULE", "TEST_MODULE")
# The guest kernels the test guest runs (scripts/guest-kernel.sh):
# backports = Debian 12 backports' 6.12 (tracepoints for every stage),
# stock = Debian 12's own 6.1 (kprobes for the queue and the send).
GUEST_KERNELS = ("backports", "stock")


def guest(kernel="backports"):
    """Return dict with KERNEL, INITRD, MODULE (ipitrace.ko) and TEST_MODULE
    (ipitrace_test.ko) paths for the guest kernel 'kernel' (GUEST_KERNELS);
    IPITRACE_KERNEL/INITRD/... give the default one."""
    if kernel not in GUEST_KERNELS:
        raise ValueError(f"unknown guest kernel '{kernel}' ({', '.join(GUEST_KERNELS)})")
    if (kernel == "backports" and os.environ.get("IPITRACE_KERNEL")
            and os.environ.get("IPITRACE_INITRD")):
        return {k: os.environ.get(f"IPITRACE_{k}", "") for k in GUEST_FILES}
    out = {}
    for line in _run_script("build-guest.sh", IPITRACE_GUEST_KERNEL=kernel):
        if "=" in line:
            k, v = line.split("=", 1)
            if k in GUEST_FILES:
                out[k] = v
    return out


def agent():
    path = os.environ.get("IPITRACE_AGENT")
    if path:
        return path
    path = os.path.join(REPO, "build", "host-agent", "ipitrace")
    if not os.path.exists(path):
        subprocess.run(["bash", os.path.join(REPO, "scripts", "build-agent.sh")], check=True,
                       stdout=subprocess.DEVNULL)
    return path
