// GEMV path of matmul for the GGUF K-quants (q4_K, q5_K, q6_K), 1 <= M <= 8:
// y[m, n] = sum_k x[m, k] * W[n, k], bound by the bytes of W (4.5 / 5.5 / 6.56 bits per weight).
//
// Design. A warp owns R = 2 rows of W and walks their super-blocks (256 weights) in steps: per step
// it copies one block of each row (144 / 176 / 210 bytes) into shared memory with 16-byte cp.async
// (rows are only 2-byte aligned for q6_K: the copy takes the covering 16-byte chunks, the tail
// chunk zero-filled rather than over-read), kStages - 1 steps in flight, then each lane decodes 8
// consecutive weights of each row from shared memory. Per sub-block the weights are x = a q - b
// (runtime/kquant.h), so a lane accumulates sum q x and sum x and applies a, b once:
//   y += a * sum(q x) - b * sum(x)        (q6_K: b = 32 a)
// q is made exact in float with one byte permute into 2^23's mantissa and one subtraction, so
// the cost per weight is PRMT + FADD + one FFMA per x row. When N alone cannot fill the GPU
// (small N, long K: the down projection), S warps of a CTA split a row pair's steps and meet in
// shared memory (fixed order: deterministic).
//
// Prediction (H100 SXM, M = 1, bf16 x): W bytes dominate (x is 5 KB, in L1); per step a lane runs
// ~60 instructions for 288-420 bytes, under the issue limit, and 2 steps in flight per warp at
// ~40 resident warps per SM is ~25-35 KB in flight per SM, about what ~3 TB/s x ~1.5 us needs, so
// 2-2.5 TB/s effective is the expectation (not measured yet).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "kernels/cuda/cp_async.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gemv_common.cuh"
#include "runtime/env.h"
#include "runtime/kquant.h"

