#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Build L1 of the nested KVM test bed: kernel image, busybox initramfs with
# the modules L1 needs, and the TEST-ONLY kvm_fault.ko.
#
# L1 runs Debian's backports kernel (the version of the installed
# linux-headers-amd64, as for the guest) under TCG and the traced guest
# under its KVM (harness/ipitrace_harness/nested.py).  The initramfs holds
# busybox-static, harness/nested/l1-init as /init, and the 9p stack, ccp,
# irqbypass, kvm and kvm-amd from the same linux-image package with their
# dependencies (depmod's modules.dep), uncompressed, loaded in the order of
# /lib/modules/load.list.  kvm_fault.ko (harness/nested/kvm-fault/) is
# built against /usr/src/linux-headers-$KVER.
#
# Idempotent and cached under ${IPITRACE_CACHE:-/var/cache/ipitrace}/l1-<hash
# of every input>.  Progress goes to stderr; the last three lines of stdout
# are KERNEL=, INITRD= and FAULT_MODULE= (absolute paths).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/scripts/build-l1.sh"
INIT="$ROOT/harness/nested/l1-init"
FAULT_SRC="$ROOT/harness/nested/kvm-fault"
CACHE=${IPITRACE_CACHE:-/var/cache/ipitrace}
# Modules L1 loads (with their dependencies) and their parameters.  virtio
# and virtio-pci are built into Debian's kernel.
MODULES=(netfs 9pnet 9pnet_virtio 9p ccp irqbypass kvm kvm-amd)
declare -A MODPARAMS=([kvm-amd]="npt=1 nested=1 avic=0")
# Applets l1-init uses (plus sh for itself).
APPLETS=(sh mount mkdir cat echo sleep insmod sed cut uname dmesg tail sync
	poweroff chroot)

log() { echo "build-l1: $*" >&2; }
die() { log "error: $*"; exit 1; }

# 1-2. The kernel, as the guest's (after setup-deps.sh): KVER, KDIR, BUSYBOX.
# shellcheck source=scripts/guest-kernel.sh
source "$ROOT/scripts/guest-kernel.sh"
guest_kernel
command -v depmod >/dev/null || die "depmod missing (kmod)"

umask 022
mkdir -p "$CACHE"
chmod a+rx "$CACHE"

# One build at a time (the guest build shares the package cache).
exec 9>"$CACHE/.l1-build.lock"
flock 9

# 3. The kernel package, from the package cache or the archive.
deb=$(guest_kernel_deb)

# 4. Cache key over every input.
KEY=$({
	echo "$KVER"
	basename "$deb"
	echo "${MODULES[*]}"
	for m in "${!MODPARAMS[@]}"; do echo "$m=${MODPARAMS[$m]}"; done | LC_ALL=C sort
	echo "${APPLETS[*]}"
	module_sources_sha "$FAULT_SRC"
	sha256sum <"$INIT"
	sha256sum <"$SELF"
	sha256sum <"$ROOT/scripts/guest-kernel.sh"
	sha256sum <"$BUSYBOX"
} | sha256sum | cut -c1-16)
OUT="$CACHE/l1-$KEY"
KERNEL="$OUT/vmlinuz"
INITRD="$OUT/initrd.gz"
FAULT_MODULE="$OUT/kvm_fault.ko"

if [[ -f $OUT/complete && -f $KERNEL && -f $INITRD && -f $FAULT_MODULE ]]; then
	log "cached in $OUT"
