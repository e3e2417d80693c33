"""Locate (building if needed, all cached) QEMU, guest kernel, initramfs, agent."""
import os
import subprocess

from .abi import REPO


def _run_script(name):
    out = subprocess.run(["bash", os.path.join(REPO, "scripts", name)],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return [ln.strip() for ln in out.splitlines() if ln.strip()]


def qemu():
    path = os.environ.get("IPITRACE_QEMU")
    if not path:
        path = _run_script("build-qemu.sh")[-1]
    return path


# scripts/build-guest.sh's outputs
GUEST_FILES = ("KERNEL", "INITRD", "MODULE", "TEST_MODULE")


def guest():
    """Return dict with KERNEL, INITRD, MODULE (ipitrace.ko) and TEST_MODULE
    (ipitrace_test.ko) paths."""
    if os.environ.get("IPITRACE_KERNEL") and os.environ.get("IPITRACE_INITRD"):
        return {k: os.environ.get(f"IPITRACE_{k}", "") for k in GUEST_FILES}
    out = {}
    for line in _run_script("build-guest.sh"):
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
