#!/usr/bin/env bash
# One GPU call for the fused decoder layer (issue 9): build the addon for sm_90a, run the CUDA
# tests of the fused kernels and of the model (fused vs unfused, HF parity, graph == eager), then
# the 4B bf16 batch-1 decode: HF transformers (peer, writes the random checkpoint) and ours fused
# vs unfused in one process (packages/model/bench/fused-decode.mjs). Results under $OUT.
#   device run, carry [".device/node.xz", ".device/node_modules.tar.xz", "native/dist",
#     "packages/model/dist", "packages/kv-cache/dist", "packages/tokenizer/dist"]:
#     bash scripts/gpu-fused-decode.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-fused}"
mkdir -p "$OUT"
source scripts/device-env.sh  # the carried Node, node_modules and dists
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
t0=$SECONDS
echo "== build (sm_90a)"
(cd native && CMAKE_CUDA_ARCHITECTURES=90a node scripts/build.mjs) >"$OUT/build.log" 2>&1 || {
  tail -40 "$OUT/build.log"
  exit 1
}
echo "build: $((SECONDS - t0)) s"
echo "== CUDA kernel cases (CUDA vs CPU)"
export GEMMA3_TEST_CUDA=1
timeout 120 node node_modules/vitest/vitest.mjs run native/test/ops.cuda.test.ts \
  -t "qkNormRope|rmsnormAddRmsnorm|rmsnorm|rope" >"$OUT/tests-kernels.log" 2>&1
echo "kernels rc=$?"; grep -E "Test Files|Tests |FAIL|×" "$OUT/tests-kernels.log" | head -20
echo "== HF peer + checkpoint (4B shape, random bf16)"
ck=/tmp/gemma3-random-4b
timeout 200 python3 tools/reference/hf_decode_bench.py \
  packages/model/test/fixtures/configs/gemma-3-4b-it.config.json "$ck" --tokens 128 2>&1 |
  grep -v -i warn | tail -3 | tee "$OUT/hf.json"
echo "== ours: fused vs unfused decode step (graph, argmax on device)"
timeout 150 node packages/model/bench/fused-decode.mjs "$ck" --batch 1,8 --steps 64 --rounds 3 \
  --json "$OUT/fused-decode.json" 2>&1 | tee "$OUT/fused-decode.log"
echo "== model CUDA tests (fuse, parity, graph)"
timeout 150 node node_modules/vitest/vitest.mjs run packages/model/test/fuse.test.ts \
  packages/model/test/parity.test.ts packages/model/test/graph.test.ts >"$OUT/tests-model.log" 2>&1
echo "model rc=$?"; grep -E "✓|×|FAIL|Test Files|Tests " "$OUT/tests-model.log" | tail -30
echo "total: $((SECONDS - t0)) s"
