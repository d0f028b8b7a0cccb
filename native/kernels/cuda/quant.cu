// cast, quantize, dequantize. Conversions are dtype.h's (round to nearest even, NaN kept), so the
// bits equal the CPU backend's; q8_0 / q4_0 follow llama.cpp quantize_row_q8_0_ref / q4_0_ref
// operation for operation (x * (1/d), not x / d; no FMA contraction).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/vec.cuh"
#include "runtime/kquant.h"

namespace gemma3::cuda {
namespace detail {
// quant_kquant.cu (compiled without FMA contraction): the GGUF K-quants.
template <typename TS, typename TB>
Status kq_quantize(const TS* src, TB* dst, int64_t rows, int64_t cols, cudaStream_t stream);
template <typename TB, typename TD>
Status kq_dequantize(const TB* src, TD* dst, int64_t rows, int64_t cols, cudaStream_t stream);
}  // namespace detail

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;  // grid-stride loops cover the rest

using vec::aligned16;

unsigned grid_for(int64_t items, int64_t items_per_block) {
  return static_cast<unsigned>(
      std::min((items + items_per_block - 1) / items_per_block, kMaxBlocks));
}

// ---- cast ----

// 8 elements at p (16-byte aligned) as float.
__device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
template <typename T>  // bf16 or f16
__device__ __forceinline__ void load8(const T* p, float (&v)[8]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[2 * i] = to_f32(T{uint16_t(w[i] & 0xffffu)});
    v[2 * i + 1] = to_f32(T{uint16_t(w[i] >> 16)});
  }
}
__device__ __forceinline__ void store8(float* p, const float (&v)[8]) {
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
// 8 floats as e4m3 (dtype.h's saturating encode, bit-equal to the CPU backend), one 8-byte store.
__device__ __forceinline__ void store8(fp8e4m3* p, const float (&v)[8]) {
  uint32_t w[2] = {0, 0};
#pragma unroll
  for (int i = 0; i < 8; ++i) w[i >> 2] |= uint32_t(from_f32<fp8e4m3>(v[i]).bits) << (8 * (i & 3));
  *reinterpret_cast<uint2*>(p) = make_uint2(w[0], w[1]);
}
template <typename T>
__device__ __forceinline__ void store8(T* p, const float (&v)[8]) {
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    w[i] = uint32_t(from_f32<T>(v[2 * i]).bits) | (uint32_t(from_f32<T>(v[2 * i + 1]).bits) << 16);
  }
  *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}

// kVec: src and dst 16-byte aligned, 8 elements per thread step; the n % 8 tail (and every element
// when !kVec) goes one at a time.
template <typename TS, typename TD, bool kVec>
__global__ void __launch_bounds__(kThreads)
    cast_kernel(const TS* __restrict__ src, TD* __restrict__ dst, int64_t n) {
  pdl_wait();  // pdl.cuh: inputs come from the kernel before
  pdl_trigger();
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if constexpr (kVec) {
    const int64_t groups = n / 8;
    for (int64_t g = tid; g < groups; g += stride) {
      float v[8];
      load8(src + g * 8, v);
      store8(dst + g * 8, v);
    }
    done = groups * 8;
  }
  for (int64_t i = done + tid; i < n; i += stride) dst[i] = from_f32<TD>(to_f32(src[i]));
}

// ---- quantize ----

__device__ __forceinline__ float warp_max(float v) {
  return vec::warp_reduce(v, [](float a, float b) { return fmaxf(a, b); });
}

