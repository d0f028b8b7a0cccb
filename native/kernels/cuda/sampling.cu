// CUDA row softmax, argmax and top-k. One CTA per row: vocab-size rows (262208) are read with
// 16-byte vectors (after a scalar head that reaches 16-byte alignment), several loads in flight per
// thread, and reduced in float32 with warp shuffles.
// top-k is a radix select on 64-bit keys (order-preserving float bits, then the inverted index so
// ties go to the lower index and every key is distinct): 11-bit digit histograms over the row until
// the remaining candidates fit shared memory, then the rest runs on the shared-memory copy; the k
// survivors are bitonic-sorted.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/vec.cuh"

namespace gemma3::cuda {
namespace {

constexpr int64_t kMaxGrid = 1 << 30;
constexpr int kMaxK = 1024;
constexpr int kTopkThreads = 1024;
constexpr int kRadixBits = 11;
constexpr int kBins = 1 << kRadixBits;  // = 2 * kTopkThreads (two bins per thread in the scan)
constexpr int kMaxCand = 16384;         // shared-memory candidates (8 bytes each)

using vec::block_reduce;
using vec::load_f32;
using vec::store_f32;

// Calls f(j0, v) over this thread's share of row[0, cols), v a float[N] holding row[j0 .. j0 + N)
// (N = 16 / sizeof(T) in the aligned body, 1 in the head and tail). kUnroll vectors are loaded
// before any is used, to keep loads in flight.
template <typename T, int kUnroll, typename F>
__device__ __forceinline__ void row_for_each(const T* row, int64_t cols, F&& f) {
  constexpr int V = 16 / sizeof(T);
  const int64_t tid = threadIdx.x, nthr = blockDim.x;
  int64_t p = int64_t((16 - (reinterpret_cast<uintptr_t>(row) & 15u)) & 15u) / int64_t(sizeof(T));
  if (p > cols) p = cols;
  const int64_t nvec = (cols - p) / V;
  for (int64_t j = tid; j < p; j += nthr) {
    float v[1] = {to_f32(row[j])};
    f(j, v);
  }
  const T* vrow = row + p;
  int64_t i = tid;
  for (; i + (kUnroll - 1) * nthr < nvec; i += kUnroll * nthr) {
    float v[kUnroll][V];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) load_f32<T, V>(vrow + (i + u * nthr) * V, v[u]);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) f(p + (i + u * nthr) * V, v[u]);
  }
  for (; i < nvec; i += nthr) {
    float v[V];
    load_f32<T, V>(vrow + i * V, v);
    f(p + i * V, v);
  }
  for (int64_t j = p + nvec * V + tid; j < cols; j += nthr) {
    float v[1] = {to_f32(row[j])};
    f(j, v);
  }
}

// ---------------------------------------------------------------- softmax
// x, out: [rows, cols]; same_phase: x and out rows share their address mod 16 (vector stores).
template <typename T>
__global__ void __launch_bounds__(1024)
    softmax_kernel(const T* x, T* out, int64_t rows, int64_t cols, bool same_phase) {
  pdl_wait();  // pdl.cuh: inputs come from the kernel before
  pdl_trigger();
  __shared__ float red[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * cols;
    T* outr = out + r * cols;
    float m = -INFINITY;
    row_for_each<T, 4>(xr, cols, [&](int64_t, const auto& v) {
#pragma unroll
      for (int j = 0; j < int(sizeof(v) / sizeof(float)); ++j) m = fmaxf(m, v[j]);
    });
    m = block_reduce(
        m, [](float a, float b) { return fmaxf(a, b); }, -INFINITY, red);
    float s = 0.0f;
    row_for_each<T, 4>(xr, cols, [&](int64_t, const auto& v) {
#pragma unroll
      for (int j = 0; j < int(sizeof(v) / sizeof(float)); ++j) s += expf(v[j] - m);
    });
    s = block_reduce(
        s, [](float a, float b) { return a + b; }, 0.0f, red);
    // Each element is read and written by the same thread, after all reads above: out may alias x.
    row_for_each<T, 2>(xr, cols, [&](int64_t j0, const auto& v) {
      constexpr int N = int(sizeof(v) / sizeof(float));
      float y[N];
#pragma unroll
      for (int j = 0; j < N; ++j) y[j] = expf(v[j] - m) / s;
      if constexpr (N == 1) {
        outr[j0] = from_f32<T>(y[0]);
      } else if (same_phase) {
        store_f32<T, N>(outr + j0, y);
      } else {
#pragma unroll
        for (int j = 0; j < N; ++j) outr[j0 + j] = from_f32<T>(y[j]);
      }
    });
  }
}

