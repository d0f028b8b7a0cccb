// Per-head RMSNorm of q and k, then RoPE, with v passed through (kernels.inc qk_norm_rope), on CPU:
// one token per work item. The norm and the rotation repeat norm.cc's rmsnorm and rope.cc's rope
// step for step (same dot order, same cos/sin), so the result equals those two kernels in a row.
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/rope_table.h"
#include "runtime/threadpool.h"

namespace gemma3::cpu {
using namespace detail;

namespace {

// One head: out = rope(T(rmsnorm(x, w))). xf: [head_dim] scratch; cs, sn: [head_dim / 2].
template <typename T>
void norm_rope_head(const T* x, const float* wf, const float* cs, const float* sn, T* out,
                    float* xf, int64_t head_dim, float eps) {
  decode(x, 0, head_dim, xf);
  // norm.cc rmsnorm_row: x * rsqrt(mean(x^2) + eps) * (1 + w), then the cast to T.
  const float r = 1.0f / std::sqrt(dot(xf, xf, head_dim) / float(head_dim) + eps);
  for (int64_t i = 0; i < head_dim; ++i) xf[i] = to_f32(from_f32<T>((xf[i] * r) * (1.0f + wf[i])));
  // rope.cc: each product and sum rounded to T, as HF computes the rotation in T.
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float x1 = xf[i], x2 = xf[i + half], c = cs[i], s = sn[i];
    out[i] = from_f32<T>(to_f32(from_f32<T>(x1 * c)) - to_f32(from_f32<T>(x2 * s)));
    out[i + half] = from_f32<T>(to_f32(from_f32<T>(x2 * c)) + to_f32(from_f32<T>(x1 * s)));
  }
}

}  // namespace

template <typename T>
Status qk_norm_rope(const T* q, const T* k, const T* v, const T* q_w, const T* k_w,
                    const int32_t* positions, T* q_out, T* k_out, T* v_out, const int32_t* kv_rows,
                    int64_t kv_capacity, int64_t tokens, int64_t q_heads, int64_t kv_heads,
                    int64_t head_dim, int64_t ld_q, int64_t ld_k, int64_t ld_v, float eps,
                    float base, float scale) {
  const char* name = "qk_norm_rope";
  if (tokens < 0 || q_heads <= 0 || kv_heads <= 0 || head_dim <= 0 || head_dim % 2 != 0 ||
      head_dim > 512)
    return invalid(name, kv("tokens", tokens) + ", " + kv("q_heads", q_heads) + ", " +
                             kv("kv_heads", kv_heads) + ", " + kv("head_dim", head_dim) +
                             " (need tokens >= 0, heads > 0, head_dim even in (0, 512])");
  const bool copy_v = v_out != nullptr && v_out != v;
  if (ld_q < q_heads * head_dim || ld_k < kv_heads * head_dim ||
      (copy_v && ld_v < kv_heads * head_dim))
    return invalid(name, kv("ld_q", ld_q) + ", " + kv("ld_k", ld_k) + ", " + kv("ld_v", ld_v) +
                             " must cover a token's heads");
  if (!(eps >= 0.0f) || !(base > 0.0f) || !(scale > 0.0f))
    return invalid(name, "eps=" + std::to_string(eps) + " must be >= 0, base=" +
                             std::to_string(base) + " and scale=" + std::to_string(scale) + " > 0");
  if (kv_rows && kv_capacity < 0) return invalid(name, kv("kv_capacity", kv_capacity) + " < 0");
  if (tokens == 0) return Status::Ok();
  if (!q || !k || !q_w || !k_w || !positions || !q_out || !k_out || (copy_v && !v))
    return invalid(name, "null pointer");
  // As copy_rows on the CPU: a KV row past the cache is reported (the CUDA kernel skips it).
  for (int64_t t = 0; kv_rows && t < tokens; ++t)
    if (kv_rows[t] >= kv_capacity)
      return Status(StatusCode::kOutOfRange, std::string(name) + ": kv_rows[" + std::to_string(t) +
                                                 "] = " + std::to_string(kv_rows[t]) +
                                                 " >= capacity " + std::to_string(kv_capacity));
  const int64_t half = head_dim / 2;
  parallel_for(tokens, grain_for((q_heads + 2 * kv_heads) * head_dim * 8),
               [&](int64_t b, int64_t e) {
                 float* wq = scratch(kScratchA, size_t(head_dim) * 3 + size_t(half) * 3);
                 float* wk = wq + head_dim;
                 float* xf = wk + head_dim;
                 float* inv_freq = xf + head_dim;
                 float* cs = inv_freq + half;
                 float* sn = cs + half;
                 decode(q_w, 0, head_dim, wq);
                 decode(k_w, 0, head_dim, wk);
                 rope_inv_freq(base, scale, head_dim, inv_freq);  // rope.cc's tables
                 for (int64_t t = b; t < e; ++t) {
                   rope_cos_sin<T>(float(positions[t]), inv_freq, half, cs, sn);
                   for (int64_t h = 0; h < q_heads; ++h)
                     norm_rope_head(q + t * ld_q + h * head_dim, wq, cs, sn,
                                    q_out + (t * q_heads + h) * head_dim, xf, head_dim, eps);
                   // The k/v row: the token's own, or its KV cache row (skipped when out of range).
                   const int64_t row = kv_rows ? int64_t(kv_rows[t]) : t;
                   if (row < 0) continue;  // a masked slot
                   for (int64_t h = 0; h < kv_heads; ++h)
                     norm_rope_head(k + t * ld_k + h * head_dim, wk, cs, sn,
                                    k_out + (row * kv_heads + h) * head_dim, xf, head_dim, eps);
                   if (copy_v)
                     std::memmove(v_out + row * kv_heads * head_dim, v + t * ld_v,
                                  size_t(kv_heads * head_dim) * sizeof(T));
                 }
               });
  return Status::Ok();
}

template <typename T>
Status matmul_qk_norm_rope(const T* x, const T* w, T* qkv, const T* q_w, const T* k_w,
                           const int32_t* positions, T* q_out, T* k_out, T* v_out,
                           const int32_t* kv_rows, int64_t kv_capacity, int64_t M, int64_t K,
                           int64_t q_heads, int64_t kv_heads, int64_t head_dim, float eps,
                           float base, float scale) {
  const int64_t N = (q_heads + 2 * kv_heads) * head_dim;
  G3_RETURN_IF_ERROR((matmul<T, T>(x, w, nullptr, qkv, M, N, K)));
  return qk_norm_rope<T>(qkv, qkv + q_heads * head_dim, qkv + (q_heads + kv_heads) * head_dim, q_w,
                         k_w, positions, q_out, k_out, v_out, kv_rows, kv_capacity, M, q_heads,
                         kv_heads, head_dim, N, N, N, eps, base, scale);
}

#define G3_QK_NORM_ROPE(T)                                                                      \
  template Status qk_norm_rope<T>(const T*, const T*, const T*, const T*, const T*,             \
                                  const int32_t*, T*, T*, T*, const int32_t*, int64_t, int64_t, \
                                  int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float,  \
                                  float, float);                                                \
  template Status matmul_qk_norm_rope<T>(                                                       \
      const T*, const T*, T*, const T*, const T*, const int32_t*, T*, T*, T*, const int32_t*,   \
      int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float, float, float);
G3_QK_NORM_ROPE(float)
G3_QK_NORM_ROPE(bf16)
#undef G3_QK_NORM_ROPE

}  // namespace gemma3::cpu
