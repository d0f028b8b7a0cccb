#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md): builds the addon
# (sm_90a), runs the CUDA tests of the pending parts, then the A/Bs that decide their defaults.
# Under ~8 minutes on one H100/H200. Pending after session 6: the kernel cases with PDL on by
# default in one run, and the grid_barrier rows (the first measurement toward a persistent
# decode-layer kernel, docs/kernels.md).
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
export CMAKE_CUDA_ARCHITECTURES=90a
(cd native && GEMMA3_BENCH=1 node scripts/build.mjs) >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
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
# The kernel cases with this session's defaults (PDL on): the full-suite run of session 6 ran out of
# time before ops.cuda (it passed 2319 other tests); then the grid barrier rows, never run yet.
vt ops "" native/test/ops.cuda.test.ts
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
timeout 120 "$bench" --filter grid_barrier >"$OUT/grid-barrier.txt" 2>&1 || status=1
grep -E "^\| grid_barrier" "$OUT/grid-barrier.txt" | cut -d'|' -f3,5,6,7
timeout 120 "$bench" --filter layer_chain --graph-below 1000 >"$OUT/layer-chain.txt" 2>&1 || status=1
grep -E "^\| layer_chain" "$OUT/layer-chain.txt" | cut -d'|' -f3,5,8
echo "done at ${SECONDS}s (status $status)"
exit $status
