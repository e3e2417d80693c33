#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Install every Debian package ipitrace needs (idempotent).
# Adds bookworm-backports and deb-src entries beside the existing Debian
# source list, using the same URIs, then installs build and test deps.
set -euo pipefail

SRC=/etc/apt/sources.list.d/ipitrace-backports.sources
STAMP=/var/lib/ipitrace/deps-stamp
PKGS=(
	build-essential pkg-config ninja-build git xz-utils zstd cpio curl
	python3-pycotap/bookworm-backports meson/bookworm-backports
	libfdt-dev libglib2.0-dev libpixman-1-dev libslirp-dev zlib1g-dev
	dpkg-dev
	catch2/bookworm-backports libcli11-dev nlohmann-json3-dev libfmt-dev
	libzstd-dev libbenchmark-dev clang llvm libclang-rt-14-dev
	libvirt-daemon/bookworm-backports libvirt-daemon-driver-qemu/bookworm-backports
	libvirt-clients/bookworm-backports python3-libvirt
	python3-pytest python3-matplotlib
	qemu-system-data/bookworm-backports qemu-system-x86/bookworm-backports
	qemu-system-common/bookworm-backports qemu-system-gui/bookworm-backports seabios/bookworm-backports ipxe-qemu
	busybox-static ccache openssh-server
	debhelper dh-dkms dkms
	debootstrap qemu-utils/bookworm-backports e2fsprogs
	libtracefs-dev libtraceevent-dev trace-cmd libbpf-dev bpftool
	linux-headers-amd64/bookworm-backports
)

# Beside them, the headers of Debian 12's own (stock) 6.1 kernel, which the
# test guest also runs (IPITRACE_GUEST_KERNEL=stock, scripts/guest-kernel.sh).
STOCK_HEADERS=stock-kernel-headers
want_stamp="$(printf '%s\n' "${PKGS[@]}" "$STOCK_HEADERS" | sha256sum | cut -c1-16)"
if [[ -f $STAMP && "$(cat "$STAMP")" == "$want_stamp" ]]; then
	exit 0
fi

if [[ ! -f $SRC ]]; then
	uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
	uri=${uri:-http://deb.debian.org/debian}
	cat >"$SRC" <<EOT
Types: deb deb-src
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: $uri
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOT
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${PKGS[@]}"
log() { echo "setup-deps: $*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=scripts/guest-kernel.sh
source "$(dirname "${BASH_SOURCE[0]}")/guest-kernel.sh"
stock=$(guest_stock_kver) || die "cannot resolve the stock Debian 12 kernel"
apt-get install -y -q --no-install-recommends "linux-headers-$stock"
mkdir -p "$(dirname "$STAMP")"
echo "$want_stamp" >"$STAMP"
