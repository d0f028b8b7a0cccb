#!/usr/bin/env bash
# One device call: an A/B of two builds of the addon (session 13). The working tree is B; the
# files under .ab-base/ (copies of the baseline's, named by basename, from native/kernels/cuda/)
# make A. Both are built (A incrementally), kept as /tmp/{a,b}.node and chosen per run with
# GEMMA3_ADDON_PATH. Runs the PDL chain and the model's CUDA tests on B, then the graph-replayed
# decode step (tools/bench/decode-step.mjs --only replay) of 1B, 4B and 4B q4_0, A and B alternating
# over two rounds, `gemma3 bench` for 1B and 4B both ways, and a kernel trace of B's 1B and 4B steps.
#   here: mkdir .ab-base (git-excluded); cp the baseline files there; npx turbo run build && bash
#   scripts/pack-dists.sh; device run, carry [".device", ".dists.tar", ".ab-base"]:
#     bash scripts/device-run.sh scripts/gpu-ab-build.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-ab-build}"
mkdir -p "$OUT"
source scripts/device-env.sh
ls .ab-base/* >/dev/null 2>&1 || { echo "no .ab-base/: carry the baseline's files (header)"; exit 1; }
gpu_header
SECONDS=0
export CMAKE_CUDA_ARCHITECTURES=90a
build_addon build-b.log
cp native/build/Release/gemma3.node /tmp/b.node
echo "built B at ${SECONDS}s"
status=0
vt() {  # NAME vitest-args...
  local name=$1
  shift
  GEMMA3_ADDON_PATH=/tmp/b.node GEMMA3_TEST_CUDA=1 timeout 300 node node_modules/vitest/vitest.mjs run "$@" \
    >"$OUT/tests-$name.log" 2>&1 || status=1
  echo "tests $name: $(grep -E 'Tests ' "$OUT/tests-$name.log" | tail -1 | tr -s ' ') (${SECONDS}s)"
  grep -E "^ *(×|FAIL)" "$OUT/tests-$name.log" | head -10
}
vt pdl native/test/pdl.cuda.test.ts
vt model packages/model/test/parity.test.ts packages/model/test/graph.test.ts packages/model/test/chunked.test.ts
vt matmul native/test/ops.cuda.test.ts -t "(matmul x=bf16 w=(bf16|f32) M=1 |geluMul with the projection)"
for f in .ab-base/*; do cp "$f" "native/kernels/cuda/$(basename "$f")"; done
build_addon build-a.log
cp native/build/Release/gemma3.node /tmp/a.node
echo "built A at ${SECONDS}s"
cfgs=packages/model/test/fixtures/configs
for r in 1 2; do
  for spec in 1b 4b 4b:q4_0; do
    for v in a b; do
      m=${spec%%:*} q=${spec#*:}
      [ "$q" = "$spec" ] && q=""
      tag="step-${spec/:/-}-$v-r$r"
      GEMMA3_ADDON_PATH=/tmp/$v.node timeout 200 node tools/bench/decode-step.mjs "$cfgs/gemma-3-$m-it.config.json" \
        --steps 100 --only replay ${q:+--quantize $q} >"$OUT/$tag.json" 2>"$OUT/$tag.err" || { status=1; tail -3 "$OUT/$tag.err"; }
      echo "$tag: $(grep -o '"replay":{"median_us":[0-9.]*' "$OUT/$tag.json" | cut -d: -f3) µs (${SECONDS}s)"
    done
  done
done
for spec in 1b 4b 4b:q4_0; do
  for v in a b; do
    m=${spec%%:*} q=${spec#*:}
    [ "$q" = "$spec" ] && q=""
    tag="bench-${spec/:/-}-$v"
    GEMMA3_ADDON_PATH=/tmp/$v.node timeout 200 node apps/cli/dist/cli.js bench --model "random:$cfgs/gemma-3-$m-it.config.json" \
      --device cuda --batch 1 --prefill 0 ${q:+--quantize $q} --json "$OUT/$tag.json" >"$OUT/$tag.txt" 2>&1 || status=1
    echo "$tag: $(grep -E 'batch +1:' "$OUT/$tag.txt" | tr -s ' ' | head -1) (${SECONDS}s)"
  done
done
build_tracer
for m in 1b 4b; do
  GEMMA3_ADDON_PATH=/tmp/b.node CUDA_INJECTION64_PATH=/tmp/libg3trace.so G3_TRACE_OUT="$OUT/trace-$m-b.csv" timeout 200 \
    node tools/bench/decode-step.mjs "$cfgs/gemma-3-$m-it.config.json" --steps 3 --only replay >/dev/null 2>&1
  node tools/trace/step-timeline.mjs "$OUT/trace-$m-b.csv" --layer 20 >"$OUT/timeline-$m-b.md"
  gzip -f "$OUT/trace-$m-b.csv"
  head -16 "$OUT/timeline-$m-b.md"
done
echo "done at ${SECONDS}s (status $status)"
exit $status