// One warp per 32-element block; lane j owns element j. Rows are contiguous and cols % 32 == 0, so
// block b covers src[32 b .. 32 b + 31].
template <typename TS>
__global__ void __launch_bounds__(kThreads)
    quantize_q8_0_kernel(const TS* __restrict__ src, block_q8_0* __restrict__ dst,
                         int64_t nblocks) {
  pdl_wait();  // pdl.cuh: inputs come from the kernel before
  pdl_trigger();
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t b = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); b < nblocks;
       b += warps) {
    const float v = to_f32(src[b * kQK + lane]);
    const float amax = warp_max(fabsf(v));
    const float d = amax / 127.f;  // ((1 << 7) - 1)
    const float id = d != 0.f ? 1.0f / d : 0.0f;
    dst[b].qs[lane] = static_cast<int8_t>(static_cast<int>(roundf(__fmul_rn(v, id))));
    if (lane == 0) dst[b].d = f32_to_f16(d);
  }
}

// q4_0: m = the first element of largest |x| (llama.cpp's `if (amax < fabsf(v))` scan from 0, so
// NaN and zeros never win), d = m / -8, byte j = q(x[j]) | q(x[j + 16]) << 4, q = min(15,
// int(x/d+8.5)).
template <typename TS>
__global__ void __launch_bounds__(kThreads)
    quantize_q4_0_kernel(const TS* __restrict__ src, block_q4_0* __restrict__ dst,
                         int64_t nblocks) {
  pdl_wait();  // pdl.cuh: inputs come from the kernel before
  pdl_trigger();
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t b = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); b < nblocks;
       b += warps) {
    const float v = to_f32(src[b * kQK + lane]);
    float best = fabsf(v) > 0.f ? fabsf(v) : 0.f;
    int idx = lane;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
      if (ob > best || (ob == best && oi < idx)) best = ob, idx = oi;
    }
    const float vmax = __shfl_sync(0xffffffffu, v, idx);
    const float m = best > 0.f ? vmax : 0.f;
    const float d = m / -8.f;
    const float id = d != 0.f ? 1.0f / d : 0.0f;
    const float vhi = __shfl_down_sync(0xffffffffu, v, 16);
    if (lane < kQK / 2) {
      const int q0 = min(15, static_cast<int>(__fadd_rn(__fmul_rn(v, id), 8.5f)));
      const int q1 = min(15, static_cast<int>(__fadd_rn(__fmul_rn(vhi, id), 8.5f)));
      dst[b].qs[lane] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
    if (lane == 0) dst[b].d = f32_to_f16(d);
  }
}

__device__ __forceinline__ float block_max(float v, float* red) {  // red: [kThreads / 32]
  v = warp_max(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float r = red[0];
  for (int i = 1; i < kThreads / 32; ++i) r = fmaxf(r, red[i]);
  __syncthreads();  // red is reused by the next row
  return r;
}

// One CTA per row: scale = amax / 448 (1 when amax == 0; NaN is ignored by fmaxf as by std::max), q
// = e4m3(x / scale), saturating.
template <typename TS>
__global__ void __launch_bounds__(kThreads)
    quantize_fp8_kernel(const TS* __restrict__ src, fp8e4m3* __restrict__ dst,
                        float* __restrict__ scale, int64_t rows, int64_t cols) {
  pdl_wait();  // pdl.cuh: inputs come from the kernel before
  pdl_trigger();
  __shared__ float red[kThreads / 32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const TS* row = src + r * cols;
    float amax = 0.f;
    for (int64_t c = threadIdx.x; c < cols; c += kThreads)
      amax = fmaxf(amax, fabsf(to_f32(row[c])));
    amax = block_max(amax, red);
    const float s = amax > 0.f ? amax / 448.f : 1.f;
    if (threadIdx.x == 0) scale[r] = s;
    for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
      dst[r * cols + c] = f32_to_fp8e4m3(to_f32(row[c]) / s);
    }
  }
}

// ---- dequantize ----

