// pdl_enabled (pdl.cuh): read once per device; GEMMA3_PDL=0 turns programmatic launches off (A/B).
#include <cuda_runtime.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels/cuda/pdl.cuh"

namespace gemma3::cuda {

bool pdl_enabled() {
  static const bool env_on = [] {
    const char* v = std::getenv("GEMMA3_PDL");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  if (!env_on) return false;
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cache[kMaxDevices];  // 0 unknown, 1 off, 2 on
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) return false;
  int state = cache[dev].load(std::memory_order_relaxed);
  if (state == 0) {
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
      return false;
    }
    state = major >= 9 ? 2 : 1;
    cache[dev].store(state, std::memory_order_relaxed);
  }
  return state == 2;
}

}  // namespace gemma3::cuda
