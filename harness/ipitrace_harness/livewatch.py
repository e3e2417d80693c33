"""The agent watching one VM live: `ipitrace watch HV:GUEST` as a child
process (on the VM's host: over ssh for a qemu+ssh:// URI, which needs the
agent at the same path there), its JSON-lines events collected by a reader
thread.  A `hang_detected` event (a request outstanding longer than hang_ms,
judged from the two streams alone) sets `hang`, which vm.run() treats like a
guest that never finished its load: the VM is suspended at once and
snapshotted."""
import json
import shlex
import subprocess
import threading

from . import artifacts


class LiveWatch:
    def __init__(self, host, hv_path, guest_path, out_dir, hang_ms, poll_ms=500, log=print,
                 name="vm", duration_s=3600):
        self.events = []
        self.errors = []
        self.hang = threading.Event()
        self.log = log
        self.name = name
        argv = [artifacts.agent(), "watch", f"{hv_path}:{guest_path}", "--hang-ms",
                str(hang_ms), "--poll-ms", str(poll_ms), "--out", out_dir,
                # bounded even if a remote one outlives its ssh session
                "--duration-s", str(int(duration_s))]
        if host.remote:
            argv = host.argv + [" ".join(shlex.quote(a) for a in argv)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self._out = threading.Thread(target=self._read, daemon=True)
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._out.start()
        self._err.start()

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                self.errors.append(f"not JSON: {line[:200]}")
                continue
            self.events.append(ev)
            kind = ev.get("event")
            if kind == "hang_detected":
                self.log(f"[{self.name}] agent: hang detected: {ev.get('verdict')} "
                         f"CPU {ev.get('source_cpu')} -> CPU {ev.get('target_cpu')}, "
                         f"outstanding {ev.get('outstanding_ms', 0):.0f} ms")
                self.hang.set()
            elif kind == "ring_corrupt":
                self.log(f"[{self.name}] agent: ring corrupt: {ev}")

    def _read_err(self):
        for line in self.proc.stderr:
            if line.strip():
                self.errors.append(line.strip()[:500])

    def first_hang(self):
        return next((e for e in self.events if e.get("event") == "hang_detected"), None)

    def stop(self):
        """Stop the agent and collect what it printed; returns the events."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.join(timeout=5)
        self._err.join(timeout=5)
        rc = self.proc.returncode
        if rc not in (0, -15):
            self.errors.append(f"ipitrace watch exited {rc}")
        return self.events
