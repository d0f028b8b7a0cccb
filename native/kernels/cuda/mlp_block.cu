// The decode MLP block as one persistent launch (mlp_block.h; docs/kernels.md, session 14).
//
// Why: at batch 1 a layer's MLP half is four dependent kernels (add-norm, gate/up with GELU, down,
// add-norm), and session 13's trace of the replayed 1B step put 25.3 µs of critical path on them
// against a 16 µs byte floor: each boundary costs an L2 round trip for its inputs plus the
// grid-completion hand-off, even under PDL. Here one cooperative grid (one 512-thread CTA an SM)
// runs the block with one grid-wide wait:
//   A. every CTA recomputes h + norm(r) and norm of that (H values from L2, two CTA reductions)
//      into its shared memory; its first gate/up weight tile is issued behind A's loads;
//   B. gate/up: warp w takes output rows u = w, w + warps, ... (its gate row and up row over all
//      of K, the GELU product written by lane 0), interleaved over CTAs so a short last round
//      spreads over every SM; each warp's next tile is in flight while it uses one (warp_stream);
//   -- one grid barrier (an arrival counter that only grows: no reset, no race with the next
//      launch); C's first tile is issued before it --
//   C. down: CTA b owns rows b, b + G, ...; its 16 warps split K, sum in shared memory in a fixed
//      order and write the CTA's rows (f32) to `part`;
//   D. the last CTA to finish C (a second counter) adds the norm of those rows to its own copy of
//      the residual from A, writes h and the next layer's input norm.
// Each residual, norm and GELU rounds to bf16 where rmsnorm_add_rmsnorm, matmul_gelu_mul and
// matmul round; the sums (norm reductions over 512 threads, the down projection's 16 slices) run
// in this kernel's order, so results match the sequence within its bf16 rounding, not bit for bit.
// Reference: the same op on the CPU backend (the sequence); test: native/test/cases.ts
// mlpBlockCases; bench: bench_kernels `mlp_block` against the sequence (`layer_chain` MLP rows).
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemv_common.cuh"
#include "kernels/cuda/mlp_block.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/vec.cuh"
#include "runtime/env.h"

namespace gemma3::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kVecs = 2;   // 8-value vectors of H a thread: H <= kVecs * 8 * kThreads = 8192
constexpr int kGuU = 5;    // gate/up: 16-byte chunks a lane and row in flight (K = 1152 in one)
constexpr int kDownU = 4;  // down: the same per lane and row of a slice

using detail::ld_stream16;
using detail::warp_sum;

struct Args {
  const bf16* r;
  bf16* h;
  const bf16* w_attn_post;
  const bf16* w_ffn_pre;
  const bf16* w_gu;
  const bf16* w_down;
  const bf16* w_ffn_post;
  const bf16* w_next;
  bf16* out;
  bf16* act;
  float* part;
  unsigned long long* sync;
  int H, F;
  float eps;
  bool preload;
  long long* prof;
};

__device__ __forceinline__ float bf_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

// acc + the dot of 8 bf16 weights with 8 bf16 x values, in element order.
__device__ __forceinline__ float dot8(const uint4& w, const uint4& x, float acc) {
  acc = fmaf(bf_lo(w.x), bf_lo(x.x), acc);
  acc = fmaf(bf_hi(w.x), bf_hi(x.x), acc);
  acc = fmaf(bf_lo(w.y), bf_lo(x.y), acc);
  acc = fmaf(bf_hi(w.y), bf_hi(x.y), acc);
  acc = fmaf(bf_lo(w.z), bf_lo(x.z), acc);
  acc = fmaf(bf_hi(w.z), bf_hi(x.z), acc);
  acc = fmaf(bf_lo(w.w), bf_lo(x.w), acc);
  acc = fmaf(bf_hi(w.w), bf_hi(x.w), acc);
  return acc;
}

__device__ __forceinline__ void unpack8(const uint4& u, float (&f)[8]) {
  f[0] = bf_lo(u.x), f[1] = bf_hi(u.x), f[2] = bf_lo(u.y), f[3] = bf_hi(u.y);
  f[4] = bf_lo(u.z), f[5] = bf_hi(u.z), f[6] = bf_lo(u.w), f[7] = bf_hi(u.w);
}

__device__ __forceinline__ uint4 pack8(const float (&f)[8]) {
  return make_uint4(vec::pack_bf16x2(f[0], f[1]), vec::pack_bf16x2(f[2], f[3]),
                    vec::pack_bf16x2(f[4], f[5]), vec::pack_bf16x2(f[6], f[7]));
}

