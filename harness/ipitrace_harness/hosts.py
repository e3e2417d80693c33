"""Where a VM's files live: this machine, or a libvirt host reached by ssh.

For qemu+ssh://[user@]host[:port]/system URIs the regions, the ground truth
and the console are files on that host; the harness reads them with ssh
(the same key and port libvirt uses), so a soak can spread over a fleet.
"""
import os
import shlex
import subprocess
import urllib.parse


CHUNK = 1 << 20
OVERLAY_ARGV = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2"]


def sparse_copy(path, dest):
    """Copy path to dest, leaving all-zero 1 MiB chunks as holes: a region
    is mostly unused ring slots, so a snapshot costs the disk what the
    rings hold, not the region's size.  The length is kept exactly."""
    zero = bytes(CHUNK)
    with open(path, "rb") as src, open(dest, "wb") as out:
        size = 0
        while True:
            buf = src.read(CHUNK)
            if not buf:
                break
            size += len(buf)
            if buf == zero[:len(buf)]:
                out.seek(len(buf), os.SEEK_CUR)
            else:
                out.write(buf)
        out.truncate(size)


class LocalHost:
    remote = False

    def read_text(self, path):
        try:
            return open(path, errors="replace").read()
        except FileNotFoundError:
            return ""

    def fetch(self, path, dest):
        sparse_copy(path, dest)

    def remove(self, *paths):
        for p in paths:
            if os.path.exists(p):
                os.unlink(p)

    def make_shared_file(self, path):
        open(path, "w").close()
        os.chmod(path, 0o666)

    def make_overlay(self, base, path):
        """A qcow2 overlay at path on the image base (left unchanged): the
        disk of one VM."""
        p = subprocess.run(OVERLAY_ARGV + ["-b", base, path], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            raise OSError(f"qemu-img create {path}: {p.stderr.strip()}")

    def claim_region(self, agent, path, size_mb):
        """The host's claim on a guest region (`ipitrace claim`): the guest
        module writes only into an ivshmem device whose region is claimed."""
        p = subprocess.run([agent, "claim", path, "--size-mb", str(size_mb)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            raise OSError(f"ipitrace claim {path}: {p.stderr.strip()}")


class SshHost:
    remote = True

    def __init__(self, uri):
        u = urllib.parse.urlparse(uri)
        q = urllib.parse.parse_qs(u.query)
        self.argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                     "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
        if u.port:
            self.argv += ["-p", str(u.port)]
        if "keyfile" in q:
            self.argv += ["-i", q["keyfile"][0]]
        self.argv.append(f"{u.username}@{u.hostname}" if u.username else u.hostname)

    def _run(self, cmd, **kw):
        return subprocess.run(self.argv + [cmd], stderr=subprocess.PIPE, **kw)

    def read_text(self, path):
        p = self._run(f"cat {shlex.quote(path)} 2>/dev/null || true", stdout=subprocess.PIPE)
        return p.stdout.decode(errors="replace")

    def fetch(self, path, dest):
        with open(dest, "wb") as f:
            p = self._run(f"cat {shlex.quote(path)}", stdout=f)
        if p.returncode != 0:
            raise OSError(f"ssh fetch of {path} failed: {p.stderr.decode().strip()}")

    def remove(self, *paths):
        self._run("rm -f " + " ".join(shlex.quote(p) for p in paths), stdout=subprocess.DEVNULL)

    def make_shared_file(self, path):
        q = shlex.quote(path)
        p = self._run(f": > {q} && chmod 666 {q}", stdout=subprocess.DEVNULL)
        if p.returncode != 0:
            raise OSError(f"cannot create {path} on the remote host: {p.stderr.decode()}")

    def make_overlay(self, base, path):
        """As LocalHost.make_overlay, with the image at the same path there."""
        p = self._run(shlex.join(OVERLAY_ARGV + ["-b", base, path]), stdout=subprocess.DEVNULL)
        if p.returncode != 0:
            raise OSError(f"qemu-img create {path} on the remote host: "
                          f"{p.stderr.decode().strip()}")

    def claim_region(self, agent, path, size_mb):
        """As LocalHost.claim_region, with the agent at the same path there."""
        p = self._run(f"{shlex.quote(agent)} claim {shlex.quote(path)} --size-mb {int(size_mb)}",
                      stdout=subprocess.DEVNULL)
        if p.returncode != 0:
            raise OSError(f"ipitrace claim {path} on the remote host: {p.stderr.decode().strip()}")


def for_uri(uri):
    return SshHost(uri) if uri and uri.startswith("qemu+ssh://") else LocalHost()
