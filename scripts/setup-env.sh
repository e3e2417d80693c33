# SPDX-License-Identifier: GPL-2.0
# Sourced by ./test and ./demo: install packages, build (or reuse cached)
# QEMU, guest kernel+module+initramfs and the agent; export their paths.
bash scripts/setup-deps.sh
IPITRACE_QEMU=$(bash scripts/build-qemu.sh | tail -n 1)
guest_out=$(bash scripts/build-guest.sh)
IPITRACE_KERNEL=$(sed -n 's/^KERNEL=//p' <<<"$guest_out")
IPITRACE_INITRD=$(sed -n 's/^INITRD=//p' <<<"$guest_out")
IPITRACE_MODULE=$(sed -n 's/^MODULE=//p' <<<"$guest_out")
IPITRACE_TEST_MODULE=$(sed -n 's/^TEST_MODULE=//p' <<<"$guest_out")
IPITRACE_AGENT=$(bash scripts/build-agent.sh | tail -n 1)
export IPITRACE_QEMU IPITRACE_KERNEL IPITRACE_INITRD IPITRACE_MODULE IPITRACE_TEST_MODULE
export IPITRACE_AGENT
for f in "$IPITRACE_QEMU" "$IPITRACE_KERNEL" "$IPITRACE_INITRD" "$IPITRACE_AGENT"; do
	[[ -e $f ]] || { echo "setup: missing build output '$f'" >&2; exit 1; }
done
