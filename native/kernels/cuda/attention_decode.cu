// Decode attention over a paged NHD KV cache (contract: kernels/kernels.inc, attention_decode).
//
// Flash-decoding: grid (split, kv head x head chunk, sequence). A CTA covers one chunk of a
// sequence's visible keys for up to kGh qo heads of one GQA group, so K/V rows are read once for
// the group. Threads form key groups of kTpk lanes; a key group reads one K and one V row with
// 16-byte pieces (kVec elements per lane), streamed through a per-lane cp.async ring in shared
// memory (kStages stages of kU keys per lane), and keeps its own online softmax state; the key
// groups merge through shared memory. With several splits the CTA writes an unnormalized partial
// (o, max, sum) per split and a combine kernel merges the splits; with one split (no workspace, or
// a short context) the CTA writes the output directly. The host plans the split count for
// max_kv_len (a captured graph's bound); each split's chunk follows the keys a sequence has when
// the kernel runs (seq_keys), so splits past them exit and the combine skips them.
// fp8 e4m3 caches: a 16-byte load carries 16 elements, so a lane takes 16 of a row (key groups of
// D / 16 lanes); k_scale is folded into q and v_scale into the partial o, so the loop is the same.
// attention_decode_qkv (kQkv): the same kernel with qk_norm_rope's work as its prologue (below,
// "The prologue").
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "kernels/cuda/attention_decode.h"
#include "kernels/cuda/cp_async.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/qk_norm_rope.cuh"
#include "kernels/cuda/vec.cuh"
#include "runtime/env.h"

namespace gemma3::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kNegInf = -__builtin_huge_valf();
constexpr int kThreads = 128;
// Split planning; attention_decode_workspace_floats uses the same constants.
constexpr int64_t kMaxSplits = 512;  // splits per sequence at most (GEMMA3_DECODE_MAX_SPLITS)
constexpr int64_t kMaxCtas = 2048;   // split CTAs at most (bounds the workspace by batch)
// Above this many splits the combine merges slices of 32 dims, not 64 (twice the CTAs, so each
// thread's walk over the splits stays as long as at 128).
constexpr int64_t kCombineWideSplits = 128;

// Keys per split at least: 16, or GEMMA3_DECODE_MIN_CHUNK = 16 / 32 / 64 (read once). Session 7,
// H100, graph-timed, 64 -> 16: 128 keys 7.27 -> 4.64 µs (4B shape), 8.35 -> 5.27 (1B: one KV head,
// one CTA a split), 1024 keys 7.81 -> 6.35 / 8.53 -> 6.14; decode 1B 741 -> 787, 4B 295 -> 302
// tok/s. Batch 16 at 1024 keys and the 27B shape at 1024 keys lose 4-10% (more splits than SMs
// need); docs/kernels.md.
int64_t min_chunk() {
  static const int64_t v = [] {
    const long n = env_long("GEMMA3_DECODE_MIN_CHUNK");
    return n == 16 || n == 32 || n == 64 ? int64_t(n) : int64_t(16);
  }();
  return v;
}

// Splits per sequence at most: kMaxSplits, or GEMMA3_DECODE_MAX_SPLITS = 16..512 (read once; A/Bs).
// Session 15, H100: 128 capped the 1B's single KV head at batch 1 to 128 CTAs for 132 SMs (32K
// keys at 36% of the copy rate); the cap now leaves the one-wave rule (plan_pipe) to decide.
int64_t max_splits_cap() {
  static const int64_t v = [] {
    const long n = env_long("GEMMA3_DECODE_MAX_SPLITS");
    return n >= 16 && n <= kMaxSplits ? int64_t(n) : kMaxSplits;
  }();
  return v;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int64_t max_splits(int64_t batch, int64_t kv_len) {
  if (batch <= 0 || kv_len <= 0) return 1;
  return std::max<int64_t>(
      1, std::min({ceil_div(kv_len, min_chunk()), max_splits_cap(), ceil_div(kMaxCtas, batch)}));
}

__device__ __forceinline__ float fast_exp2(float x) {  // ex2(-inf) = +0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// 16 bytes of T to floats.
__device__ __forceinline__ void unpack(const uint4& u, float* f, bf16) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}
__device__ __forceinline__ void unpack(const uint4& u, float* f, float) {
  f[0] = __uint_as_float(u.x);
  f[1] = __uint_as_float(u.y);
  f[2] = __uint_as_float(u.z);
  f[3] = __uint_as_float(u.w);
}
// 16 e4m3 bytes: e4m3 -> f16 (hardware cvt, sm_89+) and f16 -> f32 are both exact.
__device__ __forceinline__ void unpack(const uint4& u, float* f, fp8e4m3) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const __half2_raw r = __nv_cvt_fp8x2_to_halfraw2(
          static_cast<__nv_fp8x2_storage_t>((w[i] >> (16 * h)) & 0xffffu), __NV_E4M3);
      const float2 v = __half22float2(__half2(r));
      f[4 * i + 2 * h] = v.x;
      f[4 * i + 2 * h + 1] = v.y;
    }
  }
}

// T: q/out element type; TKV: cache element type (T, or fp8e4m3).
template <typename T, typename TKV, int D, int kGh>
struct DecodeCfg {
  static constexpr bool kFp8 = std::is_same_v<TKV, fp8e4m3>;
  static constexpr int kPer16 = 16 / int(sizeof(TKV));            // KV elements per 16-byte load
  static constexpr int kPerQ = 16 / int(sizeof(T));               // q elements per 16-byte load
  static constexpr int kVec = D / 32 > kPer16 ? D / 32 : kPer16;  // elements per lane per row
  static constexpr int kNv = kVec / kPer16;                       // 16-byte loads per lane per row
  static constexpr int kNq = kVec / kPerQ;                        // 16-byte q loads per lane
  static constexpr int kTpk = D / kVec;                           // lanes per key (<= 32)
  static constexpr int kGroups = kThreads / kTpk;                 // key groups per CTA
  static_assert(kTpk >= 1 && kTpk <= 32 && (kTpk & (kTpk - 1)) == 0, "bad key group");
  static_assert(!kFp8 || kGh <= 4, "fp8 caches take at most 4 heads per CTA (registers)");
};

struct DecodeParams {
  const void* q;
  const void* k_cache;
  const void* v_cache;
  void* out;
  const int32_t* kv_indptr;
  const int32_t* kv_indices;
  const int32_t* kv_len;
  float* ws_o;   // [batch, num_qo_heads, splits, head_dim] or null (no split)
  float* ws_ml;  // [batch, num_qo_heads, splits, 2] (max in log2 units, sum)
  int num_qo_heads, num_kv_heads, group, head_chunks;
  int page_size;
  int page_shift;      // log2(page_size) when a power of two, else -1
  uint32_t num_pages;  // min(num_pages, 2^31): uint32_t(page) < num_pages rejects negatives too
  int num_indices;     // entries of kv_indices (clamped to INT_MAX, as kv_indptr is int32)
  int chunk, splits;   // keys per split (of the visible range), number of splits
  int min_chunk;       // keys a split at least (min_chunk()): the runtime chunk's floor
  float scale_log2;    // sm_scale * log2(e) * k_scale
  int window;
  float v_scale;  // applied to the partial o (fp8 caches; 1 otherwise)
  bool pdl;       // launched with PDL: prefetch the first stages' K/V rows before pdl_wait
};

