#!/usr/bin/env bash
# One device call: the q-dot lane GEMV with x in g_qx loading its x blocks together with its W
# loads (session 14; matmul_gemv.cu gemv_qlane_kernel kXPre) against x loaded after W arrives
# (GEMMA3_QLANE_XPRE=0). Builds the addon (sm_90a, with bench_kernels), runs the q4_0s matmul
# cases on CUDA, the q4_0s GEMV rows both ways, then the replayed step and `gemma3 bench` for each
# model (default: 4b:q4_0 1b:q4_0) both ways, two alternating rounds.
#   here: npx turbo run build && bash scripts/pack-dists.sh; device run, carry [".device",
#   ".dists.tar"]:  bash scripts/device-run.sh scripts/gpu-qlane-xpre.sh [4b:q4_0 1b:q4_0]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-qlane-xpre}"
source scripts/device-env.sh
start_call
export CMAKE_CUDA_ARCHITECTURES=90a GEMMA3_BENCH=1
build_addon
echo "built at ${SECONDS}s"
run_tests q4s "" native/test/ops.cuda.test.ts -t "q4_0s|q8_0s|q4_0 |q8_0 "
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
for xpre in 1 0; do
  GEMMA3_QLANE_XPRE=$xpre timeout 200 "$bench" --filter "q4_0|q8_0" --graph-below 1000 \
    --json "$OUT/rows-xpre$xpre.json" --md "$OUT/rows-xpre$xpre.md" >"$OUT/rows-xpre$xpre.log" 2>&1 ||
    status=1
  echo "== q4_0 / q8_0 rows, GEMMA3_QLANE_XPRE=$xpre (${SECONDS}s)"
  grep -E '^\|' "$OUT/rows-xpre$xpre.md" | tail -n +3 | cut -d'|' -f2,3,4,5,8,9
done
for spec in ${@:-4b:q4_0 1b:q4_0}; do
  tag=$(spec_tag "$spec")
  for round in 1 2; do
    for xpre in 0 1; do
      GEMMA3_QLANE_XPRE=$xpre decode_step "$OUT/step-$tag-xpre$xpre-r$round" "$spec" --only replay
      echo "step $tag xpre=$xpre r$round: $(cat "$OUT/step-$tag-xpre$xpre-r$round.json") (${SECONDS}s)"
    done
  done
  for xpre in 0 1; do GEMMA3_QLANE_XPRE=$xpre cli_bench "$OUT/bench-$tag-xpre$xpre" "$spec"; done
done
echo "done at ${SECONDS}s (status $status)"
exit $status
