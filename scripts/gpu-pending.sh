#!/usr/bin/env bash
# One device call for the work written but not yet run on a GPU (docs/kernels.md): builds the addon
# (sm_90a), runs the CUDA tests of the pending parts, then the A/Bs that decide their defaults.
# Under ~10 minutes on one H100/H200. Pending since session 8 (written when its device time was
# spent, never run): q8_0s with 3 blocks a row in flight at M = 1 where CTAs round x
# (GEMMA3_Q8S_U=3, the step that gave q4_0s +3.5%): its M = 1 cases, the q8_0s rows both ways, 4B
# q8_0 decode both ways. Flip the default in launch_qlane (matmul_gemv.cu) if it wins.
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
vt q8s-u3 "GEMMA3_Q8S_U=3" native/test/ops.cuda.test.ts -t "w=q8_0s M=1 "
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
for cfg in "GEMMA3_Q8S_U=2" "GEMMA3_Q8S_U=3"; do
  tag=$(echo "$cfg" | tr -c 'A-Z0-9\n' '_')
  env $cfg timeout 100 "$bench" --filter "q8_0s" --graph-below 1000 >"$OUT/rows-$tag.txt" 2>&1 || status=1
  echo "$cfg: $(grep -E "^\| gemv" "$OUT/rows-$tag.txt" | cut -d'|' -f3,5 | tr -s ' ' | tr '\n' ';')"
done
echo "kernels done at ${SECONDS}s (status $status)"
OUT="$OUT/ab-u" AB_VAR=GEMMA3_Q8S_U AB_VALUES="2 3" \
  AB_BENCH="--batch 1 --prefill 0 --quantize q8_0" bash scripts/gpu-ab.sh --models 4b --rounds 2 || status=1
echo "done at ${SECONDS}s (status $status)"
exit $status