// Sequence b's keys and its split chunk, as the split kernel and the combine both see them. The
// keys: at most its pages hold; window keeps the last `window` of them; both kv_indptr entries
// are clamped into [0, num_indices], so the page list stays inside kv_indices. The chunk: the
// plan's (made for max_kv_len, e.g. a cache's capacity) shrunk to the keys the sequence has now,
// in whole 16-key steps of at least min_chunk, so a long-context cache holding a short sequence
// still spreads it over its splits (session 15: the plan's chunk left them idle). The last split
// also takes keys past max_kv_len, so a kv_len above the bound still counts.
struct SeqKeys {
  int pg0, len, start, chunk, active;  // active: splits with keys (the rest are empty)
};
__device__ __forceinline__ SeqKeys seq_keys(const DecodeParams& p, int b) {
  SeqKeys k;
  const int ip0 = __ldg(p.kv_indptr + b), ip1 = __ldg(p.kv_indptr + b + 1);
  const int kvl = __ldg(p.kv_len + b);
  k.pg0 = min(max(ip0, 0), p.num_indices);
  const int64_t npages = max(min(max(ip1, 0), p.num_indices) - k.pg0, 0);
  k.len = int(min(int64_t(max(kvl, 0)), npages * p.page_size));
  k.start = p.window > 0 ? max(0, k.len - p.window) : 0;
  const int vis = k.len - k.start;
  k.chunk = p.chunk;
  if (p.splits > 1) {
    const int want = (vis + p.splits - 1) / p.splits;
    k.chunk = min(p.chunk, max(p.min_chunk, (want + 15) / 16 * 16));
  }
  k.active = k.chunk > 0 ? min(p.splits, max(1, (vis + k.chunk - 1) / k.chunk)) : 1;
  return k;
}

// The prologue (attention_decode_qkv): what the kernel needs to make q and the new K/V rows from
// the step's projection rows itself, as qk_norm_rope would (kernels.inc).
template <typename T>
struct QkvPrologue {
  const T* qkv;  // [batch, ld]: [q | k | v] per row
  const T* q_w;
  const T* k_w;
  const int32_t* positions;  // [batch]
  const int32_t* kv_rows;    // [batch]: the new token's row of the caches (out of range: none)
  T* q_out;                  // [batch, num_qo_heads, D]: written by split 0
  T* k_cache;                // the caches, writable: split 0 writes the new rows
  T* v_cache;
  int64_t ld, kv_capacity;  // rows of the caches: num_pages * page_size
  float eps, base, scale;
};

// ---------------------------------------------------------------------------------------------
// Split kernel (issue 9, "v2"). Each lane streams its own 16-byte pieces of K and V through a
// private ring of kStages stages in shared memory with cp.async, so kStages - 1 stages stay in
// flight while one is consumed, and the page indices of a stage are loaded one stage ahead (v1,
// removed, loaded a page index in front of every K/V load and had nothing in flight while it
// computed). A lane reads back only what it copied itself: cp.async.wait_group orders it, with no
// CTA barrier in the loop.
constexpr int kStages = 4;

template <typename T, typename TKV, int D, int kGh>
struct PipeCfg {
  using Base = DecodeCfg<T, TKV, D, kGh>;
  static constexpr int kU = Base::kNv >= 4 ? 1 : 4 / Base::kNv;  // keys per lane per stage
  static constexpr int kLoads = kU * Base::kNv;  // 16-byte loads per lane per stage, of K and of V
  static constexpr int kKeys = Base::kGroups * kU;  // keys per stage
  static constexpr size_t kStageBytes = size_t(kLoads) * 2 * kThreads * 16;
  static constexpr size_t kMergeBytes =
      sizeof(float) * (size_t(Base::kGroups) * kGh * D + 2 * size_t(Base::kGroups) * kGh);
  static constexpr size_t kSmem =
      kStages * kStageBytes > kMergeBytes ? kStages* kStageBytes : kMergeBytes;
  static_assert(kStages * kU <= 32, "validity bits of the stages in flight fit one word");
};

using detail::cp_async16_or_zero;  // cp_async.cuh
using detail::cp_async_commit;
using detail::cp_async_wait;
using detail::smem_u32;

// Asks L2 for the line holding ptr; no data comes back, nothing waits on it.
__device__ __forceinline__ void prefetch_l2(const void* ptr) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(ptr));
}

// The prologue's scratch: RoPE's table, one staging row per warp (qk_norm_rope.cuh), the CTA's
// normed and rotated q heads, and the new key and value rows. It lives in the ring's last stage,
// which the first copies leave free until the loop's first refill, so the kernel's shared memory
// (hence its occupancy and the SM's shared-memory carveout) stays the plain kernel's.
constexpr int kWarps = kThreads / 32;
template <typename T, int D, int kGh>
struct PrologueSmem {
  float cs[D / 2], sn[D / 2];
  float xs[kWarps][D];
  __align__(16) T q[kGh][D];
  __align__(16) T k[D];
  __align__(16) T v[D];
};

