// embedding gather on CPU: one token row per work item; block-format and fp8 tables dequantize the
// row (fp8: float(e4m3) * s, a per-tensor scale).
#include <limits>
#include <type_traits>

#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/cpu_kernels.h"
#include "runtime/threadpool.h"

namespace gemma3::cpu {
using namespace detail;

template <typename TW, typename TY>
Status embedding(const int32_t* ids, const TW* table, TY* out, int64_t n, int64_t dim,
                 int64_t vocab, float s) {
  if (n < 0 || dim <= 0 || vocab <= 0)
    return invalid("embedding", kv("n", n) + ", " + kv("dim", dim) + ", " + kv("vocab", vocab) +
                                    " (need n >= 0, dim > 0, vocab > 0)");
  if (!whole_blocks<TW>(dim)) return invalid("embedding", whole_blocks_msg<TW>("dim", dim));
  if (n == 0) return Status::Ok();
  if (ids == nullptr || table == nullptr || out == nullptr)
    return invalid("embedding", "null pointer");
  parallel_for(n, grain_for(dim * 2), [&](int64_t b, int64_t e) {
    float* row = scratch(kScratchA, size_t(dim));
    for (int64_t t = b; t < e; ++t) {
      const int64_t id = ids[t];
      if (id < 0 || id >= vocab) {  // bad id: a visible NaN row, never an out-of-bounds read
        for (int64_t i = 0; i < dim; ++i) row[i] = std::numeric_limits<float>::quiet_NaN();
      } else {
        decode(table + id * row_units<TW>(dim), 0, dim, row);
        for (int64_t i = 0; i < dim; ++i) row[i] *= s;
      }
      encode(row, dim, out + t * dim);
    }
  });
  return Status::Ok();
}

#define G3_EMBEDDING(TW, TY)                                                                   \
  template Status embedding<TW, TY>(const int32_t*, const TW*, TY*, int64_t, int64_t, int64_t, \
                                    float);
#define G3_EMBEDDING_TY(TW) G3_EMBEDDING(TW, float) G3_EMBEDDING(TW, bf16)
G3_EMBEDDING_TY(float)
G3_EMBEDDING_TY(bf16)
G3_EMBEDDING_TY(block_q8_0)
G3_EMBEDDING_TY(block_q4_0)
G3_EMBEDDING_TY(fp8e4m3)
G3_EMBEDDING_TY(block_q4_K)
G3_EMBEDDING_TY(block_q5_K)
G3_EMBEDDING_TY(block_q6_K)
#undef G3_EMBEDDING_TY
#undef G3_EMBEDDING

}  // namespace gemma3::cpu
