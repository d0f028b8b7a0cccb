#!/usr/bin/env bash
# One device call: the persistent decode MLP block (session 14; kernels/cuda/mlp_block.cu). Builds
# the addon (sm_90a, with bench_kernels), runs its CUDA tests and the model's decode tests with it
# on (GEMMA3_MLP_BLOCK=1), the mlp_block rows with the first-tile preload on and off, then for each
# model (default: 1b 4b) the replayed step and `gemma3 bench` with the block off / on (two
# alternating rounds) and a kernel trace with it on.
#   here: npx turbo run build && bash scripts/pack-dists.sh; device run, carry [".device",
#   ".dists.tar"]:  bash scripts/device-run.sh scripts/gpu-mlp-block.sh [1b 4b]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-mlp-block}"
source scripts/device-env.sh
start_call
export CMAKE_CUDA_ARCHITECTURES=90a GEMMA3_BENCH=1
build_addon
echo "built at ${SECONDS}s"
build_tracer
run_tests mlp "" native/test/ops.cuda.test.ts -t mlpBlock
run_tests model "GEMMA3_MLP_BLOCK=1" packages/model/test/parity.test.ts \
  packages/model/test/graph.test.ts
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
for pre in 1 0; do
  GEMMA3_MLP_BLOCK_PRELOAD=$pre timeout 200 "$bench" --filter "mlp_block" --graph-below 1000 \
    --json "$OUT/rows-preload$pre.json" --md "$OUT/rows-preload$pre.md" \
    >"$OUT/rows-preload$pre.log" 2>&1 || status=1
  echo "== mlp_block rows, preload $pre"
  grep -E '^\|' "$OUT/rows-preload$pre.md" | tail -n +3
done
for spec in ${@:-1b 4b}; do
  tag=$(spec_tag "$spec")
  for round in 1 2; do
    for on in 0 1; do
      GEMMA3_MLP_BLOCK=$on decode_step "$OUT/step-$tag-mlp$on-r$round" "$spec" --only replay
      echo "step $tag mlp=$on r$round: $(cat "$OUT/step-$tag-mlp$on-r$round.json") (${SECONDS}s)"
    done
  done
  for on in 0 1; do GEMMA3_MLP_BLOCK=$on cli_bench "$OUT/bench-$tag-mlp$on" "$spec"; done
  GEMMA3_MLP_BLOCK=1 trace_step "$OUT/trace-$tag-mlp1" "$spec"
  head -14 "$OUT/trace-$tag-mlp1.md"
done
echo "done at ${SECONDS}s (status $status)"
exit $status
