#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Build Debian's QEMU 10.0.2 (bookworm-backports) with the ipitrace patch
# series (qemu-patches/) into a content-addressed cache, idempotently.
#
#   scripts/build-qemu.sh        -> prints the qemu-system-x86_64 path
#
# ipitrace-bench (the record-write microbenchmark of the series) is
# installed next to it.
# The last line of stdout is the absolute path of qemu-system-x86_64;
# everything else goes to stderr.  Cache root: ${IPITRACE_CACHE:-/var/cache/
# ipitrace}; the install goes to $cache/qemu-$key, where key = sha256 of the
# patches (in series order), abi/ipitrace_abi.h, this script (with
# scripts/qemu-series.sh, which it sources) and the QEMU source tarball
# name.  The record format comes in with the series, as QEMU carries
# external headers (include/standard-headers/ipitrace/, patch 0004): a
# series whose copy differs from abi/ipitrace_abi.h is refused (the header
# is in the key so that a change to it is checked, not served from cache).
# A build runs in $cache/work and is renamed into place only when complete,
# so an interrupted build leaves no half cache.
# If ccache is installed, it is used (with fixed paths, so rebuilds after
# a patch change only recompile what changed).
set -euo pipefail
umask 022

exec 3>&1 1>&2

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$REPO/scripts/build-qemu.sh"
PATCHES="$REPO/qemu-patches"
ABI="$REPO/abi/ipitrace_abi.h"
CACHE=${IPITRACE_CACHE:-/var/cache/ipitrace}
DEPS_STAMP=/var/lib/ipitrace/deps-stamp
DEPS_WAIT=${IPITRACE_DEPS_WAIT:-3600}
SRC_SUITE=bookworm-backports
# The series is written against exactly this tarball.
TARBALL=qemu_10.0.2+ds.orig.tar.xz
SRCDIR_NAME=qemu-10.0.2
JOBS=${IPITRACE_JOBS:-$(nproc)}

log() { printf 'build-qemu: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- cache key -------------------------------------------------------------
[[ -f $ABI ]] || die "missing $ABI"
SERIES_LIB="$REPO/scripts/qemu-series.sh"
# shellcheck source=scripts/qemu-series.sh
source "$SERIES_LIB"
qemu_series_files "$PATCHES"

KEY=$(
	{
		for f in "${PATCH_FILES[@]}"; do
			printf 'patch %s\n' "$(basename "$f")"
			cat "$f"
		done
		printf 'abi\n'
		cat "$ABI"
		printf 'script\n'
		cat "$SELF" "$SERIES_LIB"
		printf 'tarball %s\n' "$TARBALL"
	} | sha256sum | cut -d' ' -f1
)
PREFIX="$CACHE/qemu-$KEY"
BIN="$PREFIX/bin/qemu-system-x86_64"

if [[ -x $BIN ]]; then
	log "cached: $PREFIX"
	echo "$BIN" >&3
	exit 0
fi

# --- wait for build dependencies --------------------------------------------
waited=0
while [[ ! -f $DEPS_STAMP ]]; do
	((waited % 60 == 0)) && log "waiting for $DEPS_STAMP (setup-deps.sh)"
	((waited >= DEPS_WAIT)) && die "$DEPS_STAMP did not appear in ${DEPS_WAIT}s"
	sleep 5
	waited=$((waited + 5))
done
for tool in git ninja python3 cc pkg-config xz; do
	command -v "$tool" >/dev/null || die "$tool not installed (setup-deps.sh)"
done

mkdir -p "$CACHE" "$CACHE/src"
chmod 755 "$CACHE"

# One build at a time per cache; re-check the cache once we hold the lock.
exec 9>"$CACHE/.build.lock"
flock 9
if [[ -x $BIN ]]; then
	log "cached (built concurrently): $PREFIX"
	echo "$BIN" >&3
	exit 0
fi

# --- source tarball ---------------------------------------------------------
if [[ ! -f $CACHE/src/$TARBALL ]]; then
	dl=$(mktemp -d "$CACHE/src/dl.XXXXXX")
	log "downloading the qemu source tarball ($SRC_SUITE)"
	(cd "$dl" && apt-get source --tar-only -t "$SRC_SUITE" qemu >&2) ||
		die "apt-get source failed (deb-src $SRC_SUITE configured?)"
	[[ -f $dl/$TARBALL ]] ||
		die "expected $TARBALL, got: $(ls "$dl" | tr '\n' ' ')"
	mv "$dl/$TARBALL" "$CACHE/src/$TARBALL"
	rm -rf "$dl"
fi

# --- unpack and patch --------------------------------------------------------
# Fixed paths (not mktemp) keep ccache hits across builds.
WORK="$CACHE/work"
rm -rf "$WORK"
mkdir -p "$WORK"
SRC="$WORK/$SRCDIR_NAME"
BUILD="$WORK/build"
STAGE="$WORK/stage"

log "unpacking $TARBALL"
tar -C "$WORK" --no-same-owner -xf "$CACHE/src/$TARBALL"
[[ -d $SRC ]] || die "tarball did not unpack to $SRCDIR_NAME"

git_id=(-c user.name="ipitrace build" -c user.email=dev@ipitrace.invalid
	-c safe.directory="$SRC" -c core.autocrlf=false)
(
	cd "$SRC"
	git init -q
	git "${git_id[@]}" add -A -f
	git "${git_id[@]}" commit -q -m "pristine $TARBALL"
	log "applying ${#PATCH_FILES[@]} patches"
	if ! git "${git_id[@]}" am -q "${PATCH_FILES[@]}" >&2; then
		git "${git_id[@]}" am --show-current-patch=diff >&2 || true
		git "${git_id[@]}" am --abort || true
		die "the patch series does not apply to $TARBALL"
	fi
	qemu_series_check_abi "$SRC" "$ABI"
	# A .git makes configure default to -Werror: build like a release
	rm -rf .git
)

# The +ds tarball has no edk2 firmware images (pc-bios/edk2-*.fd.bz2);
# meson unpacks them whenever bzip2 is found and an edk2 target is built.
# We use the firmware of Debian's packages instead, so never unpack them.
sed -i 's/^\(    unpack_edk2_blobs = \)bzip2\.found()$/\1false/' "$SRC/meson.build"
grep -q '^    unpack_edk2_blobs = false$' "$SRC/meson.build" ||
	die "could not disable unpack_edk2_blobs in meson.build"

# --- configure and build ----------------------------------------------------
if command -v ccache >/dev/null && [[ -d /usr/lib/ccache ]]; then
	export PATH="/usr/lib/ccache:$PATH"
	export CCACHE_DIR="$CACHE/ccache"
	export CCACHE_BASEDIR="$WORK"
	export CCACHE_NOHASHDIR=1
	export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-2G}
	log "using ccache ($CCACHE_DIR)"
