# SPDX-License-Identifier: GPL-2.0
# Sourced by scripts/build-guest.sh and scripts/build-l1.sh: the one place
# that says which Debian kernel the test guest and the nested bed's L1 run
# and where its image package comes from.  The sourcing script defines
# log() and die() and sets CACHE; its cache key hashes this file too.
#
#   guest_kernel        waits for scripts/setup-deps.sh, then sets KVER, KDIR
#                       and BUSYBOX.  KVER: IPITRACE_GUEST_KERNEL=backports
#                       (default: the installed linux-headers-amd64
#                       metapackage's, Debian 12 backports' 6.12), stock
#                       (Debian 12's own 6.1, guest_stock_kver) or bullseye
#                       (Debian 11's 5.10, guest_bullseye_kernel).  KMAKE:
#                       extra make arguments for that kernel's headers
#   guest_stock_kver    prints the stock Debian 12 kernel's ABI name
#   guest_kernel_deb    prints the linux-image-$KVER .deb in $CACHE/debs,
#                       downloading it first when missing
#   module_sources_sha DIR
#                       prints the sha256sum of each source and build file
#                       of the kernel module in DIR (for cache keys)

# Debian 11's 5.10 (the oldest kernel tested; Debian 12's archive has no
# 5.x): its headers, kbuild tools and image from Debian 11's security
# archive, unpacked under $CACHE/bullseye-$KVER (no dpkg: they are not
# installable beside Debian 12's), the headers' absolute include patched
# to there, and Debian 12's gcc for its gcc-10.
BULLSEYE_ARCHIVE=${IPITRACE_BULLSEYE_ARCHIVE:-http://security.debian.org/debian-security}
BULLSEYE_DIST=bullseye-security

# Prints the path of Debian 11's security archive's package index (fetched
# at most once a day).
bullseye_index() {
	local idx="$CACHE/debs/bullseye-Packages"
	if [[ ! -s $idx || -n $(find "$idx" -mmin +1440) ]]; then
		mkdir -p "$CACHE/debs"
		{ curl -fsS -m 120 "$BULLSEYE_ARCHIVE/dists/$BULLSEYE_DIST/main/binary-amd64/Packages.xz" |
			xz -dc >"$idx.tmp" && mv "$idx.tmp" "$idx"; } ||
			die "cannot fetch Debian 11's package index from $BULLSEYE_ARCHIVE"
	fi
	echo "$idx"
}

# Prints "Filename" of package $1 in Debian 11's security archive (newest).
bullseye_file() {
	local idx
	idx=$(bullseye_index)
	awk -v p="$1" '$1 == "Package:" { hit = ($2 == p) } hit && $1 == "Filename:" { print $2 }' \
		"$idx" | sort -V | tail -n 1
}

bullseye_fetch() {
	local f deb
	f=$(bullseye_file "$1")
	[[ -n $f ]] || die "Debian 11 has no package $1"
	deb="$CACHE/debs/$(basename "$f")"
	if [[ ! -s $deb ]]; then
		log "downloading $(basename "$f")"
		curl -fsS -m 600 -o "$deb.tmp" "$BULLSEYE_ARCHIVE/$f" && mv "$deb.tmp" "$deb" ||
			die "cannot download $BULLSEYE_ARCHIVE/$f"
	fi
	echo "$deb"
}

guest_bullseye_kernel() {
	local idx abi root deb
	idx=$(bullseye_index)
	abi=$(sed -n 's/^Package: linux-headers-\(5\.10\.0-[0-9]*\)-amd64$/\1/p' "$idx" | sort -V | tail -n 1)
	[[ -n $abi ]] || die "no linux-headers-5.10.0-N-amd64 in Debian 11's index"
	KVER=$abi-amd64
	root="$CACHE/bullseye-$KVER"
	if [[ ! -f $root/complete ]]; then
		rm -rf "$root"
		mkdir -p "$root"
		for p in "linux-headers-$KVER" "linux-headers-$abi-common" linux-kbuild-5.10; do
			deb=$(bullseye_fetch "$p")
			dpkg-deb -x "$deb" "$root" || die "cannot unpack $deb"
		done
		sed -i "s|/usr/src/|$root/usr/src/|" "$root/usr/src/linux-headers-$KVER/Makefile"
		touch "$root/complete"
	fi
	KDIR=$root/usr/src/linux-headers-$KVER
	KMAKE=(CC=gcc)
}

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
	KMAKE=()
	KDIR=
	case ${IPITRACE_GUEST_KERNEL:-backports} in
	backports)
		deps=$(dpkg-query -W -f='${Depends}' linux-headers-amd64 2>/dev/null) ||
			die "linux-headers-amd64 is not installed (run scripts/setup-deps.sh)"
		KVER=$(sed -n 's/.*linux-headers-\([^ ,]*\).*/\1/p' <<<"$deps")
		[[ -n $KVER ]] || die "cannot parse kernel version from '$deps'"
		;;
	bullseye)
		guest_bullseye_kernel
		;;
	stock)
		KVER=$(guest_stock_kver) ||
			die "cannot find bookworm's own linux-headers-amd64 (apt-get update?)"
		[[ -n $KVER ]] || die "cannot resolve the stock Debian 12 kernel"
		;;
	*)
		die "IPITRACE_GUEST_KERNEL=${IPITRACE_GUEST_KERNEL}: want backports, stock or bullseye"
		;;
	esac
	KDIR=${KDIR:-/usr/src/linux-headers-$KVER}
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
	if [[ ${IPITRACE_GUEST_KERNEL:-backports} == bullseye ]]; then
		bullseye_fetch "linux-image-$KVER-unsigned"
		return
	fi
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
