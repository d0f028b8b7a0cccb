#!/usr/bin/env bash
# One device call: the in-graph kernel timeline of a batch-1 decode step (session 13). Builds the
# addon (sm_90a) and tools/trace/cupti_trace.cc, then for each model (default: 1b 4b 4b:q4_0)
# traces tools/bench/decode-step.mjs --only replay and prints tools/trace/step-timeline.mjs's
# table (per kernel: duration and critical-path share of one replayed step).
#   here: npx turbo run build && bash scripts/pack-dists.sh; device run, carry [".device",
#   ".dists.tar"]:  bash scripts/device-run.sh scripts/gpu-trace.sh [1b 4b 4b:q4_0]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-trace}"
mkdir -p "$OUT"
source scripts/device-env.sh
gpu_header
SECONDS=0
export CMAKE_CUDA_ARCHITECTURES=90a
if [ ! -f native/build/Release/gemma3.node ]; then
  build_addon
fi
echo "built at ${SECONDS}s"
build_tracer
status=0
cfgs=packages/model/test/fixtures/configs
for spec in ${@:-1b 4b 4b:q4_0}; do
  m=${spec%%:*} q=${spec#*:}
  [ "$q" = "$spec" ] && q=""
  tag=$m${q:+-$q}
  CUDA_INJECTION64_PATH=/tmp/libg3trace.so G3_TRACE_OUT="$OUT/trace-$tag.csv" timeout 200 \
    node tools/bench/decode-step.mjs "$cfgs/gemma-3-$m-it.config.json" --steps 3 --only replay \
    ${q:+--quantize $q} >"$OUT/step-$tag.json" 2>"$OUT/step-$tag.err" || { status=1; tail -5 "$OUT/step-$tag.err"; }
  echo "== $tag: $(cat "$OUT/step-$tag.json") (${SECONDS}s)"
  node tools/trace/step-timeline.mjs "$OUT/trace-$tag.csv" --layer 20 | tee "$OUT/timeline-$tag.md"
  gzip -f "$OUT/trace-$tag.csv"
done
echo "done at ${SECONDS}s (status $status)"
exit $status
