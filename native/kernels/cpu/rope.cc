// RoPE on CPU, in place, rotate-half layout (HF apply_rotary_pos_emb): one token per work item;
// cos/sin are computed once per token and applied to all its heads.
#include <cmath>

#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/rope_table.h"
#include "runtime/threadpool.h"

namespace gemma3::cpu {
using namespace detail;

template <typename T>
Status rope(T* x, const int32_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
            int64_t ld_token, float base, float scale) {
  if (tokens < 0 || heads <= 0 || head_dim <= 0 || head_dim % 2 != 0)
    return invalid("rope", kv("tokens", tokens) + ", " + kv("heads", heads) + ", " +
                               kv("head_dim", head_dim) +
                               " (need tokens >= 0, heads > 0, head_dim even and > 0)");
  if (ld_token < heads * head_dim)
    return invalid("rope", kv("ld_token", ld_token) +
                               " < heads * head_dim = " + std::to_string(heads * head_dim));
  if (!(base > 0.0f) || !(scale > 0.0f))
    return invalid("rope", "base=" + std::to_string(base) + ", scale=" + std::to_string(scale) +
                               " must be > 0");
  if (tokens == 0) return Status::Ok();
  if (x == nullptr || positions == nullptr) return invalid("rope", "null pointer");
  const int64_t half = head_dim / 2;
  parallel_for(tokens, grain_for(heads * head_dim * 4), [&](int64_t b, int64_t e) {
    float* inv_freq = scratch(kScratchA, size_t(half) * 3);
    float* cs = inv_freq + half;
    float* sn = cs + half;
    rope_inv_freq(base, scale, head_dim, inv_freq);
    for (int64_t t = b; t < e; ++t) {
      rope_cos_sin<T>(float(positions[t]), inv_freq, half, cs, sn);
      for (int64_t h = 0; h < heads; ++h) {
        T* v = x + t * ld_token + h * head_dim;
        for (int64_t i = 0; i < half; ++i) {
          const float x1 = to_f32(v[i]), x2 = to_f32(v[i + half]);
          const float c = cs[i], s = sn[i];
          const float r1 = to_f32(from_f32<T>(x1 * c)) - to_f32(from_f32<T>(x2 * s));
          const float r2 = to_f32(from_f32<T>(x2 * c)) + to_f32(from_f32<T>(x1 * s));
          v[i] = from_f32<T>(r1);
          v[i + half] = from_f32<T>(r2);
        }
      }
    }
  });
  return Status::Ok();
}

template Status rope<float>(float*, const int32_t*, int64_t, int64_t, int64_t, int64_t, float,
                            float);
template Status rope<bf16>(bf16*, const int32_t*, int64_t, int64_t, int64_t, int64_t, float, float);

}  // namespace gemma3::cpu