// grid: (splits, num_kv_heads * head_chunks, batch); block: kThreads; dynamic shared memory
// PipeCfg::kSmem.
//
// The prologue (kQkv; head_chunks == 1, TKV == T): qk_norm_rope's per-head arithmetic
// (qk_norm_rope.cuh, the same bits) runs in every CTA, so no kernel boundary separates it from the
// attention:
// - before pdl_wait (inputs no kernel of the step writes): the token's position and new row, the
//   norm weights, and RoPE's table;
// - after it: the ring's first stages are issued first, then each warp norms and rotates its q
//   heads (and the new k; the new v is copied) into shared memory, where the score loop's q load
//   finds them;
// - the new token's key and value are taken from shared memory wherever a stage holds the new
//   row (its copy from the cache is skipped), so no CTA reads the row split 0 writes: the result
//   is that of qk_norm_rope's write then attention_decode's read;
// - split 0 writes q and the new K/V rows (the op's outputs) once its prologue is done.
template <typename T, typename TKV, int D, int kGh, bool kQkv = false>
__global__ void __launch_bounds__(kThreads)
    decode_pipe_kernel(const DecodeParams p, const QkvPrologue<T> pro) {
  using Cfg = DecodeCfg<T, TKV, D, kGh>;
  using Pc = PipeCfg<T, TKV, D, kGh>;
  constexpr int kVec = Cfg::kVec, kNv = Cfg::kNv, kTpk = Cfg::kTpk, kGroups = Cfg::kGroups,
                kPer16 = Cfg::kPer16, kNq = Cfg::kNq, kPerQ = Cfg::kPerQ;
  constexpr int kU = Pc::kU, kLoads = Pc::kLoads, kKeys = Pc::kKeys;
  extern __shared__ __align__(16) unsigned char smem[];

  // The kernel after this one (the combine, or the step's next kernel; pdl.cuh) may be scheduled
  // now: it waits for this grid's completion and memory before reading.
  pdl_trigger();

  const int split = blockIdx.x;
  const int kvh = blockIdx.y / p.head_chunks, hc = blockIdx.y % p.head_chunks;
  const int b = blockIdx.z;
  const int h0 = kvh * p.group + hc * kGh;
  const int nh = min(kGh, p.group - hc * kGh);
  const int tid = threadIdx.x, grp = tid / kTpk, tig = tid % kTpk;

  // Sequence b's keys and this split's range of them (seq_keys). kv_indptr, kv_len and (below)
  // kv_indices are read before pdl_wait: the contract keeps them unwritten by the kernels of the
  // step (the host uploads them before it), so when this grid is launched with PDL these loads
  // overlap the tail of the kernel before it (which writes q and the new K/V rows). The three
  // loads in seq_keys are independent and go out together.
  const SeqKeys sk = seq_keys(p, b);
  const int pg0 = sk.pg0, len = sk.len, start = sk.start, chunk = sk.chunk;
  const int64_t sb = int64_t(start) + int64_t(split) * chunk;
  const int beg = int(sb < len ? sb : int64_t(len));
  const int end = split == p.splits - 1 ? len : int(sb + chunk < len ? sb + chunk : int64_t(len));
  // A split past the sequence's keys adds nothing and the combine reads only the first sk.active
  // splits, so it ends here (split 0, which writes the prologue's outputs, always has keys).
  if (split > 0 && split >= sk.active) return;
  const int n_iter = (end - beg + kKeys - 1) / kKeys;  // stages of kKeys keys

  const int64_t row_stride = int64_t(p.num_kv_heads) * D;  // elements per token slot
  const TKV* kc = static_cast<const TKV*>(p.k_cache) + int64_t(kvh) * D + tig * kVec;
  const TKV* vc = static_cast<const TKV*>(p.v_cache) + int64_t(kvh) * D + tig * kVec;
  const int32_t* pages = p.kv_indices + pg0;

  // The prologue's inputs that no kernel of the step writes (kernels.inc: read early).
  auto& ps = *reinterpret_cast<PrologueSmem<T, D, kGh>*>(smem + (kStages - 1) * Pc::kStageBytes);
  constexpr int V = 16 / int(sizeof(T));  // qk_norm_rope's vector width (aligned heads)
  constexpr int kTasks = (kGh + 2 + kWarps - 1) / kWarps;  // heads a warp norms or copies
  [[maybe_unused]] int64_t new_off = -1;  // element offset of the new row's slot in the caches
  [[maybe_unused]] float wq[qknr::kRegVec][V], wk[qknr::kRegVec][V];
  if constexpr (kQkv) {
    static_assert(std::is_same_v<T, TKV>, "the prologue writes caches of q's dtype");
    static_assert(sizeof(PrologueSmem<T, D, kGh>) <= Pc::kStageBytes, "scratch fits a stage");
    static_assert(D / V <= 32 * qknr::kRegVec, "a lane's part of a head fits its registers");
    const int lane = tid & 31;
    const int64_t row = __ldg(pro.kv_rows + b);
    if (row >= 0 && row < pro.kv_capacity) new_off = row * row_stride;
#pragma unroll
    for (int m = 0; m < qknr::kRegVec; ++m) {
      const int i = lane + 32 * m;
      if (i < D / V) {
        vec::load_f32<T, V>(pro.q_w + i * V, wq[m]);
        vec::load_f32<T, V>(pro.k_w + i * V, wk[m]);
      }
    }
    qknr::rope_table<T>(float(__ldg(pro.positions + b)), D, pro.base, pro.scale, ps.cs, ps.sn, tid,
                        kThreads);
  }

  // Stage s, load i (u * kNv + n), K (0) or V (1): this lane's 16 bytes at
  // [((s * kLoads + i) * 2 + kv) * kThreads + tid] (consecutive lanes, consecutive 16 bytes).
  const uint4* ring = reinterpret_cast<const uint4*>(smem);
  const uint32_t ring_u32 = smem_u32(smem) + uint32_t(tid) * 16u;
  auto slot = [](int s, int i, int kv) { return ((s * kLoads + i) * 2 + kv) * kThreads; };

  // Page index of key u of stage `it` (-1, which no cache has, past the split's end).
  auto page_of = [&](int it, int u) -> int32_t {
    const int t = beg + it * kKeys + u * kGroups + grp;
    return t < end ? __ldg(pages + (p.page_shift >= 0 ? t >> p.page_shift : t / p.page_size)) : -1;
  };
  // Element offset of key u of stage `it` in page pidx (a valid page: pidx < num_pages).
  auto key_off = [&](int it, int u, int32_t pidx) -> int64_t {
    const int t = beg + it * kKeys + u * kGroups + grp;
    const int slot_in_page = p.page_shift >= 0 ? t & (p.page_size - 1) : t % p.page_size;
    return (int64_t(pidx) * p.page_size + slot_in_page) * row_stride;
  };
  // Copies stage `it` into ring stage it % kStages; returns its keys' validity bits. A masked key
  // (past the end, or a page outside the cache) is zero-filled: its score is -inf and its V is 0.
  // The prologue's new row is valid but not copied (zero-filled; its bit in `fresh`): the loop
  // takes it from shared memory.
  auto issue = [&](int it, const int32_t(&pidx)[kU], uint32_t& fresh) -> uint32_t {
    const int s = it % kStages;
    uint32_t bits = 0;
    fresh = 0;
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const bool ok = uint32_t(pidx[u]) < p.num_pages;  // a page outside the cache is never read
      const int64_t off = ok ? key_off(it, u, pidx[u]) : 0;
      bits |= uint32_t(ok) << u;
      bool copy = ok;
      if constexpr (kQkv) {
        const bool is_new = ok && off == new_off;
        fresh |= uint32_t(is_new) << u;
        copy = ok && !is_new;
      }
#pragma unroll
      for (int n = 0; n < kNv; ++n) {
        const int i = u * kNv + n;
        cp_async16_or_zero(ring_u32 + uint32_t(slot(s, i, 0)) * 16u,
                           copy ? kc + off + n * kPer16 : kc, copy);
        cp_async16_or_zero(ring_u32 + uint32_t(slot(s, i, 1)) * 16u,
                           copy ? vc + off + n * kPer16 : vc, copy);
      }
    }
    return bits;
  };

  // Page indices of the first kStages stages (the prologue's and the next one), loaded together
  // (one round trip) and before pdl_wait, as kv_indptr above.
  int32_t pi[kStages - 1][kU], pn[kU];  // pn: page indices of the next stage to issue
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
#pragma unroll
    for (int u = 0; u < kU; ++u) pi[s][u] = page_of(s, u);
  }
#pragma unroll
  for (int u = 0; u < kU; ++u) pn[u] = page_of(kStages - 1, u);

  if (p.pdl) {
    // Launched with PDL: the kernel before this one may still be writing the new token's K/V rows,
    // so the prologue's rows may not be copied yet, but they may be asked into L2. A prefetch
    // returns no data to this kernel and L2 is the point of coherence for every SM's writes, so
    // the copies after pdl_wait (cp.async.cg, L2 only) still see those writes; what the prefetch
    // takes off the chain is the DRAM latency of the first stages.
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s >= n_iter) break;
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        if (uint32_t(pi[s][u]) >= p.num_pages) continue;
        const int64_t off = key_off(s, u, pi[s][u]);
