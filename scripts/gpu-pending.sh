#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md, session 5):
# builds the addon and bench_kernels (sm_90a), runs the CUDA tests of the pending parts, then the
# A/Bs that decide their defaults. Under ~8 minutes on one H100/H200 (case collection is 1.5 s).
#   here first: npx turbo run build && bash scripts/pack-dists.sh; optionally restore held-back
#   kernels (git show e9c9e69:native/kernels/cuda/attention_decode.cu > …; cca83e2's
#   matmul_gemv.cu), then device run, carry [".device", ".dists.tar"]:
#     bash scripts/gpu-pending.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-pending}"
mkdir -p "$OUT"
source scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
SECONDS=0
export CMAKE_CUDA_ARCHITECTURES=90a
(cd native && GEMMA3_BENCH=1 node scripts/build.mjs) >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "built at ${SECONDS}s"
status=0
vt() {  # NAME "VAR=VALUE ..." vitest-args...
  local name=$1 vars=$2
  shift 2
  env $vars GEMMA3_TEST_CUDA=1 timeout 240 node node_modules/vitest/vitest.mjs run "$@" \
    >"$OUT/tests-$name.log" 2>&1 || status=1
  echo "tests $name: $(grep -E 'Tests ' "$OUT/tests-$name.log" | tail -1 | tr -s ' ') (${SECONDS}s)"
  grep -E "^ *(×|FAIL)" "$OUT/tests-$name.log" | head -10
}
vt default "" native/test/ops.cuda.test.ts native/test/pdl.cuda.test.ts native/test/readback.test.ts \
  packages/model/test/device_ids.test.ts packages/generation/test/async_decode.test.ts \
  packages/model/test/graph.test.ts packages/model/test/parity.test.ts
vt qdot-two-launch GEMMA3_QDOT_FUSED=0 native/test/ops.cuda.test.ts -t matmul
vt pdl GEMMA3_PDL=1 native/test/ops.cuda.test.ts native/test/pdl.cuda.test.ts packages/model/test/graph.test.ts
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
for v in 0 1; do
  GEMMA3_PDL=$v timeout 120 "$bench" --filter layer_chain --graph-below 1000 >"$OUT/chain-pdl$v.txt" 2>&1 || status=1
  echo "layer_chain GEMMA3_PDL=$v: $(grep -E 'layer_chain' "$OUT/chain-pdl$v.txt" | tr -s ' ' | tr '\n' ';')"
done
AB_VAR=GEMMA3_ASYNC_DECODE AB_VALUES="0 1" OUT=$OUT/async bash scripts/gpu-ab.sh --models 1b,4b --rounds 2 || status=1
echo "done at ${SECONDS}s (status $status)"
exit $status
