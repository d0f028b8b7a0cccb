#!/usr/bin/env bash
# Throwaway (session 11): where the wgmma prefill kernel's time goes. GEMMA3_PREFILL_EXP 0-3 rows
# (no softmax / no K/V loads / both) and Nsight Compute of the s8192 row.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-prefill-exp}"
mkdir -p "$OUT"
source scripts/device-env.sh
export CMAKE_CUDA_ARCHITECTURES=90a GEMMA3_BENCH=1
SECONDS=0
(cd native && node scripts/build.mjs) >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "built at ${SECONDS}s"
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
for e in 0 1 2 3; do
  GEMMA3_PREFILL_EXP=$e "$bench" --filter "attention_prefill b1 h8 kv4 d256 s8192|attention_prefill b1 h32" \
    --json "$OUT/exp$e.json" --md "$OUT/exp$e.md" >"$OUT/exp$e.log" 2>&1
  echo "exp $e:"; grep "attention_prefill" "$OUT/exp$e.md" | cut -d'|' -f3,5,8
done
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
timeout 200 "$ncu" --set full --import-source no -k "regex:prefill_wgmma" --launch-skip 2 --launch-count 1 \
  "$bench" --filter "attention_prefill b1 h8 kv4 d256 s8192" --iters 3 --warmup 2 >"$OUT/ncu.txt" 2>&1
grep -E "Duration|Throughput|Occupancy|Issue Slots|Ipc|Pipe|stall|Stall|L2 Hit|Bank" "$OUT/ncu.txt" | cut -c1-200 | head -60
echo "done at ${SECONDS}s"