#pragma unroll
        for (int n = 0; n < kNv; ++n) {
          prefetch_l2(kc + off + n * kPer16);
          prefetch_l2(vc + off + n * kPer16);
        }
      }
    }
  }

  // q and the K/V rows are written by the kernels before this one (pdl.cuh's rule). A no-op
  // without PDL.
  pdl_wait();

  uint32_t vmask = 0;  // validity bits of the stages in flight, oldest in the low kU bits
  uint32_t nmask = 0;  // the same stages' bits of the prologue's new row (kQkv)
  // The ring's first kStages - 1 stages, one group each.
  auto issue_first = [&] {
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < n_iter) {
        uint32_t fresh;
        vmask |= issue(s, pi[s], fresh) << (s * kU);
        nmask |= fresh << (s * kU);
      }
      cp_async_commit();
    }
  };

  uint4 qr[kGh][kNq];
  [[maybe_unused]] uint4 knew[kNv], vnew[kNv];  // kQkv: this lane's part of the new K/V row
  if constexpr (!kQkv) {
    // q first: its loads are in flight together with the ring's first copies.
    const T* qb = static_cast<const T*>(p.q) + (int64_t(b) * p.num_qo_heads + h0) * D + tig * kVec;
#pragma unroll
    for (int hh = 0; hh < kGh; ++hh) {
#pragma unroll
      for (int n = 0; n < kNq; ++n) {
        qr[hh][n] = make_uint4(0, 0, 0, 0);
        if (hh < nh) qr[hh][n] = *reinterpret_cast<const uint4*>(qb + hh * D + n * kPerQ);
      }
    }
    issue_first();
  } else {
    // The ring's copies first (the stages' old keys), then the heads from the projection rows:
    // task j < nh is q head h0 + j, task nh the new k, nh + 1 the new v; warp w takes w, w + 4, ...
    // The heads load together; the per-head code runs in a loop that is not unrolled, so the
    // kernel holds one copy of it (Nsight Compute showed instruction fetch as this kernel's main
    // stall: code size is latency here; ~1 µs at the 1B shape, docs/kernels.md session 10).
    issue_first();
    const int lane = tid & 31, warp = tid >> 5;
    const T* row = pro.qkv + int64_t(b) * pro.ld;
    const int nq = p.num_qo_heads;
    auto head_of = [&](int j) -> const T* {
      return row + int64_t(j < nh ? h0 + j : (j == nh ? nq + kvh : nq + p.num_kv_heads + kvh)) * D;
    };
    float f[kTasks][qknr::kRegVec][V];
#pragma unroll
    for (int t = 0; t < kTasks; ++t) {
      const int j = warp + kWarps * t;
      if (j >= nh + 2) continue;
#pragma unroll
      for (int m = 0; m < qknr::kRegVec; ++m) {
        const int i = lane + 32 * m;
        if (i < D / V) vec::load_f32<T, V>(head_of(j) + i * V, f[t][m]);
      }
    }
    __syncthreads();  // RoPE's table
#pragma unroll 1
    for (int t = 0; t < kTasks; ++t) {
      const int j = warp + kWarps * t;
      if (j >= nh + 2) break;
      // This task's values and norm weight, selected by value (a reference into either array
      // would put them in local memory).
      float fj[qknr::kRegVec][V], wj[qknr::kRegVec][V];
#pragma unroll
      for (int m = 0; m < qknr::kRegVec; ++m) {
#pragma unroll
        for (int e = 0; e < V; ++e) {
          float x = f[0][m][e];
#pragma unroll
          for (int u = 1; u < kTasks; ++u) x = t == u ? f[u][m][e] : x;
          fj[m][e] = x;
          wj[m][e] = j < nh ? wq[m][e] : wk[m][e];
        }
      }
      if (j <= nh) {
        qknr::norm_rope_head<T, V, false>(head_of(j), fj, j < nh ? pro.q_w : pro.k_w, wj,
                                          j < nh ? ps.q[j] : ps.k, ps.xs[warp], ps.cs, ps.sn, D,
                                          pro.eps, lane);
        __syncwarp();  // the warp's staging row is rewritten by its next head
      } else {
#pragma unroll
        for (int m = 0; m < qknr::kRegVec; ++m) {
          const int i = lane + 32 * m;
          if (i < D / V) vec::store_f32<T, V>(ps.v + i * V, fj[m]);
        }
      }
    }
    __syncthreads();  // q heads and the new row in shared memory
#pragma unroll
    for (int hh = 0; hh < kGh; ++hh) {
#pragma unroll
      for (int n = 0; n < kNq; ++n) {
        qr[hh][n] = make_uint4(0, 0, 0, 0);
        if (hh < nh) qr[hh][n] = *reinterpret_cast<const uint4*>(&ps.q[hh][tig * kVec + n * kPerQ]);
      }
    }
#pragma unroll
    for (int n = 0; n < kNv; ++n) {
      knew[n] = reinterpret_cast<const uint4*>(ps.k)[tig * kNv + n];
      vnew[n] = reinterpret_cast<const uint4*>(ps.v)[tig * kNv + n];
    }
    if (split == 0) {  // the op's outputs: q, and the new K/V rows
      constexpr int kPer = 16 / int(sizeof(T));
      T* qo = pro.q_out + (int64_t(b) * p.num_qo_heads + h0) * D;
      for (int i = tid; i < nh * D / kPer; i += kThreads)
        reinterpret_cast<uint4*>(qo)[i] = reinterpret_cast<const uint4*>(&ps.q[0][0])[i];
      if (new_off >= 0) {
        const int64_t at = new_off + int64_t(kvh) * D;
        for (int i = tid; i < 2 * D / kPer; i += kThreads) {
          const bool is_v = i >= D / kPer;
          const int e = is_v ? i - D / kPer : i;
          reinterpret_cast<uint4*>((is_v ? pro.v_cache : pro.k_cache) + at)[e] =
              reinterpret_cast<const uint4*>(is_v ? ps.v : ps.k)[e];
        }
      }
    }
    __syncthreads();  // the scratch is read: the loop's first refill may overwrite its stage
  }

  float q[kGh][kVec];
#pragma unroll
  for (int hh = 0; hh < kGh; ++hh) {
#pragma unroll
    for (int n = 0; n < kNq; ++n) unpack(qr[hh][n], &q[hh][n * kPerQ], T());
#pragma unroll
    for (int e = 0; e < kVec; ++e) q[hh][e] *= p.scale_log2;
  }

  float m[kGh], l[kGh], o[kGh][kVec];
#pragma unroll
  for (int hh = 0; hh < kGh; ++hh) {
    m[hh] = kNegInf;
    l[hh] = 0.f;
#pragma unroll
    for (int e = 0; e < kVec; ++e) o[hh][e] = 0.f;
  }

  for (int it = 0; it < n_iter; ++it) {
    cp_async_wait<kStages - 2>();  // stage `it` has landed (this lane's own copies)
    {
      // Refill the ring stage consumed last iteration; prefetch the page indices after it.
      const int nx = it + kStages - 1;
      if (nx < n_iter) {
        uint32_t fresh;
        vmask |= issue(nx, pn, fresh) << ((kStages - 1) * kU);
        nmask |= fresh << ((kStages - 1) * kU);
      }
      cp_async_commit();
#pragma unroll
      for (int u = 0; u < kU; ++u) pn[u] = page_of(nx + 1, u);
    }
    const uint32_t valid = vmask;
    vmask >>= kU;
    const int s = it % kStages;
    uint4 kr[kU][kNv], vr[kU][kNv];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
#pragma unroll
      for (int n = 0; n < kNv; ++n) {
        kr[u][n] = ring[slot(s, u * kNv + n, 0) + tid];
        vr[u][n] = ring[slot(s, u * kNv + n, 1) + tid];
      }
    }
    if constexpr (kQkv) {  // the new row, from the prologue (registers)
      const uint32_t fresh = nmask;
      nmask >>= kU;
      if (fresh != 0) {
#pragma unroll
        for (int u = 0; u < kU; ++u) {
          if (!((fresh >> u) & 1u)) continue;
#pragma unroll
          for (int n = 0; n < kNv; ++n) {
            kr[u][n] = knew[n];
            vr[u][n] = vnew[n];
          }
        }
      }
    }

    // Scores for kU keys x kGh heads, reduced over the key group's lanes.
    float sc[kU][kGh];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      float kf[kVec];
#pragma unroll
      for (int n = 0; n < kNv; ++n) unpack(kr[u][n], &kf[n * kPer16], TKV());
