#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Kernel coding style of the guest module: the kernel's own
# scripts/checkpatch.pl --strict, taken from Debian's linux-source package
# of the guest kernel's series (resolved at run time), must report
# 0 errors, 0 warnings and 0 checks for every file of guest-kmod/ and of
# the nested bed's test-only KVM fault module (harness/nested/kvm-fault/).
# Only checkpatch.pl and the two data files it reads are extracted, into
# $cache/checkpatch/linux-source-<series>/; the .deb is not kept.
#
#   scripts/check-guest-style.sh
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${IPITRACE_CACHE:-/var/cache/ipitrace}

log() { printf 'check-guest-style: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The guest kernel's series (e.g. 6.12) from the installed headers package
deps=$(dpkg-query -W -f='${Depends}' linux-headers-amd64 2>/dev/null) ||
	die "linux-headers-amd64 is not installed (run scripts/setup-deps.sh)"
KVER=$(sed -n 's/.*linux-headers-\([0-9]*\.[0-9]*\)\..*/\1/p' <<<"$deps")
[[ -n $KVER ]] || die "cannot tell the kernel series from: $deps"
DIR="$CACHE/checkpatch/linux-source-$KVER"
CP="$DIR/scripts/checkpatch.pl"

if [[ ! -f $CP ]]; then
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/ipt-lsrc.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	log "downloading linux-source-$KVER for checkpatch.pl"
	(cd "$tmp" && apt-get download "linux-source-$KVER" >&2) ||
		die "apt-get download linux-source-$KVER failed"
	deb=$(ls "$tmp"/linux-source-"$KVER"_*.deb)
	dpkg-deb --fsys-tarfile "$deb" |
		tar -C "$tmp" -x --wildcards './usr/src/linux-source-*.tar.xz'
	rm -f "$deb"
	mkdir -p "$DIR.new"
	tar -C "$DIR.new" --strip-components=1 -xJf "$tmp"/usr/src/linux-source-*.tar.xz \
		--wildcards '*/scripts/checkpatch.pl' '*/scripts/spelling.txt' \
		'*/scripts/const_structs.checkpatch'
	[[ -f $DIR.new/scripts/checkpatch.pl ]] || die "no checkpatch.pl in linux-source-$KVER"
	rm -rf "$DIR"
	mv "$DIR.new" "$DIR"
fi

cd "$REPO"
files=(guest-kmod/*.c guest-kmod/*.h harness/nested/kvm-fault/*.c harness/nested/kvm-fault/*.h)
out=$(perl "$CP" --no-tree --strict --show-types -f "${files[@]}" 2>&1) || true
bad=$(grep -E '^total: ' <<<"$out" | grep -v '^total: 0 errors, 0 warnings, 0 checks,' || true)
n=$(grep -c '^total: ' <<<"$out")
if [[ -n $bad || $n != "${#files[@]}" ]]; then
	printf '%s\n' "$out" >&2
	die "checkpatch --strict is not clean (linux-source-$KVER)"
fi
log "checkpatch --strict (linux-source-$KVER): ${#files[@]} files, 0 errors, 0 warnings, 0 checks"
