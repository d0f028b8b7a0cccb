// GEMM path of matmul (M > kGemvMaxM): y[m, n] = sum_k x[m, k] * W[n, k].
//  - TX = bf16, TW in {bf16, fp8e4m3, q8_0, q4_0, q4_0s, q8_0s, q4_K, q5_K, q6_K}: tensor cores
//  (mma.sync
//    m16n8k16 bf16 -> f32), 128x128x32 CTA tiles, 8 warps of 64x32, double-buffered shared memory
//    (cp.async for bf16 tiles; quantized W is loaded to registers one tile ahead and expanded to
//    bf16 in shared memory). Every expansion is exact: fp8 e4m3 values are bf16 values, and the
//    block formats store the integer q (exact in bf16) while their scales multiply f32 partial
//    sums: q8_0 / q4_0 d per 32-wide tile; q4_K / q5_K x = a q - b per 32-wide sub-block, so the
//    tile adds a * sum(x q) - b * sum(x), sum(x) taken by one more MMA against ones; q6_K one
//    scale per 16-wide sub-block, applied after each k16 step.
//  - TX = float (any TW) and TX = bf16 with TW = float: a plain FFMA tiled kernel (64x64x32 tiles,
//    4x4 outputs per thread) so float x and float W stay float32-exact.
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/vec.cuh"
#include "runtime/kquant.h"

namespace gemma3::cuda::detail {
namespace {

// ---- tensor-core kernel (TX = bf16) ----

constexpr int kBM = 128, kBN = 128, kBK = 32;
constexpr int kMmaThreads = 256;
constexpr int kLds =
    kBK + 8;  // smem row stride in bf16 (80 bytes): ldmatrix rows hit distinct banks

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16-byte async copy; valid == false zero-fills the destination without reading src.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4],
                                         const uint32_t (&b)[2]) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// bf16 bits of a float that is exactly representable in bf16 (small integers, fp8 values).
__device__ __forceinline__ uint32_t exact_bf16_bits(float f) { return __float_as_uint(f) >> 16; }
__device__ __forceinline__ uint32_t pack2(uint32_t lo, uint32_t hi) { return lo | (hi << 16); }

using Tile = uint16_t[kLds];  // one smem row of a 128 x kBK bf16 tile

// How a loader's tile is scaled (mma_tile): not at all; by sd[col] per tile (q8_0, q4_0); by
// a = sd[col] and b = sd[kBN + col] as a * sum(x q) - b * sum(x) per tile (q4_K, q5_K); by
// sd[ks kBN + col] per k16 step ks (q6_K). sd: the stage's [2][kBN] floats.
enum ScaleMode { kNoScale = 0, kTileScale = 1, kTileScaleMin = 2, kK16Scale = 3 };

// A bf16 tile [rows, K] -> smem rows r0 .. r0 + 127, columns k0 .. k0 + 31, zero outside.
// kVec: K % 8 == 0 and a 16-byte aligned base -> cp.async; otherwise element-wise loads.
template <bool kVec>
struct Bf16TileLoader {
  const bf16* p;
  int64_t rows, K, r0;
  __device__ void issue(Tile* s, int64_t k0) const {
    if constexpr (kVec) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int idx = threadIdx.x + i * kMmaThreads;
        const int row = idx >> 2, kc = (idx & 3) * 8;
        const int64_t r = r0 + row, k = k0 + kc;
        const bool ok = r < rows && k < K;
        cp_async16(&s[row][kc], ok ? p + r * K + k : p, ok);
      }
    } else {
      const int row = threadIdx.x >> 1, kc = (threadIdx.x & 1) * 16;
      const int64_t r = r0 + row;
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const int64_t k = k0 + kc + j;
        s[row][kc + j] = (r < rows && k < K) ? p[r * K + k].bits : uint16_t(0);
      }
    }
  }
  __device__ void commit(Tile*, float*) const {}
  static constexpr int kMode = kNoScale;
};