#pragma unroll
      for (int hh = 0; hh < kGh; ++hh) {
        float acc = 0.f;
#pragma unroll
        for (int e = 0; e < kVec; ++e) acc = fmaf(q[hh][e], kf[e], acc);
        sc[u][hh] = acc;
      }
    }
#pragma unroll
    for (int off = kTpk / 2; off > 0; off >>= 1) {
#pragma unroll
      for (int u = 0; u < kU; ++u) {
#pragma unroll
        for (int hh = 0; hh < kGh; ++hh) sc[u][hh] += __shfl_xor_sync(0xffffffffu, sc[u][hh], off);
      }
    }

    // One online-softmax rescale per kU keys.
#pragma unroll
    for (int hh = 0; hh < kGh; ++hh) {
      float mx = m[hh];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        if (!((valid >> u) & 1u)) sc[u][hh] = kNegInf;
        mx = fmaxf(mx, sc[u][hh]);
      }
      const float base_m = mx == kNegInf ? 0.f : mx;
      const float alpha = fast_exp2(m[hh] - base_m);
      m[hh] = mx;
      l[hh] *= alpha;
#pragma unroll
      for (int e = 0; e < kVec; ++e) o[hh][e] *= alpha;
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const float pu = fast_exp2(sc[u][hh] - base_m);
        l[hh] += pu;
        float vf[kVec];
#pragma unroll
        for (int n = 0; n < kNv; ++n) unpack(vr[u][n], &vf[n * kPer16], TKV());
#pragma unroll
        for (int e = 0; e < kVec; ++e) o[hh][e] = fmaf(pu, vf[e], o[hh][e]);
      }
    }
  }
  cp_async_wait<0>();  // empty groups only by now; the ring is about to be reused
  __syncthreads();     // every lane is done with its ring: it becomes the merge buffers

  // Merge the key groups in the ring's memory: weights w_g = exp2(m_g - M) per (group, head), then
  // a column sum over the groups. Every output thread computes the weights of its head itself
  // (kGroups exp2 from broadcast shared-memory reads) rather than one thread per head computing
  // them for all behind a further barrier: the same arithmetic in the same order, one barrier and
  // one serial phase fewer on the kernel's critical path.
  float* s_o = reinterpret_cast<float*>(smem);  // [kGroups][kGh][D]
  float* s_m = s_o + kGroups * kGh * D;         // [kGroups][kGh]
  float* s_l = s_m + kGroups * kGh;             // [kGroups][kGh]
#pragma unroll
  for (int hh = 0; hh < kGh; ++hh) {
    if constexpr (Cfg::kFp8) {
#pragma unroll
      for (int e = 0; e < kVec; ++e) o[hh][e] *= p.v_scale;  // P.V is linear in the values
    }
#pragma unroll
    for (int e = 0; e < kVec; e += 4) {
      *reinterpret_cast<float4*>(&s_o[(grp * kGh + hh) * D + tig * kVec + e]) =
          make_float4(o[hh][e], o[hh][e + 1], o[hh][e + 2], o[hh][e + 3]);
    }
    if (tig == 0) {
      s_m[grp * kGh + hh] = m[hh];
      s_l[grp * kGh + hh] = l[hh];
    }
  }
  __syncthreads();
  for (int idx = tid; idx < nh * D; idx += kThreads) {
    const int hh = idx / D, d = idx % D;
    float mx = kNegInf;
#pragma unroll 8
    for (int g = 0; g < kGroups; ++g) mx = fmaxf(mx, s_m[g * kGh + hh]);
    float acc = 0.f, sum = 0.f;
#pragma unroll 8
    for (int g = 0; g < kGroups; ++g) {
      const float w = mx == kNegInf ? 0.f : fast_exp2(s_m[g * kGh + hh] - mx);
      sum = fmaf(w, s_l[g * kGh + hh], sum);
      acc = fmaf(w, s_o[(g * kGh + hh) * D + d], acc);
    }
    const int64_t bh = int64_t(b) * p.num_qo_heads + h0 + hh;
    if (p.ws_o != nullptr) {
      p.ws_o[(bh * p.splits + split) * D + d] = acc;
      if (d == 0) {
        p.ws_ml[(bh * p.splits + split) * 2] = mx;
        p.ws_ml[(bh * p.splits + split) * 2 + 1] = sum;
      }
    } else {
      static_cast<T*>(p.out)[bh * D + d] = from_f32<T>(sum > 0.f ? acc / sum : 0.f);
    }
  }
}

// Merges the splits of one (sequence, qo head) over a slice of `dims` dims (64, or 32 above
// kCombineWideSplits splits; at most head_dim), the splits spread over the CTA's threads (v1's
// combine walked them one after another in one thread per dim: ~splits dependent L2 round trips).
// out = sum_s w_s o_s / sum_s w_s l_s, w_s = exp2(m_s - M).
// grid: (batch * num_qo_heads, head_dim / dims); block: kCombineThreads.
// ws_o must be 16-byte aligned (float4 loads); splits <= kMaxSplits.
constexpr int kCombineThreads = 256;

__device__ __forceinline__ float block_reduce(float v, float* red, bool is_max) {
  for (int off = 16; off > 0; off >>= 1) {
    const float o = __shfl_xor_sync(0xffffffffu, v, off);
    v = is_max ? fmaxf(v, o) : v + o;
  }
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) red[warp] = v;
  __syncthreads();
  v = red[0];
  for (int w = 1; w < kCombineThreads / 32; ++w) v = is_max ? fmaxf(v, red[w]) : v + red[w];
  __syncthreads();  // red is reused by the next reduction
  return v;
}

template <typename T>
__global__ void __launch_bounds__(kCombineThreads)
    decode_combine_wide_kernel(const DecodeParams p, int head_dim, int dims) {
  // Launched early (programmatic dependent launch, pdl.cuh): wait for the split kernel's results.
  // Both no-ops for an ordinary launch; the trigger lets the step's next kernel be scheduled.
  pdl_trigger();
  // Only the splits with keys wrote partials (seq_keys; its inputs are the host's, read early).
  const int64_t bh = blockIdx.x;
  const int splits = seq_keys(p, int(bh / p.num_qo_heads)).active, stride = p.splits;
  pdl_wait();
  const float* ws_o = p.ws_o;
  T* out = static_cast<T*>(p.out);
  __shared__ float s_w[kMaxSplits];
  __shared__ float red[kCombineThreads / 32];
  __shared__ float4 s_acc[kCombineThreads];
  const int tid = threadIdx.x;
  const float* ml = p.ws_ml + bh * stride * 2;
  float mx = kNegInf;
  for (int s = tid; s < splits; s += kCombineThreads) mx = fmaxf(mx, ml[2 * s]);
  mx = block_reduce(mx, red, true);
  float part = 0.f;
  for (int s = tid; s < splits; s += kCombineThreads) {
    const float w = mx == kNegInf ? 0.f : fast_exp2(ml[2 * s] - mx);
    s_w[s] = w;
    part = fmaf(w, ml[2 * s + 1], part);
  }
  const float sum = block_reduce(part, red, false);  // its barrier also publishes s_w

  const int lanes = dims / 4, groups = kCombineThreads / lanes;
  const int lane = tid % lanes, g = tid / lanes;
  const int d = blockIdx.y * dims + lane * 4;
  const float* os = ws_o + bh * stride * head_dim + d;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
  for (int s = g; s < splits; s += groups) {
    const float w = s_w[s];
    const float4 v = *reinterpret_cast<const float4*>(os + int64_t(s) * head_dim);
    acc.x = fmaf(w, v.x, acc.x);
    acc.y = fmaf(w, v.y, acc.y);
    acc.z = fmaf(w, v.z, acc.z);
    acc.w = fmaf(w, v.w, acc.w);
  }
  s_acc[tid] = acc;
  __syncthreads();
  if (tid < lanes) {
    float4 t = s_acc[tid];
    for (int j = 1; j < groups; ++j) {
      const float4 v = s_acc[j * lanes + tid];
      t.x += v.x, t.y += v.y, t.z += v.z, t.w += v.w;
    }
    T* o = out + bh * head_dim + d;
    o[0] = from_f32<T>(sum > 0.f ? t.x / sum : 0.f);
    o[1] = from_f32<T>(sum > 0.f ? t.y / sum : 0.f);
    o[2] = from_f32<T>(sum > 0.f ? t.z / sum : 0.f);
    o[3] = from_f32<T>(sum > 0.f ? t.w / sum : 0.f);
  }
}

