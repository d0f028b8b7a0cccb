#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md): builds the addon
# (sm_90a), runs the CUDA tests of the pending parts, then the A/Bs that decide their defaults.
# Under ~10 minutes on one H100/H200. Pending since session 9: the gated-MLP epilogue
# (matmul_gelu_mul: the gate/up GEMV writes gelu(gate) * up itself, one launch a layer fewer;
# GEMMA3_GELU_EPILOGUE=0 runs matmul then gelu_mul): its cases both ways, the model's CUDA parity
# and fusion tests, the gate_up_gelu / layer_chain rows both ways. Pending since session 8: q8_0s
# with 3 blocks a row in flight where CTAs round x (GEMMA3_Q8S_U=3): its M = 1 cases and rows. The
# decode A/Bs of both are scripts/gpu-pending-ab.sh (a second call).
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
vt gelu "" native/test/ops.cuda.test.ts -t "geluMul"
vt gelu-off "GEMMA3_GELU_EPILOGUE=0" native/test/ops.cuda.test.ts -t "with the projection"
vt q8s-u3 "GEMMA3_Q8S_U=3" native/test/ops.cuda.test.ts -t "w=q8_0s M=1 "
vt model "" packages/model/test/parity.test.ts packages/model/test/fuse.test.ts \
  packages/model/test/layout.test.ts packages/model/test/graph.test.ts
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
rows() {  # TAG "VAR=VALUE ..." FILTER
  env $2 timeout 150 "$bench" --filter "$3" --graph-below 1000 >"$OUT/rows-$1.txt" 2>&1 || status=1
  echo "$1 ($2):"
  grep -E "^\| (gemv|gate_up|layer)" "$OUT/rows-$1.txt" | cut -d'|' -f2-5 | tr -s ' '
}
for v in 0 1; do rows "gelu$v" "GEMMA3_GELU_EPILOGUE=$v" "gate_up_gelu|layer_chain"; done
for v in 2 3; do rows "q8s-u$v" "GEMMA3_Q8S_U=$v" "q8_0s"; done
echo "done at ${SECONDS}s (status $status)"
exit $status
