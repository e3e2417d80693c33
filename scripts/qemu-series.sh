# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
# Sourced by scripts/build-qemu.sh and scripts/check-qemu-series.sh (which
# define die()): the patches of $1/series, in order, as paths in
# PATCH_FILES.  Comments (#) and blank lines are skipped; a listed patch
# that is missing, or an empty series, is an error.
qemu_series_files() {
	local dir=$1 p
	local -a names
	[[ -f $dir/series ]] || die "missing $dir/series"
	mapfile -t names < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' \
		-e '/^$/d' "$dir/series")
	((${#names[@]})) || die "empty series file"
	PATCH_FILES=()
	for p in "${names[@]}"; do
		[[ -f $dir/$p ]] || die "series lists missing patch $p"
		PATCH_FILES+=("$dir/$p")
	done
}
