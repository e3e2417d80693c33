#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# One traced guest (L2) under L1's KVM: the part of a nested run that runs
# inside L1, in a chroot of the host's root (harness/nested/l1-init).
#
#   l1-run.sh OUT
#
# OUT is the run's out directory (9p share of the host's --out DIR); its
# params.env (written by harness/ipitrace_harness/nested.py) holds IPT_*
# settings.  Steps: start Debian's stock QEMU paused (-S, QMP socket, vCPU
# threads named "CPU k/KVM") with the guest region in /dev/shm; start the
# KVM collector (`ipitrace kvm-source`) and wait until it is armed; `cont`;
# optionally the live watch; load the TEST-ONLY kvm_fault.ko when faults
# are given, once the guest prints IPITRACE-READY; wait for IPITRACE-DONE
# on L2's console, a hang (the watch's, or the load deadline), a crash or
# the boot deadline; freeze L2 (QMP `stop`); stop the collector (SIGTERM);
# copy guest.region, hv.region, console.log, faults.jsonl (the fault
# module's ground truth) and the watch's events to OUT; quit L2 and unload
# the fault module.  The result goes to OUT/l1-result.env (KEY=VALUE
# lines), written last.
set -u
export LC_ALL=C

OUT=${1:?usage: l1-run.sh OUT}
# shellcheck disable=SC1091
. "$OUT/params.env"
QEMU=/usr/bin/qemu-system-x86_64
PY=/usr/bin/python3
W=/run/ipt
TAG=$IPT_TAG
GUEST=/dev/shm/ipt-guest-$TAG
HV=/dev/shm/ipt-hv-$TAG
TRUTH=/sys/kernel/debug/ipitrace_kvm_fault
mkdir -p "$W"

declare -A RES=()
QPID='' CPID='' WPID='' FAULT_LOADED=0 STOP_RC=''

now() { cut -d' ' -f1 /proc/uptime; }
say() { echo "IPT-L1: $*"; }

# shellcheck disable=SC2317  # write_result and cleanup run from the EXIT trap
write_result() {
	local k
	{
		for k in "${!RES[@]}"; do
			printf '%s=%s\n' "$k" "$(tr -d '\n\r' <<<"${RES[$k]}")"
		done
	} >"$OUT/l1-result.env.tmp" && mv "$OUT/l1-result.env.tmp" "$OUT/l1-result.env"
}

# QMP commands, in order, on L2's socket.
qmp() {
	"$PY" - "$W/qmp.sock" "$@" <<'EOF'
import json
import socket
import sys

s = socket.socket(socket.AF_UNIX)
s.settimeout(30)
s.connect(sys.argv[1])
f = s.makefile("rw")
json.loads(f.readline())


def cmd(c):
    f.write(json.dumps({"execute": c}) + "\n")
    f.flush()
    while True:
        line = f.readline()
        if not line:
            if c == "quit":
                return {"return": {}}
            raise SystemExit(f"QMP {c}: connection closed")
        r = json.loads(line)
        if "return" in r or "error" in r:
            return r


cmd("qmp_capabilities")
for c in sys.argv[2:]:
    r = cmd(c)
    if "error" in r:
        raise SystemExit(f"QMP {c}: {r['error']}")
EOF
}

alive() {	# PID: running (not exited, not a zombie)
	[[ -n $1 && -r /proc/$1/status ]] && ! grep -qs '^State:.*Z' "/proc/$1/status"
}

# PID [seconds]: SIGTERM, then SIGKILL after that long; the exit status
# (128 + signal when killed) in STOP_RC.
stop_pid() {
	local pid=$1 i=0 limit=$((${2:-10} * 10))
	STOP_RC=
	[[ -n $pid ]] || return 0
	kill -TERM "$pid" 2>/dev/null
	while alive "$pid" && ((i < limit)); do
		sleep 0.1
		i=$((i + 1))
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	STOP_RC=$?
}

# shellcheck disable=SC2317
cleanup() {
	[[ -n $WPID ]] && stop_pid "$WPID" 5
	[[ -n $CPID ]] && stop_pid "$CPID" 5
	if alive "$QPID"; then
		qmp quit >/dev/null 2>&1 || true
	fi
	[[ -n $QPID ]] && stop_pid "$QPID" 10
	if ((FAULT_LOADED)); then
		if rmmod kvm_fault 2>"$W/rmmod.err"; then
			RES[FAULT_MODULE_UNLOADED]=1
		else
			RES[FAULT_MODULE_UNLOADED]="0 $(cat "$W/rmmod.err")"
		fi
	fi
	dmesg >"$OUT/l1-dmesg.txt" 2>/dev/null
	RES[T_END]=$(now)
	write_result
}
trap cleanup EXIT

