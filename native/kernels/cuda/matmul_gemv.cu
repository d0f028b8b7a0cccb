// GEMV path of matmul (1 <= M <= kGemvMaxM): y[m, n] = sum_k x[m, k] * W[n, k], bound by the bytes
// of W. A warp streams R rows of W (S warps split K when N alone cannot fill the GPU), every weight
// byte is read once for all M rows of x, and x (small, shared by every warp) is read through L1.
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"

namespace gemma3::cuda::detail {
namespace {

constexpr int kWarps = 8;  // warps per CTA
constexpr int kThreads = kWarps * 32;

// ---- loads ----

// W is streamed exactly once: 16-byte load that does not allocate in L1 (keeps L1 for x) and asks
// L2 to fetch 256-byte sectors ahead.
__device__ __forceinline__ uint4 ld_stream16(const void* p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
#else
  return __ldg(reinterpret_cast<const uint4*>(p));
#endif
}

__device__ __forceinline__ float bf16_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }
__device__ __forceinline__ float f16_bits_to_f32(uint32_t h) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(h)));
}
__device__ __forceinline__ void unpack_bf16x8(const uint4& u, float* v) {
  v[0] = bf16_lo(u.x), v[1] = bf16_hi(u.x), v[2] = bf16_lo(u.y), v[3] = bf16_hi(u.y);
  v[4] = bf16_lo(u.z), v[5] = bf16_hi(u.z), v[6] = bf16_lo(u.w), v[7] = bf16_hi(u.w);
}
// e4m3 -> f16 is exact (hardware cvt on sm_89+), f16 -> f32 is exact.
__device__ __forceinline__ void unpack_fp8x4(uint32_t u, float* v) {
  const __half2_raw lo =
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(u & 0xffffu), __NV_E4M3);
  const __half2_raw hi =
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(u >> 16), __NV_E4M3);
  const float2 a = __half22float2(__half2(lo));
  const float2 b = __half22float2(__half2(hi));
  v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
}

// L contiguous x values starting at p (p aligned to L * sizeof(T) bytes, L % 4 == 0).
template <int L>
__device__ __forceinline__ void load_x_run(const float* p, float* v) {
  static_assert(L % 4 == 0, "x runs are whole float4s");
#pragma unroll
  for (int i = 0; i < L / 4; ++i) {
    const float4 f = __ldg(reinterpret_cast<const float4*>(p) + i);
    v[4 * i] = f.x, v[4 * i + 1] = f.y, v[4 * i + 2] = f.z, v[4 * i + 3] = f.w;
  }
}
template <int L>
__device__ __forceinline__ void load_x_run(const bf16* p, float* v) {
  if constexpr (L % 8 == 0) {
#pragma unroll
    for (int i = 0; i < L / 8; ++i)
      unpack_bf16x8(__ldg(reinterpret_cast<const uint4*>(p) + i), v + 8 * i);
  } else {
    static_assert(L == 4, "bf16 x runs are 4 or a multiple of 8");
    const uint2 u = __ldg(reinterpret_cast<const uint2*>(p));
    v[0] = bf16_lo(u.x), v[1] = bf16_hi(u.x), v[2] = bf16_lo(u.y), v[3] = bf16_hi(u.y);
  }
}

// ---- weight formats ----
// A "chunk" is what one lane loads per row per step: kE weights, matched by kRuns runs of x of
// kE / kRuns contiguous values at x_off(c, run). Lanes of a warp take consecutive chunks, so the
// warp reads a contiguous stretch of the row. unpack() yields the exact float weights.
template <typename TW>
struct Fmt;

template <>
struct Fmt<float> {
  static constexpr int kE = 4, kRuns = 1;
  static constexpr bool kBlock = false;
  using Raw = uint4;
  __device__ static Raw load(const float* row, int64_t c) { return ld_stream16(row + c * 4); }
  __device__ static void unpack(const Raw& r, float* v) {
    v[0] = __uint_as_float(r.x), v[1] = __uint_as_float(r.y);
    v[2] = __uint_as_float(r.z), v[3] = __uint_as_float(r.w);
  }
  __device__ static int64_t x_off(int64_t c, int) { return c * 4; }
};

template <>
struct Fmt<bf16> {
  static constexpr int kE = 8, kRuns = 1;
  static constexpr bool kBlock = false;
  using Raw = uint4;
  __device__ static Raw load(const bf16* row, int64_t c) { return ld_stream16(row + c * 8); }
  __device__ static void unpack(const Raw& r, float* v) { unpack_bf16x8(r, v); }
  __device__ static int64_t x_off(int64_t c, int) { return c * 8; }
};