else
	WORK=$(mktemp -d "$CACHE/work.XXXXXX")
	trap 'rm -rf "$WORK"' EXIT

	# 5. Kernel image and module tree; modules.dep from depmod.
	log "unpacking $(basename "$deb")"
	mkdir -p "$WORK/pkg"
	dpkg-deb --fsys-tarfile "$deb" |
		tar -x -C "$WORK/pkg" "./boot/vmlinuz-$KVER" "./boot/System.map-$KVER" \
			"./lib/modules/$KVER" ||
		die "cannot unpack $deb"
	depmod -b "$WORK/pkg" -F "$WORK/pkg/boot/System.map-$KVER" "$KVER" ||
		die "depmod failed"
	MDIR="$WORK/pkg/lib/modules/$KVER"

	# 6. Load order: every module after its dependencies.
	declare -A DEP PATHOF SEEN
	norm() { tr - _ <<<"$1"; }
	while IFS= read -r line; do
		file=${line%%:*}
		name=$(basename "$file")
		name=$(norm "${name%%.ko*}")
		PATHOF[$name]=$file
		DEP[$name]=${line#*:}
	done <"$MDIR/modules.dep"
	ORDER=()
	visit() {
		local n m
		n=$(norm "$1")
		[[ -n ${PATHOF[$n]:-} ]] || die "module $1 is not in $(basename "$deb")"
		[[ -z ${SEEN[$n]:-} ]] || return 0
		SEEN[$n]=1
		for m in ${DEP[$n]}; do
			m=$(basename "$m")
			visit "${m%%.ko*}"
		done
		ORDER+=("$n")
	}
	for m in "${MODULES[@]}"; do
		visit "$m"
	done
	log "modules: ${ORDER[*]}"

	# 7. Busybox initramfs.
	IR="$WORK/initramfs"
	mkdir -p "$IR"/{bin,dev,proc,sys,tmp,host,out,lib/modules}
	cp "$BUSYBOX" "$IR/bin/busybox"
	for a in "${APPLETS[@]}"; do
		ln -sf busybox "$IR/bin/$a"
	done
	install -m 0755 "$INIT" "$IR/init"
	: >"$IR/lib/modules/load.list"
	for n in "${ORDER[@]}"; do
		src="$MDIR/${PATHOF[$n]}"
		case $src in
		*.ko.xz) xz -dc "$src" >"$IR/lib/modules/$n.ko" ;;
		*.ko.zst) zstd -qdc "$src" >"$IR/lib/modules/$n.ko" ;;
		*.ko) cp "$src" "$IR/lib/modules/$n.ko" ;;
		*) die "unknown module format: $src" ;;
		esac
		params=""
		for m in "${!MODPARAMS[@]}"; do
			[[ $(norm "$m") == "$n" ]] && params=${MODPARAMS[$m]}
		done
		echo "$n.ko $params" >>"$IR/lib/modules/load.list"
	done
	(cd "$IR" && find . | LC_ALL=C sort |
		cpio -o -H newc -R 0:0 --quiet | gzip -9n) >"$WORK/initrd.gz"

	# 8. The TEST-ONLY fault module, against the same kernel's headers.
	mkdir -p "$WORK/kvm-fault"
	cp "$FAULT_SRC"/*.c "$FAULT_SRC"/*.h "$FAULT_SRC"/Kbuild "$FAULT_SRC"/Makefile "$WORK/kvm-fault/"
	log "building kvm_fault.ko"
	make -C "$KDIR" M="$WORK/kvm-fault" modules >&2 ||
		die "kvm_fault.ko build failed"

	rm -rf "$OUT"
	mkdir -p "$OUT"
	install -m 0644 "$WORK/pkg/boot/vmlinuz-$KVER" "$KERNEL"
	install -m 0644 "$WORK/initrd.gz" "$INITRD"
	install -m 0644 "$WORK/kvm-fault/kvm_fault.ko" "$FAULT_MODULE"
	echo "$KVER" >"$OUT/complete"
	chmod 0755 "$OUT"
	log "built into $OUT"
	# Keep the three newest builds.
	ls -dt "$CACHE"/l1-* 2>/dev/null | tail -n +4 | while read -r old; do
		rm -rf "$old"
	done
fi

echo "KERNEL=$KERNEL"
echo "INITRD=$INITRD"
echo "FAULT_MODULE=$FAULT_MODULE"