fail() {	# OUTCOME REASON
	RES[OUTCOME]=$1
	RES[REASON]=$2
	say "$1: $2"
	[[ -f $W/console.log ]] && cp "$W/console.log" "$OUT/console.log"
	[[ -f $W/qemu.log ]] && cp "$W/qemu.log" "$OUT/l2-qemu.log"
	# CPU state at every reset: the registers of a triple fault
	[[ -f $W/qemu-debug.log ]] && cp "$W/qemu-debug.log" "$OUT/l2-qemu-debug.log"
	[[ -f $W/collector.log ]] && cp "$W/collector.log" "$OUT/collector.log"
	exit 0
}

RES[T_START]=$(now)
RES[L1_KERNEL]=$(uname -r)
RES[L2_QEMU]=$("$QEMU" --version | head -n 1)
[[ -c /dev/kvm ]] || fail infra-failed "no /dev/kvm in L1"
say "L2 QEMU: ${RES[L2_QEMU]}"

# The fault module (TEST-ONLY), armed once the guest's tracing module is
# loaded (IPITRACE-READY): nth counts the IPIs from there, the traced window,
# not the thousands of call-function IPIs of a KVM guest's boot.
arm_faults() {
	insmod "$IPT_FAULT_MODULE" "faults=$IPT_FAULTS" 2>"$W/insmod.err" ||
		fail infra-failed "kvm_fault.ko refused faults='$IPT_FAULTS': $(cat "$W/insmod.err") $(dmesg | grep kvm_fault | tail -n 2)"
	FAULT_LOADED=1
	RES[T_FAULTS_ARMED]=$(now)
	say "fault module armed: $IPT_FAULTS"
}

# 1. L2, paused.
XCPU=host
((IPT_X2APIC)) || XCPU=host,-x2apic
rm -f "$GUEST" "$HV"
# Claimed before boot: the module writes only into a claimed device.
"$IPT_AGENT" claim "$GUEST" --size-mb "$IPT_SHM_MB" ||
	fail infra-failed "ipitrace claim $GUEST failed"
"$QEMU" -name "ipt-$TAG,debug-threads=on" -S \
	-qmp "unix:$W/qmp.sock,server=on,wait=off" \
	-machine pc,accel=kvm -cpu "$XCPU" -smp "$IPT_VCPUS" -m "$IPT_MEM_MB" \
	-nodefaults -no-user-config -display none -monitor none \
	-d cpu_reset,guest_errors -D "$W/qemu-debug.log" \
	-serial "file:$W/console.log" \
	-kernel "$IPT_KERNEL" -initrd "$IPT_INITRD" -append "$IPT_CMDLINE" \
	-object "memory-backend-file,id=ipt,share=on,mem-path=$GUEST,size=${IPT_SHM_MB}M" \
	-device ivshmem-plain,memdev=ipt \
	>"$W/qemu.log" 2>&1 &
QPID=$!
i=0
until [[ -S $W/qmp.sock ]]; do
	alive "$QPID" ||
		fail infra-failed "L2 QEMU exited at start: $(tail -n 3 "$W/qemu.log" | tr '\n' ' ')"
	((i++ < 300)) || fail infra-failed "L2 QEMU opened no QMP socket in 30 s"
	sleep 0.1
done
RES[L2_PID]=$QPID
RES[T_QEMU_UP]=$(now)
say "L2 started paused (pid $QPID)"

