// GEMV path of matmul (1 <= M <= kGemvMaxM): y[m, n] = sum_k x[m, k] * W[n, k], bound by the bytes
// of W. A warp streams R rows of W (S warps split K when N alone cannot fill the GPU), every weight
// byte is read once for all M rows of x, and x (small, shared by every warp) is read through L1.
// Dense formats (f32, bf16, fp8) load W with 16-byte loads straight into registers (gemv_kernel;
// short rows at M = 1 in one round, "one-shot"); the GGUF block formats (q8_0, q4_0) stage it
// through shared memory (gemv_q_kernel, see its notes) or, at M <= 2 where it measured faster, read
// whole blocks a lane straight from global (gemv_qlane_kernel, which also takes their CUDA split
// row layouts q4_0s / q8_0s at every M: one or two aligned 16-byte loads a block), and by default
// read x rounded to int8 blocks and dot with dp4a ("q-dot", kernels.inc; GEMMA3_QDOT=float keeps x
// in float and decodes W to float instead, the split layouts then going to the GEMM). Each CTA
// rounds x into its shared memory when all M rows fit 48 KB ("fused"), else quantize_x_q8_kernel
// rounds it into g_qx first. Cases: native/test/cases.ts (matmulCases); rows: bench_kernels gemv,
// gemv_layer, layer_chain. The dense GEMV can also norm and rotate the heads of a QKV projection as
// it finishes them (gemv_qk, the opt-in one-launch form of matmul_qk_norm_rope).
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "kernels/cuda/cp_async.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gemv_common.cuh"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/qk_norm_rope.cuh"
#include "kernels/qdot.h"
#include "runtime/env.h"

namespace gemma3::cuda::detail {
namespace {

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

// Asks L2 for the line holding p (no register result): a weight chunk on its way before its load.
__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
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

// ---- dense weight formats (f32, bf16, fp8) ----
// A "chunk" is what one lane loads per row per step: kE weights, matched by kE contiguous x values
// at x_off(c). Lanes of a warp take consecutive chunks, so the warp reads a contiguous stretch of
// the row. unpack() yields the exact float weights. Block formats have their own kernel below.
template <typename TW>
struct Fmt;

template <>
struct Fmt<float> {
  static constexpr int kE = 4;
  using Raw = uint4;
  __device__ static Raw load(const float* row, int64_t c) { return ld_stream16(row + c * 4); }
  __device__ static void unpack(const Raw& r, float* v) {
    v[0] = __uint_as_float(r.x), v[1] = __uint_as_float(r.y);
    v[2] = __uint_as_float(r.z), v[3] = __uint_as_float(r.w);
  }
  __device__ static int64_t x_off(int64_t c) { return c * 4; }
};

template <>
struct Fmt<bf16> {
  static constexpr int kE = 8;
  using Raw = uint4;
  __device__ static Raw load(const bf16* row, int64_t c) { return ld_stream16(row + c * 8); }
  __device__ static void unpack(const Raw& r, float* v) { unpack_bf16x8(r, v); }
  __device__ static int64_t x_off(int64_t c) { return c * 8; }
};

template <>
struct Fmt<fp8e4m3> {
  static constexpr int kE = 16;
  using Raw = uint4;
  __device__ static Raw load(const fp8e4m3* row, int64_t c) { return ld_stream16(row + c * 16); }
  __device__ static void unpack(const Raw& r, float* v) {
    unpack_fp8x4(r.x, v), unpack_fp8x4(r.y, v + 4), unpack_fp8x4(r.z, v + 8);
    unpack_fp8x4(r.w, v + 12);
  }
  __device__ static int64_t x_off(int64_t c) { return c * 16; }
};

// ---- decode QKV epilogue (matmul_qk_norm_rope, kernels.inc) ----
// y is one projection's [q | k | v] rows, heads of head_dim rows each. Every CTA counts the rows
// it wrote into a per-(token, head) counter; the CTA whose count completes a head norms and rotates
// it (q into q_out, k into its KV row) or copies it (v), with qk_norm_rope.cuh's warp-per-head
// code, so the result equals qk_norm_rope's bit for bit and the step needs no kernel for it.
// Classic last-block pattern: each writer's __threadfence, then the count; the last CTA reads the
// head through L2 (ld.global.cg) and resets the counter for the next launch (launches on a device
// are ordered on its one stream, so g_qk_rows, like g_qx, needs no allocation).
using qknr::QkEpilogue;

constexpr int kQkMaxCounters = 8 * 1024;  // M (token, head) pairs at most: M <= 8, 1024 heads
// Heads one CTA may finish: M <= 8 tokens x the 2 heads its <= 16 rows touch (head_dim >= 16).
constexpr int kQkMaxItems = 16;
__device__ unsigned g_qk_rows[kQkMaxCounters];

// MT >= M: the GEMV's compile-time row count (sizes the RoPE tables).
template <typename T, int MT>
__device__ __forceinline__ void qk_epilogue(const T* y, int M, int64_t N, int64_t r0, int64_t r1,
                                            bool wrote, const QkEpilogue<T>& e) {
  constexpr int V = 16 / sizeof(T), kHalf = qknr::kMaxHeadDim / 2;
  __shared__ int s_items[kQkMaxItems], s_n;
  __shared__ float s_cs[MT][kHalf], s_sn[MT][kHalf];  // RoPE tables of the M tokens
  __shared__ float s_x[kWarps][qknr::kMaxHeadDim];
  const int D = e.head_dim, heads = e.q_heads + 2 * e.kv_heads;
  if (wrote) __threadfence();  // this thread's y rows, device-wide, before the CTA counts them
  __syncthreads();
  if (threadIdx.x == 0) {
    int n = 0;
    for (int m = 0; m < M; ++m) {
      for (int64_t h = r0 / D; h * D < r1; ++h) {
        const int64_t lo = r0 > h * D ? r0 : h * D, hi = r1 < (h + 1) * D ? r1 : (h + 1) * D;
        unsigned* c = g_qk_rows + m * heads + h;
        const unsigned add = unsigned(hi - lo);
        if (atomicAdd(c, add) + add == unsigned(D)) {
          atomicExch(c, 0u);  // every row of the head is counted: ready for the next launch
          if (n < kQkMaxItems) s_items[n++] = m * heads + int(h);
        }
      }
    }
    s_n = n;
  } else if (threadIdx.x >= 32) {
    // While warp 0 waits on the counts: the tokens' cos/sin tables (any CTA may finish a head).
    for (int m = 0; m < M; ++m)
      qknr::rope_table<T>(float(e.positions[m]), D, e.base, e.scale, s_cs[m], s_sn[m],
                          threadIdx.x - 32, kThreads - 32);
  }
  __syncthreads();
  const int n = s_n;
  if (n == 0) return;
  __threadfence();  // the other CTAs' rows of the finished heads are read after their counts
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nvec = D / V;
  for (int it = warp; it < n; it += kWarps) {
    const int m = s_items[it] / heads, gh = s_items[it] % heads;
    const T* src = y + int64_t(m) * N + int64_t(gh) * D;
    const bool is_q = gh < e.q_heads, is_k = !is_q && gh < e.q_heads + e.kv_heads;
    const int h = is_q ? gh : (is_k ? gh - e.q_heads : gh - e.q_heads - e.kv_heads);
    const int64_t row = e.kv_rows ? int64_t(e.kv_rows[m]) : m;
    const bool kv_ok = !e.kv_rows || (row >= 0 && row < e.kv_capacity);
    if (is_q || (is_k && kv_ok)) {
      const T* w = is_q ? e.q_w : e.k_w;
      float f[qknr::kRegVec][V], wr[qknr::kRegVec][V];
#pragma unroll
      for (int i = 0; i < qknr::kRegVec; ++i) {
        if (lane + 32 * i < nvec) {
          qknr::load_f32_cg<T, V>(src + (lane + 32 * i) * V, f[i]);
          vec::load_f32<T, V>(w + (lane + 32 * i) * V, wr[i]);
        }
      }
      T* dst =
          is_q ? e.q_out + (int64_t(m) * e.q_heads + h) * D : e.k_out + (row * e.kv_heads + h) * D;
      qknr::norm_rope_head<T, V, true>(src, f, w, wr, dst, s_x[warp], s_cs[m], s_sn[m], D, e.eps,
                                       lane);
    } else if (!is_q && !is_k && e.v_out && kv_ok) {
      qknr::copy_head<T, V, true>(src, e.v_out + (row * e.kv_heads + h) * D, nvec, lane);
    }
    __syncwarp();  // the warp's s_x is rewritten for its next head
  }
}

// Rows per warp (R) and chunks in flight per row (U). Streamed (the default U): a warp loops over
// its slice of K, U chunks of each row per lane per round trip; few enough registers at M = 8.
// One-shot (U = kOneShotU; M = 1, f32 / bf16 W of at most kOneShotMaxBytes whose row fits one
// round of a warp, K <= 32 U chunks: the 1B layer's QKV, O and gate/up; GEMMA3_GEMV_ONESHOT): the
// warp issues its whole row group before pdl_wait (W needs nothing from the kernel before): one
// DRAM round trip a warp, overlapping the previous kernel's tail. H100, graph-timed, bf16
// (docs/kernels.md, session 7): the 1B QKV, O and gate/up gain 0.4-2.6 µs each (gate/up 14.6 ->
// 11.9 µs), 1B decode +5.8% (H200); with K split to fit (the 4B QKV and O, 0.3-0.9 µs faster
// alone) 4B decode lost 1.6%, W of 52 MB and more (4B gate/up, down) and fp8 rows lost up to 2.5
// µs.
constexpr int kOneShotU = 5;
constexpr int64_t kOneShotMaxBytes = int64_t(40) << 20;
template <int MT>
struct Tiling {
  static constexpr int R = 2;
  static constexpr int U = MT <= 2 ? 2 : 1;
};

// Group g = (block, warp / S) owns rows [g R, g R + R); its slice s = warp % S takes chunks
// s*32*U + lane + i*S*32*U. MT >= M is x's compile-time row count (rows >= M are skipped). The
// min-blocks bound stops ptxas from trading spills for occupancy; 2-3 CTAs/SM keep loads in flight.
// kQk (the QKV epilogue) bounds registers to what the plain kernel uses at M = 1 (40: 6 CTAs an SM,
// so the 4B QKV GEMV's 512 CTAs run in one wave, not two), spilling in the epilogue instead.
// kGelu (the gated-MLP epilogue) keeps the plain streamed kernel's 40 registers at M = 1 for
// 16-bit weights (bf16: 6 CTAs an SM); fp8 (46 without it) would spill (H100: 1B gate/up 10.5 ->
// 11.4 µs when bounded).
template <typename TX, typename TW, int MT, int U, bool kQk = false, bool kGelu = false>
__global__ void __launch_bounds__(kThreads,
                                  MT == 1 && (kQk || (kGelu && U != kOneShotU && sizeof(TW) == 2))
                                      ? 6
                                      : (kQk ? 4 : (MT == 1 ? 3 : 2)))
    gemv_kernel(const TX* __restrict__ x,           // x: [M, K]
                const TW* __restrict__ w,           // w: [N, K], 16-byte aligned
                const float* __restrict__ w_scale,  // w_scale: [N] or null
                TX* __restrict__ y,                 // y: [M, N]
                int M, int64_t N, int64_t K, int S,
                QkEpilogue<TX> qk,   // kQk: norm and rotate each finished head (below)
                GeluPairs<TX> gp) {  // kGelu: the gated-MLP epilogue (gemv_common.cuh)
  using F = Fmt<TW>;
  constexpr int R = Tiling<MT>::R, E = F::kE;
  constexpr bool kOneShot = U == kOneShotU;
  __shared__ float partial[kWarps][MT * R];

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t group = int64_t(blockIdx.x) * (kWarps / S) + warp / S;
  const int s = warp % S;
  const int64_t n0 = group * R;
  const int64_t nchunks = K / E;

  float acc[MT][R];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[m][r] = 0.f;

  const TW* rows[R];
#pragma unroll
  for (int r = 0; r < R; ++r) rows[r] = w + gemv_row<R, kGelu>(group, r, N, gp.F) * K;
  // f(u, r, c) for chunk c = c0 + 32 u (< nchunks) of each row r: one round of this lane.
  auto each_chunk = [&](int64_t c0, auto&& f) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = c0 + u * 32;
      if (c < nchunks) {
#pragma unroll
        for (int r = 0; r < R; ++r) f(u, r, c);
      }
    }
  };
  typename F::Raw raw[U][R];
  auto load_round = [&](int64_t c0) {
    each_chunk(c0, [&](int u, int r, int64_t c) { raw[u][r] = F::load(rows[r], c); });
  };
  // PDL (pdl.cuh): no kernel of a step writes W, so this warp's first chunks start on their way
  // while the kernel before finishes (one-shot: its first round into registers; streamed: towards
  // L2); x and y wait for it.
  const int64_t first = int64_t(s) * 32 * U + lane;
  if (n0 < N) {
    if constexpr (kOneShot) {
      load_round(first);
    } else {
      each_chunk(first, [&](int, int r, int64_t c) { prefetch_l2(rows[r] + c * E); });
    }
  }
  pdl_wait();
  pdl_trigger();