// fp8 W, 16-byte loads (K % 16 == 0, aligned): thread -> (row tid/2, 16 columns). Raw bytes go by
// cp.async to a staging tile (keeps them out of registers during the MMAs); commit() expands them.
struct Fp8VecLoader {
  const fp8e4m3* p;
  int64_t rows, K, r0;
  uint8_t* stage;  // stage: [kBN, kBK] bytes of shared memory
  __device__ void issue(Tile*, int64_t k0) const {
    const int row = threadIdx.x >> 1, kc = (threadIdx.x & 1) * 16;
    const int64_t r = r0 + row, k = k0 + kc;
    const bool ok = r < rows && k < K;
    cp_async16(stage + row * kBK + kc, ok ? p + r * K + k : p, ok);
  }
  // Reads back only the bytes this thread copied, so waiting for its own cp.async is enough (the
  // caller has committed the group holding them).
  __device__ void commit(Tile* s, float*) const {
    const int row = threadIdx.x >> 1, kc = (threadIdx.x & 1) * 16;
    cp_async_wait_all();
    const uint4 raw = *reinterpret_cast<const uint4*>(stage + row * kBK + kc);
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
    uint32_t out[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(
          static_cast<__nv_fp8x2_storage_t>((words[i >> 1] >> (16 * (i & 1))) & 0xffffu),
          __NV_E4M3);
      const float2 f = __half22float2(__half2(h));
      out[i] = pack2(exact_bf16_bits(f.x), exact_bf16_bits(f.y));
    }
    uint4* dst = reinterpret_cast<uint4*>(&s[row][kc]);
    dst[0] = make_uint4(out[0], out[1], out[2], out[3]);
    dst[1] = make_uint4(out[4], out[5], out[6], out[7]);
  }
  static constexpr int kMode = kNoScale;
};

// fp8 W, any K: element-wise.
struct Fp8ScalarLoader {
  const fp8e4m3* p;
  int64_t rows, K, r0;
  __device__ void issue(Tile* s, int64_t k0) const {
    const int row = threadIdx.x >> 1, kc = (threadIdx.x & 1) * 16;
    const int64_t r = r0 + row;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int64_t k = k0 + kc + j;
      s[row][kc + j] =
          (r < rows && k < K) ? uint16_t(exact_bf16_bits(fp8e4m3_to_f32(p[r * K + k]))) : 0;
    }
  }
  __device__ void commit(Tile*, float*) const {}
  static constexpr int kMode = kNoScale;
};

// Raw 16-bit words of the block at k-tile k0 of row r0 + tid/2 (blocks are only 2-byte aligned):
// d = the f16 scale, q = N words of quants from word 1 + N * (tid & 1); rows past the end get fill.
template <int N, typename TB>
__device__ __forceinline__ void load_block_words(const TB* p, int64_t rows, int64_t K, int64_t r0,
                                                 int64_t k0, uint32_t fill, uint32_t& d,
                                                 uint32_t (&q)[N]) {
  const int row = threadIdx.x >> 1, h = threadIdx.x & 1;
  const int64_t r = r0 + row;
  if (r < rows) {
    const unsigned short* b = reinterpret_cast<const unsigned short*>(p + r * (K / kQK) + k0 / kQK);
    d = __ldg(b);
#pragma unroll
    for (int j = 0; j < N; ++j) q[j] = __ldg(b + 1 + N * h + j);
  } else {
    d = 0;
#pragma unroll
    for (int j = 0; j < N; ++j) q[j] = fill;
  }
}

// q8_0 W: a k-tile is one block per row; thread -> (row tid/2, half h: qs[16h .. 16h + 15]).
// Blocks are 2-byte aligned, so u16 loads. smem gets the integers q, d goes to the scale row.
__device__ __forceinline__ void store_q8_tile(uint32_t d, const uint32_t (&q)[8], Tile* s,
                                              float* sd) {
  const int row = threadIdx.x >> 1, h = threadIdx.x & 1;
  if (h == 0) sd[row] = __half2float(__ushort_as_half(static_cast<unsigned short>(d)));
  uint32_t out[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int lo = int32_t(q[j] << 24) >> 24, hi = int32_t(q[j] << 16) >> 24;
    out[j] = pack2(exact_bf16_bits(float(lo)), exact_bf16_bits(float(hi)));
  }
  uint4* dst = reinterpret_cast<uint4*>(&s[row][16 * h]);
  dst[0] = make_uint4(out[0], out[1], out[2], out[3]);
  dst[1] = make_uint4(out[4], out[5], out[6], out[7]);
}
struct Q8Loader {
  const block_q8_0* p;
  int64_t rows, K, r0;
  uint32_t d, q[8];
  __device__ void issue(Tile*, int64_t k0) { load_block_words(p, rows, K, r0, k0, 0u, d, q); }
  __device__ void commit(Tile* s, float* sd) const { store_q8_tile(d, q, s, sd); }
  static constexpr int kMode = kTileScale;
};

