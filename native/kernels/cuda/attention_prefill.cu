// Prefill attention over a ragged batch (contract: kernels/kernels.inc, attention_prefill).
//
// bf16, head_dim 64/72/128/256, 16-byte aligned operands: FlashAttention-2 style kernel. One CTA
// per (qo head, q tile of 16 * kM * kWarps rows, sequence); each warp owns 16 * kM query rows. K/V
// tiles of 64 keys stream through XOR-swizzled shared memory with cp.async (V(t) loads while S = Q
// K(t)^T runs, K(t+1) loads while O += P V(t) runs). S and P.V use mma.sync m16n8k16 bf16 with f32
// accumulators, fragments via ldmatrix; online softmax in f32 with exp2 (sm_scale folded into
// log2e). Tiles that every row of the q tile sees completely skip the mask; tiles no row sees are
// never visited. head_dim 72 (SigLIP-So400m: 1152 / 16) computes over 80 dims (the k-dim of
// m16n8k16), the pad zero-filled at load, in rows of 128-element swizzled shared memory. float,
// head_dim 16/32, or unaligned strides: one warp per query row, scalar FFMA (reference-grade).
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "kernels/cuda/attention_prefill.cuh"
#include "kernels/cuda/cp_async.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "runtime/env.h"

namespace gemma3::cuda {
namespace {

using namespace prefill;  // attention_prefill.cuh

// ---------------------------------------------------------------------------------------------
// Tensor-core path (bf16).

using detail::cp_async16_or_zero;  // cp_async.cuh
using detail::cp_async_commit;
using detail::cp_async_wait;
using detail::smem_u32;

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// c += a(16x16, row) * b(16x8, col), bf16 inputs, f32 accumulators.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <int D, int kWarps, int kM>
struct MmaCfg {
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kBr = kWarps * 16 * kM;    // query rows per CTA
  static constexpr int kBc = 64;                  // keys per K/V tile
  static constexpr int kChunks = D / 8;           // 16-byte chunks per row in global memory
  static constexpr int kDp = (D + 15) / 16 * 16;  // dims computed (mma k-steps of 16)
  static constexpr int kDs = (D + 63) / 64 * 64;  // shared row width (the swizzle's 8 chunks)
  static constexpr int kSmemBytes = (kBr + 2 * kBc) * kDs * 2;
  static_assert(D % 8 == 0, "rows are read in 16-byte chunks");
};

// Shared tiles are [rows][D] bf16 with 16-byte chunk c of row r stored at chunk c ^ (r & 7): the 8
// rows an ldmatrix phase reads (same logical chunk) then hit 8 distinct bank groups.
template <int D>
__device__ __forceinline__ uint32_t swz(int row, int chunk) {
  return uint32_t((row * D + ((chunk ^ (row & 7)) << 3)) * 2);  // byte offset
}

// Copies rows [0, kRows) of a [rows, D] slice (row stride ld elements) into a swizzled tile of
// kDs-element rows, kDp dims each; rows >= valid_rows and dims >= D are zero-filled so padding
// keys/queries/dims contribute exact zeros, never NaN.
template <int D, int kRows, int kThreads>
__device__ __forceinline__ void load_tile_async(uint32_t s_base, const bf16* g, int64_t ld,
                                                int valid_rows, int tid) {
  constexpr int kDs = (D + 63) / 64 * 64, kLoad = (D + 15) / 16 * 2, kReal = D / 8;
#pragma unroll
  for (int idx = tid; idx < kRows * kLoad; idx += kThreads) {
    const int r = idx / kLoad, c = idx % kLoad;
    const bool valid = r < valid_rows && c < kReal;
    const bf16* src = valid ? g + r * ld + c * 8 : g;
    cp_async16_or_zero(s_base + swz<kDs>(r, c), src, valid);
  }
}

// grid: (num_qo_heads, q tiles, batch); q tiles run in reverse so the longest causal tiles start
// first. block: kWarps warps, each owning kM m-tiles of 16 query rows (kM = 2 reuses every K/V
// fragment read from shared memory for two m-tiles: half the ldmatrix traffic per mma, which
// bounds small head dims); dynamic smem: Q tile + one K tile + one V tile.
template <int D, int kWarps, int kMinBlocks, int kM>
__global__ void __launch_bounds__(kWarps * 32, kMinBlocks)
    prefill_mma_kernel(const PrefillParams p) {
  using Cfg = MmaCfg<D, kWarps, kM>;
  constexpr int kBr = Cfg::kBr, kBc = Cfg::kBc, kThreads = Cfg::kThreads;
  constexpr int kDp = Cfg::kDp, kDs = Cfg::kDs;
  constexpr int kNt = kBc / 8;  // n-tiles of S per warp
  constexpr int kDt = kDp / 8;  // n-tiles of O per warp
  static_assert(kBr <= kThreads, "one thread computes each row's visible range");
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ int s_row_lo[kBr], s_row_hi[kBr];
  __shared__ int s_red[kBr / 32][4];

  const int h = blockIdx.x;
  const int qt = gridDim.y - 1 - blockIdx.y;
  const int b = blockIdx.z;
  const SeqBounds sb = load_seq(p.qo_indptr, p.kv_indptr, b, p.total_q, p.total_kv);
  const int q_begin = qt * kBr;
  if (q_begin >= sb.q_len) return;
  const int q_rows = min(kBr, sb.q_len - q_begin);
  const int kvh = h / p.group;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  // Per-row visible ranges, plus the CTA-wide reductions that drive tile skipping/masking:
  // [lo_min, hi_max) over rows that see something bounds the visited tiles; a tile inside
  // [lo_max, hi_min) (over all rows) is visible to every row and needs no mask.
  tile_row_bounds<kBr>(p, sb, q_begin, q_rows, tid, s_row_lo, s_row_hi, s_red);
  __syncthreads();
  const TileBounds tb(s_red, 0, kBr / 32);
  const int lo_min = tb.lo_min, hi_max = tb.hi_max, lo_max = tb.lo_max, hi_min = tb.hi_min;
  const int t_first = lo_min < hi_max ? lo_min / kBc : 0;
  const int t_end = lo_min < hi_max ? (hi_max + kBc - 1) / kBc : 0;

  const int g = lane >> 2, t4 = lane & 3;
  const int warp_row = warp * 16 * kM;  // this warp's first query row in the tile
  int row_lo[kM][2], row_hi[kM][2];
#pragma unroll
  for (int mt = 0; mt < kM; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      row_lo[mt][r] = s_row_lo[warp_row + mt * 16 + g + 8 * r];
      row_hi[mt][r] = s_row_hi[warp_row + mt * 16 + g + 8 * r];
    }
  }