  if (n0 < N) {
    const int64_t step = int64_t(S) * 32 * U;
    for (int64_t c0 = first; c0 < nchunks; c0 += step) {
      if (!kOneShot || c0 != first) load_round(c0);
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
              load_x_run<E>(xr + F::x_off(c), xv);
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

  store_slices<TX, MT, R, kGelu>(acc, partial, s, S, n0 < N, n0, M, N, w_scale, y, gp);
  if constexpr (kQk) {
    const int64_t rows = int64_t(kWarps / S) * R;  // this CTA's rows [r0, r1) of y
    const int64_t r0 = int64_t(blockIdx.x) * rows, r1 = r0 + rows < N ? r0 + rows : N;
    qk_epilogue<TX, MT>(y, M, N, r0, r1, s == 0 && n0 < N && lane < MT * R, qk);
  }
}

// ---- block formats (q8_0, q4_0): rows staged through shared memory with 16-byte copies ----
//
// GGUF blocks (34 / 18 bytes) are only 2-byte aligned and a row is 16-byte aligned only when
// K % 256 == 0, so lanes copy whole 16-byte-aligned chunks of each row's byte range into shared
// memory (cp.async; up to 14 head bytes of the previous row ride along and are ignored, the tail
// chunk is zero-filled rather than over-read) and decode the blocks there with 32-bit LDS and
// funnel shifts. A warp owns R rows; a pass covers 16 q4_0 / 8 q8_0 blocks of each row (2 / 4 lanes
// per block, 8 qs bytes = 16 / 8 weights per lane, 288 / 272 bytes); a step is P passes and NS - 1
// steps are in flight. A warp's steps form one stream across all its row groups, so the pipeline
// never drains between groups. The grid is persistent (resident CTAs only); when row groups alone
// cannot occupy every resident warp, S warps of a CTA (a "team") split K and meet on a named
// barrier; each team takes a contiguous, balanced range of row groups.
//
// Prediction (H100 SXM, M = 1, bf16 x, 3 CTAs = 24 warps/SM; W bytes = N K/32 * 18 or 34):
//   q4_0 is issue-bound: a step (2 rows x 32 blocks = 1152 B) is ~440 instructions per lane, of
//   which 192 are the floor of exact decoding (1 PRMT + 1 FFMA per weight, then 1 FFMA per weight
//   and x row); at 4 warp-instructions/clk/SM that caps it at ~10.5 B/clk/SM = 2.4 (1.75 GHz) to
//   2.75 TB/s (1.98 GHz) with perfect issue, so ~2.2-2.4 TB/s in practice. q8_0 (~300 instructions
//   per 1088 B step) stays HBM-bound. In flight: 3 steps x ~1.1 KB per warp, ~80 KB per SM, ~3x
//   what ~3 TB/s x ~1 us of DRAM latency needs.
//     K x N          q4_0 bytes, time, TB/s         q8_0 bytes, time, TB/s
//     2560 x 10240   14.7 MB   ~6.5 us  ~2.25        27.9 MB   ~11 us   ~2.5
//     5376 x 21504   65.0 MB   ~28 us   ~2.35        122.8 MB  ~44 us   ~2.8
//     1152 x 6912     4.5 MB   ~3 us    ~1.5          8.5 MB   ~4.5 us  ~1.9  (latency + launch)
//     2560 x 262208  377.6 MB  ~160 us  ~2.35        713.2 MB  ~245 us  ~2.9

// Barrier among the `threads` threads (whole warps) of one team, on named barrier `id` (1..15).
__device__ __forceinline__ void team_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Decoders. A lane holds 8 consecutive qs bytes of one block (q[0] = bytes 0..3, q[1] = 4..7). One
// byte permute puts each quant into the mantissa of a float constant B (0.5 or 8), giving exactly
// v = B + q * u; then fma(v, D, C) with per-block D = d / u and C = -(B / u + off) d equals
// (q - off) * d: v * D is exact inside the fma, C is exact (at most 9 + 11 significant bits) and so
// is the representable result. The weights are bit-identical to the CPU's float(q - off) * d, so
// only the float32 summation order differs.
template <typename TW>
struct QFmt;

// q4_0: 2 lanes per block; lane h's bytes qs[8h, 8h + 8) hold weights 8h..8h+7 (low nibbles,
// half 0) and 16+8h..16+8h+7 (high nibbles, half 1), each half matched by 8 contiguous x values.
// Low nibble n into byte 2 of 0.5f: v = 0.5 + n / 2^8. High nibble left in place (16 n) into
// byte 1 of 8.0f: v = 8 + n / 2^8. Hence fma(v, 2^8 d, -(128 + 8) d) and fma(v, 2^8 d,
// -(2048 + 8) d) are both (n - 8) d, with one shared D.
template <>
struct QFmt<block_q4_0> {
  static constexpr int kBytes = 18, kLanes = 2, kHalves = 2;
  struct Scale {
    float d, c_lo, c_hi;
  };
  __device__ static Scale scale(float d) { return {256.f * d, -136.f * d, -2056.f * d}; }
  // The 4 weights of one qs word q (half 0: low nibbles, 1: high nibbles).
  __device__ static void decode4(uint32_t q, int half, const Scale& s, float* v) {
    if (half == 0) {
      const uint32_t n = q & 0x0f0f0f0fu;
#pragma unroll
      for (int t = 0; t < 4; ++t) {
        const uint32_t sel = 0x7044u | (uint32_t(t) << 8);  // bytes {0, 0, n_t, 0x3f}
        v[t] = fmaf(__uint_as_float(__byte_perm(n, 0x3f000000u, sel)), s.d, s.c_lo);
      }
    } else {
      const uint32_t n = q & 0xf0f0f0f0u;
#pragma unroll
      for (int t = 0; t < 4; ++t) {
        const uint32_t sel = 0x7404u | (uint32_t(t) << 4);  // bytes {0, 16 n_t, 0, 0x41}
        v[t] = fmaf(__uint_as_float(__byte_perm(n, 0x41000000u, sel)), s.d, s.c_hi);
      }
    }
  }
  __device__ static int x_off(int h, int half) { return 8 * h + 16 * half; }
};

// q8_0: 4 lanes per block; lane h's bytes qs[8h, 8h + 8) are weights 8h..8h+7. Flipping the sign
// bit gives u = q + 128 in [0, 255], placed in byte 1: v = 0.5 + u / 2^16, (u - 128) d = q d.
template <>
struct QFmt<block_q8_0> {
  static constexpr int kBytes = 34, kLanes = 4, kHalves = 1;
  struct Scale {
    float d, c;
  };
  __device__ static Scale scale(float d) { return {65536.f * d, -32896.f * d}; }
  __device__ static void decode4(uint32_t q, int, const Scale& s, float* v) {
    const uint32_t u = q ^ 0x80808080u;
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const uint32_t sel = 0x7404u | (uint32_t(t) << 4);  // bytes {0, u_t, 0, 0x3f}
      v[t] = fmaf(__uint_as_float(__byte_perm(u, 0x3f000000u, sel)), s.d, s.c);
    }
  }
  __device__ static int x_off(int h, int) { return 8 * h; }
};

// Rows per warp (R; 4 at M = 3..4 shares each x load over more rows, M > 4 must stay at 2 to fit
// 128 registers), passes per step (P; a pass = 32 / kLanes blocks of each row, one per lane
// group) and pipeline stages (NS: NS - 1 = 3 steps of ~1.1 KB in flight per warp). Shared memory
// per CTA: kWarps * NS * R * slot bytes <= 39 KB, under the 48 KB static limit.
template <int MT>
struct QTiling {
  static constexpr int R = MT == 4 ? 4 : 2;
  static constexpr int P = MT == 4 ? 1 : 2;
  static constexpr int NS = 4;
};
// Bytes of one row's step in shared memory: up to 14 misaligned head bytes + the step's blocks,
// in whole 16-byte chunks, also covering the decoder's 3-word read at the last block.
template <typename TW, int P>
constexpr int slot_bytes() {
  using Q = QFmt<TW>;
  constexpr int blocks = P * 32 / Q::kLanes, head = 14;
  constexpr int chunks = (head + blocks * Q::kBytes + 15) / 16;
  constexpr int last_word = (head + (blocks - 1) * Q::kBytes + 2 + 8 * (Q::kLanes - 1)) / 4 + 2;
  return chunks * 16 > (last_word + 1) * 4 ? chunks * 16 : (last_word + 1) * 4;
}

// ---- q-dot (kernels.inc, matmul; kernels/qdot.h): x rounded to int8 blocks, dp4a dots ----
//
// llama.cpp's MMVQ arithmetic: x is rounded once per call (int8 values [M, K], then per block
// {d_x as f32 bits, s = sum of the block's int8 values} [M, K/32]); the GEMV reads those instead
// of x and, per weight block, forms the exact integer dot with __dp4a (4 byte products + add per
// instruction) and one FFMA: acc += (d_w d_x) * float(dot). q4_0: the nibbles n are unsigned
// (0..15) bytes, so sum (n - 8) q = dp4a(n, q) - 8 s, the -8 s added once per block (by lane
// h = 0). A lane's part of the block (16 / 8 weights) is scaled on its own; the warp sums the parts
// at the end (float rounding of each part, integer parts exact). Per lane and block, per W row:
// 4 (q4_0) / 2 (q8_0) dp4a + 4 / 0 LOP3 to split the nibbles + 1 FMUL + 1 I2F + 1 FFMA; per x row:
// 2 / 1 loads + 1 for {d_x, s}. See docs/kernels.md.
//
// Where the rounded x lives (XIn): in the CTA's shared memory, rounded by the GEMV's own prologue
// when all M rows fit kFusedXBytes (one launch), else in g_qx, rounded by quantize_x_q8_kernel
// launched before the GEMV (GEMMA3_QDOT_FUSED=0 forces this). Both round bit-identically.
enum class XIn { kFloat, kQ8Global, kQ8Shared };

// g_qx is a module global, one per device: every launch on a device is ordered on that device's
// one stream (runtime/device.cc), so a quantize / GEMV pair never overlaps another; no allocation,
// and graph capture records a fixed address.
constexpr int64_t kQxBytes = int64_t(4) << 20;
__device__ __align__(16) char g_qx[kQxBytes];

// Dynamic shared memory for the rounded x of the fused path (on top of gemv_q_kernel's ~36-39 KB
// of static stages): M K int8 values + M K/32 {d_x, s} = 40 bytes per block of 32, so M K <= 39321
// (4B: K = 2048 / 2560 at M <= 8, the down projection K = 10240 at M <= 3; 27B: K = 4096 at
// M <= 8, 5376 at M <= 7, 21504 at M = 1). At most ~88 KB a CTA, under the opt-in limit of sm_80+
// (163 / 99 / 227 KB on sm_80 / sm_86 / sm_90).
constexpr int kFusedXBytes = 48 << 10;
constexpr int kXBlockBytes = kQK + int(sizeof(int2));

__device__ __forceinline__ uint32_t reduce_max_u32(uint32_t v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  return __reduce_max_sync(0xffffffffu, v);
#else
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
#endif
}
__device__ __forceinline__ int reduce_add_i32(int v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  return __reduce_add_sync(0xffffffffu, v);
#else
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
#endif
}

// One warp per block of 32: x [rows, K] contiguous, `blocks` = rows * K / 32 -> g_qx.
template <typename TX>
__global__ void __launch_bounds__(kThreads)
    quantize_x_q8_kernel(const TX* __restrict__ x, int64_t blocks) {
  pdl_wait();  // pdl.cuh: x comes from the kernel before; g_qx may still be read by the one before
  pdl_trigger();
  const int64_t b = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (b >= blocks) return;  // whole warps
  const int lane = threadIdx.x & 31;
  const float v = to_f32(x[b * kQK + lane]);
  const float d = qdot::block_scale(reduce_max_u32(qdot::abs_bits(v)));
  const int q = qdot::quantize_one(v, qdot::block_inv_scale(d));
  reinterpret_cast<int8_t*>(g_qx)[b * kQK + lane] = static_cast<int8_t>(q);
  const int s = reduce_add_i32(q);
  if (lane == 0) reinterpret_cast<int2*>(g_qx + blocks * kQK)[b] = make_int2(__float_as_int(d), s);
}

// Byte offset in a block of the int8 values of its run t (values [8t, 8t + 8)) in the fused path's
// shared memory. q4_0 stores the runs in the order 0, 2, 1, 3: lane h of a block reads its low run
// (h) and high run (h + 2) as one 16-byte load, and a warp's 16 lanes read 512 contiguous bytes
// (no bank conflict). q8_0's lane h reads run h, already contiguous across the warp.
template <typename TW>
__device__ __forceinline__ int x_run_offset(int t) {
  if constexpr (std::is_same_v<TW, block_q4_0>) return 8 * ((t & 1) * 2 + (t >> 1));
  return 8 * t;
}

// The fused prologue: the CTA rounds x [`blocks` blocks of 32, contiguous, 16-byte aligned] into
// sx: int8 values (runs placed by x_run_offset) [blocks][32], then {d_x f32 bits, s} [blocks]. A
// thread takes one run of 8 values (4 threads a block; kIn runs in flight per thread, loads first).
// The block max of |x| bits and the sum of its int8 values are exact in any order, and d_x and
// each q come from the same qdot:: functions as in quantize_x_q8_kernel: bit-identical to g_qx.
template <typename TX, typename TW, int kIn = 4>
__device__ __forceinline__ void quantize_x_shared(const TX* __restrict__ x, int blocks, char* sx) {
  const int runs = blocks * 4;
  int2* const sds = reinterpret_cast<int2*>(sx + blocks * kQK);
#pragma unroll 1
  for (int c0 = 0; c0 < runs; c0 += kIn * kThreads) {  // uniform over the CTA: shuffles below
    float v[kIn][8];
#pragma unroll
    for (int i = 0; i < kIn; ++i) {
      const int c = c0 + i * kThreads + static_cast<int>(threadIdx.x);
      if (c < runs) {
        load_x_run<8>(x + int64_t(c) * 8, v[i]);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) v[i][e] = 0.f;
      }
    }
#pragma unroll
    for (int i = 0; i < kIn; ++i) {
      const int c = c0 + i * kThreads + static_cast<int>(threadIdx.x);
      // Warp-uniform (the shuffles stay within a warp): no lane of this warp has a run left.
      if (c0 + i * kThreads + (static_cast<int>(threadIdx.x) & ~31) >= runs) break;
      uint32_t amax = 0;
#pragma unroll
      for (int e = 0; e < 8; ++e) amax = max(amax, qdot::abs_bits(v[i][e]));
      // The 4 runs of a block are lanes 4k..4k+3 of one warp.
      amax = max(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
      amax = max(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
      const float d = qdot::block_scale(amax);
      const float id = qdot::block_inv_scale(d);
      int q[8], s = 0;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        q[e] = qdot::quantize_one(v[i][e], id);
        s += q[e];
      }
      s += __shfl_xor_sync(0xffffffffu, s, 1);
      s += __shfl_xor_sync(0xffffffffu, s, 2);
      if (c < runs) {
        const uint32_t lo =
            __byte_perm(__byte_perm(q[0], q[1], 0x0040), __byte_perm(q[2], q[3], 0x0040), 0x5410);
        const uint32_t hi =
            __byte_perm(__byte_perm(q[4], q[5], 0x0040), __byte_perm(q[6], q[7], 0x0040), 0x5410);
        *reinterpret_cast<uint2*>(sx + (c >> 2) * kQK + x_run_offset<TW>(c & 3)) =
            make_uint2(lo, hi);
        if ((c & 3) == 0) sds[c >> 2] = make_int2(__float_as_int(d), s);
      }
    }
  }
}

// One pass of the GEMV consumer under q-dot: block `bi` of each of the R rows (qs words q[r],
// scale dw[r]), this lane's bytes [8h, 8h + 8) of it, against x rows 0..M-1 rounded to int8:
// from g_qx (kX = kQ8Global) or from the CTA's shared copy sx (kQ8Shared; x_run_offset layout).
template <typename TW, int MT, int R, XIn kX>
__device__ __forceinline__ void dot_pass(const uint32_t (&q)[R][2], const float (&dw)[R], int bi,
                                         int h, int M, int64_t K, const char* sx,
                                         float (&acc)[MT][R]) {
  static_assert(kX != XIn::kFloat, "q-dot only");
  constexpr bool kShared = kX == XIn::kQ8Shared;
  // Loads of the lane's x bytes and of a block's {d_x, s}: shared memory, or g_qx through L1.
  auto ld8 = [](const int8_t* p) {
    if constexpr (kShared) return *reinterpret_cast<const int2*>(p);
    return __ldg(reinterpret_cast<const int2*>(p));
  };
  auto ld_ds = [](const int2* p) {
    if constexpr (kShared) return *p;
    return __ldg(p);
  };
  const int8_t* const gq = reinterpret_cast<const int8_t*>(kShared ? sx : g_qx);
  const int2* const gds = reinterpret_cast<const int2*>(gq + int64_t(M) * K);
  const int64_t nb = K / kQK;
  if constexpr (std::is_same_v<TW, block_q4_0>) {
    int lo[R][2], hi[R][2];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        lo[r][i] = static_cast<int>(q[r][i] & 0x0f0f0f0fu);
        hi[r][i] = static_cast<int>((q[r][i] >> 4) & 0x0f0f0f0fu);
      }
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      if (m == 0 || m < M) {
        int2 xl, xh;
        if constexpr (kShared) {
          // Runs h and h + 2 side by side (x_run_offset): one 16-byte load.
          const int4 xv = *reinterpret_cast<const int4*>(gq + m * K + int64_t(bi) * kQK + 16 * h);
          xl = make_int2(xv.x, xv.y), xh = make_int2(xv.z, xv.w);
        } else {
          const int8_t* xq = gq + m * K + int64_t(bi) * kQK + 8 * h;
          xl = ld8(xq), xh = ld8(xq + 16);
        }
        const int2 ds = ld_ds(gds + m * nb + bi);
        const float dx = __int_as_float(ds.x);
        const int base = h == 0 ? -8 * ds.y : 0;
#pragma unroll
        for (int r = 0; r < R; ++r) {
          int v = __dp4a(lo[r][0], xl.x, base);
          v = __dp4a(lo[r][1], xl.y, v);
          v = __dp4a(hi[r][0], xh.x, v);
          v = __dp4a(hi[r][1], xh.y, v);
          acc[m][r] = fmaf(dw[r] * dx, static_cast<float>(v), acc[m][r]);
        }
      }
    }
  } else {
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      if (m == 0 || m < M) {
        const int2 xv = ld8(gq + m * K + int64_t(bi) * kQK + 8 * h);
        const float dx = __int_as_float(ld_ds(gds + m * nb + bi).x);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const int v =
              __dp4a(static_cast<int>(q[r][0]), xv.x, __dp4a(static_cast<int>(q[r][1]), xv.y, 0));
          acc[m][r] = fmaf(dw[r] * dx, static_cast<float>(v), acc[m][r]);
        }
      }
    }
  }
}

