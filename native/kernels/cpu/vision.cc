// Vision-encoder kernels on CPU: the linear-layer bias epilogue (bias_add), image patches as rows
// (patchify, the im2col of a stride = kernel Conv2d) and average pooling of a square row grid
// (avg_pool2d). Contracts: kernels/kernels.inc. Rows split over the pool.
#include <cmath>

#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/cpu_kernels.h"
#include "runtime/threadpool.h"

namespace gemma3::cpu {
namespace {
using namespace detail;

// torch's gelu(approximate="tanh") in float32, the same operation order as elementwise.cc.
inline float gelu_tanh(float x) {
  const float kBeta = 0.7978845608028654f;  // sqrt(2 / pi)
  const float kKappa = 0.044715f;
  const float x_cube = x * x * x;
  const float inner = kBeta * (x + kKappa * x_cube);
  return 0.5f * x * (1.0f + std::tanh(inner));
}

}  // namespace

template <typename T>
Status bias_add(const T* x, const T* bias, const T* residual, T* out, int64_t rows, int64_t cols,
                bool gelu) {
  if (rows < 0 || cols <= 0)
    return invalid("bias_add",
                   kv("rows", rows) + ", " + kv("cols", cols) + " (need rows >= 0, cols > 0)");
  if (rows == 0) return Status::Ok();
  if (x == nullptr || bias == nullptr || out == nullptr) return invalid("bias_add", "null pointer");
  parallel_for(rows, grain_for(cols * (gelu ? 8 : 2)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* xr = x + r * cols;
      const T* rr = residual ? residual + r * cols : nullptr;
      T* o = out + r * cols;
      for (int64_t c = 0; c < cols; ++c) {
        float y = to_f32(from_f32<T>(to_f32(xr[c]) + to_f32(bias[c])));
        if (gelu) y = to_f32(from_f32<T>(gelu_tanh(y)));
        o[c] = from_f32<T>(rr ? to_f32(rr[c]) + y : y);
      }
    }
  });
  return Status::Ok();
}

template <typename T>
Status patchify(const float* pixels, T* out, int64_t n, int64_t channels, int64_t height,
                int64_t width, int64_t patch) {
  if (n < 0 || channels <= 0 || patch <= 0 || height <= 0 || width <= 0 || height % patch != 0 ||
      width % patch != 0)
    return invalid("patchify", kv("n", n) + ", " + kv("channels", channels) + ", " +
                                   kv("height", height) + ", " + kv("width", width) + ", " +
                                   kv("patch", patch) +
                                   " (need n >= 0, positive sizes, H and W multiples of patch)");
  if (n == 0) return Status::Ok();
  if (pixels == nullptr || out == nullptr) return invalid("patchify", "null pointer");
  const int64_t gx = width / patch, gy = height / patch;
  const int64_t row = channels * patch * patch;
  parallel_for(n * gy * gx, grain_for(row), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t i = t / (gy * gx), py = (t / gx) % gy, px = t % gx;
      T* o = out + t * row;
      for (int64_t c = 0; c < channels; ++c)
        for (int64_t ky = 0; ky < patch; ++ky) {
          const float* src = pixels + ((i * channels + c) * height + py * patch + ky) * width;
          for (int64_t kx = 0; kx < patch; ++kx)
            o[(c * patch + ky) * patch + kx] = from_f32<T>(src[px * patch + kx]);
        }
    }
  });
  return Status::Ok();
}

template <typename T>
Status avg_pool2d(const T* x, T* out, int64_t n, int64_t side, int64_t channels, int64_t k) {
  if (n < 0 || side <= 0 || channels <= 0 || k <= 0 || side % k != 0)
    return invalid("avg_pool2d", kv("n", n) + ", " + kv("side", side) + ", " +
                                     kv("channels", channels) + ", " + kv("k", k) +
                                     " (need positive sizes and side % k == 0)");
  if (n == 0) return Status::Ok();
  if (x == nullptr || out == nullptr) return invalid("avg_pool2d", "null pointer");
  const int64_t os = side / k;
  const float area = float(k * k);
  parallel_for(n * os * os, grain_for(k * k * channels), [&](int64_t b, int64_t e) {
    float* acc = scratch(kScratchA, size_t(channels));
    for (int64_t t = b; t < e; ++t) {
      const int64_t i = t / (os * os), oy = (t / os) % os, ox = t % os;
      for (int64_t c = 0; c < channels; ++c) acc[c] = 0.f;
      for (int64_t dy = 0; dy < k; ++dy)
        for (int64_t dx = 0; dx < k; ++dx) {
          const T* src = x + ((i * side + oy * k + dy) * side + ox * k + dx) * channels;
          for (int64_t c = 0; c < channels; ++c) acc[c] += to_f32(src[c]);
        }
      T* o = out + t * channels;
      for (int64_t c = 0; c < channels; ++c) o[c] = from_f32<T>(acc[c] / area);
    }
  });
  return Status::Ok();
}

#define G3_VISION(T)                                                                          \
  template Status bias_add<T>(const T*, const T*, const T*, T*, int64_t, int64_t, bool);      \
  template Status patchify<T>(const float*, T*, int64_t, int64_t, int64_t, int64_t, int64_t); \
  template Status avg_pool2d<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t);
G3_VISION(float)
G3_VISION(bf16)
#undef G3_VISION

}  // namespace gemma3::cpu