# 2. The KVM collector, armed before the guest runs.
RES[COLLECTOR]=none
if ((IPT_COLLECTOR)); then
	"$IPT_AGENT" kvm-source --help >/dev/null 2>&1 ||
		fail infra-failed "$IPT_AGENT has no kvm-source subcommand (the KVM collector): rebuild the agent (scripts/build-agent.sh)"
	rm -f "$W/ready"
	accel=()
	if [[ -n ${IPT_ACCEL_SIM:-} ]]; then
		# Tests: pretend the host runs with Intel APICv on (the collector
		# then says it cannot see acknowledge, EOI and coalescing).
		mkdir -p "$W/sysmod/kvm_intel/parameters"
		echo Y >"$W/sysmod/kvm_intel/parameters/enable_apicv"
		echo N >"$W/sysmod/kvm_intel/parameters/enable_ipiv"
		accel=(--accel-from "$W/sysmod")
	fi
	"$IPT_AGENT" kvm-source --pid "$QPID" --out "$HV" --backend "${IPT_KVM_BACKEND:-auto}" \
		--capacity "$IPT_HV_CAPACITY" --ready-file "$W/ready" "${accel[@]}" \
		>"$W/collector.log" 2>&1 &
	CPID=$!
	i=0
	until [[ -e $W/ready ]]; do
		alive "$QPID" ||
			fail infra-failed "L2 QEMU exited at start: $(tail -n 3 "$W/qemu.log" | tr '\n' ' ')"
		if ! alive "$CPID"; then
			wait "$CPID"
			rc=$?
			CPID=
			cp "$W/collector.log" "$OUT/collector.log"
			fail infra-failed "ipitrace kvm-source exited $rc before it was ready: $(tail -n 3 "$W/collector.log")"
		fi
		((i++ < 600)) || fail infra-failed "ipitrace kvm-source not ready in 60 s"
		sleep 0.1
	done
	RES[COLLECTOR]=kvm-source
	RES[T_COLLECTOR_READY]=$(now)
	say "collector ready"
fi

if ! qmp cont 2>"$W/qmp.err"; then
	alive "$QPID" ||
		fail infra-failed "L2 QEMU exited before it ran: $(tail -n 3 "$W/qemu.log" | tr '\n' ' ')"
	fail infra-failed "QMP cont failed: $(tail -n 1 "$W/qmp.err")"
fi
RES[T_CONT]=$(now)
resets0=$(grep -c '^CPU Reset (CPU 0)' "$W/qemu-debug.log" 2>/dev/null)
say "L2 running"

# 3. The live watch.
if ((IPT_WATCH_HANG_MS > 0)); then
	if [[ ! -e $HV ]]; then
		fail infra-failed "--watch-hang-ms needs the hypervisor region (no collector)"
	fi
	"$IPT_AGENT" watch "$HV:$GUEST" --hang-ms "$IPT_WATCH_HANG_MS" \
		--poll-ms "$IPT_WATCH_POLL_MS" --out "$W/watch" \
		--duration-s "$IPT_TIMEOUT_S" >"$W/watch.jsonl" 2>"$W/watch.err" &
	WPID=$!
fi

