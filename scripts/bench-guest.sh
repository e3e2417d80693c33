#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest module benchmarks and full-size robustness runs, each in one TCG
# boot with a plain QEMU command line (the patched QEMU, no hv stream).
#
#   scripts/bench-guest.sh overhead [--rounds N] [--round-s S] [--vcpus V]
#                                   [--mode M] [--wait 0|1] [--out FILE.md]
#                                   [--clock virtual|host] [--kparams a=1,b=2]
#                                   [--kernel backports|stock]
#       load-generator ops/s with no tracing, with the same tracepoints
#       enabled through tracefs (ftrace), and with the module's probes
#       attached; A/B/C alternating (rotated order) for N rounds of S
#       seconds; prints medians and ratios (markdown) and writes FILE.md.
#       --kernel: the guest kernel (scripts/guest-kernel.sh): backports 6.12
#       (default) or Debian 12's stock 6.1, where ftrace has only the events
#       that exist there (the guest prints which) and the module uses its
#       kprobe fallbacks.
#       --clock virtual (default): -icount shift=0,sleep=off, single-threaded
#       TCG: guest time counts guest instructions (1 ns each), so ops/s is
#       measured in instructions and the host's load (other VMs and builds
#       on the same cores) does not enter the result.  --clock host: MTTCG
#       on host time, as the tests run (very noisy on a shared host).
#       --clock single: host time, one TCG thread for all vCPUs (what each
#       op costs the emulator, tracing included, without MTTCG's
#       dependence on how the host schedules the vCPU threads).
#   scripts/bench-guest.sh cycles [--cycles N] [--vcpus V]
#       N insmod/rmmod cycles of the module and its test module with the
#       load running (the probes detached and attached again under it);
#       checks dmesg for BUG/WARNING/Oops and that no probe is left
#       registered.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WHAT=${1:-overhead}
shift || true
ROUNDS=7
ROUND_S=4
VCPUS=4
MODE=single
WAIT=1
CYCLES=100
CLOCK=virtual
KPARAMS=
KERNEL_KIND=backports
OUT=
while (($#)); do
	case $1 in
	--rounds) ROUNDS=$2; shift 2 ;;
	--round-s) ROUND_S=$2; shift 2 ;;
	--vcpus) VCPUS=$2; shift 2 ;;
	--mode) MODE=$2; shift 2 ;;
	--wait) WAIT=$2; shift 2 ;;
	--cycles) CYCLES=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	--clock) CLOCK=$2; shift 2 ;;
	--kparams) KPARAMS=$2; shift 2 ;;  # params of either module, a=1,b=2
	--kernel) KERNEL_KIND=$2; shift 2 ;;
	*) echo "bench-guest: unknown option $1" >&2; exit 2 ;;
	esac
done

QEMU=${IPITRACE_QEMU:-$(bash scripts/build-qemu.sh | tail -n 1)}
guest=$(IPITRACE_GUEST_KERNEL=$KERNEL_KIND bash scripts/build-guest.sh)
KERNEL=$(sed -n 's/^KERNEL=//p' <<<"$guest")
INITRD=$(sed -n 's/^INITRD=//p' <<<"$guest")

case $WHAT in
overhead)
	ACT="ipt.action=bench ipt.rounds=$ROUNDS ipt.round_s=$ROUND_S"
	[[ -n $KPARAMS ]] && ACT="$ACT ipt.kparams=$KPARAMS"
	LIMIT=$((240 + ROUNDS * 3 * (ROUND_S + 4))) ;;
cycles)
	ACT="ipt.action=params,cycles ipt.cycles=$CYCLES"
	LIMIT=$((240 + CYCLES * 8)) ;;
*) echo "bench-guest: overhead or cycles" >&2; exit 2 ;;
esac

TAG=ipt-bench-$$
SHM=/dev/shm/$TAG
WORK=$(mktemp -d /tmp/ipt-bench.XXXXXX)
CONSOLE=$WORK/console.log
CMDLINE="console=ttyS0 quiet panic=-1 ipt.threads=$VCPUS ipt.mode=$MODE ipt.wait=$WAIT $ACT"
ACCEL=(-accel tcg,thread=multi)
if [[ $WHAT = overhead && $CLOCK = single ]]; then
	ACCEL=(-accel tcg,thread=single)
	LIMIT=$((LIMIT * 3))
elif [[ $WHAT = overhead && $CLOCK = virtual ]]; then
	ACCEL=(-accel tcg,thread=single -icount shift=0,sleep=off)
	LIMIT=$((LIMIT * 8))
