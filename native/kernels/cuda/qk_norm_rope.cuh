// The per-head arithmetic of qk_norm_rope (kernels.inc), shared by its own kernel
// (qk_norm_rope.cu) and by the decode QKV GEMV that norms and rotates each head as soon as its rows
// are done (matmul_gemv.cu, matmul_qk_norm_rope): one code path, so both give the same bits.
// Include only from .cu files.
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/vec.cuh"

namespace gemma3::cuda::qknr {

constexpr int kMaxHeadDim = 512;
// The first kRegVec vectors of each lane's part of a head live in registers (a 256-wide bf16 head
// is one vector a lane); the rest, if any, are loaded as they are used.
constexpr int kRegVec = 2;

// V elements of T at p as float, through L2 only (ld.global.cg): rows another CTA of the same grid
// wrote (after its __threadfence) are read as L2 holds them, never from a stale L1 line.
template <typename T, int V>
__device__ __forceinline__ void load_f32_cg(const T* p, float (&f)[V]) {
  if constexpr (V == 1) {
    if constexpr (sizeof(T) == 4) {
      f[0] = __ldcg(reinterpret_cast<const float*>(p));
    } else {  // bf16: its bits are the top half of the float
      f[0] = __uint_as_float(uint32_t(__ldcg(reinterpret_cast<const unsigned short*>(p))) << 16);
    }
  } else {
    static_assert(V * sizeof(T) % 16 == 0, "vector loads are 16 bytes");
    constexpr int kPer = 16 / sizeof(T);
#pragma unroll
    for (int k = 0; k < V / kPer; ++k)
      vec::unpack16_f32<T>(__ldcg(reinterpret_cast<const uint4*>(p + k * kPer)), f + k * kPer);
  }
}

template <typename T, int V, bool kCg>
__device__ __forceinline__ void load_head(const T* p, float (&f)[V]) {
  if constexpr (kCg) {
    load_f32_cg<T, V>(p, f);
  } else {
    vec::load_f32<T, V>(p, f);
  }
}

// RoPE's T(cos), T(sin) at `pos` for pairs i = i0, i0 + step, ... < D / 2, as rope.cu computes
// them: 1 / base^(2i/D) / scale in float32 (pow in double rounded to float), then accurate sincosf
// of the float32 angle, rounded to T.
// The position-free half, rope.cu's inv_freq of pair i: 1 / base^(2i/D) / scale in float32 (pow in
// double rounded to float). A kernel may compute it before pdl_wait (it reads no step input).
__device__ __forceinline__ float rope_inv_freq(int i, int D, float base, float scale) {
  const float e = float(2 * i) / float(D);
  return (1.0f / float(pow(double(base), double(e)))) / scale;
}
// The other half: T(cos), T(sin) of pos * inv_freq (accurate sincosf of the float32 angle).
template <typename T>
__device__ __forceinline__ void rope_entry(float pos, float inv_freq, float* cs, float* sn) {
  float sv, cv;
  sincosf(pos * inv_freq, &sv, &cv);
  *cs = vec::round_t<T>(cv);
  *sn = vec::round_t<T>(sv);
}
template <typename T>
__device__ __forceinline__ void rope_table(float pos, int D, float base, float scale, float* cs,
                                           float* sn, int i0, int step) {
  for (int i = i0; i < D / 2; i += step)
    rope_entry<T>(pos, rope_inv_freq(i, D, base, scale), cs + i, sn + i);
}

// One warp norms one head and rotates it into dst: norm.cu's warp-per-row rmsnorm (vector
// i = lane + 32·m, the same V, the same butterfly), the normed head rounded to T and staged in x
// (the warp's D floats of shared memory), then rope.cu's rotation of the (i, i + D/2) pairs with
// cs/sn from rope_table. f and wr: the lane's first kRegVec vectors of the head (src) and of its
// norm weight (w), loaded by the caller (early, where latency matters); the rest load here
// (through L2 only when kCg).
template <typename T, int V, bool kCg>
__device__ __forceinline__ void norm_rope_head(const T* src, const float (&f)[kRegVec][V],
                                               const T* w, const float (&wr)[kRegVec][V], T* dst,
                                               float* x, const float* cs, const float* sn, int D,
                                               float eps, int lane) {
  const int half = D / 2, nvec = D / V;
  float acc = 0.0f;
#pragma unroll
  for (int m = 0; m < kRegVec; ++m) {
    const int i = lane + 32 * m;
    if (i < nvec) {
#pragma unroll
      for (int j = 0; j < V; ++j) {
        acc += f[m][j] * f[m][j];
        x[i * V + j] = f[m][j];
      }
    }
  }
  for (int i = lane + 32 * kRegVec; i < nvec; i += 32) {
    float g[V];
    load_head<T, V, kCg>(src + i * V, g);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      acc += g[j] * g[j];
      x[i * V + j] = g[j];
    }
  }
  const float total = vec::warp_reduce(acc, [](float p, float r) { return p + r; });
  const float inv = 1.0f / sqrtf(total / float(D) + eps);
#pragma unroll
  for (int m = 0; m < kRegVec; ++m) {
    const int i = lane + 32 * m;
    if (i < nvec) {
#pragma unroll
      for (int j = 0; j < V; ++j)
        x[i * V + j] = vec::round_t<T>((x[i * V + j] * inv) * (1.0f + wr[m][j]));
    }
  }
  for (int i = lane + 32 * kRegVec; i < nvec; i += 32) {
    float wv[V];
    vec::load_f32<T, V>(w + i * V, wv);
#pragma unroll
    for (int j = 0; j < V; ++j)
      x[i * V + j] = vec::round_t<T>((x[i * V + j] * inv) * (1.0f + wv[j]));
  }
  __syncwarp();
  // rope.cu's rotation of the rounded normed values (no FMA: each op is its own HF tensor op).
  const auto rotate = [&](int i, float& y1, float& y2) {
    const float x1 = x[i], x2 = x[i + half], c = cs[i], s = sn[i];
    y1 = __fsub_rn(vec::round_t<T>(__fmul_rn(x1, c)), vec::round_t<T>(__fmul_rn(x2, s)));
    y2 = __fadd_rn(vec::round_t<T>(__fmul_rn(x2, c)), vec::round_t<T>(__fmul_rn(x1, s)));
  };
  if (half % V == 0) {
    for (int i0 = lane * V; i0 < half; i0 += 32 * V) {
      float y1[V], y2[V];
#pragma unroll
      for (int j = 0; j < V; ++j) rotate(i0 + j, y1[j], y2[j]);
      vec::store_f32<T, V>(dst + i0, y1);
      vec::store_f32<T, V>(dst + i0 + half, y2);
    }
  } else {  // halves of partial vectors (head_dim 8 in bf16): scalar stores
    for (int i = lane; i < half; i += 32) {
      float y1, y2;
      rotate(i, y1, y2);
      dst[i] = from_f32<T>(y1);
      dst[i + half] = from_f32<T>(y2);
    }
  }
}

// What the decode QKV GEMV needs to norm and rotate each head it finishes (matmul_gemv.cu's
// gemv_qk; kernels.inc matmul_qk_norm_rope).
template <typename T>
struct QkEpilogue {
  const T* q_w;
  const T* k_w;
  const int32_t* positions;  // [M]
  T* q_out;                  // [M, q_heads, head_dim]
  T* k_out;                  // [M or kv_capacity, kv_heads, head_dim]
  T* v_out;                  // like k_out, or null: v is not copied
  const int32_t* kv_rows;    // null: row m; else token m's KV row (out of range: skipped)
  int64_t kv_capacity;
  int q_heads, kv_heads, head_dim;
  float eps, base, scale;
};

// One warp copies a head of D = nvec·V elements (v into its cache row).
template <typename T, int V, bool kCg>
__device__ __forceinline__ void copy_head(const T* src, T* dst, int nvec, int lane) {
  for (int i = lane; i < nvec; i += 32) {
    float g[V];
    load_head<T, V, kCg>(src + i * V, g);
    vec::store_f32<T, V>(dst + i * V, g);
  }
}

}  // namespace gemma3::cuda::qknr