// Warp (team t = blockIdx.x * kWarps / S + warp / S of `teams`, slice s = warp % S) processes row
// groups [t G / teams, (t + 1) G / teams) of R rows each (rows past N clamped to N - 1, results
// dropped); slice s takes steps s, s + S, ... of every row. MT >= M is x's compile-time row count.
// kX: where x comes from (XIn; kQ8Shared takes M K / 32 * kXBlockBytes bytes of dynamic shared
// memory). Host guarantees K / 32 * kBytes < 2^31 (in-row byte offsets are int).
template <typename TX, typename TW, int MT, XIn kX>
__global__ void __launch_bounds__(kThreads, MT == 1 ? 3 : 2)
    gemv_q_kernel(const TX* __restrict__ x,           // x: [M, K], 16-byte aligned
                  const TW* __restrict__ w,           // w: [N, K/32] blocks, 2-byte aligned
                  const float* __restrict__ w_scale,  // w_scale: [N] or null
                  TX* __restrict__ y,                 // y: [M, N]
                  int M, int64_t N, int64_t K, int S, int64_t groups) {
  using Q = QFmt<TW>;
  constexpr bool kDot = kX != XIn::kFloat;
  constexpr int R = QTiling<MT>::R, P = QTiling<MT>::P, NS = QTiling<MT>::NS;
  constexpr int kPass = 32 / Q::kLanes;           // blocks per row per pass
  constexpr int kStep = P * kPass;                // blocks per row per step
  constexpr int kStepBytes = kStep * Q::kBytes;   // a multiple of 16: 576 / 272 / 544 / 288
  constexpr int kSlot = slot_bytes<TW, P>() / 4;  // words
  constexpr int kChunkIters = (kSlot * 4 / 16 + 31) / 32;
  static_assert(kStepBytes % 16 == 0, "a step keeps a row's 16-byte phase");
  __shared__ __align__(16) uint32_t stage[kWarps][NS][R][kSlot];
  __shared__ float partial[2][kWarps][MT * R];
  extern __shared__ __align__(16) char sx[];  // kQ8Shared: x rounded to int8 blocks

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int s = warp % S, team_in_cta = warp / S;
  const int64_t teams = int64_t(gridDim.x) * (kWarps / S);
  const int64_t team = int64_t(blockIdx.x) * (kWarps / S) + team_in_cta;
  const int64_t g_begin = team * groups / teams, g_end = (team + 1) * groups / teams;
  // The whole team has no rows: it leaves now, unless the CTA's x prologue needs all its threads
  // (then it leaves after that prologue's barrier); no team barrier is skipped either way.
  if (kX != XIn::kQ8Shared && g_begin >= g_end) {
    pdl_wait();  // pdl.cuh: the grid still completes only after the kernel before it
    return;
  }

  const int nb = static_cast<int>(K / kQK);    // blocks per row
  const int steps = (nb + kStep - 1) / kStep;  // steps per row
  const int T = (steps + S - 1) / S;           // steps per row per slice (some may be empty)
  const int64_t row_bytes = int64_t(nb) * Q::kBytes;
  const char* const wb = reinterpret_cast<const char*>(w);
  // Row r of group g starts at byte `phase` of the 16-byte chunk at `base16`; since a step is a
  // whole number of chunks, every step of the row has the same phase.
  auto row_geom = [&](int64_t g, int r, const char** base16, int* phase) {
    const int64_t n = g * R + r < N ? g * R + r : N - 1;
    const char* p = wb + n * row_bytes;
    *phase = static_cast<int>(reinterpret_cast<uintptr_t>(p) & 15);
    *base16 = p - *phase;
  };

  // Producer: copies the step after the last one issued (cursor pg, pi) into `slot`, then commits
  // a copy group (empty past the end) so every lane's group count stays in step with the consumer.
  int64_t pg = g_begin;
  int pi = 0;
  const char* pbase[R];
  int pphase[R];
#pragma unroll
  for (int r = 0; r < R; ++r) row_geom(pg, r, &pbase[r], &pphase[r]);
  auto issue = [&](int slot) {
    const int st = s + pi * S;
    if (pg < g_end && st < steps) {
      const int bytes = (nb - st * kStep < kStep ? nb - st * kStep : kStep) * Q::kBytes;
      char* const dst = reinterpret_cast<char*>(stage[warp][slot][0]) + 16 * lane;
      const int64_t src_off = int64_t(st) * kStepBytes + 16 * lane;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        // Bytes from this lane's first chunk to the end of the row's step range.
        const int left = pphase[r] + bytes - 16 * lane;
#pragma unroll
        for (int c = 0; c < kChunkIters; ++c) {
          const int rem = left - 512 * c;
          if (rem > 0)
            cp_async16(dst + r * (kSlot * 4) + 512 * c, pbase[r] + src_off + 512 * c,
                       rem < 16 ? rem : 16);
        }
      }
    }
    cp_async_commit();
    if (++pi == T) {
      pi = 0;
      if (++pg < g_end) {
#pragma unroll
        for (int r = 0; r < R; ++r) row_geom(pg, r, &pbase[r], &pphase[r]);
      }
    }
  };

  float acc[MT][R];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[m][r] = 0.f;

  // Consumer: the lane decodes block j of each pass, qs bytes [8h, 8h + 8), against x[xl + ...].
  const int j = lane / Q::kLanes, h = lane % Q::kLanes;
  const TX* const xl = x + j * kQK + Q::x_off(h, 0);
  // Per row of the current group: byte offsets in the slot of the words holding the lane's d and
  // its qs (pass 0), and the bit shifts that extract them (the block is 2-byte aligned, so d sits
  // in one word at shift 0 or 16 and the qs start at the other half-word).
  int dwb[R], qwb[R], dsh[R], qsh[R];
  auto consumer_rows = [&](int64_t g) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const char* unused;
      int base;
      row_geom(g, r, &unused, &base);
      base += j * Q::kBytes;
      dwb[r] = base & ~3;
      dsh[r] = (base & 2) * 8;
      qwb[r] = (base + 2 + 8 * h) & ~3;
      qsh[r] = 16 - dsh[r];
    }
  };

