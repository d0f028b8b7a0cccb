// Attention on CPU (ragged prefill, paged decode). A work item is one query token and a group of
// query heads that share a kv head (GQA), so each key/value row is decoded once per item.
// Two-pass softmax in float32: scores for the visible keys into scratch, max, exp, sum, then
// P.V accumulated in float32 and rounded once.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/cpu_kernels.h"
#include "runtime/threadpool.h"

namespace gemma3::cpu {
namespace {
using namespace detail;

constexpr int64_t kMaxHeadDim = 512;

// Attends G query heads over n keys. q: G rows of T (row stride q_stride); key(j) / val(j): the
// row of key j (TKV elements), or nullptr for a key that must be skipped; out: G rows of D (stride
// out_stride). An fp8 row is float(e4m3) * k_scale (v_scale for values); other rows are unscaled.
// A query that sees no key gets zeros.
template <typename T, typename TKV, typename KeyFn, typename ValFn>
void attend(const T* q, int64_t q_stride, int64_t G, int64_t D, int64_t n, const KeyFn& key,
            const ValFn& val, float sm_scale, float k_scale, float v_scale, T* out,
            int64_t out_stride) {
  float* qf = scratch(kScratchA, size_t(G * D + D + G));
  float* row = qf + G * D;
  float* inv_sum = row + D;
  float* scores = scratch(kScratchB, size_t(G * std::max<int64_t>(n, 1)));
  float* acc = scratch(kScratchC, size_t(G * D));
  for (int64_t g = 0; g < G; ++g) decode(q + g * q_stride, 0, D, qf + g * D);
  auto row_of = [&](const TKV* p, float s) -> const float* {
    if constexpr (std::is_same_v<TKV, float>) {
      return p;
    } else {
      decode(p, 0, D, row);
      if constexpr (std::is_same_v<TKV, fp8e4m3>)
        for (int64_t d = 0; d < D; ++d) row[d] *= s;
      return row;
    }
  };
  for (int64_t j = 0; j < n; ++j) {
    const TKV* kp = key(j);
    if (kp == nullptr) {
      for (int64_t g = 0; g < G; ++g) scores[g * n + j] = -INFINITY;
      continue;
    }
    const float* kr = row_of(kp, k_scale);
    for (int64_t g = 0; g < G; ++g) scores[g * n + j] = dot(qf + g * D, kr, D) * sm_scale;
  }
  for (int64_t g = 0; g < G; ++g) {
    float* s = scores + g * n;
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; ++j) mx = std::max(mx, s[j]);
    float sum = 0.f;
    if (mx == -INFINITY) {  // nothing visible
      for (int64_t j = 0; j < n; ++j) s[j] = 0.f;
    } else {
      for (int64_t j = 0; j < n; ++j) {
        s[j] = std::exp(s[j] - mx);
        sum += s[j];
      }
    }
    inv_sum[g] = sum > 0.f ? 1.0f / sum : 0.f;
    for (int64_t d = 0; d < D; ++d) acc[g * D + d] = 0.f;
  }
  for (int64_t j = 0; j < n; ++j) {
    const TKV* vp = val(j);
    if (vp == nullptr) continue;
    bool any = false;
    for (int64_t g = 0; g < G; ++g) any |= scores[g * n + j] != 0.f;
    if (!any) continue;
    const float* vr = row_of(vp, v_scale);
    for (int64_t g = 0; g < G; ++g) axpy(scores[g * n + j], vr, acc + g * D, D);
  }
  for (int64_t g = 0; g < G; ++g)
    for (int64_t d = 0; d < D; ++d)
      out[g * out_stride + d] = from_f32<T>(acc[g * D + d] * inv_sum[g]);
}

Status check_heads(const char* kernel, int64_t num_qo_heads, int64_t num_kv_heads,
                   int64_t head_dim) {
  if (num_qo_heads <= 0 || num_kv_heads <= 0 || num_qo_heads % num_kv_heads != 0)
    return invalid(kernel, kv("num_qo_heads", num_qo_heads) + ", " +
                               kv("num_kv_heads", num_kv_heads) +
                               " (need > 0, num_qo_heads a multiple of num_kv_heads)");
  if (head_dim <= 0 || head_dim > kMaxHeadDim)
    return unsupported(kernel, kv("head_dim", head_dim) + " (CPU supports 1..512)");
  return Status::Ok();
}

// KV dequantization scales: finite and > 0; exactly 1 for an unscaled (TKV == T) cache, so a scale
// meant for an fp8 cache is never silently ignored.
Status check_kv_scales(const char* kernel, bool unscaled, float k_scale, float v_scale) {
  const bool ok = unscaled ? (k_scale == 1.0f && v_scale == 1.0f)
                           : (std::isfinite(k_scale) && k_scale > 0.0f && std::isfinite(v_scale) &&
                              v_scale > 0.0f);
  if (ok) return Status::Ok();
  return invalid(kernel, "k_scale=" + std::to_string(k_scale) +
                             ", v_scale=" + std::to_string(v_scale) +
                             (unscaled ? " (must be 1 for a cache of the query's dtype)"
                                       : " (must be finite and > 0)"));
}

// indptr: [batch + 1], non-negative, non-decreasing and at most `total` (the rows it indexes).
// Host memory on this backend, so bad data is reported rather than clamped as on CUDA.
Status check_indptr(const char* kernel, const char* name, const int32_t* indptr, int64_t batch,
                    int64_t total, const char* total_name) {
  if (indptr == nullptr) return invalid(kernel, std::string(name) + " is null");
  if (indptr[0] < 0)
    return invalid(kernel, std::string(name) + "[0] = " + std::to_string(indptr[0]) + " < 0");
  for (int64_t b = 0; b < batch; ++b)
    if (indptr[b + 1] < indptr[b])
      return invalid(kernel, std::string(name) + " decreases at " + kv("b", b) + " (" +
                                 std::to_string(indptr[b]) + " -> " +
                                 std::to_string(indptr[b + 1]) + ")");
  if (indptr[batch] > total)
    return invalid(kernel, std::string(name) + "[" + std::to_string(batch) + "] = " +
                               std::to_string(indptr[batch]) + " exceeds " + kv(total_name, total));
  return Status::Ok();
}

}  // namespace

