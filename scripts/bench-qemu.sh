#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# A/B benchmark of the guest's IPI throughput under the patched QEMU:
#   off       no ipitrace object (the hooks cost one load and one branch)
#   ipitrace  -object ipitrace (every APIC stage recorded)
#   log       no ipitrace object, stock -trace 'apic_*' (log backend, file)
# Configurations alternate within each round (off, ipitrace, log, then the
# next round rotated by one), so slow drifts of a shared host hit all of
# them.  ops/s = the load generator's load_ops / seconds.
#
#   scripts/bench-qemu.sh [--rounds N] [--seconds S] [--vcpus V] [--out FILE]
#                         [--tcg multi|single]
#
# --tcg single runs all vCPUs in one TCG thread: QEMU's CPU time per guest
# op then measures the emulation (and tracing) cost with little of the
# host scheduler's noise that MTTCG on a 2-core host shows.
#
# QEMU is booted directly (no libvirt), TCG, like harness/ipitrace_harness/
# vm.py's domain: kernel + initramfs from scripts/build-guest.sh, the guest
# module's ivshmem-plain device (present in every configuration).  Writes a
# markdown report (default $TMPDIR/ipitrace-qemu-bench.md: results/qemu-bench.md
# holds the one-boot figures, scripts/bench-qemu-oneboot.py) and prints it.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=3 SECONDS_=10 VCPUS=2 OUT="${TMPDIR:-/tmp}/ipitrace-qemu-bench.md" TCG=multi
while (($#)); do
	case $1 in
	--rounds) ROUNDS=$2; shift 2 ;;
	--seconds) SECONDS_=$2; shift 2 ;;
	--vcpus) VCPUS=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	--tcg) TCG=$2; shift 2 ;;
	*) echo "usage: $0 [--rounds N] [--seconds S] [--vcpus V] [--out FILE] [--tcg multi|single]" >&2; exit 2 ;;
	esac
done
QEMU=${IPITRACE_QEMU:-$(bash "$REPO/scripts/build-qemu.sh" | tail -n 1)}
guest_out=$(bash "$REPO/scripts/build-guest.sh")
KERNEL=$(sed -n 's/^KERNEL=//p' <<<"$guest_out")
INITRD=$(sed -n 's/^INITRD=//p' <<<"$guest_out")
WORK=$(mktemp -d /tmp/ipt-bench.XXXXXX)
QPID=
cleanup() {
	[[ -n $QPID ]] && kill "$QPID" 2>/dev/null
	rm -rf "$WORK" /dev/shm/ipt-bench-$$-*
}
trap cleanup EXIT

# one run: $1 = config, $2 = round; prints "ops" (or "fail")
run_one() {
	local cfg=$1 r=$2 con="$WORK/console-$1-$2.log" args=()
	local shm=/dev/shm/ipt-bench-$$-guest hv=/dev/shm/ipt-bench-$$-hv
	rm -f "$shm" "$hv" "$WORK/apic-trace.log"
	# claimed: the module writes only into a claimed region
	"${IPITRACE_AGENT:-$REPO/build/host-agent/ipitrace}" claim "$shm" --size-mb 64
	case $cfg in
	ipitrace) args=(-object "ipitrace,id=ipt0,path=$hv,capacity=524288") ;;
	log) args=(-trace "enable=apic_*,file=$WORK/apic-trace.log") ;;
	esac
	"$QEMU" -machine pc -accel "tcg,thread=$TCG" -cpu qemu64,-x2apic -smp "$VCPUS" -m 768 \
		-L /usr/share/qemu -L /usr/share/seabios \
		-display none -monitor none -serial "file:$con" -no-reboot -nic none \
		-kernel "$KERNEL" -initrd "$INITRD" \
		-append "console=ttyS0 quiet panic=-1 ipt.seconds=$SECONDS_ ipt.threads=$VCPUS ipt.mode=single ipt.wait=1 ipt.action=load" \
		-object "memory-backend-file,id=iptshm,mem-path=$shm,size=64M,share=on" \
		-device ivshmem-plain,memdev=iptshm "${args[@]}" \
		>"$WORK/qemu-$cfg-$r.log" 2>&1 &
	QPID=$!
	local deadline=$((SECONDS + 180 + SECONDS_)) cpu0= cpu1=
	while ((SECONDS < deadline)) && ! grep -q IPITRACE-DONE "$con" 2>/dev/null; do
		kill -0 "$QPID" 2>/dev/null || break
		# QEMU's CPU time (user + system, clock ticks) across the load
		if [[ -z $cpu0 ]] && grep -q IPITRACE-LOAD-START "$con" 2>/dev/null; then
			cpu0=$(awk '{print $14 + $15}' "/proc/$QPID/stat")
		fi
		if [[ -z $cpu1 ]] && grep -q IPITRACE-LOAD-STOP "$con" 2>/dev/null; then
			cpu1=$(awk '{print $14 + $15}' "/proc/$QPID/stat")
		fi
		sleep 0.2
	done
	kill "$QPID" 2>/dev/null || true
	wait "$QPID" 2>/dev/null || true
	QPID=
	if [[ $cfg == log ]]; then
		echo "log events: $(wc -l <"$WORK/apic-trace.log" 2>/dev/null || echo 0)" >&2
	fi
	local ops
	ops=$(awk '/IPITRACE-COUNTERS-BEGIN/{f=1;next} /IPITRACE-COUNTERS-END/{f=0} f && $1=="load_ops"{print $2; found=1} END{if(!found) print "fail"}' "$con" | tr -d '\r')
	echo "$ops:$(((${cpu1:-0} - ${cpu0:-0}) * 1000000000 / $(getconf CLK_TCK)))"
}

