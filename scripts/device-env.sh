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
