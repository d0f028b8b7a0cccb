#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md): builds the addon
# (sm_90a), runs the CUDA tests of the pending parts, then the A/Bs that decide their defaults.
# Under ~8 minutes on one H100/H200. Session 6: the QKV GEMV epilogue (matmul_qk_norm_rope,
# GEMMA3_QKV_EPILOGUE) measured; now the decode attention's one-split edge, 12 -> 4 stages
# (GEMMA3_DECODE_ONE_SPLIT_STAGES): its CUDA cases, bench_kernels rows and the end-to-end A/B.
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
(cd native && GEMMA3_BENCH=1 node scripts/build.mjs) >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
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
vt attn "" native/test/ops.cuda.test.ts -t "attentionDecode"
vt model "" native/test/pdl.cuda.test.ts packages/model/test/graph.test.ts packages/model/test/parity.test.ts
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
for v in 12 4; do
  GEMMA3_DECODE_ONE_SPLIT_STAGES=$v timeout 120 "$bench" --filter "attention_decode b1" >"$OUT/attn-$v.txt" 2>&1 || status=1
  echo "one-split stages $v:"; grep -E "kv_len(16|64|96|128|256|1024) " "$OUT/attn-$v.txt" | awk -F'|' '{print $3, $5}'
done
AB_VAR=GEMMA3_DECODE_ONE_SPLIT_STAGES AB_VALUES="12 4" OUT=$OUT/split bash scripts/gpu-ab.sh --models 1b,4b --rounds 2 || status=1
echo "done at ${SECONDS}s (status $status)"
exit $status