// q4_0 W: thread -> (row tid/2, half h: qs[8h .. 8h + 7]) = weights 8h.. (low nibbles) and
// 16 + 8h.. (high nibbles), stored as q - 8. d: the f16 bits; q: the half's bytes as 4 words of 2.
__device__ __forceinline__ void store_q4_tile(uint32_t d, const uint32_t (&q)[4], Tile* s,
                                              float* sd) {
  const int row = threadIdx.x >> 1, h = threadIdx.x & 1;
  if (h == 0) sd[row] = __half2float(__ushort_as_half(static_cast<unsigned short>(d)));
  uint32_t lo[4], hi[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t w = q[j];  // bytes 2j, 2j + 1
    const float l0 = float(int32_t(w & 0xfu) - 8), l1 = float(int32_t((w >> 8) & 0xfu) - 8);
    const float h0 = float(int32_t((w >> 4) & 0xfu) - 8), h1 = float(int32_t((w >> 12) & 0xfu) - 8);
    lo[j] = pack2(exact_bf16_bits(l0), exact_bf16_bits(l1));
    hi[j] = pack2(exact_bf16_bits(h0), exact_bf16_bits(h1));
  }
  *reinterpret_cast<uint4*>(&s[row][8 * h]) = make_uint4(lo[0], lo[1], lo[2], lo[3]);
  *reinterpret_cast<uint4*>(&s[row][16 + 8 * h]) = make_uint4(hi[0], hi[1], hi[2], hi[3]);
}
struct Q4Loader {
  const block_q4_0* p;
  int64_t rows, K, r0;
  uint32_t d, q[4];
  __device__ void issue(Tile*, int64_t k0) {
    load_block_words(p, rows, K, r0, k0, 0x8888u, d, q);  // fill: nibbles of 8 = zero weights
  }
  __device__ void commit(Tile* s, float* sd) const { store_q4_tile(d, q, s, sd); }
  static constexpr int kMode = kTileScale;
};
// Split layouts (DType::kQ4_0S / kQ8_0S, kQ = 16 / 32 quant bytes a block): the tile of the GGUF
// loader above, the half's kQ / 2 quant bytes read from byte kQ kb + h kQ / 2 of the row and d
// from byte kQ nb + 2 kb (rows are 2-byte aligned: 16-bit loads).
template <int kQ>
struct SplitLoader {
  const void* p;
  int64_t rows, K, r0;
  uint32_t d, q[kQ / 4];
  __device__ void issue(Tile*, int64_t k0) {
    const int row = threadIdx.x >> 1, h = threadIdx.x & 1;
    const int64_t r = r0 + row, nb = K / kQK, kb = k0 / kQK;
    if (r < rows) {
      const char* base = static_cast<const char*>(p) + r * nb * (2 + kQ);
      const unsigned short* qs =
          reinterpret_cast<const unsigned short*>(base + kb * kQ + h * (kQ / 2));
      d = __ldg(reinterpret_cast<const unsigned short*>(base + nb * kQ) + kb);
#pragma unroll
      for (int j = 0; j < kQ / 4; ++j) q[j] = __ldg(qs + j);
    } else {
      d = 0;
#pragma unroll
      for (int j = 0; j < kQ / 4; ++j) q[j] = kQ == 16 ? 0x8888u : 0u;  // zero weights
    }
  }
  __device__ void commit(Tile* s, float* sd) const {
    if constexpr (kQ == 16) {
      store_q4_tile(d, q, s, sd);
    } else {
      store_q8_tile(d, q, s, sd);
    }
  }
  static constexpr int kMode = kTileScale;
};

// ---- K-quant loaders: a k-tile (32 wide) is one 32-element sub-block of q4_K / q5_K, or two
// 16-element sub-blocks of q6_K. Thread -> (row tid/2, half h: tile columns 16h .. 16h + 15).
// Super-blocks are 2-byte aligned (q6_K's 210 bytes), so quants are read as 16-bit words.

// 16 bytes at p (2-byte aligned) as 4 words, through eight 16-bit loads.
__device__ __forceinline__ void ldg16_u16(const uint8_t* p, uint32_t (&w)[4]) {
  const unsigned short* u = reinterpret_cast<const unsigned short*>(p);
#pragma unroll
  for (int j = 0; j < 4; ++j)
    w[j] = uint32_t(__ldg(u + 2 * j)) | (uint32_t(__ldg(u + 2 * j + 1)) << 16);
}
__device__ __forceinline__ float ldg_f16(const f16& h) {
  return __half2float(__ushort_as_half(__ldg(reinterpret_cast<const unsigned short*>(&h))));
}
// 16 levels (bytes of w, each < 256 and exact in bf16) minus `off`, as bf16 at dst (16-byte
// aligned).
__device__ __forceinline__ void store_levels(const uint32_t (&w)[4], int off, uint16_t* dst) {
  uint32_t out[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const uint32_t word = w[j >> 1] >> (16 * (j & 1));
    const float lo = float(int(word & 0xffu) - off), hi = float(int((word >> 8) & 0xffu) - off);
    out[j] = pack2(exact_bf16_bits(lo), exact_bf16_bits(hi));
  }
  uint4* d = reinterpret_cast<uint4*>(dst);
  d[0] = make_uint4(out[0], out[1], out[2], out[3]);
  d[1] = make_uint4(out[4], out[5], out[6], out[7]);
}

