#!/usr/bin/env bash
# Tensor parallelism on a machine of 2+ GPUs (issue 11), in one call: build the addon with CUDA and
# NCCL (the torch environment's NCCL), run the collective and tensor-parallel tests with ranks on
# cuda:0…N−1 (NCCL and the host fallback), then time decode at TP 1 vs 2 on a random checkpoint of
# the 4B shape (tools/reference/hf_decode_bench.py writes it). NVLink multicast stays off.
#   device run (kind nvidia-h100-x2), carry [".device", "native/dist", "packages/*/dist" (model,
#   kv-cache, generation, tokenizer, vision)]:   bash scripts/gpu-tp-check.sh [--no-bench]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-tp}"
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
if ! command -v node >/dev/null; then
  mkdir -p /tmp/bin && xz -dc .device/node.xz >/tmp/bin/node && chmod +x /tmp/bin/node
  export PATH=/tmp/bin:$PATH
fi
[ -d node_modules/vitest ] || tar -xJf .device/node_modules.tar.xz
SECONDS=0
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  nvidia-smi topo -m
} 2>&1 | tee "$OUT/gpu.txt"
nccl=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl
ls "$nccl/include" "$nccl/lib" 2>&1 | tee -a "$OUT/gpu.txt"

echo "== build (sm_90a, CUDA + NCCL)"
export GEMMA3_NCCL_ROOT="$nccl" CMAKE_CUDA_ARCHITECTURES=90a
(cd native && node scripts/build.mjs) >"$OUT/build.log" 2>&1 || {
  tail -40 "$OUT/build.log"
  exit 1
}
grep -E "gemma3:" "$OUT/build.log"
echo "build done at ${SECONDS}s"

echo "== tests (ranks on cuda:0…; GEMMA3_TEST_MULTI_GPU=1: fewer than 2 GPUs fails)"
GEMMA3_TEST_CUDA=1 GEMMA3_TEST_MULTI_GPU=1 timeout 200 node node_modules/vitest/vitest.mjs run \
  --reporter=verbose native/test/collective.test.ts packages/model/test/tp.test.ts \
  packages/generation/test/tp_scheduler.test.ts >"$OUT/tests.log" 2>&1
status=$?
grep -E "✓|×|FAIL|Error|Test Files|Tests |TP=" "$OUT/tests.log" | tail -60
echo "tests done at ${SECONDS}s (status $status)"

if [ "${1:-}" != "--no-bench" ]; then
  cfg=packages/model/test/fixtures/configs/gemma-3-4b-it.config.json
  ckpt=/tmp/gemma3-random-4b
  echo "== random 4B checkpoint"
  PYTHONUNBUFFERED=1 timeout 150 python3 tools/reference/hf_decode_bench.py "$cfg" "$ckpt" \
    --tokens 4 --batches 1 >"$OUT/hf.log" 2>&1 || tail -20 "$OUT/hf.log"
  echo "checkpoint done at ${SECONDS}s"
  echo "== decode b1: TP 1 (graph, eager) vs TP 2 (eager), all-reduce alone"
  timeout 150 node packages/model/bench/tp-decode.mjs "$ckpt" --tp 1,2 --steps 32 \
    --json "$OUT/tp-decode.json" 2>&1 | tee "$OUT/bench.log"
  if [ "$SECONDS" -lt 290 ]; then
    echo "== decode b16"
    timeout $((330 - SECONDS)) node packages/model/bench/tp-decode.mjs "$ckpt" --tp 1,2 --steps 16 \
      --batch 16 2>&1 | tee -a "$OUT/bench.log"
  fi
  echo "bench done at ${SECONDS}s"
fi
exit $status
