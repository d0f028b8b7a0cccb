// Prefill attention on Hopper's warpgroup MMA (sm_90a wgmma), bf16, head_dim 128 / 256, 16-byte
// aligned operands, sm_scale > 0 (contract: kernels/kernels.inc, attention_prefill; dispatch in
// attention_prefill.cu, which keeps the FlashAttention-2 mma.sync kernel for other devices and
// for GEMMA3_ATTN_WGMMA=0). Versions, measurements and the ptxas traps: docs/kernels.md,
// sessions 11 and 12.
//
// FlashAttention-3's structure. One CTA per (qo head, q tile of 128 rows, sequence), three
// warpgroups:
// - warpgroup 0, the producer, only copies: Q once, then K and V tiles of 64 keys into two stages
//   each, with cp.async into the 128-byte swizzle wgmma reads (wgmma.cuh), completing on
//   mbarriers ("full": the producer's 128 threads' copies landed). Rows past the sequence are
//   zero-filled, so padding keys and queries contribute exact zeros.
// - warpgroups 1 and 2, the consumers, own 64 query rows each. S = Q K^T is wgmma m64n64k16 (both
//   operands from shared memory, K-major); the online softmax runs in registers (f32, exp2; the
//   scores' layout is mma.sync's, so the masks and row reductions are the FA2 kernel's); O += P V
//   is wgmma m64n{D}k16 with P the A operand from registers (bf16, rounded as HF rounds the
//   probabilities before P.V) and V the B operand N-major from shared memory. O stays in
//   registers (128 f32 a thread at D 256).
// - No CTA-wide barrier a tile: a consumer releases a K stage ("empty", one arrival a warp) once
//   S on it completed and a V stage once P.V on it completed, so the producer refills a stage
//   about two tiles before it is needed.
// - Within a consumer, S(t + 1) and P(t) V(t) are in flight while the softmax of S(t + 1) runs;
//   across the two, the MMAs are issued in turns (named barriers 1 and 2, FA3's ping-pong), so
//   one's softmax runs while the other's MMAs hold the tensor cores.
// - setmaxnreg gives the consumers 232 registers and the producer 40.
// Every consumer computes every tile the CTA visits (the mask zeroes what its rows do not see):
// skipping them per warpgroup put a wgmma in a branch apart from its wait, which made ptxas
// serialize every wgmma (native/test/wgmma-ptxas.test.ts).
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "kernels/cuda/attention_prefill.cuh"
#include "kernels/cuda/cp_async.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemv_common.cuh"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/wgmma.cuh"
#include "runtime/env.h"

