# SPDX-License-Identifier: GPL-2.0
# Sourced by scripts/build-guest.sh and scripts/build-l1.sh: the one place
# that says which Debian kernel the test guest and the nested bed's L1 run
# and where its image package comes from.  The sourcing script defines
# log() and die() and sets CACHE; its cache key hashes this file too.
#
#   guest_kernel        waits for scripts/setup-deps.sh, then sets KVER, KDIR
#                       and BUSYBOX.  KVER: IPITRACE_GUEST_KERNEL=backports
#                       (default: the installed linux-headers-amd64
#                       metapackage's, Debian 12 backports' 6.12) or stock
#                       (Debian 12's own 6.1, guest_stock_kver)
#   guest_stock_kver    prints the stock Debian 12 kernel's ABI name
#   guest_kernel_deb    prints the linux-image-$KVER .deb in $CACHE/debs,
#                       downloading it first when missing
#   module_sources_sha DIR
#                       prints the sha256sum of each source and build file
#                       of the kernel module in DIR (for cache keys)

# The stock Debian 12 kernel's ABI name (e.g. 6.1.0-57-amd64): what
# bookworm's own linux-headers-amd64 (not backports') depends on.
guest_stock_kver() {
	local ver
	ver=$(apt-cache madison linux-headers-amd64 |
		awk -F'|' '$2 !~ /bpo/ { gsub(/ /, "", $2); print $2; exit }')
	[[ -n $ver ]] || return 1
	apt-cache depends "linux-headers-amd64=$ver" |
		sed -n 's/.*Depends: linux-headers-\(.*\)$/\1/p' | head -n 1
}

guest_kernel() {
	local stamp=/var/lib/ipitrace/deps-stamp wait_s=${IPITRACE_DEPS_WAIT:-3600}
	local waited=0 deps
	while [[ ! -f $stamp ]]; do
		if ((waited == 0)); then
			log "waiting for $stamp (scripts/setup-deps.sh)"
		fi
		((waited >= wait_s)) && die "timed out waiting for $stamp"
		sleep 5
		waited=$((waited + 5))
	done
	case ${IPITRACE_GUEST_KERNEL:-backports} in
	backports)
		deps=$(dpkg-query -W -f='${Depends}' linux-headers-amd64 2>/dev/null) ||
			die "linux-headers-amd64 is not installed (run scripts/setup-deps.sh)"
		KVER=$(sed -n 's/.*linux-headers-\([^ ,]*\).*/\1/p' <<<"$deps")
		[[ -n $KVER ]] || die "cannot parse kernel version from '$deps'"
		;;
	stock)
		KVER=$(guest_stock_kver) ||
			die "cannot find bookworm's own linux-headers-amd64 (apt-get update?)"
		[[ -n $KVER ]] || die "cannot resolve the stock Debian 12 kernel"
		;;
	*)
		die "IPITRACE_GUEST_KERNEL=${IPITRACE_GUEST_KERNEL}: want backports or stock"
		;;
	esac
	KDIR=/usr/src/linux-headers-$KVER
	[[ -d $KDIR ]] || die "$KDIR missing"
	BUSYBOX=/bin/busybox
	[[ -x $BUSYBOX ]] || die "$BUSYBOX missing (busybox-static)"
	log "kernel $KVER"
}

module_sources_sha() {
	(cd "$1" && find . -maxdepth 1 -type f \
		\( -name '*.c' -o -name '*.h' -o -name Kbuild -o -name Makefile \) \
		-print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
}

guest_kernel_deb() {
	local pkgdir="$CACHE/debs" deb
	mkdir -p "$pkgdir"
	# Let apt fetch as its sandbox user _apt (quiet, no root download).
	chown _apt "$pkgdir" 2>/dev/null || true
	deb=$(ls "$pkgdir"/linux-image-"$KVER"{,-unsigned}_*.deb 2>/dev/null | head -n1 || true)
	if [[ -z $deb ]]; then
		log "downloading linux-image-$KVER"
		(cd "$pkgdir" && { apt-get download "linux-image-$KVER-unsigned" ||
			apt-get download "linux-image-$KVER"; }) >&2 ||
			die "cannot download linux-image-$KVER"
		deb=$(ls "$pkgdir"/linux-image-"$KVER"{,-unsigned}_*.deb 2>/dev/null |
			head -n1 || true)
	fi
	[[ -n $deb ]] || die "no linux-image-$KVER package in $pkgdir"
	echo "$deb"
}