// Thread per 8 consecutive outputs (one quarter of a block).
template <typename TD>
__global__ void __launch_bounds__(kThreads)
    dequantize_q8_0_kernel(const block_q8_0* __restrict__ src, TD* __restrict__ dst,
                           int64_t groups) {
  pdl_wait();  // pdl.cuh: inputs come from the kernel before
  pdl_trigger();
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += stride) {
    const block_q8_0& b = src[g >> 2];
    const float d = f16_to_f32(b.d);
    const int j0 = static_cast<int>(g & 3) * 8;
#pragma unroll
    for (int j = 0; j < 8; ++j) dst[g * 8 + j] = from_f32<TD>(float(b.qs[j0 + j]) * d);
  }
}

template <typename TD>
__global__ void __launch_bounds__(kThreads)
    dequantize_q4_0_kernel(const block_q4_0* __restrict__ src, TD* __restrict__ dst,
                           int64_t groups) {
  pdl_wait();  // pdl.cuh: inputs come from the kernel before
  pdl_trigger();
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += stride) {
    const block_q4_0& b = src[g >> 2];
    const float d = f16_to_f32(b.d);
    const int part = static_cast<int>(g & 3);  // weights 8 part .. 8 part + 7
    const int byte0 = (part & 1) * 8, shift = (part >> 1) * 4;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      dst[g * 8 + j] = from_f32<TD>(float(int((b.qs[byte0 + j] >> shift) & 0xf) - 8) * d);
    }
  }
}

template <typename TD>
__global__ void __launch_bounds__(kThreads)
    dequantize_fp8_kernel(const fp8e4m3* __restrict__ src, const float* __restrict__ scale,
                          TD* __restrict__ dst, int64_t rows, int64_t cols) {
  pdl_wait();  // pdl.cuh: inputs come from the kernel before
  pdl_trigger();
  const int64_t n = rows * cols, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    dst[i] = from_f32<TD>(fp8e4m3_to_f32(src[i]) * scale[i / cols]);
  }
}

template <typename TQ>
constexpr bool kIsBlock = std::is_same_v<TQ, block_q8_0> || std::is_same_v<TQ, block_q4_0>;

Status check_quant_args(const char* name, const void* src, const void* dst, const float* scale,
                        bool needs_scale, bool block, int64_t rows, int64_t cols) {
  if (rows < 0 || cols <= 0) {  // as the CPU backend: cols > 0, rows == 0 is a no-op
    return Status(StatusCode::kInvalidArgument,
                  std::string(name) + ": rows = " + std::to_string(rows) +
                      ", cols = " + std::to_string(cols) + " (need rows >= 0, cols > 0)");
  }
  if (block && cols % kQK != 0) {
    return Status(StatusCode::kInvalidArgument, std::string(name) +
                                                    ": cols = " + std::to_string(cols) +
                                                    " is not a multiple of 32 for a block format");
  }
  if (rows == 0) return Status::Ok();
  if (src == nullptr || dst == nullptr) {
    return Status(StatusCode::kInvalidArgument, std::string(name) + ": null src or dst");
  }
  if (needs_scale && scale == nullptr) {
    return Status(StatusCode::kInvalidArgument, std::string(name) + ": fp8 needs a scale array");
  }
  return Status::Ok();
}

}  // namespace

template <typename TS, typename TD>
Status cast(const TS* src, TD* dst, int64_t n, cudaStream_t stream) {
  if (n < 0) return Status(StatusCode::kInvalidArgument, "cast: n = " + std::to_string(n));
  if (n == 0) return Status::Ok();
  if (src == nullptr || dst == nullptr) {
    return Status(StatusCode::kInvalidArgument, "cast: null src or dst");
  }
  if constexpr (std::is_same_v<TS, TD>) {
    if (static_cast<const void*>(src) == static_cast<const void*>(dst)) return Status::Ok();
    G3_CUDA_RETURN(cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * sizeof(TS),
                                   cudaMemcpyDeviceToDevice, stream));
    return Status::Ok();
  } else {
    if (aligned16(src) && aligned16(dst)) {
      launch_pdl(cast_kernel<TS, TD, true>, grid_for(n, kThreads * 8), kThreads, 0, stream, src,
                 dst, n);
    } else {
      launch_pdl(cast_kernel<TS, TD, false>, grid_for(n, kThreads), kThreads, 0, stream, src, dst,
                 n);
    }
    return check_launch("cast_kernel");
  }
}

