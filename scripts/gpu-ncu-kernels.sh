#!/usr/bin/env bash
# Nsight Compute details (--set full: throughput, occupancy, warp stall reasons, memory chart) of
# single bench_kernels rows, one launch each: what bounds a kernel before changing it.
#   bash scripts/pack-dists.sh here, then device run, carry [".device", ".dists.tar"]:
#     bash scripts/device-run.sh scripts/gpu-ncu-kernels.sh "FILTER=KERNEL_REGEX" ...
#   FILTER: a bench_kernels --filter substring naming one row; KERNEL_REGEX: the kernel to profile.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-ncu-kernels}"
mkdir -p "$OUT"
source scripts/device-env.sh
export CMAKE_CUDA_ARCHITECTURES=90a GEMMA3_BENCH=1
SECONDS=0
(cd native && node scripts/build.mjs) >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "built at ${SECONDS}s"
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
status=0 i=0
for spec in "$@"; do
  filter=${spec%%=*} kernel=${spec#*=}
  i=$((i + 1))
  timeout 240 "$ncu" --set full --import-source no -k "regex:$kernel" --launch-skip 3 --launch-count 1 \
    "$bench" --filter "$filter" --iters 3 --warmup 2 >"$OUT/ncu-$i.txt" 2>&1 || status=1
  echo "== $i: $filter / $kernel (${SECONDS}s)"
  grep -E "^  [a-z_]+.*\(|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Issue Slots Busy|Executed Ipc Active|Waves Per SM|Grid Size|No Eligible|Block Limit|cycles being stalled" "$OUT/ncu-$i.txt" | cut -c1-260 | head -30
done
exit $status
