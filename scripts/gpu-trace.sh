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
source scripts/device-env.sh
start_call
export CMAKE_CUDA_ARCHITECTURES=90a
if [ ! -f native/build/Release/gemma3.node ]; then
  build_addon
fi
echo "built at ${SECONDS}s"
build_tracer
for spec in ${@:-1b 4b 4b:q4_0}; do
  tag=$(spec_tag "$spec")
  trace_step "$OUT/trace-$tag" "$spec"
  echo "== $tag: $(cat "$OUT/trace-$tag.json") (${SECONDS}s)"
  cat "$OUT/trace-$tag.md"
done
echo "done at ${SECONDS}s (status $status)"
exit $status
