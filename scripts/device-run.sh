#!/usr/bin/env bash
# Runs one of the device scripts with its outputs in a scratch folder and hands them back as one
# archive: a device call returns at most 8 files from $OUT, and gpu-check.sh / gpu-bench.sh /
# gpu-ab.sh write dozens (session 6 lost most of one call's JSON that way). gpu-parallel.sh does
# the same for several scripts on several GPUs; this is the one-script, foreground form.
#   device run, carry [".device", ".dists.tar"]:
#     bash scripts/device-run.sh scripts/gpu-bench.sh [its arguments]
#   here: the call's files are console.log and results.tgz (tar -xzf it).
set -uo pipefail
cd "$(dirname "$0")/.."
dest="${OUT:?OUT must name the folder whose files come back}"
work="${DEVICE_RUN_DIR:-/tmp/device-run}"
rm -rf "$work"
mkdir -p "$work" "$dest"
OUT="$work" bash "$@" 2>&1 | tee "$dest/console.log"
rc=${PIPESTATUS[0]}
tar -czf "$dest/results.tgz" -C "$work" .
exit "$rc"
