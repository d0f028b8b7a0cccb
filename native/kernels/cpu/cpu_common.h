// Helpers private to the CPU kernels: argument checks, row decode/encode between storage types and
// float32, grow-only thread-local scratch, and an AVX2 dispatch switch.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/dtype.h"
#include "runtime/kquant.h"
#include "runtime/status.h"

// Hot loops use plain loops and GCC/Clang vector types (no intrinsics); on x86 the matmul tiles are
// compiled a second time for AVX2+FMA and picked at run time (the baseline copy stays portable).
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define G3_CPU_X86_DISPATCH 1
#define G3_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#else
#define G3_CPU_X86_DISPATCH 0
#define G3_TARGET_AVX2
#endif
#define G3_ALWAYS_INLINE inline __attribute__((always_inline))

namespace gemma3::cpu::detail {

inline bool cpu_has_avx2() {
#if G3_CPU_X86_DISPATCH
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return has;
#else
  return false;
#endif
}

// "kernel: message" as kInvalidArgument / kUnsupported.
inline Status invalid(const char* kernel, const std::string& msg) {
  return Status(StatusCode::kInvalidArgument, std::string(kernel) + ": " + msg);
}
inline Status unsupported(const char* kernel, const std::string& msg) {
  return Status(StatusCode::kUnsupported, std::string(kernel) + ": " + msg);
}
inline std::string kv(const char* name, int64_t v) {
  return std::string(name) + "=" + std::to_string(v);
}

// Storage-type traits used by the checks and the row codecs.
template <typename T>
struct TypeInfo;
template <>
struct TypeInfo<float> {
  static constexpr const char* name = "f32";
  static constexpr bool block = false;
  static constexpr int64_t elems = 1;
};
template <>
struct TypeInfo<bf16> {
  static constexpr const char* name = "bf16";
  static constexpr bool block = false;
  static constexpr int64_t elems = 1;
};
template <>
struct TypeInfo<f16> {
  static constexpr const char* name = "f16";
  static constexpr bool block = false;
  static constexpr int64_t elems = 1;
};
template <>
struct TypeInfo<fp8e4m3> {
  static constexpr const char* name = "fp8_e4m3";
  static constexpr bool block = false;
  static constexpr int64_t elems = 1;
};
template <>
struct TypeInfo<block_q8_0> {
  static constexpr const char* name = "q8_0";
  static constexpr bool block = true;
  static constexpr int64_t elems = kQK;
};
template <>
struct TypeInfo<block_q4_0> {
  static constexpr const char* name = "q4_0";
  static constexpr bool block = true;
  static constexpr int64_t elems = kQK;
};

template <>
struct TypeInfo<block_q4_K> {
  static constexpr const char* name = "q4_k";
  static constexpr bool block = true;
  static constexpr int64_t elems = kQK_K;
};
template <>
struct TypeInfo<block_q5_K> {
  static constexpr const char* name = "q5_k";
  static constexpr bool block = true;
  static constexpr int64_t elems = kQK_K;
};
template <>
struct TypeInfo<block_q6_K> {
  static constexpr const char* name = "q6_k";
  static constexpr bool block = true;
  static constexpr int64_t elems = kQK_K;
};

// Storage units per row of `cols` elements (blocks for the block formats).
template <typename T>
constexpr int64_t row_units(int64_t cols) {
  return cols / TypeInfo<T>::elems;
}

// "cols must be a multiple of <block>" check shared by the kernels taking a block format.
template <typename T>
inline bool whole_blocks(int64_t cols) {
  return cols % TypeInfo<T>::elems == 0;
}
template <typename T>
inline std::string whole_blocks_msg(const char* what, int64_t cols) {
  return kv(what, cols) + " must be a multiple of " + std::to_string(TypeInfo<T>::elems) + " for " +
         TypeInfo<T>::name;
}

// All 256 e4m3 values, so decoding a byte is one table load.
struct Fp8Table {
  float v[256];
  Fp8Table() {
    for (int i = 0; i < 256; ++i) v[i] = fp8e4m3_to_f32(fp8e4m3{uint8_t(i)});
  }
};
inline const float* fp8_table() {
  static const Fp8Table t;
  return t.v;
}

// 8 float lanes as a GCC/Clang vector type: plain C++ arithmetic on it compiles to one AVX op
// (or two SSE/NEON ops), without intrinsics and without relying on -ffast-math reassociation.
typedef float f32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef uint16_t u16x8 __attribute__((vector_size(16)));
typedef uint8_t u8x16 __attribute__((vector_size(16)));
// By reference, not by value: a vector return would change the ABI between ISA variants.
G3_ALWAYS_INLINE void load8(f32x8& v, const float* p) { memcpy(&v, p, sizeof v); }
G3_ALWAYS_INLINE float hsum8(const f32x8& v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

G3_ALWAYS_INLINE void store8(float* p, const f32x8& v) { memcpy(p, &v, sizeof v); }

// Element-type decode of n elements starting at element e0 of a row (block formats: e0 and n are
// multiples of 32). bf16 is a shift, so this loop vectorizes.
G3_ALWAYS_INLINE void decode(const float* src, int64_t e0, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[e0 + i];
}
G3_ALWAYS_INLINE void decode(const bf16* src, int64_t e0, int64_t n, float* dst) {
  const uint16_t* s = reinterpret_cast<const uint16_t*>(src) + e0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    u16x8 h;
    memcpy(&h, s + i, sizeof h);
    u32x8 u = __builtin_convertvector(h, u32x8) << 16;
    memcpy(dst + i, &u, sizeof u);
  }
  for (; i < n; ++i) dst[i] = bits_to_f32(uint32_t(s[i]) << 16);
}
G3_ALWAYS_INLINE void decode(const f16* src, int64_t e0, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(src[e0 + i]);
}
G3_ALWAYS_INLINE void decode(const fp8e4m3* src, int64_t e0, int64_t n, float* dst) {
  const float* lut = fp8_table();
  for (int64_t i = 0; i < n; ++i) dst[i] = lut[src[e0 + i].bits];
}
// q8_0: x = q * d. (Plain loops: GCC's loop vectorizer widens int8 well, its vector-extension
// conversions do not.)
G3_ALWAYS_INLINE void decode(const block_q8_0* src, int64_t e0, int64_t n, float* dst) {
  const block_q8_0* b = src + e0 / kQK;
  for (int64_t blk = 0; blk < n / kQK; ++blk, ++b, dst += kQK) {
    const float d = f16_to_f32(b->d);
    for (int j = 0; j < kQK; ++j) dst[j] = float(b->qs[j]) * d;
  }
}
// q4_0: x = (q - 8) * d; low nibble of byte j is element j, high nibble element j + 16 (GGUF).
G3_ALWAYS_INLINE void decode(const block_q4_0* src, int64_t e0, int64_t n, float* dst) {
  const block_q4_0* b = src + e0 / kQK;
  for (int64_t blk = 0; blk < n / kQK; ++blk, ++b, dst += kQK) {
    const float d = f16_to_f32(b->d);
    u8x16 v;
    memcpy(&v, b->qs, sizeof v);
    const u8x16 lo = (v & 0x0f) - 8, hi = (v >> 4) - 8;  // two's complement of q - 8
    int8_t q[kQK];
    memcpy(q, &lo, sizeof lo);
    memcpy(q + kQK / 2, &hi, sizeof hi);
    for (int j = 0; j < kQK; ++j) dst[j] = float(q[j]) * d;
  }
}

// K-quants (runtime/kquant.h rules): per super-block of 256, per sub-block x = a * q - b with the
// exact a, b of kq_sub; loops of 32 so the AVX2 copy of the matmul tiles vectorizes them.
G3_ALWAYS_INLINE void decode(const block_q4_K* src, int64_t e0, int64_t n, float* dst) {
  const block_q4_K* b = src + e0 / kQK_K;
  for (int64_t blk = 0; blk < n / kQK_K; ++blk, ++b, dst += kQK_K) {
    const float d = f16_to_f32(b->d), dmin = f16_to_f32(b->dmin);
    for (int s = 0; s < 8; ++s) {  // sub-block s: nibble s % 2 of qs[32 (s / 2) ..]
      int sc, m;
      kq_scale_min(s, b->scales, &sc, &m);
      const float a = d * float(sc), bm = dmin * float(m);
      const uint8_t* q = b->qs + 32 * (s >> 1);
      const int sh = 4 * (s & 1);
      for (int l = 0; l < 32; ++l) dst[32 * s + l] = a * float((q[l] >> sh) & 0xF) - bm;
    }
  }
}
G3_ALWAYS_INLINE void decode(const block_q5_K* src, int64_t e0, int64_t n, float* dst) {
  const block_q5_K* b = src + e0 / kQK_K;
  for (int64_t blk = 0; blk < n / kQK_K; ++blk, ++b, dst += kQK_K) {
    const float d = f16_to_f32(b->d), dmin = f16_to_f32(b->dmin);
    for (int s = 0; s < 8; ++s) {  // the fifth bit of element 32 s + l is bit s of qh[l]
      int sc, m;
      kq_scale_min(s, b->scales, &sc, &m);
      const float a = d * float(sc), bm = dmin * float(m);
      const uint8_t* q = b->qs + 32 * (s >> 1);
      const int sh = 4 * (s & 1);
      for (int l = 0; l < 32; ++l)
        dst[32 * s + l] = a * float(((q[l] >> sh) & 0xF) | (((b->qh[l] >> s) & 1) << 4)) - bm;
    }
  }
}
G3_ALWAYS_INLINE void decode(const block_q6_K* src, int64_t e0, int64_t n, float* dst) {
  const block_q6_K* b = src + e0 / kQK_K;
  for (int64_t blk = 0; blk < n / kQK_K; ++blk, ++b, dst += kQK_K) {
    const float d = f16_to_f32(b->d);
    // llama.cpp's loop: element 128 h + 32 g + l takes nibble g / 2 of ql[64 h + 32 (g % 2) + l]
    // and bits 2g of qh[32 h + l]; the shifts are constants, so each half-loop vectorizes.
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = b->ql + 64 * h;
      const uint8_t* qh = b->qh + 32 * h;
      const int8_t* sc = b->scales + 8 * h;
      float* y = dst + 128 * h;
      for (int half = 0; half < 2; ++half) {  // l in [16 half, 16 half + 16): scales sc[half + 2g]
        const float a0 = d * float(sc[half]), a1 = d * float(sc[half + 2]);
        const float a2 = d * float(sc[half + 4]), a3 = d * float(sc[half + 6]);
        for (int l = 16 * half; l < 16 * half + 16; ++l) {
          const int q1 = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
          const int q2 = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
          const int q3 = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
          const int q4 = (ql[l + 32] >> 4) | ((qh[l] >> 6) << 4);
          y[l] = a0 * float(q1 - 32);
          y[l + 32] = a1 * float(q2 - 32);
          y[l + 64] = a2 * float(q3 - 32);
          y[l + 96] = a3 * float(q4 - 32);
        }
      }
    }
  }
}