namespace gemma3::cuda::prefill {
namespace {

using detail::cp_async16_or_zero;
using detail::cp_async_wait;
using detail::smem_u32;

template <int D, int kBc_, int kStages_>
struct Sm90Cfg {
  static constexpr int kThreads = 384;  // a producer and two consumer warpgroups
  // setmaxnreg moves registers from the producer to the consumers: 40 * 128 + 232 * 256 = the
  // 168 * 384 the launch gives (launch bounds 384, 1).
  static constexpr int kProducerRegs = 40, kConsumerRegs = 232;
  static constexpr int kBr = 128;           // query rows a CTA, 64 a consumer
  static constexpr int kBc = kBc_;          // keys a K/V tile: 64 at D 256, 128 at D 128
  static constexpr int kStages = kStages_;  // K / V stages (2; launch_wgmma says why)
  static constexpr int kQBytes = kBr * D * 2;
  static constexpr int kTileBytes = kBc * D * 2;
  // Q, the K and V stages, plus slack to align the base to the swizzle's 1024 bytes.
  static constexpr int kSmemBytes = kQBytes + 2 * kStages * kTileBytes + 1024;
  static_assert(kSmemBytes + 2048 <= 227 * 1024, "shared memory of one CTA an SM");
  static_assert(D == 128 || D == 256, "column blocks of 64 dims; O of 64 x D in registers");
};

// S = Q K^T for one warpgroup's 64 rows and a tile of kBc keys, issued and committed (not
// waited): D / 16 k16 steps; step ks reads 32 bytes at (ks % 4) * 32 of column block ks / 4 of
// the Q rows and of the K tile. dq / dk: the descriptors of step 0; a step adds its byte offset
// >> 4 to the start address field (no carry: shared addresses are < 2^18).
template <int D, int kBr, int kBc>
__device__ __forceinline__ void issue_s(float (&s)[kBc / 2], uint64_t dq, uint64_t dk) {
  static_assert(kBc == 64 || kBc == 128, "m64n64k16 or m64n128k16");
  wg::fence();
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    const uint32_t off = uint32_t((ks & 3) * 32);
    const uint64_t da = dq + (((ks >> 2) * kBr * 128 + off) >> 4);
    const uint64_t db = dk + (((ks >> 2) * kBc * 128 + off) >> 4);
    if constexpr (kBc == 64) {
      if (ks == 0) {
        wg::wgmma_m64n64k16_ss<false>(s, da, db);
      } else {
        wg::wgmma_m64n64k16_ss<true>(s, da, db);
      }
    } else {
      if (ks == 0) {
        wg::wgmma_m64n128k16_ss<false>(s, da, db);
      } else {
        wg::wgmma_m64n128k16_ss<true>(s, da, db);
      }
    }
  }
  wg::commit();
}

// O += P V, issued and committed: keys 16 kk.. are rows 16 kk.. of the V tile (2048 bytes a k16
// step); N = D runs over the D / 64 column blocks, kBc * 128 bytes apart (the N-major LBO).
template <int D, int kBc>
__device__ __forceinline__ void issue_pv(float (&o)[D / 2], const uint32_t (&pa)[kBc / 16][4],
                                         uint64_t dv) {
  wg::fence();
#pragma unroll
  for (int kk = 0; kk < kBc / 16; ++kk) {
    const uint64_t db = dv + ((kk * 16 * 128) >> 4);
    if constexpr (D == 256) {
      wg::wgmma_m64n256k16_rs_tb(o, pa[kk], db);
    } else {
      wg::wgmma_m64n128k16_rs_tb(o, pa[kk], db);
    }
  }
  wg::commit();
}

// The online softmax of a tile of raw scores starting at key j0: s[4n + 2r + e] is the thread's
// row r (of 2), key j0 + 8n + 2 t4 + e. Keys outside a row's [lo, hi) (row_lo / row_hi: the
// thread's first row's entries in shared memory, its second 8 further) are masked (-inf) unless
// the tile is inside [lo_max, hi_min) of the warpgroup's rows. The running max m is of raw
// scores (scale_log2 > 0 keeps the order), and p = 2^(s * scale_log2 - m * scale_log2), one FFMA
// and one ex2 a score. Updates m and the thread's partial sums l (the quad sums them at the
// end), returns in alpha the factor O must be scaled by before this tile's P.V, and leaves the
// probabilities in s (f32; pack_p makes them P.V's A fragments).
template <int kBc>
__device__ __forceinline__ void softmax_tile(float (&s)[kBc / 2], int j0, const TileBounds& tb,
                                             const int* row_lo, const int* row_hi, int t4,
                                             float scale_log2, float (&m)[2], float (&l)[2],
                                             float (&alpha)[2]) {
  constexpr int kNt = kBc / 8;
  if (!(j0 >= tb.lo_max && j0 + kBc <= tb.hi_min)) {  // warpgroup-uniform
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      // Keys [lo, hi) of this row, relative to the thread's first key of the tile.
      const int lo = row_lo[8 * r] - j0 - 2 * t4, hi = row_hi[8 * r] - j0 - 2 * t4;
#pragma unroll
      for (int n = 0; n < kNt; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int j = n * 8 + e;
          if (j < lo || j >= hi) s[4 * n + 2 * r + e] = kNegInf;
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float mx = m[r];
#pragma unroll
    for (int n = 0; n < kNt; ++n) mx = fmaxf(mx, fmaxf(s[4 * n + 2 * r], s[4 * n + 2 * r + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    // A row that has seen no key stays at zero: 2^(-inf - 0) = 0.
    const float base = mx == kNegInf ? 0.f : mx * scale_log2;
    alpha[r] = fast_exp2(m[r] * scale_log2 - base);  // m = -inf (first tile): 0
    m[r] = mx;
    float rs = 0.f;
#pragma unroll
    for (int n = 0; n < kNt; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float pv = fast_exp2(fmaf(s[4 * n + 2 * r + e], scale_log2, -base));
        s[4 * n + 2 * r + e] = pv;
        rs += pv;
      }
    }
    l[r] = l[r] * alpha[r] + rs;
  }
}

// P of a tile (s after softmax_tile), rounded to bf16 as HF rounds the probabilities before P.V,
// as the A fragments of the P.V k16 steps.
template <int kBc>
__device__ __forceinline__ void pack_p(const float (&s)[kBc / 2], uint32_t (&pa)[kBc / 16][4]) {
#pragma unroll
  for (int kk = 0; kk < kBc / 16; ++kk) {
    pa[kk][0] = pack_bf16x2(s[8 * kk + 0], s[8 * kk + 1]);
    pa[kk][1] = pack_bf16x2(s[8 * kk + 2], s[8 * kk + 3]);
    pa[kk][2] = pack_bf16x2(s[8 * kk + 4], s[8 * kk + 5]);
    pa[kk][3] = pack_bf16x2(s[8 * kk + 6], s[8 * kk + 7]);
  }
}

// The epilogue of a warpgroup: normalizes its O rows (the quad sums l), stages them as bf16 in its
// own rows of the Q tile (smem: the tile's generic address; each warp reads back only the 16 rows
// it wrote, so a __syncwarp orders it), then writes rows warp_row.. warp_row + 15 of the tile that
// are below q_rows with 16-byte stores (output row q0 + row, head h).
template <int D, int kBr>
__device__ __forceinline__ void store_rows(const float (&o)[D / 2], const float (&l)[2],
                                           uint8_t* smem, int row0, int t4, int lane, int warp_row,
                                           int q_rows, const PrefillParams& p, int64_t q0, int h) {
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float lr = l[r];
    lr += __shfl_xor_sync(0xffffffffu, lr, 1);
    lr += __shfl_xor_sync(0xffffffffu, lr, 2);
    inv[r] = lr > 0.f ? 1.f / lr : 0.f;  // a query that sees no key gets zeros
  }
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const uint32_t val = pack_bf16x2(o[4 * n + 2 * r] * inv[r], o[4 * n + 2 * r + 1] * inv[r]);
      *reinterpret_cast<uint32_t*>(smem + wg::sw128_offset(kBr, row0 + 8 * r, n) + t4 * 4) = val;
    }
  }
  __syncwarp();
  constexpr int kChunks = D / 8;
  const int64_t out_ld = int64_t(p.num_qo_heads) * D;
  bf16* out_g = p.out + q0 * out_ld + int64_t(h) * D;
#pragma unroll 4
  for (int idx = lane; idx < 16 * kChunks; idx += 32) {
    const int row = warp_row + idx / kChunks, c = idx % kChunks;
    if (row < q_rows) {
      const uint4 val = *reinterpret_cast<const uint4*>(smem + wg::sw128_offset(kBr, row, c));
      *reinterpret_cast<uint4*>(out_g + row * out_ld + c * 8) = val;
    }
  }
}

// Split key ranges (small grids: chunked prefill, short batches). With splits > 1 the CTA of
// (head, q tile, split) attends to its share of the q tile's key tiles and writes, per query row
// and head, O unnormalized (f32) and (m, l): the row max in log2 units (scores * scale_log2) and
// the sum of 2^(s * scale_log2 - m). prefill_combine_kernel merges the splits into the output.
// o: [splits][total_q][heads][D], ml: [splits][total_q][heads][2].
struct SplitOut {
  int splits = 1;
  float* o = nullptr;
  float* ml = nullptr;
};

// A consumer warp's rows of a split: rows row0, row0 + 8 of the tile (those below q_rows), the
// thread's columns 8 n + 2 t4, + 1.
template <int D>
__device__ __forceinline__ void store_partial(const float (&o)[D / 2], const float (&m)[2],
                                              const float (&l)[2], int row0, int t4, int q_rows,
                                              const PrefillParams& p, const SplitOut& so, int split,
                                              int64_t q0, int h) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float lr = l[r];
    lr += __shfl_xor_sync(0xffffffffu, lr, 1);
    lr += __shfl_xor_sync(0xffffffffu, lr, 2);
    const int row = row0 + 8 * r;
    if (row >= q_rows) continue;
    const int64_t rh = (int64_t(split) * p.total_q + q0 + row) * p.num_qo_heads + h;
    float* dst = so.o + rh * D + 2 * t4;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      *reinterpret_cast<float2*>(dst + 8 * n) = make_float2(o[4 * n + 2 * r], o[4 * n + 2 * r + 1]);
    }
    if (t4 == 0) {
      // scale_log2 > 0 (the dispatch's condition): a row with no key keeps m = -inf.
      *reinterpret_cast<float2*>(so.ml + 2 * rh) = make_float2(m[r] * p.scale_log2, lr);
    }
  }
}

