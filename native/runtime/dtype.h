// Element types shared by CPU (g++) and CUDA (nvcc) code. Storage structs only: arithmetic on
// bf16/f16/fp8 converts to float (CPU: the helpers below; CUDA: cuda_bf16.h / cuda_fp8.h).
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define G3_HD __host__ __device__ __forceinline__
#else
#define G3_HD inline
#endif

namespace gemma3 {

// Values are part of the JS contract (native/src/dtype.ts mirrors them).
enum class DType : int32_t {
  kF32 = 0,
  kBF16 = 1,
  kF16 = 2,
  kFP8E4M3 = 3,  // OCP e4m3fn (no inf, max 448), the format of torch.float8_e4m3fn
  kQ8_0 = 4,     // GGUF block: f16 d + 32 x int8, x = q * d
  kQ4_0 = 5,     // GGUF block: f16 d + 16 bytes of nibbles, x = (q - 8) * d; low nibbles = 0..15
  kI32 = 6,      // token ids, positions, page tables
  // GGUF K-quants (llama.cpp ggml-common.h), super-blocks of 256 weights (runtime/kquant.h):
  kQ4_K = 7,  // f16 d, dmin + 8 x (6-bit scale, 6-bit min) + 4-bit q: x = d sc q - dmin m
  kQ5_K = 8,  // as q4_K with a fifth bit per weight (qh)
  kQ6_K = 9,  // 6-bit q (ql + qh) + 16 x int8 scale + f16 d: x = d sc (q - 32)
  // q4_0 / q8_0 in the GPU's "split" row layout (CUDA only; ops.repack converts): a row's nb =
  // K / 32 blocks keep their quant bytes (16 / 32) and f16 d, but the row holds all the quant runs
  // first (block b's at byte Q b) and then all the d (block b's at byte Q nb + 2 b). Same bytes per
  // row as the GGUF blocks, rows independent (row views and row concatenation hold), so a lane's
  // block is one (q8_0: two) aligned 16-byte loads and a warp's loads are contiguous
  // (block_q4_0s / block_q8_0s, matmul_gemv.cu).
  kQ4_0S = 10,
  kQ8_0S = 11,
};
constexpr int kNumDTypes = 12;  // codes are 0 .. kNumDTypes - 1

struct bf16 {
  uint16_t bits;
};
struct f16 {
  uint16_t bits;
};
struct fp8e4m3 {
  uint8_t bits;
};

constexpr int kQK = 32;  // elements per q8_0 / q4_0 block (GGUF QK8_0 == QK4_0 == 32)
struct block_q8_0 {
  f16 d;
  int8_t qs[kQK];
};
struct block_q4_0 {
  f16 d;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(block_q8_0) == 34, "q8_0 block is 34 bytes in GGUF");
static_assert(sizeof(block_q4_0) == 18, "q4_0 block is 18 bytes in GGUF");
// A split row's storage unit (DType::kQ4_0S / kQ8_0S): the GGUF block's bytes per 32 weights, but
// not a block of its own (the row layout above); kernels address rows, never a unit alone.
struct block_q4_0s {
  uint8_t bytes[18];
};
struct block_q8_0s {
  uint8_t bytes[34];
};
static_assert(sizeof(block_q4_0s) == 18, "q4_0s keeps q4_0's 18 bytes per 32 weights");
static_assert(sizeof(block_q8_0s) == 34, "q8_0s keeps q8_0's 34 bytes per 32 weights");
// Byte offsets in a split row of nb blocks with q quant bytes a block (16: q4_0s, 32: q8_0s):
// block b's quants, and its f16 d.
G3_HD int64_t split_qs_offset(int64_t q, int64_t b) { return q * b; }
G3_HD int64_t split_d_offset(int64_t q, int64_t nb, int64_t b) { return q * nb + 2 * b; }

// K-quant super-blocks (ggml-common.h layouts, byte for byte). Element e of a q4_K / q5_K block is
// sub-block e / 32 (its scale and min packed 6-bit in `scales`, get_scale_min_k4); q6_K has 16
// sub-blocks of 16 with int8 scales. Decoding rules: runtime/kquant.h.
constexpr int kQK_K = 256;  // elements per K-quant super-block (QK_K)
struct block_q4_K {
  f16 d, dmin;
  uint8_t scales[12];
  uint8_t qs[kQK_K / 2];  // byte 32 j + l: element 64 j + l (low nibble), 64 j + 32 + l (high)
};
struct block_q5_K {
  f16 d, dmin;
  uint8_t scales[12];
  uint8_t qh[kQK_K / 8];  // bit i of byte l: the fifth bit of element 32 i + l
  uint8_t qs[kQK_K / 2];  // as q4_K
};
struct block_q6_K {
  uint8_t ql[kQK_K / 2];  // low 4 bits
  uint8_t qh[kQK_K / 4];  // high 2 bits
  int8_t scales[kQK_K / 16];
  f16 d;
};
static_assert(sizeof(block_q4_K) == 144, "q4_K block is 144 bytes in GGUF");
static_assert(sizeof(block_q5_K) == 176, "q5_K block is 176 bytes in GGUF");
static_assert(sizeof(block_q6_K) == 210, "q6_K block is 210 bytes in GGUF");

// Bytes for n elements along a row (block formats need n % 32 == 0; callers check).
inline int64_t dtype_row_bytes(DType t, int64_t n) {
  switch (t) {
    case DType::kF32:
    case DType::kI32:
      return n * 4;
    case DType::kBF16:
    case DType::kF16:
      return n * 2;
    case DType::kFP8E4M3:
      return n;
    case DType::kQ8_0:
    case DType::kQ8_0S:
      return n / kQK * 34;
    case DType::kQ4_0:
    case DType::kQ4_0S:
      return n / kQK * 18;
    case DType::kQ4_K:
      return n / kQK_K * 144;
    case DType::kQ5_K:
      return n / kQK_K * 176;
    case DType::kQ6_K:
      return n / kQK_K * 210;
  }
  return -1;
}
// Elements per storage unit along a row: 32 (q8_0, q4_0), 256 (K-quants), else 1.
inline int64_t dtype_block_elems(DType t) {
  switch (t) {
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_0S:
    case DType::kQ8_0S:
      return kQK;
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return kQK_K;
    default:
      return 1;
  }
}
inline bool dtype_is_block(DType t) { return dtype_block_elems(t) > 1; }
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32:
      return "f32";
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "f16";
    case DType::kFP8E4M3:
      return "fp8_e4m3";
    case DType::kQ8_0:
      return "q8_0";
    case DType::kQ4_0:
      return "q4_0";
    case DType::kI32:
      return "i32";
    case DType::kQ4_K:
      return "q4_k";
    case DType::kQ5_K:
      return "q5_k";
    case DType::kQ6_K:
      return "q6_k";
    case DType::kQ4_0S:
      return "q4_0s";
    case DType::kQ8_0S:
      return "q8_0s";
  }
  return "?";
}

