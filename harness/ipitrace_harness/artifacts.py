"""Locate (building if needed, all cached) QEMU, guest kernel, initramfs,
the Debian 12 guest image, agent."""
import os
import subprocess
import sys
import threading

from .abi import REPO

# A build script's exit status when this machine cannot build its output (a
# tool, root or the package mirror missing), as automake's skipped tests.
UNBUILDABLE = 77


class Unbuildable(RuntimeError):
    """A build script cannot build here (exit UNBUILDABLE); str() says why."""


def _run_script(name, **env):
    """Run scripts/NAME with env added to the environment; returns its
    stdout lines.  Its stderr (progress) passes through.  Raises
    Unbuildable (with the script's last stderr line) or
    subprocess.CalledProcessError."""
    p = subprocess.Popen(["bash", os.path.join(REPO, "scripts", name)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, **env})
    last = [""]

    def relay():
        for ln in p.stderr:
            sys.stderr.write(ln)
            if ln.strip():
                last[0] = ln.strip()

    t = threading.Thread(target=relay, daemon=True)
    t.start()
    out = p.stdout.read()
    p.wait()
    t.join()
    if p.returncode == UNBUILDABLE:
        raise Unbuildable(f"scripts/{name}: {last[0]}")
    if p.returncode != 0:
        raise subprocess.CalledProcessError(p.returncode, p.args, out)
    return [ln.strip() for ln in out.splitlines() if ln.strip()]


def _outputs(script, keys, **env):
    """{KEY: value} of the script's KEY=value stdout lines, for keys."""
    out = {}
    for line in _run_script(script, **env):
        k, sep, v = line.partition("=")
        if sep and k in keys:
            out[k] = v
    return out


def qemu():
    path = os.environ.get("IPITRACE_QEMU")
    if not path:
        path = _run_script("build-qemu.sh")[-1]
    return path


# scripts/build-guest.sh's outputs
GUEST_FILES = ("KERNEL", "INITRD", "MODULE", "TEST_MODULE")
# The guest kernels the test guest runs (scripts/guest-kernel.sh):
# backports = Debian 12 backports' 6.12 (tracepoints for every stage),
# stock = Debian 12's own 6.1 (kprobes for the queue and the send),
# bullseye = Debian 11's 5.10 (the same kprobes).
GUEST_KERNELS = ("backports", "stock", "bullseye")


def _check_kernel(kernel):
    if kernel not in GUEST_KERNELS:
        raise ValueError(f"unknown guest kernel '{kernel}' ({', '.join(GUEST_KERNELS)})")


def guest(kernel="backports"):
    """Return dict with KERNEL, INITRD, MODULE (ipitrace.ko) and TEST_MODULE
    (ipitrace_test.ko) paths for the guest kernel 'kernel' (GUEST_KERNELS);
    IPITRACE_KERNEL/INITRD/... give the default one."""
    _check_kernel(kernel)
    if (kernel == "backports" and os.environ.get("IPITRACE_KERNEL")
            and os.environ.get("IPITRACE_INITRD")):
        return {k: os.environ.get(f"IPITRACE_{k}", "") for k in GUEST_FILES}
    return _outputs("build-guest.sh", GUEST_FILES, IPITRACE_GUEST_KERNEL=kernel)


def debian12(kernel="stock"):
    """Return dict with KERNEL, INITRD, IMAGE paths and KVER (its kernel's
    release) of the Debian 12 guest image (scripts/build-debian12.sh) with
    the guest kernel 'kernel' (GUEST_KERNELS)."""
    _check_kernel(kernel)
    return _outputs("build-debian12.sh", ("KVER", "KERNEL", "INITRD", "IMAGE"),
                    IPITRACE_DEBIAN12_KERNEL=kernel)


def agent():
    path = os.environ.get("IPITRACE_AGENT")
    if path:
        return path
    path = os.path.join(REPO, "build", "host-agent", "ipitrace")
    if not os.path.exists(path):
        subprocess.run(["bash", os.path.join(REPO, "scripts", "build-agent.sh")], check=True,
                       stdout=subprocess.DEVNULL)
    return path


def kernel_release(path):
    """The release a bzImage was built as (e.g. 6.12.95+deb12-amd64): its
    setup header's kernel_version string (offset 0x20E holds its address
    less 0x200; x86 boot protocol 2.00+), read from the image itself, not
    from its file name (the caches call every image vmlinuz).  None when
    the file is no bzImage."""
    try:
        with open(path, "rb") as f:
            head = f.read(0x10000)
    except OSError:
        return None
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        return None
    at = 0x200 + int.from_bytes(head[0x20E:0x210], "little")
    text = head[at:at + 256].split(b"\0", 1)[0].decode(errors="replace")
    return text.split(" ", 1)[0] or None

