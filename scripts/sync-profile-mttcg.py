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

GUEST_DIR holds vmlinuz and initrd.gz; without it, the guest that
scripts/build-guest.sh builds (or finds in its cache), as bench-qemu.sh.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

import benchlib as ob
if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
    print(__doc__)
    sys.exit(0)
if len(sys.argv) < 2:
    sys.exit(__doc__)
Q = sys.argv[1]
S = float(sys.argv[2]) if len(sys.argv) > 2 else 5
if len(sys.argv) > 3:
    KERNEL, INITRD = f"{sys.argv[3]}/vmlinuz", f"{sys.argv[3]}/initrd.gz"
else:
    KERNEL, INITRD = ob.guest_files()
work = tempfile.mkdtemp(prefix="ipt-syncprof.")
shm = f"/dev/shm/ipt-syncprof-{os.getpid()}-guest"
hv = f"/dev/shm/ipt-syncprof-{os.getpid()}-hv"
qmp_path = os.path.join(work, "qmp.sock")
console = os.path.join(work, "console.log")
cmd = ob.guest_qemu_cmd(Q, KERNEL, INITRD, vcpus=2, tcg="multi", icount=None,
                        load_s=100000, threads=2, console=console, shm=shm, qmp_path=qmp_path)
q = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "qemu.log"), "w"))
done = False
try:
    ob.wait_for_load(q, console, work)
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
    done = True
finally:
    ob.stop_qemu(q, shm, hv)
    if done:  # else kept for its console.log and qemu.log
        shutil.rmtree(work, ignore_errors=True)
