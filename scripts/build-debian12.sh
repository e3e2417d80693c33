#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Build the Debian 12 test guest: a bookworm image made with debootstrap
# (minbase + systemd, udev, kmod, stress-ng), Debian's kernel with its
# headers, and the repository's ipitrace-dkms package (scripts/
# build-dkms-deb.sh) installed with apt, so that DKMS builds the module for
# that kernel and systemd-modules-load loads it at boot.  The test driver
# (harness/debian12/: a systemd unit and its script) runs stress-ng when the
# kernel command line asks for it and prints the harness's markers on
# ttyS0.  Booted by the harness with `--guest debian12`: direct kernel boot
# of the image's own vmlinuz and initrd, root=/dev/vda (a qcow2 overlay on
# the image).
#
#   IPITRACE_DEBIAN12_KERNEL=stock      Debian 12's own kernel, 6.1
#                                       (the default)
#   IPITRACE_DEBIAN12_KERNEL=backports  bookworm-backports' 6.12
#
# The kernel is the one the busybox guest runs with the same choice
# (scripts/guest-kernel.sh), installed at the version of its headers here.
# Cached under ${IPITRACE_CACHE:-/var/cache/ipitrace}/debian12-<key>, key =
# sha256 of every input (this script, the package list, the kernel package
# and version, the ipitrace-dkms package's content, the driver and its
# unit).  Progress goes to stderr; stdout is KVER= (the image kernel's
# `uname -r`), then KERNEL=, INITRD= and IMAGE= (absolute).  A DKMS build
# failure fails the build, with DKMS's make.log (exit 1).  Exit 77 when
# this machine cannot build the image (a tool or root missing, the mirror
# unreachable, the kernel's packages gone from it): the tests then skip.
set -euo pipefail
exec 3>&1 1>&2

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/scripts/build-debian12.sh"
DRIVER="$ROOT/harness/debian12/ipitrace-test-driver"
UNIT="$ROOT/harness/debian12/ipitrace-test.service"
CACHE=${IPITRACE_CACHE:-/var/cache/ipitrace}
FLAVOUR=${IPITRACE_DEBIAN12_KERNEL:-stock}
MIRROR=http://deb.debian.org/debian
SECURITY=http://deb.debian.org/debian-security
SUITE=bookworm
# debootstrap --variant=minbase, plus:
BASE_PKGS=(systemd systemd-sysv udev kmod initramfs-tools stress-ng dkms)
# The module's name and version in the package (packaging/debian/).
DKMS_NAME=ipitrace
DKMS_VERSION=0.1.0
# The initramfs needs only what mounts the root: MODULES=dep cannot see
# the VM's devices from a chroot, and `most` triples the boot under TCG.
INITRD_MODULES=(virtio_pci virtio_blk ext4 crc32c_generic)

log() { echo "build-debian12: $*" >&2; }
die() { log "error: $*"; exit 1; }
unbuildable() { log "cannot build here: $*"; exit 77; }

for tool in debootstrap qemu-img mkfs.ext4 apt-cache chroot flock; do
	command -v "$tool" >/dev/null || unbuildable "$tool missing (scripts/setup-deps.sh)"
done
[[ $(id -u) == 0 ]] || unbuildable "needs root (debootstrap, chroot)"

# 1. The kernel, as the busybox guest's (scripts/guest-kernel.sh, after
#    setup-deps.sh): KVER, and the version of its headers installed here.
case $FLAVOUR in
stock | backports) ;;
*) die "IPITRACE_DEBIAN12_KERNEL must be stock or backports, not '$FLAVOUR'" ;;
esac
# shellcheck source=scripts/guest-kernel.sh
source "$ROOT/scripts/guest-kernel.sh"
IPITRACE_GUEST_KERNEL=$FLAVOUR guest_kernel
KPKG_VERSION=$(dpkg-query -W -f='${Version}' "linux-headers-$KVER" 2>/dev/null) ||
	unbuildable "linux-headers-$KVER is not installed (scripts/setup-deps.sh)"
log "image kernel $KVER ($FLAVOUR, $KPKG_VERSION)"

# 2. The ipitrace-dkms package (cached by its own inputs).
DEB=$(bash "$ROOT/scripts/build-dkms-deb.sh" | tail -n 1)
[[ -f $DEB ]] || die "scripts/build-dkms-deb.sh gave no package"