  const uint32_t sQ = smem_u32(smem);
  const uint32_t sK = sQ + kBr * kDs * 2;
  const uint32_t sV = sK + kBc * kDs * 2;
  const bf16* q_g = p.q + (sb.q0 + q_begin) * p.ld_q + int64_t(h) * D;
  const bf16* k_g = p.k + sb.kv0 * p.ld_k + int64_t(kvh) * D;
  const bf16* v_g = p.v + sb.kv0 * p.ld_v + int64_t(kvh) * D;

  load_tile_async<D, kBr, kThreads>(sQ, q_g, p.ld_q, q_rows, tid);
  if (t_first < t_end) {
    const int j0 = t_first * kBc;
    load_tile_async<D, kBc, kThreads>(sK, k_g + j0 * p.ld_k, p.ld_k, sb.kv_len - j0, tid);
  }
  cp_async_commit();

  float o[kM][kDt][4];
#pragma unroll
  for (int mt = 0; mt < kM; ++mt)
#pragma unroll
    for (int i = 0; i < kDt; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
  float m[kM][2], l[kM][2];
#pragma unroll
  for (int mt = 0; mt < kM; ++mt) {
    m[mt][0] = m[mt][1] = kNegInf;
    l[mt][0] = l[mt][1] = 0.f;
  }

  // Lane-constant parts of the ldmatrix addresses (row & 7 == lane & 7 for every operand).
  const int x7 = lane & 7;
  const uint32_t a_row = uint32_t((warp_row + (lane & 15)) * kDs * 2);  // + 16 rows per m-tile
  const int a_hi = lane >> 4;  // A: +8 columns for lanes 16..31
  const uint32_t k_row =
      uint32_t((x7 + ((lane >> 4) << 3)) * kDs * 2);  // K: +8 keys for lanes 16..31
  const int k_hi = (lane >> 3) & 1;                   // K: +8 dims for lanes 8..15, 24..
  const uint32_t v_row = uint32_t((x7 + (((lane >> 3) & 1) << 3)) * kDs * 2);  // V: +8 keys
  const int v_hi = lane >> 4;  // V: +8 dims for lanes 16..31

  for (int t = t_first; t < t_end; ++t) {
    const int j0 = t * kBc;
    cp_async_wait<0>();
    __syncthreads();  // K(t) (and Q) landed; every warp finished P.V(t-1), so sV may be refilled
    load_tile_async<D, kBc, kThreads>(sV, v_g + j0 * p.ld_v, p.ld_v, sb.kv_len - j0, tid);
    cp_async_commit();

    // S = Q K^T for this warp's 16 * kM rows x 64 keys; each K fragment serves every m-tile.
    float s[kM][kNt][4];
#pragma unroll
    for (int mt = 0; mt < kM; ++mt)
#pragma unroll
      for (int i = 0; i < kNt; ++i) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < kDp / 16; ++ks) {
      uint32_t a[kM][4];
#pragma unroll
      for (int mt = 0; mt < kM; ++mt)
        ldmatrix_x4(a[mt], sQ + a_row + mt * 16 * kDs * 2 + ((((ks * 2) | a_hi) ^ x7) << 4));
#pragma unroll
      for (int np = 0; np < kNt / 2; ++np) {
        uint32_t bk[4];
        ldmatrix_x4(bk, sK + np * 16 * kDs * 2 + k_row + ((((ks * 2) | k_hi) ^ x7) << 4));
#pragma unroll
        for (int mt = 0; mt < kM; ++mt) {
          mma_bf16(s[mt][2 * np], a[mt], bk[0], bk[1]);
          mma_bf16(s[mt][2 * np + 1], a[mt], bk[2], bk[3]);
        }
      }
    }

    // Online softmax (log2 domain). Element (n, 2r + e) of m-tile mt is row mt * 16 + g + 8r,
    // key j0 + 8n + 2*t4 + e.
    const bool need_mask = !(j0 >= lo_max && j0 + kBc <= hi_min);
    float alpha[kM][2];
#pragma unroll
    for (int mt = 0; mt < kM; ++mt) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = m[mt][r];
#pragma unroll
        for (int n = 0; n < kNt; ++n) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float x = s[mt][n][2 * r + e] * p.scale_log2;
            if (need_mask) {
              const int j = j0 + n * 8 + 2 * t4 + e;
              if (j < row_lo[mt][r] || j >= row_hi[mt][r]) x = kNegInf;
            }
            s[mt][n][2 * r + e] = x;
            mx = fmaxf(mx, x);
          }
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float base = mx == kNegInf ? 0.f : mx;  // a row that has seen no key stays at zero
        alpha[mt][r] = fast_exp2(m[mt][r] - base);
        m[mt][r] = mx;
        float rs = 0.f;
#pragma unroll
        for (int n = 0; n < kNt; ++n) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float pv = fast_exp2(s[mt][n][2 * r + e] - base);
            s[mt][n][2 * r + e] = pv;
            rs += pv;
          }
        }
        l[mt][r] = l[mt][r] * alpha[mt][r] + rs;  // per-thread partial; the quad sums at the end
      }
    }
    bool rescale = false;
