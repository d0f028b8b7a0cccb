// pdl_enabled, compute_capability, sm90_or_newer (pdl.cuh): GEMMA3_PDL read once, the device's
// compute capability once per device.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels/cuda/pdl.cuh"
#include "runtime/env.h"

namespace gemma3::cuda {

bool pdl_enabled() {
  // On unless GEMMA3_PDL=0 (the H100 A/B of session 6, with pipelined decoding: 1B +8-10%, 4B +5%).
  static const bool on = !env_is("GEMMA3_PDL", "0");
  return on && sm90_or_newer();
}

int compute_capability() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cache[kMaxDevices];  // 0 unknown, else 10 * major + minor + 1
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) return 0;
  int state = cache[dev].load(std::memory_order_relaxed);
  if (state == 0) {
    int major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
      return 0;
    }
    state = 10 * major + minor + 1;
    cache[dev].store(state, std::memory_order_relaxed);
  }
  return state - 1;
}

bool sm90_or_newer() { return compute_capability() >= 90; }

}  // namespace gemma3::cuda
