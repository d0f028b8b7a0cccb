#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md): builds the addon
# (sm_90a), runs the CUDA tests of the pending parts, then the A/Bs that decide their defaults.
# Nothing is pending after session 9: its last call (call 6) ran this script as it stands, the
# quantized head (`--quantize-head`, LoadOptions.quantizeHead): the layout tests on CUDA (their
# quantizeHead case repacks the q8_0 / q4_0 table into q8_0s / q4_0s), then decode with and
# without it. Put the next unverified GPU work here (its cases first, then the A/Bs). ~3 minutes.
#   here first: npx turbo run build && bash scripts/pack-dists.sh, then device run,
#   carry [".device", ".dists.tar"]:  bash scripts/device-run.sh scripts/gpu-pending.sh
#   (device-run.sh returns every output file in one results.tgz: a call returns at most 8 files)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-pending}"
mkdir -p "$OUT"
source scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
SECONDS=0
export CMAKE_CUDA_ARCHITECTURES=90a GEMMA3_BENCH=1
(cd native && node scripts/build.mjs) >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "built at ${SECONDS}s"
status=0
vt() {  # NAME "VAR=VALUE ..." vitest-args...
  local name=$1 vars=$2
  shift 2
  env $vars GEMMA3_TEST_CUDA=1 timeout 300 node node_modules/vitest/vitest.mjs run "$@" \
    >"$OUT/tests-$name.log" 2>&1 || status=1
  echo "tests $name: $(grep -E 'Tests ' "$OUT/tests-$name.log" | tail -1 | tr -s ' ') (${SECONDS}s)"
  grep -E "^ *(×|FAIL)" "$OUT/tests-$name.log" | head -10
}
vt layout "" packages/model/test/layout.test.ts
cfgs=packages/model/test/fixtures/configs
run() {  # MODEL TAG ARGS...
  local m=$1 tag=$2
  shift 2
  timeout 100 node apps/cli/dist/cli.js bench --model "random:$cfgs/gemma-3-$m-it.config.json" \
    --device cuda --batch 1 --prefill 0 "$@" --json "$OUT/$m-$tag.json" >"$OUT/$m-$tag.txt" 2>&1 || status=1
  echo "$m $tag: $(grep -E 'batch +[0-9]+:' "$OUT/$m-$tag.txt" | tr -s ' ') (${SECONDS}s)"
}
run 4b q4_0 --quantize q4_0
run 4b q4_0-head-q8_0 --quantize q4_0 --quantize-head q8_0
run 4b q4_0-head-q4_0 --quantize q4_0 --quantize-head q4_0
run 1b q4_0 --quantize q4_0
run 1b q4_0-head-q8_0 --quantize q4_0 --quantize-head q8_0
echo "done at ${SECONDS}s (status $status)"
exit $status