#pragma unroll
    for (int mt = 0; mt < kM; ++mt) rescale = rescale || alpha[mt][0] != 1.f || alpha[mt][1] != 1.f;
    if (__any_sync(0xffffffffu, rescale)) {
#pragma unroll
      for (int mt = 0; mt < kM; ++mt)
#pragma unroll
        for (int i = 0; i < kDt; ++i) {
          o[mt][i][0] *= alpha[mt][0];
          o[mt][i][1] *= alpha[mt][0];
          o[mt][i][2] *= alpha[mt][1];
          o[mt][i][3] *= alpha[mt][1];
        }
    }

    __syncthreads();  // every warp is done reading K(t)
    if (t + 1 < t_end) {
      const int j1 = j0 + kBc;
      load_tile_async<D, kBc, kThreads>(sK, k_g + j1 * p.ld_k, p.ld_k, sb.kv_len - j1, tid);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();  // V(t) landed

    // O += P V: P (bf16, as HF rounds the probabilities before P.V) is the A operand directly
    // from the S accumulators; V^T fragments come from ldmatrix.trans, each serving every m-tile.
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk) {
      uint32_t a[kM][4];
#pragma unroll
      for (int mt = 0; mt < kM; ++mt) {
        a[mt][0] = pack_bf16x2(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        a[mt][1] = pack_bf16x2(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        a[mt][2] = pack_bf16x2(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        a[mt][3] = pack_bf16x2(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < kDp / 16; ++dp) {
        uint32_t bv[4];
        ldmatrix_x4_trans(bv, sV + kk * 16 * kDs * 2 + v_row + ((((dp * 2) | v_hi) ^ x7) << 4));
#pragma unroll
        for (int mt = 0; mt < kM; ++mt) {
          mma_bf16(o[mt][2 * dp], a[mt], bv[0], bv[1]);
          mma_bf16(o[mt][2 * dp + 1], a[mt], bv[2], bv[3]);
        }
      }
    }
  }
  cp_async_wait<0>();  // nothing may still be landing in sQ when it is reused below

  // Epilogue: normalize, stage this warp's rows in its own sQ rows (only this warp reads them),
  // then write 16-byte chunks of the contiguous output.
  uint8_t* sQp = smem;
#pragma unroll
  for (int mt = 0; mt < kM; ++mt) {
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float lr = l[mt][r];
      lr += __shfl_xor_sync(0xffffffffu, lr, 1);
      lr += __shfl_xor_sync(0xffffffffu, lr, 2);
      inv[r] = lr > 0.f ? 1.f / lr : 0.f;  // a query that sees no key gets zeros
    }
#pragma unroll
    for (int n = 0; n < kDt; ++n) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = warp_row + mt * 16 + g + 8 * r;
        const uint32_t val = pack_bf16x2(o[mt][n][2 * r] * inv[r], o[mt][n][2 * r + 1] * inv[r]);
        *reinterpret_cast<uint32_t*>(sQp + swz<kDs>(row, n) + t4 * 4) = val;
      }
    }
  }
  __syncwarp();
  constexpr int kChunks = Cfg::kChunks;
  const int64_t out_ld = int64_t(p.num_qo_heads) * D;
  bf16* out_g = p.out + (sb.q0 + q_begin) * out_ld + int64_t(h) * D;
