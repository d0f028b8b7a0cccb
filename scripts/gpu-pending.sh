#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md): builds the addon
# (sm_90a), runs the CUDA tests of the pending parts, then the rows and A/Bs that decide defaults.
# Pending (session 12, call 5): split key ranges end to end where they apply. `gemma3 bench`
# prefills in chunks of its --batch-tokens (2048 by default, so call 4's 8192-token prompt gave each
# attention call 16 q tiles x 8 heads = 128 CTAs and never split); the server's scheduler default
# is 512. Here: the 4B 8192-token prefill with --batch-tokens 512 (16 chunks of 32 CTAs a call),
# the default choice vs GEMMA3_ATTN_SPLITS=1, alternating, two rounds.
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
obj=$(find native/build -name attention_prefill_sm90.cu.o | head -1)
if command -v cuobjdump >/dev/null; then
  cuobjdump -sass "$obj" >"$OUT/wgmma.sass" 2>&1 || true
  echo "sass: $(grep -c HGMMA "$OUT/wgmma.sass") HGMMA, $(grep -c 'WARPGROUP.DEPBAR' "$OUT/wgmma.sass") wgmma waits, $(grep -cE 'LDL|STL' "$OUT/wgmma.sass") local ld/st"
fi
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
cfgs=packages/model/test/fixtures/configs
for r in 1 2; do
  for v in 1 0; do  # GEMMA3_ATTN_SPLITS=0: the default choice; 1: no split
    tag="4b-prefill8k-chunk512-splits$v-r$r"
    GEMMA3_ATTN_SPLITS=$v timeout 200 node apps/cli/dist/cli.js bench --model "random:$cfgs/gemma-3-4b-it.config.json" \
      --device cuda --batch 1 --prefill 8192 --batch-tokens 512 --json "$OUT/$tag.json" >"$OUT/$tag.txt" 2>&1 || status=1
    echo "$tag: $(grep -iE 'prefill' "$OUT/$tag.txt" | tr -s ' ' | head -3) (${SECONDS}s)"
  done
done
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
