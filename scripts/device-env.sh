# Sourced by the scripts/gpu-*.sh device scripts, from the repository root: the GPU machine has no
# Node (../shared/device), so put the carried one on PATH, unpack the carried node_modules, and
# unpack the built dists when they travel as .dists.tar (scripts/pack-dists.sh).
if ! command -v node >/dev/null; then
  mkdir -p /tmp/bin
  [ -x /tmp/bin/node ] || { xz -dc .device/node.xz >/tmp/bin/node && chmod +x /tmp/bin/node; }
  export PATH=/tmp/bin:$PATH
fi
[ -d node_modules/vitest ] || tar -xJf .device/node_modules.tar.xz
[ ! -f .dists.tar ] || tar -xf .dists.tar

# Helpers of the device scripts (they set OUT first).
# The card, printed and kept in $OUT/gpu.txt.
gpu_header() {
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
}
# A call's start: $OUT made, the card printed, the clock (SECONDS) and the exit status reset.
start_call() {
  mkdir -p "$OUT"
  gpu_header
  SECONDS=0
  status=0
}
# Builds the addon into native/build (CMake options from the environment: CMAKE_CUDA_ARCHITECTURES,
# GEMMA3_BENCH, ...), its log in $OUT/${1:-build.log}; ends the script when the build fails.
build_addon() {
  local log="$OUT/${1:-build.log}"
  (cd native && node scripts/build.mjs) >"$log" 2>&1 || { tail -30 "$log"; exit 1; }
}
# Builds tools/trace/cupti_trace.cc into /tmp/libg3trace.so against the machine's CUPTI.
build_tracer() {
  local inc lib
  inc=$(dirname "$(find / -name cupti.h -not -path '/proc/*' 2>/dev/null | head -1)")
  lib=$(dirname "$(find / -name 'libcupti.so' -not -path '/proc/*' 2>/dev/null | head -1)")
  g++ -O2 -shared -fPIC -I"$inc" -I/usr/local/cuda/include tools/trace/cupti_trace.cc \
    -o /tmp/libg3trace.so -L"$lib" -lcupti \
    -Wl,-rpath,"$lib" || exit 1
}
# run_tests NAME "VAR=VALUE ..." vitest-args...: vitest with CUDA required, log in
# $OUT/tests-NAME.log; prints the count and the failures, sets status=1 on a failure.
run_tests() {
  local name=$1 vars=$2
  shift 2
  env $vars GEMMA3_TEST_CUDA=1 timeout 300 node node_modules/vitest/vitest.mjs run "$@" \
    >"$OUT/tests-$name.log" 2>&1 || status=1
  echo "tests $name: $(grep -E 'Tests ' "$OUT/tests-$name.log" | tail -1 | tr -s ' ') (${SECONDS}s)"
  grep -E "^ *(×|FAIL)" "$OUT/tests-$name.log" | head -10
}
# Model specs: "4b" (bf16) or "4b:q4_0" (quantized layers); random weights at the fixture config's
# shapes. spec_config / spec_quant / spec_tag SPEC print its config path, quantization and a name.
spec_config() { echo "packages/model/test/fixtures/configs/gemma-3-${1%%:*}-it.config.json"; }
spec_quant() { [ "${1#*:}" = "$1" ] || echo "${1#*:}"; }
spec_tag() { echo "${1/:/-}"; }
# decode_step BASE SPEC [decode-step.mjs args]: tools/bench/decode-step.mjs into BASE.json / .err.
decode_step() {
  local base=$1 spec=$2 q
  shift 2
  q=$(spec_quant "$spec")
  timeout 200 node tools/bench/decode-step.mjs "$(spec_config "$spec")" ${q:+--quantize $q} "$@" \
    >"$base.json" 2>"$base.err" || { status=1; tail -3 "$base.err"; }
}
# with_env VAR=VALUE[,VAR=VALUE...] HELPER ARGS...: one of the helpers here with more environment
# variables, in a subshell whose failure (its status) still sets status.
with_env() {
  (
    IFS=, read -ra vars <<<"$1"
    export "${vars[@]}" && shift && "$@" && exit "$status"
  ) || status=1
}
# bench_rows BASE FILTER [bench_kernels args]: the bench_kernels rows matching FILTER (build_addon
# with GEMMA3_BENCH=1 first), graph-timed, into BASE.json / .md / .log; prints the table's rows.
bench_rows() {
  local base=$1 filter=$2 bin
  shift 2
  bin=$(find native/build -name bench_kernels -type f -perm -u+x | head -1)
  timeout 200 "$bin" --filter "$filter" --graph-below 1000 "$@" --json "$base.json" \
    --md "$base.md" >"$base.log" 2>&1 || status=1
  grep -E '^\|' "$base.md" | tail -n +3
}
# cli_bench BASE SPEC: `gemma3 bench` at batch 1 (decode only) into BASE.json / .txt; prints the rate.
# CLI_BENCH_ARGS: more of its arguments (e.g. "--prompt 16000 --tokens 64": decode at long context).
cli_bench() {
  local base=$1 spec=$2 q
  q=$(spec_quant "$spec")
  timeout 200 node apps/cli/dist/cli.js bench --model "random:$(spec_config "$spec")" --device cuda \
    --batch 1 --prefill 0 ${q:+--quantize $q} ${CLI_BENCH_ARGS:-} --json "$base.json" >"$base.txt" 2>&1 || status=1
  echo "$(basename "$base"): $(grep -E 'batch +1:' "$base.txt" | tr -s ' ' | head -1) (${SECONDS}s)"
}
# trace_step BASE SPEC: three replayed steps under the kernel tracer (build_tracer first); writes
# BASE.csv.gz and BASE.md (tools/trace/step-timeline.mjs's table, kernels 20-33 listed).
trace_step() {
  CUDA_INJECTION64_PATH=/tmp/libg3trace.so G3_TRACE_OUT="$1.csv" \
    decode_step "$1" "$2" --steps 3 --only replay
  node tools/trace/step-timeline.mjs "$1.csv" --layer 20 >"$1.md"
  gzip -f "$1.csv"
}