// Launch-time inputs of the split planner (attention_decode fills them).
struct Plan {
  int64_t batch, num_qo_heads, head_dim;
  int64_t visible;    // keys a sequence shows at most: min(max_kv_len, window)
  int64_t base_ctas;  // CTAs of one split: batch * num_kv_heads * head_chunks
  float* workspace;
  int64_t workspace_floats;
  int dev, sms;
};

// Extra workspace floats so that the float4-read partials can start on a 16-byte boundary.
constexpr int64_t kWsAlign = 4;

// A CTA that streams at most this many ring stages takes the whole visible range: one split, no
// combine. Session 5 set 12, predicting ~0.23 µs a stage; the H100 bench of session 6 measured ~1
// µs a stage past the first (4B shape, graph-timed with PDL: 16 keys 2.5 µs, 128 keys 9.4 µs in one
// split, 256 keys 6.8 µs split with its combine), so the split wins from ~6 stages and the edge is
// 4 (64 keys at 4B bf16, 128 at d 128). GEMMA3_DECODE_ONE_SPLIT_STAGES=N (1..64) overrides it
// (A/B).
int64_t one_split_stages() {
  static const int64_t v = [] {
    const long n = env_long("GEMMA3_DECODE_ONE_SPLIT_STAGES");
    return n >= 1 && n <= 64 ? int64_t(n) : int64_t(4);
  }();
  return v;
}

// Split planner: one split up to one_split_stages() stages of keys_per_stage keys; beyond, as many
// splits as fill the GPU's resident CTA slots exactly once (slots / base_ctas, rounded down: a
// second, partial wave of equal-sized CTAs would leave most SMs idle at the end), chunks of
// >= min_chunk() keys rounded up to 16, within the workspace.
void plan_pipe(const Plan& in, int64_t slots, int64_t keys_per_stage, DecodeParams* p) {
  float* ws = in.workspace;
  int64_t avail = in.workspace_floats;
  if (ws != nullptr) {  // the partials start 16-byte aligned (float4 reads in the combine)
    const int64_t skip = int64_t((16 - (reinterpret_cast<uintptr_t>(ws) & 15u)) & 15u) / 4;
    ws += skip;
    avail -= skip;
  }
  int64_t splits = 1;
  const int64_t per_split = in.batch * in.num_qo_heads * (in.head_dim + 2);
  const bool long_range = in.visible > std::max(min_chunk(), one_split_stages() * keys_per_stage);
  if (ws != nullptr && long_range && avail > 0) {
    const int64_t want = std::max<int64_t>(1, slots / in.base_ctas);
    splits = std::min({want, max_splits(in.batch, in.visible), avail / per_split});
    splits = std::max<int64_t>(splits, 1);
  }
  int64_t chunk = std::max<int64_t>(ceil_div(std::max<int64_t>(in.visible, 1), splits), 1);
  if (splits > 1) {
    chunk = ceil_div(chunk, 16) * 16;
    splits = ceil_div(in.visible, chunk);  // no split starts past the visible range
  }
  p->chunk = int(std::min<int64_t>(chunk, INT_MAX));
  p->splits = int(splits);
  // GEMMA3_DECODE_PLAN_CHUNK=1 (A/Bs): every split keeps the plan's chunk (seq_keys shrinks it no
  // further than this floor).
  static const bool plan_chunk = env_is("GEMMA3_DECODE_PLAN_CHUNK", "1");
  p->min_chunk = plan_chunk ? p->chunk : int(min_chunk());
  p->ws_o = splits > 1 ? ws : nullptr;
  p->ws_ml = splits > 1 ? ws + in.batch * in.num_qo_heads * splits * in.head_dim : nullptr;
}

template <typename T>
Status launch_combine_wide(const DecodeParams& p, int64_t batch, int64_t D, cudaStream_t stream) {
  const int64_t dims = std::min<int64_t>(D, p.splits > kCombineWideSplits ? 32 : 64);
  // Programmatic dependent launch (pdl.cuh): the combine is scheduled while the split kernel runs
  // and waits in-kernel, so the gap between the two launches is hidden.
  launch_pdl(decode_combine_wide_kernel<T>,
             dim3(unsigned(batch * p.num_qo_heads), unsigned(D / dims)), dim3(kCombineThreads), 0,
             stream, p, int(D), int(dims));
  return check_launch("attention_decode (combine)");
}

// Sets the split kernel's dynamic shared memory attribute on this device (once per device) and
// returns its resident CTAs per SM (the same on every device of one architecture).
template <typename T, typename TKV, int D, int kGh, bool kQkv>
Status prepare_pipe(int dev, int* occ_out) {
  using Pc = PipeCfg<T, TKV, D, kGh>;
  auto* kern = decode_pipe_kernel<T, TKV, D, kGh, kQkv>;
  // Over 48 KB of dynamic shared memory needs the attribute, once per device.
  static std::atomic<uint64_t> attr_set{0};
  static std::atomic<int> occupancy{0};
  const uint64_t bit = dev < 64 ? uint64_t(1) << dev : 0;
  if (bit == 0 || (attr_set.load() & bit) == 0) {
    G3_CUDA_RETURN(
        cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Pc::kSmem)));
    attr_set.fetch_or(bit);
  }
  int occ = occupancy.load();
  if (occ == 0) {
    G3_CUDA_RETURN(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, kThreads, Pc::kSmem));
    occ = std::max(occ, 1);
    occupancy.store(occ);
  }
  *occ_out = occ;
  return Status::Ok();
}

template <typename T, typename TKV, int D, int kGh, bool kQkv = false>
Status launch_pipe(DecodeParams p, const Plan& in, cudaStream_t stream,
                   const QkvPrologue<T>& pro = {}) {
  using Pc = PipeCfg<T, TKV, D, kGh>;
  auto* kern = decode_pipe_kernel<T, TKV, D, kGh, kQkv>;
  int occ = 0, occ_own = 0;
  G3_RETURN_IF_ERROR((prepare_pipe<T, TKV, D, kGh, kQkv>(in.dev, &occ_own)));
  // The plain kernel's occupancy plans both kernels, so the prologue's kernel splits as the plain
  // one would (the same sums: bit-equal to the two launches). Its own static shared memory can
  // only lower its occupancy; a split it cannot keep resident waits for a slot.
  if constexpr (kQkv) {
    G3_RETURN_IF_ERROR((prepare_pipe<T, TKV, D, kGh, false>(in.dev, &occ)));
  } else {
    occ = occ_own;
  }
  plan_pipe(in, int64_t(in.sms) * occ, Pc::kKeys, &p);
  const dim3 grid(unsigned(p.splits), unsigned(p.num_kv_heads * p.head_chunks), unsigned(in.batch));
  // Programmatic dependent launch (pdl.cuh; on unless GEMMA3_PDL=0): the page table is read and
  // the first stages' rows are asked into L2 while the kernel before this one (in a decode layer,
  // the one that writes q and the new K/V rows, or with the prologue the QKV projection) finishes.
  p.pdl = pdl_enabled();
  launch_pdl_if(p.pdl, kern, grid, dim3(kThreads), Pc::kSmem, stream, p, pro);
  G3_RETURN_IF_ERROR(check_launch("attention_decode"));
  if (p.splits > 1) {
    if (p.splits > kMaxSplits) return Status(StatusCode::kInternal, "attention_decode: splits");
    return launch_combine_wide<T>(p, in.batch, D, stream);
  }
  return Status::Ok();
}

