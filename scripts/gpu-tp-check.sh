#!/usr/bin/env bash
# Tensor parallelism on a machine of 2+ GPUs (issue 11), in one call: build the addon with CUDA and
# NCCL (the torch environment's NCCL), run the collective and tensor-parallel tests with ranks on
# cuda:0…N−1 (NCCL and the host fallback; graph-replayed decode against eager), then time decode
# at TP 1 vs 2 (and 4), graph and eager, batch 1 and 64, on random bf16 weights generated on the GPUs at
# the 4B and the 27B shapes (packages/model/bench/tp-decode.mjs random:CONFIG; no checkpoint is
# written: the loaders are covered by the tests). NVLink multicast stays off.
#   bash scripts/pack-dists.sh here, then device run (kind nvidia-h100-x2 or -x4: TP 4 where 4 GPUs are
#   visible), carry [".device", ".dists.tar"]:   bash scripts/gpu-tp-check.sh [--no-bench]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-tp}"
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NCCL_DEBUG=WARN
source scripts/device-env.sh  # the carried Node, node_modules and dists
SECONDS=0
ngpu=$(nvidia-smi -L | wc -l)
tps=1,2
[ "$ngpu" -ge 4 ] && tps=1,2,4
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

# Which settings let NCCL all-reduces be recorded into the ranks' decode graphs: the defaults
# (ThreadLocal capture, NCCL graph mixing and registration off), then variants (NCCL's own defaults,
# relaxed capture, connections made at init, cudaMalloc buffers); the first that captures with
# replay == eager is exported for the tests and the benchmarks. probe.log keeps every answer.
echo "== graph capture probe (tiny-1b, NCCL, TP 2)"
chosen=none
for settings in "" "NCCL_RUNTIME_CONNECT=0" "NCCL_GRAPH_MIXING_SUPPORT=1 NCCL_GRAPH_REGISTER=1" \
  "GEMMA3_CAPTURE_MODE=relaxed" "NCCL_RUNTIME_CONNECT=0 GEMMA3_CAPTURE_MODE=relaxed" \
  "NCCL_RUNTIME_CONNECT=0 NCCL_GRAPH_MIXING_SUPPORT=1 NCCL_GRAPH_REGISTER=1 GEMMA3_CAPTURE_MODE=relaxed" \
  "GEMMA3_CUDA_MALLOC=sync NCCL_RUNTIME_CONNECT=0 NCCL_CUMEM_ENABLE=0 GEMMA3_CAPTURE_MODE=relaxed"; do
  env $settings timeout 25 node packages/model/bench/tp-graph-probe.mjs >/tmp/probe.out 2>&1
  echo "[$settings] $(grep -v '^NCCL version' /tmp/probe.out | tail -3)" | tee -a "$OUT/probe.log"
  if grep -q '"ok":true' /tmp/probe.out; then
    chosen="$settings"
    break
  fi
done
echo "probe: settings that capture: [${chosen}] (done at ${SECONDS}s)"
[ "$chosen" != none ] && [ -n "$chosen" ] && export $chosen

echo "== tests (ranks on cuda:0…; GEMMA3_TEST_MULTI_GPU=1: fewer than 2 GPUs fails)"
GEMMA3_TEST_CUDA=1 GEMMA3_TEST_MULTI_GPU=1 timeout 150 node node_modules/vitest/vitest.mjs run \
  --reporter=verbose native/test/collective.test.ts packages/model/test/tp.test.ts \
  packages/generation/test/tp_scheduler.test.ts >"$OUT/tests.log" 2>&1
status=$?
grep -E "✓|×|FAIL|Error|Test Files|Tests |TP=|graph vs eager|NCCL" "$OUT/tests.log" | tail -60
echo "tests done at ${SECONDS}s (status $status)"

if [ "${1:-}" != "--no-bench" ]; then
  # The 27B shape first (issue 11's numbers), then the 4B shape in the time left.
  cfgs=packages/model/test/fixtures/configs
  left=$((560 - SECONDS))
  echo "== decode 27B shape: TP $tps, graph and eager, batch 1 and 64 (${left}s left)"
  timeout "$left" node packages/model/bench/tp-decode.mjs "random:$cfgs/gemma-3-27b-it.config.json" \
    --tp "$tps" --batch 1,64 --steps 16 --json "$OUT/tp-decode-27b.json" 2>&1 | tee "$OUT/bench.log"
  echo "27B done at ${SECONDS}s"
  left=$((560 - SECONDS))
  if [ "$left" -gt 45 ]; then
    echo "== decode 4B shape (${left}s left)"
    timeout "$left" node packages/model/bench/tp-decode.mjs "random:$cfgs/gemma-3-4b-it.config.json" \
      --tp "$tps" --batch 1,64 --steps 24 --json "$OUT/tp-decode-4b.json" 2>&1 | tee -a "$OUT/bench.log"
  fi
  echo "bench done at ${SECONDS}s"
fi
exit $status
