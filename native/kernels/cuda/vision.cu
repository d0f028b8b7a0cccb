// Vision-encoder kernels on CUDA (contracts: kernels/kernels.inc): the linear-layer bias epilogue
// (bias_add: bias, optional GELU-tanh, optional residual, each step rounded to T as HF does),
// patchify (im2col of a stride = kernel Conv2d) and avg_pool2d over a square row grid. All memory
// bound: bias_add uses 16-byte vectors when the row length and pointers allow.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/vec.cuh"

namespace gemma3::cuda {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kMaxGridY = 65535;
constexpr int64_t kMaxBlocks = 132 * 32;

using vec::aligned16;
using vec::load_f32;
using vec::round_t;
using vec::store_f32;

// blockIdx.x/threadIdx.x cover V-element vectors of a row, blockIdx.y (with a loop) the rows.
template <typename T, int V>
__global__ void __launch_bounds__(kThreads)
    bias_add_kernel(const T* x, const T* bias, const T* residual, T* out, int64_t rows,
                    int64_t cols, bool gelu) {
  const int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  if (i >= cols) return;
  float b[V];
  load_f32<T, V>(bias + i, b);
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    float y[V];
    load_f32<T, V>(x + r * cols + i, y);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      y[j] = round_t<T>(y[j] + b[j]);
      if (gelu) y[j] = round_t<T>(gelu_tanh(y[j]));
    }
    if (residual != nullptr) {
      float res[V];
      load_f32<T, V>(residual + r * cols + i, res);
#pragma unroll
      for (int j = 0; j < V; ++j) y[j] = res[j] + y[j];
    }
    store_f32<T, V>(out + r * cols + i, y);
  }
}

// One thread per output element (grid-stride): out[t, (c * p + ky) * p + kx].
template <typename T>
__global__ void __launch_bounds__(kThreads)
    patchify_kernel(const float* pixels, T* out, int64_t total, int64_t channels, int64_t height,
                    int64_t width, int64_t patch) {
  const int64_t gx = width / patch, gy = height / patch;
  const int64_t row = channels * patch * patch;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / row, j = e % row;
    const int64_t i = t / (gy * gx), py = (t / gx) % gy, px = t % gx;
    const int64_t c = j / (patch * patch), ky = (j / patch) % patch, kx = j % patch;
    out[e] = from_f32<T>(
        pixels[((i * channels + c) * height + py * patch + ky) * width + px * patch + kx]);
  }
}

// One thread per output element (grid-stride); consecutive threads read consecutive channels.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    avg_pool2d_kernel(const T* x, T* out, int64_t total, int64_t side, int64_t channels, int k) {
  const int64_t os = side / k;
  const float area = float(k * k);
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = e % channels, t = e / channels;
    const int64_t i = t / (os * os), oy = (t / os) % os, ox = t % os;
    float acc = 0.f;
    for (int dy = 0; dy < k; ++dy)
      for (int dx = 0; dx < k; ++dx)
        acc += to_f32(x[((i * side + oy * k + dy) * side + ox * k + dx) * channels + c]);
    out[e] = from_f32<T>(acc / area);
  }
}

inline Status invalid(const std::string& msg) { return Status(StatusCode::kInvalidArgument, msg); }

unsigned grid_for(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return unsigned(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

template <typename T, int V>
Status launch_bias_add(const T* x, const T* bias, const T* residual, T* out, int64_t rows,
                       int64_t cols, bool gelu, cudaStream_t stream) {
  const int64_t nvec = cols / V;
  const dim3 grid(unsigned((nvec + kThreads - 1) / kThreads),
                  unsigned(rows < kMaxGridY ? rows : kMaxGridY));
  bias_add_kernel<T, V><<<grid, kThreads, 0, stream>>>(x, bias, residual, out, rows, cols, gelu);
  return check_launch("bias_add");
}

}  // namespace

template <typename T>
Status bias_add(const T* x, const T* bias, const T* residual, T* out, int64_t rows, int64_t cols,
                bool gelu, cudaStream_t stream) {
  if (rows < 0 || cols <= 0) {
    return invalid("bias_add: rows=" + std::to_string(rows) + ", cols=" + std::to_string(cols) +
                   " (need rows >= 0, cols > 0)");
  }
  if (rows == 0) return Status::Ok();
  if (x == nullptr || bias == nullptr || out == nullptr) return invalid("bias_add: null pointer");
  constexpr int V = 16 / sizeof(T);
  const bool vec = cols % V == 0 && aligned16(x) && aligned16(bias) && aligned16(out) &&
                   (residual == nullptr || aligned16(residual));
  if (vec) return launch_bias_add<T, V>(x, bias, residual, out, rows, cols, gelu, stream);
  return launch_bias_add<T, 1>(x, bias, residual, out, rows, cols, gelu, stream);
}

template <typename T>
Status patchify(const float* pixels, T* out, int64_t n, int64_t channels, int64_t height,
                int64_t width, int64_t patch, cudaStream_t stream) {
  if (n < 0 || channels <= 0 || patch <= 0 || height <= 0 || width <= 0 || height % patch != 0 ||
      width % patch != 0) {
    return invalid("patchify: n=" + std::to_string(n) + ", channels=" + std::to_string(channels) +
                   ", height=" + std::to_string(height) + ", width=" + std::to_string(width) +
                   ", patch=" + std::to_string(patch) +
                   " (need n >= 0, positive sizes, H and W multiples of patch)");
  }
  if (n == 0) return Status::Ok();
  if (pixels == nullptr || out == nullptr) return invalid("patchify: null pointer");
  const int64_t total = n * channels * height * width;
  patchify_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(pixels, out, total, channels, height,
                                                               width, patch);
  return check_launch("patchify");
}

template <typename T>
Status avg_pool2d(const T* x, T* out, int64_t n, int64_t side, int64_t channels, int64_t k,
                  cudaStream_t stream) {
  if (n < 0 || side <= 0 || channels <= 0 || k <= 0 || side % k != 0 || k > 65535) {
    return invalid("avg_pool2d: n=" + std::to_string(n) + ", side=" + std::to_string(side) +
                   ", channels=" + std::to_string(channels) + ", k=" + std::to_string(k) +
                   " (need positive sizes and side % k == 0)");
  }
  if (n == 0) return Status::Ok();
  if (x == nullptr || out == nullptr) return invalid("avg_pool2d: null pointer");
  const int64_t os = side / k;
  const int64_t total = n * os * os * channels;
  avg_pool2d_kernel<T>
      <<<grid_for(total), kThreads, 0, stream>>>(x, out, total, side, channels, int(k));
  return check_launch("avg_pool2d");
}

#define G3_VISION(T)                                                                         \
  template Status bias_add<T>(const T*, const T*, const T*, T*, int64_t, int64_t, bool,      \
                              cudaStream_t);                                                 \
  template Status patchify<T>(const float*, T*, int64_t, int64_t, int64_t, int64_t, int64_t, \
                              cudaStream_t);                                                 \
  template Status avg_pool2d<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, cudaStream_t);
G3_VISION(float)
G3_VISION(bf16)
#undef G3_VISION

}  // namespace gemma3::cuda