#pragma unroll 4
  for (int idx = lane; idx < 16 * kM * kChunks; idx += 32) {
    const int rr = idx / kChunks, c = idx % kChunks;
    const int row = warp_row + rr;
    if (row < q_rows) {
      const uint4 val = *reinterpret_cast<const uint4*>(sQp + swz<kDs>(row, c));
      *reinterpret_cast<uint4*>(out_g + row * out_ld + c * 8) = val;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Simple path: one warp per query row; lane owns dims lane + 32 * e. Any T, any supported D.

template <typename T>
struct SimpleParams {
  const T* q;
  const T* k;
  const T* v;
  T* out;
  const int32_t* qo_indptr;
  const int32_t* kv_indptr;
  const int32_t* kv_last;
  int64_t ld_q, ld_k, ld_v;
  int total_q, total_kv;
  int num_qo_heads, group;
  float scale_log2;
  int window;
  bool causal;
};

constexpr int kSimpleWarps = 4;

// grid: (num_qo_heads, ceil(max_q_len / kSimpleWarps), batch); block: kSimpleWarps warps.
template <typename T, int D>
__global__ void __launch_bounds__(kSimpleWarps * 32)
    prefill_simple_kernel(const SimpleParams<T> p) {
  constexpr int kE = (D + 31) / 32;  // elements per lane
  constexpr int kU = 4;              // keys per step (independent reductions for ILP)
  const int h = blockIdx.x, b = blockIdx.z;
  const int lane = threadIdx.x & 31;
  const int i = blockIdx.y * kSimpleWarps + (threadIdx.x >> 5);
  const SeqBounds sb = load_seq(p.qo_indptr, p.kv_indptr, b, p.total_q, p.total_kv);
  if (i >= sb.q_len) return;
  const int kvh = h / p.group;
  const int64_t pos = int64_t(sb.kv_len) - sb.q_len + i;
  const int64_t kl = p.kv_last != nullptr ? p.kv_last[sb.q0 + i] : -1;
  int lo, hi;
  visible_range(pos, kl, sb.kv_len, p.causal, p.window, lo, hi);

  const T* qr = p.q + (sb.q0 + i) * p.ld_q + int64_t(h) * D;
  const T* kb = p.k + sb.kv0 * p.ld_k + int64_t(kvh) * D;
  const T* vb = p.v + sb.kv0 * p.ld_v + int64_t(kvh) * D;
  float qf[kE], o[kE];
#pragma unroll
  for (int e = 0; e < kE; ++e) {
    const int d = lane + 32 * e;
    qf[e] = d < D ? to_f32(qr[d]) * p.scale_log2 : 0.f;
    o[e] = 0.f;
  }
  float m = kNegInf, l = 0.f;
  for (int j = lo; j < hi; j += kU) {
    float s[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      float acc = 0.f;
      if (j + u < hi) {
        const T* kr = kb + int64_t(j + u) * p.ld_k;
#pragma unroll
        for (int e = 0; e < kE; ++e) {
          const int d = lane + 32 * e;
          if (d < D) acc = fmaf(qf[e], to_f32(kr[d]), acc);
        }
      }
      s[u] = acc;
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
#pragma unroll
      for (int u = 0; u < kU; ++u) s[u] += __shfl_xor_sync(0xffffffffu, s[u], off);
    }
    float mx = m;
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      if (j + u >= hi) s[u] = kNegInf;
      mx = fmaxf(mx, s[u]);
    }
    const float alpha = fast_exp2(m - mx);  // mx is finite: key j is visible
    m = mx;
    l *= alpha;
#pragma unroll
    for (int e = 0; e < kE; ++e) o[e] *= alpha;
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      if (j + u < hi) {
        const float pu = fast_exp2(s[u] - mx);
        l += pu;
        const T* vr = vb + int64_t(j + u) * p.ld_v;
#pragma unroll
        for (int e = 0; e < kE; ++e) {
          const int d = lane + 32 * e;
          if (d < D) o[e] = fmaf(pu, to_f32(vr[d]), o[e]);
        }
      }
    }
  }
  const float inv = l > 0.f ? 1.f / l : 0.f;
  T* orow = p.out + ((sb.q0 + i) * p.num_qo_heads + h) * int64_t(D);
#pragma unroll
  for (int e = 0; e < kE; ++e) {
    const int d = lane + 32 * e;
    if (d < D) orow[d] = from_f32<T>(o[e] * inv);
  }
}

