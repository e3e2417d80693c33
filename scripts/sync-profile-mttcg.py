#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Where the vCPU threads wait for locks, ipitrace off against on, under
multi-threaded TCG (a diagnostic, not a benchmark: QEMU's lock profiler
slows the guest).  Boots the benchmark guest with the load generator, then
runs phases off, ipitrace, off, ipitrace of SECONDS each with QEMU's
`sync-profile` on, and prints per phase the guest records, QEMU's context
switches per guest record and `info sync-profile 8` (lock wait time by
call site).

  scripts/sync-profile-mttcg.py QEMU [SECONDS] [GUEST_DIR]

GUEST_DIR holds vmlinuz and initrd.gz (scripts/build-guest.sh's cache).
"""
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time

spec = importlib.util.spec_from_file_location(
    "ob", os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench-qemu-oneboot.py"))
ob = importlib.util.module_from_spec(spec); spec.loader.exec_module(ob)
if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
    print(__doc__)
    sys.exit(0)
if len(sys.argv) < 2:
    sys.exit(__doc__)
Q = sys.argv[1]
S = float(sys.argv[2]) if len(sys.argv) > 2 else 5
G = sys.argv[3] if len(sys.argv) > 3 else "/var/cache/ipitrace/guest-33d6d403e46dabf9"
work = tempfile.mkdtemp(); shm = f"/dev/shm/qsp-{os.getpid()}-g"; hv = f"/dev/shm/qsp-{os.getpid()}-hv"
qmp_path = os.path.join(work, "qmp.sock"); console = os.path.join(work, "console.log")
cmd = [Q, "-machine", "pc", "-accel", "tcg,thread=multi", "-cpu", "qemu64,-x2apic", "-smp", "2", "-m", "768",
       "-L", "/usr/share/qemu", "-L", "/usr/share/seabios", "-display", "none", "-monitor", "none",
       "-serial", f"file:{console}", "-no-reboot", "-nic", "none", "-kernel", f"{G}/vmlinuz", "-initrd", f"{G}/initrd.gz",
       "-append", "console=ttyS0 quiet panic=-1 ipt.seconds=100000 ipt.threads=2 ipt.mode=single ipt.wait=1 ipt.action=load",
       "-object", f"memory-backend-file,id=iptshm,mem-path={shm},size=64M,share=on", "-device", "ivshmem-plain,memdev=iptshm",
       "-qmp", f"unix:{qmp_path},server=on,wait=off"]
q = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(600):
        if os.path.exists(console) and "IPITRACE-LOAD-START" in open(console, errors="replace").read(): break
        time.sleep(0.2)
    time.sleep(2)
    qmp = ob.Qmp(qmp_path)
    hmp = lambda c: qmp.cmd("human-monitor-command", **{"command-line": c})
    for cfg in ["off", "ipitrace", "off", "ipitrace"]:
        qmp.cmd("stop")
        if cfg == "ipitrace":
            qmp.cmd("object-add", **{"qom-type": "ipitrace", "id": "ipt0", "path": hv, "capacity": 524288})
        hmp("sync-profile on"); hmp("sync-profile reset")
        r0 = ob.guest_records(shm); x0 = ob.qemu_ctxt_switches(q.pid)
        qmp.cmd("cont"); time.sleep(S); qmp.cmd("stop")
        r1 = ob.guest_records(shm); x1 = ob.qemu_ctxt_switches(q.pid)
        out = hmp("info sync-profile 8")
        hmp("sync-profile off")
        if cfg == "ipitrace":
            qmp.cmd("object-del", id="ipt0")
        qmp.cmd("cont")
        print(f"== {cfg}: {r1-r0} guest records in {S} s, {(x1-x0)/(r1-r0):.3f} ctxt switches/record")
        print(out)
finally:
    q.kill(); q.wait()
    for p in (shm, hv):
        try:
            os.unlink(p)
        except OSError:
            pass
    shutil.rmtree(work, ignore_errors=True)