// out[row, h] = sum_s 2^(m_s - M) O_s / sum_s 2^(m_s - M) l_s (M = max m_s), bf16; zeros for a
// row that saw no key. One warp a (row, head), D / 32 consecutive values a lane.
template <int D>
__global__ void __launch_bounds__(128)
    prefill_combine_kernel(const PrefillParams p, const SplitOut so) {
  constexpr int kPer = D / 32;
  static_assert(kPer % 4 == 0, "float4 loads");
  const int64_t rows = int64_t(p.total_q) * p.num_qo_heads;
  const int64_t rh = int64_t(blockIdx.x) * 4 + (threadIdx.x >> 5);
  if (rh >= rows) return;
  const int lane = threadIdx.x & 31;
  float mx = kNegInf;
  for (int s = 0; s < so.splits; ++s) mx = fmaxf(mx, so.ml[2 * (s * rows + rh)]);
  float acc[kPer] = {};
  float sum = 0.f;
  if (mx != kNegInf) {
    for (int s = 0; s < so.splits; ++s) {
      const float2 ml = *reinterpret_cast<const float2*>(so.ml + 2 * (s * rows + rh));
      const float w = exp2f(ml.x - mx);  // 0 for a split that saw no key
      sum += w * ml.y;
      const float* src = so.o + (s * rows + rh) * D + lane * kPer;
#pragma unroll
      for (int i = 0; i < kPer; i += 4) {
        const float4 v = *reinterpret_cast<const float4*>(src + i);
        acc[i] += w * v.x;
        acc[i + 1] += w * v.y;
        acc[i + 2] += w * v.z;
        acc[i + 3] += w * v.w;
      }
    }
  }
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  // rh = q row * heads + h, and the output row of q row is heads * D wide: rh * D is the offset.
  bf16* dst = p.out + rh * D + lane * kPer;
#pragma unroll
  for (int i = 0; i < kPer; i += 4) {  // 8-byte stores: 4 values (D 128 gives a lane 4)
    uint2 v;
    v.x = pack_bf16x2(acc[i] * inv, acc[i + 1] * inv);
    v.y = pack_bf16x2(acc[i + 2] * inv, acc[i + 3] * inv);
    *reinterpret_cast<uint2*>(dst + i) = v;
  }
}

