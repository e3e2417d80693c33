#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Build ipitrace-dkms_VERSION_all.deb, the guest module as Debian's DKMS
# packages carry one: the module source with the shared record format
# inside it (abi/ipitrace_abi.h), registered with dh_dkms
# (packaging/debian/).  Only the tracing module, ipitrace.ko: the sources
# of the test module (ipitrace_test*: load generator, self-tests, hang
# injection) stay out, and Kbuild builds it only where they are.  Cached by its inputs under
# ${IPITRACE_CACHE:-/var/cache/ipitrace}/dkms-<key>/; the last line of
# stdout is the .deb's path.
#
#   scripts/build-dkms-deb.sh
#
# In the guest: apt install ./ipitrace-dkms_*.deb (builds the module for
# every installed kernel that has headers), then `modprobe ipitrace`.
set -euo pipefail
exec 3>&1 1>&2
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${IPITRACE_CACHE:-/var/cache/ipitrace}
# The module's version: the one Debian version of the package.
VERSION=0.1.0
log() { printf 'build-dkms-deb: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
for tool in dpkg-buildpackage dh dh_dkms; do
	command -v "$tool" >/dev/null || die "$tool missing (setup-deps.sh: debhelper, dh-dkms)"
done
# shellcheck source=scripts/guest-kernel.sh
source "$REPO/scripts/guest-kernel.sh"  # module_sources_sha: the module's files, hashed
KMOD="$REPO/guest-kmod"
KEY=$({
	printf '%s\n' "$VERSION"
	module_sources_sha "$KMOD"
	sha256sum <"$REPO/abi/ipitrace_abi.h"
	(cd "$REPO" && find packaging -type f | LC_ALL=C sort | xargs sha256sum)
	sha256sum <"${BASH_SOURCE[0]}"
} | sha256sum | cut -c1-16)
OUT="$CACHE/dkms-$KEY"
DEB="$OUT/ipitrace-dkms_${VERSION}_all.deb"
if [[ -f $DEB ]]; then
	log "cached: $DEB"
	echo "$DEB" >&3
	exit 0
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STAGE="$WORK/ipitrace-$VERSION"
mkdir -p "$STAGE/src/abi"
find "$KMOD" -maxdepth 1 -type f \( -name '*.c' -o -name '*.h' -o -name Kbuild \) \
	! -name 'ipitrace_test*' -exec cp {} "$STAGE/src/" \;
cp "$REPO/abi/ipitrace_abi.h" "$STAGE/src/abi/"
cp -r "$REPO/packaging/debian" "$STAGE/debian"
cp -r "$REPO/packaging/examples" "$STAGE/examples"
cat >"$STAGE/debian/changelog" <<CHANGELOG
ipitrace ($VERSION) unstable; urgency=medium

  * Built from the ipitrace repository by scripts/build-dkms-deb.sh.

 -- ipitrace developers <dev@ipitrace.invalid>  Sun, 06 Dec 2026 00:00:00 +0000
CHANGELOG
log "building ipitrace-dkms $VERSION"
(cd "$STAGE" && dpkg-buildpackage -b -uc -us >&2) || die "dpkg-buildpackage failed"
[[ -f $WORK/ipitrace-dkms_${VERSION}_all.deb ]] || die "no .deb produced"
mkdir -p "$OUT.tmp"
cp "$WORK/ipitrace-dkms_${VERSION}_all.deb" "$OUT.tmp/"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
log "built $DEB"
echo "$DEB" >&3
