// CUDA per-head RMSNorm of q and k, then RoPE, with v passed through (kernels.inc qk_norm_rope).
// A CTA takes one token and kWarps of its heads (q heads, then k heads, then v heads to copy); its
// first head_dim/2 threads compute T(cos)/T(sin) once, as rope.cu does. A warp owns a head: it
// sums the squares in norm.cu's warp-per-row order (vector i = lane + 32·m, the same V, the same
// butterfly), stages the rounded normed head in shared memory, then rotates the (i, i + half)
// pairs with rope.cu's arithmetic. So the output equals rmsnorm then rope bit for bit wherever
// rmsnorm gives the head one warp too (16-byte-aligned heads of <= 128 vectors; unaligned heads of
// more than 128 scalars it sums per CTA), and in place is safe: a warp reads its head first.
// Also here: matmul_qk_norm_rope's launcher (the QKV projection, then this kernel; or, opt-in, one
// GEMV whose epilogue runs the same per-head code, matmul_gemv.cu).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/qk_norm_rope.cuh"
#include "kernels/cuda/vec.cuh"
#include "runtime/env.h"

namespace gemma3::cuda {
namespace {

using qknr::kMaxHeadDim;
using qknr::kRegVec;
constexpr int kWarps = 4;  // heads per CTA: 4B's 16 (8 q, 4 k, 4 v) heads a token fill 4 CTAs
constexpr int64_t kMaxGrid = 1 << 30;  // token blocks; CTAs loop over the remaining tokens

using vec::aligned16;
using vec::load_f32;

struct Args {
  int64_t tokens, ld_q, ld_k, ld_v;
  const int32_t* kv_rows;  // null: k/v row t; else the KV cache row (kernels.inc)
  int64_t kv_capacity;
  int q_heads, kv_heads, heads, head_dim;  // heads: the CTA's work per token (v included or not)
  float eps, base, scale;
  bool early_inv;  // RoPE's inv_freq before pdl_wait (GEMMA3_ROPE_EARLY, default on)
};

// grid: (token blocks, ceil(heads / kWarps)); blockDim = 32 * kWarps. V elements per vector load
// (norm.cu's rule: head_dim % V == 0 and 16-byte pointers and strides, else 1).
// Latency (a decode step runs this once a layer on one token): the head's norm weight loads before
// pdl_wait (no kernel of a step writes weights); after it, the head's values and the token's
// position load together, and the cos/sin arithmetic runs while they are in flight. The per-head
// arithmetic is qk_norm_rope.cuh's (shared with the decode QKV GEMV's epilogue).

template <typename T, int V>
__global__ void __launch_bounds__(32 * kWarps)
    qk_norm_rope_kernel(const T* q, const T* k, const T* v, const T* __restrict__ q_w,
                        const T* __restrict__ k_w, const int32_t* __restrict__ positions, T* q_out,
                        T* k_out, T* v_out, Args a) {
  __shared__ float cs[kMaxHeadDim / 2], sn[kMaxHeadDim / 2], inv[kMaxHeadDim / 2];
  __shared__ float xs[kWarps][kMaxHeadDim];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int D = a.head_dim, nvec = D / V;
  const int gh = blockIdx.y * kWarps + warp;  // this warp's head among the token's work
  const bool is_q = gh < a.q_heads, is_k = !is_q && gh < a.q_heads + a.kv_heads;
  const int h = is_q ? gh : (is_k ? gh - a.q_heads : gh - a.q_heads - a.kv_heads);
  const T* w = is_q ? q_w : k_w;
  float wr[kRegVec][V];
  if (is_q || is_k) {
#pragma unroll
    for (int m = 0; m < kRegVec; ++m) {
      const int i = lane + 32 * m;
      if (i < nvec) load_f32<T, V>(w + i * V, wr[m]);
    }
  }
  // RoPE's inv_freq depends on no step input: its double-precision pow runs while the kernel
  // before this one finishes. Each thread keeps the entries it later turns into cos / sin (no
  // barrier needed).
  if (a.early_inv)
    for (int i = tid; i < D / 2; i += blockDim.x)
      inv[i] = qknr::rope_inv_freq(i, D, a.base, a.scale);
  pdl_wait();  // pdl.cuh: q, k, v (and positions, kv_rows) may come from the kernels before
  pdl_trigger();
  for (int64_t t = blockIdx.x; t < a.tokens; t += gridDim.x) {
    const T* src = is_q
                       ? q + t * a.ld_q + int64_t(h) * D
                       : (is_k ? k + t * a.ld_k + int64_t(h) * D : v + t * a.ld_v + int64_t(h) * D);
    float f[kRegVec][V];
    if (is_q || is_k) {
#pragma unroll
      for (int m = 0; m < kRegVec; ++m) {
        const int i = lane + 32 * m;
        if (i < nvec) load_f32<T, V>(src + i * V, f[m]);
      }
    }
    // k and v go to row t, or to the token's KV cache row (out of range: not written).
    const int64_t row = a.kv_rows ? int64_t(a.kv_rows[t]) : t;
    const bool kv_ok = !a.kv_rows || (row >= 0 && row < a.kv_capacity);
    if (a.early_inv) {
      const float pos = float(positions[t]);
      for (int i = tid; i < D / 2; i += blockDim.x)
        qknr::rope_entry<T>(pos, inv[i], cs + i, sn + i);
    } else {
      qknr::rope_table<T>(float(positions[t]), D, a.base, a.scale, cs, sn, tid, blockDim.x);
    }
    __syncthreads();
    if (is_q || (is_k && kv_ok)) {
      T* dst = is_q ? q_out + (t * a.q_heads + h) * D : k_out + (row * a.kv_heads + h) * D;
      qknr::norm_rope_head<T, V, false>(src, f, w, wr, dst, xs[warp], cs, sn, D, a.eps, lane);
    } else if (!is_q && !is_k && gh < a.heads && kv_ok) {  // v head: a copy
      qknr::copy_head<T, V, false>(src, v_out + (row * a.kv_heads + h) * D, nvec, lane);
    }
    __syncthreads();  // cs/sn and xs are rewritten for the next token
  }
}

template <typename T, int V>
Status launch(const T* q, const T* k, const T* v, const T* q_w, const T* k_w,
              const int32_t* positions, T* q_out, T* k_out, T* v_out, const Args& a,
              cudaStream_t stream) {
  const dim3 grid(unsigned(a.tokens < kMaxGrid ? a.tokens : kMaxGrid),
                  unsigned((a.heads + kWarps - 1) / kWarps));
  launch_pdl(qk_norm_rope_kernel<T, V>, grid, 32 * kWarps, 0, stream, q, k, v, q_w, k_w, positions,
             q_out, k_out, v_out, a);
  return check_launch("qk_norm_rope");
}

}  // namespace

template <typename T>
Status qk_norm_rope(const T* q, const T* k, const T* v, const T* q_w, const T* k_w,
                    const int32_t* positions, T* q_out, T* k_out, T* v_out, const int32_t* kv_rows,
                    int64_t kv_capacity, int64_t tokens, int64_t q_heads, int64_t kv_heads,
                    int64_t head_dim, int64_t ld_q, int64_t ld_k, int64_t ld_v, float eps,
                    float base, float scale, cudaStream_t stream) {
  const bool copy_v = v_out != nullptr && v_out != v;
  if (tokens < 0 || q_heads <= 0 || kv_heads <= 0 || q_heads + 2 * kv_heads > 65535 * kWarps ||
      (kv_rows && kv_capacity < 0) || head_dim <= 0 || head_dim % 2 != 0 ||
      head_dim > kMaxHeadDim || ld_q < q_heads * head_dim || ld_k < kv_heads * head_dim ||
      (copy_v && ld_v < kv_heads * head_dim) || !(eps >= 0.0f) || !(base > 0.0f) ||
      !std::isfinite(base) || !(scale > 0.0f) || !std::isfinite(scale)) {
    return Status(StatusCode::kInvalidArgument,
                  "qk_norm_rope: need tokens >= 0, heads > 0, even 0 < head_dim <= 512, token "
                  "strides covering the heads, eps >= 0, finite base and scale > 0 (tokens=" +
                      std::to_string(tokens) + ", q_heads=" + std::to_string(q_heads) +
                      ", kv_heads=" + std::to_string(kv_heads) +
                      ", head_dim=" + std::to_string(head_dim) + ", ld_q=" + std::to_string(ld_q) +
                      ", ld_k=" + std::to_string(ld_k) + ", ld_v=" + std::to_string(ld_v) + ")");
  }
  if (tokens == 0) return Status::Ok();
  if (!q || !k || !q_w || !k_w || !positions || !q_out || !k_out || (copy_v && !v))
    return Status(StatusCode::kInvalidArgument, "qk_norm_rope: null pointer");
  static const bool early = !env_is("GEMMA3_ROPE_EARLY", "0");
  const Args a{tokens,        ld_q,          ld_k,
               ld_v,          kv_rows,       kv_capacity,
               int(q_heads),  int(kv_heads), int(q_heads + (copy_v ? 2 : 1) * kv_heads),
               int(head_dim), eps,           base,
               scale,         early};
  constexpr int V = 16 / sizeof(T);
  // norm.cu's vector rule (dim % V, 16-byte pointers), so the sums take rmsnorm's order.
  bool vec = head_dim % V == 0 && ld_q % V == 0 && ld_k % V == 0 && aligned16(q) && aligned16(k) &&
             aligned16(q_w) && aligned16(k_w) && aligned16(q_out) && aligned16(k_out);
  if (copy_v) vec = vec && ld_v % V == 0 && aligned16(v) && aligned16(v_out);
  if (vec) return launch<T, V>(q, k, v, q_w, k_w, positions, q_out, k_out, v_out, a, stream);
  return launch<T, 1>(q, k, v, q_w, k_w, positions, q_out, k_out, v_out, a, stream);
}

namespace detail {
int64_t bf16_gemv_max_m();  // matmul.cu: rows up to which bf16 matmul takes the GEMV
template <typename T>       // matmul_gemv.cu: the GEMV with the QKV epilogue
Status gemv_qk(const T* x, const T* w, T* y, int64_t M, int64_t K, const qknr::QkEpilogue<T>& qk,
               cudaStream_t stream);
}  // namespace detail

namespace {
// True only when GEMMA3_QKV_EPILOGUE=1 (read once): the one-launch GEMV is opt-in. It passes every
// case bit for bit, but lost its H100 A/Bs with PDL on (4B 293 -> 281 tok/s, 1B -1%): the head's
// norm and rotation after a grid-wide count is a serial tail longer than the qk_norm_rope launch
// it saves (docs/kernels.md, session 6).
bool qkv_epilogue_enabled() {
  static const bool on = env_is("GEMMA3_QKV_EPILOGUE", "1");
  return on;
}
}  // namespace

template <typename T>
Status matmul_qk_norm_rope(const T* x, const T* w, T* qkv, const T* q_w, const T* k_w,
                           const int32_t* positions, T* q_out, T* k_out, T* v_out,
                           const int32_t* kv_rows, int64_t kv_capacity, int64_t M, int64_t K,
                           int64_t q_heads, int64_t kv_heads, int64_t head_dim, float eps,
                           float base, float scale, cudaStream_t stream) {
  const int64_t heads = q_heads + 2 * kv_heads, N = heads * head_dim;
  constexpr int V = 16 / sizeof(T);
  // The one-launch GEMV only where the two launches would be matmul's GEMV and qk_norm_rope's
  // vector kernel: then both sum and round in the same order (same bits).
  const int64_t gemv_m = std::is_same_v<T, bf16> ? detail::bf16_gemv_max_m() : 8;
  const bool ptrs = x && w && qkv && q_w && k_w && positions && q_out && k_out;
  const bool fused = qkv_epilogue_enabled() && ptrs && M >= 1 && M <= gemv_m && K >= 1 &&
                     K % V == 0 && q_heads > 0 && kv_heads > 0 && M * heads <= 8 * 1024 &&
                     head_dim >= 16 && head_dim <= qknr::kMaxHeadDim && head_dim % V == 0 &&
                     (!kv_rows || kv_capacity >= 0) && eps >= 0.0f && base > 0.0f &&
                     std::isfinite(base) && scale > 0.0f && std::isfinite(scale) && aligned16(x) &&
                     aligned16(w) && aligned16(qkv) && aligned16(q_w) && aligned16(k_w) &&
                     aligned16(q_out) && aligned16(k_out) && (!v_out || aligned16(v_out));
  if (fused) {
    const qknr::QkEpilogue<T> e{q_w,           k_w,     positions,   q_out,        k_out,
                                v_out,         kv_rows, kv_capacity, int(q_heads), int(kv_heads),
                                int(head_dim), eps,     base,        scale};
    return detail::gemv_qk<T>(x, w, qkv, M, K, e, stream);
  }
  G3_RETURN_IF_ERROR((matmul<T, T>(x, w, nullptr, qkv, M, N, K, stream)));
  return qk_norm_rope<T>(qkv, qkv + q_heads * head_dim, qkv + (q_heads + kv_heads) * head_dim, q_w,
                         k_w, positions, q_out, k_out, v_out, kv_rows, kv_capacity, M, q_heads,
                         kv_heads, head_dim, N, N, N, eps, base, scale, stream);
}

#define G3_QK_NORM_ROPE(T)                                                                      \
  template Status qk_norm_rope<T>(const T*, const T*, const T*, const T*, const T*,             \
                                  const int32_t*, T*, T*, T*, const int32_t*, int64_t, int64_t, \
                                  int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float,  \
                                  float, float, cudaStream_t);                                  \
  template Status matmul_qk_norm_rope<T>(                                                       \
      const T*, const T*, T*, const T*, const T*, const int32_t*, T*, T*, T*, const int32_t*,   \
      int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float, float, float, cudaStream_t);
G3_QK_NORM_ROPE(float)
G3_QK_NORM_ROPE(bf16)
#undef G3_QK_NORM_ROPE

}  // namespace gemma3::cuda
