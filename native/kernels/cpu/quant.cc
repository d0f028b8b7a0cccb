// quantize / dequantize on CPU, one row per work item. q8_0 and q4_0 follow llama.cpp's
// quantize_row_q8_0_ref / quantize_row_q4_0_ref (ggml-quants.c) operation for operation, so the
// bytes match GGUF files quantized by llama.cpp from the same float32 values; the K-quants port
// quantize_row_q4_K_ref / q5_K_ref / q6_K_ref the same way (runtime/kquant.h).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/cpu_kernels.h"
#include "runtime/threadpool.h"

namespace gemma3::cpu {
namespace {
using namespace detail;

// x: [cols] float; y: [cols / 32] blocks.
void quantize_row(const float* x, block_q8_0* y, int64_t cols, float*) {
  for (int64_t i = 0; i < cols / kQK; ++i, x += kQK) {
    float amax = 0.0f;
    for (int j = 0; j < kQK; ++j) {
      const float a = std::fabs(x[j]);
      amax = amax > a ? amax : a;  // llama.cpp's MAX(amax, a), NaN included
    }
    const float d = amax / ((1 << 7) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;  // llama.cpp multiplies by 1/d, not x / d
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < kQK; ++j) y[i].qs[j] = int8_t(std::roundf(x[j] * id));
  }
}

void quantize_row(const float* x, block_q4_0* y, int64_t cols, float*) {
  for (int64_t i = 0; i < cols / kQK; ++i, x += kQK) {
    float amax = 0.0f, max = 0.0f;  // max keeps the sign of the largest-magnitude element
    for (int j = 0; j < kQK; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < kQK / 2; ++j) {
      const float x0 = x[j] * id, x1 = x[kQK / 2 + j] * id;
      // int8 truncation of (x + 8.5) as in llama.cpp; x*id lies in [-8, 8] so it never overflows.
      const uint8_t q0 = uint8_t(std::min(15, int(int8_t(x0 + 8.5f))));
      const uint8_t q1 = uint8_t(std::min(15, int(int8_t(x1 + 8.5f))));
      y[i].qs[j] = uint8_t(q0 | (q1 << 4));
    }
  }
}

// fp8: per-row scale = amax / 448 (1 when the row is all zeros), q = e4m3(x / scale).
void quantize_row(const float* x, fp8e4m3* y, int64_t cols, float* scale) {
  float amax = 0.0f;
  for (int64_t j = 0; j < cols; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float s = amax > 0.0f ? amax / 448.0f : 1.0f;
  *scale = s;
  for (int64_t j = 0; j < cols; ++j) y[j] = f32_to_fp8e4m3(x[j] / s);
}

// K-quants: llama.cpp's reference quantizers, one super-block at a time (runtime/kquant.h).
template <typename TB, typename = std::enable_if_t<is_kquant_v<TB>>>
void quantize_row(const float* x, TB* y, int64_t cols, float*) {
  for (int64_t i = 0; i < cols / kQK_K; ++i) kq_quantize(x + i * kQK_K, y + i);
}

}  // namespace

template <typename TS, typename TQ>
Status quantize(const TS* src, TQ* dst, float* scale, int64_t rows, int64_t cols) {
  constexpr bool kFp8 = std::is_same_v<TQ, fp8e4m3>;
  if (rows < 0 || cols <= 0)
    return invalid("quantize",
                   kv("rows", rows) + ", " + kv("cols", cols) + " (need rows >= 0, cols > 0)");
  if (!whole_blocks<TQ>(cols)) return invalid("quantize", whole_blocks_msg<TQ>("cols", cols));
  if (rows == 0) return Status::Ok();
  if (src == nullptr || dst == nullptr) return invalid("quantize", "null pointer");
  if (kFp8 && scale == nullptr) return invalid("quantize", "fp8_e4m3 needs a scale array");
  parallel_for(rows, grain_for(cols * 4), [&](int64_t b, int64_t e) {
    float* row = scratch(kScratchA, size_t(cols));
    for (int64_t r = b; r < e; ++r) {
      decode(src + r * cols, 0, cols, row);
      quantize_row(row, dst + r * row_units<TQ>(cols), cols, kFp8 ? scale + r : nullptr);
    }
  });
  return Status::Ok();
}

template <typename TQ, typename TD>
Status dequantize(const TQ* src, const float* scale, TD* dst, int64_t rows, int64_t cols) {
  constexpr bool kFp8 = std::is_same_v<TQ, fp8e4m3>;
  if (rows < 0 || cols <= 0)
    return invalid("dequantize",
                   kv("rows", rows) + ", " + kv("cols", cols) + " (need rows >= 0, cols > 0)");
  if (!whole_blocks<TQ>(cols)) return invalid("dequantize", whole_blocks_msg<TQ>("cols", cols));
  if (rows == 0) return Status::Ok();
  if (src == nullptr || dst == nullptr) return invalid("dequantize", "null pointer");
  if (kFp8 && scale == nullptr) return invalid("dequantize", "fp8_e4m3 needs a scale array");
  parallel_for(rows, grain_for(cols), [&](int64_t b, int64_t e) {
    float* row = scratch(kScratchA, size_t(cols));
    for (int64_t r = b; r < e; ++r) {
      decode(src + r * row_units<TQ>(cols), 0, cols, row);
      if (kFp8) {
        const float s = scale[r];
        for (int64_t j = 0; j < cols; ++j) row[j] *= s;
      }
      encode(row, cols, dst + r * cols);
    }
  });
  return Status::Ok();
}

Status repack_split(const void* src, void* dst, int64_t rows, int64_t cols, int qs_bytes,
                    bool to_split) {
  if (rows < 0 || cols <= 0 || cols % kQK != 0 || (qs_bytes != 16 && qs_bytes != 32))
    return invalid("repack_split", kv("rows", rows) + ", " + kv("cols", cols) + ", " +
                                       kv("qs_bytes", qs_bytes) +
                                       " (need rows >= 0, cols > 0, cols % 32 == 0, 16 or 32)");
  if (rows == 0) return Status::Ok();
  if (src == nullptr || dst == nullptr) return invalid("repack_split", "null pointer");
  const int64_t nb = cols / kQK, q = qs_bytes, row_bytes = nb * (2 + q);
  parallel_for(rows, grain_for(cols), [&](int64_t b0, int64_t e) {
    for (int64_t r = b0; r < e; ++r) {
      const uint8_t* s = static_cast<const uint8_t*>(src) + r * row_bytes;
      uint8_t* d = static_cast<uint8_t*>(dst) + r * row_bytes;
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t g = b * (2 + q);  // the GGUF block: d, then the quants
        if (to_split) {
          std::memcpy(d + split_d_offset(q, nb, b), s + g, 2);
          std::memcpy(d + split_qs_offset(q, b), s + g + 2, size_t(q));
        } else {
          std::memcpy(d + g, s + split_d_offset(q, nb, b), 2);
          std::memcpy(d + g + 2, s + split_qs_offset(q, b), size_t(q));
        }
      }
    }
  });
  return Status::Ok();
}

#define G3_QUANT(TS, TQ) template Status quantize<TS, TQ>(const TS*, TQ*, float*, int64_t, int64_t);
#define G3_DEQUANT(TQ, TD) \
  template Status dequantize<TQ, TD>(const TQ*, const float*, TD*, int64_t, int64_t);
#define G3_KQUANT(TQ)   \
  G3_QUANT(float, TQ)   \
  G3_QUANT(bf16, TQ)    \
  G3_DEQUANT(TQ, float) \
  G3_DEQUANT(TQ, bf16)
G3_KQUANT(block_q4_K)
G3_KQUANT(block_q5_K)
G3_KQUANT(block_q6_K)
#undef G3_KQUANT
G3_QUANT(float, block_q8_0)
G3_QUANT(float, block_q4_0)
G3_QUANT(float, fp8e4m3)
G3_QUANT(bf16, block_q8_0)
G3_QUANT(bf16, block_q4_0)
G3_QUANT(bf16, fp8e4m3)
G3_DEQUANT(block_q8_0, float)
G3_DEQUANT(block_q4_0, float)
G3_DEQUANT(fp8e4m3, float)
G3_DEQUANT(block_q8_0, bf16)
G3_DEQUANT(block_q4_0, bf16)
G3_DEQUANT(fp8e4m3, bf16)
#undef G3_QUANT
#undef G3_DEQUANT

}  // namespace gemma3::cpu
