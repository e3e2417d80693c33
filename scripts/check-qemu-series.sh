#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Check the QEMU patch series (qemu-patches/series) the way a reviewer
# would, on the same QEMU 10.0.2 tarball that scripts/build-qemu.sh builds:
#   1. `git am` applies every patch, in order, to the pristine tree;
#   2. QEMU's own scripts/checkpatch.pl gives 0 errors and 0 warnings for
#      every patch (but the two every include/standard-headers/ import
#      gets, below);
#   3. qemu-system-x86_64 builds after every patch on its own (one build
#      directory, incremental after the first, ccache when installed);
#   4. every diff kept in results/qemu-diag/ applies on the final tree;
#   5. the series' copy of the record format is abi/ipitrace_abi.h, and
#      the series' qtest (tests/qtest/ipitrace-test) passes.
# A pass is remembered in $cache/series-ok-$key, key = sha256 of the QEMU
# build's cache key (scripts/build-qemu.sh: patches, ABI header, tarball),
# this script and the results/qemu-diag/ diffs, so an unchanged series is not rebuilt once per patch
# on every ./test.
#
#   scripts/check-qemu-series.sh [--force]
set -euo pipefail
umask 022
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PATCHES="$REPO/qemu-patches"
CACHE=${IPITRACE_CACHE:-/var/cache/ipitrace}
TARBALL=qemu_10.0.2+ds.orig.tar.xz
SRCDIR_NAME=qemu-10.0.2
JOBS=${IPITRACE_JOBS:-$(nproc)}
FORCE=0
[[ ${1:-} == --force ]] && FORCE=1

