#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Build the ipitrace test guest: kernel image, busybox initramfs with
# ipitrace.ko (the tracing module) and ipitrace_test.ko (its test module:
# load generator, self-tests).
#
# Idempotent and cached under ${IPITRACE_CACHE:-/var/cache/ipitrace}, keyed
# on the kernel version and every input.  All progress goes to stderr; the
# last four lines of stdout are KERNEL=, INITRD=, MODULE= (ipitrace.ko) and
# TEST_MODULE= (ipitrace_test.ko), absolute paths.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/scripts/build-guest.sh"
KMOD="$ROOT/guest-kmod"
ABI="$ROOT/abi/ipitrace_abi.h"
INIT="$KMOD/initramfs/init"
CACHE=${IPITRACE_CACHE:-/var/cache/ipitrace}
# Applets the init script uses (plus sh for itself).
APPLETS=(sh mount mkdir cat echo sleep insmod rmmod modinfo dmesg tail grep sed tr
	taskset cut printf true uname ls)

log() { echo "build-guest: $*" >&2; }
die() { log "error: $*"; exit 1; }

# 1-2. The guest kernel (after setup-deps.sh): KVER, KDIR, BUSYBOX.
# shellcheck source=scripts/guest-kernel.sh
source "$ROOT/scripts/guest-kernel.sh"
guest_kernel

# 3. Cache key over every input.
KEY=$({
	echo "$KVER"
	module_sources_sha "$KMOD"
	sha256sum <"$ABI"
	sha256sum <"$INIT"
	sha256sum <"$SELF"
	sha256sum <"$ROOT/scripts/guest-kernel.sh"
} | sha256sum | cut -c1-16)
OUT="$CACHE/guest-$KEY"
KERNEL="$OUT/vmlinuz"
INITRD="$OUT/initrd.gz"
MODULE="$OUT/ipitrace.ko"
TEST_MODULE="$OUT/ipitrace_test.ko"

umask 022
mkdir -p "$CACHE"
chmod a+rx "$CACHE"

if [[ -f $OUT/complete && -f $KERNEL && -f $INITRD && -f $MODULE &&
	-f $TEST_MODULE ]]; then
	log "cached in $OUT"
else
	WORK=$(mktemp -d "$CACHE/work.XXXXXX")
	trap 'rm -rf "$WORK"' EXIT

	# 4. Kernel image, from the package cache or the archive.
	deb=$(guest_kernel_deb)
	dpkg-deb --fsys-tarfile "$deb" |
		tar -x -C "$WORK" "./boot/vmlinuz-$KVER" ||
		die "no /boot/vmlinuz-$KVER in $deb"

	# 5. Module, built out of tree on a copy keeping the repo layout so the
	#    Kbuild's relative -I to abi/ resolves.
	mkdir -p "$WORK/src/guest-kmod" "$WORK/src/abi"
	cp "$KMOD"/*.c "$KMOD"/*.h "$KMOD"/Kbuild "$KMOD"/Makefile \
		"$WORK/src/guest-kmod/"
	cp "$ABI" "$WORK/src/abi/"
	log "building ipitrace.ko and ipitrace_test.ko"
	make -C "$KDIR" M="$WORK/src/guest-kmod" "${KMAKE[@]}" modules >&2 ||
		die "module build failed"

	# 6. Busybox initramfs.
	IR="$WORK/initramfs"
	mkdir -p "$IR"/{bin,dev,proc,sys,tmp}
	cp "$BUSYBOX" "$IR/bin/busybox"
	for a in "${APPLETS[@]}"; do
		ln -sf busybox "$IR/bin/$a"
	done
	install -m 0755 "$INIT" "$IR/init"
	install -m 0644 "$WORK/src/guest-kmod/ipitrace.ko" \
		"$WORK/src/guest-kmod/ipitrace_test.ko" "$IR/"
	(cd "$IR" && find . | LC_ALL=C sort |
		cpio -o -H newc -R 0:0 --quiet | gzip -9n) >"$WORK/initrd.gz"

	rm -rf "$OUT"
	mkdir -p "$OUT"
	install -m 0644 "$WORK/boot/vmlinuz-$KVER" "$KERNEL"
	install -m 0644 "$WORK/initrd.gz" "$INITRD"
	install -m 0644 "$WORK/src/guest-kmod/ipitrace.ko" "$MODULE"
	install -m 0644 "$WORK/src/guest-kmod/ipitrace_test.ko" "$TEST_MODULE"
	echo "$KVER" >"$OUT/complete"
	chmod 0755 "$OUT"
	log "built into $OUT"
	# Keep the newest builds: two for each guest kernel (guest-kernel.sh
	# has three), so a run's tests never lose a build another test uses.
	ls -dt "$CACHE"/guest-* 2>/dev/null | tail -n +7 | while read -r old; do
		rm -rf "$old"
	done
fi

echo "KERNEL=$KERNEL"
echo "INITRD=$INITRD"
echo "MODULE=$MODULE"
echo "TEST_MODULE=$TEST_MODULE"
