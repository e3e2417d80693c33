#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Configure (once) and build the host agent with meson into build/.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -f build/build.ninja ]]; then
	meson setup build >&2
fi
meson compile -C build >&2
echo "$PWD/build/host-agent/ipitrace"
