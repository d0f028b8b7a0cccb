// Sum of n arrays on the host (the reduction of the host all-reduce), float32 accumulation.
#include "kernels/cpu/all_reduce.h"

#include "kernels/cpu/cpu_common.h"
#include "runtime/threadpool.h"

namespace gemma3::cpu {
using namespace detail;

template <typename T>
void sum_n_range(const T* const* src, int n_src, T* out, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    float acc = to_f32(src[0][i]);
    for (int r = 1; r < n_src; ++r) acc += to_f32(src[r][i]);
    out[i] = from_f32<T>(acc);
  }
}

template <typename T>
Status sum_n(const T* const* src, int n_src, T* out, int64_t count) {
  if (n_src < 1 || n_src > kMaxSumSources || count < 0)
    return invalid("sum_n", kv("n_src", n_src) + ", " + kv("count", count) +
                                " (need 1 <= n_src <= " + std::to_string(kMaxSumSources) +
                                ", count >= 0)");
  if (count == 0) return Status::Ok();
  if (out == nullptr) return invalid("sum_n", "null output");
  for (int r = 0; r < n_src; ++r)
    if (src[r] == nullptr) return invalid("sum_n", "null source " + std::to_string(r));
  parallel_for(count, 1 << 14, [&](int64_t b, int64_t e) { sum_n_range(src, n_src, out, b, e); });
  return Status::Ok();
}

#define G3_SUM(T)                                                           \
  template void sum_n_range<T>(const T* const*, int, T*, int64_t, int64_t); \
  template Status sum_n<T>(const T* const*, int, T*, int64_t);
G3_SUM(float)
G3_SUM(bf16)
G3_SUM(f16)
#undef G3_SUM

}  // namespace gemma3::cpu
