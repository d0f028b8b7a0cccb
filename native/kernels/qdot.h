// The q8 activation contract of matmul with q8_0 / q4_0 weights at 1 <= M <= 8 (kernels.inc,
// "q-dot"), shared by both backends: how one block of 32 activations is rounded to int8, and the
// switch that restores the float path (GEMMA3_QDOT=float). This is ggml's CPU arithmetic for these
// weights (quantize_row_q8_0_ref on x: d = amax / 127, q = roundf(x * (1 / d)); then
// ggml_vec_dot_q4_0_q8_0 / _q8_0_q8_0: an exact integer dot per block times d_w d_x), with d_x kept
// in f32 rather than f16. llama.cpp's CUDA MMVQ (quantize_q8_1, vec_dot_q4_0_q8_1) is the same up
// to f16 roundings: it rounds x / d rather than x * (1 / d), stores d_x as f16, and takes q4_0's
// -8 term from the f16 sum of the unrounded x rather than from the int8 values.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "runtime/env.h"

#if defined(__CUDACC__)
#define G3_QDOT_HD __host__ __device__
#else
#define G3_QDOT_HD
#endif

namespace gemma3::qdot {

// Rows of x up to which q8_0 / q4_0 matmuls take the q-dot path (both backends' GEMV bound).
constexpr int64_t kMaxM = 8;

// True unless GEMMA3_QDOT=float (read once per process).
inline bool enabled() {
  static const bool on = !env_is("GEMMA3_QDOT", "float");
  return on;
}

// Scale of one block of activations from amax = max |x| over the block, passed as the bit
// pattern of the non-negative float (so a NaN anywhere wins the max on every backend): d = amax /
// 127 (correctly rounded f32 division), or NaN when amax is not finite (the block then poisons
// every output it feeds, as an inf / NaN activation does on the float path).
G3_QDOT_HD inline float block_scale(uint32_t amax_bits) {
  if (amax_bits >= 0x7f800000u) return NAN;
#if defined(__CUDA_ARCH__)
  const float amax = __uint_as_float(amax_bits);
#else
  float amax;
  std::memcpy(&amax, &amax_bits, 4);
#endif
  return amax / 127.f;
}
// The reciprocal used to round (llama.cpp multiplies by 1/d): 0 when d is 0 or NaN.
G3_QDOT_HD inline float block_inv_scale(float d) { return d > 0.f ? 1.f / d : 0.f; }
// q = round half away from zero of x * id, in [-127, 127] (|x| <= amax; x * id may land a hair
// above 127 and still rounds to 127); 0 when id is 0 (an all-zero or poisoned block).
G3_QDOT_HD inline int8_t quantize_one(float x, float id) {
  return id == 0.f ? int8_t(0) : static_cast<int8_t>(roundf(x * id));
}
// Bit pattern of |x| (for the block max).
G3_QDOT_HD inline uint32_t abs_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x) & 0x7fffffffu;
#else
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u & 0x7fffffffu;
#endif
}

}  // namespace gemma3::qdot
