// CUDA embedding gather with scale: one CTA per token id, each thread converting 8-element chunks
// (16-byte loads/stores for float/bf16; one q8_0/q4_0 (or split) quarter block per chunk; one
// 8-byte load for fp8 e4m3, the dequantizing row gather of an fp8 KV cache; K-quants via
// runtime/kquant.h). Ids outside [0, vocab) write a NaN row and read nothing.
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/vec.cuh"
#include "runtime/kquant.h"

namespace gemma3::cuda {
namespace {

constexpr int kChunk = 8;  // elements per thread step in the vector path
constexpr int kMaxThreads = 256;
constexpr int64_t kMaxGrid = 1 << 30;

using vec::aligned;
using vec::load_f32;
using vec::store_f32;

// Two e4m3 values (the low and high byte of w) as floats: e4m3 -> f16 -> f32, both exact.
__device__ __forceinline__ float2 fp8x2_to_float2(uint32_t w) {
  const __half2_raw h =
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w & 0xffffu), __NV_E4M3);
  return __half22float2(__half2(h));
}

// Block b of a row of q8_0 / q4_0 blocks or of their split layouts (q8_0s / q4_0s, runtime/dtype.h:
// the quant runs, then the d; nb blocks a row): its quant bytes, and d as float.
template <typename TW>
__device__ __forceinline__ const uint8_t* block_at(const TW* row, int64_t b, int64_t nb, float* d) {
  if constexpr (std::is_same_v<TW, block_q4_0s> || std::is_same_v<TW, block_q8_0s>) {
    constexpr int64_t kQ = sizeof(TW) - 2;  // quant bytes a block
    const uint8_t* base = reinterpret_cast<const uint8_t*>(row);
    *d = f16_to_f32(f16{reinterpret_cast<const uint16_t*>(base + nb * kQ)[b]});
    return base + b * kQ;
  } else {
    *d = f16_to_f32(row[b].d);
    return reinterpret_cast<const uint8_t*>(row[b].qs);
  }
}
template <typename TW>
constexpr bool kQ8Row = std::is_same_v<TW, block_q8_0> || std::is_same_v<TW, block_q8_0s>;

// Elements [8c, 8c + 8) of a table row as float. row points at the row's first element (or block);
// nb: storage units per row (the split layouts find their d after the row's nb quant runs).
template <typename TW>
__device__ __forceinline__ void load_chunk(const TW* row, int64_t c, int64_t nb,
                                           float (&f)[kChunk]) {
  if constexpr (std::is_same_v<TW, float> || std::is_same_v<TW, bf16>) {
    load_f32<TW, kChunk>(row + c * kChunk, f);
  } else if constexpr (std::is_same_v<TW, fp8e4m3>) {
    const uint2 u = *reinterpret_cast<const uint2*>(row + c * kChunk);  // 8-byte aligned
    const uint32_t w[2] = {u.x, u.y};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 v = fp8x2_to_float2(w[i >> 1] >> (16 * (i & 1)));
      f[2 * i] = v.x;
      f[2 * i + 1] = v.y;
    }
  } else if constexpr (is_kquant_v<TW>) {
    kq_dequant8(row[c / (kQK_K / kChunk)], static_cast<int>(c % (kQK_K / kChunk)) * kChunk, f);
  } else if constexpr (kQ8Row<TW>) {
    // A 34-byte block is only 2-byte aligned: read its quarter as four 16-bit words.
    float d;
    const uint8_t* qs = block_at(row, c >> 2, nb, &d);
    const uint16_t* q = reinterpret_cast<const uint16_t*>(qs + (c & 3) * kChunk);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint16_t w = q[i];
      f[2 * i] = float(int8_t(w & 0xff)) * d;
      f[2 * i + 1] = float(int8_t(w >> 8)) * d;
    }
  } else {  // q4_0 / q4_0s: byte j holds element j (low nibble) and j + 16 (high nibble)
    const int part = int(c & 3);
    float d;
    const uint8_t* qs = block_at(row, c >> 2, nb, &d);
    const uint16_t* q = reinterpret_cast<const uint16_t*>(qs + (part & 1) * kChunk);
    const int shift = (part >> 1) * 4;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t w = q[i];
      f[2 * i] = float(int((w >> shift) & 0xf) - 8) * d;
      f[2 * i + 1] = float(int((w >> (8 + shift)) & 0xf) - 8) * d;
    }
  }
}

// Element j of a table row as float (nb as load_chunk).
template <typename TW>
__device__ __forceinline__ float load_one(const TW* row, int64_t j, int64_t nb) {
  if constexpr (std::is_same_v<TW, float> || std::is_same_v<TW, bf16> ||
                std::is_same_v<TW, fp8e4m3>) {
    return to_f32(row[j]);
  } else if constexpr (is_kquant_v<TW>) {
    return kq_dequant1(row[j / kQK_K], static_cast<int>(j % kQK_K));
  } else {
    float d;
    const uint8_t* qs = block_at(row, j / kQK, nb, &d);
    const int k = int(j % kQK);
    if constexpr (kQ8Row<TW>) return float(int8_t(qs[k])) * d;
    const uint8_t byte = qs[k % 16];
    return float((k < 16 ? (byte & 0xf) : (byte >> 4)) - 8) * d;
  }
}

