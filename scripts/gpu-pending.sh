#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md): builds the addon
# (sm_90a), runs the CUDA tests of the pending parts, then the A/Bs that decide their defaults.
# Under ~10 minutes on one H100/H200. Nothing is pending now; as last run (session 8, call 5):
# q8_0s (q8_0 in the split row layout that q4_0s introduced): every matmul / embedding / repack
# case, the layout test, the q8_0 / q8_0s rows, then the q8_0 decode A/B of GEMMA3_Q8_0_LAYOUT
# (gguf = blocks, split = q8_0s) at 1B / 4B / 27B, and 4B q4_0 once more (the shared code changed).
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
vt matmul "" native/test/ops.cuda.test.ts -t "matmul|embedding|repack"
vt layout "" packages/model/test/layout.test.ts
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
timeout 200 "$bench" --filter " q8_0" --graph-below 1000 --md "$OUT/rows-q8.md" >"$OUT/rows-q8.txt" 2>&1 || status=1
grep -E "^\| gemv" "$OUT/rows-q8.txt" | cut -d'|' -f2-5,7,8
echo "kernels done at ${SECONDS}s (status $status)"
OUT="$OUT/ab-q8" AB_VAR=GEMMA3_Q8_0_LAYOUT AB_VALUES="gguf split" \
  AB_BENCH="--batch 1 --prefill 0 --quantize q8_0" bash scripts/gpu-ab.sh --models 1b,4b,27b --rounds 2 || status=1
OUT="$OUT/ab-q4" AB_VAR=GEMMA3_Q4_0_LAYOUT AB_VALUES="gguf split" \
  AB_BENCH="--batch 1 --prefill 0 --quantize q4_0" bash scripts/gpu-ab.sh --models 4b --rounds 1 || status=1
echo "done at ${SECONDS}s (status $status)"
exit $status