// ---------------------------------------------------------------------------------------------
// Host side.

template <int D, int kWarps, int kMinBlocks, int kM = 1>
Status launch_mma(const PrefillParams& p, int64_t batch, int64_t max_q_len, cudaStream_t stream) {
  using Cfg = MmaCfg<D, kWarps, kM>;
  int64_t tiles = 0;
  G3_RETURN_IF_ERROR(q_tile_count(max_q_len, Cfg::kBr, &tiles));
  auto kernel = prefill_mma_kernel<D, kWarps, kMinBlocks, kM>;
  G3_CUDA_RETURN(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes));
  G3_CUDA_RETURN(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                      cudaSharedmemCarveoutMaxShared));
  const dim3 grid(unsigned(p.num_qo_heads), unsigned(tiles), unsigned(batch));
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p);
  return check_launch("attention_prefill (mma)");
}

template <typename T, int D>
Status launch_simple(const SimpleParams<T>& p, int64_t batch, int64_t max_q_len,
                     cudaStream_t stream) {
  int64_t rows = 0;  // a warp a query row
  G3_RETURN_IF_ERROR(q_tile_count(max_q_len, kSimpleWarps, &rows));
  const dim3 grid(unsigned(p.num_qo_heads), unsigned(rows), unsigned(batch));
  prefill_simple_kernel<T, D><<<grid, kSimpleWarps * 32, 0, stream>>>(p);
  return check_launch("attention_prefill (simple)");
}

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

