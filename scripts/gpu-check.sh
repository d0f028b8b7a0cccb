#!/usr/bin/env bash
# One call on the GPU machine (../shared/device): unpack the carried Node + node_modules, build the
# addon with CUDA for sm_90a (and the kernel benchmarks), run every test with CUDA required (the
# CUDA tests compare each kernel with the CPU reference), time our kernels, then time torch's peers
# at the same shapes in the same call. Results land in $OUT; a short table prints last.
#   device run, carry [".device", "native/dist", and every packages/*/dist and apps/*/dist]:
#     bash scripts/gpu-check.sh [--tests-only|--bench-only]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-check}"
mkdir -p "$OUT"
mode="${1:-all}"

source scripts/device-env.sh  # the carried Node, node_modules and dists
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
# The commit of the tree that was sent (pack-dists.sh), not the device copy's lagging git HEAD.
commit=${GEMMA3_COMMIT:-$(cat .dists-commit 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)}

echo "== build (sm_90a, CUDA + benchmarks)"
export CMAKE_CUDA_ARCHITECTURES=90a GEMMA3_BENCH=1
# GEMMA3_PREBUILT=1: the caller built this tree already (scripts/gpu-issue9.sh runs two scripts on it).
if [ "${GEMMA3_PREBUILT:-0}" != 1 ]; then
  (cd native && node scripts/build.mjs) >"$OUT/build.log" 2>&1 || { tail -60 "$OUT/build.log"; exit 1; }
  grep -E "gemma3:" "$OUT/build.log"
fi
node apps/cli/scripts/make-demo.mjs && node apps/cli/scripts/copy-tokenizer.mjs  # the CLI tests use the demo dir

status=0
if [ "$mode" != "--bench-only" ]; then
  echo "== tests (GEMMA3_TEST_CUDA=1: a missing GPU fails instead of skipping)"
  # apps/server and the replicas test run on the CPU demo model (and need openai/playwright/nginx,
  # not carried): CI covers them.
  GEMMA3_TEST_CUDA=1 node node_modules/vitest/vitest.mjs run --reporter=verbose --exclude "apps/server/**" --exclude "apps/cli/test/replicas.test.ts" >"$OUT/tests.log" 2>&1
  status=$?
  grep -E "✓|✗|×|FAIL|Test Files|Tests " "$OUT/tests.log" | tail -80
  echo "== the opt-ins (GEMMA3_QKV_EPILOGUE=1, GEMMA3_DECODE_PROLOGUE=1), the chains without PDL (GEMMA3_PDL=0), mma.sync prefill (GEMMA3_ATTN_WGMMA=0)"
  GEMMA3_QKV_EPILOGUE=1 GEMMA3_TEST_CUDA=1 node node_modules/vitest/vitest.mjs run \
    native/test/ops.cuda.test.ts native/test/ops.bounds.test.ts -t "projection|qkNormRope|qk_norm_rope" \
    >"$OUT/tests-opt-in.log" 2>&1 || status=1
  GEMMA3_QKV_EPILOGUE=1 GEMMA3_TEST_CUDA=1 node node_modules/vitest/vitest.mjs run \
    packages/model/test/graph.test.ts packages/model/test/parity.test.ts >>"$OUT/tests-opt-in.log" 2>&1 || status=1
  GEMMA3_DECODE_PROLOGUE=1 GEMMA3_TEST_CUDA=1 node node_modules/vitest/vitest.mjs run \
    native/test/ops.cuda.test.ts -t "prologue" packages/model/test/graph.test.ts \
    packages/model/test/parity.test.ts >>"$OUT/tests-opt-in.log" 2>&1 || status=1
  GEMMA3_PDL=0 GEMMA3_TEST_CUDA=1 node node_modules/vitest/vitest.mjs run \
    native/test/pdl.cuda.test.ts packages/model/test/graph.test.ts >>"$OUT/tests-opt-in.log" 2>&1 || status=1
  # The mma.sync prefill attention, which sm_90a devices leave for the wgmma kernel by default.
  GEMMA3_ATTN_WGMMA=0 GEMMA3_TEST_CUDA=1 node node_modules/vitest/vitest.mjs run \
    native/test/ops.cuda.test.ts -t "attentionPrefill" >>"$OUT/tests-opt-in.log" 2>&1 || status=1
  grep -E "×|FAIL|Test Files|Tests " "$OUT/tests-opt-in.log" | tail -20
fi

if [ "$mode" != "--tests-only" ]; then
  bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
  echo "== our kernels ($bench)"
  "$bench" --commit "$commit" --json "$OUT/bench.json" --md "$OUT/bench.md" >"$OUT/bench.log" 2>&1 || status=1
  # Issue 8's GEMV rows and their stream_read floors as decode runs them: replays of captured
  # graphs (the default times launches over 20 µs with events, launch overhead included).
  gemv_rows="M1 K2560 N10240 |M1 K2560 N20480 |M1 K10240 N2560 |M1 K5376 N21504 "
  gemv_rows+="|M1 K5376 N43008 |M1 K21504 N5376 |M1 K2560 N262208 "
  "$bench" --commit "$commit" --filter "$gemv_rows" --graph-below 1000 --json "$OUT/gemv-graph.json" \
    --md "$OUT/gemv-graph.md" >>"$OUT/bench.log" 2>&1 || status=1
  # The 32K decode attention rows again as decode runs them: replays of captured graphs.
  "$bench" --commit "$commit" --filter kv_len32768 --graph-below 1000 --json "$OUT/decode32k-graph.json" \
    --md "$OUT/decode32k-graph.md" >>"$OUT/bench.log" 2>&1 || status=1
  echo "== torch peers"
  # The torch rows' roofline % against the bandwidth bench_kernels used for this card.
  peak=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['peak_gbs'])" "$OUT/bench.json" 2>/dev/null || echo 2990)
  PYTHONUNBUFFERED=1 python3 tools/peers/torch_peers.py --peak-gbs "$peak" --json "$OUT/torch.json" --md "$OUT/torch.md" \
    >"$OUT/torch.log" 2>&1 || status=1
  python3 tools/peers/merge_bench.py "$OUT/bench.json" "$OUT/torch.json" >"$OUT/merged.md" 2>&1 || true
  # Issue 9's plot: prefill attention TFLOP/s against the sequence length, ours vs cuDNN / flash.
  node tools/plot/attention-plot.mjs "$OUT/bench.json" "$OUT/torch.json" "$OUT/attention.svg" || true
  tail -5 "$OUT/torch.log"
  cat "$OUT/bench.md"
  cat "$OUT/merged.md"
fi
exit $status