__device__ __forceinline__ uint4 ld_vec(const bf16* p) {
  return *reinterpret_cast<const uint4*>(p);
}
// Written by other CTAs of this launch: read from L2, never from a stale L1 line.
__device__ __forceinline__ uint4 ld_vec_l2(const bf16* p) {
  return __ldcg(reinterpret_cast<const uint4*>(p));
}

__device__ __forceinline__ unsigned long long ld_acquire(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ float block_sum(float v, float* red) {
  return vec::block_reduce(
      v, [](float a, float b) { return a + b; }, 0.0f, red);
}

// Every CTA of the grid arrives once: the counter only grows, and since no CTA can arrive at a
// later barrier before all have arrived at this one, old / G names this barrier's generation.
__device__ __forceinline__ void grid_barrier(unsigned long long* counter) {
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned long long G = gridDim.x;
    __threadfence();
    const unsigned long long old = atomicAdd(counter, 1ull);
    const unsigned long long target = (old / G + 1) * G;
    while (ld_acquire(counter) < target) {
    }
  }
  __syncthreads();
}

// A warp's stream of n work items, item i + 1's weight loads issued before item i is consumed
// (two register buffers, named statically so they stay in registers). Item 0 is issued by the
// caller when `first_issued` (before pdl_wait, or before the grid barrier).
template <int U, class Issue, class Consume>
__device__ __forceinline__ void warp_stream(int n, bool first_issued, uint4 (&a)[2][U],
                                            uint4 (&b)[2][U], Issue issue, Consume consume) {
  if (n <= 0) return;
  if (!first_issued) issue(a, 0);
  for (int i = 0;;) {
    if (i + 1 < n) issue(b, i + 1);
    consume(a, i);
    if (++i >= n) break;
    if (i + 1 < n) issue(a, i + 1);
    consume(b, i);
    if (++i >= n) break;
  }
}

// Phase timestamps (globaltimer ns) of CTA b when a.prof != null: prof[b * 8 + k] for the start,
// after A, after B, after the barrier, after C and (last CTA only) after D; bench_kernels reads
// them.
__device__ __forceinline__ void stamp(long long* prof, int k) {
  if (prof != nullptr && threadIdx.x == 0) {
    long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    prof[blockIdx.x * 8 + k] = t;
  }
}