template <typename T>
Status attention_prefill(const T* q, const T* k, const T* v, T* out, const int32_t* qo_indptr,
                         const int32_t* kv_indptr, const int32_t* kv_last, int64_t batch,
                         int64_t total_q, int64_t total_kv, int64_t max_q_len, int64_t num_qo_heads,
                         int64_t num_kv_heads, int64_t head_dim, int64_t ld_q, int64_t ld_k,
                         int64_t ld_v, float sm_scale, int32_t window, bool causal) {
  const char* kName = "attention_prefill";
  if (batch < 0 || total_q < 0 || total_kv < 0 || max_q_len < 0)
    return invalid(kName, kv("batch", batch) + ", " + kv("total_q", total_q) + ", " +
                              kv("total_kv", total_kv) + ", " + kv("max_q_len", max_q_len) +
                              " must be >= 0");
  G3_RETURN_IF_ERROR(check_heads(kName, num_qo_heads, num_kv_heads, head_dim));
  if (ld_q < num_qo_heads * head_dim || ld_k < num_kv_heads * head_dim ||
      ld_v < num_kv_heads * head_dim)
    return invalid(kName, kv("ld_q", ld_q) + ", " + kv("ld_k", ld_k) + ", " + kv("ld_v", ld_v) +
                              " smaller than heads * head_dim");
  if (window < 0) return invalid(kName, kv("window", window) + " must be >= 0");
  if (!causal && (window != 0 || kv_last != nullptr))
    return invalid(kName, "non-causal attention takes window=0 and no kv_last");
  if (batch == 0 || max_q_len == 0) return Status::Ok();
  // After these checks every q/out row touched is in [0, total_q) and every k/v row in
  // [0, total_kv); kv_last only narrows a range already inside its sequence.
  G3_RETURN_IF_ERROR(check_indptr(kName, "qo_indptr", qo_indptr, batch, total_q, "total_q"));
  G3_RETURN_IF_ERROR(check_indptr(kName, "kv_indptr", kv_indptr, batch, total_kv, "total_kv"));
  for (int64_t b = 0; b < batch; ++b)
    if (qo_indptr[b + 1] - qo_indptr[b] > max_q_len)
      return invalid(kName, "q_len " + std::to_string(qo_indptr[b + 1] - qo_indptr[b]) + " of " +
                                kv("b", b) + " exceeds " + kv("max_q_len", max_q_len));
  if (q == nullptr || k == nullptr || v == nullptr || out == nullptr)
    return invalid(kName, "null pointer");

  const int64_t group = num_qo_heads / num_kv_heads, D = head_dim;
  const int64_t q0 = qo_indptr[0], tokens = qo_indptr[batch] - q0;
  const int64_t items = tokens * num_kv_heads;
  const int64_t max_kv = kv_indptr[batch] - kv_indptr[0];
  parallel_for(
      items, grain_for(group * D * std::max<int64_t>(max_kv, 1) * 2, 1 << 16),
      [&](int64_t i0, int64_t i1) {
        for (int64_t it = i0; it < i1; ++it) {
          const int64_t t = q0 + it / num_kv_heads, hk = it % num_kv_heads;
          // Sequence of token t: the last b with qo_indptr[b] <= t (empty sequences skipped).
          const int64_t b =
              (std::upper_bound(qo_indptr, qo_indptr + batch + 1, int32_t(t)) - qo_indptr) - 1;
          const int64_t q_len = qo_indptr[b + 1] - qo_indptr[b];
          const int64_t kv_len = kv_indptr[b + 1] - kv_indptr[b];
          const int64_t p = kv_len - q_len + (t - qo_indptr[b]);
          int64_t lo = 0, hi = kv_len - 1;  // visible keys [lo, hi], contiguous
          if (causal) {
            int64_t last = p;
            if (kv_last != nullptr) last = std::max<int64_t>(last, kv_last[t]);
            hi = std::min(hi, last);
            if (window > 0) lo = std::max<int64_t>(0, p - window + 1);
          }
          const int64_t n = std::max<int64_t>(0, hi - lo + 1);
          const T* kb = k + (kv_indptr[b] + lo) * ld_k + hk * D;
          const T* vb = v + (kv_indptr[b] + lo) * ld_v + hk * D;
          attend<T, T>(
              q + t * ld_q + hk * group * D, D, group, D, n,
              [&](int64_t j) { return kb + j * ld_k; }, [&](int64_t j) { return vb + j * ld_v; },
              sm_scale, 1.0f, 1.0f, out + t * num_qo_heads * D + hk * group * D, D);
        }
      });
  return Status::Ok();
}

