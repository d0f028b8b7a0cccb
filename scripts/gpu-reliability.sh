#!/usr/bin/env bash
# Issue #10 on the GPU machine, in one call: build the addon (sm_90a), run the CUDA allocation and
# real-fault tests (native/test/alloc.cuda.test.ts; apps/server/test/faults.test.ts, whose CUDA case
# makes `gemma3 serve` take a genuine cudaErrorIllegalAddress), then vLLM's cancellation test at 200
# requests with stream-ordered allocation (default) and with cudaMalloc/cudaFree
# (GEMMA3_CUDA_MALLOC=sync) in the same call, then optionally the soak.
#   bash scripts/pack-dists.sh here, then device run, carry [".device", ".dists.tar"]:
#     bash scripts/gpu-reliability.sh [--soak SECONDS] [--no-tests] [--no-cancel]
#   RELIABILITY_TESTS="FILES" narrows the tests; CANCEL_MODES="pool" the cancellation runs.
#   CANCEL_TIMELINE=1 adds the scheduler's state every 25 ms to the cancellation JSON; CANCEL_PROF=1
#   writes a V8 CPU profile of the stream-ordered run to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-reliability}"
mkdir -p "$OUT"
soak=0 tests=1 cancel=1
while [ $# -gt 0 ]; do
  case "$1" in
    --soak) soak="$2"; shift ;;
    --no-tests) tests=0 ;;
    --no-cancel) cancel=0 ;;
  esac
  shift
done
source scripts/device-env.sh  # the carried Node, node_modules and dists
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
SECONDS=0
echo "== build (sm_90a)"
export CMAKE_CUDA_ARCHITECTURES=90a
(cd native && node scripts/build.mjs) >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
node apps/cli/scripts/make-demo.mjs >/dev/null && node apps/cli/scripts/copy-tokenizer.mjs >/dev/null
echo "built at ${SECONDS}s"
status=0

if [ "$tests" = 1 ]; then
  echo "== tests (GEMMA3_TEST_CUDA=1)"
  GEMMA3_TEST_CUDA=1 timeout 240 node node_modules/vitest/vitest.mjs run --reporter=verbose \
    ${RELIABILITY_TESTS:-native/test/alloc.cuda.test.ts native/test/graph.test.ts apps/server/test/faults.test.ts} \
    >"$OUT/tests.log" 2>&1 || status=1
  grep -E "✓|×|FAIL|Test Files|Tests |Error" "$OUT/tests.log" | tail -30
  echo "tests done at ${SECONDS}s"
fi

if [ "$cancel" = 1 ]; then
  echo "== cancellation, 200 requests (demo checkpoint on cuda:0)"
  for mode in ${CANCEL_MODES:-pool sync pool}; do
    if [ "$mode" = sync ]; then export GEMMA3_CUDA_MALLOC=sync; else unset GEMMA3_CUDA_MALLOC; fi
    printf '%s ' "$mode"
    prof=()
    [ "$mode" = pool ] && [ -n "${CANCEL_PROF:-}" ] && prof=(--cpu-prof --cpu-prof-dir="$OUT" --cpu-prof-interval 500)
    timeout 120 node "${prof[@]}" apps/server/bench/cancel.mjs --requests 200 --device cuda \
      | tee -a "$OUT/cancel-$mode.jsonl" || status=1
  done
  unset GEMMA3_CUDA_MALLOC
  echo "cancel done at ${SECONDS}s"
fi

if [ "$soak" != 0 ]; then
  echo "== soak ${soak}s (demo checkpoint on cuda:0, 96 clients), nvidia-smi every 10 s"
  (while true; do
    nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader >>"$OUT/soak-gpu-mem.csv"
    sleep 10
  done) &
  smi=$!
  node apps/server/bench/soak.mjs --seconds "$soak" --warmup 60 --clients 96 --device cuda \
    >"$OUT/soak.json" 2>"$OUT/soak.log" || status=1
  kill $smi
  tail -c 1500 "$OUT/soak.json"
  echo
  awk -F', ' 'NR==1{min=$2;max=$2} {v=$2+0; if(v<min+0)min=$2; if(v>max+0)max=$2} END{print "device memory", min, "to", max, "over", NR, "samples"}' "$OUT/soak-gpu-mem.csv"
fi
exit $status