template <>
struct Fmt<fp8e4m3> {
  static constexpr int kE = 16, kRuns = 1;
  static constexpr bool kBlock = false;
  using Raw = uint4;
  __device__ static Raw load(const fp8e4m3* row, int64_t c) { return ld_stream16(row + c * 16); }
  __device__ static void unpack(const Raw& r, float* v) {
    unpack_fp8x4(r.x, v), unpack_fp8x4(r.y, v + 4), unpack_fp8x4(r.z, v + 8);
    unpack_fp8x4(r.w, v + 12);
  }
  __device__ static int64_t x_off(int64_t c, int) { return c * 16; }
};

// q8_0: 8 lanes per 34-byte block, 4 weights each. Blocks are only 2-byte aligned, so a lane reads
// d and its 4 int8 as three u16 (L1-cached: neighbouring lanes share the lines).
struct RawQ {
  uint32_t d, q01, q23;
};
template <>
struct Fmt<block_q8_0> {
  static constexpr int kE = 4, kRuns = 1;
  static constexpr bool kBlock = true;
  using Raw = RawQ;
  __device__ static Raw load(const block_q8_0* row, int64_t c) {
    const unsigned short* p = reinterpret_cast<const unsigned short*>(row + (c >> 3));
    const int sub = static_cast<int>(c & 7);
    return Raw{__ldg(p), __ldg(p + 1 + 2 * sub), __ldg(p + 2 + 2 * sub)};
  }
  __device__ static void unpack(const Raw& r, float* v) {
    const float d = f16_bits_to_f32(r.d);
    v[0] = float(int32_t(r.q01 << 24) >> 24) * d;
    v[1] = float(int32_t(r.q01 << 16) >> 24) * d;
    v[2] = float(int32_t(r.q23 << 24) >> 24) * d;
    v[3] = float(int32_t(r.q23 << 16) >> 24) * d;
  }
  __device__ static int64_t x_off(int64_t c, int) { return c * 4; }  // 8 chunks * 4 = 32 per block
};

// q4_0: 4 lanes per 18-byte block; lane `sub` owns qs bytes [4 sub, 4 sub + 4): weights
// 4 sub .. 4 sub + 3 (low nibbles) and 16 + 4 sub .. (high nibbles), hence two x runs.
template <>
struct Fmt<block_q4_0> {
  static constexpr int kE = 8, kRuns = 2;
  static constexpr bool kBlock = true;
  using Raw = RawQ;
  __device__ static Raw load(const block_q4_0* row, int64_t c) {
    const unsigned short* p = reinterpret_cast<const unsigned short*>(row + (c >> 2));
    const int sub = static_cast<int>(c & 3);
    return Raw{__ldg(p), __ldg(p + 1 + 2 * sub), __ldg(p + 2 + 2 * sub)};
  }
  __device__ static void unpack(const Raw& r, float* v) {
    const float d = f16_bits_to_f32(r.d);
    const uint32_t q = r.q01 | (r.q23 << 16);  // 4 bytes = 8 nibbles
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      v[j] = float(int32_t((q >> (8 * j)) & 0xfu) - 8) * d;
      v[4 + j] = float(int32_t((q >> (8 * j + 4)) & 0xfu) - 8) * d;
    }
  }
  __device__ static int64_t x_off(int64_t c, int run) {
    return (c >> 2) * 32 + (c & 3) * 4 + 16 * run;
  }
};