__global__ void __launch_bounds__(kThreads, 1) mlp_block_kernel(Args a) {
  extern __shared__ uint4 smem[];
  const int H = a.H, F = a.F;
  const int xs_len = (H > F ? H : F);
  bf16* xs = reinterpret_cast<bf16*>(smem);           // [max(H, F)]: x2 (A, B), then act (C)
  float* hs = reinterpret_cast<float*>(xs + xs_len);  // [H]: the residual after A, as float
  bf16* wsm = reinterpret_cast<bf16*>(hs + H);        // [4][H]: the four norm weights
  __shared__ float red[32];
  __shared__ int is_last;
  stamp(a.prof, 0);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int G = gridDim.x, nw = G * kWarps;
  const int gw = blockIdx.x + G * warp;  // this warp's first unit, warps interleaved over CTAs
  const int kc = H / 8, nvec = H / 8;    // 16-byte chunks of a gate/up row; vectors of H

  // B's items: (unit u, tile t), u = gw + (i / tg) nw the output row (gate row u, up row F + u),
  // tile t its chunks t 32 kGuU + lane + 32 j.
  const int tg = (kc + 32 * kGuU - 1) / (32 * kGuU);
  const int ng = gw < F ? tg * ((F - 1 - gw) / nw + 1) : 0;
  auto issue_gu = [&](uint4(&w)[2][kGuU], int i) {
    const int u = gw + (i / tg) * nw, c = (i % tg) * 32 * kGuU + lane;
    const bf16* g = a.w_gu + int64_t(u) * H;
    const bf16* up = a.w_gu + int64_t(F + u) * H;
#pragma unroll
    for (int j = 0; j < kGuU; ++j) {
      const int cc = c + 32 * j;
      if (cc < kc) {
        w[0][j] = ld_stream16(g + 8 * cc);
        w[1][j] = ld_stream16(up + 8 * cc);
      }
    }
  };
  uint4 ba[2][kGuU], bb[2][kGuU];
  const bool preload = a.preload && ng > 0;
  // The norm weights into shared memory (nothing in a step writes them).
  for (int i = tid; i < nvec; i += kThreads) {
    const bf16* src[4] = {a.w_attn_post, a.w_ffn_pre, a.w_ffn_post, a.w_next};
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (src[k] != nullptr)
        *reinterpret_cast<uint4*>(wsm + k * H + 8 * i) = ld_vec(src[k] + 8 * i);
  }
  pdl_wait();  // pdl.cuh: r and h come from the kernels before

  // ---- A: h' = T(h + T(norm(r))), x2 = T(norm(h')), every CTA for itself ----
  uint4 rv[kVecs], hv[kVecs];
#pragma unroll
  for (int it = 0; it < kVecs; ++it) {
    const int i = tid + it * kThreads;
    if (i < nvec) rv[it] = ld_vec(a.r + 8 * i), hv[it] = ld_vec(a.h + 8 * i);
  }
  // B's first tile behind A's loads, not before them and not before pdl_wait: weight traffic
  // issued first delays the few L2 round trips A waits on (session 13; call 2 of session 14: A
  // 2.4 -> 5.2 µs with the tile issued before pdl_wait).
  if (preload) issue_gu(ba, 0);
  float ss = 0.f;
#pragma unroll
  for (int it = 0; it < kVecs; ++it) {
    if (tid + it * kThreads < nvec) {
      float v[8];
      unpack8(rv[it], v);
#pragma unroll
      for (int j = 0; j < 8; ++j) ss += v[j] * v[j];
    }
  }
  const float inv = 1.0f / sqrtf(block_sum(ss, red) / float(H) + a.eps);
  float ss2 = 0.f;
#pragma unroll
  for (int it = 0; it < kVecs; ++it) {
    const int i = tid + it * kThreads;
    if (i < nvec) {
      float v[8], w[8], hh[8];
      unpack8(rv[it], v);
      unpack8(ld_vec(wsm + 8 * i), w);
      unpack8(hv[it], hh);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        // rmsnorm_add: the norm rounds to T, then the residual add rounds (no FMA contraction).
        v[j] =
            vec::round_t<bf16>(__fadd_rn(hh[j], vec::round_t<bf16>((v[j] * inv) * (1.0f + w[j]))));
        hs[8 * i + j] = v[j];
        ss2 += v[j] * v[j];
      }
    }
  }
  const float inv2 = 1.0f / sqrtf(block_sum(ss2, red) / float(H) + a.eps);
