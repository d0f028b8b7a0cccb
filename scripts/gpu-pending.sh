#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md): builds the addon
# (sm_90a), runs the CUDA tests of the pending parts, then the rows and A/Bs that decide defaults.
# Pending (session 10, call 9): RoPE's inv_freq before pdl_wait in qk_norm_rope
# (GEMMA3_ROPE_EARLY, default on; =0 the table after the wait as before): its cases, the model's
# CUDA tests, the attention_block rows (their peer runs qk_norm_rope) and decode with it off / on.
# (After it lands this script goes back to re-running the prologue's check: see git history.)
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
vt ops "" native/test/ops.cuda.test.ts -t "qkNormRope|prologue"
vt model "" packages/model/test/graph.test.ts packages/model/test/parity.test.ts packages/model/test/chunked.test.ts
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
for v in 0 1; do
  GEMMA3_ROPE_EARLY=$v "$bench" --graph-below 1000 --filter "attention_block|layer_chain" --md "$OUT/bench-early$v.md" >/dev/null 2>&1 || status=1
  echo "== GEMMA3_ROPE_EARLY=$v"; grep -E "attention_block|layer_chain" "$OUT/bench-early$v.md" | awk -F'|' '{print $3, "|", $5, "| peer", $11}'
done
echo "bench at ${SECONDS}s"
cfgs=packages/model/test/fixtures/configs
for r in 1 2; do
  for m in 1b 4b; do
    for v in 0 1; do
      tag="$m-early-$v-r$r"
      GEMMA3_ROPE_EARLY=$v timeout 150 node apps/cli/dist/cli.js bench --model "random:$cfgs/gemma-3-$m-it.config.json" \
        --device cuda --batch 1 --prefill 0 --json "$OUT/$tag.json" >"$OUT/$tag.txt" 2>&1 || status=1
      echo "$tag: $(grep -E 'batch +[0-9]+:' "$OUT/$tag.txt" | tr -s ' ') (${SECONDS}s)"
    done
  done
done
echo "done at ${SECONDS}s (status $status)"
exit $status
