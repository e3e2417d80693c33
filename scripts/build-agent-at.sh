#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Build the agent as it was at an earlier commit, for scripts/equiv-agent.py
# (does this build judge as that one did?).  Cached by commit under
# ${IPITRACE_CACHE:-/var/cache/ipitrace}/agent-<commit>; prints the path of
# its ipitrace binary (make_snapshot beside it).
#   scripts/build-agent-at.sh COMMIT
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
[[ $# -eq 1 ]] || { echo "usage: $0 COMMIT" >&2; exit 2; }
commit=$(git -C "$repo" rev-parse --verify --quiet "$1^{commit}") ||
	{ echo "build-agent-at: $1: no such commit in $repo (a shallow clone?)" >&2; exit 3; }
out="${IPITRACE_CACHE:-/var/cache/ipitrace}/agent-$commit"
if [[ -x $out/ipitrace && -x $out/make_snapshot ]]; then
	echo "$out/ipitrace"
	exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/src"
git -C "$repo" archive "$commit" | tar -x -C "$tmp/src"
meson setup "$tmp/build" "$tmp/src" -Dbench=disabled >&2
ninja -C "$tmp/build" host-agent/ipitrace host-agent/make_snapshot >&2
mkdir -p "$out.tmp"
cp "$tmp/build/host-agent/ipitrace" "$tmp/build/host-agent/make_snapshot" "$out.tmp/"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out/ipitrace"
