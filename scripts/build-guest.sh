#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Build the ipitrace test guest: kernel image, busybox initramfs, ipitrace.ko.
#
# Idempotent and cached under ${IPITRACE_CACHE:-/var/cache/ipitrace}, keyed
# on the kernel version and every input.  All progress goes to stderr; the
# last three lines of stdout are KERNEL=, INITRD= and MODULE= (absolute).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/scripts/build-guest.sh"
KMOD="$ROOT/guest-kmod"
ABI="$ROOT/abi/ipitrace_abi.h"
INIT="$KMOD/initramfs/init"
CACHE=${IPITRACE_CACHE:-/var/cache/ipitrace}
STAMP=/var/lib/ipitrace/deps-stamp
DEPS_WAIT=${IPITRACE_DEPS_WAIT:-3600}
# Applets the init script uses (plus sh for itself).
APPLETS=(sh mount mkdir cat echo sleep insmod rmmod dmesg tail grep sed tr taskset
	cut printf true uname ls)

log() { echo "build-guest: $*" >&2; }
die() { log "error: $*"; exit 1; }

# 1. Wait for setup-deps.sh to finish installing packages.
waited=0
while [[ ! -f $STAMP ]]; do
	if ((waited == 0)); then
		log "waiting for $STAMP (scripts/setup-deps.sh)"
	fi
	((waited >= DEPS_WAIT)) && die "timed out waiting for $STAMP"
	sleep 5
	waited=$((waited + 5))
done

# 2. The kernel version of the installed linux-headers-amd64 metapackage.
deps=$(dpkg-query -W -f='${Depends}' linux-headers-amd64 2>/dev/null) ||
	die "linux-headers-amd64 is not installed (run scripts/setup-deps.sh)"
KVER=$(sed -n 's/.*linux-headers-\([^ ,]*\).*/\1/p' <<<"$deps")
[[ -n $KVER ]] || die "cannot parse kernel version from '$deps'"
KDIR=/usr/src/linux-headers-$KVER
[[ -d $KDIR ]] || die "$KDIR missing"
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] || die "$BUSYBOX missing (busybox-static)"
log "kernel $KVER"

# 3. Cache key over every input.
KEY=$({
	echo "$KVER"
	(cd "$KMOD" && find . -maxdepth 1 -type f \
		\( -name '*.c' -o -name '*.h' -o -name Kbuild -o -name Makefile \) \
		-print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
	sha256sum <"$ABI"
	sha256sum <"$INIT"
	sha256sum <"$SELF"
} | sha256sum | cut -c1-16)
OUT="$CACHE/guest-$KEY"
KERNEL="$OUT/vmlinuz"
INITRD="$OUT/initrd.gz"
MODULE="$OUT/ipitrace.ko"

umask 022
mkdir -p "$CACHE"
chmod a+rx "$CACHE"

if [[ -f $OUT/complete && -f $KERNEL && -f $INITRD && -f $MODULE ]]; then
	log "cached in $OUT"
else
	WORK=$(mktemp -d "$CACHE/work.XXXXXX")
	trap 'rm -rf "$WORK"' EXIT

	# 4. Kernel image, from the package cache or the archive.
	PKGDIR="$CACHE/debs"
	mkdir -p "$PKGDIR"
	# Let apt fetch as its sandbox user _apt (quiet, no root download).
	chown _apt "$PKGDIR" 2>/dev/null || true
	deb=$(ls "$PKGDIR"/linux-image-"$KVER"{,-unsigned}_*.deb 2>/dev/null |
		head -n1 || true)
	if [[ -z $deb ]]; then
		log "downloading linux-image-$KVER"
		(cd "$PKGDIR" && { apt-get download "linux-image-$KVER-unsigned" ||
			apt-get download "linux-image-$KVER"; }) >&2 ||
			die "cannot download linux-image-$KVER"
		deb=$(ls "$PKGDIR"/linux-image-"$KVER"{,-unsigned}_*.deb \
			2>/dev/null | head -n1 || true)
	fi
	[[ -n $deb ]] || die "no linux-image-$KVER package in $PKGDIR"
	dpkg-deb --fsys-tarfile "$deb" |
		tar -x -C "$WORK" "./boot/vmlinuz-$KVER" ||
		die "no /boot/vmlinuz-$KVER in $deb"

	# 5. Module, built out of tree on a copy keeping the repo layout so the
	#    Kbuild's relative -I to abi/ resolves.
	mkdir -p "$WORK/src/guest-kmod" "$WORK/src/abi"
	cp "$KMOD"/*.c "$KMOD"/*.h "$KMOD"/Kbuild "$KMOD"/Makefile \
		"$WORK/src/guest-kmod/"
	cp "$ABI" "$WORK/src/abi/"
	log "building ipitrace.ko"
	make -C "$KDIR" M="$WORK/src/guest-kmod" modules >&2 ||
		die "module build failed"

	# 6. Busybox initramfs.
	IR="$WORK/initramfs"
	mkdir -p "$IR"/{bin,dev,proc,sys,tmp}
	cp "$BUSYBOX" "$IR/bin/busybox"
	for a in "${APPLETS[@]}"; do
		ln -sf busybox "$IR/bin/$a"
	done
	install -m 0755 "$INIT" "$IR/init"
	install -m 0644 "$WORK/src/guest-kmod/ipitrace.ko" "$IR/ipitrace.ko"
	(cd "$IR" && find . | LC_ALL=C sort |
		cpio -o -H newc -R 0:0 --quiet | gzip -9n) >"$WORK/initrd.gz"

	rm -rf "$OUT"
	mkdir -p "$OUT"
	install -m 0644 "$WORK/boot/vmlinuz-$KVER" "$KERNEL"
	install -m 0644 "$WORK/initrd.gz" "$INITRD"
	install -m 0644 "$WORK/src/guest-kmod/ipitrace.ko" "$MODULE"
	echo "$KVER" >"$OUT/complete"
	chmod 0755 "$OUT"
	log "built into $OUT"
	# Keep the three newest builds.
	ls -dt "$CACHE"/guest-* 2>/dev/null | tail -n +4 | while read -r old; do
		rm -rf "$old"
	done
fi

echo "KERNEL=$KERNEL"
echo "INITRD=$INITRD"
echo "MODULE=$MODULE"
