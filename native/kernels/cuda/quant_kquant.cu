// quantize / dequantize for the GGUF K-quants (q4_K, q5_K, q6_K) on CUDA, called by quant.cu.
// Both run runtime/kquant.h's code, so the bytes and floats equal the CPU backend's: this file is
// compiled with --fmad=false (CMakeLists.txt), since llama.cpp's reference quantizer rounds every
// product and sum on its own and a contracted a * b + c would pick other levels now and then.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "runtime/kquant.h"

namespace gemma3::cuda::detail {
namespace {

constexpr int kThreads = 128;
constexpr int64_t kMaxBlocks = 65536;  // grid-stride loops cover the rest

unsigned grid_for(int64_t items) {
  return static_cast<unsigned>(std::min((items + kThreads - 1) / kThreads, kMaxBlocks));
}

// One thread per super-block: the reference search (make_qkx2_quants / make_qx_quants) is
// sequential inside a block. Load-time work: ~50k float operations per block, from local memory.
// src: [nblocks * 256] contiguous; dst: [nblocks].
template <typename TS, typename TB>
__global__ void __launch_bounds__(kThreads)
    kq_quantize_kernel(const TS* __restrict__ src, TB* __restrict__ dst, int64_t nblocks) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < nblocks; b += stride) {
    float x[kQK_K];
    for (int i = 0; i < kQK_K; ++i) x[i] = to_f32(src[b * kQK_K + i]);
    TB blk;
    kq_quantize(x, &blk);
    dst[b] = blk;
  }
}

// One thread per 8 consecutive outputs. src: [groups / 32] blocks; dst: [groups * 8].
template <typename TB, typename TD>
__global__ void __launch_bounds__(kThreads)
    kq_dequantize_kernel(const TB* __restrict__ src, TD* __restrict__ dst, int64_t groups) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += stride) {
    float y[8];
    kq_dequant8(src[g / (kQK_K / 8)], static_cast<int>(g % (kQK_K / 8)) * 8, y);
#pragma unroll
    for (int i = 0; i < 8; ++i) dst[g * 8 + i] = from_f32<TD>(y[i]);
  }
}

Status check_args(const char* name, const void* src, const void* dst, int64_t rows, int64_t cols) {
  if (rows < 0 || cols <= 0 || cols % kQK_K != 0) {  // as the CPU backend
    return Status(StatusCode::kInvalidArgument,
                  std::string(name) + ": rows = " + std::to_string(rows) +
                      ", cols = " + std::to_string(cols) +
                      " (need rows >= 0, cols > 0 and a multiple of 256 for a K-quant)");
  }
  if (rows > 0 && (src == nullptr || dst == nullptr)) {
    return Status(StatusCode::kInvalidArgument, std::string(name) + ": null src or dst");
  }
  return Status::Ok();
}

}  // namespace

// src: [rows, cols] TS; dst: [rows, cols / 256] blocks.
template <typename TS, typename TB>
Status kq_quantize(const TS* src, TB* dst, int64_t rows, int64_t cols, cudaStream_t stream) {
  G3_RETURN_IF_ERROR(check_args("quantize", src, dst, rows, cols));
  if (rows == 0) return Status::Ok();
  const int64_t nblocks = rows * (cols / kQK_K);
  kq_quantize_kernel<TS, TB><<<grid_for(nblocks), kThreads, 0, stream>>>(src, dst, nblocks);
  return check_launch("kq_quantize_kernel");
}

// src: [rows, cols / 256] blocks; dst: [rows, cols] TD.
template <typename TB, typename TD>
Status kq_dequantize(const TB* src, TD* dst, int64_t rows, int64_t cols, cudaStream_t stream) {
  G3_RETURN_IF_ERROR(check_args("dequantize", src, dst, rows, cols));
  if (rows == 0) return Status::Ok();
  const int64_t groups = rows * cols / 8;
  kq_dequantize_kernel<TB, TD><<<grid_for(groups), kThreads, 0, stream>>>(src, dst, groups);
  return check_launch("kq_dequantize_kernel");
}

#define G3_KQ(TS, TB)                                                                  \
  template Status kq_quantize<TS, TB>(const TS*, TB*, int64_t, int64_t, cudaStream_t); \
  template Status kq_dequantize<TB, TS>(const TB*, TS*, int64_t, int64_t, cudaStream_t);
G3_KQ(float, block_q4_K)
G3_KQ(float, block_q5_K)
G3_KQ(float, block_q6_K)
G3_KQ(bf16, block_q4_K)
G3_KQ(bf16, block_q5_K)
G3_KQ(bf16, block_q6_K)
#undef G3_KQ

}  // namespace gemma3::cuda::detail