// Round-to-nearest-even store of n floats.
template <typename T>
G3_ALWAYS_INLINE void encode(const float* src, int64_t n, T* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = from_f32<T>(src[i]);
}

// Grow-only per-thread float scratch; distinct slots may be live at the same time (the calling
// thread is also a parallel_for worker, so caller-side and worker-side buffers use other slots).
enum ScratchSlot { kScratchCaller = 0, kScratchA = 1, kScratchB = 2, kScratchC = 3, kNumSlots = 4 };
inline float* scratch(ScratchSlot slot, size_t n) {
  thread_local std::vector<float> bufs[kNumSlots];
  std::vector<float>& b = bufs[slot];
  if (b.size() < n) b.resize(n);
  return b.data();
}

// Rows per parallel_for chunk so one chunk holds about `work` element-operations.
inline int64_t grain_for(int64_t per_item, int64_t work = 1 << 15) {
  if (per_item <= 0) return 1;
  int64_t g = work / per_item;
  return g < 1 ? 1 : g;
}

// Dot product in float32 over 16 lanes plus a scalar tail; the lane order is fixed, so results
// are deterministic for a given ISA path.
G3_ALWAYS_INLINE float dot(const float* a, const float* b, int64_t n) {
  f32x8 acc0 = {}, acc1 = {}, va, vb;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    load8(va, a + i);
    load8(vb, b + i);
    acc0 += va * vb;
    load8(va, a + i + 8);
    load8(vb, b + i + 8);
    acc1 += va * vb;
  }
  for (; i + 8 <= n; i += 8) {
    load8(va, a + i);
    load8(vb, b + i);
    acc0 += va * vb;
  }
  float tail = 0.f;
  for (; i < n; ++i) tail += a[i] * b[i];
  acc0 += acc1;
  return hsum8(acc0) + tail;
}

// y[i] += s * x[i] over n elements.
G3_ALWAYS_INLINE void axpy(float s, const float* x, float* y, int64_t n) {
  int64_t i = 0;
  f32x8 vx, vy;
  for (; i + 8 <= n; i += 8) {
    load8(vx, x + i);
    load8(vy, y + i);
    vy += s * vx;
    memcpy(y + i, &vy, sizeof vy);
  }
  for (; i < n; ++i) y[i] += s * x[i];
}

}  // namespace gemma3::cpu::detail