#pragma unroll
  for (int k = 0; k < NS - 1; ++k) issue(k);  // a team without rows commits empty groups
  // PDL (pdl.cuh): the first steps of W are in flight; x (or g_qx) and y wait for the kernel
  // before.
  pdl_wait();
  pdl_trigger();
  if constexpr (kX == XIn::kQ8Shared) {
    // Rounding x here (~M K / 2048 runs of 8 values a thread) overlaps the W copies just issued.
    quantize_x_shared<TX, TW>(x, M * static_cast<int>(K / kQK), sx);
    __syncthreads();
    if (g_begin >= g_end) return;
  }
  int64_t g = g_begin;
  int i = 0, slot = 0, par = 0;
  consumer_rows(g);
  const int64_t flat = (g_end - g_begin) * T;  // this warp's steps, all groups in one stream
#pragma unroll 1
  for (int64_t f = 0; f < flat; ++f) {
    issue(slot == 0 ? NS - 1 : slot - 1);  // the slot consumed last iteration
    cp_async_wait<NS - 1>();               // this lane's copies of step f have landed
    __syncwarp();                          // ... and every lane's are visible
    const int st = s + i * S;
    const int nblk = st < steps ? nb - st * kStep : 0;  // blocks of this step (may exceed kStep)
    const TX* xs = xl + int64_t(st) * (kStep * kQK);
    const char* sl = reinterpret_cast<const char*>(stage[warp][slot][0]);
#pragma unroll
    for (int pass = 0; pass < P; ++pass) {
      if (pass * kPass + j < nblk) {
        constexpr int kPassBytes = kPass * Q::kBytes;  // 288 / 272: passes keep the word phase
        static_assert(kPassBytes % 4 == 0, "a pass is whole words");
        uint32_t q[R][2];
        typename Q::Scale sc[R];
        float dwf[R];
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const char* sr = sl + r * (kSlot * 4) + pass * kPassBytes;
          const uint32_t dword = *reinterpret_cast<const uint32_t*>(sr + dwb[r]);
          dwf[r] = f16_bits_to_f32((dword >> dsh[r]) & 0xffffu);
          if constexpr (!kDot) sc[r] = Q::scale(dwf[r]);
          const uint32_t* qp = reinterpret_cast<const uint32_t*>(sr + qwb[r]);
          const uint32_t w0 = qp[0], w1 = qp[1], w2 = qp[2];
          q[r][0] = __funnelshift_r(w0, w1, qsh[r]);
          q[r][1] = __funnelshift_r(w1, w2, qsh[r]);
        }
        if constexpr (kDot) {
          dot_pass<TW, MT, R, kX>(q, dwf, st * kStep + pass * kPass + j, h, M, K, sx, acc);
        } else {
#pragma unroll
          for (int half = 0; half < Q::kHalves; ++half) {
            float wv[R][8];
#pragma unroll
            for (int r = 0; r < R; ++r) {
              Q::decode4(q[r][0], half, sc[r], wv[r]);
              Q::decode4(q[r][1], half, sc[r], wv[r] + 4);
            }
#pragma unroll
            for (int m = 0; m < MT; ++m) {
              if (m == 0 || m < M) {  // M >= 1
                float xv[8];
                load_x_run<8>(
                    xs + m * K + pass * kPass * kQK + (Q::x_off(h, half) - Q::x_off(h, 0)), xv);
#pragma unroll
                for (int r = 0; r < R; ++r)
#pragma unroll
                  for (int e = 0; e < 8; ++e) acc[m][r] = fmaf(wv[r][e], xv[e], acc[m][r]);
              }
            }
          }
        }  // !kDot
      }
    }
    __syncwarp();  // every lane is done with `slot` before the next iteration refills it
    slot = slot + 1 == NS ? 0 : slot + 1;
    if (++i < T) continue;

    // Group g done: lane m * R + r ends with y[m, g R + r] (S == 1) or this slice's part of it.
    float v = 0.f;
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float t = warp_sum(acc[m][r]);
        if (lane == m * R + r) v = t;
        acc[m][r] = 0.f;
      }
    bool write = true;
    if (S > 1) {
      // Slices meet on the team's barrier; the first sums them in a fixed order (deterministic).
      // partial is double-buffered: a slice can only refill this parity after the next barrier,
      // which the first slice reaches after reading it.
      if (lane < MT * R) partial[par][warp][lane] = v;
      team_sync(1 + team_in_cta, 32 * S);
      write = s == 0;
      if (write && lane < MT * R) {
        v = 0.f;
        for (int k = 0; k < S; ++k) v += partial[par][warp + k][lane];
      }
      par ^= 1;
    }
    const int m = lane / R, r = lane % R;
    const int64_t n = g * R + r;
    if (write && lane < MT * R && m < M && n < N) {
      if (w_scale != nullptr) v *= __ldg(w_scale + n);
      y[m * N + n] = from_f32<TX>(v);
    }
    i = 0;
    if (++g < g_end) consumer_rows(g);
  }
}

// ---- q-dot with a lane per block (q8_0, q4_0 at M <= 2, GEMMA3_QDOT_LANE; q4_0s, q8_0s) ----
//
// The staged kernel above splits a block over 2 / 4 lanes and pays, per half block, for shared-
// memory staging, word realignment and scaling: Nsight Compute (H100, session 7) counts 6.0 M
// warp instructions for a 14.7 MB q4_0 GEMV (2.45 bytes of W each), so at ~2.5 IPC it is
// issue-bound at ~1.6 TB/s. Here lane j of a warp takes whole blocks j, j + 32, ... of each of its
// R rows, straight from global memory: the 5 / 9 aligned words that hold a block (cached in L1,
// which the warp's other loads of the same sectors hit), its d and qs words realigned with one
// funnel shift per word at the row's (lane-constant) 2-byte phase, then the whole block's integer
// dot (q4_0: low nibbles u8 x s8, high nibbles masked in place, i.e. 16x, then shifted back; the
// -8 offset as -8 s of the x block) and one FFMA: acc += (d_w d_x) * float(dot), the reference's
// per-block term exactly. The inner loop is ~35 instructions per block and row, but Nsight Compute
// counted 5.2 M warp instructions at 10240 x 2560 q4_0 (staged: 6.0 M): a warp's fixed work (rows,
// phases, reductions; ~1-2 blocks a lane) and each CTA rounding all of x dominate, and at 118
// registers 2 CTAs an SM fit. It wins where a row is long (down projections) or the grid is large
// and x is rounded once (qdot_lane_auto); making its warps persistent is the next step.
// q4_0s (DType::kQ4_0S, the GPU row layout) takes the same kernel with none of that realignment:
// a block's nibbles are one 16-byte load (a warp's 32 loads are 512 contiguous bytes) and its d one
// 16-bit load, so the inner loop is the dot alone; it serves q4_0s at every M <= 8 (LaneRow).
template <typename TW>
struct LaneFmt;
template <>
struct LaneFmt<block_q4_0> {
  static constexpr int kBytes = 18, kWords = 5, kQsWords = 4;
};
template <>
struct LaneFmt<block_q8_0> {
  static constexpr int kBytes = 34, kWords = 9, kQsWords = 8;
};
template <>
struct LaneFmt<block_q4_0s> {
  static constexpr int kBytes = 18, kWords = 5, kQsWords = 4;  // words: 4 of nibbles, then d
};
template <>
struct LaneFmt<block_q8_0s> {
  static constexpr int kBytes = 34, kWords = 9, kQsWords = 8;  // words: 8 of quants, then d
};
// The split row layouts (DType::kQ4_0S / kQ8_0S) and the 4-bit formats.
template <typename TW>
constexpr bool kSplitW = std::is_same_v<TW, block_q4_0s> || std::is_same_v<TW, block_q8_0s>;
template <typename TW>
constexpr bool kNibbleW = std::is_same_v<TW, block_q4_0> || std::is_same_v<TW, block_q4_0s>;