# 3. Cache key over every input.  The package by its content, not its
#    bytes: dpkg-deb stamps the build time.
deb_content_sha() {
	local d
	d=$(mktemp -d)
	dpkg-deb -R "$1" "$d"
	(cd "$d" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
	rm -rf "$d"
}
KEY=$({
	echo "$SUITE $FLAVOUR $KVER $KPKG_VERSION"
	echo "${BASE_PKGS[*]}"
	echo "${INITRD_MODULES[*]}"
	deb_content_sha "$DEB"
	sha256sum <"$DRIVER"
	sha256sum <"$UNIT"
	sha256sum <"$SELF"
} | sha256sum | cut -c1-16)
OUT="$CACHE/debian12-$KEY"
KERNEL="$OUT/vmlinuz"
INITRD="$OUT/initrd.img"
IMAGE="$OUT/disk.qcow2"

umask 022
mkdir -p "$CACHE"
chmod a+rx "$CACHE"
exec 9>"$CACHE/.debian12-build.lock"
flock 9

if [[ -f $OUT/complete && -f $KERNEL && -f $INITRD && -f $IMAGE ]]; then
	log "cached in $OUT"
else
	t0=$SECONDS
	host=${MIRROR#http://}
	host=${host%%/*}
	timeout 20 bash -c ": </dev/tcp/$host/80" 2>/dev/null ||
		unbuildable "$host unreachable (port 80)"
	WORK=$(mktemp -d "$CACHE/work.XXXXXX")
	R="$WORK/rootfs"
	mounted_under() { awk '{print $2}' /proc/mounts | grep "^$1/" | sort -r; }
	cleanup() {
		local m
		# Ours and any debootstrap left, deepest first; never delete
		# through a mount (rm stays on the work tree's file system).
		for m in $(mounted_under "$WORK"); do
			umount -l "$m" 2>/dev/null || true
		done
		if [[ -n $(mounted_under "$WORK") ]]; then
			log "left $WORK in place: still mounted"
		else
			rm -rf --one-file-system "$WORK"
		fi
	}
	trap cleanup EXIT
	in_root() { chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }

	# 4. debootstrap.  Downloaded packages are kept between builds.
	DEBS="$CACHE/debian12-debs"
	mkdir -p "$DEBS/partial"
	log "debootstrap $SUITE (minbase + ${BASE_PKGS[*]})"
	debootstrap --variant=minbase --cache-dir="$DEBS" \
		--include="$(IFS=,; echo "${BASE_PKGS[*]}")" \
		"$SUITE" "$R" "$MIRROR" >&2 || die "debootstrap failed (see above)"

	# No bind of the host's /dev: mounts under it could propagate to the
	# host's.  The few nodes apt and dpkg use, as debootstrap makes them.
	for n in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
		IFS=: read -r name major minor <<<"$n"
		[[ -c $R/dev/$name ]] || mknod -m 666 "$R/dev/$name" c "$major" "$minor"
	done
	mount -t proc proc "$R/proc"
	mount -t sysfs sysfs "$R/sys"
	mount --bind "$DEBS" "$R/var/cache/apt/archives"

	# 5. Configuration: no docs but ipitrace-dkms's (its examples are the
	#    user's instructions), no services started in the chroot, the
	#    suites the kernel may come from.
	cat >"$R/etc/dpkg/dpkg.cfg.d/01-ipitrace-small" <<-'EOF'
		path-exclude=/usr/share/doc/*
		path-include=/usr/share/doc/ipitrace-dkms/*
		path-exclude=/usr/share/man/*
		path-exclude=/usr/share/info/*
		path-exclude=/usr/share/locale/*
		path-include=/usr/share/locale/locale.alias
		path-exclude=/usr/share/lintian/*
	EOF
	printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
	chmod 0755 "$R/usr/sbin/policy-rc.d"
	{
		echo "deb $MIRROR $SUITE main"
		echo "deb $MIRROR $SUITE-updates main"
		echo "deb $SECURITY $SUITE-security main"
		[[ $FLAVOUR == backports ]] && echo "deb $MIRROR $SUITE-backports main"
	} >"$R/etc/apt/sources.list"
	echo ipitrace-deb12 >"$R/etc/hostname"
	printf '/dev/vda / ext4 rw,noatime 0 0\n' >"$R/etc/fstab"
	printf 'MODULES=list\nCOMPRESS=gzip\n' >"$R/etc/initramfs-tools/conf.d/ipitrace"
	printf '%s\n' "${INITRD_MODULES[@]}" >>"$R/etc/initramfs-tools/modules"

	# 6. The kernel and its headers, exactly the version resolved above.
	log "installing linux-image-$KVER and its headers ($KPKG_VERSION)"
	in_root apt-get update -q >&2 || unbuildable "apt-get update in the image failed"
	in_root apt-get install -y -q --no-install-recommends \
		"linux-image-$KVER=$KPKG_VERSION" "linux-headers-$KVER=$KPKG_VERSION" >&2 ||
		unbuildable "cannot install linux-image-$KVER=$KPKG_VERSION (the mirror has moved on? apt-get update here)"

	# 7. ipitrace-dkms, as a user installs it: apt builds it with DKMS.
	log "installing $(basename "$DEB") (DKMS build for $KVER)"
	cp "$DEB" "$R/tmp/"
	dkms_log() {
		local l="$R/var/lib/dkms/$DKMS_NAME/$DKMS_VERSION/build/make.log"
		if [[ -f $l ]]; then
			log "DKMS make.log:"
			cat "$l" >&2
		fi
	}
	in_root apt-get install -y -q --no-install-recommends "/tmp/$(basename "$DEB")" >&2 ||
		{ dkms_log; die "apt-get install $(basename "$DEB") failed"; }
	# The postinst builds for the newest kernel; say so for this one.
	in_root dkms install -m "$DKMS_NAME" -v "$DKMS_VERSION" -k "$KVER" >&2 ||
		{ dkms_log; die "DKMS could not build $DKMS_NAME $DKMS_VERSION for $KVER"; }
	ko=$(compgen -G "$R/lib/modules/$KVER/updates/dkms/$DKMS_NAME.ko*" | head -n 1 || true)
	[[ -n $ko ]] || { dkms_log; die "no $DKMS_NAME.ko for $KVER after the DKMS build"; }
	rm "$R/tmp/$(basename "$DEB")"
	log "DKMS built ${ko#"$R"}"

	# 8. Load it at boot, as the package's example says; the test driver.
	cp "$R/usr/share/doc/ipitrace-dkms/examples/ipitrace-modules-load.conf" \
		"$R/etc/modules-load.d/ipitrace.conf" ||
		die "ipitrace-dkms carries no ipitrace-modules-load.conf example"
	install -m 0755 "$DRIVER" "$R/usr/local/sbin/ipitrace-test-driver"
	install -m 0644 "$UNIT" "$R/etc/systemd/system/ipitrace-test.service"
	in_root systemctl enable ipitrace-test.service >&2
	# The driver writes to ttyS0: no getty there.  No timers doing
	# maintenance while a test runs.
	in_root systemctl mask serial-getty@ttyS0.service apt-daily.timer \
		apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer dpkg-db-backup.timer >&2
	passwd -R "$R" -d root >/dev/null

	# 9. Check the image's kernel and initrd, record what is installed,
	#    shrink.
	[[ -f $R/boot/vmlinuz-$KVER && -f $R/boot/initrd.img-$KVER ]] ||
		die "no /boot/vmlinuz-$KVER or initrd.img-$KVER in the image"
	got=$(in_root dpkg-query -W -f='${Version}' "linux-image-$KVER")
	[[ $got == "$KPKG_VERSION" ]] || die "linux-image-$KVER is $got, not $KPKG_VERSION"
	in_root dpkg-query -W -f='${Package} ${Version}\n' >"$WORK/packages.txt"
	# The download cache stays on the host for the next build.
	umount "$R/var/cache/apt/archives" || die "cannot unmount the package cache"
	in_root apt-get clean
	find "$R/usr/share/doc" -mindepth 1 -maxdepth 1 ! -name ipitrace-dkms -exec rm -rf {} +
	find "$R/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
	rm -rf "$R"/usr/share/man/* "$R"/usr/share/info/* "$R"/usr/share/lintian/*
	rm -f "$R/usr/sbin/policy-rc.d"
	rm -rf "$R"/var/lib/apt/lists/* "$R"/var/log/*.log "$R"/var/log/apt/* \
		"$R"/var/cache/debconf/*-old "$R"/tmp/*
	: >"$R/etc/machine-id"
	for m in $(mounted_under "$R"); do
		umount "$m" || die "cannot unmount $m"
	done

	# 10. ext4 filled from the tree (no loop device), then qcow2.
	used_mb=$(du -sm "$R" | cut -f1)
	size_mb=$((used_mb * 13 / 10 + 256))
	log "making a ${size_mb} MiB ext4 image of ${used_mb} MiB"
	mkfs.ext4 -q -F -L ipitrace-root -d "$R" "$WORK/root.raw" "${size_mb}M" ||
		die "mkfs.ext4 failed"
	qemu-img convert -O qcow2 "$WORK/root.raw" "$WORK/disk.qcow2" || die "qemu-img failed"

	rm -rf "$OUT"
	mkdir -p "$OUT"
	install -m 0644 "$R/boot/vmlinuz-$KVER" "$KERNEL"
	install -m 0644 "$R/boot/initrd.img-$KVER" "$INITRD"
	install -m 0644 "$WORK/disk.qcow2" "$IMAGE"
	install -m 0644 "$WORK/packages.txt" "$OUT/packages.txt"
	echo "$KVER $KPKG_VERSION" >"$OUT/complete"
	chmod 0755 "$OUT"
	log "built into $OUT in $((SECONDS - t0)) s ($(du -sh "$IMAGE" | cut -f1) image)"
	# Keep the two newest builds.
	ls -dt "$CACHE"/debian12-*/complete 2>/dev/null | tail -n +3 | while read -r old; do
		rm -rf "$(dirname "$old")"
	done
fi

echo "KVER=$KVER" >&3
echo "KERNEL=$KERNEL" >&3
echo "INITRD=$INITRD" >&3
echo "IMAGE=$IMAGE" >&3
