// What the GEMV kernels share (matmul_gemv.cu, matmul_kquant.cu): the CTA shape, the warp sum, the
// rows a row group reads (gemv_row) and the end of a row group split over S warps (store_slices),
// with the gated-MLP epilogue (GeluPairs), and the per-device SM count their grids are sized by.
#pragma once
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "kernels/cuda/activation.cuh"
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

// The gated-MLP epilogue (kernels.inc matmul_gelu_mul): W is one [gate; up] projection of N = 2F
// rows, and instead of y [M, N] the GEMV writes out[m, f] = T(gelu_mul(T(y[m, f]), T(y[m, F + f])))
// [M, F], the bits of matmul then gelu_mul. A group of R rows (R even) then reads R / 2 gate rows
// and the R / 2 up rows that pair with them, so both halves of an output land in one warp. The
// group count and each row's sum are the plain GEMV's (same N, same S), only which rows a group
// takes changes. F == 0: off (y written as usual).
template <typename TX>
struct GeluPairs {
  TX* out = nullptr;  // [M, F]
  int64_t F = 0;
};

// The weight row that row r of group g reads: g R + r, or with the epilogue (kGelu) gate row
// g R / 2 + r % (R / 2) for r < R / 2 and its up row (+ F) after. Rows past the end are clamped to
// a real row (their results are dropped).
template <int R, bool kGelu>
__device__ __forceinline__ int64_t gemv_row(int64_t g, int r, int64_t N, int64_t F) {
  if constexpr (!kGelu) {
    const int64_t n = g * R + r;
    return n < N ? n : N - 1;
  } else {
    static_assert(R % 2 == 0, "the epilogue pairs a group's rows");
    constexpr int H = R / 2;
    const int64_t f = g * H + r % H;
    return (f < F ? f : F - 1) + (r < H ? 0 : F);
  }
}

// The gated-MLP epilogue at odd R ("warp pairs"; the lane kernel at R = 5): the G = kWarps / S row
// groups of a CTA (S <= 4, so G is even) pair across warps. Group j < G / 2 of CTA c reads the gate
// rows f = f0 + r, f0 = (c G / 2 + j) R, and group j + G / 2 the up rows F + f of the same f, so
// both halves of an output land in one CTA (store_pairs). Rows past F are clamped as gemv_row's.
__device__ __forceinline__ int64_t gemv_pair_f0(int64_t g, int S, int R) {
  const int G = kWarps / S, H = G / 2;
  const int j = static_cast<int>(g % G);
  return (g / G * H + j % H) * R;
}
__device__ __forceinline__ int64_t gemv_pair_row(int64_t f0, int r, bool up, int64_t F) {
  const int64_t f = f0 + r;
  return (f < F ? f : F - 1) + (up ? F : 0);
}

// The gated epilogue's output from a gate and an up row's sums: matmul rounds both to TX, gelu_mul
// reads them back as float and rounds its result to TX (the bits of those two launches).
template <typename TX>
__device__ __forceinline__ TX gated_out(float gate, float up) {
  return from_f32<TX>(gelu_mul_f32<TX>(to_f32(from_f32<TX>(gate)), to_f32(from_f32<TX>(up))));
}

// Each warp's MT x R sums of its lanes' accumulators into partial[warp], then a CTA barrier.
template <int MT, int R>
__device__ __forceinline__ void warp_partials(const float (&acc)[MT][R],
                                              float (&partial)[kWarps][MT * R]) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float v = warp_sum(acc[m][r]);
      if (lane == 0) partial[warp][m * R + r] = v;
    }
  __syncthreads();
}

// The end of a GEMV whose row groups are split over S consecutive warps of the CTA (slices): each
// warp sums its lanes' MT x R accumulators, then the group's first warp (s == 0) adds its S slices
// in a fixed order (deterministic), scales by w_scale (null: none) and writes y rows [n0, n0 + R),
// or with the epilogue (kGelu) the R / 2 outputs of its row pairs (gemv_row) into gp.out.
// Called by every thread of the CTA (one barrier); `active`: the group has rows (n0 < N).
template <typename TX, int MT, int R, bool kGelu = false>
__device__ __forceinline__ void store_slices(const float (&acc)[MT][R],
                                             float (&partial)[kWarps][MT * R], int s, int S,
                                             bool active, int64_t n0, int M, int64_t N,
                                             const float* __restrict__ w_scale, TX* __restrict__ y,
                                             const GeluPairs<TX>& gp = {}) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  warp_partials<MT, R>(acc, partial);
  if constexpr (!kGelu) {
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
  } else if (s == 0 && active) {  // warp-uniform: the whole warp takes part in the shuffle
    // Lane m R + r holds row r of x row m: for r < R / 2 the gate of output f, R / 2 lanes on its
    // up.
    constexpr int H = R / 2;
    const int m = lane / R, r = lane % R;
    const int64_t f = n0 / R * H + r % H;
    const bool mine = lane < MT * R && m < M && f < gp.F;
    float v = 0.f;
    if (mine) {
      for (int i = 0; i < S; ++i) v += partial[warp + i][lane];
      if (w_scale != nullptr) v *= __ldg(w_scale + (r < H ? f : gp.F + f));
    }
    const float up = __shfl_down_sync(0xffffffffu, v, H);
    if (mine && r < H) gp.out[m * gp.F + f] = gated_out<TX>(v, up);
  }
}

// store_slices for the warp pairs (gemv_pair_f0): the first slice of each gate group sums its S
// slices and those of its up group (warp + G / 2 S) in the same fixed order as store_slices, and
// writes out[m, f] = T(gelu_mul(T(gate), T(up))) for f in [f0, f0 + R): the bits of store_slices'
// epilogue at even R. Called by every thread of the CTA (one barrier).
template <typename TX, int MT, int R>
__device__ __forceinline__ void store_pairs(const float (&acc)[MT][R],
                                            float (&partial)[kWarps][MT * R], int s, int S,
                                            int64_t f0, int M, const float* __restrict__ w_scale,
                                            const GeluPairs<TX>& gp) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  warp_partials<MT, R>(acc, partial);
  const int H = kWarps / S / 2;
  if (s == 0 && warp / S < H && lane < MT * R) {
    const int m = lane / R;
    const int64_t f = f0 + lane % R;
    if (m < M && f < gp.F) {
      float g = 0.f, u = 0.f;
      for (int i = 0; i < S; ++i) g += partial[warp + i][lane];
      for (int i = 0; i < S; ++i) u += partial[warp + H * S + i][lane];
      if (w_scale != nullptr) g *= __ldg(w_scale + f), u *= __ldg(w_scale + gp.F + f);
      gp.out[m * gp.F + f] = gated_out<TX>(g, u);
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
