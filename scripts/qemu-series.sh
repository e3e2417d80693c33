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

# The series carries the record format as QEMU carries an external header:
# a verbatim copy in include/standard-headers/ipitrace/ (added by
# scripts/update-ipitrace-headers.sh, which the series adds).  The copy
# in the patched tree $1 must be the repo's header $2 byte for byte.
qemu_series_check_abi() {
	local copy=$1/include/standard-headers/ipitrace/ipitrace_abi.h
	[[ -f $copy ]] || die "the series carries no $copy"
	cmp -s "$copy" "$2" || die "the series' copy of the record format differs from $2:" \
		"run scripts/update-ipitrace-headers.sh in QEMU and refresh the import patch"
}
