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
mkdir -p "$OUT"
source scripts/device-env.sh
gpu_header
SECONDS=0
export CMAKE_CUDA_ARCHITECTURES=90a GEMMA3_BENCH=1
build_addon
echo "built at ${SECONDS}s"
status=0
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
timeout 200 "$bench" --filter "layer_chain${1:+|$1}" --graph-below 1000 --json "$OUT/bench.json" \
  --md "$OUT/bench.md" >"$OUT/bench.log" 2>&1 || status=1
grep -E '^\|' "$OUT/bench.md" | cut -d'|' -f2,3,5,6 | tail -n +3
cfgs=packages/model/test/fixtures/configs
for spec in 1b 4b 4b:q4_0; do
  m=${spec%%:*} q=${spec#*:}
  [ "$q" = "$spec" ] && q=""
  tag=$m${q:+-$q}
  timeout 200 node tools/bench/decode-step.mjs "$cfgs/gemma-3-$m-it.config.json" --steps 100 \
    ${q:+--quantize $q} >"$OUT/step-$tag.json" 2>"$OUT/step-$tag.err" || { status=1; tail -5 "$OUT/step-$tag.err"; }
  echo "step $tag: $(cat "$OUT/step-$tag.json") (${SECONDS}s)"
  timeout 200 node apps/cli/dist/cli.js bench --model "random:$cfgs/gemma-3-$m-it.config.json" \
    --device cuda --batch 1 --prefill 0 ${q:+--quantize $q} --json "$OUT/bench-$tag.json" >"$OUT/bench-$tag.txt" 2>&1 || status=1
  echo "bench $tag: $(grep -E 'batch +1:' "$OUT/bench-$tag.txt" | tr -s ' ' | head -1) (${SECONDS}s)"
done
echo "done at ${SECONDS}s (status $status)"
exit $status
