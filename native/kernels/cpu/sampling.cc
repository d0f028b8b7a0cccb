// Row softmax / argmax / top-k on CPU: one row per work item, float32 math.
// NaN policy (argmax, topk): NaN ranks below every number, -inf included, so it is never picked
// over a number; a row of only NaN yields index 0 (argmax) / the lowest indices (topk).
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/cpu_kernels.h"
#include "runtime/threadpool.h"

namespace gemma3::cpu {
namespace {
using namespace detail;

Status check_rows(const char* kernel, int64_t rows, int64_t cols) {
  if (rows < 0 || cols <= 0)
    return invalid(kernel,
                   kv("rows", rows) + ", " + kv("cols", cols) + " (need rows >= 0, cols > 0)");
  return Status::Ok();
}

// Strict "a ranks before b": larger value first, ties to the lower index, NaN last.
struct Entry {
  float v;
  int32_t i;
};
inline bool before(const Entry& a, const Entry& b) {
  const bool an = std::isnan(a.v), bn = std::isnan(b.v);
  if (an != bn) return bn;
  if (!an && a.v != b.v) return a.v > b.v;
  return a.i < b.i;
}

}  // namespace

template <typename T>
Status softmax(const T* x, T* out, int64_t rows, int64_t cols) {
  G3_RETURN_IF_ERROR(check_rows("softmax", rows, cols));
  if (rows == 0) return Status::Ok();
  if (x == nullptr || out == nullptr) return invalid("softmax", "null pointer");
  parallel_for(rows, grain_for(cols * 8), [&](int64_t b, int64_t e) {
    float* row = scratch(kScratchA, size_t(cols));
    for (int64_t r = b; r < e; ++r) {
      decode(x + r * cols, 0, cols, row);
      float mx = row[0];
      for (int64_t i = 1; i < cols; ++i) mx = std::max(mx, row[i]);
      float sum = 0.f;
      for (int64_t i = 0; i < cols; ++i) {
        row[i] = std::exp(row[i] - mx);
        sum += row[i];
      }
      const float inv = 1.0f / sum;
      for (int64_t i = 0; i < cols; ++i) row[i] *= inv;
      encode(row, cols, out + r * cols);
    }
  });
  return Status::Ok();
}

template <typename T>
Status argmax(const T* x, int32_t* out, int64_t rows, int64_t cols) {
  G3_RETURN_IF_ERROR(check_rows("argmax", rows, cols));
  if (cols > INT32_MAX) return invalid("argmax", kv("cols", cols) + " exceeds int32 indices");
  if (rows == 0) return Status::Ok();
  if (x == nullptr || out == nullptr) return invalid("argmax", "null pointer");
  parallel_for(rows, grain_for(cols), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* row = x + r * cols;
      float best = 0.f;
      int64_t idx = -1;
      for (int64_t i = 0; i < cols; ++i) {
        const float v = to_f32(row[i]);
        if (std::isnan(v)) continue;  // NaN never wins over a number
        if (idx < 0 || v > best) {    // strict: the first maximum wins
          best = v;
          idx = i;
        }
      }
      out[r] = idx < 0 ? 0 : int32_t(idx);  // a row of only NaN gives 0
    }
  });
  return Status::Ok();
}

template <typename T>
Status topk(const T* x, float* values, int32_t* indices, int64_t rows, int64_t cols, int64_t k) {
  G3_RETURN_IF_ERROR(check_rows("topk", rows, cols));
  if (cols > INT32_MAX) return invalid("topk", kv("cols", cols) + " exceeds int32 indices");
  if (k < 1 || k > std::min<int64_t>(cols, 1024))
    return invalid("topk",
                   kv("k", k) + " must be in [1, min(cols, 1024)] with " + kv("cols", cols));
  if (rows == 0) return Status::Ok();
  if (x == nullptr || values == nullptr || indices == nullptr)
    return invalid("topk", "null pointer");
  parallel_for(rows, grain_for(cols * 2), [&](int64_t b, int64_t e) {
    thread_local std::vector<Entry> heap;
    // Heap ordered by `before`, so heap.front() is the entry that ranks last among the kept k;
    // a new element enters only when it ranks before it (one compare for most elements).
    for (int64_t r = b; r < e; ++r) {
      const T* row = x + r * cols;
      heap.clear();
      for (int64_t i = 0; i < k; ++i) heap.push_back({to_f32(row[i]), int32_t(i)});
      std::make_heap(heap.begin(), heap.end(), before);
      for (int64_t i = k; i < cols; ++i) {
        const Entry c{to_f32(row[i]), int32_t(i)};
        if (before(c, heap.front())) {
          std::pop_heap(heap.begin(), heap.end(), before);
          heap.back() = c;
          std::push_heap(heap.begin(), heap.end(), before);
        }
      }
      std::sort_heap(heap.begin(), heap.end(), before);  // ascending by `before`: best first
      for (int64_t j = 0; j < k; ++j) {
        values[r * k + j] = heap[size_t(j)].v;
        indices[r * k + j] = heap[size_t(j)].i;
      }
    }
  });
  return Status::Ok();
}

#define G3_SAMPLING(T)                                             \
  template Status softmax<T>(const T*, T*, int64_t, int64_t);      \
  template Status argmax<T>(const T*, int32_t*, int64_t, int64_t); \
  template Status topk<T>(const T*, float*, int32_t*, int64_t, int64_t, int64_t);
G3_SAMPLING(float)
G3_SAMPLING(bf16)
#undef G3_SAMPLING

}  // namespace gemma3::cpu