// O *= alpha, the factor of each of the thread's two rows; skipped when it is exactly 1 for every
// row of the warp (2^0: the row max did not move, as on most tiles of a long row).
template <int D>
__device__ __forceinline__ void rescale_o(float (&o)[D / 2], const float (&alpha)[2]) {
  if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
      o[4 * i + 0] *= alpha[0];
      o[4 * i + 1] *= alpha[0];
      o[4 * i + 2] *= alpha[1];
      o[4 * i + 3] *= alpha[1];
    }
  }
}

// The producer's share of copying a [kRows, D] tile (128 threads): thread tid copies chunk
// c = tid % (D / 8) of rows r0 + i * kStep (r0 = tid / (D / 8), kStep = 128 / (D / 8): 4 or 8).
// The swizzle term of row r is (c ^ r) & 7; with kStep 4 it alternates between two values.
// A loop that is not unrolled: the producer runs on few registers.
template <int D>
struct ProducerCopy {
  static constexpr int kChunks = D / 8, kStep = 128 / kChunks;
  static_assert(kStep == 4 || kStep == 8, "head_dim 128 or 256");
  int r0, c;
  uint32_t col0, col1;  // byte offsets in row r0 of column block 0, for even / odd passes
  __device__ __forceinline__ explicit ProducerCopy(int tid) {
    c = tid % kChunks;
    r0 = tid / kChunks;
    col0 = uint32_t((((c & 7) ^ (r0 & 7)) << 4) + r0 * 128);
    col1 = uint32_t((((c & 7) ^ ((r0 + kStep) & 7)) << 4) + r0 * 128);
  }
  template <int kRows>
  __device__ __forceinline__ void copy(uint32_t s_base, const bf16* g, int64_t ld,
                                       int valid_rows) const {
    const uint32_t s0 = s_base + uint32_t(c >> 3) * (kRows * 128);
    const bf16* src = g + (r0 * ld + c * 8);
    const int64_t g_step = kStep * ld;
#pragma unroll 2
    for (int i = 0; i < kRows / kStep; ++i) {
      const bool valid = r0 + i * kStep < valid_rows;
      const uint32_t dst = s0 + uint32_t(i * kStep * 128) + ((i & 1) ? col1 : col0);
      cp_async16_or_zero(dst, valid ? src : g, valid);
      src += g_step;
    }
  }
};

