// Elementwise kernels on CPU (gelu_mul, add, scale, cast): contiguous ranges split over the pool.
#include <cmath>

#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/cpu_kernels.h"
#include "runtime/threadpool.h"

namespace gemma3::cpu {
namespace {
using namespace detail;

constexpr int64_t kGrain = 1 << 14;  // elements per chunk: below this, stay on the caller

Status check_n(const char* kernel, int64_t n) {
  if (n < 0) return invalid(kernel, kv("n", n) + " must be >= 0");
  return Status::Ok();
}

// gelu with the tanh approximation (torch gelu(approximate="tanh")), float32.
inline float gelu_tanh(float x) {
  const float kBeta = 0.7978845608028654f;  // sqrt(2 / pi)
  const float kKappa = 0.044715f;
  const float x_cube = x * x * x;  // torch's operation order
  const float inner = kBeta * (x + kKappa * x_cube);
  return 0.5f * x * (1.0f + std::tanh(inner));
}

}  // namespace

template <typename T>
Status gelu_mul(const T* gate, const T* up, T* out, int64_t rows, int64_t cols, int64_t ld_gate,
                int64_t ld_up) {
  if (rows < 0 || cols <= 0)
    return invalid("gelu_mul",
                   kv("rows", rows) + ", " + kv("cols", cols) + " (need rows >= 0, cols > 0)");
  if (ld_gate < cols || ld_up < cols)
    return invalid("gelu_mul", kv("ld_gate", ld_gate) + ", " + kv("ld_up", ld_up) +
                                   " must be >= " + kv("cols", cols));
  if (rows == 0) return Status::Ok();
  if (gate == nullptr || up == nullptr || out == nullptr)
    return invalid("gelu_mul", "null pointer");
  parallel_for(rows, grain_for(cols * 8, kGrain), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* g = gate + r * ld_gate;
      const T* u = up + r * ld_up;
      T* o = out + r * cols;
      // HF in T: act(gate) is materialized in T, then multiplied by up.
      for (int64_t i = 0; i < cols; ++i)
        o[i] = from_f32<T>(to_f32(from_f32<T>(gelu_tanh(to_f32(g[i])))) * to_f32(u[i]));
    }
  });
  return Status::Ok();
}

template <typename T>
Status add(const T* a, const T* b, T* out, int64_t n) {
  G3_RETURN_IF_ERROR(check_n("add", n));
  if (n == 0) return Status::Ok();
  if (a == nullptr || b == nullptr || out == nullptr) return invalid("add", "null pointer");
  parallel_for(n, kGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) out[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i]));
  });
  return Status::Ok();
}

template <typename T>
Status scale(const T* x, T* out, int64_t n, float s) {
  G3_RETURN_IF_ERROR(check_n("scale", n));
  if (n == 0) return Status::Ok();
  if (x == nullptr || out == nullptr) return invalid("scale", "null pointer");
  parallel_for(n, kGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) out[i] = from_f32<T>(to_f32(x[i]) * s);
  });
  return Status::Ok();
}

template <typename TS, typename TD>
Status cast(const TS* src, TD* dst, int64_t n) {
  G3_RETURN_IF_ERROR(check_n("cast", n));
  if (n == 0) return Status::Ok();
  if (src == nullptr || dst == nullptr) return invalid("cast", "null pointer");
  parallel_for(n, kGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) dst[i] = from_f32<TD>(to_f32(src[i]));
  });
  return Status::Ok();
}

#define G3_ELEMENTWISE(T)                                                                  \
  template Status gelu_mul<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t); \
  template Status add<T>(const T*, const T*, T*, int64_t);                                 \
  template Status scale<T>(const T*, T*, int64_t, float);
G3_ELEMENTWISE(float)
G3_ELEMENTWISE(bf16)
#undef G3_ELEMENTWISE

#define G3_CAST(TS, TD) template Status cast<TS, TD>(const TS*, TD*, int64_t);
#define G3_CAST_TD(TS) G3_CAST(TS, float) G3_CAST(TS, bf16) G3_CAST(TS, f16)
G3_CAST_TD(float)
G3_CAST_TD(bf16)
G3_CAST_TD(f16)
G3_CAST(float, fp8e4m3)  // saturating (dtype.h f32_to_fp8e4m3): fp8 KV cache writes
G3_CAST(bf16, fp8e4m3)
#undef G3_CAST_TD
#undef G3_CAST

}  // namespace gemma3::cpu
