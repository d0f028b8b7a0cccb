#!/usr/bin/env bash
# Where a decode step's time goes: Nsight Compute times every kernel of a short `gemma3 bench`
# (one at a time, so launch gaps and overlap are left out), and scripts/ncu-step-summary.mjs sums the
# kernels of one graph-replayed decode step by name. Compare the sum with the step time `gemma3
# bench` reports: the difference is what the launches between kernels cost.
#   bash scripts/pack-dists.sh here, then device run, carry [".device", ".dists.tar"]:
#     bash scripts/gpu-step-profile.sh 4b [--quantize q4_0] [more bench args]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-step-profile}"
mkdir -p "$OUT"
model="${1:?model size: 1b, 4b, 12b or 27b}"
shift
source scripts/device-env.sh
export CMAKE_CUDA_ARCHITECTURES=90a
(cd native && node scripts/build.mjs) >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
tag="$model${*:+-$(echo "$*" | tr -c 'a-z0-9_\n' '_')}"
cfg=packages/model/test/fixtures/configs/gemma-3-$model-it.config.json
timeout 400 "$ncu" --clock-control none --target-processes all --metrics gpu__time_duration.sum --csv \
  node apps/cli/dist/cli.js bench --model "random:$cfg" --batch 1 --prefill 0 --prompt 4 --tokens 6 --runs 1 "$@" \
  >"$OUT/ncu-$tag.csv" 2>"$OUT/ncu-$tag.err" || { tail -20 "$OUT/ncu-$tag.err"; exit 1; }
node scripts/ncu-step-summary.mjs "$OUT/ncu-$tag.csv" | tee "$OUT/summary-$tag.txt"