// Rows per warp (R) and chunks in flight per row (U): enough 16-byte loads in flight per lane to
// cover DRAM latency, few enough registers at M = 8. Block formats re-read x four times per W byte
// more than bf16, so they share each x load over 4 rows once M >= 4.
template <typename TW, int MT>
struct Tiling {
  static constexpr int R = (Fmt<TW>::kBlock && MT >= 4) ? 4 : 2;
  static constexpr int U = MT <= 2 ? 2 : 1;
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Group g = (block, warp / S) owns rows [g R, g R + R); its slice s = warp % S takes chunks
// s*32*U + lane + i*S*32*U. MT >= M is x's compile-time row count (rows >= M are skipped). The
// min-blocks bound stops ptxas from trading spills for occupancy; 2-3 CTAs/SM keep loads in flight.
template <typename TX, typename TW, int MT>
__global__ void __launch_bounds__(kThreads, MT == 1 ? 3 : 2)
    gemv_kernel(const TX* __restrict__ x,           // x: [M, K]
                const TW* __restrict__ w,           // w: [N, K] (block formats: [N, K/32] blocks)
                const float* __restrict__ w_scale,  // w_scale: [N] or null
                TX* __restrict__ y,                 // y: [M, N]
                int M, int64_t N, int64_t K, int S) {
  using F = Fmt<TW>;
  constexpr int R = Tiling<TW, MT>::R, U = Tiling<TW, MT>::U, E = F::kE;
  constexpr int kRunLen = E / F::kRuns;
  __shared__ float partial[kWarps][MT * R];

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t group = int64_t(blockIdx.x) * (kWarps / S) + warp / S;
  const int s = warp % S;
  const int64_t n0 = group * R;
  const int64_t row_len = F::kBlock ? K / kQK : K;
  const int64_t nchunks = K / E;

  float acc[MT][R];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[m][r] = 0.f;

  if (n0 < N) {
    const TW* rows[R];
#pragma unroll
    for (int r = 0; r < R; ++r) rows[r] = w + (n0 + r < N ? n0 + r : N - 1) * row_len;
    const int64_t step = int64_t(S) * 32 * U;
    for (int64_t c0 = int64_t(s) * 32 * U + lane; c0 < nchunks; c0 += step) {
      typename F::Raw raw[U][R];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t c = c0 + u * 32;
        if (c < nchunks) {
#pragma unroll
          for (int r = 0; r < R; ++r) raw[u][r] = F::load(rows[r], c);
        }
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t c = c0 + u * 32;
        if (c < nchunks) {
          float wv[R][E];
#pragma unroll
          for (int r = 0; r < R; ++r) F::unpack(raw[u][r], wv[r]);
#pragma unroll
          for (int m = 0; m < MT; ++m) {
            if (m < M) {
              float xv[E];
              const TX* xr = x + m * K;
#pragma unroll
              for (int run = 0; run < F::kRuns; ++run)
                load_x_run<kRunLen>(xr + F::x_off(c, run), xv + run * kRunLen);
#pragma unroll
              for (int r = 0; r < R; ++r)
#pragma unroll
                for (int e = 0; e < E; ++e) acc[m][r] = fmaf(wv[r][e], xv[e], acc[m][r]);
            }
          }
        }
      }
    }
  }

#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float v = warp_sum(acc[m][r]);
      if (lane == 0) partial[warp][m * R + r] = v;
    }
  __syncthreads();

  // The first warp of each group sums the S slices in a fixed order (deterministic).
  if (s == 0 && n0 < N && lane < MT * R) {
    const int m = lane / R, r = lane % R;
    const int64_t n = n0 + r;
    if (m < M && n < N) {
      float v = 0.f;
      for (int i = 0; i < S; ++i) v += partial[warp + i][lane];
      if (w_scale != nullptr) v *= __ldg(w_scale + n);
      y[m * N + n] = from_f32<TX>(v);
    }
  }
}

// ---- fallback for shapes the vector path cannot take (K % chunk != 0, unaligned pointers) ----

template <typename TW>
__device__ __forceinline__ float w_elem(const TW* w, int64_t n, int64_t K, int64_t k) {
  return to_f32(w[n * K + k]);
}
template <>
__device__ __forceinline__ float w_elem<block_q8_0>(const block_q8_0* w, int64_t n, int64_t K,
                                                    int64_t k) {
  const block_q8_0& b = w[n * (K / kQK) + k / kQK];
  return float(b.qs[k % kQK]) * f16_to_f32(b.d);
}
template <>
__device__ __forceinline__ float w_elem<block_q4_0>(const block_q4_0* w, int64_t n, int64_t K,
                                                    int64_t k) {
  const block_q4_0& b = w[n * (K / kQK) + k / kQK];
  const int j = static_cast<int>(k % kQK);
  const int q = j < kQK / 2 ? (b.qs[j] & 0xf) : (b.qs[j - kQK / 2] >> 4);
  return float(q - 8) * f16_to_f32(b.d);
}

// One warp per row of W, lanes stride K one element at a time; each m re-reads the row (L1/L2).
template <typename TX, typename TW>
__global__ void __launch_bounds__(kThreads)
    gemv_scalar_kernel(const TX* __restrict__ x, const TW* __restrict__ w,
                       const float* __restrict__ w_scale, TX* __restrict__ y, int M, int64_t N,
                       int64_t K) {
  const int lane = threadIdx.x & 31;
  const int64_t n = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (n >= N) return;
  const float scale = w_scale != nullptr ? w_scale[n] : 1.f;
  for (int m = 0; m < M; ++m) {
    float acc = 0.f;
    for (int64_t k = lane; k < K; k += 32)
      acc = fmaf(w_elem(w, n, K, k), to_f32(x[m * K + k]), acc);
    acc = warp_sum(acc);
    if (lane == 0) y[m * N + n] = from_f32<TX>(w_scale != nullptr ? acc * scale : acc);
  }
}

// ---- host side ----

