#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md): builds the addon
# (sm_90a), runs the CUDA tests of the pending parts, then the A/Bs that decide their defaults.
# Under ~10 minutes on one H100/H200. Pending in session 7: decode attention split finer at short
# context (GEMMA3_DECODE_MIN_CHUNK, GEMMA3_DECODE_ONE_SPLIT_STAGES): the attention cases both
# ways, the short-context rows, then 1B / 4B decode A/Bs.
#   here first: npx turbo run build && bash scripts/pack-dists.sh, then device run,
#   carry [".device", ".dists.tar"]:  bash scripts/device-run.sh scripts/gpu-pending.sh
#   (device-run.sh returns every output file in one results.tgz: a call returns at most 8 files)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-pending}"
mkdir -p "$OUT"
source scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
SECONDS=0
export CMAKE_CUDA_ARCHITECTURES=90a GEMMA3_BENCH=1
(cd native && node scripts/build.mjs) >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "built at ${SECONDS}s"
status=0
vt() {  # NAME "VAR=VALUE ..." vitest-args...
  local name=$1 vars=$2
  shift 2
  env $vars GEMMA3_TEST_CUDA=1 timeout 300 node node_modules/vitest/vitest.mjs run "$@" \
    >"$OUT/tests-$name.log" 2>&1 || status=1
  echo "tests $name: $(grep -E 'Tests ' "$OUT/tests-$name.log" | tail -1 | tr -s ' ') (${SECONDS}s)"
  grep -E "^ *(×|FAIL)" "$OUT/tests-$name.log" | head -10
}
vt attention-default "" native/test/ops.cuda.test.ts -t "attentionDecode"
vt attention-fine "GEMMA3_DECODE_MIN_CHUNK=16 GEMMA3_DECODE_ONE_SPLIT_STAGES=1" native/test/ops.cuda.test.ts -t "attentionDecode"
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
# Decode attention at short context, graph-timed: default (one split up to 64 keys, splits of >= 64
# keys), splits of >= 16 keys, and also one split only up to 16 keys.
for cfg in "GEMMA3_DECODE_MIN_CHUNK=64" "GEMMA3_DECODE_MIN_CHUNK=16" \
  "GEMMA3_DECODE_MIN_CHUNK=16 GEMMA3_DECODE_ONE_SPLIT_STAGES=1" \
  "GEMMA3_DECODE_MIN_CHUNK=32 GEMMA3_DECODE_ONE_SPLIT_STAGES=2"; do
  tag=$(echo "$cfg" | tr -c 'A-Z0-9\n' '_')
  env $cfg timeout 100 "$bench" --filter "attention_decode b1" --graph-below 1000 >"$OUT/att-$tag.txt" 2>&1 || status=1
  echo "$cfg (${SECONDS}s):"
  grep -E "^\| attention_decode" "$OUT/att-$tag.txt" | grep -E "kv_len(16|64|96|128|256|1024) " | cut -d'|' -f3,5 | tr '\n' ';'
  echo
done
echo "kernels done at ${SECONDS}s (status $status)"
OUT="$OUT/ab-chunk" AB_VAR=GEMMA3_DECODE_MIN_CHUNK AB_VALUES="64 16" bash scripts/gpu-ab.sh --models 1b,4b --rounds 2 || status=1
OUT="$OUT/ab-fine" AB_VAR=GEMMA3_DECODE_ONE_SPLIT_STAGES AB_VALUES="4 1" GEMMA3_DECODE_MIN_CHUNK=16 \
  bash scripts/gpu-ab.sh --models 1b,4b --rounds 1 || status=1
echo "done at ${SECONDS}s (status $status)"
exit $status
