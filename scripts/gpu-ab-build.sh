#!/usr/bin/env bash
# One device call: an A/B of two builds of the addon (session 13). The working tree is B; the
# files under .ab-base/ (copies of the baseline's, named by basename, from native/kernels/cuda/)
# make A. Both are built (A incrementally), kept as /tmp/{a,b}.node and chosen per run with
# GEMMA3_ADDON_PATH. Runs the PDL chain and the model's CUDA tests on B, then the graph-replayed
# decode step (tools/bench/decode-step.mjs --only replay) of 1B, 4B and 4B q4_0, A and B alternating
# over two rounds, `gemma3 bench` for 1B and 4B both ways, and a kernel trace of B's 1B and 4B steps.
#   here: mkdir .ab-base (git-excluded); cp the baseline files there; npx turbo run build && bash
#   scripts/pack-dists.sh; device run, carry [".device", ".dists.tar", ".ab-base"]:
#     bash scripts/device-run.sh scripts/gpu-ab-build.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-ab-build}"
source scripts/device-env.sh
ls .ab-base/* >/dev/null 2>&1 || { echo "no .ab-base/: carry the baseline's files (header)"; exit 1; }
start_call
export CMAKE_CUDA_ARCHITECTURES=90a
build_addon build-b.log
cp native/build/Release/gemma3.node /tmp/b.node
echo "built B at ${SECONDS}s"
b=GEMMA3_ADDON_PATH=/tmp/b.node
run_tests pdl $b native/test/pdl.cuda.test.ts
run_tests model $b packages/model/test/parity.test.ts packages/model/test/graph.test.ts \
  packages/model/test/chunked.test.ts
run_tests matmul $b native/test/ops.cuda.test.ts -t "(matmul x=bf16 w=(bf16|f32) M=1 |geluMul with the projection)"
for f in .ab-base/*; do cp "$f" "native/kernels/cuda/$(basename "$f")"; done
build_addon build-a.log
cp native/build/Release/gemma3.node /tmp/a.node
echo "built A at ${SECONDS}s"
for r in 1 2; do
  for spec in 1b 4b 4b:q4_0; do
    for v in a b; do
      tag="step-$(spec_tag "$spec")-$v-r$r"
      GEMMA3_ADDON_PATH=/tmp/$v.node decode_step "$OUT/$tag" "$spec" --steps 100 --only replay
      echo "$tag: $(grep -o '"replay":{"median_us":[0-9.]*' "$OUT/$tag.json" | cut -d: -f3) µs (${SECONDS}s)"
    done
  done
done
for spec in 1b 4b 4b:q4_0; do
  for v in a b; do
    GEMMA3_ADDON_PATH=/tmp/$v.node cli_bench "$OUT/bench-$(spec_tag "$spec")-$v" "$spec"
  done
done
build_tracer
for m in 1b 4b; do
  GEMMA3_ADDON_PATH=/tmp/b.node trace_step "$OUT/trace-$m-b" "$m"
  head -16 "$OUT/trace-$m-b.md"
done
echo "done at ${SECONDS}s (status $status)"
exit $status