// dp4a with unsigned bytes in a and signed bytes in b (the q4_0 nibbles against int8 x).
__device__ __forceinline__ int dp4a_us(uint32_t a, int b, int c) {
  int d;
  asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

// 16 bytes at p, p aligned to kA (16, 8 or 2) bytes, as 4 words; read once (no L1 allocation).
template <int kA>
__device__ __forceinline__ void ld16_aligned(const char* p, uint32_t* w) {
  if constexpr (kA == 16) {
    const uint4 v = ld_stream16(p);
    w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
  } else if constexpr (kA == 8) {
    const uint2 a = __ldg(reinterpret_cast<const uint2*>(p));
    const uint2 b = __ldg(reinterpret_cast<const uint2*>(p) + 1);
    w[0] = a.x, w[1] = a.y, w[2] = b.x, w[3] = b.y;
  } else {
    static_assert(kA == 2, "q4_0s rows are 2-, 8- or 16-byte aligned");
    const unsigned short* u = reinterpret_cast<const unsigned short*>(p);
#pragma unroll
    for (int i = 0; i < 4; ++i)
      w[i] = uint32_t(__ldg(u + 2 * i)) | (uint32_t(__ldg(u + 2 * i + 1)) << 16);
  }
}

// One W row as the lane kernel reads it: load(b) fetches the words holding block b, decode() turns
// them into the block's qs words and d_w. GGUF blocks (q8_0, q4_0): the kWords aligned words from
// the block's start rounded down to 4 bytes, realigned by one funnel shift each at the row's
// 2-byte phase (blocks b and b + 32 share it: 32 kBytes % 4 == 0); at phase 0 the last word's
// upper half lies past the block (maybe past the tensor), so only its lower half is read. kA: the
// q4_0s row alignment (unused here).
template <typename TW, int kA, typename = void>
struct LaneRow {
  using L = LaneFmt<TW>;
  const char* p;
  bool phase2;
  __device__ __forceinline__ void init(const char* row, int, int b_lane) {
    p = row;
    phase2 = ((reinterpret_cast<uintptr_t>(row) + uintptr_t(b_lane) * L::kBytes) & 2) != 0;
  }
  __device__ __forceinline__ void load(int b, uint32_t (&wd)[L::kWords]) const {
    const uint32_t* q = reinterpret_cast<const uint32_t*>(
        reinterpret_cast<uintptr_t>(p + int64_t(b) * L::kBytes) & ~uintptr_t(3));
#pragma unroll
    for (int i = 0; i < L::kWords - 1; ++i) wd[i] = __ldg(q + i);
    wd[L::kWords - 1] =
        phase2 ? __ldg(q + L::kWords - 1)
               : uint32_t(__ldg(reinterpret_cast<const unsigned short*>(q + L::kWords - 1)));
  }
  __device__ __forceinline__ void decode(const uint32_t (&wd)[L::kWords],
                                         uint32_t (&q)[L::kQsWords], float* dw) const {
    // d: the low or high half of word 0; qs word i: words i, i + 1 shifted (32: word i + 1 as is)
    *dw = f16_bits_to_f32((wd[0] >> (phase2 ? 16 : 0)) & 0xffffu);
    const int sq = phase2 ? 32 : 16;
#pragma unroll
    for (int i = 0; i < L::kQsWords; ++i) q[i] = __funnelshift_rc(wd[i], wd[i + 1], sq);
  }
};
// Split layouts (q4_0s / q8_0s): block b's Q = 16 / 32 quant bytes at byte Q b of the row (kA-
// aligned: one / two 16-byte loads), its d at byte Q nb + 2 b.
template <typename TW, int kA>
struct LaneRow<TW, kA, std::enable_if_t<kSplitW<TW>>> {
  using L = LaneFmt<TW>;
  static constexpr int kQ = 4 * L::kQsWords;
  const char* qs;
  const unsigned short* d;
  __device__ __forceinline__ void init(const char* row, int nb, int) {
    qs = row;
    d = reinterpret_cast<const unsigned short*>(row + int64_t(nb) * kQ);
  }
  __device__ __forceinline__ void load(int b, uint32_t (&wd)[L::kWords]) const {
#pragma unroll
    for (int h = 0; h < kQ / 16; ++h) ld16_aligned<kA>(qs + int64_t(b) * kQ + 16 * h, wd + 4 * h);
    wd[L::kQsWords] = __ldg(d + b);
  }
  __device__ __forceinline__ void decode(const uint32_t (&wd)[L::kWords],
                                         uint32_t (&q)[L::kQsWords], float* dw) const {
    *dw = f16_bits_to_f32(wd[L::kQsWords]);
#pragma unroll
    for (int i = 0; i < L::kQsWords; ++i) q[i] = wd[i];
  }
};

// Exact integer dot of one block's qs words with the int8 x block (x0, x1; s = the sum of its
// values, for q4_0's -8 offset). q4_0 / q4_0s: low nibbles u8 x s8; high nibbles masked in place
// (16 n) and the sum shifted back, exact.
template <typename TW>
__device__ __forceinline__ int block_dot_lane(const uint32_t (&q)[LaneFmt<TW>::kQsWords],
                                              const int4& x0, const int4& x1, int s) {
  if constexpr (kNibbleW<TW>) {
    int lo = -8 * s, hi = 0;
    lo = dp4a_us(q[0] & 0x0f0f0f0fu, x0.x, lo);
    lo = dp4a_us(q[1] & 0x0f0f0f0fu, x0.y, lo);
    lo = dp4a_us(q[2] & 0x0f0f0f0fu, x0.z, lo);
    lo = dp4a_us(q[3] & 0x0f0f0f0fu, x0.w, lo);
    hi = dp4a_us(q[0] & 0xf0f0f0f0u, x1.x, hi);
    hi = dp4a_us(q[1] & 0xf0f0f0f0u, x1.y, hi);
    hi = dp4a_us(q[2] & 0xf0f0f0f0u, x1.z, hi);
    hi = dp4a_us(q[3] & 0xf0f0f0f0u, x1.w, hi);
    return lo + (hi >> 4);  // every high product is 16 n x: the shift is exact
  } else {
    int v = __dp4a(int(q[0]), x0.x, 0);
    v = __dp4a(int(q[1]), x0.y, v);
    v = __dp4a(int(q[2]), x0.z, v);
    v = __dp4a(int(q[3]), x0.w, v);
    v = __dp4a(int(q[4]), x1.x, v);
    v = __dp4a(int(q[5]), x1.y, v);
    v = __dp4a(int(q[6]), x1.z, v);
    return __dp4a(int(q[7]), x1.w, v);
  }
}

// Rows per warp (R) and blocks per lane and row in flight (U); launch_qlane may override both. The
// split layouts run every M <= 8 here.
template <typename TW, int MT>
struct LaneTiling {
  static constexpr int R = kNibbleW<TW> && MT == 1 ? 4 : 2;
  static constexpr int U = MT <= 2 ? 2 : 1;
};

// Group g = (block, warp / S) owns rows [g R, g R + R) (rows past N clamped, results dropped);
// slice s = warp % S takes blocks [s nb / S, (s + 1) nb / S) of each row, lane j blocks j, j + 32,
// ... of the slice. x rounded to int8 blocks (identity layout) in g_qx or in the CTA's shared
// memory (kQ8Shared: rounded by the CTA's prologue). Host guarantees nb * kBytes < 2^31. kA: the
// split layouts' row alignment (16, 8 or 2; 0 for q8_0 / q4_0).
template <typename TX, typename TW, int MT, XIn kX, int kA = 0, int R = LaneTiling<TW, MT>::R,
          int U = LaneTiling<TW, MT>::U, bool kGelu = false>
__global__ void __launch_bounds__(kThreads, 2)
    gemv_qlane_kernel(const TX* __restrict__ x,           // x: [M, K], 16-byte aligned
                      const TW* __restrict__ w,           // w: [N, K/32] blocks, 2-byte aligned
                      const float* __restrict__ w_scale,  // w_scale: [N] or null
                      TX* __restrict__ y,                 // y: [M, N]
                      int M, int64_t N, int64_t K, int S,
                      GeluPairs<TX> gp) {  // kGelu: the gated-MLP epilogue
  static_assert(kX != XIn::kFloat, "q-dot only");
  using L = LaneFmt<TW>;
  constexpr int kW = L::kWords;
  __shared__ float partial[kWarps][MT * R];
  extern __shared__ __align__(16) char sx[];

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t group = int64_t(blockIdx.x) * (kWarps / S) + warp / S;
  const int s = warp % S;
  const int64_t n0 = group * R;
  const int nb = static_cast<int>(K / kQK);
  const int b_begin = int(int64_t(s) * nb / S), b_end = int(int64_t(s + 1) * nb / S);
  const int64_t row_bytes = int64_t(nb) * L::kBytes;
  // The gated epilogue at odd R pairs gate and up row groups across warps (gemv_pair_f0).
  constexpr bool kPairs = kGelu && R % 2 == 1;
  const int64_t f0 = kPairs ? gemv_pair_f0(group, S, R) : 0;
  const bool up = kPairs && warp / S >= kWarps / S / 2;

  LaneRow<TW, kA> rows[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    int64_t n;
    if constexpr (kPairs) {
      n = gemv_pair_row(f0, r, up, gp.F);
    } else {
      n = gemv_row<R, kGelu>(group, r, N, gp.F);
    }
    rows[r].init(reinterpret_cast<const char*>(w) + n * row_bytes, nb, b_begin + lane);
  }
  uint32_t wd[U][R][kW];
  auto load_round = [&](int b0) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int b = b0 + 32 * u;
      if (b < b_end) {
#pragma unroll
        for (int r = 0; r < R; ++r) rows[r].load(b, wd[u][r]);
      }
    }
  };
  // PDL (pdl.cuh): W needs nothing from the kernel before, so the first round is on its way
  // while that kernel finishes; x (g_qx, or the x this CTA rounds) and y wait for it.
  const bool active = kPairs ? f0 < gp.F : n0 < N;
  const int first = b_begin + lane;
  if (active) load_round(first);
  pdl_wait();
  pdl_trigger();
  if constexpr (kX == XIn::kQ8Shared) {
    // identity run layout; 2 runs a thread in flight where 5+ rows of W words are (registers)
    quantize_x_shared<TX, block_q8_0, R >= 5 ? 2 : 4>(x, M * nb, sx);
    __syncthreads();
  }
  const int8_t* const xq = reinterpret_cast<const int8_t*>(kX == XIn::kQ8Shared ? sx : g_qx);
  const int2* const xds = reinterpret_cast<const int2*>(xq + int64_t(M) * K);

  float acc[MT][R];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[m][r] = 0.f;
  if (active) {
    for (int b0 = first; b0 < b_end; b0 += 32 * U) {
      if (b0 != first) load_round(b0);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int b = b0 + 32 * u;
        if (b < b_end) {
          uint32_t q[R][L::kQsWords];
          float dw[R];
#pragma unroll
          for (int r = 0; r < R; ++r) rows[r].decode(wd[u][r], q[r], &dw[r]);
#pragma unroll
          for (int m = 0; m < MT; ++m) {
            if (m == 0 || m < M) {
              const int4* xb = reinterpret_cast<const int4*>(xq + m * K + int64_t(b) * kQK);
              int4 x0, x1;
              int2 ds;
              if constexpr (kX == XIn::kQ8Shared) {
                x0 = xb[0], x1 = xb[1], ds = xds[m * nb + b];
              } else {
                x0 = __ldg(xb), x1 = __ldg(xb + 1), ds = __ldg(xds + m * nb + b);
              }
              const float dx = __int_as_float(ds.x);
#pragma unroll
              for (int r = 0; r < R; ++r) {
                const int v = block_dot_lane<TW>(q[r], x0, x1, ds.y);
                acc[m][r] = fmaf(dw[r] * dx, static_cast<float>(v), acc[m][r]);
              }
            }
          }
        }
      }
    }
  }

  if constexpr (kPairs) {
    store_pairs<TX, MT, R>(acc, partial, s, S, f0, M, w_scale, gp);
  } else {
    store_slices<TX, MT, R, kGelu>(acc, partial, s, S, active, n0, M, N, w_scale, y, gp);
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
  pdl_wait();  // pdl.cuh
  pdl_trigger();
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

// q-dot fallback (W rows of 2^31 bytes or more, or W not 2-byte aligned): one warp per row of W,
// lanes take whole blocks, the same per-block terms as dot_pass, x from g_qx.
__device__ __forceinline__ int block_dot(const block_q8_0& b, const int8_t* xq) {
  int s = 0;
  for (int i = 0; i < kQK; ++i) s += int(b.qs[i]) * int(xq[i]);
  return s;
}
__device__ __forceinline__ int block_dot(const block_q4_0& b, const int8_t* xq) {
  int s = 0;
  for (int i = 0; i < kQK / 2; ++i)
    s += (int(b.qs[i] & 0xf) - 8) * int(xq[i]) + (int(b.qs[i] >> 4) - 8) * int(xq[i + kQK / 2]);
  return s;
}
template <typename TX, typename TW>
__global__ void __launch_bounds__(kThreads)
    gemv_qdot_scalar_kernel(const TW* __restrict__ w, const float* __restrict__ w_scale,
                            TX* __restrict__ y, int M, int64_t N, int64_t K) {
  pdl_wait();  // pdl.cuh
  pdl_trigger();
  const int lane = threadIdx.x & 31;
  const int64_t n = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (n >= N) return;
  const int8_t* const gq = reinterpret_cast<const int8_t*>(g_qx);
  const int2* const gds = reinterpret_cast<const int2*>(g_qx + int64_t(M) * K);
  const int64_t nb = K / kQK;
  for (int m = 0; m < M; ++m) {
    float acc = 0.f;
    for (int64_t b = lane; b < nb; b += 32) {
      const TW& blk = w[n * nb + b];
      const int v = block_dot(blk, gq + m * K + b * kQK);
      acc = fmaf(to_f32(blk.d) * __int_as_float(gds[m * nb + b].x), static_cast<float>(v), acc);
    }
    acc = warp_sum(acc);
    if (lane == 0) y[m * N + n] = from_f32<TX>(w_scale != nullptr ? acc * w_scale[n] : acc);
  }
}

// ---- host side ----

// Resident CTAs per SM of gemv_q_kernel<TX, TW, MT, kX> with `smem` bytes of dynamic shared
// memory (the fused path's x; a multiple of 1 KB up to kFusedXBytes): sizes its persistent grid.
template <typename TX, typename TW, int MT, XIn kX>
Status q_blocks_per_sm(int smem, int* out) {
  static std::atomic<int> cache[kFusedXBytes / 1024 + 1][kMaxDevices];
  if (smem < 0 || smem > kFusedXBytes || smem % 1024 != 0)
    return Status(StatusCode::kInternal, "matmul gemv: dynamic shared memory not in 1 KB steps");
  return cached_per_device(
      cache[smem / 1024],
      [smem](int, int* c) {
        const auto kernel = gemv_q_kernel<TX, TW, MT, kX>;
        G3_CUDA_RETURN(cudaOccupancyMaxActiveBlocksPerMultiprocessor(c, kernel, kThreads, smem));
        return Status::Ok();
      },
      out);
}

// Whether gemv_q_kernel<TX, TW, MT, kQ8Shared> may take kFusedXBytes of dynamic shared memory on
// the current device: its static stages + kFusedXBytes within the opt-in limit, then the limit
// raised once per device (cudaFuncAttributeMaxDynamicSharedMemorySize defaults to 48 KB - static).
template <typename TX, typename TW, int MT>
Status fused_x_ready(bool* out) {
  static std::atomic<int> cache[kMaxDevices];  // 2: ready, 1: no (two launches)
  int c = 0;
  G3_RETURN_IF_ERROR(cached_per_device(
      cache,
      [](int dev, int* c) {
        const auto kernel = gemv_q_kernel<TX, TW, MT, XIn::kQ8Shared>;
        cudaFuncAttributes fa{};
        G3_CUDA_RETURN(cudaFuncGetAttributes(&fa, kernel));
        int optin = 0;
        G3_CUDA_RETURN(
            cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
        *c = 1;
        if (fa.sharedSizeBytes + kFusedXBytes > static_cast<size_t>(optin)) return Status::Ok();
        G3_CUDA_RETURN(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            kFusedXBytes));
        *c = 2;
        return Status::Ok();
      },
      &c));
  *out = c == 2;
  return Status::Ok();
}

// f(std::integral_constant<int, MT>) for the GEMV's compile-time row count MT of M rows.
template <typename F>
Status by_m_bucket(int M, F&& f) {
  if (M == 1) return f(std::integral_constant<int, 1>{});
  if (M == 2) return f(std::integral_constant<int, 2>{});
  if (M <= 4) return f(std::integral_constant<int, 4>{});
  return f(std::integral_constant<int, 8>{});
}

// False when GEMMA3_GEMV_ONESHOT=0: the dense GEMV streams at every M (the A/B of the one-shot
// tiling).
bool gemv_oneshot_enabled() {
  static const bool on = !env_is("GEMMA3_GEMV_ONESHOT", "0");
  return on;
}

template <typename TX, typename TW, int MT, bool kQk = false>
Status launch_vec(const TX* x, const TW* w, const float* w_scale, TX* y, int M, int64_t N,
                  int64_t K, cudaStream_t stream, const QkEpilogue<TX>& qk = {},
                  const GeluPairs<TX>& gp = {}) {
  constexpr int R = Tiling<MT>::R;
  int sms = 0;
  G3_RETURN_IF_ERROR(sm_count(&sms));
  const int64_t groups = (N + R - 1) / R;
  const int64_t nchunks = K / Fmt<TW>::kE;
  auto launch = [&](auto u, int S) {
    const int64_t groups_per_block = kWarps / S;
    const int64_t blocks = (groups + groups_per_block - 1) / groups_per_block;
    if (blocks > 0x7fffffff) return Status(StatusCode::kUnsupported, "matmul gemv: N too large");
    constexpr int kU = decltype(u)::value;
    if constexpr (!kQk) {  // the QKV epilogue and the gated-MLP one never meet
      if (gp.F != 0) {
        launch_pdl(gemv_kernel<TX, TW, MT, kU, false, true>, static_cast<unsigned>(blocks),
                   kThreads, 0, stream, x, w, w_scale, y, M, N, K, S, qk, gp);
        return check_launch("matmul gemv_kernel (gated-MLP epilogue)");
      }
    }
    launch_pdl(gemv_kernel<TX, TW, MT, kU, kQk>, static_cast<unsigned>(blocks), kThreads, 0, stream,
               x, w, w_scale, y, M, N, K, S, qk, gp);
    return check_launch("matmul gemv_kernel");
  };
  if constexpr (MT == 1 && !kQk && sizeof(TW) >= 2) {
    const int64_t per_lane = (nchunks + 31) / 32;  // chunks of a row per lane
    if (per_lane <= kOneShotU && N * K * int64_t(sizeof(TW)) <= kOneShotMaxBytes &&
        gemv_oneshot_enabled()) {
      // While the grid leaves SMs without a CTA, split K as long as each lane keeps at least two
      // chunks a row (small GEMVs: the 1B QKV and O).
      int S = 1;
      while (S < kWarps && (groups * S + kWarps - 1) / kWarps < sms && per_lane >= 4 * S) S *= 2;
      return launch(std::integral_constant<int, kOneShotU>{}, S);
    }
  }
  // Streamed: split K over S warps per row group only when the row groups alone leave SMs idle
  // (small N, long K: e.g. the down projection) and each slice still gets at least two rounds.
  constexpr int U = Tiling<MT>::U;
  const int64_t target_warps = int64_t(sms) * 64;
  int S = 1;
  while (S < kWarps && groups * S < target_warps && nchunks >= int64_t(S) * 2 * 2 * 32 * U) S *= 2;
  return launch(std::integral_constant<int, U>{}, S);
}

// `smem`: dynamic shared memory bytes (kQ8Shared: the rounded x, in 1 KB steps; else 0).
template <typename TX, typename TW, int MT, XIn kX>
Status launch_q(const TX* x, const TW* w, const float* w_scale, TX* y, int M, int64_t N, int64_t K,
                int smem, cudaStream_t stream) {
  constexpr int R = QTiling<MT>::R, kStep = QTiling<MT>::P * 32 / QFmt<TW>::kLanes;
  int sms = 0, per_sm = 0;
  G3_RETURN_IF_ERROR(sm_count(&sms));
  G3_RETURN_IF_ERROR((q_blocks_per_sm<TX, TW, MT, kX>(smem, &per_sm)));
  const int64_t groups = (N + R - 1) / R;
  const int64_t steps = (K / kQK + kStep - 1) / kStep;
  const int64_t slots = int64_t(sms) * per_sm;  // resident CTAs
  // Split K over S warps only while row groups alone leave resident warps idle (small N, long K:
  // the down projection) and each slice keeps at least two steps per row.
  int S = 1;
  while (S < kWarps && groups * S < slots * kWarps && steps >= 4 * S) S *= 2;
  const int64_t teams_per_block = kWarps / S;
  const int64_t need = (groups + teams_per_block - 1) / teams_per_block;
  const int64_t blocks = need < slots ? need : slots;
  launch_pdl(gemv_q_kernel<TX, TW, MT, kX>, static_cast<unsigned>(blocks), kThreads,
             static_cast<size_t>(smem), stream, x, w, w_scale, y, M, N, K, S, groups);
  return check_launch("matmul gemv_q_kernel");
}

// Warps of the M = 1 split-layout lane kernel with x in g_qx that an SM holds at once (3 CTAs of 8
// warps at its 80 registers; Nsight Compute, session 14): one wave of its grid.
constexpr int kQlaneWaveWarps = 24;

// The lane-per-block q-dot GEMV (gemv_qlane_kernel). Its grid is one CTA per kWarps / S row groups,
// S the K split over the warps of a CTA. S doubles while the grid has fewer than 32 warps an SM and
// each slice keeps at least min_slice blocks a row. one_wave (the split layouts at M = 1 with x in
// g_qx): where one slice a row fills under half a wave, S also stops before the grid passes one
// wave. The 4B down (1,280 row groups) then takes S = 2, one wave of 320 CTAs, not S = 4's 1.6
// waves, each CTA of the second waiting for one of the first to finish before its loads start
// (H100, session 16: 8.53 -> 7.32 µs q4_0s, 12.65 -> 11.17 q8_0s; the 4B q4_0 step 1,886 -> 1,846
// µs). Grids one slice fills past half a wave (the 27B down and QKV, the logits) keep the first
// rule: the cap was not measured there.
constexpr int qlane_split(int64_t groups, int64_t nb, int64_t sms, int min_slice, bool one_wave) {
  const int64_t wave = sms * kQlaneWaveWarps;
  const bool cap = one_wave && 2 * groups < wave;
  int S = 1;
  while (S < kWarps && groups * S < sms * 32 && nb / (2 * S) >= min_slice &&
         !(cap && 2 * S * groups > wave))
    S *= 2;
  return S;
}
// The model shapes on an H100 (132 SMs; x in g_qx, slices of >= 32 blocks), as measured.
static_assert(qlane_split(1280, 320, 132, 32, true) == 2, "4B down at M = 1: one wave");
static_assert(qlane_split(1280, 320, 132, 32, false) == 4, "4B down at M > 1: as before");
static_assert(qlane_split(576, 216, 132, 32, true) == 4, "1B down: as before");
static_assert(qlane_split(2688, 672, 132, 32, true) == 2, "27B down: as before");
static_assert(qlane_split(4096, 168, 132, 32, true) == 2, "27B QKV: as before");
static_assert(qlane_split(131104, 80, 132, 32, true) == 1, "4B logits: as before");

// Where qlane_split's one-wave cap may apply: the split layouts at M = 1 with x in g_qx.
template <typename TW, XIn kX>
constexpr bool qlane_one_wave(int M) {
  return kSplitW<TW> && kX == XIn::kQ8Global && M == 1;
}

// CTAs of the lane kernel's grid for N rows at R rows a warp, K split S ways (kWarps / S row
// groups a CTA).
constexpr int64_t qlane_ctas(int64_t N, int R, int S) {
  const int64_t per_block = kWarps / S;
  return ((N + R - 1) / R + per_block - 1) / per_block;
}

// qlane_split on the current device for N rows at R rows a warp. GEMMA3_QLANE_ONE_WAVE=0 (read
// once): no one-wave cap (the A/B).
Status qlane_slices(int64_t N, int R, int64_t K, int min_slice, bool one_wave, int* S) {
  static const bool cap_on = !env_is("GEMMA3_QLANE_ONE_WAVE", "0");
  int sms = 0;
  G3_RETURN_IF_ERROR(sm_count(&sms));
  *S = qlane_split((N + R - 1) / R, K / kQK, sms, min_slice, one_wave && cap_on);
  return Status::Ok();
}

// The lane kernel's dynamic shared memory (x rounded per CTA) stays under 48 KB
// (kLaneSharedXBytes).
constexpr int kLaneSmemKb = 48;

// CTAs of `kernel` (kThreads threads, `smem` bytes of dynamic shared memory) resident at once on
// the current device; `cache` (one per kernel, by smem in whole KB) holds them once known.
template <typename Kernel>
Status resident_ctas(Kernel kernel, int smem, std::atomic<int> (*cache)[kMaxDevices], int* out) {
  if (smem < 0 || smem > (kLaneSmemKb << 10))
    return Status(StatusCode::kInternal, "matmul gemv: lane kernel shared memory over 48 KB");
  int per_sm = 0, sms = 0;
  G3_RETURN_IF_ERROR(cached_per_device(
      cache[(smem + 1023) / 1024],
      [&](int, int* c) {
        G3_CUDA_RETURN(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
            c, kernel, kThreads, size_t((smem + 1023) / 1024 * 1024)));
        return Status::Ok();
      },
      &per_sm));
  G3_RETURN_IF_ERROR(sm_count(&sms));
  *out = per_sm * sms;
  return Status::Ok();
}

