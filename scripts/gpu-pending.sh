#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md): builds the addon
# (sm_90a), runs the CUDA tests of the pending parts, then the A/Bs that decide their defaults.
# Under ~10 minutes on one H100/H200. Pending since session 9: GEMMA3_QS_GQX_U=3, 3 blocks a row
# in flight in the q4_0s / q8_0s lane GEMV where x is rounded once into g_qx (the down projections
# and the logits: their long rows in fewer rounds): its cases, the q4_0s / q8_0s rows both ways,
# 4B q4_0 and q8_0 decode both ways. Flip the default in launch_qlane (matmul_gemv.cu) if it wins.
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
vt gqx-u3 "GEMMA3_QS_GQX_U=3" native/test/ops.cuda.test.ts -t "w=q[48]_0s"
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
rows() {  # TAG "VAR=VALUE ..." FILTER
  env $2 timeout 150 "$bench" --filter "$3" --graph-below 1000 >"$OUT/rows-$1.txt" 2>&1 || status=1
  echo "$1 ($2):"
  grep -E "^\| (gemv|gate_up|layer)" "$OUT/rows-$1.txt" | cut -d'|' -f2-5 | tr -s ' '
}
for v in 2 3; do rows "gqx-u$v" "GEMMA3_QS_GQX_U=$v" "q4_0s|q8_0s"; done
echo "kernels done at ${SECONDS}s (status $status)"
for q in q4_0 q8_0; do
  OUT="$OUT/ab-$q" AB_VAR=GEMMA3_QS_GQX_U AB_VALUES="2 3" \
    AB_BENCH="--batch 1 --prefill 0 --quantize $q" bash scripts/gpu-ab.sh --models 4b --rounds 2 || status=1
done
echo "done at ${SECONDS}s (status $status)"
exit $status
