#!/usr/bin/env bash
# Issue #9's end-to-end table in one GPU call: HF transformers greedy decode (the peer, random
# weights at each published shape, not saved) and `gemma3 bench` on random:CONFIG weights of the
# same shape, one after the other on the same card: 1B, 4B (batches 1 to 64, 2048-token prefill),
# 4B with q4_0 and q8_0 weights (batch 1), 27B (batch 1). JSON per run in $OUT.
#   bash scripts/pack-dists.sh here, then device run, carry [".device", ".dists.tar"]:
#     bash scripts/gpu-bench.sh [--no-hf] [--only 1b,4b,4b-q4_0,4b-q8_0,27b]
# HF_SKIP=27b: no HF peer there; HF_DEADLINE=S: no HF peer starts after S seconds of the script
# (scripts/gpu-issue9.sh keeps its call under the device's limit that way).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-bench}"
mkdir -p "$OUT"
hf=1 only="1b,4b,4b-q4_0,4b-q8_0,27b"
while [ $# -gt 0 ]; do
  case "$1" in
    --no-hf) hf=0 ;;
    --only) only="$2"; shift ;;
  esac
  shift
done
source scripts/device-env.sh  # the carried Node, node_modules and dists
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
SECONDS=0
export CMAKE_CUDA_ARCHITECTURES=90a
[ -f native/build/Release/gemma3.node ] || (cd native && node scripts/build.mjs) >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "built at ${SECONDS}s"
cfgs=packages/model/test/fixtures/configs
run() { # name config hf-args ours-args
  local name="$1" cfg="$2" hfargs="$3" ours="$4"
  case ",$only," in *",$name,"*) ;; *) return ;; esac
  case ",${HF_SKIP:-}," in *",$name,"*) hfargs="" ;; esac
  if [ "$hf" = 1 ] && [ -n "$hfargs" ] && [ "$SECONDS" -lt "${HF_DEADLINE:-100000}" ]; then
    PYTHONUNBUFFERED=1 timeout 300 python3 tools/reference/hf_decode_bench.py "$cfg" "/tmp/hf-$name" --no-save \
      $hfargs 2>"$OUT/hf-$name.log" | tail -1 >"$OUT/hf-$name.json"
    echo "hf $name: $(cat "$OUT/hf-$name.json" | head -c 400) (${SECONDS}s)"
  fi
  timeout 300 node apps/cli/dist/cli.js bench --model "random:$cfg" --device cuda $ours --json "$OUT/ours-$name.json" \
    2>&1 | tee "$OUT/ours-$name.txt"
  echo "(${SECONDS}s)"
}
run 1b "$cfgs/gemma-3-1b-it.config.json" "--batches 1" "--batch 1 --prefill 0"
run 4b "$cfgs/gemma-3-4b-it.config.json" "--batches 1,8,64 --ttft-prompt 2048" "--batch 1,2,4,8,16,32,64 --prefill 2048"
run 4b-q4_0 "$cfgs/gemma-3-4b-it.config.json" "" "--batch 1 --prefill 0 --quantize q4_0"
run 4b-q8_0 "$cfgs/gemma-3-4b-it.config.json" "" "--batch 1 --prefill 0 --quantize q8_0"
run 27b "$cfgs/gemma-3-27b-it.config.json" "--batches 1" "--batch 1 --prefill 0"
