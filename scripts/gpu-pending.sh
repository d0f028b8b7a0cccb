#!/usr/bin/env bash
# EXPERIMENT (session 10, call 2): why the prologue kernel lost 805 -> 758 tok/s on the 1B while
# its attention_block row gained. GEMMA3_PROLOGUE_EXP bits: 1 RoPE's table after pdl_wait, 2 CTAs
# with no keys skip the heads, 4 the head loads before the ring's first copies, 8 no norm, 16 no
# RoPE table (8 and 16: wrong values, timing only), 32 the ring's first copies after the norms,
# 64 stage 0 before, the rest after. Call 3: the scratch moved into the ring.
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
for e in 32 64; do
  GEMMA3_PROLOGUE_EXP=$e GEMMA3_TEST_CUDA=1 timeout 200 node node_modules/vitest/vitest.mjs run native/test/ops.cuda.test.ts -t prologue \
    >"$OUT/tests-exp$e.log" 2>&1 || status=1
  echo "tests exp$e: $(grep -E 'Tests ' "$OUT/tests-exp$e.log" | tail -1 | tr -s ' ') (${SECONDS}s)"
done
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
for e in 0 32 64 68 40; do
  GEMMA3_PROLOGUE_EXP=$e "$bench" --graph-below 1000 --filter "attention_block" --md "$OUT/bench-exp$e.md" >"$OUT/bench-exp$e.log" 2>&1 || status=1
  echo "== exp $e"; grep "attention_block" "$OUT/bench-exp$e.md" | awk -F'|' '{print $3, "|", $5, "| peer", $11}'
done
echo "bench at ${SECONDS}s"
cfgs=packages/model/test/fixtures/configs
b() {  # TAG VARS...
  local tag=$1; shift
  env "$@" timeout 150 node apps/cli/dist/cli.js bench --model "random:$cfgs/gemma-3-1b-it.config.json" \
    --device cuda --batch 1 --prefill 0 --json "$OUT/$tag.json" >"$OUT/$tag.txt" 2>&1 || status=1
  echo "$tag: $(grep -E 'batch +[0-9]+:' "$OUT/$tag.txt" | tr -s ' ') (${SECONDS}s)"
}
for r in 1 2; do
  b 1b-off-r$r GEMMA3_DECODE_PROLOGUE=0
  for e in 0 32 68; do b 1b-exp$e-r$r GEMMA3_PROLOGUE_EXP=$e; done
done
echo "done at ${SECONDS}s (status $status)"
exit $status