namespace {
// attention_decode's checks (also attention_decode_qkv's, before its prologue writes anything).
Status check_decode(const char* kName, bool same_dtype, const void* q, const void* k_cache,
                    const void* v_cache, const void* out, const int32_t* kv_indptr,
                    const int32_t* kv_indices, const int32_t* kv_len, int64_t batch,
                    int64_t num_qo_heads, int64_t num_kv_heads, int64_t head_dim, int64_t page_size,
                    int64_t num_pages, int64_t num_indices, int64_t max_kv_len, float k_scale,
                    float v_scale, int32_t window) {
  if (batch < 0 || page_size <= 0 || num_pages < 0 || num_indices < 0 || max_kv_len < 0)
    return invalid(kName, kv("batch", batch) + ", " + kv("page_size", page_size) + ", " +
                              kv("num_pages", num_pages) + ", " + kv("num_indices", num_indices) +
                              ", " + kv("max_kv_len", max_kv_len) +
                              " (need page_size > 0, the others >= 0)");
  G3_RETURN_IF_ERROR(check_heads(kName, num_qo_heads, num_kv_heads, head_dim));
  if (window < 0) return invalid(kName, kv("window", window) + " must be >= 0");
  G3_RETURN_IF_ERROR(check_kv_scales(kName, same_dtype, k_scale, v_scale));
  if (batch == 0) return Status::Ok();
  G3_RETURN_IF_ERROR(
      check_indptr(kName, "kv_indptr", kv_indptr, batch, num_indices, "num_indices"));
  if (q == nullptr || k_cache == nullptr || v_cache == nullptr || out == nullptr ||
      kv_indices == nullptr || kv_len == nullptr)
    return invalid(kName, "null pointer");
  return Status::Ok();
}
}  // namespace