// ids: [n] int32; table: [vocab, row_elems] (row_elems = dim, or dim / 32 blocks); out: [n, dim].
template <typename TW, typename TY, bool kVec>
__global__ void __launch_bounds__(kMaxThreads)
    embedding_kernel(const int32_t* ids, const TW* table, TY* out, int64_t n, int64_t dim,
                     int64_t vocab, int64_t row_elems, float s) {
  pdl_wait();  // pdl.cuh: inputs come from the kernel before
  pdl_trigger();
  for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
    const int32_t id = ids[t];
    TY* o = out + t * dim;
    if (id < 0 || int64_t(id) >= vocab) {
      const TY nan = from_f32<TY>(__uint_as_float(0x7fc00000u));
      for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) o[j] = nan;
      continue;
    }
    const TW* row = table + int64_t(id) * row_elems;
    if constexpr (kVec) {
      for (int64_t c = threadIdx.x; c < dim / kChunk; c += blockDim.x) {
        float f[kChunk];
        load_chunk<TW>(row, c, row_elems, f);
#pragma unroll
        for (int i = 0; i < kChunk; ++i) f[i] *= s;
        store_f32<TY, kChunk>(o + c * kChunk, f);
      }
    } else {
      for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
        o[j] = from_f32<TY>(load_one<TW>(row, j, row_elems) * s);
      }
    }
  }
}

}  // namespace

template <typename TW, typename TY>
Status embedding(const int32_t* ids, const TW* table, TY* out, int64_t n, int64_t dim,
                 int64_t vocab, float s, cudaStream_t stream) {
  constexpr bool kBlock = std::is_same_v<TW, block_q8_0> || std::is_same_v<TW, block_q4_0> ||
                          std::is_same_v<TW, block_q4_0s> || std::is_same_v<TW, block_q8_0s> ||
                          is_kquant_v<TW>;
  constexpr int64_t kElems = is_kquant_v<TW> ? kQK_K : kBlock ? kQK : 1;  // per storage unit
  if (n < 0 || dim <= 0 || vocab <= 0 || dim % kElems != 0) {
    return Status(StatusCode::kInvalidArgument,
                  "embedding: need n >= 0, dim > 0, vocab > 0" +
                      (kBlock ? ", dim % " + std::to_string(kElems) + " == 0 for block tables"
                              : std::string()) +
                      " (n=" + std::to_string(n) + ", dim=" + std::to_string(dim) +
                      ", vocab=" + std::to_string(vocab) + ")");
  }
  if (n == 0) return Status::Ok();
  if (!ids || !table || !out)
    return Status(StatusCode::kInvalidArgument, "embedding: null pointer");
  const int64_t row_elems = dim / kElems;
  // Block tables need 2-byte alignment for the 16-bit reads; fp8 8 (one 8-byte load per chunk);
  // float/bf16 16 for the vectors.
  constexpr uintptr_t kTableAlign = kBlock ? 2 : std::is_same_v<TW, fp8e4m3> ? 8 : 16;
  const bool vec = dim % kChunk == 0 && aligned(out, 16) && aligned(table, kTableAlign);
  const int64_t work = vec ? dim / kChunk : dim;
  int threads = int(work < kMaxThreads ? (work + 31) / 32 * 32 : kMaxThreads);
  const unsigned grid = unsigned(n < kMaxGrid ? n : kMaxGrid);
  if (vec) {
    launch_pdl(embedding_kernel<TW, TY, true>, grid, threads, 0, stream, ids, table, out, n, dim,
               vocab, row_elems, s);
  } else {
    launch_pdl(embedding_kernel<TW, TY, false>, grid, threads, 0, stream, ids, table, out, n, dim,
               vocab, row_elems, s);
  }
  return check_launch("embedding");
}

#define G3_INSTANTIATE(TW, TY)                                                                 \
  template Status embedding<TW, TY>(const int32_t*, const TW*, TY*, int64_t, int64_t, int64_t, \
                                    float, cudaStream_t);
G3_INSTANTIATE(float, float)
G3_INSTANTIATE(float, bf16)
G3_INSTANTIATE(bf16, float)
G3_INSTANTIATE(bf16, bf16)
G3_INSTANTIATE(block_q8_0, float)
G3_INSTANTIATE(block_q8_0, bf16)
G3_INSTANTIATE(block_q4_0, float)
G3_INSTANTIATE(block_q4_0, bf16)
G3_INSTANTIATE(block_q4_0s, float)
G3_INSTANTIATE(block_q4_0s, bf16)
G3_INSTANTIATE(block_q8_0s, float)
G3_INSTANTIATE(block_q8_0s, bf16)
G3_INSTANTIATE(fp8e4m3, float)
G3_INSTANTIATE(fp8e4m3, bf16)
G3_INSTANTIATE(block_q4_K, float)
G3_INSTANTIATE(block_q4_K, bf16)
G3_INSTANTIATE(block_q5_K, float)
G3_INSTANTIATE(block_q5_K, bf16)
G3_INSTANTIATE(block_q6_K, float)
G3_INSTANTIATE(block_q6_K, bf16)
#undef G3_INSTANTIATE

}  // namespace gemma3::cuda
