// The RoPE angle tables shared by rope.cc and qk_norm_rope.cc, so both rotate with the same
// rounding (qk_norm_rope promises rope's bits). HF: inv_freq = 1 / base^(arange(0, dim, 2).float()
// / dim), then / factor (linear scaling); cos and sin cast to the activation dtype.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/cpu/cpu_common.h"

namespace gemma3::cpu::detail {

// inv_freq[i] for i < head_dim / 2.
inline void rope_inv_freq(float base, float scale, int64_t head_dim, float* inv_freq) {
  for (int64_t i = 0; i < head_dim / 2; ++i)
    inv_freq[i] = 1.0f / std::pow(base, float(2 * i) / float(head_dim)) / scale;
}

// cs[i], sn[i] at position p, rounded through the activation dtype T as HF does.
template <typename T>
inline void rope_cos_sin(float p, const float* inv_freq, int64_t half, float* cs, float* sn) {
  for (int64_t i = 0; i < half; ++i) {
    const float a = p * inv_freq[i];
    cs[i] = to_f32(from_f32<T>(std::cos(a)));
    sn[i] = to_f32(from_f32<T>(std::sin(a)));
  }
}

}  // namespace gemma3::cpu::detail