template <typename T, typename TKV, int D, bool kQkv = false>
Status launch_decode_d(const DecodeParams& p, const Plan& in, int gh, cudaStream_t stream,
                       const QkvPrologue<T>& pro = {}) {
  switch (gh) {
    case 1:
      return launch_pipe<T, TKV, D, 1, kQkv>(p, in, stream, pro);
    case 2:
      return launch_pipe<T, TKV, D, 2, kQkv>(p, in, stream, pro);
    case 4:
      return launch_pipe<T, TKV, D, 4, kQkv>(p, in, stream, pro);
    default:
      if constexpr (std::is_same_v<TKV, fp8e4m3>) {
        return Status(StatusCode::kInternal, "attention_decode: fp8 caches take gh <= 4");
      } else {
        return launch_pipe<T, TKV, D, 8, kQkv>(p, in, stream, pro);
      }
  }
}

template <typename T, typename TKV, bool kQkv = false>
Status launch_decode(const DecodeParams& p, const Plan& in, int gh, cudaStream_t stream,
                     const QkvPrologue<T>& pro = {}) {
  switch (in.head_dim) {
    case 16:
      return launch_decode_d<T, TKV, 16, kQkv>(p, in, gh, stream, pro);
    case 32:
      return launch_decode_d<T, TKV, 32, kQkv>(p, in, gh, stream, pro);
    case 64:
      return launch_decode_d<T, TKV, 64, kQkv>(p, in, gh, stream, pro);
    case 128:
      return launch_decode_d<T, TKV, 128, kQkv>(p, in, gh, stream, pro);
    default:
      return launch_decode_d<T, TKV, 256, kQkv>(p, in, gh, stream, pro);
  }
}

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

Status invalid(const std::string& msg) {
  return Status(StatusCode::kInvalidArgument, "attention_decode: " + msg);
}

}  // namespace

int64_t attention_decode_workspace_floats(int64_t batch, int64_t num_qo_heads, int64_t head_dim,
                                          int64_t max_kv_len) {
  const int64_t splits = max_splits(batch, max_kv_len);
  if (splits <= 1 || num_qo_heads <= 0 || head_dim <= 0) return 0;
  return batch * num_qo_heads * splits * (head_dim + 2) + kWsAlign;
}