template <typename TS, typename TQ>
Status quantize(const TS* src, TQ* dst, float* scale, int64_t rows, int64_t cols,
                cudaStream_t stream) {
  if constexpr (is_kquant_v<TQ>) {
    (void)scale;  // K-quants: own checks (cols % 256) and kernels
    return detail::kq_quantize(src, dst, rows, cols, stream);
  } else {
    constexpr bool kFp8 = std::is_same_v<TQ, fp8e4m3>;
    G3_RETURN_IF_ERROR(
        check_quant_args("quantize", src, dst, scale, kFp8, kIsBlock<TQ>, rows, cols));
    if (rows == 0) return Status::Ok();
    if constexpr (kFp8) {
      launch_pdl(quantize_fp8_kernel<TS>, grid_for(rows, 1), kThreads, 0, stream, src, dst, scale,
                 rows, cols);
      return check_launch("quantize_fp8_kernel");
    } else {
      const int64_t nblocks = rows * (cols / kQK);
      const unsigned grid = grid_for(nblocks, kThreads / 32);
      if constexpr (std::is_same_v<TQ, block_q8_0>) {
        launch_pdl(quantize_q8_0_kernel<TS>, grid, kThreads, 0, stream, src, dst, nblocks);
        return check_launch("quantize_q8_0_kernel");
      } else {
        launch_pdl(quantize_q4_0_kernel<TS>, grid, kThreads, 0, stream, src, dst, nblocks);
        return check_launch("quantize_q4_0_kernel");
      }
    }
  }
}

template <typename TQ, typename TD>
Status dequantize(const TQ* src, const float* scale, TD* dst, int64_t rows, int64_t cols,
                  cudaStream_t stream) {
  if constexpr (is_kquant_v<TQ>) {
    (void)scale;  // K-quants: own checks (cols % 256) and kernels
    return detail::kq_dequantize(src, dst, rows, cols, stream);
  } else {
    constexpr bool kFp8 = std::is_same_v<TQ, fp8e4m3>;
    G3_RETURN_IF_ERROR(
        check_quant_args("dequantize", src, dst, scale, kFp8, kIsBlock<TQ>, rows, cols));
    if (rows == 0) return Status::Ok();
    if constexpr (kFp8) {
      launch_pdl(dequantize_fp8_kernel<TD>, grid_for(rows * cols, kThreads), kThreads, 0, stream,
                 src, scale, dst, rows, cols);
      return check_launch("dequantize_fp8_kernel");
    } else {
      const int64_t groups = rows * cols / 8;
      const unsigned grid = grid_for(groups, kThreads);
      if constexpr (std::is_same_v<TQ, block_q8_0>) {
        launch_pdl(dequantize_q8_0_kernel<TD>, grid, kThreads, 0, stream, src, dst, groups);
        return check_launch("dequantize_q8_0_kernel");
      } else {
        launch_pdl(dequantize_q4_0_kernel<TD>, grid, kThreads, 0, stream, src, dst, groups);
        return check_launch("dequantize_q4_0_kernel");
      }
    }
  }
}