fi

mkdir -p "$BUILD"
log "configuring"
(
	cd "$BUILD"
	"$SRC/configure" \
		--python=/usr/bin/python3 \
		--target-list=x86_64-softmmu \
		--enable-fdt=system \
		--disable-install-blobs \
		--firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu \
		--prefix="$PREFIX" \
		--disable-docs \
		--disable-werror \
		--disable-download \
		--disable-debug-info \
		--disable-qom-cast-debug \
		--disable-tools \
		--disable-guest-agent \
		--disable-gtk \
		--disable-sdl \
		--disable-plugins \
		--disable-virtfs \
		--disable-xen \
		--disable-multiprocess \
		--disable-vhost-crypto \
		--disable-replication \
		--disable-bochs --disable-cloop --disable-dmg \
		--disable-parallels --disable-qed --disable-vdi --disable-vvfat \
		--audio-drv-list= >&2
) || die "configure failed"

log "building qemu-system-x86_64 and ipitrace-bench with $JOBS jobs"
start=$SECONDS
ninja -C "$BUILD" -j "$JOBS" qemu-system-x86_64 tests/bench/ipitrace-bench >&2 ||
	die "build failed"
log "built in $((SECONDS - start))s"

# Only the emulator is installed: firmware, option ROMs and keymaps come
# from Debian's qemu-system-data, seabios and ipxe-qemu (--firmwarepath).
mkdir -p "$STAGE/bin"
install -m 0755 "$BUILD/qemu-system-x86_64" "$STAGE/bin/"
# The record-write microbenchmark (scripts/bench-qemu.sh runs it)
install -m 0755 "$BUILD/tests/bench/ipitrace-bench" "$STAGE/bin/"
"$STAGE/bin/qemu-system-x86_64" --version >&2 ||
	die "the built binary does not run"
chmod -R a+rX "$STAGE"

rm -rf "$PREFIX.old"
[[ -e $PREFIX ]] && mv "$PREFIX" "$PREFIX.old"
mv "$STAGE" "$PREFIX"
rm -rf "$PREFIX.old" "$WORK"
log "installed $PREFIX"
echo "$BIN" >&3
