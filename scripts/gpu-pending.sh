#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md): builds the addon
# (sm_90a), runs the CUDA tests of the pending parts, then the A/Bs that decide their defaults.
# Under ~10 minutes on one H100/H200. Pending since session 9 (its last call): the defaults as they
# landed, q4_0s taking 3 blocks a row in flight at g_qx where that saves a round of loads
# (launch_qlane; its kernels ran under GEMMA3_QS_GQX_U=3 in call 4): every matmul / geluMul /
# embedding / repack case, the model's CUDA tests, then decode at 1B and 4B (bf16, q4_0, q8_0).
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
vt ops "" native/test/ops.cuda.test.ts -t "matmul|geluMul|embedding|repack"
vt model "" packages/model/test/parity.test.ts packages/model/test/fuse.test.ts \
  packages/model/test/layout.test.ts packages/model/test/graph.test.ts
echo "tests done at ${SECONDS}s (status $status)"
# Decode with the defaults (GEMMA3_QS_GQX_U=0 is the default rule), one run a model and format.
OUT="$OUT/decode" AB_VAR=GEMMA3_QS_GQX_U AB_VALUES="0" bash scripts/gpu-ab.sh --models 1b,4b \
  --rounds 1 || status=1
for q in q4_0 q8_0; do
  OUT="$OUT/decode-$q" AB_VAR=GEMMA3_QS_GQX_U AB_VALUES="0" \
    AB_BENCH="--batch 1 --prefill 0 --quantize $q" bash scripts/gpu-ab.sh --models 4b --rounds 1 || status=1
done
echo "done at ${SECONDS}s (status $status)"
exit $status