# (a) microbenchmark of the record write (built and installed by
# build-qemu.sh next to the emulator)
MICRO=$("$(dirname "$QEMU")/ipitrace-bench" -n 10000000 -r 7 -l "$WORK/bench-log.log")
echo "$MICRO" >&2

# (b) A/B guest IPI throughput
CFGS=(off ipitrace log)
declare -A OPS
for ((r = 0; r < ROUNDS; r++)); do
	for ((i = 0; i < 3; i++)); do
		cfg=${CFGS[$(((i + r) % 3))]}
		ops=$(run_one "$cfg" "$r")
		echo "round $r $cfg: load_ops:qemu_cpu_ns=$ops" >&2
		OPS[$cfg]+="$ops "
	done
done

python3 - "$SECONDS_" "$ROUNDS" "$VCPUS:$TCG" "${OPS[off]}" "${OPS[ipitrace]}" "${OPS[log]}" "$MICRO" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" >"$OUT" <<'EOF'
import statistics, sys, time
secs, rounds = float(sys.argv[1]), sys.argv[2]
vcpus, tcg = sys.argv[3].split(":")
cfg = dict(zip(("off", "ipitrace", "log"), sys.argv[4:7]))
micro = dict(ln.split() for ln in sys.argv[7].splitlines()[1:])
print("# QEMU ipitrace benchmarks\n")
print(f"Host: {sys.argv[8]} CPUs, load average at the end {sys.argv[9]} "
      "(shared with other builds and VMs: treat small differences as noise).\n")
print("## (a) record write, `ipitrace-bench -n 10000000 -r 7`\n")
print("Median over 7 rounds of the mean cost per record/event.\n")
print("| what | ns |")
print("|---|---|")
print(f"| ipitrace_ring_append() into a shared mapping | {micro['ring_append_ns']} |")
print(f"| same + host TSC read (as the object stamps records) | {micro['ring_append_tsc_ns']} |")
print(f"| stock log trace backend, one apic_* event to a file | {micro['log_backend_event_ns']} |")
print()
def runs(v):
    out = []
    for x in v.split():
        ops, cpu = x.split(":")
        if ops.isdigit() and int(ops) > 0:
            out.append((int(ops), int(cpu)))
    return out
rs = {k: runs(v) for k, v in cfg.items()}
rate = {k: [o / secs for o, c in v] for k, v in rs.items()}
cpo = {k: [c / o for o, c in v if c > 0] for k, v in rs.items()}
med = {k: statistics.median(v) if v else float("nan") for k, v in rate.items()}
mcpo = {k: statistics.median(v) if v else float("nan") for k, v in cpo.items()}
print("## (b) guest IPI operations per second, A/B alternating\n")
print(f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
      f"`scripts/bench-qemu.sh --rounds {rounds} --seconds {int(secs)} --vcpus {vcpus} --tcg {tcg}` "
      f"(TCG thread={tcg}, direct QEMU command line, load generator smp_call_function_single wait=1).\n")
print("| config | runs (ops/s) | median ops/s | vs off | QEMU CPU ns per op (runs) | median | vs off |")
print("|---|---|---|---|---|---|---|")
for k in ("off", "ipitrace", "log"):
    r = ", ".join(f"{x:.0f}" for x in rate[k]) + (f" ({cfg[k].count('fail')} failed)" if "fail" in cfg[k] else "")
    c = ", ".join(f"{x:.0f}" for x in cpo[k])
    print(f"| {k} | {r} | {med[k]:.0f} | {med[k] / med['off']:.3f} | {c} | {mcpo[k]:.0f} | {mcpo[k] / mcpo['off']:.3f} |")
# Per-round ratios pair each traced run with the untraced run of the same
# round (adjacent in time), so slow drifts of the host cancel.
def paired(k, idx):
    out = []
    for a, b in zip(cfg[k].split(), cfg["off"].split()):
        a, b = a.split(":"), b.split(":")
        if a[0].isdigit() and b[0].isdigit() and int(a[0]) and int(b[0]) and int(a[1]) and int(b[1]):
            out.append(int(a[idx]) / int(b[idx]) if idx == 0 else
                       (int(a[1]) / int(a[0])) / (int(b[1]) / int(b[0])))
    return out
print("\n| config | per-round ops/s ratio vs off | median | per-round CPU-per-op ratio vs off | median |")
print("|---|---|---|---|---|")
for k in ("ipitrace", "log"):
    po, pc = paired(k, 0), paired(k, 1)
    print(f"| {k} | {', '.join(f'{x:.3f}' for x in po)} | {statistics.median(po) if po else float('nan'):.3f} "
          f"| {', '.join(f'{x:.3f}' for x in pc)} | {statistics.median(pc) if pc else float('nan'):.3f} |")
print("\nQEMU CPU ns per op: QEMU's user+system CPU time between the guest's "
      "LOAD-START and LOAD-STOP console lines (sampled every 0.2 s), divided "
      "by the ops; less sensitive than ops/s to other processes taking the "
      "host CPUs, but it includes idle-loop and timer work.")
print("\noff: no ipitrace object; ipitrace: `-object ipitrace,path=/dev/shm/..`; "
      "log: stock `-trace enable=apic_*,file=...` (log backend).")
EOF
cat "$OUT"