#pragma unroll
  for (int it = 0; it < kVecs; ++it) {
    const int i = tid + it * kThreads;
    if (i < nvec) {
      float y[8], w[8];
      unpack8(ld_vec(wsm + H + 8 * i), w);
#pragma unroll
      for (int j = 0; j < 8; ++j) y[j] = (hs[8 * i + j] * inv2) * (1.0f + w[j]);
      *reinterpret_cast<uint4*>(xs + 8 * i) = pack8(y);
    }
  }
  __syncthreads();
  stamp(a.prof, 1);

  // ---- B: act[u] = T(gelu_mul(T(x2 . Wg[u]), T(x2 . Wu[u]))) ----
  {
    float acc0 = 0.f, acc1 = 0.f;
    auto consume = [&](uint4(&w)[2][kGuU], int i) {
      const int t = i % tg, c = t * 32 * kGuU + lane;
#pragma unroll
      for (int j = 0; j < kGuU; ++j) {
        const int cc = c + 32 * j;
        if (cc < kc) {
          const uint4 xv = *reinterpret_cast<const uint4*>(xs + 8 * cc);
          acc0 = dot8(w[0][j], xv, acc0);
          acc1 = dot8(w[1][j], xv, acc1);
        }
      }
      if (t == tg - 1) {
        const float s0 = warp_sum(acc0), s1 = warp_sum(acc1);
        if (lane == 0) {
          const int u = gw + (i / tg) * nw;
          const float g = vec::round_t<bf16>(s0), up = vec::round_t<bf16>(s1);
          a.act[u] = from_f32<bf16>(gelu_mul_f32<bf16>(g, up));
        }
        acc0 = acc1 = 0.f;
      }
    };
    warp_stream<kGuU>(ng, preload, ba, bb, issue_gu, consume);
  }
  __threadfence();  // this thread's act rows before the barrier's arrival
  stamp(a.prof, 2);

  // C's items: CTA b owns rows n = b + G k (k < nr); warp w takes slice w of K = F (chunks
  // [c0, c1)) of every owned row, tile t of item i = k td + t its chunks c0 + t 32 kDownU + lane +
  // 32 j below c1. Each warp's row sums go to shared memory; the CTA adds its 16 slices in order.
  const int kd = F / 8, nr = blockIdx.x < H ? (H - 1 - int(blockIdx.x)) / G + 1 : 0;
  const int c0 = int(int64_t(warp) * kd / kWarps), c1 = int(int64_t(warp + 1) * kd / kWarps);
  const int td = (c1 - c0 + 32 * kDownU - 1) / (32 * kDownU);
  const int nd = c1 > c0 ? nr * td : 0;
  float* cpart = hs + 3 * H;  // [nr][kWarps], after the norm weights (4 H bf16 = 2 H floats)
  auto issue_down = [&](uint4(&w)[2][kDownU], int i) {
    const int n = int(blockIdx.x) + G * (i / td), c = c0 + (i % td) * 32 * kDownU + lane;
    const bf16* row = a.w_down + int64_t(n) * F;
#pragma unroll
    for (int j = 0; j < kDownU; ++j) {
      const int cc = c + 32 * j;
      if (cc < c1) w[0][j] = ld_stream16(row + 8 * cc);
    }
  };
  uint4 da[2][kDownU], db[2][kDownU];
  const bool preload_down = a.preload && nd > 0;
  if (preload_down) issue_down(da, 0);

  grid_barrier(a.sync);  // every act row is written
  for (int i = tid; i < kd; i += kThreads)
    *reinterpret_cast<uint4*>(xs + 8 * i) = ld_vec_l2(a.act + 8 * i);
  __syncthreads();
  stamp(a.prof, 3);

  // ---- C: r2[n] = act . Wd[n], the CTA's rows ----
  {
    float acc = 0.f;
    auto consume = [&](uint4(&w)[2][kDownU], int i) {
      const int t = i % td, c = c0 + t * 32 * kDownU + lane;
#pragma unroll
      for (int j = 0; j < kDownU; ++j) {
        const int cc = c + 32 * j;
        if (cc < c1) acc = dot8(w[0][j], *reinterpret_cast<const uint4*>(xs + 8 * cc), acc);
      }
      if (t == td - 1) {
        const float sum = warp_sum(acc);
        if (lane == 0) cpart[(i / td) * kWarps + warp] = sum;
        acc = 0.f;
      }
    };
    warp_stream<kDownU>(nd, preload_down, da, db, issue_down, consume);
  }
  __syncthreads();
  for (int k = tid; k < nr; k += kThreads) {
    float sum = 0.f;
    for (int w = 0; w < kWarps; ++w)  // a warp whose slice is empty (kd < 16) wrote nothing
      if (int64_t(w + 1) * kd / kWarps > int64_t(w) * kd / kWarps) sum += cpart[k * kWarps + w];
    a.part[int(blockIdx.x) + G * k] = sum;
  }
  __threadfence();  // this thread's rows before the arrival below
  stamp(a.prof, 4);

  // ---- D: the last CTA out adds the down projection's norm and norms for the next layer ----
  pdl_trigger();  // the next kernel's CTAs may take the SMs that the others leave
  __syncthreads();
  if (tid == 0) {
    __threadfence();
    const unsigned long long old = atomicAdd(a.sync + 1, 1ull);
    is_last = (old % (unsigned long long)G) == (unsigned long long)(G - 1);
    if (is_last) __threadfence();
  }
  __syncthreads();
  if (!is_last) return;

  float r2[kVecs][8];
  float ss3 = 0.f;
#pragma unroll
  for (int it = 0; it < kVecs; ++it) {
    const int i = tid + it * kThreads;
    if (i < nvec) {
      const float4* q = reinterpret_cast<const float4*>(a.part + 8 * i);
      const float4 lo = __ldcg(q), hi = __ldcg(q + 1);
      const float sum[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        r2[it][j] = vec::round_t<bf16>(sum[j]);  // matmul's output, rounded once
        ss3 += r2[it][j] * r2[it][j];
      }
    }
  }
  const float inv3 = 1.0f / sqrtf(block_sum(ss3, red) / float(H) + a.eps);
  float ss4 = 0.f;
