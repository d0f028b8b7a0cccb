#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md): builds the addon
# (sm_90a), runs the CUDA tests of the pending parts, then the rows and A/Bs that decide defaults.
# Nothing is pending after session 10 (its call 9 ran RoPE's early inv_freq, now the default): as
# it stands this re-runs its call 6 on the opt-in prologue kernel (attention_decode_qkv with GEMMA3_DECODE_PROLOGUE=1): its bit-for-bit
# cases, the model's CUDA tests with it on and off, the attention_block rows (peer: the two
# launches) and the decode A/B. Put the next unverified GPU work here. ~5 minutes.
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
vt ops GEMMA3_DECODE_PROLOGUE=1 native/test/ops.cuda.test.ts -t "prologue"
vt model "" packages/model/test
vt model-on GEMMA3_DECODE_PROLOGUE=1 packages/model/test/parity.test.ts packages/model/test/graph.test.ts
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
GEMMA3_DECODE_PROLOGUE=1 "$bench" --graph-below 1000 --filter "attention_block|attention_decode b1 h4 " --json "$OUT/bench.json" --md "$OUT/bench.md" \
  >"$OUT/bench.log" 2>&1 || status=1
cat "$OUT/bench.md"
echo "bench at ${SECONDS}s"
cfgs=packages/model/test/fixtures/configs
for r in 1 2; do
  for m in 1b 4b; do
    for v in 0 1; do
      tag="$m-prologue-$v-r$r"
      GEMMA3_DECODE_PROLOGUE=$v timeout 150 node apps/cli/dist/cli.js bench --model "random:$cfgs/gemma-3-$m-it.config.json" \
        --device cuda --batch 1 --prefill 0 --json "$OUT/$tag.json" >"$OUT/$tag.txt" 2>&1 || status=1
      echo "$tag: $(grep -E 'batch +[0-9]+:' "$OUT/$tag.txt" | tr -s ' ') (${SECONDS}s)"
    done
  done
done
echo "done at ${SECONDS}s (status $status)"
exit $status