// ---------------------------------------------------------------- argmax
struct ValIdx {
  float v;
  int32_t i;
};

// The larger value, NaN never greater; equal values keep the lower index.
__device__ __forceinline__ ValIdx better(ValIdx a, ValIdx b) {
  return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;
}

// The CTA's best over its threads' `best`; valid in warp 0 (every lane). red_*: 32 slots each.
__device__ __forceinline__ ValIdx block_best(ValIdx best, float* red_v, int32_t* red_i) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    best = better(best, ValIdx{__shfl_xor_sync(0xffffffffu, best.v, o),
                               __shfl_xor_sync(0xffffffffu, best.i, o)});
  }
  __syncthreads();  // red_* of the previous row
  if (lane == 0) red_v[warp] = best.v, red_i[warp] = best.i;
  __syncthreads();
  if (warp == 0) {
    best = lane < int(blockDim.x >> 5) ? ValIdx{red_v[lane], red_i[lane]}
                                       : ValIdx{-INFINITY, INT32_MAX};
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      best = better(best, ValIdx{__shfl_xor_sync(0xffffffffu, best.v, o),
                                 __shfl_xor_sync(0xffffffffu, best.i, o)});
    }
  }
  return best;
}

// This thread's best over row[c0, c1) (indices relative to the row).
// INT32_MAX marks "nothing yet": -inf elements still win it on the index, NaN never does.
template <typename T>
__device__ __forceinline__ ValIdx thread_best(const T* row, int64_t c0, int64_t c1) {
  ValIdx best{-INFINITY, INT32_MAX};
  row_for_each<T, 4>(row + c0, c1 - c0, [&](int64_t j0, const auto& v) {
#pragma unroll
    for (int j = 0; j < int(sizeof(v) / sizeof(float)); ++j) {
      best = better(best, ValIdx{v[j], int32_t(c0 + j0 + j)});
    }
  });
  return best;
}

// x: [rows, cols]; out: [rows] int32. One CTA per row (many rows).
template <typename T>
__global__ void __launch_bounds__(1024)
    argmax_kernel(const T* x, int32_t* out, int64_t rows, int64_t cols) {
  pdl_wait();  // pdl.cuh: inputs come from the kernel before
  pdl_trigger();
  __shared__ float red_v[32];
  __shared__ int32_t red_i[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const ValIdx best = block_best(thread_best(x + r * cols, 0, cols), red_v, red_i);
    if (threadIdx.x == 0) out[r] = best.i == INT32_MAX ? 0 : best.i;  // an all-NaN row gives 0
  }
}

// Few rows (a decode step's logits, batch x 262208): one row would keep a single SM reading 1 MB
// (19 us on an H200), so a cluster of kArgmaxCluster CTAs splits each row (blockIdx.y) into
// contiguous slices and the first CTA combines the slices' bests through distributed shared
// memory. `better` is a total order (value, then lower index), so the split cannot change the
// result.
constexpr int kArgmaxCluster = 8;  // the portable cluster size
constexpr int64_t kArgmaxClusterMaxRows = 32;