template <typename T, typename TKV>
Status attention_decode(const T* q, const TKV* k_cache, const TKV* v_cache, T* out,
                        const int32_t* kv_indptr, const int32_t* kv_indices, const int32_t* kv_len,
                        int64_t batch, int64_t num_qo_heads, int64_t num_kv_heads, int64_t head_dim,
                        int64_t page_size, int64_t num_pages, int64_t num_indices,
                        int64_t max_kv_len, float sm_scale, float k_scale, float v_scale,
                        int32_t window, float* workspace, int64_t workspace_floats) {
  (void)workspace;  // the CPU kernel does not split KV
  (void)workspace_floats;
  G3_RETURN_IF_ERROR(check_decode("attention_decode", std::is_same_v<T, TKV>, q, k_cache, v_cache,
                                  out, kv_indptr, kv_indices, kv_len, batch, num_qo_heads,
                                  num_kv_heads, head_dim, page_size, num_pages, num_indices,
                                  max_kv_len, k_scale, v_scale, window));
  if (batch == 0) return Status::Ok();

  const int64_t group = num_qo_heads / num_kv_heads, D = head_dim;
  // Heads per item: the whole GQA group when there are enough items to fill the pool, else one
  // head per item (batch-1 decode with one kv head must still use every thread).
  const int64_t gs = batch * num_kv_heads >= 2 * num_threads() ? group : 1;
  const int64_t per_kv = group / gs;
  const int64_t items = batch * num_kv_heads * per_kv;
  const int64_t token_stride = num_kv_heads * D;
  parallel_for(items, grain_for(gs * D * std::max<int64_t>(max_kv_len, 1) * 2, 1 << 16),
               [&](int64_t i0, int64_t i1) {
                 for (int64_t it = i0; it < i1; ++it) {
                   const int64_t b = it / (num_kv_heads * per_kv);
                   const int64_t hk = (it / per_kv) % num_kv_heads, g0 = (it % per_kv) * gs;
                   const int32_t* pages = kv_indices + kv_indptr[b];
                   const int64_t num_pages_b = kv_indptr[b + 1] - kv_indptr[b];
                   // Guard: never read past the sequence's page list.
                   const int64_t len =
                       std::min<int64_t>(std::max<int32_t>(kv_len[b], 0), num_pages_b * page_size);
                   const int64_t lo = window > 0 ? std::max<int64_t>(0, len - window) : 0;
                   auto slot = [&](const TKV* cache, int64_t j) -> const TKV* {
                     const int64_t s = lo + j;
                     const int64_t page = pages[s / page_size];
                     // A page index outside the cache masks its slot: skipped, never read.
                     if (page < 0 || page >= num_pages) return nullptr;
                     return cache + ((page * page_size + s % page_size) * token_stride) + hk * D;
                   };
                   const int64_t h0 = hk * group + g0;
                   attend<T, TKV>(
                       q + (b * num_qo_heads + h0) * D, D, gs, D, len - lo,
                       [&](int64_t j) { return slot(k_cache, j); },
                       [&](int64_t j) { return slot(v_cache, j); }, sm_scale, k_scale, v_scale,
                       out + (b * num_qo_heads + h0) * D, D);
                 }
               });
  return Status::Ok();
}

