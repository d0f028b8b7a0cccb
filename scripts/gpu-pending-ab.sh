#!/usr/bin/env bash
# The decode A/Bs of scripts/gpu-pending.sh's switches, as a second device call (~5 minutes on a
# warm machine: the addon is already built): GEMMA3_GELU_EPILOGUE 0 vs 1 at 1B and 4B bf16 and 4B
# q4_0, GEMMA3_Q8S_U 2 vs 3 at 4B q8_0; 2 rounds each, per-request tok/s (gpu-ab.sh).
#   device run, carry [".device", ".dists.tar"]:  bash scripts/device-run.sh scripts/gpu-pending-ab.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-pending-ab}"
status=0
ab() {  # TAG VAR "VALUES" MODELS BENCH-ARGS
  OUT="$OUT/$1" AB_VAR=$2 AB_VALUES="$3" AB_BENCH="$5" bash scripts/gpu-ab.sh --models "$4" \
    --rounds 2 || status=1
}
ab gelu-bf16 GEMMA3_GELU_EPILOGUE "0 1" 1b,4b "--batch 1 --prefill 0"
ab gelu-q4 GEMMA3_GELU_EPILOGUE "0 1" 4b "--batch 1 --prefill 0 --quantize q4_0"
ab q8s-u GEMMA3_Q8S_U "2 3" 4b "--batch 1 --prefill 0 --quantize q8_0"
exit $status
