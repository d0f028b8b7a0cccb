#!/usr/bin/env bash
# Issue 9's whole table in one device call: the addon and bench_kernels built once, then side by side
# on two GPUs of one host, `scripts/gpu-bench.sh` (HF transformers and `gemma3 bench`, every
# end-to-end row, the 4B batch sweep) on GPU 0 and `scripts/gpu-check.sh --bench-only` (bench_kernels
# and torch's peers: SDPA cuDNN / flash, bf16 GEMV) on GPU 1; then the table
# (tools/bench/issue9-table.mjs) and the two plots (tok/s vs batch, attention TFLOP/s vs sequence
# length). On a one-GPU machine the two run one after the other (longer than one call allows).
#   bash scripts/pack-dists.sh here, then device run, kind nvidia-h100-x2, carry [".device", ".dists.tar"]:
#     OUT=$OUT bash scripts/device-run.sh scripts/gpu-issue9.sh
#   here: tar -xzf results.tgz; e2e/ and kernels/ are the two scripts' folders, the JSONs the table
#   reads are copied to the top.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-issue9}"
source scripts/device-env.sh
# Unpacked once: the two scripts below would each unpack it again, over files the other is loading.
[ ! -f .dists.tar ] || mv .dists.tar /tmp/dists.tar.unpacked
start_call
export CMAKE_CUDA_ARCHITECTURES=90a GEMMA3_BENCH=1
build_addon
echo "built at ${SECONDS}s"
# Both scripts stop by ~560 s of this call (the device runs a command for 600 s at most).
left=$((560 - SECONDS))
ngpu=$(nvidia-smi -L | wc -l)
kernels() {
  GEMMA3_PREBUILT=1 CUDA_VISIBLE_DEVICES=$1 OUT="$OUT/kernels" timeout "$left" bash scripts/gpu-check.sh --bench-only \
    >"$OUT/kernels.log" 2>&1
  local rc=$?
  echo "kernels: exit $rc (${SECONDS}s)"
  return $rc
}
if [ "$ngpu" -ge 2 ]; then
  kernels 1 &
  pid=$!
else
  kernels 0 || status=1
fi
# HF peers start only while there is time for them and the rows after them.
CUDA_VISIBLE_DEVICES=0 OUT="$OUT/e2e" HF_DEADLINE=$((left - 150)) timeout "$left" bash scripts/gpu-bench.sh \
  >"$OUT/e2e.log" 2>&1 || status=1
echo "e2e: exit $status (${SECONDS}s)"
grep -E "^hf |batch +[0-9]+:|prefill [0-9]+ tokens" "$OUT/e2e.log"
[ -z "${pid:-}" ] || wait "$pid" || status=1
cp "$OUT"/e2e/*.json "$OUT"/kernels/*.json "$OUT"/kernels/gpu.txt "$OUT/" 2>/dev/null
node tools/bench/issue9-table.mjs "$OUT" | tee "$OUT/table.md"
node tools/plot/decode-batch-plot.mjs "$OUT/ours-4b.json" "$OUT/hf-4b.json" "$OUT/decode-batch.svg" || true
cp "$OUT/kernels/attention.svg" "$OUT/attention.svg" 2>/dev/null
echo "done at ${SECONDS}s"
exit $status
