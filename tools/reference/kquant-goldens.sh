#!/usr/bin/env bash
# Regenerates native/test/fixtures/kquant/ from llama.cpp's own K-quant reference code: fetches the
# prebuilt @node-llama-cpp/linux-x64 package (libggml-base.so) into a temp dir (not a dependency of
# this repo), compiles kquant_goldens.c and runs it. x86-64 Linux with gcc and npm.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../../native/test/fixtures/kquant"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent @node-llama-cpp/linux-x64@3.22.1 >/dev/null && tar xzf ./*.tgz)
lib="$tmp/package/bins/linux-x64/libggml-base.so"
gcc -O2 -std=gnu11 -o "$tmp/kquant_goldens" "$here/kquant_goldens.c" -ldl -lm
mkdir -p "$out"
"$tmp/kquant_goldens" "$lib" "$out"