namespace {
// attention_decode's checks and launch parameters (shared with attention_decode_qkv): fills p, in
// and gh; *run is false when there is nothing to launch (batch 0).
template <typename T, typename TKV>
Status setup_decode(const T* q, const TKV* k_cache, const TKV* v_cache, T* out,
                    const int32_t* kv_indptr, const int32_t* kv_indices, const int32_t* kv_len,
                    int64_t batch, int64_t num_qo_heads, int64_t num_kv_heads, int64_t head_dim,
                    int64_t page_size, int64_t num_pages, int64_t num_indices, int64_t max_kv_len,
                    float sm_scale, float k_scale, float v_scale, int32_t window, float* workspace,
                    int64_t workspace_floats, DecodeParams* pp, Plan* inp, int* ghp, bool* run) {
  *run = false;
  constexpr bool kFp8 = std::is_same_v<TKV, fp8e4m3>;
  const int64_t D = head_dim;
  if (D != 16 && D != 32 && D != 64 && D != 128 && D != 256) {
    return Status(StatusCode::kUnsupported,
                  "attention_decode: Unsupported head_dim: " + std::to_string(D));
  }
  if (batch < 0 || batch > 65535) {
    return invalid("batch " + std::to_string(batch) + " must be in [0, 65535]");
  }
  if (num_qo_heads <= 0 || num_kv_heads <= 0 || num_qo_heads % num_kv_heads != 0 ||
      num_qo_heads > 65535) {
    return invalid("num_qo_heads " + std::to_string(num_qo_heads) +
                   " must be a positive multiple of num_kv_heads " + std::to_string(num_kv_heads) +
                   " (at most 65535)");
  }
  if (page_size <= 0 || page_size > INT_MAX) {
    return invalid("page_size " + std::to_string(page_size) + " must be in [1, 2^31)");
  }
  if (num_pages < 0 || num_indices < 0) {
    return invalid("num_pages " + std::to_string(num_pages) + " and num_indices " +
                   std::to_string(num_indices) + " must be >= 0");
  }
  if (max_kv_len < 0 || max_kv_len > INT_MAX) {
    return invalid("max_kv_len " + std::to_string(max_kv_len) + " must be in [0, 2^31)");
  }
  if (window < 0) return invalid("window " + std::to_string(window) + " must be >= 0");
  if (workspace_floats < 0 || (workspace == nullptr && workspace_floats != 0)) {
    return invalid("workspace_floats " + std::to_string(workspace_floats) +
                   " must be >= 0 and 0 without a workspace");
  }
  if (!std::isfinite(sm_scale)) {
    return invalid("sm_scale " + std::to_string(sm_scale) + " must be finite");
  }
  // Scales dequantize an fp8 cache; a cache of the query's dtype is unscaled, so they must be 1.
  if (kFp8 ? !(std::isfinite(k_scale) && k_scale > 0.f && std::isfinite(v_scale) && v_scale > 0.f)
           : (k_scale != 1.f || v_scale != 1.f)) {
    return invalid("k_scale=" + std::to_string(k_scale) + ", v_scale=" + std::to_string(v_scale) +
                   (kFp8 ? " (must be finite and > 0)" : " (must be 1 for a cache of q's dtype)"));
  }
  if (batch == 0) return Status::Ok();
  *run = true;
  if (q == nullptr || k_cache == nullptr || v_cache == nullptr || out == nullptr ||
      kv_indptr == nullptr || kv_indices == nullptr || kv_len == nullptr) {
    return invalid("null pointer argument");
  }
  if (!aligned16(q) || !aligned16(k_cache) || !aligned16(v_cache)) {
    return invalid("q, k_cache and v_cache must be 16-byte aligned (vector loads)");
  }

  const int group = int(num_qo_heads / num_kv_heads);
  // fp8: at most 4 heads per CTA (a group of 8 takes two CTAs that each read the K/V rows).
  const int gh = group <= 1 ? 1 : group <= 2 ? 2 : (group <= 4 || kFp8) ? 4 : 8;
  const int head_chunks = int(ceil_div(group, gh));
  if (num_kv_heads * head_chunks > 65535) {
    return invalid("num_kv_heads " + std::to_string(num_kv_heads) + " too large");
  }

  int dev = 0, sms = 0;
  G3_CUDA_RETURN(cudaGetDevice(&dev));
  G3_CUDA_RETURN(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  Plan& in = *inp;
  in = Plan{};
  in.batch = batch;
  in.num_qo_heads = num_qo_heads;
  in.head_dim = D;
  in.visible = window > 0 ? std::min<int64_t>(max_kv_len, window) : max_kv_len;
  in.base_ctas = batch * num_kv_heads * head_chunks;
  in.workspace = workspace;
  in.workspace_floats = workspace_floats;
  in.dev = dev;
  in.sms = std::max(sms, 1);

  DecodeParams& p = *pp;
  p = DecodeParams{};  // chunk, splits and the workspace pointers are the planner's
  p.q = q;
  p.k_cache = k_cache;
  p.v_cache = v_cache;
  p.out = out;
  p.kv_indptr = kv_indptr;
  p.kv_indices = kv_indices;
  p.kv_len = kv_len;
  p.num_qo_heads = int(num_qo_heads);
  p.num_kv_heads = int(num_kv_heads);
  p.group = group;
  p.head_chunks = head_chunks;
  p.page_size = int(page_size);
  p.page_shift = (page_size & (page_size - 1)) == 0 ? __builtin_ctzll(uint64_t(page_size)) : -1;
  p.num_pages = uint32_t(std::min<int64_t>(num_pages, int64_t(1) << 31));
  p.num_indices = int(std::min<int64_t>(num_indices, INT_MAX));
  // k_scale folds into q: (q * s) . k = q . (k * s). Exactly sm_scale * kLog2e when unscaled.
  p.scale_log2 = kFp8 ? sm_scale * kLog2e * k_scale : sm_scale * kLog2e;
  p.v_scale = v_scale;
  p.window = window;
  *ghp = gh;
  return Status::Ok();
}

// True only when GEMMA3_DECODE_PROLOGUE=1 (read once): attention_decode_qkv as one kernel. It
// passes every case bit for bit but lost its H100 A/Bs (1B decode 805 -> 765 tok/s, 4B equal; the
// attention_block rows 13.8 -> 16.5 µs at the 1B shape): in this kernel the per-head norm costs
// ~1.5 µs a head and RoPE's table ~1 µs, where qk_norm_rope's own launch hides them
// (docs/kernels.md, session 10).
bool prologue_enabled() {
  static const bool on = env_is("GEMMA3_DECODE_PROLOGUE", "1");
  return on;
}
}  // namespace

template <typename T, typename TKV>
Status attention_decode(const T* q, const TKV* k_cache, const TKV* v_cache, T* out,
                        const int32_t* kv_indptr, const int32_t* kv_indices, const int32_t* kv_len,
                        int64_t batch, int64_t num_qo_heads, int64_t num_kv_heads, int64_t head_dim,
                        int64_t page_size, int64_t num_pages, int64_t num_indices,
                        int64_t max_kv_len, float sm_scale, float k_scale, float v_scale,
                        int32_t window, float* workspace, int64_t workspace_floats,
                        cudaStream_t stream) {
  DecodeParams p;
  Plan in;
  int gh = 0;
  bool run = false;
  G3_RETURN_IF_ERROR((setup_decode<T, TKV>(
      q, k_cache, v_cache, out, kv_indptr, kv_indices, kv_len, batch, num_qo_heads, num_kv_heads,
      head_dim, page_size, num_pages, num_indices, max_kv_len, sm_scale, k_scale, v_scale, window,
      workspace, workspace_floats, &p, &in, &gh, &run)));
  if (!run) return Status::Ok();
  return launch_decode<T, TKV>(p, in, gh, stream);
}

template <typename T>
Status attention_decode_qkv(const T* qkv, const T* q_w, const T* k_w, const int32_t* positions,
                            const int32_t* kv_rows, T* q, T* k_cache, T* v_cache, T* out,
                            const int32_t* kv_indptr, const int32_t* kv_indices,
                            const int32_t* kv_len, int64_t batch, int64_t num_qo_heads,
                            int64_t num_kv_heads, int64_t head_dim, int64_t page_size,
                            int64_t num_pages, int64_t num_indices, int64_t max_kv_len,
                            float sm_scale, int32_t window, float eps, float base, float scale,
                            float* workspace, int64_t workspace_floats, cudaStream_t stream) {
  const int64_t hq = num_qo_heads, hkv = num_kv_heads, D = head_dim, ld = (hq + 2 * hkv) * D;
  const int64_t capacity = num_pages * page_size;
  // The attention's checks first, whichever form runs: the two launches must not write q and the
  // cache rows and then refuse the attention (bad input loses nothing).
  DecodeParams p;
  Plan in;
  int gh = 0;
  bool run = false;
  G3_RETURN_IF_ERROR(
      (setup_decode<T, T>(q, k_cache, v_cache, out, kv_indptr, kv_indices, kv_len, batch, hq, hkv,
                          D, page_size, num_pages, num_indices, max_kv_len, sm_scale, 1.0f, 1.0f,
                          window, workspace, workspace_floats, &p, &in, &gh, &run)));
  // The two launches: by default, and where the one kernel does not apply (a GQA group of more
  // than 8 heads takes several CTAs a KV head; unaligned or missing prologue inputs). The heads,
  // pages and batch are setup_decode's checks.
  const bool fused = prologue_enabled() && run && p.group <= 8 && qkv && q_w && k_w && kv_rows &&
                     positions && aligned16(qkv) && aligned16(q_w) && aligned16(k_w) &&
                     aligned16(q) && aligned16(k_cache) && aligned16(v_cache) && eps >= 0.0f &&
                     base > 0.0f && std::isfinite(base) && scale > 0.0f && std::isfinite(scale) &&
                     capacity / page_size == num_pages;
  if (!fused) {
    G3_RETURN_IF_ERROR(qk_norm_rope<T>(qkv, qkv + hq * D, qkv + (hq + hkv) * D, q_w, k_w, positions,
                                       q, k_cache, v_cache, kv_rows, capacity, batch, hq, hkv, D,
                                       ld, ld, ld, eps, base, scale, stream));
    return attention_decode<T, T>(q, k_cache, v_cache, out, kv_indptr, kv_indices, kv_len, batch,
                                  hq, hkv, D, page_size, num_pages, num_indices, max_kv_len,
                                  sm_scale, 1.0f, 1.0f, window, workspace, workspace_floats,
                                  stream);
  }
  const QkvPrologue<T> pro{qkv,     q_w, k_w,      positions, kv_rows, q,    k_cache,
                           v_cache, ld,  capacity, eps,       base,    scale};
  return launch_decode<T, T, true>(p, in, gh, stream, pro);
}

#define G3_DECODE(T, TKV)                                                                          \
  template Status attention_decode<T, TKV>(                                                        \
      const T*, const TKV*, const TKV*, T*, const int32_t*, const int32_t*, const int32_t*,        \
      int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float, float, float, \
      int32_t, float*, int64_t, cudaStream_t);
G3_DECODE(float, float)
G3_DECODE(bf16, bf16)
G3_DECODE(float, fp8e4m3)
G3_DECODE(bf16, fp8e4m3)
#undef G3_DECODE
#define G3_DECODE_QKV(T)                                                                           \
  template Status attention_decode_qkv<T>(                                                         \
      const T*, const T*, const T*, const int32_t*, const int32_t*, T*, T*, T*, T*,                \
      const int32_t*, const int32_t*, const int32_t*, int64_t, int64_t, int64_t, int64_t, int64_t, \
      int64_t, int64_t, int64_t, float, int32_t, float, float, float, float*, int64_t,             \
      cudaStream_t);
G3_DECODE_QKV(float)
G3_DECODE_QKV(bf16)
#undef G3_DECODE_QKV

}  // namespace gemma3::cuda
