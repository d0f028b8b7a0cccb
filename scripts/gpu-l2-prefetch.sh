#!/usr/bin/env bash
# One device call (session 13): the L2 prefetch of the MLP weight during decode attention
# (GEMMA3_L2_PREFETCH=qkv|o, block.ts; ops.prefetchL2). Builds the addon (sm_90a), runs the PDL
# chain test (prefetch_l2 between a write and its read) and the model's CUDA parity / graph tests
# with the prefetch on, then A/Bs the graph-replayed decode step (tools/bench/decode-step.mjs
# --only replay, median of 5 × 100 steps) off / qkv / o for 1B, 4B and 4B q4_0 in two alternating
# rounds, `gemma3 bench` off / o, and a kernel trace of the 1B and 4B steps with the prefetch.
#   here: npx turbo run build && bash scripts/pack-dists.sh; device run, carry [".device",
#   ".dists.tar"]:  bash scripts/device-run.sh scripts/gpu-l2-prefetch.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-l2-prefetch}"
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
  env $vars GEMMA3_TEST_CUDA=1 timeout 300 node node_modules/vitest/vitest.mjs run "$@" \
    >"$OUT/tests-$name.log" 2>&1 || status=1
  echo "tests $name: $(grep -E 'Tests ' "$OUT/tests-$name.log" | tail -1 | tr -s ' ') (${SECONDS}s)"
  grep -E "^ *(×|FAIL)" "$OUT/tests-$name.log" | head -10
}
vt pdl "" native/test/pdl.cuda.test.ts
for v in o qkv; do
  vt model-$v GEMMA3_L2_PREFETCH=$v packages/model/test/parity.test.ts packages/model/test/graph.test.ts
done
cfgs=packages/model/test/fixtures/configs
step() {  # TAG SPEC VAR=VALUE...
  local tag=$1 spec=$2 m q
  shift 2
  m=${spec%%:*} q=${spec#*:}
  [ "$q" = "$spec" ] && q=""
  env "$@" timeout 200 node tools/bench/decode-step.mjs "$cfgs/gemma-3-$m-it.config.json" --steps 100 \
    --only replay ${q:+--quantize $q} >"$OUT/$tag.json" 2>"$OUT/$tag.err" || { status=1; tail -3 "$OUT/$tag.err"; }
  echo "$tag: $(grep -o '"replay":{"median_us":[0-9.]*' "$OUT/$tag.json" | cut -d: -f3) µs (${SECONDS}s)"
}
for r in 1 2; do
  for spec in 1b 4b 4b:q4_0; do
    for v in off qkv o; do
      step "step-${spec/:/-}-$v-r$r" "$spec" GEMMA3_L2_PREFETCH=$v
    done
  done
done
for mb in 16 48; do
  step "step-4b-o-mb$mb" 4b GEMMA3_L2_PREFETCH=o GEMMA3_L2_PREFETCH_MB=$mb
  step "step-1b-o-mb$mb" 1b GEMMA3_L2_PREFETCH=o GEMMA3_L2_PREFETCH_MB=$mb
done
for m in 1b 4b; do
  for v in off o; do
    GEMMA3_L2_PREFETCH=$v timeout 200 node apps/cli/dist/cli.js bench --model "random:$cfgs/gemma-3-$m-it.config.json" \
      --device cuda --batch 1 --prefill 0 --json "$OUT/bench-$m-$v.json" >"$OUT/bench-$m-$v.txt" 2>&1 || status=1
    echo "bench $m $v: $(grep -E 'batch +1:' "$OUT/bench-$m-$v.txt" | tr -s ' ' | head -1) (${SECONDS}s)"
  done
done
inc=$(dirname "$(find / -name cupti.h -not -path '/proc/*' 2>/dev/null | head -1)")
lib=$(dirname "$(find / -name 'libcupti.so' -not -path '/proc/*' 2>/dev/null | head -1)")
g++ -O2 -shared -fPIC -I"$inc" -I/usr/local/cuda/include tools/trace/cupti_trace.cc -o /tmp/libg3trace.so \
  -L"$lib" -lcupti -Wl,-rpath,"$lib" || exit 1
for m in 1b 4b; do
  GEMMA3_L2_PREFETCH=o CUDA_INJECTION64_PATH=/tmp/libg3trace.so G3_TRACE_OUT="$OUT/trace-$m-o.csv" timeout 200 \
    node tools/bench/decode-step.mjs "$cfgs/gemma-3-$m-it.config.json" --steps 3 --only replay >/dev/null 2>&1
  node tools/trace/step-timeline.mjs "$OUT/trace-$m-o.csv" --layer 20 >"$OUT/timeline-$m-o.md"
  gzip -f "$OUT/trace-$m-o.csv"
  head -14 "$OUT/timeline-$m-o.md"
done
echo "done at ${SECONDS}s (status $status)"
exit $status