log() { printf 'check-qemu-series: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=scripts/qemu-series.sh
source "$REPO/scripts/qemu-series.sh"
qemu_series_files "$PATCHES"
# The key: that of the QEMU build of this series (scripts/build-qemu.sh:
# patches, ABI header, its own text and qemu-series.sh, tarball name)
# plus this script.
# Finding or building that QEMU also brings the build dependencies and the
# source tarball.
QEMU_BIN=$(bash "$REPO/scripts/build-qemu.sh" | tail -n 1)
QEMU_KEY=$(basename "$(dirname "$(dirname "$QEMU_BIN")")")
[[ $QEMU_KEY == qemu-* ]] || die "unexpected build-qemu.sh output: $QEMU_BIN"
DIAG=("$REPO"/results/qemu-diag/*.diff)
KEY=$({ printf '%s\n' "$QEMU_KEY"; cat "${BASH_SOURCE[0]}" "${DIAG[@]}"; } | sha256sum | cut -d' ' -f1)
STAMP="$CACHE/series-ok-$KEY"
if [[ -f $STAMP && $FORCE == 0 ]]; then
	log "already checked: $(head -n 1 "$STAMP")"
	cat "$STAMP"
	exit 0
fi

[[ -f $CACHE/src/$TARBALL ]] || die "$CACHE/src/$TARBALL missing"

exec 9>"$CACHE/.series.lock"
flock 9
# Another run may have checked this series while we waited for the lock.
if [[ -f $STAMP && $FORCE == 0 ]]; then
	log "checked concurrently: $(head -n 1 "$STAMP")"
	cat "$STAMP"
	exit 0
fi

# Fixed paths, laid out like build-qemu.sh's work dir, keep ccache hits.
WORK="$CACHE/series"
SRC="$WORK/$SRCDIR_NAME"
BUILD="$WORK/build"
rm -rf "$WORK"
mkdir -p "$WORK"
log "unpacking $TARBALL"
tar -C "$WORK" --no-same-owner -xf "$CACHE/src/$TARBALL"
git_id=(-C "$SRC" -c user.name="ipitrace check" -c user.email=dev@ipitrace.invalid
	-c safe.directory="$SRC" -c core.autocrlf=false)
# As build-qemu.sh: the +ds tarball has no edk2 images to unpack
sed -i 's/^\(    unpack_edk2_blobs = \)bzip2\.found()$/\1false/' "$SRC/meson.build"
git "${git_id[@]}" init -q
git "${git_id[@]}" add -A -f
git "${git_id[@]}" commit -q -m "pristine $TARBALL"

# checkpatch warns on every patch that adds a file under
# include/standard-headers/ (QEMU's own header updates get the same two
# warnings): a reminder to use the update script and that MAINTAINERS is
# not in the patch, which an import must not touch (mixing is an error).
# The one exception to "0 warnings": a patch that only adds files there,
# with exactly those two warnings and no error.
IMPORT_WARNINGS='WARNING: added, moved or deleted file(s), does MAINTAINERS need updating?
WARNING: added, moved or deleted file(s) imported from Linux, are you using scripts/update-linux-headers.sh?'
import_warnings_only() {
	local total=$1 warnings=$2 files
	[[ $total == "total: 0 errors, 2 warnings,"* && $warnings == "$IMPORT_WARNINGS" ]] ||
		return 1
	files=$(git "${git_id[@]}" show --format= --name-only HEAD)
	! grep -qv '^include/standard-headers/' <<<"$files"
}

# 1 + 2: apply and checkpatch every patch
report=()
for f in "${PATCH_FILES[@]}"; do
	name=$(basename "$f")
	git "${git_id[@]}" am -q "$f" >&2 ||
		die "$name does not apply on top of the patches before it"
	out=$(cd "$SRC" && perl scripts/checkpatch.pl --no-tree "$f" 2>&1) || true
	total=$(grep -E '^total: ' <<<"$out" | tail -n 1)
	warnings=$(grep -E '^WARNING: ' <<<"$out" || true)
	if [[ $total != "total: 0 errors, 0 warnings,"* ]] &&
		! import_warnings_only "$total" "$warnings"; then
		printf '%s\n' "$out" >&2
		die "checkpatch: $name: ${total:-no verdict}"
	fi
	report+=("$name: applies; checkpatch $total")
done
log "all ${#PATCH_FILES[@]} patches apply and are checkpatch clean"

# 3: build after every patch
if command -v ccache >/dev/null && [[ -d /usr/lib/ccache ]]; then
	export PATH="/usr/lib/ccache:$PATH"
	export CCACHE_DIR="$CACHE/ccache" CCACHE_BASEDIR="$WORK" CCACHE_NOHASHDIR=1
	export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-2G}
fi
mapfile -t COMMITS < <(git "${git_id[@]}" rev-list --reverse HEAD~${#PATCH_FILES[@]}..HEAD)
configured=0
for i in "${!COMMITS[@]}"; do
	name=$(basename "${PATCH_FILES[$i]}")
	git "${git_id[@]}" checkout -q "${COMMITS[$i]}"
	if ((!configured)); then
		mkdir -p "$BUILD"
		(cd "$BUILD" && "$SRC/configure" --python=/usr/bin/python3 \
			--target-list=x86_64-softmmu --enable-fdt=system \
			--disable-install-blobs --disable-docs --disable-werror \
			--firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu \
			--disable-download \
			--disable-debug-info --disable-tools --disable-guest-agent \
			--disable-gtk --disable-sdl --disable-plugins \
			--disable-virtfs --disable-xen --audio-drv-list= >&2) ||
			die "configure failed at $name"
		configured=1
	fi
	start=$SECONDS
	ninja -C "$BUILD" -j "$JOBS" qemu-system-x86_64 >"$WORK/ninja.log" 2>&1 || {
		tail -n 40 "$WORK/ninja.log" >&2
		die "qemu-system-x86_64 does not build after $name"
	}
	log "$name: builds ($((SECONDS - start)) s)"
	report[$i]="${report[$i]}; qemu-system-x86_64 builds"
done

# 4: the throwaway diagnosis diffs kept in results/qemu-diag/ still apply
# on the final tree (a diff that does not is deleted, not kept).
for d in "${DIAG[@]}"; do
	git "${git_id[@]}" apply --check "$d" >&2 ||
		die "results/qemu-diag/$(basename "$d") no longer applies to the series: delete it"
	report+=("results/qemu-diag/$(basename "$d"): applies on the final tree")
done

# 5: the record format the series carries is the repo's; QEMU's own test
# of the object (tests/qtest/ipitrace-test) passes on the final tree, and
# the benchmark builds.
qemu_series_check_abi "$SRC" "$REPO/abi/ipitrace_abi.h"
ninja -C "$BUILD" -j "$JOBS" tests/qtest/ipitrace-test tests/bench/ipitrace-bench \
	>"$WORK/ninja.log" 2>&1 || {
	tail -n 40 "$WORK/ninja.log" >&2
	die "tests/qtest/ipitrace-test or tests/bench/ipitrace-bench does not build"
}
# The +ds tarball has no firmware, and a binary run from its build tree
# does not look in --firmwarepath: a wrapper (named like the binary, for
# qtest's architecture) points it at Debian's.
mkdir -p "$WORK/fw"
printf '#!/bin/sh\nexec %q -L /usr/share/seabios -L /usr/share/qemu -L /usr/lib/ipxe/qemu "$@"\n' \
	"$BUILD/qemu-system-x86_64" >"$WORK/fw/qemu-system-x86_64"
chmod +x "$WORK/fw/qemu-system-x86_64"
qtest_out=$(cd "$BUILD" && QTEST_QEMU_BINARY="$WORK/fw/qemu-system-x86_64" \
	timeout 300 ./tests/qtest/ipitrace-test 2>&1) || {
	printf '%s\n' "$qtest_out" >&2
	die "tests/qtest/ipitrace-test fails"
}
printf '%s\n' "$qtest_out" >&2
qtest_summary=$(grep -cE '^ok ' <<<"$qtest_out") || true
# Four cases: a test that ran none (no pc machine) proves nothing.
((qtest_summary == 4)) || die "tests/qtest/ipitrace-test ran $qtest_summary of its 4 cases"
log "tests/qtest/ipitrace-test: $qtest_summary cases ok"

{
	printf 'series %s checked %s\n' "$KEY" "$(date -u +%FT%TZ)"
	printf '%s\n' "${report[@]}"
	printf 'tests/qtest/ipitrace-test: %s cases ok on the final tree\n' "$qtest_summary"
} >"$STAMP.tmp"
mv "$STAMP.tmp" "$STAMP"
rm -rf "$WORK"
cat "$STAMP"
