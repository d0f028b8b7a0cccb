#!/usr/bin/env bash
# One device call: where a batch-1 decode step's time goes (session 13). Builds the addon (sm_90a,
# with bench_kernels), then for the 1B, the 4B and the 4B with q4_0 layers: tools/bench/decode-step.mjs
# (graph replay alone, forward, forward + argmax readback, the head alone) and `gemma3 bench`'s
# per-request rate; then the layer_chain rows with and without their two add-norms (what folding
# the norms into the GEMVs could save at most). Pass extra bench filters as $1.
#   here: npx turbo run build && bash scripts/pack-dists.sh; device run, carry [".device",
#   ".dists.tar"]:  bash scripts/device-run.sh scripts/gpu-step-anatomy.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-step-anatomy}"
source scripts/device-env.sh
start_call
export CMAKE_CUDA_ARCHITECTURES=90a GEMMA3_BENCH=1
build_addon
echo "built at ${SECONDS}s"
bench_rows "$OUT/bench" "layer_chain${1:+|$1}"
for spec in 1b 4b 4b:q4_0; do
  tag=$(spec_tag "$spec")
  decode_step "$OUT/step-$tag" "$spec" --steps 100
  echo "step $tag: $(cat "$OUT/step-$tag.json") (${SECONDS}s)"
  cli_bench "$OUT/bench-$tag" "$spec"
done
echo "done at ${SECONDS}s (status $status)"
exit $status
