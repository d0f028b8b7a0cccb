#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md): builds the addon
# (sm_90a), runs the CUDA tests of the pending parts, then the A/Bs that decide their defaults.
# Under ~8 minutes on one H100/H200. Session 6: the QKV GEMV epilogue (matmul_qk_norm_rope,
# GEMMA3_QKV_EPILOGUE) at 40 registers (one wave), the 1B per-kernel profile, 4B q4_0/q8_0 end to
# end with this session's defaults (PDL, pipelined decoding).
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
vt model "" packages/model/test/graph.test.ts packages/model/test/parity.test.ts
AB_VAR=GEMMA3_QKV_EPILOGUE AB_VALUES="0 1" OUT=$OUT/qkv bash scripts/gpu-ab.sh --models 1b,4b --rounds 2 || status=1
OUT=$OUT/profile-1b bash scripts/gpu-step-profile.sh 1b | tail -16 || status=1
cfgs=packages/model/test/fixtures/configs
for q in q4_0 q8_0; do
  timeout 120 node apps/cli/dist/cli.js bench --model random:$cfgs/gemma-3-4b-it.config.json --quantize $q \
    --batch 1 --prefill 0 --json "$OUT/4b-$q.json" >"$OUT/4b-$q.txt" 2>&1 || status=1
  echo "4b $q: $(grep -E 'batch +1:' "$OUT/4b-$q.txt" | tr -s ' ')"
done
echo "nsys: $(command -v nsys || ls -d /opt/nvidia/nsight-systems* /usr/local/cuda/bin/nsys 2>/dev/null | head -3 | tr '\n' ' ')"
echo "done at ${SECONDS}s (status $status)"
exit $status
