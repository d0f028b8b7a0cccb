#!/usr/bin/env bash
# On the GPU machine: random weights at the real 4B shape, HF transformers greedy decode (bf16,
# batch 1) as the peer, then our `gemma3 generate` on the same checkpoint in the same call.
# Needs the carried .device (Node + node_modules) and the built dist folders (carry them).
#   bash scripts/gpu-decode-bench.sh [CONFIG] [TOKENS]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-decode}"
mkdir -p "$OUT"
cfg="${1:-packages/model/test/fixtures/configs/gemma-3-4b-it.config.json}"
tokens="${2:-128}"
source scripts/device-env.sh  # the carried Node, node_modules and dists
[ -f native/build/Release/gemma3.node ] || (cd native && CMAKE_CUDA_ARCHITECTURES=90a node scripts/build.mjs >"$OUT/build.log" 2>&1) || { tail -30 "$OUT/build.log"; exit 1; }
ckpt=/tmp/gemma3-random-$(basename "$cfg" .config.json)
echo "== HF transformers peer ($cfg, $tokens tokens)"
PYTHONUNBUFFERED=1 python3 tools/reference/hf_decode_bench.py "$cfg" "$ckpt" --tokens "$tokens" 2>&1 | grep -v -i warn | tee "$OUT/hf.json"
echo "== ours (gemma3 generate, cuda bf16)"
ids=$(python3 -c "import random; random.seed(1); print(','.join(str(random.randint(3,999)) for _ in range(16)))")
for i in 1 2 3; do
  node apps/cli/dist/cli.js generate --model "$ckpt" --prompt-ids "$ids" --max-tokens "$tokens" --device cuda --dtype bf16 --ignore-eos --stats >/dev/null 2>>"$OUT/ours.txt"
done
cat "$OUT/ours.txt"