namespace {
// One thread per block: its f16 d and q quant bytes move between the GGUF block ((2 + q) b of the
// row) and the split places (runtime/dtype.h), as 16-bit words (every place is 2-byte aligned).
template <int q>
__global__ void __launch_bounds__(kThreads)
    repack_split_kernel(const uint8_t* __restrict__ src, uint8_t* __restrict__ dst, int64_t blocks,
                        int64_t nb, bool to_split) {
  pdl_wait();  // pdl.cuh
  pdl_trigger();
  const int64_t row_bytes = nb * (2 + q);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < blocks;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / nb, b = i % nb, g = r * row_bytes + b * (2 + q);
    const int64_t d_at = r * row_bytes + split_d_offset(q, nb, b);
    const int64_t qs_at = r * row_bytes + split_qs_offset(q, b);
    const uint16_t* sd = reinterpret_cast<const uint16_t*>(src + (to_split ? g : d_at));
    const uint16_t* sq = reinterpret_cast<const uint16_t*>(src + (to_split ? g + 2 : qs_at));
    uint16_t* dd = reinterpret_cast<uint16_t*>(dst + (to_split ? d_at : g));
    uint16_t* dq = reinterpret_cast<uint16_t*>(dst + (to_split ? qs_at : g + 2));
    *dd = *sd;
#pragma unroll
    for (int j = 0; j < q / 2; ++j) dq[j] = sq[j];
  }
}
}  // namespace

Status repack_split(const void* src, void* dst, int64_t rows, int64_t cols, int qs_bytes,
                    bool to_split, cudaStream_t stream) {
  if (rows < 0 || cols <= 0 || cols % kQK != 0 || (qs_bytes != 16 && qs_bytes != 32)) {
    return Status(StatusCode::kInvalidArgument,
                  "repack_split: rows = " + std::to_string(rows) + ", cols = " +
                      std::to_string(cols) + ", qs_bytes = " + std::to_string(qs_bytes) +
                      " (need rows >= 0, cols > 0, cols % 32 == 0, 16 or 32)");
  }
  if (rows == 0) return Status::Ok();
  if (src == nullptr || dst == nullptr)
    return Status(StatusCode::kInvalidArgument, "repack_split: null pointer");
  if ((reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(dst)) & 1)
    return Status(StatusCode::kInvalidArgument, "repack_split: pointers must be 2-byte aligned");
  const int64_t blocks = rows * (cols / kQK);
  const auto* s = static_cast<const uint8_t*>(src);
  auto* d = static_cast<uint8_t*>(dst);
  if (qs_bytes == 16) {
    launch_pdl(repack_split_kernel<16>, grid_for(blocks, kThreads), kThreads, 0, stream, s, d,
               blocks, cols / kQK, to_split);
  } else {
    launch_pdl(repack_split_kernel<32>, grid_for(blocks, kThreads), kThreads, 0, stream, s, d,
               blocks, cols / kQK, to_split);
  }
  return check_launch("repack_split_kernel");
}

#define G3_CAST(TS, TD) template Status cast<TS, TD>(const TS*, TD*, int64_t, cudaStream_t);
G3_CAST(float, float)
G3_CAST(float, bf16)
G3_CAST(float, f16)
G3_CAST(bf16, float)
G3_CAST(bf16, bf16)
G3_CAST(bf16, f16)
G3_CAST(f16, float)
G3_CAST(f16, bf16)
G3_CAST(f16, f16)
G3_CAST(float, fp8e4m3)
G3_CAST(bf16, fp8e4m3)
#undef G3_CAST

#define G3_QUANT(TS, TQ)                                                                    \
  template Status quantize<TS, TQ>(const TS*, TQ*, float*, int64_t, int64_t, cudaStream_t); \
  template Status dequantize<TQ, TS>(const TQ*, const float*, TS*, int64_t, int64_t, cudaStream_t);
G3_QUANT(float, block_q8_0)
G3_QUANT(float, block_q4_0)
G3_QUANT(float, fp8e4m3)
G3_QUANT(bf16, block_q8_0)
G3_QUANT(bf16, block_q4_0)
G3_QUANT(bf16, fp8e4m3)
G3_QUANT(float, block_q4_K)
G3_QUANT(float, block_q5_K)
G3_QUANT(float, block_q6_K)
G3_QUANT(bf16, block_q4_K)
G3_QUANT(bf16, block_q5_K)
G3_QUANT(bf16, block_q6_K)
#undef G3_QUANT

}  // namespace gemma3::cuda