template <typename TX, typename TW, int MT, XIn kX, int kA, int R = LaneTiling<TW, MT>::R,
          int U = LaneTiling<TW, MT>::U>
Status launch_qlane_m(const TX* x, const TW* w, const float* w_scale, TX* y, int M, int64_t N,
                      int64_t K, int smem, int min_slice, cudaStream_t stream,
                      const GeluPairs<TX>& gp) {
  int S = 1;
  G3_RETURN_IF_ERROR(qlane_slices(N, R, K, min_slice, qlane_one_wave<TW, kX>(M), &S));
  const int64_t blocks = qlane_ctas(N, R, S);
  if (blocks > 0x7fffffff) return Status(StatusCode::kUnsupported, "matmul gemv: N too large");
  if constexpr (kSplitW<TW>) {  // the gated-MLP epilogue: split layouts only (gemv_pairs_ok)
    if (gp.F != 0) {
      if (R % 2 == 1 && S > kWarps / 2)  // warp pairs (gemv_pair_f0): an even group count a CTA
        return Status(StatusCode::kInternal, "matmul gemv: gated warp pairs need S <= 4");
      launch_pdl(gemv_qlane_kernel<TX, TW, MT, kX, kA, R, U, true>, static_cast<unsigned>(blocks),
                 kThreads, static_cast<size_t>(smem), stream, x, w, w_scale, y, M, N, K, S, gp);
      return check_launch("matmul gemv_qlane_kernel (gated-MLP epilogue)");
    }
  }
  launch_pdl(gemv_qlane_kernel<TX, TW, MT, kX, kA, R, U>, static_cast<unsigned>(blocks), kThreads,
             static_cast<size_t>(smem), stream, x, w, w_scale, y, M, N, K, S, gp);
  return check_launch("matmul gemv_qlane_kernel");
}