template <typename T>
__global__ void __launch_bounds__(1024)
    argmax_cluster_kernel(const T* x, int32_t* out, int64_t cols) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900  // clusters; the launcher checks the device
  pdl_wait();
  pdl_trigger();
  __shared__ float red_v[32];
  __shared__ int32_t red_i[32];
  __shared__ ValIdx slice_best;
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  const int64_t r = blockIdx.y;
  const int rank = int(cluster.block_rank()), n = int(cluster.num_blocks());
  // Slices in whole 16-byte vectors of the row (any split is correct; this keeps them aligned).
  const int64_t per = ((cols + n - 1) / n + 7) / 8 * 8;
  const int64_t c0 = rank * per < cols ? rank * per : cols;
  const int64_t c1 = c0 + per < cols ? c0 + per : cols;
  const ValIdx best = block_best(thread_best(x + r * cols, c0, c1), red_v, red_i);
  if (threadIdx.x == 0) slice_best = best;
  cluster.sync();  // every slice's best written
  if (rank == 0 && threadIdx.x < 32) {
    const int lane = threadIdx.x;
    ValIdx b =
        lane < n ? *cluster.map_shared_rank(&slice_best, lane) : ValIdx{-INFINITY, INT32_MAX};
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      b = better(
          b, ValIdx{__shfl_xor_sync(0xffffffffu, b.v, o), __shfl_xor_sync(0xffffffffu, b.i, o)});
    }
    if (lane == 0) out[r] = b.i == INT32_MAX ? 0 : b.i;
  }
  cluster.sync();  // the other CTAs' shared memory stays until rank 0 has read it
#endif
}

// ---------------------------------------------------------------- top-k
// Order-preserving 32-bit key of a float: NaN sorts below -inf, -0 equals +0.
__device__ __forceinline__ uint32_t float_key(float v) {
  uint32_t u = __float_as_uint(v);
  if (u == 0x80000000u) u = 0;
  return v != v ? 0u : ((u & 0x80000000u) ? ~u : (u | 0x80000000u));
}

// Descending key = descending value, then ascending index (all keys distinct).
__device__ __forceinline__ uint64_t topk_key(uint32_t fk, int64_t idx) {
  return (uint64_t(fk) << 32) | uint64_t(~uint32_t(idx));
}

// Appends key to buf[*count] for the lanes where pred holds, one shared atomic per warp (the
// lanes that reach this call together, as cooperative_groups::coalesced_threads would group them).
__device__ __forceinline__ void append_if(bool pred, uint64_t key, uint64_t* buf, uint32_t* count,
                                          uint32_t cap) {
  const unsigned active = __activemask();
  const unsigned want = __ballot_sync(active, pred);
  if (want == 0) return;
  const int lane = threadIdx.x & 31, leader = __ffs(want) - 1;
  uint32_t base = 0;
  if (lane == leader) base = atomicAdd(count, uint32_t(__popc(want)));
  base = __shfl_sync(active, base, leader);
  const uint32_t pos = base + __popc(want & ((1u << lane) - 1u));
  if (pred && pos < cap) buf[pos] = key;
}

// Radix-select state: the k-th largest key has key >> shift == prefix (shift 64: nothing known).
struct Select {
  int shift;
  uint64_t prefix;
  // Float-key range [lo, hi] of keys with that prefix: a cheap filter before building the key.
  __device__ __forceinline__ uint32_t lo() const {
    return shift >= 64 ? 0u
                       : (shift >= 32 ? uint32_t(prefix << (shift - 32))
                                      : uint32_t(prefix >> (32 - shift)));
  }
  __device__ __forceinline__ uint32_t hi() const {
    return shift >= 64 ? ~0u
                       : (shift >= 32 ? lo() | uint32_t((uint64_t(1) << (shift - 32)) - 1u) : lo());
  }
  __device__ __forceinline__ bool eq(uint64_t key) const {
    return shift >= 64 || (key >> shift) == prefix;
  }
  __device__ __forceinline__ bool ge(uint64_t key) const {
    return shift >= 64 || (key >> shift) >= prefix;
  }
};

