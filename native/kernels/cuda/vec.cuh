// Device helpers shared by the memory-bound CUDA kernels: 16-byte vector loads/stores of float and
// bf16 rows converted to/from float32, and warp/CTA reductions. Include only from .cu files.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/dtype.h"

namespace gemma3::cuda::vec {

// v rounded to T and back: where HF computes a step in T, the float math rounds there too.
template <typename T>
__device__ __forceinline__ float round_t(float v) {
  return to_f32(from_f32<T>(v));
}

// Pointer alignment, for the launchers' choice between the vector and the scalar kernel.
// 16 bytes is what a uint4 access needs; block formats need only 2 for their 16-bit reads.
__host__ __device__ __forceinline__ bool aligned(const void* p, uintptr_t bytes) {
  return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0;
}
__host__ __device__ __forceinline__ bool aligned16(const void* p) { return aligned(p, 16); }

// Two bf16 packed in a 32-bit word (element 2i in the low half, little endian) as floats.
// bf16 -> float is exact: the bits move to the top half, no conversion instruction.
__device__ __forceinline__ void unpack_bf16x2(uint32_t w, float& lo, float& hi) {
  lo = __uint_as_float(w << 16);
  hi = __uint_as_float(w & 0xffff0000u);
}

// Two floats rounded to bf16 (dtype.h's from_f32: round to nearest even, NaN kept) and packed as
// unpack_bf16x2 reads them, so the bits equal the CPU backend's.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  return uint32_t(from_f32<bf16>(lo).bits) | (uint32_t(from_f32<bf16>(hi).bits) << 16);
}

// 16 bytes of T (float or bf16) as 16 / sizeof(T) floats (unpack16_f32 from a loaded uint4,
// load16_f32 from p, 16-byte aligned), and back. One uint4 access each way; load_f32/store_f32
// below are the interface.
template <typename T>
__device__ __forceinline__ void unpack16_f32(const uint4& u, float* f) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (sizeof(T) == 4) {
      f[i] = __uint_as_float(w[i]);
    } else {
      unpack_bf16x2(w[i], f[2 * i], f[2 * i + 1]);
    }
  }
}
template <typename T>
__device__ __forceinline__ void load16_f32(const T* p, float* f) {
  unpack16_f32<T>(*reinterpret_cast<const uint4*>(p), f);
}
template <typename T>
__device__ __forceinline__ void store16_f32(T* p, const float* f) {
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (sizeof(T) == 4) {
      w[i] = __float_as_uint(f[i]);
    } else {
      w[i] = pack_bf16x2(f[2 * i], f[2 * i + 1]);
    }
  }
  *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}

// V elements of T (float or bf16) at p as float: one scalar load when V == 1, else one 16-byte
// load per 16 bytes (V * sizeof(T) a multiple of 16, p 16-byte aligned). The one-access case
// skips the loop: a one-trip unrolled loop makes NVVM order the kernels' instructions differently.
template <typename T, int V>
__device__ __forceinline__ void load_f32(const T* p, float (&f)[V]) {
  if constexpr (V == 1) {
    f[0] = to_f32(p[0]);
  } else {
    static_assert(V * sizeof(T) % 16 == 0, "vector loads are 16 bytes");
    constexpr int kPer = 16 / sizeof(T);  // elements per 16-byte access
    if constexpr (V == kPer) {
      load16_f32(p, f);
    } else {
#pragma unroll
      for (int k = 0; k < V / kPer; ++k) load16_f32(p + k * kPer, f + k * kPer);
    }
  }
}

// V floats stored at p as T (float or bf16), the mirror of load_f32: bf16 rounds as from_f32.
// One scalar store when V == 1, else one 16-byte store per 16 bytes (p 16-byte aligned).
template <typename T, int V>
__device__ __forceinline__ void store_f32(T* p, const float (&f)[V]) {
  if constexpr (V == 1) {
    p[0] = from_f32<T>(f[0]);
  } else {
    static_assert(V * sizeof(T) % 16 == 0, "vector stores are 16 bytes");
    constexpr int kPer = 16 / sizeof(T);
    if constexpr (V == kPer) {
      store16_f32(p, f);
    } else {
#pragma unroll
      for (int k = 0; k < V / kPer; ++k) store16_f32(p + k * kPer, f + k * kPer);
    }
  }
}

// V elements of T kept as loaded (raw bits, half the registers of floats for bf16) and converted
// on use: loads issued early, long before their values are needed. Same accesses as load_f32.
template <typename T, int V>
struct alignas(V * sizeof(T) % 16 == 0 ? 16 : alignof(T)) Packed {
  T v[V];
};
template <typename T, int V>
__device__ __forceinline__ Packed<T, V> load_packed(const T* p) {
  Packed<T, V> r;
  if constexpr (V == 1) {
    r.v[0] = p[0];
  } else {
    static_assert(V * sizeof(T) % 16 == 0, "vector loads are 16 bytes");
    constexpr int kPer = 16 / sizeof(T);
#pragma unroll
    for (int k = 0; k < V / kPer; ++k) {
      *reinterpret_cast<uint4*>(r.v + k * kPer) = *reinterpret_cast<const uint4*>(p + k * kPer);
    }
  }
  return r;
}
template <typename T, int V>
__device__ __forceinline__ void unpack(const Packed<T, V>& r, float (&f)[V]) {
#pragma unroll
  for (int j = 0; j < V; ++j) f[j] = to_f32(r.v[j]);
}

// Butterfly (xor) reduction over the 32 lanes of a full warp; every lane gets the result.
// The combining order is fixed, so float sums are reproducible run to run.
template <typename R, typename Op>
__device__ __forceinline__ R warp_reduce(R v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// CTA-wide reduction (blockDim.x a multiple of 32); every thread gets the result. red: 32 slots
// of shared memory, safe to reuse at once (the leading barrier waits for earlier readers).
template <typename R, typename Op>
__device__ __forceinline__ R block_reduce(R v, Op op, R identity, R* red) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  v = warp_reduce(v, op);
  __syncthreads();  // red may still be read by the previous reduction
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < int(blockDim.x >> 5) ? red[lane] : identity;
  return warp_reduce(v, op);
}

}  // namespace gemma3::cuda::vec
