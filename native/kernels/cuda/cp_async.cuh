// cp.async helpers shared by the staged GEMV kernels (matmul_gemv.cu, matmul_kquant.cu) and the
// attention kernels (attention_prefill.cu, attention_decode.cu).
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

// The shared-state-space address of a generic pointer into shared memory (cp.async, ldmatrix).
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy to shared address `dst` (sm_80+ only: the attention kernels' tensor-core and
// pipelined paths); !valid zero-fills the 16 bytes without reading src (masked keys and rows).
// L2 only, no prefetch hint.
__device__ __forceinline__ void cp_async16_or_zero(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
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