namespace gemma3::cuda::detail {
namespace {

constexpr int kR = 2;  // rows of W per warp
// Shared-memory stages per warp (kStages - 1 steps in flight) is a template parameter,
// GEMMA3_KQ_STAGES = 3 / 6 / 8 for measuring. Predicted: 3 stages (~9 KB in flight per SM) starve
// HBM, 6-8 would double q4_K's 0.64-0.86 TB/s. Measured (H100, docs/kernels.md): 3 and 6 the same,
// 8 at most +10%: the kernel is bound by instructions per weight (decode + float FMA), not by
// bytes in flight; its time tracks bf16's at the same shape. Next: int8 dot products (dp4a) on
// q8-quantized x, as llama.cpp's MMVQ does.
constexpr int kDefaultStages = 8;

template <typename TB>
struct KFmt;
template <>
struct KFmt<block_q4_K> {
  static constexpr int kBytes = 144;
};
template <>
struct KFmt<block_q5_K> {
  static constexpr int kBytes = 176;
};
template <>
struct KFmt<block_q6_K> {
  static constexpr int kBytes = 210;
};
// 16-byte chunks covering one block at any (even) 16-byte phase, and their shared-memory bytes.
template <typename TB>
constexpr int kChunks = (KFmt<TB>::kBytes + 14 + 15) / 16;
template <typename TB>
constexpr int kRowBytes = kChunks<TB> * 16;

// ---- decoding from shared memory (copies: cp_async.cuh) ----

// 8 bytes at p (2-byte aligned) as two words: three aligned 32-bit reads and two funnel shifts.
__device__ __forceinline__ uint2 lds8(const uint8_t* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  const uint32_t* w = reinterpret_cast<const uint32_t*>(a & ~uintptr_t(3));
  const uint32_t sh = static_cast<uint32_t>(a & 3) * 8;  // 0 or 16
  const uint32_t w0 = w[0], w1 = w[1], w2 = w[2];
  return make_uint2(__funnelshift_r(w0, w1, sh), __funnelshift_r(w1, w2, sh));
}
__device__ __forceinline__ float lds_f16(const uint8_t* p) {  // p 2-byte aligned
  return __half2float(__ushort_as_half(*reinterpret_cast<const unsigned short*>(p)));
}
// The 4 bytes of u (each < 128) as exact floats: byte t into the mantissa of 2^23, minus 2^23.
__device__ __forceinline__ void bytes4(uint32_t u, float* q) {
#pragma unroll
  for (int t = 0; t < 4; ++t)
    q[t] = __uint_as_float(__byte_perm(u, 0x4b000000u, 0x7440u | uint32_t(t))) - 8388608.f;
}

// Lane t's part of a block at blk (shared memory, 2-byte aligned): levels q of elements
// 8t .. 8t + 7 as floats, and a, b of their sub-block (x = a q - b; kq_sub's rules).
__device__ __forceinline__ void decode(const block_q4_K*, const uint8_t* blk, int t, float* q,
                                       float& a, float& b) {
  const int s = t >> 2, h = s & 1, l0 = (t & 3) * 8;
  const uint2 w = lds8(blk + 16 + 32 * (s >> 1) + l0);
  bytes4((w.x >> (4 * h)) & 0x0f0f0f0fu, q);
  bytes4((w.y >> (4 * h)) & 0x0f0f0f0fu, q + 4);
  int sc, m;
  kq_scale_min(s, blk + 4, &sc, &m);
  a = lds_f16(blk) * float(sc);
  b = lds_f16(blk + 2) * float(m);
}
__device__ __forceinline__ void decode(const block_q5_K*, const uint8_t* blk, int t, float* q,
                                       float& a, float& b) {
  const int s = t >> 2, h = s & 1, l0 = (t & 3) * 8;
  const uint2 w = lds8(blk + 48 + 32 * (s >> 1) + l0);
  const uint2 hb = lds8(blk + 16 + l0);  // the fifth bit of element 32 s + l is bit s of qh[l]
  bytes4(((w.x >> (4 * h)) & 0x0f0f0f0fu) | (((hb.x >> s) & 0x01010101u) << 4), q);
  bytes4(((w.y >> (4 * h)) & 0x0f0f0f0fu) | (((hb.y >> s) & 0x01010101u) << 4), q + 4);
  int sc, m;
  kq_scale_min(s, blk + 4, &sc, &m);
  a = lds_f16(blk) * float(sc);
  b = lds_f16(blk + 2) * float(m);
}
__device__ __forceinline__ void decode(const block_q6_K*, const uint8_t* blk, int t, float* q,
                                       float& a, float& b) {
  // Element 128 n + 32 g + l: ql[64 n + 32 (g & 1) + l] nibble g >> 1, qh[32 n + l] bits 2g.
  const int n = t >> 4, g = (t >> 2) & 3, l0 = (t & 3) * 8;
  const uint2 lo = lds8(blk + 64 * n + 32 * (g & 1) + l0);
  const uint2 hi = lds8(blk + 128 + 32 * n + l0);
  const int sl = 4 * (g >> 1), sh = 2 * g;
  bytes4(((lo.x >> sl) & 0x0f0f0f0fu) | (((hi.x >> sh) & 0x03030303u) << 4), q);
  bytes4(((lo.y >> sl) & 0x0f0f0f0fu) | (((hi.y >> sh) & 0x03030303u) << 4), q + 4);
  a = lds_f16(blk + 208) * float(int8_t(blk[192 + 8 * n + 2 * g + (l0 >> 4)]));
  b = 32.f * a;
}

// 8 contiguous x values at p (16-byte aligned) as floats, through L1 (x is shared by every warp).
__device__ __forceinline__ void load_x8(const float* p, float* v) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(p));
  const float4 c = __ldg(reinterpret_cast<const float4*>(p) + 1);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = c.x, v[5] = c.y, v[6] = c.z, v[7] = c.w;
}
__device__ __forceinline__ void load_x8(const bf16* p, float* v) {
  const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[2 * i] = __uint_as_float(w[i] << 16);
    v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

// Warp (block, w) owns row group g = block * (kWarps / S) + w / S (rows g R .. g R + R - 1) and
// slice s = w % S of its super-blocks: s, s + S, ... MT >= M is x's compile-time row count.
template <typename TX, typename TB, int MT, int kStages>
__global__ void __launch_bounds__(kThreads, 2)
    kq_gemv_kernel(const TX* __restrict__ x,  // x: [M, K], 16-byte aligned
                   const TB* __restrict__ w,  // w: [N, K / 256] blocks, 2-byte aligned
                   TX* __restrict__ y,        // y: [M, N]
                   int M, int64_t N, int64_t K, int S) {
  constexpr int kBytes = KFmt<TB>::kBytes, kChunk = kChunks<TB>, kRow = kRowBytes<TB>;
  static_assert(kR * kChunk <= 32, "one chunk per lane per step");
  // Row buffers [kWarps][kStages][kR][kRow]; +16: lds8's third word may read up to 4 bytes past
  // a block's last byte, so past the last buffer.
  __shared__ __align__(16) uint8_t stage[kWarps * kStages * kR * kRow + 16];
  __shared__ float partial[kWarps][MT * kR];

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t g = int64_t(blockIdx.x) * (kWarps / S) + warp / S;
  const int s = warp % S;
  const int64_t n0 = g * kR;
  const int64_t nb = K / kQK_K;                                   // super-blocks per row
  const int64_t T = n0 < N && s < nb ? (nb - 1 - s) / S + 1 : 0;  // this warp's steps
  const int64_t row_bytes = nb * kBytes;
  const char* const wb = reinterpret_cast<const char*>(w);
  uint8_t* const my_stage = stage + warp * (kStages * kR * kRow);
  auto buffer = [&](int64_t i, int r) { return my_stage + (int(i % kStages) * kR + r) * kRow; };
  const char* rows[kR];
#pragma unroll
  for (int r = 0; r < kR; ++r) rows[r] = wb + (n0 + r < N ? n0 + r : N - 1) * row_bytes;

  // The copier: lane -> (row cr, chunk cc) of step i (block s + i S of both rows).
  const int cr = lane / kChunk, cc = lane % kChunk;
  const char* copy_row = rows[0];  // rows[cr] without a run-time register index
#pragma unroll
  for (int r = 1; r < kR; ++r)
    if (cr == r) copy_row = rows[r];
  auto issue = [&](int64_t i) {
    if (i < T && cr < kR) {
      const char* p = copy_row + (s + i * S) * kBytes;
      const int phase = static_cast<int>(reinterpret_cast<uintptr_t>(p) & 15);
      const int valid = phase + kBytes - 16 * cc;
      if (valid > 0)
        cp_async16(buffer(i, cr) + 16 * cc, p - phase + 16 * cc, valid < 16 ? valid : 16);
    }
    cp_async_commit();  // an empty group past the end keeps the wait counts in step
  };

  float acc[MT][kR];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int r = 0; r < kR; ++r) acc[m][r] = 0.f;

#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) issue(i);
#pragma unroll 1
  for (int64_t i = 0; i < T; ++i) {
    issue(i + kStages - 1);  // into the slot read in iteration i - 1
    cp_async_wait<kStages - 1>();
    __syncwarp();  // every lane's chunks of step i are visible
    const int64_t kb = s + i * S;
    float q[kR][8], a[kR], b[kR];
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      const int phase = static_cast<int>((reinterpret_cast<uintptr_t>(rows[r]) + kb * kBytes) & 15);
      decode(static_cast<const TB*>(nullptr), buffer(i, r) + phase, lane, q[r], a[r], b[r]);
    }
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      if (m == 0 || m < M) {
        float xv[8];
        load_x8(x + m * K + kb * kQK_K + 8 * lane, xv);
        float sx = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) sx += xv[e];
#pragma unroll
        for (int r = 0; r < kR; ++r) {
          float sq = 0.f;
#pragma unroll
          for (int e = 0; e < 8; ++e) sq = fmaf(q[r][e], xv[e], sq);
          acc[m][r] = fmaf(a[r], sq, fmaf(-b[r], sx, acc[m][r]));
        }
      }
    }
    __syncwarp();  // every lane is done with this slot before it is refilled
  }
  cp_async_wait<0>();  // no copy may land after the CTA exits

  store_slices<TX, MT, kR>(acc, partial, s, S, true, n0, M, N, nullptr, y);  // n < N is checked
}

