#!/usr/bin/env bash
# The decode A/Bs of scripts/gpu-pending.sh's switches, as a second device call (~5 minutes on a
# warm machine: the addon is already built): GEMMA3_GELU_EPILOGUE 0 vs 1 at 1B and 4B bf16 and 4B
# q4_0, GEMMA3_Q8S_U 2 vs 3 at 4B q8_0; 2 rounds each, per-request tok/s (gpu-ab.sh).
#   device run, carry [".device", ".dists.tar"]:  bash scripts/device-run.sh scripts/gpu-pending-ab.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-pending-ab}"
mkdir -p "$OUT"
source scripts/device-env.sh
status=0
SECONDS=0
export CMAKE_CUDA_ARCHITECTURES=90a GEMMA3_BENCH=1  # gpu-ab.sh's build then keeps bench_kernels
(cd native && node scripts/build.mjs) >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "built at ${SECONDS}s"
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
for v in 0 1; do  # the fp8 epilogue's register bound, rechecked
  GEMMA3_GELU_EPILOGUE=$v timeout 60 "$bench" --filter "gate_up_gelu" --graph-below 1000 \
    >"$OUT/rows-gelu$v.txt" 2>&1 || status=1
  echo "GEMMA3_GELU_EPILOGUE=$v:"
  grep -E "^\| gate_up" "$OUT/rows-gelu$v.txt" | cut -d'|' -f3-5 | tr -s ' ' | tr '\n' ';'
  echo
done
ab() {  # TAG VAR "VALUES" MODELS BENCH-ARGS
  OUT="$OUT/$1" AB_VAR=$2 AB_VALUES="$3" AB_BENCH="$5" bash scripts/gpu-ab.sh --models "$4" \
    --rounds 2 || status=1
}
ab gelu-bf16 GEMMA3_GELU_EPILOGUE "0 1" 1b,4b "--batch 1 --prefill 0"
ab gelu-q4 GEMMA3_GELU_EPILOGUE "0 1" 4b "--batch 1 --prefill 0 --quantize q4_0"
ab q8s-u GEMMA3_Q8S_U "2 3" 4b "--batch 1 --prefill 0 --quantize q8_0"
exit $status