// Waves of the M = 1 lane kernel (kGelu: its gated form) at R rows a warp and U blocks in flight
// (16-byte rows): its CTAs over those resident at once.
template <typename TX, typename TW, XIn kX, int R, int U, bool kGelu>
Status qlane_waves(int64_t N, int64_t K, int smem, int min_slice, int64_t* out) {
  static std::atomic<int> cache[kLaneSmemKb + 1][kMaxDevices];
  int S = 1, resident = 0;
  G3_RETURN_IF_ERROR(qlane_slices(N, R, K, min_slice, qlane_one_wave<TW, kX>(1), &S));
  G3_RETURN_IF_ERROR(
      resident_ctas(gemv_qlane_kernel<TX, TW, 1, kX, 16, R, U, kGelu>, smem, cache, &resident));
  *out = (qlane_ctas(N, R, S) + resident - 1) / resident;
  return Status::Ok();
}

// Whether R = 5 (U = 3) takes fewer waves than R = 4 for this M = 1 q4_0s GEMV with x rounded per
// CTA: both hold 128 registers (2 CTAs an SM), so where R = 4 spills its last few CTAs into one
// more wave R = 5 can end a wave sooner.
template <typename TX, typename TW, XIn kX, bool kGelu>
Status qlane_r5_fewer_waves(int64_t N, int64_t K, int smem, int min_slice, bool* out) {
  int64_t w4 = 0, w5 = 0;
  G3_RETURN_IF_ERROR((qlane_waves<TX, TW, kX, 4, 3, kGelu>(N, K, smem, min_slice, &w4)));
  G3_RETURN_IF_ERROR((qlane_waves<TX, TW, kX, 5, 3, kGelu>(N, K, smem, min_slice, &w5)));
  *out = w5 < w4;
  return Status::Ok();
}

// q4_0s lane-kernel tiling, measured on an H200 (session 8, graph-timed, M = 1; docs/kernels.md):
// K slices of at least 32 blocks (every lane busy; 16 left half the lanes idle: the 4B O
// projection 4.16 -> 2.30 µs, QKV 5.43 -> 3.71); at M = 1 R = 4 rows a warp where each CTA rounds x
// (K <= 4096, N <= kQ4sFusedMaxN: the 4B gate/up 12.0 µs, R = 2 there doubles the CTAs and each
// rounds x), R = 2 where x is rounded once into g_qx (the 4B down 8.84 -> 7.91, 27B up 22.3 ->
// 19.9, the 4B logits 126.8 -> 116.6 with g_qx); with R = 4 and 16-byte rows, U = 3 blocks a row
// in flight (the 4B gate/up's 80-block rows in one round: 13.46 -> 11.97 µs, 4B q4_0 decode 494 ->
// 511 tok/s on an H100; 128 registers, still 2 CTAs an SM). R = 5 (U = 3, also 128 registers)
// where that takes fewer waves than R = 4 (qlane_r5_fewer_waves): the plain 4B up, 320 CTAs in
// 1.2 waves -> 256 in one, 7.80 -> 6.53 µs on an H100 (session 17); no model runs that plain
// shape. The gated form pairs gate and up across warps at odd R (gemv_pair_f0): its 4B gate/up
// went 12.71 -> 12.04 µs, but the 4B q4_0 step 1838 -> 1882 µs (+2.4%) in the same call, so it is
// opt-in (GEMMA3_Q4S_R5=all; =0: R = 4 everywhere). GEMMA3_QLANE_MIN_SLICE,
// GEMMA3_Q4S_R (2 | 4), GEMMA3_Q4S_U (2 | 3) and GEMMA3_Q4S_FUSED_MAXK override them for A/Bs.
// q8_0s (34-byte blocks, 9 words a block and row) keeps R = 2 and the same slices and x
// placement; U = 3 at M = 1 where CTAs round x and rows are 16-byte aligned (the 4B gate/up 23.5 ->
// 19.7 µs on an H100, session 9; 121 registers, no spills), else U = 2. GEMMA3_Q8S_U=2: U = 2
// everywhere (the A/B).
// Where each CTA rounds x (kQ8Shared) the slices are at least 64 blocks: every split multiplies
// the CTAs that round all of x, and at the 4B's QKV / O / up rows that costs more than the split
// buys (H100, session 14, 32 -> 64: QKV 4.00 -> 3.31 µs q4_0s, 6.65 -> 5.45 q8_0s; O 2.56 ->
// 2.40 / 4.57 -> 3.41; up 9.32 -> 7.81; 4B q8_0 decode step 2485 -> 2392 µs, 4B q4_0 1935 ->
// 1918). With x in g_qx it stays 32 (the 1B down 4.04 -> 4.36 µs at 64, the 1B q4_0 / q8_0 steps
// +0.9 / +1.8%). GEMMA3_QLANE_MIN_SLICE sets both.
constexpr int kQ4sMinSlice = 32;
constexpr int kQ4sMinSliceShared = 64;
constexpr int64_t kQ4sFusedMaxN = 32768;

// q8_0 / q4_0: M = 1 or 2 rows of x (K slices of >= 16 blocks, measured in session 7). q4_0s /
// q8_0s: any M <= 8, rows aligned to kA = 16, 8 or 2 bytes, the tiling above.
template <typename TX, typename TW, XIn kX>
Status launch_qlane(const TX* x, const TW* w, const float* w_scale, TX* y, int M, int64_t N,
                    int64_t K, int smem, cudaStream_t stream, const GeluPairs<TX>& gp) {
  if constexpr (kSplitW<TW>) {
    constexpr bool kQ4 = std::is_same_v<TW, block_q4_0s>;
    static const int min_slice =
        env_int("GEMMA3_QLANE_MIN_SLICE", kX == XIn::kQ8Shared ? kQ4sMinSliceShared : kQ4sMinSlice);
    static const int force_r = env_int("GEMMA3_Q4S_R", 0);
    static const bool u3 = !env_is("GEMMA3_Q4S_U", "2");
    const uintptr_t bits = reinterpret_cast<uintptr_t>(w) | uintptr_t(K / kQK * sizeof(TW));
    const int a = (bits & 15) == 0 ? 16 : (bits & 7) == 0 ? 8 : 2;
    if constexpr (!kQ4 && kX == XIn::kQ8Shared) {  // q8_0s: R = 2 (9-word blocks), U = 3
      static const bool q8_u3 = !env_is("GEMMA3_Q8S_U", "2");
      if (M == 1 && a == 16 && q8_u3)
        return launch_qlane_m<TX, TW, 1, kX, 16, 2, 3>(x, w, w_scale, y, M, N, K, smem, min_slice,
                                                       stream, gp);
    }
    if constexpr (kX == XIn::kQ8Global) {
      // x rounded once (g_qx), R = 2: q4_0s takes 3 blocks a row in flight where that leaves a
      // slice one round of loads fewer (H100, session 9: the 4B logits 145.3 -> 117.9 µs, 4B down
      // 8.72 -> 8.49, 27B down 25.41 -> 24.50; the 1B down, one round either way, 4.04 -> 4.13).
      // q8_0s stays at U = 2 (U = 3 lost 5-20% but at the logits). GEMMA3_QS_GQX_U=2 / 3 forces
      // U for both formats (the A/B).
      static const int gqx_u = env_int("GEMMA3_QS_GQX_U", 0);
      bool u3 = gqx_u == 3;
      if (kQ4 && gqx_u == 0 && M == 1 && a == 16) {
        int S = 1;
        G3_RETURN_IF_ERROR(qlane_slices(N, 2, K, min_slice, qlane_one_wave<TW, kX>(M), &S));
        const int64_t slice = (K / kQK + S - 1) / S;  // blocks of a row's longest slice
        u3 = (slice + 63) / 64 > (slice + 95) / 96;
      }
      if (M == 1 && a == 16 && u3 && (!kQ4 || force_r != 4))
        return launch_qlane_m<TX, TW, 1, kX, 16, 2, 3>(x, w, w_scale, y, M, N, K, smem, min_slice,
                                                       stream, gp);
    }
    if constexpr (kQ4) {  // q8_0s: R = 2, U = 2 (LaneTiling), its 9-word blocks
      const int r = force_r == 2 || force_r == 4 ? force_r : kX == XIn::kQ8Shared ? 4 : 2;
      if constexpr (kX == XIn::kQ8Shared) {
        if (M == 1 && r == 4 && a == 16 && u3) {
          static const int r5 =
              env_is("GEMMA3_Q4S_R5", "0") ? 0 : (env_is("GEMMA3_Q4S_R5", "all") ? 2 : 1);
          if (force_r == 0 && r5 > (gp.F == 0 ? 0 : 1)) {
            bool fewer = false;
            G3_RETURN_IF_ERROR(
                gp.F == 0
                    ? (qlane_r5_fewer_waves<TX, TW, kX, false>(N, K, smem, min_slice, &fewer))
                    : (qlane_r5_fewer_waves<TX, TW, kX, true>(N, K, smem, min_slice, &fewer)));
            if (fewer)
              return launch_qlane_m<TX, TW, 1, kX, 16, 5, 3>(x, w, w_scale, y, M, N, K, smem,
                                                             min_slice, stream, gp);
          }
          return launch_qlane_m<TX, TW, 1, kX, 16, 4, 3>(x, w, w_scale, y, M, N, K, smem, min_slice,
                                                         stream, gp);
        }
      }
      if (M == 1 && r == 2 && a == 16)
        return launch_qlane_m<TX, TW, 1, kX, 16, 2>(x, w, w_scale, y, M, N, K, smem, min_slice,
                                                    stream, gp);
    }
    return by_m_bucket(M, [&](auto mt) {
      constexpr int MT = decltype(mt)::value;
      if (a == 16)
        return launch_qlane_m<TX, TW, MT, kX, 16>(x, w, w_scale, y, M, N, K, smem, min_slice,
                                                  stream, gp);
      if (a == 8)
        return launch_qlane_m<TX, TW, MT, kX, 8>(x, w, w_scale, y, M, N, K, smem, min_slice, stream,
                                                 gp);
      return launch_qlane_m<TX, TW, MT, kX, 2>(x, w, w_scale, y, M, N, K, smem, min_slice, stream,
                                               gp);
    });
  } else {
    if (M == 2)
      return launch_qlane_m<TX, TW, 2, kX, 0>(x, w, w_scale, y, M, N, K, smem, 16, stream, gp);
    return launch_qlane_m<TX, TW, 1, kX, 0>(x, w, w_scale, y, M, N, K, smem, 16, stream, gp);
  }
}

// GEMMA3_QDOT_LANE (read once): 0 = the staged kernel at every shape, 1 = the lane kernel at every
// M <= 2 shape (x rounded in its prologue up to kLaneFusedMaxK), unset = auto (qdot_lane_auto).
int qdot_lane_mode() {
  static const int mode =
      env_is("GEMMA3_QDOT_LANE", "0") ? 0 : (env_is("GEMMA3_QDOT_LANE", "1") ? 1 : 2);
  return mode;
}

// Where the lane kernel, with x rounded once into g_qx, beat the staged kernel on the H100
// (session 7, graph-timed, M = 1; docs/kernels.md): q8_0 at K > 4096 (the down projections,
// 9-13%) and at N >= 65536 (the logits, 268 -> 237 µs at 4B); q4_0 only at K > 8192 (4-6%).
// Elsewhere the staged kernel was as fast or up to 17% faster (q4_0 at K 2560).
template <typename TW>
bool qdot_lane_auto(int64_t N, int64_t K) {
  if constexpr (std::is_same_v<TW, block_q8_0>) return K > 4096 || N >= 65536;
  return K > 8192;
}

// With GEMMA3_QDOT_LANE=1 the lane kernel rounds x in its own prologue (every CTA, all of x) up to
// this many values a row of x; longer rows, and the auto choice, round it once into g_qx
// (quantize_x_q8_kernel, launched before it).
constexpr int64_t kLaneFusedMaxK = 4096;
// The q4_0s lane kernel's x in shared memory (M K / 32 blocks of kXBlockBytes) up to this many
// bytes: under the 48 KB a CTA may take without opting in, beside its kWarps x 8 x 4-byte partials.
constexpr int64_t kLaneSharedXBytes = 46 << 10;
static_assert(kLaneSharedXBytes <= (kLaneSmemKb << 10), "resident_ctas' cache covers it");

bool aligned(const void* p, uintptr_t a) { return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0; }

// False when GEMMA3_QDOT_FUSED=0 (read once): the q-dot GEMV always rounds x in a launch of its
// own (the A/B of the fused prologue).
bool qdot_fused_enabled() {
  static const bool on = !env_is("GEMMA3_QDOT_FUSED", "0");
  return on;
}