// q4_K / q5_K: sub-block s = (k0 / 32) % 8 is nibble s % 2 of qs[32 (s / 2) + l] (and, q5_K, bit
// s of qh[l]); the tile stores q and the scale row gets a = d sc, b = dmin m (kTileScaleMin).
template <typename TB>
struct QKxLoader {
  const TB* p;
  int64_t rows, K, r0;
  uint32_t q[4];
  float a, b;
  __device__ void issue(Tile*, int64_t k0) {
    const int row = threadIdx.x >> 1, h = threadIdx.x & 1;
    const int64_t r = r0 + row;
    if (r < rows) {
      const TB& blk = p[r * (K / kQK_K) + k0 / kQK_K];
      const int s = static_cast<int>((k0 / 32) % 8);
      uint32_t lo[4];
      ldg16_u16(blk.qs + 32 * (s >> 1) + 16 * h, lo);
#pragma unroll
      for (int j = 0; j < 4; ++j) q[j] = (lo[j] >> (4 * (s & 1))) & 0x0f0f0f0fu;
      if constexpr (std::is_same_v<TB, block_q5_K>) {
        uint32_t hb[4];
        ldg16_u16(blk.qh + 16 * h, hb);
#pragma unroll
        for (int j = 0; j < 4; ++j) q[j] |= ((hb[j] >> s) & 0x01010101u) << 4;
      }
      int sc, m;
      kq_scale_min(s, blk.scales, &sc, &m);  // 2-3 byte loads
      a = ldg_f16(blk.d) * float(sc);
      b = ldg_f16(blk.dmin) * float(m);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) q[j] = 0;
      a = b = 0.f;
    }
  }
  __device__ void commit(Tile* s, float* sd) const {
    const int row = threadIdx.x >> 1, h = threadIdx.x & 1;
    if (h == 0) sd[row] = a, sd[kBN + row] = b;
    store_levels(q, 0, &s[row][16 * h]);
  }
  static constexpr int kMode = kTileScaleMin;
};

// q6_K: tile t = (k0 / 32) % 8 = 4 n + g holds elements 128 n + 32 g + l: nibble g / 2 of
// ql[64 n + 32 (g % 2) + l], bits 2g of qh[32 n + l]; half h (l / 16) has scale sc[8 n + 2 g + h].
// The tile stores q - 32, the scale rows get d sc per half (kK16Scale).
struct Q6KLoader {
  const block_q6_K* p;
  int64_t rows, K, r0;
  uint32_t q[4];
  float a;
  __device__ void issue(Tile*, int64_t k0) {
    const int row = threadIdx.x >> 1, h = threadIdx.x & 1;
    const int64_t r = r0 + row;
    if (r < rows) {
      const block_q6_K& blk = p[r * (K / kQK_K) + k0 / kQK_K];
      const int t = static_cast<int>((k0 / 32) % 8), n = t >> 2, g = t & 3;
      uint32_t lo[4], hi[4];
      ldg16_u16(blk.ql + 64 * n + 32 * (g & 1) + 16 * h, lo);
      ldg16_u16(blk.qh + 32 * n + 16 * h, hi);
#pragma unroll
      for (int j = 0; j < 4; ++j)
        q[j] =
            ((lo[j] >> (4 * (g >> 1))) & 0x0f0f0f0fu) | (((hi[j] >> (2 * g)) & 0x03030303u) << 4);
      a = ldg_f16(blk.d) *
          float(int8_t(__ldg(reinterpret_cast<const uint8_t*>(blk.scales) + 8 * n + 2 * g + h)));
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) q[j] = 0x20202020u;  // levels of 32: zero weights
      a = 0.f;
    }
  }
  __device__ void commit(Tile* s, float* sd) const {
    const int row = threadIdx.x >> 1, h = threadIdx.x & 1;
    sd[h * kBN + row] = a;
    store_levels(q, 32, &s[row][16 * h]);
  }
  static constexpr int kMode = kK16Scale;
};