// Any layout (x not 16-byte aligned): a warp per row of W, lanes take 8 weights of each block.
template <typename TX, typename TB>
__global__ void __launch_bounds__(kThreads)
    kq_gemv_scalar_kernel(const TX* __restrict__ x, const TB* __restrict__ w, TX* __restrict__ y,
                          int M, int64_t N, int64_t K) {
  const int lane = threadIdx.x & 31;
  const int64_t n = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (n >= N) return;
  const TB* row = w + n * (K / kQK_K);
  for (int m = 0; m < M; ++m) {
    float acc = 0.f;
    for (int64_t k = 8 * lane; k < K; k += kQK_K) {
      float v[8];
      kq_dequant8(row[k / kQK_K], static_cast<int>(k % kQK_K), v);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc = fmaf(v[i], to_f32(x[m * K + k + i]), acc);
    }
    acc = warp_sum(acc);
    if (lane == 0) y[m * N + n] = from_f32<TX>(acc);
  }
}

int kq_stages() {
  static const int v = [] {
    const long n = env_long("GEMMA3_KQ_STAGES");
    return n == 3 || n == 6 || n == 8 ? int(n) : kDefaultStages;
  }();
  return v;
}

template <typename TX, typename TB, int MT>
Status launch(const TX* x, const TB* w, TX* y, int M, int64_t N, int64_t K, cudaStream_t stream) {
  int sms = 0;
  G3_RETURN_IF_ERROR(sm_count(&sms));
  // Split a row group's blocks over S warps only while the groups alone leave warps idle (about 2
  // CTAs = 16 warps per SM resident... aim at 48 per SM) and each slice keeps >= 2 steps.
  const int64_t groups = (N + kR - 1) / kR, nb = K / kQK_K;
  const int64_t target = int64_t(sms) * 48;
  int S = 1;
  while (S < kWarps && groups * S < target && nb >= 4 * S) S *= 2;
  const int64_t per_block = kWarps / S;
  const int64_t blocks = (groups + per_block - 1) / per_block;
  if (blocks > 0x7fffffff) return Status(StatusCode::kUnsupported, "matmul kq_gemv: N too large");
  const unsigned grid = static_cast<unsigned>(blocks);
  switch (kq_stages()) {
    case 3:
      kq_gemv_kernel<TX, TB, MT, 3><<<grid, kThreads, 0, stream>>>(x, w, y, M, N, K, S);
      break;
    case 8:
      kq_gemv_kernel<TX, TB, MT, 8><<<grid, kThreads, 0, stream>>>(x, w, y, M, N, K, S);
      break;
    default:
      kq_gemv_kernel<TX, TB, MT, 6><<<grid, kThreads, 0, stream>>>(x, w, y, M, N, K, S);
  }
  return check_launch("matmul kq_gemv_kernel");
}

}  // namespace