// q-dot GEMV (block formats, 1 <= M <= 8). One launch when the rounded x of all M rows fits
// kFusedXBytes (each CTA rounds it into shared memory); else x rows are rounded into g_qx, as many
// rows per round as it holds (all 8 unless K > ~400k), then the GEMV reads them.
template <typename TX, typename TW>
Status gemv_qdot(const TX* x, const TW* w, const float* w_scale, TX* y, int M, int64_t N, int64_t K,
                 cudaStream_t stream, const GeluPairs<TX>& gp) {
  constexpr bool kSplit = kSplitW<TW>;  // q4_0s or q8_0s: the lane kernel only
  const int64_t nb = K / kQK;
  const bool vec = aligned(w, 2) && nb * int64_t(sizeof(TW)) < (int64_t(1) << 31);
  if (kSplit && !vec) {
    return Status(StatusCode::kUnsupported,
                  "matmul: q4_0s / q8_0s weights must be 2-byte aligned with rows under 2 GiB");
  }
  const int64_t fused_bytes = int64_t(M) * nb * kXBlockBytes;
  const int lane_mode = qdot_lane_mode();
  const bool lane =
      kSplit || (vec && M <= 2 && (lane_mode == 1 || (lane_mode == 2 && qdot_lane_auto<TW>(N, K))));
  // The prologues load x in 16-byte runs. q4_0s / q8_0s round x per CTA up to K = 4096 and N =
  // kQ4sFusedMaxN (launch_qlane; within the static shared memory limit, no opt-in); the others only
  // under GEMMA3_QDOT_LANE=1 and K <= kLaneFusedMaxK.
  static const int q4s_max_k = env_int("GEMMA3_Q4S_FUSED_MAXK", int(kLaneFusedMaxK));
  const bool lane_fused =
      kSplit ? fused_bytes <= kLaneSharedXBytes && K <= q4s_max_k && N <= kQ4sFusedMaxN
             : lane_mode == 1 && K <= kLaneFusedMaxK;
  if (lane && lane_fused && aligned(x, 16) && qdot_fused_enabled()) {
    const int smem = static_cast<int>(fused_bytes);
    return launch_qlane<TX, TW, XIn::kQ8Shared>(x, w, w_scale, y, M, N, K, smem, stream, gp);
  }
  if (gp.F != 0 && !lane) {
    return Status(StatusCode::kInternal,
                  "matmul gemv: the gated-MLP epilogue reached the staged path");
  }
  if constexpr (!kSplit) {
    if (!lane && vec && aligned(x, 16) && fused_bytes <= kFusedXBytes && qdot_fused_enabled()) {
      bool launched = false;
      G3_RETURN_IF_ERROR(by_m_bucket(M, [&](auto mt) {
        constexpr int MT = decltype(mt)::value;
        bool ready = false;
        G3_RETURN_IF_ERROR((fused_x_ready<TX, TW, MT>(&ready)));
        if (!ready) return Status::Ok();
        launched = true;
        const int smem = static_cast<int>((fused_bytes + 1023) / 1024 * 1024);
        return launch_q<TX, TW, MT, XIn::kQ8Shared>(x, w, w_scale, y, M, N, K, smem, stream);
      }));
      if (launched) return Status::Ok();
    }
  }
  const int64_t row_bytes = K + nb * int64_t(sizeof(int2));
  const int64_t fit = kQxBytes / row_bytes;
  if (fit < 1) {
    return Status(StatusCode::kUnsupported,
                  "matmul: K = " + std::to_string(K) + " needs " + std::to_string(row_bytes) +
                      " bytes of q8 activations per row, over the " + std::to_string(kQxBytes) +
                      "-byte q-dot workspace (GEMMA3_QDOT=float)");
  }
  for (int m0 = 0; m0 < M;) {
    const int mc = static_cast<int>(M - m0 < fit ? M - m0 : fit);
    const TX* xm = x + int64_t(m0) * K;
    TX* ym = y + int64_t(m0) * N;
    const GeluPairs<TX> gpm{gp.out ? gp.out + int64_t(m0) * gp.F : nullptr, gp.F};
    const int64_t blocks = int64_t(mc) * nb;
    launch_pdl(quantize_x_q8_kernel<TX>, static_cast<unsigned>((blocks + kWarps - 1) / kWarps),
               kThreads, 0, stream, xm, blocks);
    G3_RETURN_IF_ERROR(check_launch("matmul quantize_x_q8_kernel"));
    if (lane) {
      G3_RETURN_IF_ERROR(
          (launch_qlane<TX, TW, XIn::kQ8Global>(xm, w, w_scale, ym, mc, N, K, 0, stream, gpm)));
    } else if constexpr (kSplit) {
      return Status(StatusCode::kInternal, "matmul gemv: a split layout reached the staged path");
    } else if (!vec) {
      const int64_t grid = (N + kWarps - 1) / kWarps;
      if (grid > 0x7fffffff) return Status(StatusCode::kUnsupported, "matmul gemv: N too large");
      launch_pdl(gemv_qdot_scalar_kernel<TX, TW>, static_cast<unsigned>(grid), kThreads, 0, stream,
                 w, w_scale, ym, mc, N, K);
      G3_RETURN_IF_ERROR(check_launch("matmul gemv_qdot_scalar_kernel"));
    } else {
      G3_RETURN_IF_ERROR(by_m_bucket(mc, [&](auto mt) {
        return launch_q<TX, TW, decltype(mt)::value, XIn::kQ8Global>(xm, w, w_scale, ym, mc, N, K,
                                                                     0, stream);
      }));
    }
    m0 += mc;
  }
  return Status::Ok();
}

}  // namespace

// Whether gemv takes the gated-MLP epilogue (GeluPairs) for these arguments: where it runs the
// dense vector kernel or the split layouts' lane kernel. Elsewhere (GGUF blocks, unaligned or
// ragged rows) matmul_gelu_mul runs matmul, then gelu_mul.
template <typename TX, typename TW>
bool gemv_pairs_ok(const TX* x, const TW* w, int64_t K) {
  if constexpr (kSplitW<TW>) {
    return aligned(w, 2) && K % kQK == 0 && K / kQK * int64_t(sizeof(TW)) < (int64_t(1) << 31);
  } else if constexpr (std::is_same_v<TW, block_q8_0> || std::is_same_v<TW, block_q4_0>) {
    return false;
  } else {
    return aligned(x, 16) && aligned(w, 16) && K % Fmt<TW>::kE == 0;
  }
}

// Called by matmul<TX, TW> (matmul.cu) with 1 <= M <= 8, N >= 1, K >= 1, block formats K % 32 == 0;
// with the gated-MLP epilogue (gp.F > 0, N = 2 gp.F) by matmul_gelu_mul where gemv_pairs_ok.
template <typename TX, typename TW>
Status gemv(const TX* x, const TW* w, const float* w_scale, TX* y, int64_t M, int64_t N, int64_t K,
            cudaStream_t stream, const GeluPairs<TX>& gp) {
  constexpr bool kBlock = std::is_same_v<TW, block_q8_0> || std::is_same_v<TW, block_q4_0>;
  if (M < 1 || M > 8) {
    return Status(StatusCode::kInternal,
                  "matmul gemv: M = " + std::to_string(M) + " not in [1, 8]");
  }
  if (gp.F != 0 && (N != 2 * gp.F || gp.out == nullptr || !gemv_pairs_ok(x, w, K))) {
    return Status(StatusCode::kInternal, "matmul gemv: the gated-MLP epilogue does not apply");
  }
  const int m = static_cast<int>(M);
  if constexpr (kSplitW<TW>) {
    // matmul.cu sends q4_0s / q8_0s here only under q-dot (GEMMA3_QDOT=float takes its GEMM).
    return gemv_qdot<TX, TW>(x, w, w_scale, y, m, N, K, stream, gp);
  } else {
    if constexpr (kBlock) {
      if (qdot::enabled() && K % kQK == 0)
        return gemv_qdot<TX, TW>(x, w, w_scale, y, m, N, K, stream, {});
    }
    // Vector paths: x read in 16-byte runs; dense rows whole 16-byte chunks and 16-byte aligned;
    // block formats any K % 32 == 0 with (naturally) 2-byte aligned blocks.
    bool vec = aligned(x, 16);
    if constexpr (kBlock) {
      vec = vec && aligned(w, 2) && K % kQK == 0 &&
            K / kQK * int64_t(sizeof(TW)) < (int64_t(1) << 31);
    } else {
      vec = vec && aligned(w, 16) && K % Fmt<TW>::kE == 0;
    }
    if (!vec) {
      const int64_t blocks = (N + kWarps - 1) / kWarps;
      if (blocks > 0x7fffffff) return Status(StatusCode::kUnsupported, "matmul gemv: N too large");
      launch_pdl(gemv_scalar_kernel<TX, TW>, static_cast<unsigned>(blocks), kThreads, 0, stream, x,
                 w, w_scale, y, m, N, K);
      return check_launch("matmul gemv_scalar_kernel");
    }
    if constexpr (kBlock) {
      return by_m_bucket(m, [&](auto mt) {
        return launch_q<TX, TW, decltype(mt)::value, XIn::kFloat>(x, w, w_scale, y, m, N, K, 0,
                                                                  stream);
      });
    } else {
      return by_m_bucket(m, [&](auto mt) {
        return launch_vec<TX, TW, decltype(mt)::value>(x, w, w_scale, y, m, N, K, stream, {}, gp);
      });
    }
  }
}

// matmul_qk_norm_rope's one-launch form (qk_norm_rope.cu decides when it applies): the dense GEMV
// of x [M, K] and w [N, K] (one float type, 16-byte aligned, K % (16 / sizeof(T)) == 0) into
// y [M, N], N = (q_heads + 2 kv_heads) head_dim, with the QKV epilogue above. 1 <= M <= 8,
// M * heads <= kQkMaxCounters, 16 <= head_dim <= 512, head_dim % (16 / sizeof(T)) == 0, and every
// pointer of qk 16-byte aligned.
template <typename T>
Status gemv_qk(const T* x, const T* w, T* y, int64_t M, int64_t K, const QkEpilogue<T>& qk,
               cudaStream_t stream) {
  const int64_t heads = qk.q_heads + 2 * int64_t(qk.kv_heads), N = heads * qk.head_dim;
  if (M < 1 || M > 8 || M * heads > kQkMaxCounters || qk.head_dim < 16 ||
      qk.head_dim > qknr::kMaxHeadDim) {
    return Status(StatusCode::kInternal, "matmul_qk_norm_rope: shapes outside the fused GEMV");
  }
  const int m = static_cast<int>(M);
  return by_m_bucket(m, [&](auto mt) {
    return launch_vec<T, T, decltype(mt)::value, true>(x, w, nullptr, y, m, N, K, stream, qk);
  });
}
template Status gemv_qk<float>(const float*, const float*, float*, int64_t, int64_t,
                               const QkEpilogue<float>&, cudaStream_t);
template Status gemv_qk<bf16>(const bf16*, const bf16*, bf16*, int64_t, int64_t,
                              const QkEpilogue<bf16>&, cudaStream_t);

#define G3_GEMV_INSTANTIATE(TX, TW)                                                                \
  template Status gemv<TX, TW>(const TX*, const TW*, const float*, TX*, int64_t, int64_t, int64_t, \
                               cudaStream_t, const GeluPairs<TX>&);                                \
  template bool gemv_pairs_ok<TX, TW>(const TX*, const TW*, int64_t);
G3_GEMV_INSTANTIATE(float, float)
G3_GEMV_INSTANTIATE(float, bf16)
G3_GEMV_INSTANTIATE(float, block_q8_0)
G3_GEMV_INSTANTIATE(float, block_q4_0)
G3_GEMV_INSTANTIATE(float, block_q4_0s)
G3_GEMV_INSTANTIATE(float, block_q8_0s)
G3_GEMV_INSTANTIATE(float, fp8e4m3)
G3_GEMV_INSTANTIATE(bf16, float)
G3_GEMV_INSTANTIATE(bf16, bf16)
G3_GEMV_INSTANTIATE(bf16, block_q8_0)
G3_GEMV_INSTANTIATE(bf16, block_q4_0)
G3_GEMV_INSTANTIATE(bf16, block_q4_0s)
G3_GEMV_INSTANTIATE(bf16, block_q8_0s)
G3_GEMV_INSTANTIATE(bf16, fp8e4m3)
#undef G3_GEMV_INSTANTIATE

}  // namespace gemma3::cuda::detail
