#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md): builds the addon
# (sm_90a), runs the CUDA tests of the pending parts, then the rows and A/Bs that decide defaults.
# Nothing is pending after session 13 (its calls ran session 12's part; docs/kernels.md). What it
# runs: session 12's prefill attention checks, kept as a regression call: the attentionPrefill cases
# with the default choice, with GEMMA3_ATTN_SPLITS=3 and on the mma.sync kernel
# (GEMMA3_ATTN_WGMMA=0), ops.bounds, the model's prefill CUDA tests, the attention_prefill rows and
# torch SDPA in the same call. Put the next session's unverified work here.
# FULL=1 adds Nsight Compute of the s8192 row.
#   here first: npx turbo run build && bash scripts/pack-dists.sh, then device run,
#   carry [".device", ".dists.tar"]:  bash scripts/device-run.sh scripts/gpu-pending.sh
#   (device-run.sh returns every output file in one results.tgz: a call returns at most 8 files)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-pending}"
source scripts/device-env.sh
start_call
export CMAKE_CUDA_ARCHITECTURES=90a GEMMA3_BENCH=1
build_addon
echo "built at ${SECONDS}s"
obj=$(find native/build -name attention_prefill_sm90.cu.o | head -1)
if command -v cuobjdump >/dev/null; then
  cuobjdump -sass "$obj" >"$OUT/wgmma.sass" 2>&1 || true
  echo "sass: $(grep -c HGMMA "$OUT/wgmma.sass") HGMMA, $(grep -c 'WARPGROUP.DEPBAR' "$OUT/wgmma.sass") wgmma waits, $(grep -cE 'LDL|STL' "$OUT/wgmma.sass") local ld/st"
fi
run_tests prefill "" native/test/ops.cuda.test.ts -t "attentionPrefill"
run_tests prefill-split3 GEMMA3_ATTN_SPLITS=3 native/test/ops.cuda.test.ts -t "attentionPrefill bf16"
run_tests prefill-mma GEMMA3_ATTN_WGMMA=0 native/test/ops.cuda.test.ts -t "attentionPrefill"
run_tests bounds "" native/test/ops.bounds.test.ts
run_tests model "" packages/model/test/parity.test.ts packages/model/test/chunked.test.ts \
  packages/model/test/spans.test.ts packages/model/test/prefix.test.ts packages/model/test/graph.test.ts
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
timeout 150 "$bench" --filter "attention_prefill" --json "$OUT/bench.json" --md "$OUT/bench.md" >"$OUT/bench.log" 2>&1 || status=1
grep attention_prefill "$OUT/bench.md" | cut -d'|' -f3,5,8
PYTHONUNBUFFERED=1 timeout 300 python3 tools/peers/torch_peers.py --filter attention_prefill --json "$OUT/torch.json" \
  --md "$OUT/torch.md" >"$OUT/torch.log" 2>&1 || status=1
cat "$OUT/torch.md"
if [ "${FULL:-0}" != 1 ]; then
  echo "done at ${SECONDS}s (status $status)"
  exit $status
fi
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
timeout 100 "$ncu" --set full --import-source no -k "regex:prefill_wgmma" --launch-skip 2 --launch-count 1 \
  "$bench" --filter "attention_prefill b1 h8 kv4 d256 s8192" --iters 3 --warmup 2 >"$OUT/ncu.txt" 2>&1
grep -E "Duration|Compute \(SM\)|Issue Slots|Executed Instructions  |Eligible Warps|highest-utilized" "$OUT/ncu.txt" | cut -c1-160
echo "done at ${SECONDS}s (status $status)"
exit $status
