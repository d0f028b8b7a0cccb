#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md): builds the addon
# (sm_90a), runs the CUDA tests of the pending parts, then the A/Bs that decide their defaults.
# Under ~10 minutes on one H100/H200. Pending in session 7: the lane-per-block q-dot GEMV
# (gemv_qlane_kernel, GEMMA3_QDOT_LANE): its matmul cases, its kernel rows against the staged
# kernel, Nsight Compute's count of its instructions, then 4B q4_0 / q8_0 decode end to end.
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
vt matmul "" native/test/ops.cuda.test.ts -t "matmul x="
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
# Kernel rows, staged (0) then lane per block (1): graph replays, as the decode step runs them.
for v in 0 1; do
  GEMMA3_QDOT_LANE=$v timeout 150 "$bench" --filter "gemv" --graph-below 1000 \
    --md "$OUT/gemv-lane-$v.md" --json "$OUT/gemv-lane-$v.json" >"$OUT/gemv-lane-$v.txt" 2>&1 || status=1
  echo "GEMMA3_QDOT_LANE=$v (${SECONDS}s):"
  grep -E "^\| gemv" "$OUT/gemv-lane-$v.txt" | grep -E "q4_0|q8_0" | cut -d'|' -f2,3,4,5,7,8
done
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
timeout 100 "$ncu" --set full --import-source no -k regex:gemv_qlane --launch-skip 3 --launch-count 1 \
  "$bench" --filter "gemv M1 K2560 N10240 q4_0" --iters 3 --warmup 2 >"$OUT/ncu-qlane.txt" 2>&1
grep -E "Duration|DRAM Throughput|Executed Ipc Active|Issue Slots Busy|Executed Instructions  |Registers Per|Achieved Occupancy" "$OUT/ncu-qlane.txt"
echo "kernels done at ${SECONDS}s (status $status)"
OUT="$OUT/ab-q4" AB_VAR=GEMMA3_QDOT_LANE AB_VALUES="0 1" AB_BENCH="--batch 1 --prefill 0 --quantize q4_0" \
  bash scripts/gpu-ab.sh --models 4b --rounds 2 || status=1
OUT="$OUT/ab-q8" AB_VAR=GEMMA3_QDOT_LANE AB_VALUES="0 1" AB_BENCH="--batch 1 --prefill 0 --quantize q8_0" \
  bash scripts/gpu-ab.sh --models 4b,1b --rounds 1 || status=1
echo "done at ${SECONDS}s (status $status)"
exit $status