Status sm_count(int* out) {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cache[kMaxDevices];  // 0 = not queried yet
  int dev = 0;
  G3_CUDA_RETURN(cudaGetDevice(&dev));
  if (dev >= 0 && dev < kMaxDevices) {
    const int c = cache[dev].load(std::memory_order_relaxed);
    if (c > 0) return *out = c, Status::Ok();
  }
  int c = 0;
  G3_CUDA_RETURN(cudaDeviceGetAttribute(&c, cudaDevAttrMultiProcessorCount, dev));
  if (c <= 0) c = 1;
  if (dev >= 0 && dev < kMaxDevices) cache[dev].store(c, std::memory_order_relaxed);
  *out = c;
  return Status::Ok();
}

template <typename TX, typename TW, int MT>
Status launch_vec(const TX* x, const TW* w, const float* w_scale, TX* y, int M, int64_t N,
                  int64_t K, cudaStream_t stream) {
  constexpr int R = Tiling<TW, MT>::R, U = Tiling<TW, MT>::U;
  int sms = 0;
  G3_RETURN_IF_ERROR(sm_count(&sms));
  // Split K over S warps per row group only when the row groups alone leave SMs idle (small N,
  // long K: e.g. the down projection) and each slice still gets at least two unrolled steps.
  const int64_t groups = (N + R - 1) / R;
  const int64_t nchunks = K / Fmt<TW>::kE;
  const int64_t target_warps = int64_t(sms) * 64;
  int S = 1;
  while (S < kWarps && groups * S < target_warps && nchunks >= int64_t(S) * 2 * 2 * 32 * U) S *= 2;
  const int64_t groups_per_block = kWarps / S;
  const int64_t blocks = (groups + groups_per_block - 1) / groups_per_block;
  if (blocks > 0x7fffffff) return Status(StatusCode::kUnsupported, "matmul gemv: N too large");
  gemv_kernel<TX, TW, MT>
      <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, w, w_scale, y, M, N, K, S);
  return check_launch("matmul gemv_kernel");
}

bool aligned(const void* p, uintptr_t a) { return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0; }

}  // namespace

// Called by matmul<TX, TW> (matmul.cu) with 1 <= M <= 8, N >= 1, K >= 1, block formats K % 32 == 0.
template <typename TX, typename TW>
Status gemv(const TX* x, const TW* w, const float* w_scale, TX* y, int64_t M, int64_t N, int64_t K,
            cudaStream_t stream) {
  using F = Fmt<TW>;
  if (M < 1 || M > 8) {
    return Status(StatusCode::kInternal,
                  "matmul gemv: M = " + std::to_string(M) + " not in [1, 8]");
  }
  const int m = static_cast<int>(M);
  // Vector path: whole chunks per row and 16-byte aligned rows (block formats: 2-byte aligned
  // blocks, any K % 32 == 0); x is read in 8- or 16-byte runs.
  const bool vec = K % F::kE == 0 && aligned(w, F::kBlock ? 2 : 16) && aligned(x, 16);
  if (!vec) {
    const int64_t blocks = (N + kWarps - 1) / kWarps;
    if (blocks > 0x7fffffff) return Status(StatusCode::kUnsupported, "matmul gemv: N too large");
    gemv_scalar_kernel<TX, TW>
        <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, w, w_scale, y, m, N, K);
    return check_launch("matmul gemv_scalar_kernel");
  }
  if (m == 1) return launch_vec<TX, TW, 1>(x, w, w_scale, y, m, N, K, stream);
  if (m == 2) return launch_vec<TX, TW, 2>(x, w, w_scale, y, m, N, K, stream);
  if (m <= 4) return launch_vec<TX, TW, 4>(x, w, w_scale, y, m, N, K, stream);
  return launch_vec<TX, TW, 8>(x, w, w_scale, y, m, N, K, stream);
}

#define G3_GEMV_INSTANTIATE(TX, TW)                                                                \
  template Status gemv<TX, TW>(const TX*, const TW*, const float*, TX*, int64_t, int64_t, int64_t, \
                               cudaStream_t);
G3_GEMV_INSTANTIATE(float, float)
G3_GEMV_INSTANTIATE(float, bf16)
G3_GEMV_INSTANTIATE(float, block_q8_0)
G3_GEMV_INSTANTIATE(float, block_q4_0)
G3_GEMV_INSTANTIATE(float, fp8e4m3)
G3_GEMV_INSTANTIATE(bf16, float)
G3_GEMV_INSTANTIATE(bf16, bf16)
G3_GEMV_INSTANTIATE(bf16, block_q8_0)
G3_GEMV_INSTANTIATE(bf16, block_q4_0)
G3_GEMV_INSTANTIATE(bf16, fp8e4m3)
#undef G3_GEMV_INSTANTIATE

}  // namespace gemma3::cuda::detail
