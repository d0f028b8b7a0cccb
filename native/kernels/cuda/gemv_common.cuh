// What the GEMV kernels share (matmul_gemv.cu, matmul_kquant.cu): the CTA shape, the warp sum, the
// end of a row group split over S warps (store_slices), and the per-device SM count their grids
// are sized by.
#pragma once
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "runtime/dtype.h"
#include "runtime/status.h"

namespace gemma3::cuda::detail {

constexpr int kWarps = 8;  // warps per CTA
constexpr int kThreads = kWarps * 32;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The end of a GEMV whose row groups are split over S consecutive warps of the CTA (slices): each
// warp sums its lanes' MT x R accumulators, then the group's first warp (s == 0) adds its S slices
// in a fixed order (deterministic), scales by w_scale (null: none) and writes y rows [n0, n0 + R).
// Called by every thread of the CTA (one barrier); `active`: the group has rows (n0 < N).
template <typename TX, int MT, int R>
__device__ __forceinline__ void store_slices(const float (&acc)[MT][R],
                                             float (&partial)[kWarps][MT * R], int s, int S,
                                             bool active, int64_t n0, int M, int64_t N,
                                             const float* __restrict__ w_scale,
                                             TX* __restrict__ y) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float v = warp_sum(acc[m][r]);
      if (lane == 0) partial[warp][m * R + r] = v;
    }
  __syncthreads();
  if (s == 0 && active && lane < MT * R) {
    const int m = lane / R, r = lane % R;
    const int64_t n = n0 + r;
    if (m < M && n < N) {
      float v = 0.f;
      for (int i = 0; i < S; ++i) v += partial[warp + i][lane];
      if (w_scale != nullptr) v *= __ldg(w_scale + n);
      y[m * N + n] = from_f32<TX>(v);
    }
  }
}

constexpr int kMaxDevices = 64;

// A per-device integer attribute, queried once per device: `cache` holds 0 until known.
template <typename Query>
Status cached_per_device(std::atomic<int>* cache, Query query, int* out) {
  int dev = 0;
  G3_CUDA_RETURN(cudaGetDevice(&dev));
  if (dev >= 0 && dev < kMaxDevices) {
    const int c = cache[dev].load(std::memory_order_relaxed);
    if (c > 0) return *out = c, Status::Ok();
  }
  int c = 0;
  G3_RETURN_IF_ERROR(query(dev, &c));
  if (c <= 0) c = 1;
  if (dev >= 0 && dev < kMaxDevices) cache[dev].store(c, std::memory_order_relaxed);
  *out = c;
  return Status::Ok();
}

// SMs of the current device (queried once per device, shared by every GEMV file).
inline Status sm_count(int* out) {
  static std::atomic<int> cache[kMaxDevices];
  return cached_per_device(
      cache,
      [](int dev, int* c) {
        G3_CUDA_RETURN(cudaDeviceGetAttribute(c, cudaDevAttrMultiProcessorCount, dev));
        return Status::Ok();
      },
      out);
}

}  // namespace gemma3::cuda::detail
