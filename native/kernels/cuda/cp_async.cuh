// cp.async helpers shared by the staged GEMV kernels (matmul_gemv.cu, matmul_kquant.cu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace gemma3::cuda::detail {

// 16-byte async copy of the first `bytes` (1..16) bytes at gmem (16-byte aligned) to smem, the rest
// zero-filled: never reads past the valid range. L2 only (W is read once), 256-byte L2 prefetch.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
               "r"(bytes)
               : "memory");
#else
  uint8_t* d = static_cast<uint8_t*>(smem);
  const uint8_t* g = static_cast<const uint8_t*>(gmem);
  for (int i = 0; i < 16; ++i) d[i] = i < bytes ? g[i] : 0;
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most N of this thread's copy groups are pending.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

}  // namespace gemma3::cuda::detail
