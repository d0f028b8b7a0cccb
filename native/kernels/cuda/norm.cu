// CUDA RMSNorm (Gemma), fused RMSNorm + residual add (and + the next RMSNorm), LayerNorm (SigLIP).
// Short rows (per-head q/k norms, 128/256) take one warp per row, several rows per CTA; longer rows
// (hidden 1152..5376) one CTA per row. Rows are read with 16-byte vectors when dim and the pointers
// allow (scalar otherwise), summed in float32 with warp shuffles, and the first kCache vectors of
// each thread stay in registers between the reduction and the write.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/vec.cuh"

namespace gemma3::cuda {
namespace {

constexpr int kCache = 4;          // vectors per thread kept in registers between the passes
constexpr int kWarpsPerCta = 4;    // rows per CTA in the warp-per-row form
constexpr int kMaxGrid = 1 << 30;  // grid cap; kernels loop over the remaining rows
// Threads of a CTA-per-row kernel: add_norm_kernel's hoisted loads need ~100 registers a thread
// (1024 would allow 64). norm_kernel uses the same cap so both reduce a row in the same order.
// Rows past kNormMaxThreads * kCache vectors take the uncached loops.
constexpr int kNormMaxThreads = 512;

enum class NormKind { kRms, kRmsAdd, kLayer };

using vec::aligned16;
using vec::load_f32;
using vec::store_f32;

// Sum over the row's threads (a warp, or the whole CTA); every thread gets the total.
template <bool kWarpRow>
__device__ __forceinline__ float row_sum(float v, float* red) {
  const auto add = [](float a, float b) { return a + b; };
  if constexpr (kWarpRow) {
    return vec::warp_reduce(v, add);
  } else {
    return vec::block_reduce(v, add, 0.0f, red);
  }
}

// x, out: [rows, dim] (out may alias x; for kRmsAdd out is the residual, read then written);
// w, b: [dim] (b only for kLayer). nvec = dim / V.
template <typename T, int V, bool kWarpRow, NormKind kKind>
__global__ void __launch_bounds__(kWarpRow ? 32 * kWarpsPerCta : kNormMaxThreads)
    norm_kernel(const T* x, const T* w, const T* b, T* out, int64_t rows, int dim, int nvec,
                float eps) {
  pdl_wait();  // pdl.cuh: inputs come from the kernel before
  pdl_trigger();
  __shared__ float red[32];
  const int tid = kWarpRow ? (threadIdx.x & 31) : threadIdx.x;
  const int nthr = kWarpRow ? 32 : blockDim.x;
  const int64_t row0 =
      kWarpRow ? int64_t(blockIdx.x) * kWarpsPerCta + (threadIdx.x >> 5) : int64_t(blockIdx.x);
  const int64_t row_step = kWarpRow ? int64_t(gridDim.x) * kWarpsPerCta : int64_t(gridDim.x);

  for (int64_t r = row0; r < rows; r += row_step) {
    const T* xr = x + r * dim;
    T* outr = out + r * dim;
    float c[kCache][V];
    float acc = 0.0f;
#pragma unroll
    for (int it = 0; it < kCache; ++it) {
      const int i = tid + it * nthr;
      if (i < nvec) {
        load_f32<T, V>(xr + i * V, c[it]);
#pragma unroll
        for (int j = 0; j < V; ++j)
          acc += kKind == NormKind::kLayer ? c[it][j] : c[it][j] * c[it][j];
      }
    }
    for (int i = tid + kCache * nthr; i < nvec; i += nthr) {  // rows past the register cache
      float t[V];
      load_f32<T, V>(xr + i * V, t);
#pragma unroll
      for (int j = 0; j < V; ++j) acc += kKind == NormKind::kLayer ? t[j] : t[j] * t[j];
    }
    float total = row_sum<kWarpRow>(acc, red);

    float mean = 0.0f, inv;
    if constexpr (kKind == NormKind::kLayer) {
      // Biased variance from the centred values (two-pass; steadier than E[x^2] - mean^2).
      mean = total / float(dim);
      float acc2 = 0.0f;
#pragma unroll
      for (int it = 0; it < kCache; ++it) {
        if (tid + it * nthr < nvec) {
#pragma unroll
          for (int j = 0; j < V; ++j) acc2 += (c[it][j] - mean) * (c[it][j] - mean);
        }
      }
      for (int i = tid + kCache * nthr; i < nvec; i += nthr) {
        float t[V];
        load_f32<T, V>(xr + i * V, t);
#pragma unroll
        for (int j = 0; j < V; ++j) acc2 += (t[j] - mean) * (t[j] - mean);
      }
      total = row_sum<kWarpRow>(acc2, red);
    }
    inv = 1.0f / sqrtf(total / float(dim) + eps);

    auto write = [&](int i, const float(&v)[V]) {
      float wv[V], y[V];
      load_f32<T, V>(w + i * V, wv);
      if constexpr (kKind == NormKind::kRms) {
        // HF Gemma3RMSNorm: (x * rsqrt(ms + eps)) * (1 + w) in float32, one cast.
#pragma unroll
        for (int j = 0; j < V; ++j) y[j] = (v[j] * inv) * (1.0f + wv[j]);
      } else if constexpr (kKind == NormKind::kRmsAdd) {
        // HF adds in T: the norm output is rounded to T before the residual add (__fadd_rn keeps
        // the float32 path from fusing the two ops into an FMA).
        float res[V];
        load_f32<T, V>(outr + i * V, res);
#pragma unroll
        for (int j = 0; j < V; ++j) {
          y[j] = __fadd_rn(res[j], to_f32(from_f32<T>((v[j] * inv) * (1.0f + wv[j]))));
        }
      } else {
        float bv[V];
        load_f32<T, V>(b + i * V, bv);
#pragma unroll
        for (int j = 0; j < V; ++j) y[j] = (v[j] - mean) * inv * wv[j] + bv[j];
      }
      store_f32<T, V>(outr + i * V, y);
    };
#pragma unroll
    for (int it = 0; it < kCache; ++it) {
      const int i = tid + it * nthr;
      if (i < nvec) write(i, c[it]);
    }
    for (int i = tid + kCache * nthr; i < nvec; i += nthr) {
      float t[V];
      load_f32<T, V>(xr + i * V, t);
      write(i, t);
    }
  }
}

// rmsnorm_add then rmsnorm of the updated residual (kernels.inc rmsnorm_add_rmsnorm), one pass.
// The row's threads, vectors and reductions are norm_kernel's for the same dim, so each of the two
// sums runs in the order of the kernel it replaces and the results equal rmsnorm_add + rmsnorm.
// The rounded residual stays in registers (c) between the two reductions.
// Latency (a decode step runs this twice a layer on one row, one CTA): every load the row needs is
// issued up front, so the kernel waits on global memory once, not once per pass. The weights of
// the register-cached vectors load before pdl_wait (no kernel of a step writes them) and serve
// every row; x and the residual load together.
template <typename T, int V, bool kWarpRow>
__global__ void __launch_bounds__(kWarpRow ? 32 * kWarpsPerCta : kNormMaxThreads)
    add_norm_kernel(const T* x, const T* w, T* residual, const T* w_next, T* out, int64_t rows,
                    int dim, int nvec, float eps) {
  using vec::load_packed;
  using vec::Packed;
  using vec::unpack;
  // Register-cached vectors a thread: the CTA form's launcher gives a thread ~2 (more registers
  // would spill); the order each thread visits its vectors is the same for any count.
  constexpr int kC = kWarpRow ? kCache : 2;
  __shared__ float red[32];
  const int tid = kWarpRow ? (threadIdx.x & 31) : threadIdx.x;
  const int nthr = kWarpRow ? 32 : blockDim.x;
  const int64_t row0 =
      kWarpRow ? int64_t(blockIdx.x) * kWarpsPerCta + (threadIdx.x >> 5) : int64_t(blockIdx.x);
  const int64_t row_step = kWarpRow ? int64_t(gridDim.x) * kWarpsPerCta : int64_t(gridDim.x);

  Packed<T, V> wc[kC], wnc[kC];
#pragma unroll
  for (int it = 0; it < kC; ++it) {
    const int i = tid + it * nthr;
    if (i < nvec && row0 < rows) {
      wc[it] = load_packed<T, V>(w + i * V);
      wnc[it] = load_packed<T, V>(w_next + i * V);
    }
  }
  pdl_wait();  // pdl.cuh: x and the residual come from the kernels before
  pdl_trigger();

  for (int64_t r = row0; r < rows; r += row_step) {
    const T* xr = x + r * dim;
    T* res = residual + r * dim;
    T* outr = out + r * dim;
    float c[kC][V];
    Packed<T, V> hc[kC];
#pragma unroll
    for (int it = 0; it < kC; ++it) {
      const int i = tid + it * nthr;
      if (i < nvec) {
        load_f32<T, V>(xr + i * V, c[it]);
        hc[it] = load_packed<T, V>(res + i * V);
      }
    }
    float acc = 0.0f;
#pragma unroll
    for (int it = 0; it < kC; ++it) {
      if (tid + it * nthr < nvec) {
#pragma unroll
        for (int j = 0; j < V; ++j) acc += c[it][j] * c[it][j];
      }
    }
    for (int i = tid + kC * nthr; i < nvec; i += nthr) {
      float t[V];
      load_f32<T, V>(xr + i * V, t);
#pragma unroll
      for (int j = 0; j < V; ++j) acc += t[j] * t[j];
    }
    const float inv = 1.0f / sqrtf(row_sum<kWarpRow>(acc, red) / float(dim) + eps);

    // residual = T(residual + T(norm(x))) as rmsnorm_add; v becomes the rounded residual.
    float acc2 = 0.0f;
    auto add = [&](int i, float(&v)[V], const float(&wv)[V], const float(&h)[V]) {
#pragma unroll
      for (int j = 0; j < V; ++j)
        v[j] = to_f32(
            from_f32<T>(__fadd_rn(h[j], to_f32(from_f32<T>((v[j] * inv) * (1.0f + wv[j]))))));
      store_f32<T, V>(res + i * V, v);
#pragma unroll
      for (int j = 0; j < V; ++j) acc2 += v[j] * v[j];
    };
#pragma unroll
    for (int it = 0; it < kC; ++it) {
      const int i = tid + it * nthr;
      if (i < nvec) {
        float wv[V], h[V];
        unpack(wc[it], wv);
        unpack(hc[it], h);
        add(i, c[it], wv, h);
      }
    }
    for (int i = tid + kC * nthr; i < nvec; i += nthr) {
      float t[V], wv[V], h[V];
      load_f32<T, V>(xr + i * V, t);
      load_f32<T, V>(w + i * V, wv);
      load_f32<T, V>(res + i * V, h);
      add(i, t, wv, h);
    }
    const float inv2 = 1.0f / sqrtf(row_sum<kWarpRow>(acc2, red) / float(dim) + eps);

    auto norm = [&](int i, const float(&v)[V], const float(&wv)[V]) {
      float y[V];
#pragma unroll
      for (int j = 0; j < V; ++j) y[j] = (v[j] * inv2) * (1.0f + wv[j]);
      store_f32<T, V>(outr + i * V, y);
    };
#pragma unroll
    for (int it = 0; it < kC; ++it) {
      const int i = tid + it * nthr;
      if (i < nvec) {
        float wv[V];
        unpack(wnc[it], wv);
        norm(i, c[it], wv);
      }
    }
    for (int i = tid + kC * nthr; i < nvec; i += nthr) {
      float t[V], wv[V];
      load_f32<T, V>(res + i * V, t);  // this thread's own rounded residual, written above
      load_f32<T, V>(w_next + i * V, wv);
      norm(i, t, wv);
    }
  }
}

template <typename T, int V>
Status launch_add_norm_v(const T* x, const T* w, T* residual, const T* w_next, T* out, int64_t rows,
                         int64_t dim, float eps, cudaStream_t stream) {
  const int nvec = int(dim / V);
  if (nvec <= 32 * kCache) {  // as launch_norm_v
    const int64_t grid = (rows + kWarpsPerCta - 1) / kWarpsPerCta;
    launch_pdl(add_norm_kernel<T, V, true>, unsigned(grid < kMaxGrid ? grid : kMaxGrid),
               32 * kWarpsPerCta, 0, stream, x, w, residual, w_next, out, rows, int(dim), nvec,
               eps);
  } else {
    int threads = ((nvec + 1) / 2 + 31) / 32 * 32;
    threads = threads < 64 ? 64 : (threads > kNormMaxThreads ? kNormMaxThreads : threads);
    launch_pdl(add_norm_kernel<T, V, false>, unsigned(rows < kMaxGrid ? rows : kMaxGrid), threads,
               0, stream, x, w, residual, w_next, out, rows, int(dim), nvec, eps);
  }
  return check_launch("rmsnorm_add_rmsnorm");
}

template <typename T, int V, NormKind kKind>
Status launch_norm_v(const T* x, const T* w, const T* b, T* out, int64_t rows, int64_t dim,
                     float eps, cudaStream_t stream, const char* name) {
  const int nvec = int(dim / V);
  if (nvec <= 32 * kCache) {  // one warp per row
    const int64_t grid = (rows + kWarpsPerCta - 1) / kWarpsPerCta;
    launch_pdl(norm_kernel<T, V, true, kKind>, unsigned(grid < kMaxGrid ? grid : kMaxGrid),
               32 * kWarpsPerCta, 0, stream, x, w, b, out, rows, int(dim), nvec, eps);
  } else {  // one CTA per row; ~2 vectors per thread leaves loads in flight for short grids
    int threads = ((nvec + 1) / 2 + 31) / 32 * 32;
    threads = threads < 64 ? 64 : (threads > kNormMaxThreads ? kNormMaxThreads : threads);
    launch_pdl(norm_kernel<T, V, false, kKind>, unsigned(rows < kMaxGrid ? rows : kMaxGrid),
               threads, 0, stream, x, w, b, out, rows, int(dim), nvec, eps);
  }
  return check_launch(name);
}

template <typename T, NormKind kKind>
Status launch_norm(const T* x, const T* w, const T* b, T* out, int64_t rows, int64_t dim, float eps,
                   cudaStream_t stream, const char* name) {
  if (rows < 0 || dim <= 0 || dim > (int64_t(1) << 30) || !(eps >= 0.0f)) {
    return Status(StatusCode::kInvalidArgument,
                  std::string(name) +
                      ": need rows >= 0, 0 < dim <= 2^30, eps >= 0 (rows=" + std::to_string(rows) +
                      ", dim=" + std::to_string(dim) + ", eps=" + std::to_string(eps) + ")");
  }
  if (rows == 0) return Status::Ok();
  if (!x || !w || !out || (kKind == NormKind::kLayer && !b)) {
    return Status(StatusCode::kInvalidArgument, std::string(name) + ": null pointer");
  }
  constexpr int V = 16 / sizeof(T);
  const bool vec = dim % V == 0 && aligned16(x) && aligned16(w) && aligned16(out) &&
                   (kKind != NormKind::kLayer || aligned16(b));
  if (vec) return launch_norm_v<T, V, kKind>(x, w, b, out, rows, dim, eps, stream, name);
  return launch_norm_v<T, 1, kKind>(x, w, b, out, rows, dim, eps, stream, name);
}

}  // namespace

template <typename T>
Status rmsnorm(const T* x, const T* w, T* out, int64_t rows, int64_t dim, float eps,
               cudaStream_t stream) {
  return launch_norm<T, NormKind::kRms>(x, w, nullptr, out, rows, dim, eps, stream, "rmsnorm");
}

template <typename T>
Status rmsnorm_add(const T* x, const T* w, T* residual, int64_t rows, int64_t dim, float eps,
                   cudaStream_t stream) {
  return launch_norm<T, NormKind::kRmsAdd>(x, w, nullptr, residual, rows, dim, eps, stream,
                                           "rmsnorm_add");
}

template <typename T>
Status rmsnorm_add_rmsnorm(const T* x, const T* w, T* residual, const T* w_next, T* out,
                           int64_t rows, int64_t dim, float eps, cudaStream_t stream) {
  if (rows < 0 || dim <= 0 || dim > (int64_t(1) << 30) || !(eps >= 0.0f)) {
    return Status(StatusCode::kInvalidArgument,
                  "rmsnorm_add_rmsnorm: need rows >= 0, 0 < dim <= 2^30, eps >= 0 (rows=" +
                      std::to_string(rows) + ", dim=" + std::to_string(dim) +
                      ", eps=" + std::to_string(eps) + ")");
  }
  if (rows == 0) return Status::Ok();
  if (!x || !w || !residual || !w_next || !out)
    return Status(StatusCode::kInvalidArgument, "rmsnorm_add_rmsnorm: null pointer");
  constexpr int V = 16 / sizeof(T);
  const bool vec = dim % V == 0 && aligned16(x) && aligned16(w) && aligned16(residual) &&
                   aligned16(w_next) && aligned16(out);
  if (vec) return launch_add_norm_v<T, V>(x, w, residual, w_next, out, rows, dim, eps, stream);
  return launch_add_norm_v<T, 1>(x, w, residual, w_next, out, rows, dim, eps, stream);
}

template <typename T>
Status layernorm(const T* x, const T* w, const T* b, T* out, int64_t rows, int64_t dim, float eps,
                 cudaStream_t stream) {
  return launch_norm<T, NormKind::kLayer>(x, w, b, out, rows, dim, eps, stream, "layernorm");
}

#define G3_INSTANTIATE(T)                                                                        \
  template Status rmsnorm<T>(const T*, const T*, T*, int64_t, int64_t, float, cudaStream_t);     \
  template Status rmsnorm_add<T>(const T*, const T*, T*, int64_t, int64_t, float, cudaStream_t); \
  template Status layernorm<T>(const T*, const T*, const T*, T*, int64_t, int64_t, float,        \
                               cudaStream_t);                                                    \
  template Status rmsnorm_add_rmsnorm<T>(const T*, const T*, T*, const T*, T*, int64_t, int64_t, \
                                         float, cudaStream_t);
G3_INSTANTIATE(float)
G3_INSTANTIATE(bf16)
#undef G3_INSTANTIATE

}  // namespace gemma3::cuda