template <typename TW, bool kVec>
struct WLoaderFor;
template <bool kVec>
struct WLoaderFor<bf16, kVec> {
  using type = Bf16TileLoader<kVec>;
};
template <bool kVec>
struct WLoaderFor<fp8e4m3, kVec> {
  using type = std::conditional_t<kVec, Fp8VecLoader, Fp8ScalarLoader>;
};
template <bool kVec>
struct WLoaderFor<block_q8_0, kVec> {
  using type = Q8Loader;
};
template <bool kVec>
struct WLoaderFor<block_q4_0, kVec> {
  using type = Q4Loader;
};
template <bool kVec>
struct WLoaderFor<block_q4_0s, kVec> {
  using type = SplitLoader<16>;
};
template <bool kVec>
struct WLoaderFor<block_q8_0s, kVec> {
  using type = SplitLoader<32>;
};
template <bool kVec>
struct WLoaderFor<block_q4_K, kVec> {
  using type = QKxLoader<block_q4_K>;
};
template <bool kVec>
struct WLoaderFor<block_q5_K, kVec> {
  using type = QKxLoader<block_q5_K>;
};
template <bool kVec>
struct WLoaderFor<block_q6_K, kVec> {
  using type = Q6KLoader;
};

template <typename L, typename TW>
__device__ __forceinline__ L make_w_loader(const TW* w, int64_t N, int64_t K, int64_t n0,
                                           uint8_t* stage) {
  if constexpr (std::is_same_v<L, Fp8VecLoader>) {
    return L{w, N, K, n0, stage};
  } else {
    return L{w, N, K, n0};
  }
}

// acc += tmp * scale[col] in the m16n8 accumulator layout (columns 2 (lane & 3) and + 1 of each
// n8 tile), and zeroes tmp.
__device__ __forceinline__ void add_scaled(float (&acc)[4][4][4], float (&tmp)[4][4][4],
                                           const float* scale, int warp_n, int lane) {
#pragma unroll
  for (int nj = 0; nj < 4; ++nj) {
    const int col = warp_n * 32 + nj * 8 + 2 * (lane & 3);
    const float d0 = scale[col], d1 = scale[col + 1];
#pragma unroll
    for (int mi = 0; mi < 4; ++mi) {
      acc[mi][nj][0] = fmaf(tmp[mi][nj][0], d0, acc[mi][nj][0]);
      acc[mi][nj][1] = fmaf(tmp[mi][nj][1], d1, acc[mi][nj][1]);
      acc[mi][nj][2] = fmaf(tmp[mi][nj][2], d0, acc[mi][nj][2]);
      acc[mi][nj][3] = fmaf(tmp[mi][nj][3], d1, acc[mi][nj][3]);
#pragma unroll
      for (int c = 0; c < 4; ++c) tmp[mi][nj][c] = 0.f;
    }
  }
}

// One k-tile (kBK = 32 = two k16 steps) of the warp's 64x32 sub-tile. Block formats accumulate the
// tile (= one quant block) into tmp and add tmp * d[n] so the block scale is applied in f32; the
// K-quants as ScaleMode says.
template <int kMode>
__device__ __forceinline__ void mma_tile(const Tile* sa, const Tile* sb, const float* sd,
                                         float (&acc)[4][4][4], int warp_m, int warp_n, int lane) {
  float tmp[4][4][4];
  float(&dst)[4][4][4] = kMode != kNoScale ? tmp : acc;
  float xs[4][4];  // kTileScaleMin: sum of x over the tile for the fragment's rows
  if constexpr (kMode != kNoScale) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        xs[i][j] = 0.f;
#pragma unroll
        for (int c = 0; c < 4; ++c) tmp[i][j][c] = 0.f;
      }
  }
#pragma unroll
  for (int ks = 0; ks < kBK / 16; ++ks) {
    uint32_t a[4][4];
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
      ldmatrix_x4(a[mi], &sa[warp_m * 64 + mi * 16 + (lane & 15)][ks * 16 + (lane >> 4) * 8]);
    if constexpr (kMode == kTileScaleMin) {
      const uint32_t ones[2] = {0x3f803f80u, 0x3f803f80u};  // bf16 1.0 pairs: C = row sums of x
#pragma unroll
      for (int mi = 0; mi < 4; ++mi) mma_bf16(xs[mi], a[mi], ones);
    }
#pragma unroll
    for (int nj = 0; nj < 2; ++nj) {
      // r = {b0, b1} of n8 tile 2 nj, then {b0, b1} of n8 tile 2 nj + 1.
      uint32_t r[4];
      ldmatrix_x4(r, &sb[warp_n * 32 + nj * 16 + (lane & 7) + (lane >> 4) * 8]
                        [ks * 16 + ((lane >> 3) & 1) * 8]);
      const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
#pragma unroll
      for (int mi = 0; mi < 4; ++mi) {
        mma_bf16(dst[mi][2 * nj], a[mi], b0);
        mma_bf16(dst[mi][2 * nj + 1], a[mi], b1);
      }
    }
    if constexpr (kMode == kK16Scale) add_scaled(acc, tmp, sd + ks * kBN, warp_n, lane);
  }
  if constexpr (kMode == kTileScale || kMode == kTileScaleMin) {
    add_scaled(acc, tmp, sd, warp_n, lane);
  }
  if constexpr (kMode == kTileScaleMin) {
    // acc -= b[col] * sum(x)[row]: xs[mi] holds the row sums in the same fragment positions.
#pragma unroll
    for (int nj = 0; nj < 4; ++nj) {
      const int col = warp_n * 32 + nj * 8 + 2 * (lane & 3);
      const float b0 = sd[kBN + col], b1 = sd[kBN + col + 1];
#pragma unroll
      for (int mi = 0; mi < 4; ++mi) {
        acc[mi][nj][0] = fmaf(-xs[mi][0], b0, acc[mi][nj][0]);
        acc[mi][nj][1] = fmaf(-xs[mi][1], b1, acc[mi][nj][1]);
        acc[mi][nj][2] = fmaf(-xs[mi][2], b0, acc[mi][nj][2]);
        acc[mi][nj][3] = fmaf(-xs[mi][3], b1, acc[mi][nj][3]);
      }
    }
  }
}