// x: [rows, cols]; values, indices: [rows, k]. Dynamic shared memory: sel[kMaxK], cand[cap]
// (uint64 keys), hist[kBins] (uint32). blockDim.x == kTopkThreads.
template <typename T>
__global__ void __launch_bounds__(kTopkThreads, 1)
    topk_kernel(const T* x, float* values, int32_t* indices, int64_t rows, int64_t cols, int k,
                int cap) {
  pdl_wait();  // pdl.cuh: inputs come from the kernel before
  pdl_trigger();
  extern __shared__ uint64_t smem[];
  uint64_t* sel = smem;                                      // final set, then sorted
  uint64_t* cand = smem + kMaxK;                             // candidates once they fit
  uint32_t* hist = reinterpret_cast<uint32_t*>(cand + cap);  // digit histogram
  __shared__ uint32_t n_sel, n_cand, wsum[kTopkThreads / 32];
  __shared__ uint32_t s_digit, s_above, s_count;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * cols;
    Select st{64, 0};
    uint32_t need = k;     // how many keys with the prefix still belong to the top k
    int64_t count = cols;  // keys with the prefix
    bool in_smem = false;  // keys with the prefix copied to cand[]
    if (tid == 0) n_sel = 0, n_cand = 0;
    __syncthreads();

    while (true) {
      if (!in_smem && count <= cap) {
        // Keys above the prefix are in the result already; keys on it become candidates.
        const uint32_t lo = st.lo();
        row_for_each<T, 2>(xr, cols, [&](int64_t j0, const auto& v) {
#pragma unroll
          for (int j = 0; j < int(sizeof(v) / sizeof(float)); ++j) {
            const uint32_t fk = float_key(v[j]);
            if (fk >= lo) {
              const uint64_t key = topk_key(fk, j0 + j);
              const bool eq = st.eq(key);
              append_if(eq, key, cand, &n_cand, uint32_t(cap));
              append_if(!eq && st.ge(key), key, sel, &n_sel, uint32_t(kMaxK));
            }
          }
        });
        in_smem = true;
      }
      const int w = st.shift < kRadixBits ? st.shift : kRadixBits;
      const int nshift = st.shift - w;
      const uint32_t mask = (1u << w) - 1u;
      for (int b = tid; b < kBins; b += blockDim.x) hist[b] = 0;
      __syncthreads();  // hist zeroed; cand/n_cand complete
      if (in_smem) {
        const int nc = int(n_cand < uint32_t(cap) ? n_cand : uint32_t(cap));
        for (int c = tid; c < nc; c += blockDim.x) {
          const uint64_t key = cand[c];
          if (st.eq(key)) atomicAdd(&hist[uint32_t(key >> nshift) & mask], 1u);
        }
      } else if (st.shift == 64) {  // first pass: every key counts, the digit is fk's top bits
        row_for_each<T, 2>(xr, cols, [&](int64_t, const auto& v) {
#pragma unroll
          for (int j = 0; j < int(sizeof(v) / sizeof(float)); ++j) {
            atomicAdd(&hist[float_key(v[j]) >> (32 - kRadixBits)], 1u);
          }
        });
      } else {
        const uint32_t lo = st.lo(), hi = st.hi();
        row_for_each<T, 2>(xr, cols, [&](int64_t j0, const auto& v) {
#pragma unroll
          for (int j = 0; j < int(sizeof(v) / sizeof(float)); ++j) {
            const uint32_t fk = float_key(v[j]);
            if (fk >= lo && fk <= hi) {
              const uint64_t key = topk_key(fk, j0 + j);
              if (st.eq(key)) atomicAdd(&hist[uint32_t(key >> nshift) & mask], 1u);
            }
          }
        });
      }
      __syncthreads();
      // Find digit d with (keys in bins above d) < need <= (keys in bins d and above): a suffix
      // scan over the bins, two per thread, highest bins first.
      const uint32_t h0 = hist[2 * tid], h1 = hist[2 * tid + 1];
      uint32_t s = h0 + h1;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const uint32_t y = __shfl_down_sync(0xffffffffu, s, o);
        if (lane + o < 32) s += y;
      }
      if (lane == 0) wsum[warp] = s;
      __syncthreads();
      for (int q = warp + 1; q < int(blockDim.x >> 5); ++q) s += wsum[q];
      const uint32_t above_pair = s - h0 - h1;  // keys in bins > 2 * tid + 1
      if (above_pair < need && need <= s) {
        const bool hi = above_pair + h1 >= need;
        s_digit = 2 * tid + (hi ? 1 : 0);
        s_above = hi ? above_pair : above_pair + h1;
        s_count = hi ? h1 : h0;
      }
      __syncthreads();
      need -= s_above;
      st.prefix = (st.shift >= 64 ? 0 : st.prefix << w) | s_digit;
      st.shift = nshift;
      count = s_count;
      __syncthreads();  // s_* and wsum are rewritten by the next pass
      // Keys are distinct, so this holds at the latest when shift reaches 0 (count == 1).
      if (count == need || st.shift == 0) break;
    }

    // The result: every key with key >> shift >= prefix (exactly k of them).
    if (in_smem) {
      const int nc = int(n_cand < uint32_t(cap) ? n_cand : uint32_t(cap));
      for (int c = tid; c < nc; c += blockDim.x) {
        const uint64_t key = cand[c];
        append_if(st.ge(key), key, sel, &n_sel, uint32_t(kMaxK));
      }
    } else {
      const uint32_t lo = st.lo();
      row_for_each<T, 2>(xr, cols, [&](int64_t j0, const auto& v) {
#pragma unroll
        for (int j = 0; j < int(sizeof(v) / sizeof(float)); ++j) {
          const uint32_t fk = float_key(v[j]);
          if (fk >= lo) {
            const uint64_t key = topk_key(fk, j0 + j);
            append_if(st.ge(key), key, sel, &n_sel, uint32_t(kMaxK));
          }
        }
      });
    }
    __syncthreads();

    // Bitonic sort, descending, of sel padded with 0 (below every real key) to a power of two.
    int n2 = 2;
    while (n2 < k) n2 <<= 1;
    for (int i = tid; i < n2; i += blockDim.x) {
      if (i >= int(n_sel)) sel[i] = 0;
    }
    for (int size = 2; size <= n2; size <<= 1) {
      for (int stride = size >> 1; stride > 0; stride >>= 1) {
        __syncthreads();
        for (int i = tid; i < n2; i += blockDim.x) {
          const int j = i ^ stride;
          if (j > i) {
            const uint64_t a = sel[i], b = sel[j];
            if (((i & size) == 0) ? a < b : a > b) sel[i] = b, sel[j] = a;
          }
        }
      }
    }
    __syncthreads();
    for (int i = tid; i < k; i += blockDim.x) {
      const uint32_t idx = ~uint32_t(sel[i]);
      // Re-read the value: exact for bf16, and keeps NaN payloads that the key dropped.
      const bool ok = idx < uint64_t(cols);
      values[r * k + i] = ok ? to_f32(xr[idx]) : __uint_as_float(0x7fc00000u);
      indices[r * k + i] = ok ? int32_t(idx) : -1;
    }
    __syncthreads();  // sel, n_sel of this row are done before the next row resets them
  }
}

