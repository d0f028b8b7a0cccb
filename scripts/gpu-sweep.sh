#!/usr/bin/env bash
# One device call: an A/B (or sweep) of environment switches (session 14: the q-dot lane GEMV's
# tiling, matmul_gemv.cu launch_qlane's GEMMA3_QLANE_MIN_SLICE / GEMMA3_QS_GQX_U / GEMMA3_Q4S_R;
# the decode attention's last-split merge, GEMMA3_DECODE_MERGE, since removed). Builds the addon
# (sm_90a, with bench_kernels), runs the tests asked for, the bench_kernels rows under each
# setting, then the replayed decode step of each model under each setting (two alternating rounds)
# and `gemma3 bench` of the first model under each.
#   SWEEP: the settings, VAR=VALUE words, several variables as VAR=A,OTHER=B (default below;
#     BASE=1 is the defaults);
#   ROWS: the bench_kernels --filter (default: the q4_0s rows whose x is rounded into g_qx);
#   TESTS / TESTS_ENV: a vitest -t filter of native/test/ops.cuda.test.ts run first, under TESTS_ENV;
#   MODEL_TESTS=1: the model's parity and graph tests too (under TESTS_ENV);
#   STEP_VARIANTS: decode-step.mjs argument sets separated by ';', each timed as its own variant
#     (e.g. "--capacity 32768;--prompt 16000 --capacity 32768"; default: one, with none);
#   CLI_BENCH_ARGS: more `gemma3 bench` arguments (scripts/device-env.sh cli_bench);
#   ROWS_ONLY=1: the bench_kernels rows alone (no decode steps, no `gemma3 bench`).
#   here: npx turbo run build && bash scripts/pack-dists.sh; device run, carry [".device",
#   ".dists.tar"]:  bash scripts/device-run.sh scripts/gpu-sweep.sh [4b:q4_0 ...]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-sweep}"
source scripts/device-env.sh
start_call
export CMAKE_CUDA_ARCHITECTURES=90a GEMMA3_BENCH=1
build_addon
echo "built at ${SECONDS}s"
[ -z "${TESTS:-}" ] || run_tests sweep "${TESTS_ENV:-}" native/test/ops.cuda.test.ts -t "$TESTS"
[ -z "${MODEL_TESTS:-}" ] || run_tests model "${TESTS_ENV:-}" packages/model/test/parity.test.ts \
  packages/model/test/graph.test.ts native/test/pdl.cuda.test.ts
rows="${ROWS:-K10240 N2560 q4_0s|K6912 N1152 q4_0s|K21504 N5376 q4_0s|K2560 N262208 q4_0s}"
settings="${SWEEP:-BASE=1 GEMMA3_QLANE_MIN_SLICE=16 GEMMA3_QLANE_MIN_SLICE=64 GEMMA3_QS_GQX_U=2 GEMMA3_QS_GQX_U=3 GEMMA3_Q4S_R=4}"
specs="${*:-4b:q4_0}"
for set in $settings; do
  tag=${set//=/-}
  echo "== $set (${SECONDS}s)"
  with_env "$set" bench_rows "$OUT/rows-$tag" "$rows"
done
if [ -n "${ROWS_ONLY:-}" ]; then
  echo "done at ${SECONDS}s (status $status)"
  exit $status
fi
IFS=';' read -ra variants <<<"${STEP_VARIANTS:-}"
[ "${#variants[@]}" -gt 0 ] || variants=("")
for spec in $specs; do
  for v in "${!variants[@]}"; do
    stag=$(spec_tag "$spec")${variants[$v]:+-v$v}
    [ -z "${variants[$v]}" ] || echo "== $spec variant $v: ${variants[$v]}"
    for round in 1 2; do
      for set in $settings; do
        tag=${set//=/-}
        # shellcheck disable=SC2086  # a variant is several words
        with_env "$set" decode_step "$OUT/step-$stag-$tag-r$round" "$spec" --only replay ${variants[$v]}
        echo "step $stag $set r$round: $(grep -o '"median_us":[0-9.]*' "$OUT/step-$stag-$tag-r$round.json") (${SECONDS}s)"
      done
    done
  done
done
first=${specs%% *}
for set in $settings; do
  with_env "$set" cli_bench "$OUT/bench-$(spec_tag "$first")-${set//=/-}" "$first"
done
echo "done at ${SECONDS}s (status $status)"
exit $status