// Called by matmul<TX, TB> (matmul.cu) with 1 <= M <= 8, N >= 1, K >= 1 and K % 256 == 0.
template <typename TX, typename TB>
Status kq_gemv(const TX* x, const TB* w, TX* y, int64_t M, int64_t N, int64_t K,
               cudaStream_t stream) {
  if (M < 1 || M > 8 || K % kQK_K != 0) {
    return Status(StatusCode::kInternal,
                  "matmul kq_gemv: M = " + std::to_string(M) + ", K = " + std::to_string(K));
  }
  const int m = static_cast<int>(M);
  const bool vec =
      (reinterpret_cast<uintptr_t>(x) & 15) == 0 && (reinterpret_cast<uintptr_t>(w) & 1) == 0;
  if (!vec) {
    const int64_t blocks = (N + kWarps - 1) / kWarps;
    if (blocks > 0x7fffffff) return Status(StatusCode::kUnsupported, "matmul kq_gemv: N too large");
    kq_gemv_scalar_kernel<TX, TB>
        <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, w, y, m, N, K);
    return check_launch("matmul kq_gemv_scalar_kernel");
  }
  if (m == 1) return launch<TX, TB, 1>(x, w, y, m, N, K, stream);
  if (m == 2) return launch<TX, TB, 2>(x, w, y, m, N, K, stream);
  if (m <= 4) return launch<TX, TB, 4>(x, w, y, m, N, K, stream);
  return launch<TX, TB, 8>(x, w, y, m, N, K, stream);
}

#define G3_KQ_GEMV(TX, TB)                                                              \
  template Status kq_gemv<TX, TB>(const TX*, const TB*, TX*, int64_t, int64_t, int64_t, \
                                  cudaStream_t);
G3_KQ_GEMV(float, block_q4_K)
G3_KQ_GEMV(float, block_q5_K)
G3_KQ_GEMV(float, block_q6_K)
G3_KQ_GEMV(bf16, block_q4_K)
G3_KQ_GEMV(bf16, block_q5_K)
G3_KQ_GEMV(bf16, block_q6_K)
#undef G3_KQ_GEMV

}  // namespace gemma3::cuda::detail
