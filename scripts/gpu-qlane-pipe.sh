#!/usr/bin/env bash
# One device call: the one-wave, pipelined q-dot lane GEMV for q4_0s rows with x in g_qx
# (session 14; matmul_gemv.cu gemv_qlane_kernel kPipe) against the waves of one round
# (GEMMA3_QLANE_PIPE=0). Builds the addon (sm_90a, with bench_kernels), runs the q4_0s matmul
# cases on CUDA, the q4_0s GEMV rows both ways, then the replayed step and `gemma3 bench` for each
# model (default: 4b:q4_0 1b:q4_0) both ways, two alternating rounds.
#   here: npx turbo run build && bash scripts/pack-dists.sh; device run, carry [".device",
#   ".dists.tar"]:  bash scripts/device-run.sh scripts/gpu-qlane-pipe.sh [4b:q4_0 1b:q4_0]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-qlane-pipe}"
source scripts/device-env.sh
start_call
export CMAKE_CUDA_ARCHITECTURES=90a GEMMA3_BENCH=1
build_addon
echo "built at ${SECONDS}s"
run_tests q4s "" native/test/ops.cuda.test.ts -t "q4_0s"
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
for pipe in 1 0; do
  GEMMA3_QLANE_PIPE=$pipe timeout 200 "$bench" --filter "q4_0s" --graph-below 1000 \
    --json "$OUT/rows-pipe$pipe.json" --md "$OUT/rows-pipe$pipe.md" >"$OUT/rows-pipe$pipe.log" 2>&1 ||
    status=1
  echo "== q4_0s rows, GEMMA3_QLANE_PIPE=$pipe (${SECONDS}s)"
  grep -E '^\|' "$OUT/rows-pipe$pipe.md" | tail -n +3 | cut -d'|' -f2,3,5,8,9
done
for spec in ${@:-4b:q4_0 1b:q4_0}; do
  tag=$(spec_tag "$spec")
  for round in 1 2; do
    for pipe in 0 1; do
      GEMMA3_QLANE_PIPE=$pipe decode_step "$OUT/step-$tag-pipe$pipe-r$round" "$spec" --only replay
      echo "step $tag pipe=$pipe r$round: $(cat "$OUT/step-$tag-pipe$pipe-r$round.json") (${SECONDS}s)"
    done
  done
  for pipe in 0 1; do GEMMA3_QLANE_PIPE=$pipe cli_bench "$OUT/bench-$tag-pipe$pipe" "$spec"; done
done
echo "done at ${SECONDS}s (status $status)"
exit $status
