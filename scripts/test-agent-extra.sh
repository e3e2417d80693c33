#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Extra agent checks, called by ./test after the normal build and tests:
#   1. the agent's unit/CLI/golden tests built with ASan + UBSan (gcc);
#   2. the libFuzzer target (clang-14, -fsanitize=fuzzer,address,undefined)
#      over region decoding + tracking, including the mutate-while-reading
#      mode, for a short budget (IPITRACE_FUZZ_SECONDS, default 30).
# Installs nothing: the packages (clang, libclang-rt-14-dev, catch2, ...)
# come from scripts/setup-deps.sh.  Build dirs: $IPITRACE_EXTRA_BUILD
# (default build-extra/ in the repo).  Exit status: non-zero on any failure.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${IPITRACE_EXTRA_BUILD:-$repo/build-extra}"
fuzz_seconds="${IPITRACE_FUZZ_SECONDS:-30}"
mkdir -p "$out"

echo "== agent: ASan+UBSan unit tests"
if [[ ! -f "$out/asan/build.ninja" ]]; then
	meson setup "$out/asan" "$repo" -Dbuildtype=debugoptimized \
		-Db_sanitize=address,undefined -Db_lundef=false -Dtests=enabled \
		-Dbench=disabled >/dev/null
fi
ninja -C "$out/asan" >/dev/null
# handle_sigbus=0: the agent catches SIGBUS itself (file truncated while
# mapped) and must be allowed to install its own handler.
ASAN_OPTIONS="handle_sigbus=0:allow_user_segv_handler=1:detect_leaks=1:abort_on_error=1" \
UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
	meson test -C "$out/asan" --print-errorlogs

echo "== agent: libFuzzer (${fuzz_seconds}s)"
if ! command -v clang++-14 >/dev/null; then
	echo "clang++-14 missing (scripts/setup-deps.sh installs clang)" >&2
	exit 1
fi
if [[ ! -f "$out/fuzz/build.ninja" ]]; then
	CC=clang-14 CXX=clang++-14 meson setup "$out/fuzz" "$repo" \
		-Dbuildtype=debugoptimized -Dfuzz=true \
		-Db_sanitize=address,undefined -Db_lundef=false \
		-Dtests=disabled -Dbench=disabled >/dev/null
fi
ninja -C "$out/fuzz" host-agent/region_fuzz host-agent/make_seeds >/dev/null
work="$out/fuzz-corpus"
rm -rf "$work" && mkdir -p "$work"
"$out/fuzz/host-agent/make_seeds" "$work"
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" \
UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
	"$out/fuzz/host-agent/region_fuzz" -max_total_time="$fuzz_seconds" \
	-max_len=16384 -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
	-artifact_prefix="$out/" \
	"$work" "$repo/host-agent/fuzz/corpus" 2>&1 | tail -n 15
echo "== agent extra checks: OK"
