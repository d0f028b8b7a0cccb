#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md): builds the addon
# (sm_90a), runs the CUDA tests of the pending parts, then the A/Bs that decide their defaults.
# Under ~10 minutes on one H100/H200. Pending at the end of session 7: the matmul cases with the
# one-shot dense GEMV (K <= 1280) and the lane q-dot kernel's auto choice (qdot_lane_auto), the
# lane kernel everywhere (GEMMA3_QDOT_LANE=1), the model graph / parity tests, then 1B / 4B decode
# A/Bs of both (bf16; q8_0, q4_0).
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
vt matmul-lane1 "GEMMA3_QDOT_LANE=1" native/test/ops.cuda.test.ts -t "w=q"
vt model "" packages/model/test/graph.test.ts packages/model/test/parity.test.ts
echo "tests done at ${SECONDS}s (status $status)"
OUT="$OUT/ab-bf16" AB_VAR=GEMMA3_GEMV_ONESHOT AB_VALUES="0 1" bash scripts/gpu-ab.sh --models 1b,4b --rounds 1 || status=1
for q in q8_0 q4_0; do
  OUT="$OUT/ab-$q" AB_VAR=GEMMA3_QDOT_LANE AB_VALUES="0 auto" AB_BENCH="--batch 1 --prefill 0 --quantize $q" \
    bash scripts/gpu-ab.sh --models 4b,1b --rounds 1 || status=1
done
echo "done at ${SECONDS}s (status $status)"
exit $status
