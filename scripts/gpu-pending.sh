#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md): builds the addon
# (sm_90a), runs the CUDA tests of the pending parts, then the A/Bs that decide their defaults.
# Under ~10 minutes on one H100/H200. Pending in session 8: q4_0s, the CUDA row layout of q4_0
# (ops.repack; the lane GEMV reads a block with one aligned 16-byte load): its cases and the lane
# kernel's q8_0 / q4_0 cases (the kernel was generalized), the layout test, the q4_0 / q4_0s bench
# rows, then the 4B q4_0 decode A/B of GEMMA3_Q4_0_LAYOUT (gguf = blocks, split = q4_0s).
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
vt q4s-u3 "GEMMA3_Q4S_U=3" native/test/ops.cuda.test.ts -t "w=q4_0s M=1 "
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
# Every GEMV row (bf16, fp8, q8_0, q4_0, q4_0s, K-quants; cuBLAS bf16 peer where built), then the
# q4_0s rows with 3 blocks a row in flight (GEMMA3_Q4S_U=3), graph-timed, same card.
timeout 240 "$bench" --filter "gemv" --graph-below 1000 --md "$OUT/rows-gemv.md" >"$OUT/rows-gemv.txt" 2>&1 || status=1
grep -E "^\| gemv" "$OUT/rows-gemv.txt" | grep -E "q4_0|q8_0" | cut -d'|' -f2-5,7,8
GEMMA3_Q4S_U=3 timeout 100 "$bench" --filter "q4_0s" --graph-below 1000 >"$OUT/rows-q4s-u3.txt" 2>&1 || status=1
echo "U=3: $(grep -E "^\| gemv" "$OUT/rows-q4s-u3.txt" | cut -d'|' -f3,5 | tr -s ' ' | tr '\n' ';')"
echo "kernels done at ${SECONDS}s (status $status)"
cfgs=packages/model/test/fixtures/configs
for r in 1 2; do
  for cfg in "GEMMA3_Q4_0_LAYOUT=gguf" "GEMMA3_Q4_0_LAYOUT=split" "GEMMA3_Q4S_U=3"; do
    tag=$(echo "$cfg" | tr -c 'A-Z0-9\n' '_')
    env $cfg timeout 100 node apps/cli/dist/cli.js bench --model "random:$cfgs/gemma-3-4b-it.config.json" \
      --device cuda --batch 1 --prefill 0 --quantize q4_0 --json "$OUT/e2e-$tag-r$r.json" >"$OUT/e2e-$tag-r$r.txt" 2>&1 || status=1
    echo "4b q4_0 $cfg r$r: $(grep -E 'batch +[0-9]+:' "$OUT/e2e-$tag-r$r.txt" | tr -s ' ')"
  done
done
echo "done at ${SECONDS}s (status $status)"
exit $status
