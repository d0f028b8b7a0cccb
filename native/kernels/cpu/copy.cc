// copy_rows on CPU: row scatter (KV cache writes), rows split over the pool when large.
#include <cstring>

#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/cpu_kernels.h"
#include "runtime/threadpool.h"

namespace gemma3::cpu {
using namespace detail;

Status copy_rows(const void* src, void* dst, const int32_t* dst_rows, int64_t n,
                 int64_t dst_capacity_rows, int64_t row_bytes, int64_t ld_src_bytes) {
  if (n < 0 || dst_capacity_rows < 0 || row_bytes <= 0 || ld_src_bytes < row_bytes)
    return invalid("copy_rows", kv("n", n) + ", " + kv("dst_capacity_rows", dst_capacity_rows) +
                                    ", " + kv("row_bytes", row_bytes) + ", " +
                                    kv("ld_src_bytes", ld_src_bytes) +
                                    " (need n >= 0, dst_capacity_rows >= 0, row_bytes > 0, "
                                    "ld_src_bytes >= row_bytes)");
  if (n == 0) return Status::Ok();
  if (src == nullptr || dst == nullptr || dst_rows == nullptr)
    return invalid("copy_rows", "null pointer");
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  parallel_for(n, grain_for(row_bytes, 1 << 16), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t r = dst_rows[i];
      // < 0: a skipped slot. >= capacity: ops reports it before this runs; never write there.
      if (r < 0 || r >= dst_capacity_rows) continue;
      memcpy(d + r * row_bytes, s + i * ld_src_bytes, size_t(row_bytes));
    }
  });
  return Status::Ok();
}

}  // namespace gemma3::cpu
