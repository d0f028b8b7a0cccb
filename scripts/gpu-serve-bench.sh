#!/usr/bin/env bash
# On the GPU machine: random weights at the real 4B shape; HF transformers greedy generate at batch
# 1/8/32/64 and its TTFT at a 2048-token prompt (the peer), then, on the same checkpoint in the same
# call: the decode step profile (model vs sampler per batch size), our server driven over HTTP by
# concurrent streaming clients, and the scheduler alone (--direct). Ends with the markdown table.
# Needs the carried .device and the built dist folders.
#   bash scripts/gpu-serve-bench.sh [CONFIG] [TOKENS]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-serve}"
mkdir -p "$OUT"
cfg="${1:-packages/model/test/fixtures/configs/gemma-3-4b-it.config.json}"
tokens="${2:-128}"
source scripts/device-env.sh  # the carried Node, node_modules and dists
[ -f native/build/Release/gemma3.node ] || (cd native && CMAKE_CUDA_ARCHITECTURES=90a node scripts/build.mjs >"$OUT/build.log" 2>&1) || { tail -30 "$OUT/build.log"; exit 1; }
[ -f apps/cli/demo-model/tokenizer.json ] || node apps/cli/scripts/copy-tokenizer.mjs
ckpt=/tmp/gemma3-random-$(basename "$cfg" .config.json)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
echo "== HF transformers peer ($cfg, $tokens tokens, batches 1/8/32/64, TTFT at 2048)"
PYTHONUNBUFFERED=1 python3 tools/reference/hf_decode_bench.py "$cfg" "$ckpt" --tokens "$tokens" \
  --batches 1,8,32,64 --ttft-prompt 2048 2>&1 | grep -v -i warn | tail -1 | tee "$OUT/hf.json"
cp apps/cli/demo-model/tokenizer.json apps/cli/demo-model/tokenizer_config.json "$ckpt"/
echo "== ours: step profile, server over HTTP, scheduler direct (cuda bf16)"
node packages/generation/bench/step-profile.mjs "$ckpt" --device cuda --batches 1,8,32,64 >"$OUT/profile.json" 2>&1
node apps/server/bench/serve-bench.mjs "$ckpt" --device cuda --tokens "$tokens" >"$OUT/http.json" 2>&1
node apps/server/bench/serve-bench.mjs "$ckpt" --device cuda --tokens "$tokens" --direct --ttft-prompt 0 >"$OUT/direct.json" 2>&1
node apps/server/bench/report.mjs "$OUT" | tee "$OUT/report.md"
