#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md): builds the addon
# (sm_90a), runs the CUDA tests of the pending parts, then the A/Bs that decide their defaults.
# Under ~10 minutes on one H100/H200. Pending in session 7: the q-dot prologue's warp-uniform exit
# and the lane-per-block q-dot GEMV (gemv_qlane_kernel, GEMMA3_QDOT_LANE) with x rounded in each
# CTA or once (GEMMA3_QDOT_FUSED=0): the q-dot matmul cases, kernel rows, 1B / 4B decode.
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
vt matmul-q "" native/test/ops.cuda.test.ts -t "w=q"
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
# Kernel rows: staged (LANE=0), lane per block with x rounded in each CTA (fused) or once in g_qx
# (FUSED=0): graph replays, as the decode step runs them.
for cfg in "GEMMA3_QDOT_LANE=0" "GEMMA3_QDOT_LANE=1" "GEMMA3_QDOT_LANE=1 GEMMA3_QDOT_FUSED=0"; do
  tag=$(echo "$cfg" | tr -c 'A-Z0-9\n' '_')
  env $cfg timeout 150 "$bench" --filter "gemv" --graph-below 1000 \
    --md "$OUT/gemv-$tag.md" --json "$OUT/gemv-$tag.json" >"$OUT/gemv-$tag.txt" 2>&1 || status=1
  echo "$cfg (${SECONDS}s):"
  grep -E "^\| gemv" "$OUT/gemv-$tag.txt" | grep -E "q4_0|q8_0" | cut -d'|' -f2,3,4,5,8
done
echo "kernels done at ${SECONDS}s (status $status)"
OUT="$OUT/ab-q4" AB_VAR=GEMMA3_QDOT_LANE AB_VALUES="0 1" AB_BENCH="--batch 1 --prefill 0 --quantize q4_0" \
  bash scripts/gpu-ab.sh --models 4b,1b --rounds 1 || status=1
OUT="$OUT/ab-q4-unfused" AB_VAR=GEMMA3_QDOT_FUSED AB_VALUES="0" AB_BENCH="--batch 1 --prefill 0 --quantize q4_0" \
  bash scripts/gpu-ab.sh --models 4b,1b --rounds 1 || status=1
OUT="$OUT/ab-q8" AB_VAR=GEMMA3_QDOT_LANE AB_VALUES="0 1" AB_BENCH="--batch 1 --prefill 0 --quantize q8_0" \
  bash scripts/gpu-ab.sh --models 4b,1b --rounds 1 || status=1
echo "done at ${SECONDS}s (status $status)"
exit $status