// ---- scalar conversions (host and device; exact, round-to-nearest-even) ----
G3_HD float bits_to_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
G3_HD uint32_t f32_to_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

G3_HD float bf16_to_f32(bf16 h) { return bits_to_f32(uint32_t(h.bits) << 16); }
G3_HD bf16 f32_to_bf16(float f) {
  uint32_t u = f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x40)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{uint16_t(u >> 16)};
}

G3_HD float f16_to_f32(f16 h) {
  uint32_t sign = uint32_t(h.bits & 0x8000u) << 16;
  uint32_t exp = (h.bits >> 10) & 0x1f, man = h.bits & 0x3ffu;
  if (exp == 0) {
    if (man == 0) return bits_to_f32(sign);
    float v = float(man) * (1.0f / 16777216.0f);  // subnormal: man * 2^-24
    return sign ? -v : v;
  }
  if (exp == 31) return bits_to_f32(sign | 0x7f800000u | (man << 13));
  return bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}
G3_HD f16 f32_to_f16(float f) {
  uint32_t u = f32_to_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return f16{uint16_t(sign | 0x7e00u)};
  if (a >= 0x477ff000u) return f16{uint16_t(sign | 0x7c00u)};  // rounds to >= 65520: inf
  if (a < 0x38800000u) {                                       // subnormal or zero in f16
    float v = bits_to_f32(a) * 16777216.0f;                    // in units of 2^-24
    // round half to even
    uint32_t r = uint32_t(v);
    float frac = v - float(r);
    if (frac > 0.5f || (frac == 0.5f && (r & 1u))) r++;
    return f16{uint16_t(sign | r)};
  }
  uint32_t m = a + 0xfffu + ((a >> 13) & 1u) - (112u << 23);
  return f16{uint16_t(sign | (m >> 13))};
}

// e4m3fn: bias 7, no infinities, 0x7f/0xff = NaN, max finite 448. Saturating on encode.
G3_HD float fp8e4m3_to_f32(fp8e4m3 v) {
  uint32_t sign = uint32_t(v.bits & 0x80u) << 24;
  uint32_t exp = (v.bits >> 3) & 0xf, man = v.bits & 0x7u;
  if (exp == 0xf && man == 0x7) return bits_to_f32(sign | 0x7fc00000u);
  if (exp == 0) {
    float x = float(man) * (1.0f / 512.0f);  // man * 2^-9
    return sign ? -x : x;
  }
  return bits_to_f32(sign | ((exp + 120) << 23) | (man << 20));
}
G3_HD fp8e4m3 f32_to_fp8e4m3(float f) {
  uint32_t u = f32_to_bits(f);
  uint8_t sign = uint8_t((u >> 24) & 0x80u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return fp8e4m3{uint8_t(sign | 0x7f)};
  float x = bits_to_f32(a);
  if (x >= 448.0f) return fp8e4m3{uint8_t(sign | 0x7e)};  // saturate (torch's cast would give NaN)
  if (x < 0.015625f) {                                    // below 2^-6: subnormal, step 2^-9
    float v = x * 512.0f;
    uint32_t r = uint32_t(v);
    float frac = v - float(r);
    if (frac > 0.5f || (frac == 0.5f && (r & 1u))) r++;
    return fp8e4m3{uint8_t(sign | r)};  // r == 8 is the smallest normal, encoded the same way
  }
  uint32_t m = a + 0x7ffffu + ((a >> 20) & 1u) - (120u << 23);
  uint32_t e = m >> 20;  // (exp << 3) | man
  if (e > 0x7e) e = 0x7e;
  return fp8e4m3{uint8_t(sign | e)};
}

// Typed load/store to float, so a kernel template reads any element type the same way.
G3_HD float to_f32(float v) { return v; }
G3_HD float to_f32(bf16 v) { return bf16_to_f32(v); }
G3_HD float to_f32(f16 v) { return f16_to_f32(v); }
G3_HD float to_f32(fp8e4m3 v) { return fp8e4m3_to_f32(v); }
template <typename T>
G3_HD T from_f32(float v);
template <>
G3_HD float from_f32<float>(float v) {
  return v;
}
template <>
G3_HD bf16 from_f32<bf16>(float v) {
  return f32_to_bf16(v);
}
template <>
G3_HD f16 from_f32<f16>(float v) {
  return f32_to_f16(v);
}
template <>
G3_HD fp8e4m3 from_f32<fp8e4m3>(float v) {
  return f32_to_fp8e4m3(v);
}

}  // namespace gemma3
