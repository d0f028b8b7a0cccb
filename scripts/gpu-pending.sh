#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md): builds the addon
# (sm_90a), runs the CUDA tests of the pending parts, then the A/Bs that decide their defaults.
# Under ~8 minutes on one H100/H200. Session 6: the QKV GEMV epilogue (matmul_qk_norm_rope,
# GEMMA3_QKV_EPILOGUE) with its RoPE tables off the tail, PDL now on by default; the per-kernel
# profile of a 4B step with the epilogue off and on.
#   here first: npx turbo run build && bash scripts/pack-dists.sh, then device run,
#   carry [".device", ".dists.tar"]:  bash scripts/gpu-pending.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-pending}"
mkdir -p "$OUT"
source scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
SECONDS=0
export CMAKE_CUDA_ARCHITECTURES=90a
(cd native && node scripts/build.mjs) >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "built at ${SECONDS}s"
status=0
vt() {  # NAME "VAR=VALUE ..." vitest-args...
  local name=$1 vars=$2
  shift 2
  env $vars GEMMA3_TEST_CUDA=1 timeout 200 node node_modules/vitest/vitest.mjs run "$@" \
    >"$OUT/tests-$name.log" 2>&1 || status=1
  echo "tests $name: $(grep -E 'Tests ' "$OUT/tests-$name.log" | tail -1 | tr -s ' ') (${SECONDS}s)"
  grep -E "^ *(×|FAIL)" "$OUT/tests-$name.log" | head -10
}
vt qkv "" native/test/ops.cuda.test.ts native/test/ops.bounds.test.ts -t "projection|qkNormRope|qk_norm_rope"
vt model "" native/test/pdl.cuda.test.ts packages/model/test/graph.test.ts packages/model/test/parity.test.ts \
  packages/generation/test/async_decode.test.ts
vt model-nopdl GEMMA3_PDL=0 native/test/pdl.cuda.test.ts packages/model/test/graph.test.ts
for ab in GEMMA3_QKV_EPILOGUE; do
  AB_VAR=$ab AB_VALUES="0 1" OUT=$OUT/$ab bash scripts/gpu-ab.sh --models 1b,4b --rounds 2 || status=1
done
for v in 0 1; do
  GEMMA3_QKV_EPILOGUE=$v OUT=$OUT/profile-qkv$v bash scripts/gpu-step-profile.sh 4b | tail -25 || status=1
done
echo "done at ${SECONDS}s (status $status)"
exit $status