// Decode attention with its prologue (kernels.inc attention_decode_qkv): the composition itself
// (the CPU has no launch boundary to save), the attention's checks first so that a refused call
// writes neither q nor the cache rows.
template <typename T>
Status attention_decode_qkv(const T* qkv, const T* q_w, const T* k_w, const int32_t* positions,
                            const int32_t* kv_rows, T* q, T* k_cache, T* v_cache, T* out,
                            const int32_t* kv_indptr, const int32_t* kv_indices,
                            const int32_t* kv_len, int64_t batch, int64_t num_qo_heads,
                            int64_t num_kv_heads, int64_t head_dim, int64_t page_size,
                            int64_t num_pages, int64_t num_indices, int64_t max_kv_len,
                            float sm_scale, int32_t window, float eps, float base, float scale,
                            float* workspace, int64_t workspace_floats) {
  const int64_t hq = num_qo_heads, hkv = num_kv_heads, D = head_dim, ld = (hq + 2 * hkv) * D;
  G3_RETURN_IF_ERROR(check_decode("attention_decode", true, q, k_cache, v_cache, out, kv_indptr,
                                  kv_indices, kv_len, batch, hq, hkv, D, page_size, num_pages,
                                  num_indices, max_kv_len, 1.0f, 1.0f, window));
  G3_RETURN_IF_ERROR(qk_norm_rope<T>(qkv, qkv + hq * D, qkv + (hq + hkv) * D, q_w, k_w, positions,
                                     q, k_cache, v_cache, kv_rows, num_pages * page_size, batch, hq,
                                     hkv, D, ld, ld, ld, eps, base, scale));
  return attention_decode<T, T>(q, k_cache, v_cache, out, kv_indptr, kv_indices, kv_len, batch, hq,
                                hkv, D, page_size, num_pages, num_indices, max_kv_len, sm_scale,
                                1.0f, 1.0f, window, workspace, workspace_floats);
}

#define G3_PREFILL(T)                                                                             \
  template Status attention_prefill<T>(const T*, const T*, const T*, T*, const int32_t*,          \
                                       const int32_t*, const int32_t*, int64_t, int64_t, int64_t, \
                                       int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,      \
                                       int64_t, float, int32_t, bool);
#define G3_DECODE(T, TKV)                                                                        \
  template Status attention_decode<T, TKV>(const T*, const TKV*, const TKV*, T*, const int32_t*, \
                                           const int32_t*, const int32_t*, int64_t, int64_t,     \
                                           int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, \
                                           float, float, float, int32_t, float*, int64_t);
G3_PREFILL(float)
G3_PREFILL(bf16)
G3_DECODE(float, float)
G3_DECODE(bf16, bf16)
template Status attention_decode_qkv<float>(const float*, const float*, const float*,
                                            const int32_t*, const int32_t*, float*, float*, float*,
                                            float*, const int32_t*, const int32_t*, const int32_t*,
                                            int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                            int64_t, int64_t, float, int32_t, float, float, float,
                                            float*, int64_t);
template Status attention_decode_qkv<bf16>(const bf16*, const bf16*, const bf16*, const int32_t*,
                                           const int32_t*, bf16*, bf16*, bf16*, bf16*,
                                           const int32_t*, const int32_t*, const int32_t*, int64_t,
                                           int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                           int64_t, float, int32_t, float, float, float, float*,
                                           int64_t);
G3_DECODE(float, fp8e4m3)
G3_DECODE(bf16, fp8e4m3)
#undef G3_DECODE
#undef G3_PREFILL

}  // namespace gemma3::cpu