#pragma unroll
  for (int it = 0; it < kVecs; ++it) {
    const int i = tid + it * kThreads;
    if (i < nvec) {
      float w[8];
      unpack8(ld_vec(wsm + 2 * H + 8 * i), w);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        r2[it][j] = vec::round_t<bf16>(
            __fadd_rn(hs[8 * i + j], vec::round_t<bf16>((r2[it][j] * inv3) * (1.0f + w[j]))));
        ss4 += r2[it][j] * r2[it][j];
      }
      *reinterpret_cast<uint4*>(a.h + 8 * i) = pack8(r2[it]);
    }
  }
  if (a.w_next != nullptr) {
    const float inv4 = 1.0f / sqrtf(block_sum(ss4, red) / float(H) + a.eps);
#pragma unroll
    for (int it = 0; it < kVecs; ++it) {
      const int i = tid + it * kThreads;
      if (i < nvec) {
        float w[8], y[8];
        unpack8(ld_vec(wsm + 3 * H + 8 * i), w);
#pragma unroll
        for (int j = 0; j < 8; ++j) y[j] = (r2[it][j] * inv4) * (1.0f + w[j]);
        *reinterpret_cast<uint4*>(a.out + 8 * i) = pack8(y);
      }
    }
  }
  stamp(a.prof, 5);
}

// x (max(H, F) bf16), the residual (H floats), the norm weights (4 H bf16) and C's row sums.
size_t smem_bytes(int64_t H, int64_t F, int64_t ctas) {
  const int64_t xs = (H > F ? H : F) * 2, rows = (H + ctas - 1) / ctas;
  return size_t((xs + 15) / 16 * 16 + H * 4 + 4 * H * 2 + rows * kWarps * 4);
}

bool aligned16(const void* p) { return p == nullptr || vec::aligned16(p); }

}  // namespace

Status mlp_block_decode(const bf16* r, bf16* h, const bf16* w_attn_post, const bf16* w_ffn_pre,
                        const bf16* w_gate_up, const bf16* w_down, const bf16* w_ffn_post,
                        const bf16* w_next, bf16* out, bf16* act, float* part,
                        unsigned long long* sync, int64_t H, int64_t F, float eps, bool* taken,
                        cudaStream_t stream, long long* prof) {
  *taken = false;
  if (H <= 0 || F <= 0 || H % 8 != 0 || F % 8 != 0 || H > int64_t(kVecs) * 8 * kThreads ||
      F > (int64_t(1) << 24) || !sm90_or_newer())
    return Status::Ok();
  for (const void* p : {static_cast<const void*>(r), static_cast<const void*>(h),
                        static_cast<const void*>(w_attn_post), static_cast<const void*>(w_ffn_pre),
                        static_cast<const void*>(w_gate_up), static_cast<const void*>(w_down),
                        static_cast<const void*>(w_ffn_post), static_cast<const void*>(w_next),
                        static_cast<const void*>(out), static_cast<const void*>(act),
                        static_cast<const void*>(part)})
    if (!aligned16(p)) return Status::Ok();
  if ((w_next == nullptr) != (out == nullptr) || !vec::aligned(sync, 8)) return Status::Ok();

  int dev = 0, sms = 0, occ = 0;
  G3_CUDA_RETURN(cudaGetDevice(&dev));
  G3_RETURN_IF_ERROR(detail::sm_count(&sms));
  const size_t smem = smem_bytes(H, F, sms);
  int coop = 0;
  G3_CUDA_RETURN(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev));
  if (!coop) return Status::Ok();
  if (smem > 48 * 1024) {
    int optin = 0;
    G3_CUDA_RETURN(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    if (smem > size_t(optin)) return Status::Ok();
    G3_CUDA_RETURN(cudaFuncSetAttribute(mlp_block_kernel,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  }
  G3_CUDA_RETURN(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, mlp_block_kernel, kThreads, smem));
  if (occ < 1) return Status::Ok();

  static const bool preload = !env_is("GEMMA3_MLP_BLOCK_PRELOAD", "0");
  Args a{r,   h,    w_attn_post, w_ffn_pre, w_gate_up, w_down, w_ffn_post, w_next, out,
         act, part, sync,        int(H),    int(F),    eps,    preload,    prof};

  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeCooperative;
  attr[0].val.cooperative = 1;
  attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[1].val.programmaticStreamSerializationAllowed = pdl_enabled() ? 1 : 0;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(unsigned(sms));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = 2;
  G3_CUDA_RETURN(cudaLaunchKernelEx(&cfg, mlp_block_kernel, a));
  *taken = true;
  return check_launch("mlp_block");
}

}  // namespace gemma3::cuda