// Block formats hold a second 64-float accumulator (tmp): one CTA per SM; others fit two.
template <typename TW>
constexpr int kMmaMinBlocks =
    std::is_same_v<TW, block_q8_0> || std::is_same_v<TW, block_q4_0> ||
            std::is_same_v<TW, block_q4_0s> || std::is_same_v<TW, block_q8_0s> || is_kquant_v<TW>
        ? 1
        : 2;

// CTA (blockIdx.x, blockIdx.y) = (M tile, N tile): M varies fastest so CTAs running together share
// one W tile (read from DRAM once, then L2). Warp (warp_m, warp_n) in 2 x 4 owns 64 x 32 outputs.
template <typename TW, bool kVec>
__global__ void __launch_bounds__(kMmaThreads, kMmaMinBlocks<TW>)
    gemm_mma_kernel(const bf16* __restrict__ x,         // x: [M, K]
                    const TW* __restrict__ w,           // w: [N, K] (blocks: [N, K/32])
                    const float* __restrict__ w_scale,  // w_scale: [N] or null
                    bf16* __restrict__ y,               // y: [M, N]
                    int64_t M, int64_t N, int64_t K) {
  using WLoader = typename WLoaderFor<TW, kVec>::type;
  __shared__ __align__(16) Tile sa[2][kBM];
  __shared__ __align__(16) Tile sb[2][kBN];
  __shared__ float sd[2][2][kBN];  // per stage: the loader's scale rows (ScaleMode)
  // Staging for fp8 raw bytes: one buffer suffices (written after the barrier that ends the
  // iteration which read it).
  __shared__ __align__(16) uint8_t stage[std::is_same_v<WLoader, Fp8VecLoader> ? kBN * kBK : 16];

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warp_m = warp >> 2, warp_n = warp & 3;
  const int64_t m0 = int64_t(blockIdx.x) * kBM, n0 = int64_t(blockIdx.y) * kBN;

  Bf16TileLoader<kVec> al{x, M, K, m0};
  WLoader wl = make_w_loader<WLoader>(w, N, K, n0, stage);

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[i][j][c] = 0.f;

  const int64_t num_k_tiles = (K + kBK - 1) / kBK;
  al.issue(sa[0], 0);
  wl.issue(sb[0], 0);
  cp_async_commit();  // before commit(): wait_group only covers committed groups
  wl.commit(sb[0], sd[0][0]);
  cp_async_wait_all();
  __syncthreads();

  // Double buffer: tile t + 1 is in flight (cp.async / registers) while tile t is multiplied;
  // buffer (t + 1) & 1 was last read in iteration t - 1, which ended with a barrier.
  for (int64_t t = 0; t < num_k_tiles; ++t) {
    const int cur = static_cast<int>(t & 1), nxt = cur ^ 1;
    const bool more = t + 1 < num_k_tiles;
    if (more) {
      al.issue(sa[nxt], (t + 1) * kBK);
      wl.issue(sb[nxt], (t + 1) * kBK);
      cp_async_commit();
    }
    mma_tile<WLoader::kMode>(sa[cur], sb[cur], sd[cur][0], acc, warp_m, warp_n, lane);
    if (more) wl.commit(sb[nxt], sd[nxt][0]);
    cp_async_wait_all();
    __syncthreads();
  }

#pragma unroll
  for (int nj = 0; nj < 4; ++nj) {
    const int64_t col = n0 + warp_n * 32 + nj * 8 + 2 * (lane & 3);
    float s0 = 1.f, s1 = 1.f;
    if (w_scale != nullptr) {
      if (col < N) s0 = __ldg(w_scale + col);
      if (col + 1 < N) s1 = __ldg(w_scale + col + 1);
    }
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int64_t row = m0 + warp_m * 64 + mi * 16 + (lane >> 2) + half * 8;
        if (row >= M) continue;
        bf16* out = y + row * N + col;
        if (col < N) out[0] = f32_to_bf16(acc[mi][nj][2 * half] * s0);
        if (col + 1 < N) out[1] = f32_to_bf16(acc[mi][nj][2 * half + 1] * s1);
      }
  }
}