template <int D, int kBc, int kStages>
__global__ void __launch_bounds__(Sm90Cfg<D, kBc, kStages>::kThreads, 1)
    prefill_wgmma_kernel(const PrefillParams p, const SplitOut so) {
#if defined(GEMMA3_WGMMA)
  using Cfg = Sm90Cfg<D, kBc, kStages>;
  constexpr int kBr = Cfg::kBr;
  extern __shared__ uint8_t smem_raw[];
  __shared__ int s_row_lo[kBr], s_row_hi[kBr];
  __shared__ int s_red[kBr / 32][4];
  // full_q, full_k[kStages], full_v[kStages], empty_k[kStages], empty_v[kStages]
  __shared__ __align__(8) uint64_t s_bar[1 + 4 * kStages];

  // Heads fastest and the longest causal tiles first (q tiles fastest measured slower: session 12).
  const int h = blockIdx.x / so.splits, split = blockIdx.x % so.splits;
  const int qt = gridDim.y - 1 - blockIdx.y;
  const int b = blockIdx.z;
  const SeqBounds sb = load_seq(p.qo_indptr, p.kv_indptr, b, p.total_q, p.total_kv);
  const int q_begin = qt * kBr;
  if (q_begin >= sb.q_len) return;  // the whole CTA
  const int q_rows = min(kBr, sb.q_len - q_begin);
  const int kvh = h / p.group;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wgi = __shfl_sync(0xffffffffu, warp >> 2, 0);  // 0: producer; 1, 2: consumers

  const uint32_t bar0 = smem_u32(s_bar);
  const uint32_t full_q = bar0;
  auto full_k = [&](int st) { return bar0 + 8u * uint32_t(1 + st); };
  auto full_v = [&](int st) { return bar0 + 8u * uint32_t(1 + kStages + st); };
  auto empty_k = [&](int st) { return bar0 + 8u * uint32_t(1 + 2 * kStages + st); };
  auto empty_v = [&](int st) { return bar0 + 8u * uint32_t(1 + 3 * kStages + st); };
  if (tid == 0) {
    wg::mbar_init(full_q, 128);
    for (int st = 0; st < kStages; ++st) {
      wg::mbar_init(full_k(st), 128);
      wg::mbar_init(full_v(st), 128);
      wg::mbar_init(empty_k(st), 8);
      wg::mbar_init(empty_v(st), 8);
    }
    wg::mbar_fence_init();
  }
  tile_row_bounds<kBr>(p, sb, q_begin, q_rows, tid, s_row_lo, s_row_hi, s_red);
  __syncthreads();
  const TileBounds cta(s_red, 0, kBr / 32);
  int t0 = cta.any() ? cta.lo_min / kBc : 0, t1 = cta.any() ? (cta.hi_max + kBc - 1) / kBc : 0;
  if (so.splits > 1) {  // this split's share of the key tiles (may be none)
    const int n = t1 - t0;
    t1 = t0 + n * (split + 1) / so.splits;
    t0 += n * split / so.splits;
  }
  const int t_first = __shfl_sync(0xffffffffu, t0, 0);
  const int t_end = __shfl_sync(0xffffffffu, t1, 0);

  const uint32_t sQ = (smem_u32(smem_raw) + 1023u) & ~1023u;
  const uint32_t sK = sQ + Cfg::kQBytes;               // K stage i at sK + i * kTileBytes
  const uint32_t sV = sK + kStages * Cfg::kTileBytes;  // V stage i at sV + i * kTileBytes
  // Tile t uses stage (t - t_first) % kStages, for the n-th time, n = (t - t_first) / kStages: its
  // full barrier completes phase n, and the producer's n-th fill waits for the release of use
  // n - 1.

  if (wgi == 0) {
    wg::setmaxnreg_dec<Cfg::kProducerRegs>();
    if (t_first < t_end) {
      const bf16* k_g = p.k + sb.kv0 * p.ld_k + int64_t(kvh) * D;
      const bf16* v_g = p.v + sb.kv0 * p.ld_v + int64_t(kvh) * D;
      const ProducerCopy<D> copy(tid);
      copy.template copy<kBr>(sQ, p.q + (sb.q0 + q_begin) * p.ld_q + int64_t(h) * D, p.ld_q,
                              q_rows);
      wg::cp_async_mbar_arrive(full_q);
      for (int t = t_first; t < t_end; ++t) {
        const int st = (t - t_first) % kStages, n = (t - t_first) / kStages;
        const int j = t * kBc;
        if (n > 0) wg::mbar_wait(empty_k(st), uint32_t(n - 1) & 1);
        copy.template copy<kBc>(sK + st * Cfg::kTileBytes, k_g + j * p.ld_k, p.ld_k, sb.kv_len - j);
        wg::cp_async_mbar_arrive(full_k(st));
        if (n > 0) wg::mbar_wait(empty_v(st), uint32_t(n - 1) & 1);
        copy.template copy<kBc>(sV + st * Cfg::kTileBytes, v_g + j * p.ld_v, p.ld_v, sb.kv_len - j);
        wg::cp_async_mbar_arrive(full_v(st));
      }
      cp_async_wait<0>();  // no copy of this thread outlives the CTA
    }
  } else {
    wg::setmaxnreg_inc<Cfg::kConsumerRegs>();
    const int cw = wgi - 1;  // consumer: query rows [64 cw, 64 cw + 64)
    const TileBounds mine(s_red, 2 * cw, 2 * cw + 2);
    const int g = lane >> 2, t4 = lane & 3;
    const int row0 = cw * 64 + (warp & 3) * 16 + g;  // this thread's rows: row0, row0 + 8
    const int* row_lo = s_row_lo + row0;
    const int* row_hi = s_row_hi + row0;
    const uint64_t dq = wg::desc_sw128(sQ + uint32_t(cw * 64 * 128), 16, 1024);
    const uint64_t dk = wg::desc_sw128(sK, 16, 1024);
    const uint64_t dv = wg::desc_sw128(sV, kBc * 128, 1024);
    constexpr uint64_t kBufDesc = Cfg::kTileBytes >> 4;
    // Ping-pong: consumer c issues its MMAs after named barrier 1 + c completes, then arrives on
    // the other's. Consumer 1 opens the first turn; consumer 0 takes the last arrival below.
    const uint32_t my_turn = 1 + cw, other_turn = 2 - cw;
    if (cw == 1) wg::named_arrive<256>(1);
    auto wait_full = [&](uint32_t bar, int t) {
      wg::mbar_wait(bar, uint32_t((t - t_first) / kStages) & 1);
      wg::fence_proxy_async();  // the copies' writes, before wgmma reads them
    };
    auto release = [&](uint32_t bar) {
      if (lane == 0) wg::mbar_arrive(bar);
    };

    float o[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
    float m[2] = {kNegInf, kNegInf}, l[2] = {0.f, 0.f};
    if (t_first < t_end) {
      uint32_t pa[kBc / 16][4];  // P(t) as the A fragments of P.V's k16 steps
      float s[kBc / 2];          // S(t + 1)
      float alpha[2];
      wg::mbar_wait(full_q, 0);
      wait_full(full_k(0), t_first);
      wg::named_sync<256>(my_turn);
      issue_s<D, kBr, kBc>(s, dq, dk);
      wg::named_arrive<256>(other_turn);
      wg::wait<0>();
      wg::fence_regs(s);
      release(empty_k(0));
      softmax_tile<kBc>(s, t_first * kBc, mine, row_lo, row_hi, t4, p.scale_log2, m, l, alpha);
      pack_p<kBc>(s, pa);
      // Steady state (FlashAttention-3's order within a warpgroup). Entering iteration t: P(t) in
      // pa, alpha(t) (O's factor for it) in registers. The consumer issues S(t + 1) = Q K(t + 1)^T,
      // rescales O by alpha(t) while it runs, issues O += P(t) V(t), and runs the softmax of
      // S(t + 1) (in place, f32) while P(t) V(t) is still on the tensor cores; P(t + 1) is packed
      // into pa once that MMA completed. So no register an MMA in flight reads is written (ptxas
      // serializes every wgmma otherwise, C7513), and the rescale is off the path between MMAs.
      for (int t = t_first;; ++t) {
        const bool last = t + 1 == t_end;
        const int s0 = (t - t_first) % kStages, s1 = (t + 1 - t_first) % kStages;
        wait_full(full_v(s0), t);
        if (last) break;
        wait_full(full_k(s1), t + 1);
        const uint64_t dk_t = dk + s1 * kBufDesc, dv_t = dv + s0 * kBufDesc;
        wg::named_sync<256>(my_turn);
        issue_s<D, kBr, kBc>(s, dq, dk_t);
        rescale_o<D>(o, alpha);
        issue_pv<D, kBc>(o, pa, dv_t);
        wg::named_arrive<256>(other_turn);
        wg::wait<1>();  // S(t + 1); P(t) V(t) may still run, reading pa
        wg::fence_regs(s);
        release(empty_k(s1));
        softmax_tile<kBc>(s, (t + 1) * kBc, mine, row_lo, row_hi, t4, p.scale_log2, m, l, alpha);
        wg::wait<0>();
        wg::fence_regs(o);
        wg::fence_regs(pa);
        release(empty_v(s0));
        pack_p<kBc>(s, pa);
      }
      rescale_o<D>(o, alpha);
      wg::named_sync<256>(my_turn);
      issue_pv<D, kBc>(o, pa, dv + ((t_end - 1 - t_first) % kStages) * kBufDesc);
      wg::named_arrive<256>(other_turn);
      wg::wait<0>();
      wg::fence_regs(o);
      wg::fence_regs(pa);
    }
    if (cw == 0) wg::named_sync<256>(1);  // consumer 1's last arrival on barrier 1
    if (so.splits > 1) {
      store_partial<D>(o, m, l, row0, t4, q_rows, p, so, split, sb.q0 + q_begin, h);
    } else {
      store_rows<D, kBr>(o, l, smem_raw + (sQ - smem_u32(smem_raw)), row0, t4, lane,
                         cw * 64 + (warp & 3) * 16, q_rows, p, sb.q0 + q_begin, h);
    }
  }
#else
  __trap();  // never launched: wgmma_available() is false without sm_90a code
#endif
}

// The split-KV workspace: one per thread and device, grown on demand and kept (like cuBLAS's
// workspace in matmul.cu, it assumes one stream at a time per thread and device). Never used
// under graph capture: growing it frees the old buffer, which a captured graph would still hold.
// A failed allocation only turns splitting off.
struct SplitWorkspace {
  float* ptr = nullptr;
  int64_t floats = 0;
};
thread_local SplitWorkspace t_split_ws[detail::kMaxDevices];

float* split_workspace(int64_t floats, cudaStream_t stream) {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= detail::kMaxDevices) return nullptr;
  SplitWorkspace& ws = t_split_ws[dev];
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess ||
      capture != cudaStreamCaptureStatusNone) {
    (void)cudaGetLastError();
    return nullptr;
  }
  if (ws.floats >= floats) return ws.ptr;
  // cudaFree synchronizes: no kernel still reads the old buffer. It fails while another thread
  // captures in global mode; the buffer is then kept and this call does not split.
  if (ws.ptr != nullptr && cudaFree(ws.ptr) != cudaSuccess) {
    (void)cudaGetLastError();
    return nullptr;
  }
  ws = {};
  void* p = nullptr;
  if (cudaMalloc(&p, size_t(floats) * sizeof(float)) != cudaSuccess) {
    (void)cudaGetLastError();  // the failed allocation is not an error of this call
    return nullptr;
  }
  ws = {static_cast<float*>(p), floats};
  return ws.ptr;
}