inline Status invalid(const std::string& msg) { return Status(StatusCode::kInvalidArgument, msg); }

inline Status check_rows_cols(const char* name, int64_t rows, int64_t cols) {
  if (rows < 0 || cols <= 0 || cols > INT32_MAX) {
    return invalid(std::string(name) + ": need rows >= 0 and 0 < cols <= 2^31 - 1 (rows=" +
                   std::to_string(rows) + ", cols=" + std::to_string(cols) + ")");
  }
  return Status::Ok();
}

// One CTA per row: 1024 threads for vocab-size rows, fewer for short rows.
inline int row_threads(int64_t cols) { return cols >= 16384 ? 1024 : (cols >= 2048 ? 256 : 128); }

inline unsigned row_grid(int64_t rows) { return unsigned(rows < kMaxGrid ? rows : kMaxGrid); }

}  // namespace

template <typename T>
Status softmax(const T* x, T* out, int64_t rows, int64_t cols, cudaStream_t stream) {
  G3_RETURN_IF_ERROR(check_rows_cols("softmax", rows, cols));
  if (rows == 0) return Status::Ok();
  if (!x || !out) return invalid("softmax: null pointer");
  const bool same_phase =
      ((reinterpret_cast<uintptr_t>(x) ^ reinterpret_cast<uintptr_t>(out)) & 15u) == 0;
  launch_pdl(softmax_kernel<T>, row_grid(rows), row_threads(cols), 0, stream, x, out, rows, cols,
             same_phase);
  return check_launch("softmax");
}