Status invalid(const std::string& msg) {
  return Status(StatusCode::kInvalidArgument, "attention_prefill: " + msg);
}

}  // namespace

template <typename T>
Status attention_prefill(const T* q, const T* k, const T* v, T* out, const int32_t* qo_indptr,
                         const int32_t* kv_indptr, const int32_t* kv_last, int64_t batch,
                         int64_t total_q, int64_t total_kv, int64_t max_q_len, int64_t num_qo_heads,
                         int64_t num_kv_heads, int64_t head_dim, int64_t ld_q, int64_t ld_k,
                         int64_t ld_v, float sm_scale, int32_t window, bool causal,
                         cudaStream_t stream) {
  const int64_t D = head_dim;
  if (D != 16 && D != 32 && D != 64 && D != 72 && D != 128 && D != 256) {
    return Status(StatusCode::kUnsupported,
                  "attention_prefill: Unsupported head_dim: " + std::to_string(D));
  }
  if (batch < 0 || total_q < 0 || total_kv < 0 || max_q_len < 0) {
    return invalid("batch " + std::to_string(batch) + ", total_q " + std::to_string(total_q) +
                   ", total_kv " + std::to_string(total_kv) + " and max_q_len " +
                   std::to_string(max_q_len) + " must be >= 0");
  }
  if (num_qo_heads <= 0 || num_kv_heads <= 0 || num_qo_heads % num_kv_heads != 0 ||
      num_qo_heads > 65535) {
    return invalid("num_qo_heads " + std::to_string(num_qo_heads) +
                   " must be a positive multiple of num_kv_heads " + std::to_string(num_kv_heads) +
                   " (at most 65535)");
  }
  if (ld_q < num_qo_heads * D || ld_k < num_kv_heads * D || ld_v < num_kv_heads * D) {
    return invalid("token strides ld_q " + std::to_string(ld_q) + ", ld_k " + std::to_string(ld_k) +
                   ", ld_v " + std::to_string(ld_v) + " are smaller than heads * head_dim");
  }
  if (window < 0) return invalid("window " + std::to_string(window) + " must be >= 0");
  if (!causal && (window != 0 || kv_last != nullptr)) {
    return invalid("non-causal attention takes window 0 and no kv_last");
  }
  if (!std::isfinite(sm_scale)) {
    return invalid("sm_scale " + std::to_string(sm_scale) + " must be finite");
  }
  if (batch > 65535) return invalid("batch " + std::to_string(batch) + " exceeds 65535");
  if (batch == 0 || total_q == 0 || max_q_len == 0) return Status::Ok();  // no row to write
  if (q == nullptr || k == nullptr || v == nullptr || out == nullptr || qo_indptr == nullptr ||
      kv_indptr == nullptr) {
    return invalid("null pointer argument");
  }
  const int group = int(num_qo_heads / num_kv_heads);
  const float scale_log2 = sm_scale * kLog2e;
  // indptr entries are int32, so clamping them to INT_MAX rows loses nothing.
  const int tq = int(std::min<int64_t>(total_q, INT_MAX));
  const int tkv = int(std::min<int64_t>(total_kv, INT_MAX));

  if constexpr (std::is_same_v<T, bf16>) {
    const bool vec_ok = aligned16(q) && aligned16(k) && aligned16(v) && aligned16(out) &&
                        ld_q % 8 == 0 && ld_k % 8 == 0 && ld_v % 8 == 0;
    if (vec_ok && D >= 64) {
      const PrefillParams p{
          q,          k,           v,     out, qo_indptr, kv_indptr,         kv_last,
          ld_q,       ld_k,        ld_v,  tq,  tkv,       int(num_qo_heads), group,
          scale_log2, int(window), causal};
      // D 256: 64-row tiles, 4 warps, 96 KB smem, 2 CTAs/SM (O alone is 128 f32 regs/thread).
      // D 128 / 64: 64-row tiles, 4 warps, 48 / 24 KB smem, 3-4 CTAs/SM.
      // D 72: 128-row tiles, 4 warps of 32 rows (two m-tiles share each K/V fragment), 64 KB.
      // D 256 / 128 on sm_90a: the wgmma kernel (attention_prefill_sm90.cu) unless
      // GEMMA3_ATTN_WGMMA=0; it takes row maxima of unscaled scores, so sm_scale > 0.
      if ((D == 256 || D == 128) && scale_log2 > 0.f && wgmma_available()) {
        return launch_wgmma(p, int(D), batch, max_q_len, stream);
      }
      if (D == 256) return launch_mma<256, 4, 2>(p, batch, max_q_len, stream);
      if (D == 128) return launch_mma<128, 4, 3>(p, batch, max_q_len, stream);
      if (D == 72) {
        // GEMMA3_ATTN_D72_TILE=64 picks 64-row tiles (16 rows per warp), for A/B benchmarks.
        static const bool rows64 = env_is("GEMMA3_ATTN_D72_TILE", "64");
        if (rows64) return launch_mma<72, 4, 3>(p, batch, max_q_len, stream);
        return launch_mma<72, 4, 2, 2>(p, batch, max_q_len, stream);
      }
      return launch_mma<64, 4, 4>(p, batch, max_q_len, stream);
    }
  }
  const SimpleParams<T> p{
      q,          k,           v,     out, qo_indptr, kv_indptr,         kv_last,
      ld_q,       ld_k,        ld_v,  tq,  tkv,       int(num_qo_heads), group,
      scale_log2, int(window), causal};
  switch (D) {
    case 16:
      return launch_simple<T, 16>(p, batch, max_q_len, stream);
    case 32:
      return launch_simple<T, 32>(p, batch, max_q_len, stream);
    case 64:
      return launch_simple<T, 64>(p, batch, max_q_len, stream);
    case 72:
      return launch_simple<T, 72>(p, batch, max_q_len, stream);
    case 128:
      return launch_simple<T, 128>(p, batch, max_q_len, stream);
    default:
      return launch_simple<T, 256>(p, batch, max_q_len, stream);
  }
}

template Status attention_prefill<float>(const float*, const float*, const float*, float*,
                                         const int32_t*, const int32_t*, const int32_t*, int64_t,
                                         int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                         int64_t, int64_t, int64_t, float, int32_t, bool,
                                         cudaStream_t);
template Status attention_prefill<bf16>(const bf16*, const bf16*, const bf16*, bf16*,
                                        const int32_t*, const int32_t*, const int32_t*, int64_t,
                                        int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                        int64_t, int64_t, int64_t, float, int32_t, bool,
                                        cudaStream_t);

}  // namespace gemma3::cuda
