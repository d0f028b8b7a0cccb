#!/usr/bin/env bash
# A/B of an environment switch on the GPU machine, in one call: builds the addon (sm_90a), runs the
# CUDA tests named in AB_TESTS, then `gemma3 bench` on random:CONFIG weights for each model with
# VAR=A and VAR=B, alternating over ROUNDS rounds (same process layout, same card), and prints
# decode tok/s per value. JSON per run in $OUT.
#   bash scripts/pack-dists.sh here, then device run, carry [".device", ".dists.tar"]:
#     AB_VAR=GEMMA3_PDL AB_VALUES="0 1" bash scripts/gpu-ab.sh [--models 1b,4b,27b] [--rounds 2]
#   AB_TESTS: vitest file filters run first with GEMMA3_TEST_CUDA=1 (empty: none);
#   AB_BENCH: extra `gemma3 bench` arguments (default "--batch 1 --prefill 0");
#   AB_DEVICE=cpu: a dry run of the script here (no GPU; short AB_BENCH).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-ab}"
mkdir -p "$OUT"
var="${AB_VAR:?AB_VAR names the environment switch}"
values="${AB_VALUES:-0 1}"
models="1b,4b" rounds=2
while [ $# -gt 0 ]; do
  case "$1" in
    --models) models="$2"; shift ;;
    --rounds) rounds="$2"; shift ;;
  esac
  shift
done
source scripts/device-env.sh  # the carried Node, node_modules and dists
command -v nvidia-smi >/dev/null &&
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
SECONDS=0
export CMAKE_CUDA_ARCHITECTURES=90a
(cd native && node scripts/build.mjs) >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "built at ${SECONDS}s"
status=0
if [ -n "${AB_TESTS:-}" ]; then
  GEMMA3_TEST_CUDA=1 timeout "${AB_TESTS_TIMEOUT:-240}" node node_modules/vitest/vitest.mjs run $AB_TESTS \
    >"$OUT/tests.log" 2>&1 || status=1
  grep -E "×|FAIL|Test Files|Tests " "$OUT/tests.log" | tail -20
  echo "tests done at ${SECONDS}s (status $status)"
fi
cfgs=packages/model/test/fixtures/configs
for r in $(seq 1 "$rounds"); do
  for m in ${models//,/ }; do
    for v in $values; do
      env "$var=$v" timeout 200 node apps/cli/dist/cli.js bench --model "random:$cfgs/gemma-3-$m-it.config.json" \
        --device "${AB_DEVICE:-cuda}" ${AB_BENCH:---batch 1 --prefill 0} --json "$OUT/$m-$var-$v-r$r.json" >"$OUT/$m-$var-$v-r$r.txt" 2>&1 ||
        { status=1; tail -5 "$OUT/$m-$var-$v-r$r.txt"; }
      echo "$m $var=$v round $r: $(grep -E 'batch +[0-9]+:|TTFT' "$OUT/$m-$var-$v-r$r.txt" | tr -s ' ' | tr '\n' ';') (${SECONDS}s)"
    done
  done
done
exit $status