# 4. Wait: IPITRACE-DONE, a hang, a crash or a deadline.
boot_deadline=$(($(cut -d. -f1 /proc/uptime) + IPT_TIMEOUT_S))
load_deadline=
phase=boot
while :; do
	sleep 0.5
	t=$(cut -d. -f1 /proc/uptime)
	text=$(cat "$W/console.log" 2>/dev/null)
	if [[ $text == *IPITRACE-ERROR* ]]; then
		fail infra-failed "guest reported: $(grep -m1 IPITRACE-ERROR <<<"$text")"
	fi
	if [[ $text == *"Kernel panic"* ]]; then
		RES[BEFORE_LOAD]=$([[ $phase == boot ]] && echo 1 || echo 0)
		fail vm-crashed "L2 kernel panicked (see console.log)"
	fi
	# No -no-reboot: a reset (a triple fault) is logged with the CPU state
	# before it (-d cpu_reset), and the guest boots again.
	resets=$(grep -c '^CPU Reset (CPU 0)' "$W/qemu-debug.log" 2>/dev/null)
	if ((resets > resets0)) || [[ $(grep -c IPITRACE-BOOTED <<<"$text") -gt 1 ]]; then
		RES[BEFORE_LOAD]=$([[ $phase == boot ]] && echo 1 || echo 0)
		sleep 0.5
		fail vm-crashed "L2 reset itself (a triple fault?) before printing IPITRACE-DONE; CPU state before the reset in l2-qemu-debug.log"
	fi
	if [[ -n ${IPT_FAULTS:-} && $FAULT_LOADED == 0 && $text == *IPITRACE-READY* ]]; then
		arm_faults
	fi
	if [[ $phase == boot && $text == *IPITRACE-LOAD-START* ]]; then
		phase=load
		RES[T_LOAD_START]=$(now)
		load_deadline=$((t + IPT_SECONDS + IPT_HANG_GRACE))
		((load_deadline > boot_deadline)) && load_deadline=$boot_deadline
		say "L2 load running"
		if [[ -n ${IPT_BENCH:-} ]]; then
			# A benchmark (scripts/bench-kvm-oneboot.py): the host side is
			# switched phase by phase under the running load.
			# shellcheck disable=SC2086
			"$PY" "$IPT_REPO/scripts/bench-kvm-phases.py" --qemu-pid "$QPID" \
				--guest-region "$GUEST" --agent "$IPT_AGENT" $IPT_BENCH \
				--out "$OUT/bench.jsonl" >"$OUT/bench.log" 2>&1 ||
				fail infra-failed "bench phases failed: $(tail -n 3 "$OUT/bench.log" | tr '\n' ' ')"
			RES[OUTCOME]=completed
			break
		fi
	fi
	if [[ $phase == load && $text == *IPITRACE-DONE* ]]; then
		RES[OUTCOME]=completed
		break
	fi
	if [[ -n $WPID ]] && grep -q '"hang_detected"' "$W/watch.jsonl" 2>/dev/null; then
		RES[OUTCOME]=guest-hung
		RES[HANG_BY]=agent
		say "the agent detected a hang"
		break
	fi
	if ! alive "$QPID"; then
		wait "$QPID"
		rc=$?
		QPID=
		RES[BEFORE_LOAD]=$([[ $phase == boot ]] && echo 1 || echo 0)
		fail vm-crashed "L2 QEMU exited (status $rc) before printing IPITRACE-DONE $(tail -n 2 "$W/qemu.log" | tr '\n' ' ')"
	fi
	if [[ $phase == boot ]] && ((t >= boot_deadline)); then
		fail hung-unexplained "timed out waiting for IPITRACE-LOAD-START"
	fi
	if [[ $phase == load ]] && ((t >= load_deadline)); then
		RES[OUTCOME]=guest-hung
		RES[HANG_BY]=console
		say "L2 hung (no IPITRACE-DONE $((IPT_SECONDS + IPT_HANG_GRACE)) s after load start)"
		break
	fi
done

# 5. Freeze the evidence, stop the producers, copy.
qmp stop 2>"$W/qmp.err" || say "QMP stop failed: $(tail -n 1 "$W/qmp.err")"
RES[T_STOP]=$(now)
say "L2 stopped; snapshot"
if [[ -n $CPID ]]; then
	stop_pid "$CPID" 30
	RES[COLLECTOR_EXIT]=$STOP_RC
	RES[T_COLLECTOR_STOPPED]=$(now)
	CPID=
fi
if [[ -n $WPID ]]; then
	stop_pid "$WPID" 10
	RES[WATCH_EXIT]=$STOP_RC
	WPID=
	cp "$W/watch.jsonl" "$OUT/watch.jsonl"
	cp "$W/watch.err" "$OUT/watch.err"
	[[ -d $W/watch ]] && cp -r --sparse=always "$W/watch" "$OUT/watch"
fi
[[ -f $W/collector.log ]] && cp "$W/collector.log" "$OUT/collector.log"
cp "$W/console.log" "$OUT/console.log"
cp "$W/qemu.log" "$OUT/l2-qemu.log"
cp "$W/qemu-debug.log" "$OUT/l2-qemu-debug.log"
RES[L2_RESETS]=$(($(grep -c '^CPU Reset (CPU 0)' "$W/qemu-debug.log") - resets0))
copied=1
RES[T_COPY_START]=$(now)
cp --sparse=always "$GUEST" "$OUT/guest.region" || copied=0
RES[T_COPY_GUEST]=$(now)
if [[ -e $HV ]]; then
	cp --sparse=always "$HV" "$OUT/hv.region" || copied=0
fi
RES[T_COPY_HV]=$(now)
if ((FAULT_LOADED)); then
	cat "$TRUTH/truth" >"$OUT/faults.jsonl" || copied=0
	cat "$TRUTH/stats" >"$OUT/fault-stats.txt"
else
	: >"$OUT/faults.jsonl"
fi
RES[COPIED]=$copied
((copied)) || fail infra-failed "cannot copy the snapshot to the out directory"
RES[T_COPIED]=$(now)
say "snapshot copied"
exit 0
