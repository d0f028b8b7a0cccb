#!/usr/bin/env bash
# Issue 8, q-dot GEMV A/B on the GPU machine, in one call: builds the addon + benchmarks (sm_90a),
# times every `gemv` row with the direct q-dot GEMV (GEMMA3_QDOT_DIRECT=1) and with the default
# staged one, all rows in CUDA graphs (--graph-below 1000: GPU time, not launch cost), plus the
# direct one without PDL and both with the default timing; then the matmul CUDA-vs-CPU cases with
# the default path and the q8_0 / q4_0 ones with the direct path, and prints old vs new per row
# with the % of this card's memcpy_d2d. Usage (device): OUT=... bash scripts/gpu-gemv-ab.sh
# [--no-tests]. A file .gemv-others.patch, if present, is reverted first (others' edits in a
# shared tree).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gemv-ab}"
mkdir -p "$OUT"
source scripts/device-env.sh  # the carried Node, node_modules and dists
# Other sessions' uncommitted edits in the shared tree, reverted in this copy only (optional).
[ -f .gemv-others.patch ] && { patch -R -p1 <.gemv-others.patch >"$OUT/patch.log" 2>&1 || tail -5 "$OUT/patch.log"; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
t0=$(date +%s)
(cd native && CMAKE_CUDA_ARCHITECTURES=90a GEMMA3_BENCH=1 node scripts/build.mjs) >"$OUT/build.log" 2>&1 ||
  { tail -40 "$OUT/build.log"; exit 1; }
echo "build $(($(date +%s) - t0)) s"
bench=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
B="--graph-below 1000"
run() {  # run NAME [ENV=V ...] -- [bench args ...]
  local name=$1 envs=()
  shift
  while [ "$1" != "--" ]; do envs+=("$1") && shift; done
  shift
  env "${envs[@]}" timeout 60 "$bench" --filter gemv --json "$OUT/$name.json" "$@" >"$OUT/$name.log" 2>&1
  echo "bench $name rc $? $(($(date +%s) - t0)) s"
}
timeout 30 "$bench" --filter memcpy --json "$OUT/memcpy.json" >"$OUT/memcpy.log" 2>&1
run new GEMMA3_QDOT_DIRECT=1 -- $B
run old GEMMA3_QDOT_DIRECT=0 -- $B
run new_nopdl GEMMA3_QDOT_DIRECT=1 GEMMA3_PDL=0 -- $B
run new_eager GEMMA3_QDOT_DIRECT=1 --
run old_eager GEMMA3_QDOT_DIRECT=0 --
if [ "${1:-}" != "--no-tests" ]; then
  GEMMA3_TEST_CUDA=1 timeout 90 node node_modules/vitest/vitest.mjs run native/test/ops.cuda.test.ts \
    -t matmul >"$OUT/tests.log" 2>&1
  echo "tests rc $? $(($(date +%s) - t0)) s"
  grep -E "×|FAIL|Tests |Error" "$OUT/tests.log" | head -20
  GEMMA3_QDOT_DIRECT=1 GEMMA3_TEST_CUDA=1 timeout 90 node node_modules/vitest/vitest.mjs run \
    native/test/ops.cuda.test.ts -t "matmul x=.* w=q[48]_0" >"$OUT/tests_direct.log" 2>&1
  echo "tests direct rc $? $(($(date +%s) - t0)) s"
  grep -E "×|FAIL|Tests |Error" "$OUT/tests_direct.log" | head -10
fi
python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
def rows(p):
    try:
        return {(r["shape"], r["dtype"]): r for r in json.load(open(p))["rows"]}
    except Exception as e:
        print("no", p, e); return {}
mc = rows(os.path.join(out, "memcpy.json"))
copy = next((r["achieved"] for r in mc.values()), 0) or 1
V = {n: rows(os.path.join(out, n + ".json")) for n in ["new", "old", "new_nopdl", "new_eager", "old_eager"]}
print(f"memcpy_d2d {copy:.0f} GB/s")
print("| shape | w | old µs | new µs | new no-PDL µs | old GB/s | new GB/s | new % copy | eager old / new µs | err |")
f = lambda r, key: (r or {}).get(key, 0) or 0
for k, n in V["new"].items():
    o, p, eo, en = (V[v].get(k) for v in ["old", "new_nopdl", "old_eager", "new_eager"])
    print(f"| {k[0]} | {k[1]} | {f(o,'median_us'):.1f} | {f(n,'median_us'):.1f} | {f(p,'median_us'):.1f} "
          f"| {f(o,'achieved'):.0f} | {f(n,'achieved'):.0f} | {100*f(n,'achieved')/copy:.0f} "
          f"| {f(eo,'median_us'):.1f} / {f(en,'median_us'):.1f} | {(n or {}).get('error','')}{(o or {}).get('error','')} |")
PY
rm -f "$OUT"/*.log.bench 2>/dev/null; cd "$OUT" && tar -czf logs.tgz *.log && rm -f *.log memcpy.json
