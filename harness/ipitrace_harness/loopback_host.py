"""A second libvirt host on this machine, for multi-host soak tests.

Starts (if needed) the system libvirt daemon (`virtlogd -d; libvirtd -d`)
and an sshd bound to 127.0.0.1 on its own port with its own host key and a
throw-away client key, so that `qemu+ssh://root@127.0.0.1:PORT/system`
reaches this machine's system libvirt the way a fleet host would be reached.
Nothing is sent beyond the loopback interface.  stop() ends the sshd.
"""
import os
import shutil
import subprocess
import time


class LoopbackHost:
    def __init__(self, workdir, port=2222):
        self.dir = workdir
        self.port = port
        self.sshd = None

    @staticmethod
    def _running(name):
        return subprocess.run(["pgrep", "-x", name], stdout=subprocess.DEVNULL).returncode == 0

    def start_libvirtd(self):
        if not self._running("virtlogd"):
            subprocess.run(["virtlogd", "-d"], check=True)
        if not self._running("libvirtd"):
            subprocess.run(["libvirtd", "-d"], check=True)
        for _ in range(50):
            if os.path.exists("/run/libvirt/libvirt-sock"):
                return
            time.sleep(0.2)
        raise RuntimeError("libvirtd did not create /run/libvirt/libvirt-sock")

    def start(self):
        if not shutil.which("sshd") and not os.path.exists("/usr/sbin/sshd"):
            raise RuntimeError("sshd is not installed (openssh-server)")
        os.makedirs(self.dir, exist_ok=True)
        os.makedirs("/run/sshd", exist_ok=True)
        hostkey = os.path.join(self.dir, "host_ed25519")
        key = os.path.join(self.dir, "client_ed25519")
        for k in (hostkey, key):
            if not os.path.exists(k):
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k],
                               check=True)
        auth = os.path.join(self.dir, "authorized_keys")
        shutil.copyfile(key + ".pub", auth)
        os.chmod(auth, 0o600)
        conf = os.path.join(self.dir, "sshd_config")
        with open(conf, "w") as f:
            f.write(f"""ListenAddress 127.0.0.1
Port {self.port}
HostKey {hostkey}
AuthorizedKeysFile {auth}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile {self.dir}/sshd.pid
""")
        self.start_libvirtd()
        self.sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", conf],
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "sshd.log"), "w"))
        self.key = key
        for _ in range(50):
            p = subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                                "-p", str(self.port), "-i", key, "root@127.0.0.1", "true"])
            if p.returncode == 0:
                return self.uri()
            time.sleep(0.2)
        raise RuntimeError("loopback sshd did not accept the key (see sshd.log)")

    def uri(self):
        return (f"qemu+ssh://root@127.0.0.1:{self.port}/system"
                f"?keyfile={self.key}&no_verify=1&no_tty=1")

    def stop(self):
        if self.sshd:
            self.sshd.terminate()
            self.sshd.wait(timeout=10)
            self.sshd = None