template <typename T>
Status argmax(const T* x, int32_t* out, int64_t rows, int64_t cols, cudaStream_t stream) {
  G3_RETURN_IF_ERROR(check_rows_cols("argmax", rows, cols));
  if (rows == 0) return Status::Ok();
  if (!x || !out) return invalid("argmax: null pointer");
  if (rows > kArgmaxClusterMaxRows || cols < 16384 || !sm90_or_newer()) {
    launch_pdl(argmax_kernel<T>, row_grid(rows), row_threads(cols), 0, stream, x, out, rows, cols);
    return check_launch("argmax");
  }
  G3_CUDA_RETURN(launch_ex(pdl_enabled(), kArgmaxCluster, argmax_cluster_kernel<T>,
                           dim3(kArgmaxCluster, unsigned(rows), 1), dim3(1024), 0, stream, x, out,
                           cols));
  return check_launch("argmax");
}

template <typename T>
Status topk(const T* x, float* values, int32_t* indices, int64_t rows, int64_t cols, int64_t k,
            cudaStream_t stream) {
  G3_RETURN_IF_ERROR(check_rows_cols("topk", rows, cols));
  if (k < 1 || k > cols || k > kMaxK) {
    return invalid("topk: need 1 <= k <= min(cols, 1024) (k=" + std::to_string(k) +
                   ", cols=" + std::to_string(cols) + ")");
  }
  if (rows == 0) return Status::Ok();
  if (!x || !values || !indices) return invalid("topk: null pointer");
  // Short rows go straight to shared memory; a smaller candidate buffer lets more CTAs share an SM.
  const int cap = int(cols < kMaxCand ? cols : kMaxCand);
  const size_t smem = size_t(kMaxK + cap) * sizeof(uint64_t) + kBins * sizeof(uint32_t);
  G3_CUDA_RETURN(
      cudaFuncSetAttribute(topk_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  launch_pdl(topk_kernel<T>, row_grid(rows), kTopkThreads, smem, stream, x, values, indices, rows,
             cols, int(k), cap);
  return check_launch("topk");
}

#define G3_INSTANTIATE(T)                                                        \
  template Status softmax<T>(const T*, T*, int64_t, int64_t, cudaStream_t);      \
  template Status argmax<T>(const T*, int32_t*, int64_t, int64_t, cudaStream_t); \
  template Status topk<T>(const T*, float*, int32_t*, int64_t, int64_t, int64_t, cudaStream_t);
G3_INSTANTIATE(float)
G3_INSTANTIATE(bf16)
#undef G3_INSTANTIATE

}  // namespace gemma3::cuda
