// Shared by the prefill attention kernels (attention_prefill.cu: FlashAttention-2 style mma.sync
// and the simple path; attention_prefill_sm90.cu: Hopper wgmma): the kernel parameters, each
// sequence's bounds, each query's visible key range and the per-tile reductions over them.
#pragma once
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <string>

#include "kernels/cuda/cuda_kernels.h"
#include "runtime/status.h"

namespace gemma3::cuda::prefill {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kNegInf = -__builtin_huge_valf();

__device__ __forceinline__ int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

__device__ __forceinline__ float fast_exp2(float x) {  // ex2(-inf) = +0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Visible key range [lo, hi) of a query at position p (0-based key index within its sequence).
// Causal: keys <= max(p, kv_last); window > 0 also requires key > p - window; always key < kv_len.
// The union of the causal prefix and the bidirectional span is a prefix, so the range is
// contiguous.
__device__ __forceinline__ void visible_range(int64_t p, int64_t kv_last, int kv_len, bool causal,
                                              int window, int& lo, int& hi) {
  int64_t l = 0, h = kv_len;
  if (causal) {
    h = min64(h, max64(p, kv_last) + 1);
    if (window > 0) l = max64(0, p - window + 1);
  }
  h = max64(h, 0);
  lo = int(min64(l, h));
  hi = int(h);
}

struct SeqBounds {
  int64_t q0, kv0;
  int q_len, kv_len;
};

// Every indptr entry is clamped into [0, total] (the rows of q/out or k/v), and an inverted range
// is empty, so no garbage index can reach a row outside the tensors.
__device__ __forceinline__ SeqBounds load_seq(const int32_t* qo_indptr, const int32_t* kv_indptr,
                                              int b, int total_q, int total_kv) {
  SeqBounds s;
  const int q0 = min(max(qo_indptr[b], 0), total_q), q1 = min(max(qo_indptr[b + 1], 0), total_q);
  const int k0 = min(max(kv_indptr[b], 0), total_kv), k1 = min(max(kv_indptr[b + 1], 0), total_kv);
  s.q0 = q0;
  s.kv0 = k0;
  s.q_len = max(q1 - q0, 0);
  s.kv_len = max(k1 - k0, 0);
  return s;
}

// Two floats to bf16x2 (round to nearest even); lo lands in the low half (lower column index).
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

struct PrefillParams {
  const bf16* q;
  const bf16* k;
  const bf16* v;
  bf16* out;
  const int32_t* qo_indptr;
  const int32_t* kv_indptr;
  const int32_t* kv_last;
  int64_t ld_q, ld_k, ld_v;
  int total_q, total_kv;    // rows of q/out and k/v (clamped to INT_MAX, as indptr is int32)
  int num_qo_heads, group;  // group = num_qo_heads / num_kv_heads
  float scale_log2;         // sm_scale * log2(e)
  int window;
  bool causal;
};

// Visible ranges of the kRows query rows of a q tile starting at row q_begin (q_rows of them
// valid), one row a thread for tid < kRows, into s_lo / s_hi; a row past q_rows sees nothing.
// s_red[warp] gets that warp's reductions: {min lo, max hi} over rows that see a key (bounds of
// the key tiles worth visiting) and {max lo, min hi} over valid rows (a key tile inside
// [max lo, min hi) is visible to every row and needs no mask).
template <int kRows>
__device__ __forceinline__ void tile_row_bounds(const PrefillParams& p, const SeqBounds& sb,
                                                int q_begin, int q_rows, int tid, int* s_lo,
                                                int* s_hi, int (*s_red)[4]) {
  static_assert(kRows % 32 == 0, "whole warps compute the row bounds");
  if (tid >= kRows) return;
  int lo = 0, hi = 0;
  const bool row_ok = tid < q_rows;
  if (row_ok) {
    const int i = q_begin + tid;
    const int64_t pos = int64_t(sb.kv_len) - sb.q_len + i;
    const int64_t kl = p.kv_last != nullptr ? p.kv_last[sb.q0 + i] : -1;
    visible_range(pos, kl, sb.kv_len, p.causal, p.window, lo, hi);
  }
  s_lo[tid] = lo;
  s_hi[tid] = hi;
  const bool nonempty = row_ok && lo < hi;
  const int r0 = __reduce_min_sync(0xffffffffu, nonempty ? lo : INT_MAX);
  const int r1 = __reduce_max_sync(0xffffffffu, nonempty ? hi : INT_MIN);
  const int r2 = __reduce_max_sync(0xffffffffu, row_ok ? lo : INT_MIN);
  const int r3 = __reduce_min_sync(0xffffffffu, row_ok ? hi : INT_MAX);
  if ((tid & 31) == 0) {
    s_red[tid >> 5][0] = r0;
    s_red[tid >> 5][1] = r1;
    s_red[tid >> 5][2] = r2;
    s_red[tid >> 5][3] = r3;
  }
}

// The reductions of warps [w0, w1) combined: lo_min, hi_max, lo_max, hi_min.
struct TileBounds {
  int lo_min = INT_MAX, hi_max = INT_MIN, lo_max = INT_MIN, hi_min = INT_MAX;
  __device__ __forceinline__ TileBounds(const int (*s_red)[4], int w0, int w1) {
    for (int w = w0; w < w1; ++w) {
      lo_min = min(lo_min, s_red[w][0]);
      hi_max = max(hi_max, s_red[w][1]);
      lo_max = max(lo_max, s_red[w][2]);
      hi_min = min(hi_min, s_red[w][3]);
    }
  }
  __device__ __forceinline__ bool any() const { return lo_min < hi_max; }
};

// q tiles of kBr rows covering max_q_len (a grid's y dimension, so at most 65535), for every
// prefill launcher.
inline Status q_tile_count(int64_t max_q_len, int kBr, int64_t* tiles) {
  *tiles = (max_q_len + kBr - 1) / kBr;
  if (*tiles > 65535) {
    return Status(StatusCode::kInvalidArgument,
                  "attention_prefill: max_q_len " + std::to_string(max_q_len) + " too large");
  }
  return Status::Ok();
}

// The sm_90a wgmma kernel for head_dim 128 / 256 (attention_prefill_sm90.cu). Whether it runs:
// wgmma_available() (the build has sm_90a code, the current device is compute capability 9.0, and
// GEMMA3_ATTN_WGMMA is not 0).
bool wgmma_available();
Status launch_wgmma(const PrefillParams& p, int head_dim, int64_t batch, int64_t max_q_len,
                    cudaStream_t stream);

}  // namespace gemma3::cuda::prefill
