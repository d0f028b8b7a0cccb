#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md): builds the addon
# (sm_90a), runs the CUDA tests of the pending parts, then the A/Bs that decide their defaults.
# Under ~10 minutes on one H100/H200. Pending in session 7: the one-shot dense GEMV tiling
# (GEMMA3_GEMV_ONESHOT, M <= 2): its matmul cases, its kernel rows and layer chains against the
# streamed tiling, then the end-to-end A/B; and the grid_barrier rows (never run yet).
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
vt matmul "" native/test/ops.cuda.test.ts -t "matmul"
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
# Kernel rows, streamed (0) then one-shot (1): graph replays, as the decode step runs them.
for v in 0 1; do
  GEMMA3_GEMV_ONESHOT=$v timeout 150 "$bench" --filter gemv --graph-below 1000 \
    --md "$OUT/gemv-oneshot-$v.md" --json "$OUT/gemv-oneshot-$v.json" >"$OUT/gemv-oneshot-$v.txt" 2>&1 || status=1
  GEMMA3_GEMV_ONESHOT=$v timeout 60 "$bench" --filter layer_chain --graph-below 1000 \
    >"$OUT/layer-chain-oneshot-$v.txt" 2>&1 || status=1
  echo "GEMMA3_GEMV_ONESHOT=$v (${SECONDS}s):"
  grep -E "^\| (gemv_layer|layer_chain) " "$OUT/gemv-oneshot-$v.txt" "$OUT/layer-chain-oneshot-$v.txt" |
    grep -E "bf16|fp8" | cut -d'|' -f2,3,4,5,8
done
timeout 60 "$bench" --filter grid_barrier >"$OUT/grid-barrier.txt" 2>&1 || status=1
grep -E "^\| grid_barrier" "$OUT/grid-barrier.txt" | cut -d'|' -f3,5,6,7
echo "kernels done at ${SECONDS}s (status $status)"
OUT="$OUT/ab" AB_VAR=GEMMA3_GEMV_ONESHOT AB_VALUES="0 1" bash scripts/gpu-ab.sh --models 1b,4b --rounds 2 || status=1
echo "done at ${SECONDS}s (status $status)"
exit $status
