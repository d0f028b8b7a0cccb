// Row normalizations on CPU (rmsnorm, rmsnorm_add, rmsnorm_add_rmsnorm, layernorm): one row per
// work item, float32 math on a decoded copy of the row, rounded to T at the points kernels.inc
// states.
#include <cmath>

#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/cpu_kernels.h"
#include "runtime/threadpool.h"

namespace gemma3::cpu {
namespace {
using namespace detail;

Status check_rows(const char* kernel, int64_t rows, int64_t dim, float eps) {
  if (rows < 0 || dim <= 0)
    return invalid(kernel, kv("rows", rows) + ", " + kv("dim", dim) + " (need rows >= 0, dim > 0)");
  if (!(eps >= 0.0f)) return invalid(kernel, "eps=" + std::to_string(eps) + " must be >= 0");
  return Status::Ok();
}

// Sum of squares over 16 lanes (order fixed).
float sum_squares(const float* x, int64_t n) { return dot(x, x, n); }

// HF Gemma3RMSNorm in float32: x * rsqrt(mean(x^2) + eps) * (1 + w). xf, wf: [dim] floats.
void rmsnorm_row(const float* xf, const float* wf, float* o, int64_t dim, float eps) {
  const float r = 1.0f / std::sqrt(sum_squares(xf, dim) / float(dim) + eps);
  for (int64_t i = 0; i < dim; ++i) o[i] = (xf[i] * r) * (1.0f + wf[i]);
}

}  // namespace

template <typename T>
Status rmsnorm(const T* x, const T* w, T* out, int64_t rows, int64_t dim, float eps) {
  G3_RETURN_IF_ERROR(check_rows("rmsnorm", rows, dim, eps));
  if (rows == 0) return Status::Ok();
  if (x == nullptr || w == nullptr || out == nullptr) return invalid("rmsnorm", "null pointer");
  parallel_for(rows, grain_for(dim * 4), [&](int64_t b, int64_t e) {
    float* wf = scratch(kScratchA, size_t(dim));
    float* xf = scratch(kScratchB, size_t(dim));
    decode(w, 0, dim, wf);
    for (int64_t r = b; r < e; ++r) {
      decode(x + r * dim, 0, dim, xf);
      rmsnorm_row(xf, wf, xf, dim, eps);
      encode(xf, dim, out + r * dim);
    }
  });
  return Status::Ok();
}

template <typename T>
Status rmsnorm_add(const T* x, const T* w, T* residual, int64_t rows, int64_t dim, float eps) {
  G3_RETURN_IF_ERROR(check_rows("rmsnorm_add", rows, dim, eps));
  if (rows == 0) return Status::Ok();
  if (x == nullptr || w == nullptr || residual == nullptr)
    return invalid("rmsnorm_add", "null pointer");
  parallel_for(rows, grain_for(dim * 4), [&](int64_t b, int64_t e) {
    float* wf = scratch(kScratchA, size_t(dim));
    float* xf = scratch(kScratchB, size_t(dim));
    decode(w, 0, dim, wf);
    for (int64_t r = b; r < e; ++r) {
      decode(x + r * dim, 0, dim, xf);
      rmsnorm_row(xf, wf, xf, dim, eps);
      T* res = residual + r * dim;
      // HF: h = h + norm(r) with norm(r) already cast to T.
      for (int64_t i = 0; i < dim; ++i)
        res[i] = from_f32<T>(to_f32(res[i]) + to_f32(from_f32<T>(xf[i])));
    }
  });
  return Status::Ok();
}

template <typename T>
Status rmsnorm_add_rmsnorm(const T* x, const T* w, T* residual, const T* w_next, T* out,
                           int64_t rows, int64_t dim, float eps) {
  G3_RETURN_IF_ERROR(check_rows("rmsnorm_add_rmsnorm", rows, dim, eps));
  if (rows == 0) return Status::Ok();
  if (x == nullptr || w == nullptr || residual == nullptr || w_next == nullptr || out == nullptr)
    return invalid("rmsnorm_add_rmsnorm", "null pointer");
  parallel_for(rows, grain_for(dim * 8), [&](int64_t b, int64_t e) {
    float* wf = scratch(kScratchA, size_t(dim) * 2);
    float* wn = wf + dim;
    float* xf = scratch(kScratchB, size_t(dim) * 2);
    float* hf = xf + dim;
    decode(w, 0, dim, wf);
    decode(w_next, 0, dim, wn);
    for (int64_t r = b; r < e; ++r) {
      // rmsnorm_add, then rmsnorm of the rounded residual (the values the next op would read).
      decode(x + r * dim, 0, dim, xf);
      rmsnorm_row(xf, wf, xf, dim, eps);
      T* res = residual + r * dim;
      for (int64_t i = 0; i < dim; ++i) {
        res[i] = from_f32<T>(to_f32(res[i]) + to_f32(from_f32<T>(xf[i])));
        hf[i] = to_f32(res[i]);
      }
      rmsnorm_row(hf, wn, hf, dim, eps);
      encode(hf, dim, out + r * dim);
    }
  });
  return Status::Ok();
}

template <typename T>
Status layernorm(const T* x, const T* w, const T* b, T* out, int64_t rows, int64_t dim, float eps) {
  G3_RETURN_IF_ERROR(check_rows("layernorm", rows, dim, eps));
  if (rows == 0) return Status::Ok();
  if (x == nullptr || w == nullptr || b == nullptr || out == nullptr)
    return invalid("layernorm", "null pointer");
  parallel_for(rows, grain_for(dim * 4), [&](int64_t r0, int64_t r1) {
    float* wf = scratch(kScratchA, size_t(dim) * 2);
    float* bf = wf + dim;
    float* xf = scratch(kScratchB, size_t(dim));
    decode(w, 0, dim, wf);
    decode(b, 0, dim, bf);
    for (int64_t r = r0; r < r1; ++r) {
      decode(x + r * dim, 0, dim, xf);
      float sum = 0.f;
      for (int64_t i = 0; i < dim; ++i) sum += xf[i];
      const float mean = sum / float(dim);
      for (int64_t i = 0; i < dim; ++i) xf[i] -= mean;  // two-pass biased variance
      const float rstd = 1.0f / std::sqrt(sum_squares(xf, dim) / float(dim) + eps);
      for (int64_t i = 0; i < dim; ++i) xf[i] = (xf[i] * rstd) * wf[i] + bf[i];
      encode(xf, dim, out + r * dim);
    }
  });
  return Status::Ok();
}

#define G3_NORM(T)                                                                               \
  template Status rmsnorm<T>(const T*, const T*, T*, int64_t, int64_t, float);                   \
  template Status rmsnorm_add<T>(const T*, const T*, T*, int64_t, int64_t, float);               \
  template Status layernorm<T>(const T*, const T*, const T*, T*, int64_t, int64_t, float);       \
  template Status rmsnorm_add_rmsnorm<T>(const T*, const T*, T*, const T*, T*, int64_t, int64_t, \
                                         float);
G3_NORM(float)
G3_NORM(bf16)
#undef G3_NORM

}  // namespace gemma3::cpu