// Splits of the key range: only when the grid fills under half the SMs, as many as keep it within
// one wave, at least 512 keys a split by the mean key count of a sequence, at most 8.
// GEMMA3_ATTN_SPLITS=N forces N (tests: empty splits, every tile split).
int choose_splits(int64_t ctas, int64_t mean_kv, int sms) {
  static const int forced = env_int("GEMMA3_ATTN_SPLITS", 0);
  if (forced > 0) return std::min(forced, 64);
  if (ctas <= 0 || 2 * ctas > sms) return 1;
  const int64_t by_grid = sms / ctas, by_keys = mean_kv / 512;
  return int(std::max<int64_t>(1, std::min<int64_t>({8, by_grid, by_keys})));
}

template <int D, int kBc, int kStages>
Status launch(const PrefillParams& p, int64_t batch, int64_t max_q_len, cudaStream_t stream) {
  using Cfg = Sm90Cfg<D, kBc, kStages>;
  int64_t tiles = 0;
  G3_RETURN_IF_ERROR(q_tile_count(max_q_len, Cfg::kBr, &tiles));
  int sms = 0;
  G3_RETURN_IF_ERROR(detail::sm_count(&sms));
  SplitOut so;
  so.splits = choose_splits(p.num_qo_heads * tiles * batch, p.total_kv / batch, sms);
  const int64_t rows = int64_t(p.total_q) * p.num_qo_heads;  // (q row, head) pairs
  if (so.splits > 1) {
    float* ws = split_workspace(so.splits * rows * (D + 2), stream);
    if (ws == nullptr) {
      so.splits = 1;
    } else {
      so.o = ws;
      so.ml = ws + so.splits * rows * D;
    }
  }
  auto kernel = prefill_wgmma_kernel<D, kBc, kStages>;
  G3_CUDA_RETURN(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes));
  const dim3 grid(unsigned(p.num_qo_heads * so.splits), unsigned(tiles), unsigned(batch));
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p, so);
  G3_RETURN_IF_ERROR(check_launch("attention_prefill (wgmma)"));
  if (so.splits == 1) return Status::Ok();
  prefill_combine_kernel<D><<<unsigned((rows + 3) / 4), 128, 0, stream>>>(p, so);
  return check_launch("attention_prefill (wgmma, combine)");
}

}  // namespace

bool wgmma_available() {
#if defined(GEMMA3_HAVE_SM90A)
  static const bool off = env_is("GEMMA3_ATTN_WGMMA", "0");
  return !off && compute_capability() == 90;  // sm_90a code runs on 9.0 only
#else
  return false;
#endif
}

Status launch_wgmma(const PrefillParams& p, int head_dim, int64_t batch, int64_t max_q_len,
                    cudaStream_t stream) {
  // Key tiles of 64 at D 256 (O and S fill the consumers' registers), 128 at D 128 (18% faster
  // than 64 at the 27B shape: session 12).
  // Two K / V stages: three at D 128 (225 KB) measured 251 against 250 µs at the 27B shape.
  if (head_dim == 256) return launch<256, 64, 2>(p, batch, max_q_len, stream);
  return launch<128, 128, 2>(p, batch, max_q_len, stream);
}

}  // namespace gemma3::cuda::prefill
