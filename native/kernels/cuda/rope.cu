// CUDA RoPE (rotate-half, HF apply_rotary_pos_emb), in place. One CTA per token: the first
// head_dim/2 threads compute T(cos)/T(sin) once into shared memory, then the CTA rotates every
// head of the token with 16-byte vectors of x1 and x2 when the layout allows.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/vec.cuh"

namespace gemma3::cuda {
namespace {

constexpr int kMaxHeadDim = 1024;
constexpr int64_t kMaxGrid = 1 << 30;

using vec::aligned16;
using vec::load_f32;
using vec::round_t;
using vec::store_f32;

// x: [tokens, heads, head_dim] with token stride ld_token; positions: [tokens] int32.
// blockDim.x >= half; V = elements of x1 (and of x2) per work item.
template <typename T, int V>
__global__ void __launch_bounds__(1024)
    rope_kernel(T* x, const int32_t* positions, int64_t tokens, int heads, int head_dim,
                int64_t ld_token, float base, float scale) {
  pdl_wait();  // pdl.cuh: inputs come from the kernel before
  pdl_trigger();
  __shared__ float cs[kMaxHeadDim / 2], sn[kMaxHeadDim / 2];
  const int half = head_dim / 2;
  const int tid = threadIdx.x;
  float inv_freq = 0.0f;
  if (tid < half) {
    // HF: 1.0 / base ** (arange(0, dim, 2).float() / dim), then / factor, all float32. pow in
    // double rounded to float matches a correctly rounded powf (device powf may be 2 ulp off).
    const float e = float(2 * tid) / float(head_dim);
    inv_freq = (1.0f / float(pow(double(base), double(e)))) / scale;
  }
  const int chunks = half / V;
  const int work = heads * chunks;
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    if (tid < half) {
      // HF: freqs = inv_freq * float(pos); cos/sin in float32 (accurate sincosf, not __sinf),
      // then cast to T.
      const float a = float(positions[t]) * inv_freq;
      float s, c;
      sincosf(a, &s, &c);
      cs[tid] = round_t<T>(c);
      sn[tid] = round_t<T>(s);
    }
    __syncthreads();
    T* xt = x + t * ld_token;
    for (int w = tid; w < work; w += blockDim.x) {
      const int h = w / chunks;
      const int i0 = (w - h * chunks) * V;
      T* p1 = xt + int64_t(h) * head_dim + i0;
      T* p2 = p1 + half;
      float x1[V], x2[V], y1[V], y2[V];
      load_f32<T, V>(p1, x1);
      load_f32<T, V>(p2, x2);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        // Each product and sum is its own tensor op in HF: round each, never fuse into an FMA.
        const float c = cs[i0 + j], s = sn[i0 + j];
        y1[j] = __fsub_rn(round_t<T>(__fmul_rn(x1[j], c)), round_t<T>(__fmul_rn(x2[j], s)));
        y2[j] = __fadd_rn(round_t<T>(__fmul_rn(x2[j], c)), round_t<T>(__fmul_rn(x1[j], s)));
      }
      store_f32<T, V>(p1, y1);
      store_f32<T, V>(p2, y2);
    }
    __syncthreads();  // cs/sn are rewritten for the next token
  }
}

template <typename T, int V>
Status launch_rope(T* x, const int32_t* positions, int64_t tokens, int heads, int head_dim,
                   int64_t ld_token, float base, float scale, cudaStream_t stream) {
  const int half = head_dim / 2;
  const int64_t work = int64_t(heads) * (half / V);
  int64_t threads = work < 256 ? work : 256;
  if (threads < half) threads = half;
  threads = (threads + 31) / 32 * 32;
  launch_pdl(rope_kernel<T, V>, unsigned(tokens < kMaxGrid ? tokens : kMaxGrid), unsigned(threads),
             0, stream, x, positions, tokens, heads, head_dim, ld_token, base, scale);
  return check_launch("rope");
}

}  // namespace

template <typename T>
Status rope(T* x, const int32_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
            int64_t ld_token, float base, float scale, cudaStream_t stream) {
  if (tokens < 0 || heads <= 0 || heads > (int64_t(1) << 20) || head_dim <= 0 ||
      head_dim % 2 != 0 || head_dim > kMaxHeadDim || ld_token < heads * head_dim ||
      !(base > 0.0f) || !std::isfinite(base) || !(scale > 0.0f) || !std::isfinite(scale)) {
    return Status(StatusCode::kInvalidArgument,
                  "rope: need tokens >= 0, heads > 0, even 0 < head_dim <= 1024, ld_token >= "
                  "heads * head_dim, finite base > 0 and scale > 0 (tokens=" +
                      std::to_string(tokens) + ", heads=" + std::to_string(heads) + ", head_dim=" +
                      std::to_string(head_dim) + ", ld_token=" + std::to_string(ld_token) +
                      ", base=" + std::to_string(base) + ", scale=" + std::to_string(scale) + ")");
  }
  if (tokens == 0) return Status::Ok();
  if (!x || !positions) return Status(StatusCode::kInvalidArgument, "rope: null pointer");
  constexpr int V = 16 / sizeof(T);
  const bool vec = (head_dim / 2) % V == 0 && ld_token % V == 0 && aligned16(x);
  if (vec) {
    return launch_rope<T, V>(x, positions, tokens, int(heads), int(head_dim), ld_token, base, scale,
                             stream);
  }
  return launch_rope<T, 1>(x, positions, tokens, int(heads), int(head_dim), ld_token, base, scale,
                           stream);
}

template Status rope<float>(float*, const int32_t*, int64_t, int64_t, int64_t, int64_t, float,
                            float, cudaStream_t);
template Status rope<bf16>(bf16*, const int32_t*, int64_t, int64_t, int64_t, int64_t, float, float,
                           cudaStream_t);

}  // namespace gemma3::cuda
