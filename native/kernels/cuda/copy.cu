// CUDA row scatter (KV cache writes): one warp per row for rows up to 4 KiB, one CTA per row for
// longer ones; copies in the widest unit (16/8/4/2/1 bytes) that the row size, source stride and
// both base addresses allow. Destination rows < 0 or >= capacity are skipped (bad indices never
// write outside dst).
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/pdl.cuh"

namespace gemma3::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int64_t kMaxGrid = 1 << 30;
constexpr int kUnroll = 4;  // independent loads in flight per thread

// src: rows at src + i * ld_src bytes; dst: [capacity] rows of row_bytes, row dst_rows[i] <- src
// row i. `group` threads (32 or blockDim.x) copy one row; units = row_bytes / sizeof(U).
template <typename U>
__global__ void __launch_bounds__(kThreads)
    copy_rows_kernel(const char* src, char* dst, const int32_t* dst_rows, int64_t n,
                     int64_t capacity, int64_t units, int64_t ld_src, int64_t row_bytes,
                     int group) {
  pdl_wait();  // pdl.cuh: inputs come from the kernel before
  pdl_trigger();
  const int lane = threadIdx.x % group;
  const int rows_per_cta = blockDim.x / group;
  for (int64_t i = int64_t(blockIdx.x) * rows_per_cta + threadIdx.x / group; i < n;
       i += int64_t(gridDim.x) * rows_per_cta) {
    const int32_t d = dst_rows[i];
    if (d < 0 || d >= capacity) continue;  // masked slot, or bad data that would write out of dst
    const U* s = reinterpret_cast<const U*>(src + i * ld_src);
    U* o = reinterpret_cast<U*>(dst + int64_t(d) * row_bytes);
    int64_t j = lane;
    for (; j + (kUnroll - 1) * group < units; j += kUnroll * group) {
      U v[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) v[u] = s[j + u * group];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) o[j + u * group] = v[u];
    }
    for (; j < units; j += group) o[j] = s[j];
  }
}

template <typename U>
Status launch_copy_rows(const void* src, void* dst, const int32_t* dst_rows, int64_t n,
                        int64_t capacity, int64_t row_bytes, int64_t ld_src_bytes,
                        cudaStream_t stream) {
  const int64_t units = row_bytes / int64_t(sizeof(U));
  const bool warp_row = row_bytes <= 4096;
  const int group = warp_row ? 32 : kThreads;
  const int64_t rows_per_cta = kThreads / group;
  const int64_t grid = (n + rows_per_cta - 1) / rows_per_cta;
  launch_pdl(copy_rows_kernel<U>, unsigned(grid < kMaxGrid ? grid : kMaxGrid), kThreads, 0, stream,
             static_cast<const char*>(src), static_cast<char*>(dst), dst_rows, n, capacity, units,
             ld_src_bytes, row_bytes, group);
  return check_launch("copy_rows");
}

}  // namespace

Status copy_rows(const void* src, void* dst, const int32_t* dst_rows, int64_t n,
                 int64_t dst_capacity_rows, int64_t row_bytes, int64_t ld_src_bytes,
                 cudaStream_t stream) {
  if (n < 0 || dst_capacity_rows < 0 || row_bytes <= 0 || ld_src_bytes < row_bytes) {
    return Status(StatusCode::kInvalidArgument,
                  "copy_rows: need n >= 0, dst_capacity_rows >= 0, row_bytes > 0, ld_src_bytes >= "
                  "row_bytes (n=" +
                      std::to_string(n) +
                      ", dst_capacity_rows=" + std::to_string(dst_capacity_rows) +
                      ", row_bytes=" + std::to_string(row_bytes) +
                      ", ld_src_bytes=" + std::to_string(ld_src_bytes) + ")");
  }
  if (n == 0 || dst_capacity_rows == 0) return Status::Ok();  // nothing can be written
  if (!src || !dst || !dst_rows) {
    return Status(StatusCode::kInvalidArgument, "copy_rows: null pointer");
  }
  // The widest unit dividing every byte offset the kernel forms.
  const uint64_t bits = uint64_t(row_bytes) | uint64_t(ld_src_bytes) |
                        reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(dst);
  auto launch = [&](auto unit) {
    return launch_copy_rows<decltype(unit)>(src, dst, dst_rows, n, dst_capacity_rows, row_bytes,
                                            ld_src_bytes, stream);
  };
  if ((bits & 15u) == 0) return launch(uint4{});
  if ((bits & 7u) == 0) return launch(uint2{});
  if ((bits & 3u) == 0) return launch(uint32_t{});
  if ((bits & 1u) == 0) return launch(uint16_t{});
  return launch(uint8_t{});
}

}  // namespace gemma3::cuda