fi
QCMD=("$QEMU" "${ACCEL[@]}" -smp "$VCPUS" -m 768 -nographic
	-no-reboot -net none -L /usr/share/qemu -L /usr/share/seabios
	-kernel "$KERNEL" -initrd "$INITRD" -append "$CMDLINE"
	-object "memory-backend-file,id=shm0,share=on,mem-path=$SHM,size=64M"
	-device ivshmem-plain,memdev=shm0)
rm -f "$SHM"
# claimed: the module writes only into a claimed region
"${IPITRACE_AGENT:-$ROOT/build/host-agent/ipitrace}" claim "$SHM" --size-mb 64
echo "bench-guest: ${QCMD[*]}" >&2
"${QCMD[@]}" </dev/null >"$CONSOLE" 2>&1 &
QPID=$!
cleanup() {
	kill "$QPID" 2>/dev/null || true
	wait "$QPID" 2>/dev/null || true
	rm -f "$SHM"
}
trap cleanup EXIT

start=$SECONDS
while ! grep -q -e IPITRACE-DONE -e IPITRACE-ERROR -e "Kernel panic" "$CONSOLE"; do
	if ((SECONDS - start > LIMIT)) || ! kill -0 "$QPID" 2>/dev/null; then
		echo "bench-guest: guest did not finish (console: $CONSOLE)" >&2
		trap - EXIT
		cleanup
		exit 1
	fi
	sleep 2
done
cleanup
trap - EXIT
echo "bench-guest: console in $CONSOLE ($((SECONDS - start)) s)" >&2

if [[ $WHAT = cycles ]]; then
	grep -a -e "^IPITRACE-PARAM" -e "^IPITRACE-CYCLES" -e "^IPITRACE-BAD-DMESG" \
		-e "^IPITRACE-ERROR" "$CONSOLE"
	sed -n '/IPITRACE-TRACEPOINTS-BEGIN/,/IPITRACE-TRACEPOINTS-END/p' "$CONSOLE"
	grep -q "^IPITRACE-CYCLES cycles=$CYCLES failures=0 loaded_after=0 bad_dmesg=0" \
		"$CONSOLE" && grep -q "^IPITRACE-BAD-DMESG 0" "$CONSOLE"
	exit
fi

CMD="scripts/bench-guest.sh overhead --rounds $ROUNDS --round-s $ROUND_S --vcpus $VCPUS --mode $MODE --wait $WAIT --clock $CLOCK --kernel $KERNEL_KIND${KPARAMS:+ --kparams $KPARAMS}"
/usr/bin/python3 - "$CONSOLE" "$CMD" "$OUT" <<'EOF'
import re, statistics, sys
console, cmd, out = sys.argv[1:4]
runs = {}
rows = []
info = {"kernel": "?", "events": "?", "stages": []}
for ln in open(console, errors="replace"):
    m = re.match(r"IPITRACE-BENCH-(KERNEL|EVENTS) (.*)", ln)
    if m:
        info[m.group(1).lower()] = m.group(2).strip()
    m = re.match(r"IPITRACE-STAGE (\w+) (\w+)", ln)
    if m:
        info["stages"].append(f"{m.group(1).lower()} {m.group(2).lower()}")
    m = re.match(r"IPITRACE-BENCH round=(\d+) cfg=(\w+) .*ops_per_s (\d+)", ln)
    if m:
        r, cfg, v = int(m.group(1)), m.group(2), int(m.group(3))
        runs.setdefault(cfg, []).append(v)
        rows.append((r, cfg, v))
if not all(runs.get(c) for c in ("none", "ftrace", "module")):
    sys.exit("bench-guest: missing IPITRACE-BENCH lines")
med = {c: statistics.median(v) for c, v in runs.items()}
# per-round ratios against that round's untraced run (pairs the drift)
ratio = {c: [] for c in ("ftrace", "module")}
for r in sorted({r for r, _, _ in rows}):
    base = [v for rr, c, v in rows if rr == r and c == "none"][0]
    for c in ratio:
        ratio[c].append([v for rr, cc, v in rows if rr == r and cc == c][0] / base)
lines = [
    f"Command: `{cmd}`", "",
    f"Guest kernel {info['kernel']}; the module's stages: {', '.join(info['stages']) or '?'}; "
    f"ftrace enables the events that exist: {info['events']}.", "",
    "| config | median ops/s | overhead vs none (medians) | median of per-round ratios | per-round ops/s |",
    "|---|---|---|---|---|",
]
for c in ("none", "ftrace", "module"):
    ovh = (1 - med[c] / med["none"]) * 100
    pr = "-" if c == "none" else f"{statistics.median(ratio[c]):.3f}"
    lines.append(f"| {c} | {med[c]:.0f} | {ovh:+.1f}% | {pr} | {', '.join(map(str, runs[c]))} |")
text = "\n".join(lines) + "\n"
print(text)
if out:
    with open(out, "w") as f:
        f.write(text)
EOF