// ---- FFMA kernel (float-exact paths) ----

constexpr int kFm = 64, kFn = 64, kFk = 32, kFThreads = 256;

// 8 consecutive weights W[n, k .. k + 7] as float, zero where n >= N or k >= K. For block formats
// k % 8 == 0 and K % 32 == 0, so the run lies inside one block.
template <typename TW>
__device__ __forceinline__ void w_run8(const TW* w, int64_t n, int64_t N, int64_t K, int64_t k,
                                       float (&v)[8]) {
  if constexpr (is_kquant_v<TW>) {  // k % 8 == 0: the run lies inside one super-block
    if (n >= N || k >= K) {
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = 0.f;
      return;
    }
    kq_dequant8(w[n * (K / kQK_K) + k / kQK_K], static_cast<int>(k % kQK_K), v);
  } else if constexpr (std::is_same_v<TW, block_q4_0s> || std::is_same_v<TW, block_q8_0s>) {
    if (n >= N || k >= K) {  // split rows: the quant runs, then the d
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = 0.f;
      return;
    }
    constexpr int kQ = sizeof(TW) - 2;  // quant bytes a block
    const int64_t nb = K / kQK, kb = k / kQK;
    const uint8_t* row = reinterpret_cast<const uint8_t*>(w + n * nb);
    const float d = f16_to_f32(f16{reinterpret_cast<const uint16_t*>(row + nb * kQ)[kb]});
    const int j0 = static_cast<int>(k % kQK);  // 0, 8, 16 or 24
    if constexpr (kQ == 32) {
      const int8_t* qs = reinterpret_cast<const int8_t*>(row + kb * kQ + j0);
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = float(qs[j]) * d;
    } else {
      const int shift = j0 < kQK / 2 ? 0 : 4;
      const uint8_t* qs = row + kb * kQ + j0 % (kQK / 2);
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = float(int((qs[j] >> shift) & 0xf) - 8) * d;
    }
  } else if constexpr (!std::is_same_v<TW, block_q8_0> && !std::is_same_v<TW, block_q4_0>) {
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = (n < N && k + j < K) ? to_f32(w[n * K + k + j]) : 0.f;
  } else {
    if (n >= N || k >= K) {
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = 0.f;
      return;
    }
    const TW& b = w[n * (K / kQK) + k / kQK];
    const float d = f16_to_f32(b.d);
    const int j0 = static_cast<int>(k % kQK);  // 0, 8, 16 or 24
    if constexpr (std::is_same_v<TW, block_q8_0>) {
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = float(b.qs[j0 + j]) * d;
    } else {  // q4_0: byte i holds weight i (low nibble) and i + 16 (high nibble)
      const int shift = j0 < kQK / 2 ? 0 : 4;
      const int byte0 = j0 % (kQK / 2);
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = float(int((b.qs[byte0 + j] >> shift) & 0xf) - 8) * d;
    }
  }
}

// CTA = 64 x 64 outputs, thread (ty, tx) in 16 x 16 owns rows ty*4 .. +3, cols tx*4 .. +3. Tiles
// are stored k-major so each k step is one float4 of x and one of W per thread.
template <typename TX, typename TW>
__global__ void __launch_bounds__(kFThreads, 2)
    gemm_ffma_kernel(const TX* __restrict__ x, const TW* __restrict__ w,
                     const float* __restrict__ w_scale, TX* __restrict__ y, int64_t M, int64_t N,
                     int64_t K) {
  __shared__ __align__(16) float sx[kFk][kFm + 4];
  __shared__ __align__(16) float sw[kFk][kFn + 4];
  const int tid = threadIdx.x, ty = tid >> 4, tx = tid & 15;
  const int64_t m0 = int64_t(blockIdx.x) * kFm, n0 = int64_t(blockIdx.y) * kFn;
  const int lrow = tid >> 2, lk = (tid & 3) * 8;  // loader: one row, 8 consecutive k

  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

  for (int64_t k0 = 0; k0 < K; k0 += kFk) {
    float v[8];
    const int64_t m = m0 + lrow;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int64_t k = k0 + lk + j;
      v[j] = (m < M && k < K) ? to_f32(x[m * K + k]) : 0.f;
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) sx[lk + j][lrow] = v[j];
    w_run8(w, n0 + lrow, N, K, k0 + lk, v);
#pragma unroll
    for (int j = 0; j < 8; ++j) sw[lk + j][lrow] = v[j];
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kFk; ++kk) {
      const float4 a = *reinterpret_cast<const float4*>(&sx[kk][ty * 4]);
      const float4 b = *reinterpret_cast<const float4*>(&sw[kk][tx * 4]);
      const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }

#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int64_t n = n0 + tx * 4 + j;
    if (n >= N) continue;
    const float s = w_scale != nullptr ? __ldg(w_scale + n) : 1.f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t m = m0 + ty * 4 + i;
      if (m < M) y[m * N + n] = from_f32<TX>(w_scale != nullptr ? acc[i][j] * s : acc[i][j]);
    }
  }
}

}  // namespace

// Called by matmul<TX, TW> (matmul.cu) with M, N, K >= 1 (block formats K % 32 == 0).
template <typename TX, typename TW>
Status gemm(const TX* x, const TW* w, const float* w_scale, TX* y, int64_t M, int64_t N, int64_t K,
            cudaStream_t stream) {
  constexpr bool kTensorCores = std::is_same_v<TX, bf16> && !std::is_same_v<TW, float>;
  const int64_t bm = kTensorCores ? kBM : kFm, bn = kTensorCores ? kBN : kFn;
  const int64_t grid_m = (M + bm - 1) / bm, grid_n = (N + bn - 1) / bn;
  if (grid_m > 0x7fffffff || grid_n > 65535) {
    return Status(StatusCode::kUnsupported, "matmul gemm: M = " + std::to_string(M) +
                                                ", N = " + std::to_string(N) + " too large");
  }
  const dim3 grid(static_cast<unsigned>(grid_m), static_cast<unsigned>(grid_n));
  if constexpr (kTensorCores) {
    constexpr int64_t kVecK = std::is_same_v<TW, fp8e4m3> ? 16 : 8;
    const bool w_ok =
        std::is_same_v<TW, bf16> || std::is_same_v<TW, fp8e4m3> ? vec::aligned16(w) : true;
    if (K % kVecK == 0 && vec::aligned16(x) && w_ok) {
      gemm_mma_kernel<TW, true><<<grid, kMmaThreads, 0, stream>>>(x, w, w_scale, y, M, N, K);
    } else {
      gemm_mma_kernel<TW, false><<<grid, kMmaThreads, 0, stream>>>(x, w, w_scale, y, M, N, K);
    }
    return check_launch("matmul gemm_mma_kernel");
  } else {
    gemm_ffma_kernel<TX, TW><<<grid, kFThreads, 0, stream>>>(x, w, w_scale, y, M, N, K);
    return check_launch("matmul gemm_ffma_kernel");
  }
}

#define G3_GEMM_INSTANTIATE(TX, TW)                                                                \
  template Status gemm<TX, TW>(const TX*, const TW*, const float*, TX*, int64_t, int64_t, int64_t, \
                               cudaStream_t);
G3_GEMM_INSTANTIATE(float, float)
G3_GEMM_INSTANTIATE(float, bf16)
G3_GEMM_INSTANTIATE(float, block_q8_0)
G3_GEMM_INSTANTIATE(float, block_q4_0)
G3_GEMM_INSTANTIATE(float, block_q4_0s)
G3_GEMM_INSTANTIATE(float, block_q8_0s)
G3_GEMM_INSTANTIATE(float, fp8e4m3)
G3_GEMM_INSTANTIATE(bf16, float)
G3_GEMM_INSTANTIATE(bf16, bf16)
G3_GEMM_INSTANTIATE(bf16, block_q8_0)
G3_GEMM_INSTANTIATE(bf16, block_q4_0)
G3_GEMM_INSTANTIATE(bf16, block_q4_0s)
G3_GEMM_INSTANTIATE(bf16, block_q8_0s)
G3_GEMM_INSTANTIATE(bf16, fp8e4m3)
G3_GEMM_INSTANTIATE(float, block_q4_K)
G3_GEMM_INSTANTIATE(float, block_q5_K)
G3_GEMM_INSTANTIATE(float, block_q6_K)
G3_GEMM_INSTANTIATE(bf16, block_q4_K)
G3_GEMM_INSTANTIATE(bf16, block_q5_K)
G3_GEMM_INSTANTIATE(bf16, block_q6_K)
#undef G3_GEMM_INSTANTIATE

}  // namespace gemma3::cuda::detail
