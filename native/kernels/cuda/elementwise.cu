// CUDA elementwise kernels: gated GELU (tanh) and add/scale. Memory bound: 16-byte vectors when
// sizes and pointers allow (scalar tails otherwise), grid-stride loops over a capped grid.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/vec.cuh"

namespace gemma3::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 132 * 32;  // ~32 CTAs per H100 SM; grid-stride beyond
constexpr unsigned kMaxGridY = 65535;

using vec::aligned16;
using vec::load_f32;
using vec::store_f32;

// gate: [rows, cols] stride ld_gate; up: [rows, cols] stride ld_up; out: [rows, cols] contiguous.
// blockIdx.x/threadIdx.x cover the vectors of a row, blockIdx.y (with a loop) the rows.
template <typename T, int V>
__global__ void __launch_bounds__(kThreads)
    gelu_mul_kernel(const T* gate, const T* up, T* out, int64_t rows, int64_t cols, int64_t ld_gate,
                    int64_t ld_up) {
  pdl_wait();  // pdl.cuh: inputs come from the kernel before
  pdl_trigger();
  const int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  if (i >= cols) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    float g[V], u[V], y[V];
    load_f32<T, V>(gate + r * ld_gate + i, g);
    load_f32<T, V>(up + r * ld_up + i, u);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      y[j] = gelu_mul_f32<T>(g[j], u[j]);
    }
    store_f32<T, V>(out + r * cols + i, y);
  }
}

enum class BinOp { kAdd, kScale };

// out[i] = T(a[i] + b[i]) or T(a[i] * s) over n elements; V-element vectors over the first
// n / V * V elements (pointers 16-byte aligned when V > 1), scalar tail after.
template <typename T, int V, BinOp kOp>
__global__ void __launch_bounds__(kThreads)
    binary_kernel(const T* a, const T* b, T* out, int64_t n, float s) {
  pdl_wait();  // pdl.cuh: inputs come from the kernel before
  pdl_trigger();
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  const int64_t nvec = n / V;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < nvec; i += step) {
    float x[V], y[V];
    load_f32<T, V>(a + i * V, x);
    if constexpr (kOp == BinOp::kAdd) {
      load_f32<T, V>(b + i * V, y);
#pragma unroll
      for (int j = 0; j < V; ++j) y[j] = x[j] + y[j];
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) y[j] = x[j] * s;
    }
    store_f32<T, V>(out + i * V, y);
  }
  if constexpr (V > 1) {
    const int64_t t = nvec * V + int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (t < n) {
      const float x = to_f32(a[t]);
      out[t] = from_f32<T>(kOp == BinOp::kAdd ? x + to_f32(b[t]) : x * s);
    }
  }
}

inline Status invalid(const std::string& msg) { return Status(StatusCode::kInvalidArgument, msg); }

template <typename T, int V>
Status launch_gelu_mul(const T* gate, const T* up, T* out, int64_t rows, int64_t cols,
                       int64_t ld_gate, int64_t ld_up, cudaStream_t stream) {
  const int64_t nvec = cols / V;
  const dim3 grid(unsigned((nvec + kThreads - 1) / kThreads),
                  unsigned(rows < kMaxGridY ? rows : kMaxGridY));
  launch_pdl(gelu_mul_kernel<T, V>, grid, kThreads, 0, stream, gate, up, out, rows, cols, ld_gate,
             ld_up);
  return check_launch("gelu_mul");
}

template <typename T, BinOp kOp>
Status launch_binary(const T* a, const T* b, T* out, int64_t n, float s, cudaStream_t stream,
                     const char* name) {
  if (n < 0) return invalid(std::string(name) + ": n must be >= 0 (n=" + std::to_string(n) + ")");
  if (n == 0) return Status::Ok();
  if (!a || !out || (kOp == BinOp::kAdd && !b)) {
    return invalid(std::string(name) + ": null pointer");
  }
  constexpr int V = 16 / sizeof(T);
  const bool vec = aligned16(a) && aligned16(out) && (kOp != BinOp::kAdd || aligned16(b));
  const int64_t items = vec ? (n / V > 0 ? n / V : 1) : n;
  int64_t blocks = (items + kThreads - 1) / kThreads;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  if (vec) {
    launch_pdl(binary_kernel<T, V, kOp>, unsigned(blocks), kThreads, 0, stream, a, b, out, n, s);
  } else {
    launch_pdl(binary_kernel<T, 1, kOp>, unsigned(blocks), kThreads, 0, stream, a, b, out, n, s);
  }
  return check_launch(name);
}

}  // namespace

template <typename T>
Status gelu_mul(const T* gate, const T* up, T* out, int64_t rows, int64_t cols, int64_t ld_gate,
                int64_t ld_up, cudaStream_t stream) {
  if (rows < 0 || cols <= 0 || ld_gate < cols || ld_up < cols) {
    return invalid("gelu_mul: need rows >= 0, cols > 0, ld_gate >= cols, ld_up >= cols (rows=" +
                   std::to_string(rows) + ", cols=" + std::to_string(cols) + ", ld_gate=" +
                   std::to_string(ld_gate) + ", ld_up=" + std::to_string(ld_up) + ")");
  }
  if (rows == 0) return Status::Ok();
  if (!gate || !up || !out) return invalid("gelu_mul: null pointer");
  constexpr int V = 16 / sizeof(T);
  const bool vec = cols % V == 0 && ld_gate % V == 0 && ld_up % V == 0 && aligned16(gate) &&
                   aligned16(up) && aligned16(out);
  if (vec) return launch_gelu_mul<T, V>(gate, up, out, rows, cols, ld_gate, ld_up, stream);
  return launch_gelu_mul<T, 1>(gate, up, out, rows, cols, ld_gate, ld_up, stream);
}

template <typename T>
Status add(const T* a, const T* b, T* out, int64_t n, cudaStream_t stream) {
  return launch_binary<T, BinOp::kAdd>(a, b, out, n, 0.0f, stream, "add");
}

template <typename T>
Status scale(const T* x, T* out, int64_t n, float s, cudaStream_t stream) {
  return launch_binary<T, BinOp::kScale>(x, nullptr, out, n, s, stream, "scale");
}

#define G3_INSTANTIATE(T)                                                                 \
  template Status gelu_mul<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t, \
                              cudaStream_t);                                              \
  template Status add<T>(const T*, const T*, T*, int64_t, cudaStream_t);                  \
  template Status scale<T>(const T*, T*, int64_t, float, cudaStream_t);
G3_INSTANTIATE(float)
G3_INSTANTIATE(bf16)
#undef G3_INSTANTIATE

}  // namespace gemma3::cuda
