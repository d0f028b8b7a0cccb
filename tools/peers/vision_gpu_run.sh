#!/usr/bin/env bash
# One GPU-machine call for the vision work (issue 6): HF multimodal goldens (CPU float32, written
# into packages/vision/test/fixtures/mm and returned as goldens.tgz), the addon built for sm_90a,
# the CUDA kernel tests of the vision kernels and prefill attention, the multimodal tests on CUDA,
# then SigLIP-So400m timed: HF (tools/peers/siglip_bench.py) and ours
# (packages/vision/bench/siglip_bench.mjs) on the same checkpoint and pixels, in the same call.
#   device run, carry [".device", "native/dist", "packages/*/dist"]: bash tools/peers/vision_gpu_run.sh [--no-goldens]
set -u
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/vision-gpu}"
mkdir -p "$OUT" /tmp/bin
xz -dc .device/node.xz >/tmp/bin/node && chmod +x /tmp/bin/node && export PATH=/tmp/bin:$PATH
tar -xJf .device/node_modules.tar.xz
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv; echo "commit ${GEMMA3_COMMIT:-?}"; } >"$OUT/run.log" 2>&1
gold=""
if [ "${1:-}" != "--no-goldens" ]; then
  python3 tools/reference/vision_model_goldens.py packages/vision/test/fixtures/mm . >"$OUT/goldens.log" 2>&1 &
  gold=$!
fi
(cd native && CMAKE_CUDA_ARCHITECTURES=90a node scripts/build.mjs) >"$OUT/build.log" 2>&1 || tail -40 "$OUT/build.log"
grep "gemma3:" "$OUT/build.log"
if [ -n "$gold" ]; then
  wait "$gold"; cat "$OUT/goldens.log"
  tar -czf "$OUT/goldens.tgz" packages/vision/test/fixtures/mm
fi
vt() { GEMMA3_TEST_CUDA=1 node node_modules/vitest/vitest.mjs run "$@" >>"$OUT/tests.log" 2>&1; }
vt native/test/ops.cuda.test.ts -t "biasAdd|patchify|avgPool2d|attentionPrefill"
vt packages/vision/test/siglip.test.ts packages/model/test/parity.test.ts packages/model/test/spans.test.ts
grep -E "Test Files|Tests |FAIL|×" "$OUT/tests.log" | head -40
python3 tools/peers/siglip_bench.py /tmp/s400 --runs 20 >"$OUT/bench.txt" 2>"$OUT/bench_err.log"
node packages/vision/bench/siglip_bench.mjs /tmp/s400 20 >>"$OUT/bench.txt" 2>>"$OUT/bench_err.log"
cat "$OUT/bench.txt"; tail -5 "$OUT/bench_err.log"
