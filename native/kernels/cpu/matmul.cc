// matmul on CPU: y[M, N] = x[M, K] . W[N, K]^T with W in f32 / bf16 / q8_0 / q4_0 / fp8 /
// K-quant (q4_k / q5_k / q6_k) rows.
// Tiling: tasks are (64 rows of x) x (8 rows of W); a task walks K in 512-wide chunks, decodes the
// 8 x 512 W panel to float once (L1-resident) and reuses it for all its x rows, so W is decoded
// once per 64 rows of x and streamed from memory once per x block. Tasks run on parallel_for.
#include <algorithm>
#include <type_traits>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#endif

#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/qdot.h"
#include "runtime/threadpool.h"

namespace gemma3::cpu {
namespace detail {
// matmul_qdot.cc: q8_0 / q4_0 weights at 1 <= M <= qdot::kMaxM, the q8 activation contract.
template <typename TX, typename TW>
Status matmul_qdot(const TX* x, const TW* w, const float* w_scale, TX* y, int64_t M, int64_t N,
                   int64_t K);
}  // namespace detail

namespace {
using namespace detail;

constexpr int64_t kMB = 64;   // x rows per task
constexpr int64_t kNB = 8;    // W rows per task
constexpr int64_t kKC = 512;  // K per panel chunk (a multiple of 32 and 256 for the block formats)
constexpr int64_t kMS = 512;  // x rows converted to float at a time when TX is bf16

// out[r][c] += x_r . w_c for R (1 or 2) rows of x and 4 rows of W over n elements: 4R vector
// accumulators held in registers, each W load reused R times and each x load 4 times.
template <int R>
G3_ALWAYS_INLINE void micro_rx4(const float* x0, const float* x1, const float* w0, const float* w1,
                                const float* w2, const float* w3, int64_t n, float* out0,
                                float* out1) {
  f32x8 a00 = {}, a01 = {}, a02 = {}, a03 = {}, a10 = {}, a11 = {}, a12 = {}, a13 = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    f32x8 v0, v1, v2, v3, xv;
    load8(v0, w0 + i);
    load8(v1, w1 + i);
    load8(v2, w2 + i);
    load8(v3, w3 + i);
    load8(xv, x0 + i);
    a00 += xv * v0;
    a01 += xv * v1;
    a02 += xv * v2;
    a03 += xv * v3;
    if (R == 2) {
      load8(xv, x1 + i);
      a10 += xv * v0;
      a11 += xv * v1;
      a12 += xv * v2;
      a13 += xv * v3;
    }
  }
  float t00 = 0.f, t01 = 0.f, t02 = 0.f, t03 = 0.f, t10 = 0.f, t11 = 0.f, t12 = 0.f, t13 = 0.f;
  for (; i < n; ++i) {
    t00 += x0[i] * w0[i];
    t01 += x0[i] * w1[i];
    t02 += x0[i] * w2[i];
    t03 += x0[i] * w3[i];
    if (R == 2) {
      t10 += x1[i] * w0[i];
      t11 += x1[i] * w1[i];
      t12 += x1[i] * w2[i];
      t13 += x1[i] * w3[i];
    }
  }
  out0[0] += hsum8(a00) + t00;
  out0[1] += hsum8(a01) + t01;
  out0[2] += hsum8(a02) + t02;
  out0[3] += hsum8(a03) + t03;
  if (R == 2) {
    out1[0] += hsum8(a10) + t10;
    out1[1] += hsum8(a11) + t11;
    out1[2] += hsum8(a12) + t12;
    out1[3] += hsum8(a13) + t13;
  }
}

template <typename TX, typename TW>
struct Args {
  const float* xf;  // [rows, K] float rows of x (already offset to the current super-block)
  const TW* w;      // [N, K]
  const float* w_scale;
  TX* y;  // [rows, N] (offset like xf)
  int64_t rows, N, K, n_blocks;
};

// Tasks [t0, t1): task t covers x rows of block t / n_blocks and W rows of block t % n_blocks.
template <typename TX, typename TW>
G3_ALWAYS_INLINE void matmul_range(const Args<TX, TW>& a, int64_t t0, int64_t t1) {
  const int64_t K = a.K;
  float* panel = scratch(kScratchA, size_t(kNB * kKC));
  float acc[kMB][kNB];
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t m0 = (t / a.n_blocks) * kMB, n0 = (t % a.n_blocks) * kNB;
    const int64_t mr = std::min(kMB, a.rows - m0), nr = std::min(kNB, a.N - n0);
    for (int64_t m = 0; m < mr; ++m)
      for (int64_t c = 0; c < kNB; ++c) acc[m][c] = 0.f;
    for (int64_t k0 = 0; k0 < K; k0 += kKC) {
      const int64_t kc = std::min(kKC, K - k0);
      const float* wp[kNB];
      for (int64_t c = 0; c < nr; ++c) {
        const TW* row = a.w + (n0 + c) * row_units<TW>(K);
        if constexpr (std::is_same_v<TW, float>) {
          wp[c] = row + k0;
        } else {
          decode(row, k0, kc, panel + c * kKC);
          wp[c] = panel + c * kKC;
        }
      }
      int64_t m = 0;
      for (; m < mr; m += 2) {
        const bool two = m + 1 < mr;
        const float* x0 = a.xf + (m0 + m) * K + k0;
        const float* x1 = two ? x0 + K : x0;
        int64_t c = 0;
        for (; c + 4 <= nr; c += 4) {
          if (two)
            micro_rx4<2>(x0, x1, wp[c], wp[c + 1], wp[c + 2], wp[c + 3], kc, &acc[m][c],
                         &acc[m + 1][c]);
          else
            micro_rx4<1>(x0, x0, wp[c], wp[c + 1], wp[c + 2], wp[c + 3], kc, &acc[m][c], nullptr);
        }
        for (; c < nr; ++c) {
          acc[m][c] += dot(x0, wp[c], kc);
          if (two) acc[m + 1][c] += dot(x1, wp[c], kc);
        }
      }
    }
    for (int64_t m = 0; m < mr; ++m)
      for (int64_t c = 0; c < nr; ++c) {
        float v = acc[m][c];
        if (a.w_scale != nullptr) v *= a.w_scale[n0 + c];
        a.y[(m0 + m) * a.N + n0 + c] = from_f32<TX>(v);
      }
  }
}

template <typename TX, typename TW>
void matmul_range_portable(const Args<TX, TW>& a, int64_t t0, int64_t t1) {
  matmul_range(a, t0, t1);
}
#if G3_CPU_X86_DISPATCH
template <typename TX, typename TW>
G3_TARGET_AVX2 void matmul_range_avx2(const Args<TX, TW>& a, int64_t t0, int64_t t1) {
  matmul_range(a, t0, t1);
}
#endif

#if G3_CPU_X86_DISPATCH
// Decode-sized GEMV (1 or 2 rows of x) for bf16 / q4_0 / q8_0 weights, fused: each weight block is
// widened straight into registers and multiplied with x, instead of decoding a float panel first
// (at M <= 2 the panel pass cost as much as the dot product: docs/benchmarks.md, CPU decode).
// Intrinsics here because GCC's vector-extension int8 -> float conversions do not vectorize well.
// Same math as decode() + dot(): float((q - 8) or q) * x summed in float32, times d per block.

G3_TARGET_AVX2 inline float hsum_avx2(__m256 v) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

// 8 bf16 weights as floats: each 16-bit pattern shifted into a float's high half (exact).
G3_TARGET_AVX2 inline __m256 bf16x8_avx2(const uint16_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(
      _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}

// acc[r] = x_r . row over K (K % 8 == 0). Two accumulator sets: one FMA chain per 8 weights would
// cap a core at ~6 G weights/s.
template <int R>
G3_TARGET_AVX2 void row_bf16_avx2(const float* xf, const bf16* w, int64_t K, __m256* acc) {
  const uint16_t* row = reinterpret_cast<const uint16_t*>(w);
  __m256 acc2[R];
  for (int r = 0; r < R; ++r) acc[r] = acc2[r] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m256 w0 = bf16x8_avx2(row + k), w1 = bf16x8_avx2(row + k + 8);
    for (int r = 0; r < R; ++r) {
      acc[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xf + r * K + k), acc[r]);
      acc2[r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xf + r * K + k + 8), acc2[r]);
    }
  }
  for (; k < K; k += 8) {
    const __m256 w0 = bf16x8_avx2(row + k);
    for (int r = 0; r < R; ++r)
      acc[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xf + r * K + k), acc[r]);
  }
  for (int r = 0; r < R; ++r) acc[r] = _mm256_add_ps(acc[r], acc2[r]);
}

// acc[r] = x_r . row over K blocks of 32 (q4_0: (q - 8) * d; q8_0: q * d).
template <typename TW, int R>
G3_TARGET_AVX2 void row_q_avx2(const float* xf, const TW* row, int64_t K, __m256* acc) {
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t b = 0; b < K / kQK; ++b) {
    __m256 q[4];
    if constexpr (std::is_same_v<TW, block_q4_0>) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row[b].qs));
      const __m128i m = _mm_set1_epi8(0x0f);
      const __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
      const __m256 eight = _mm256_set1_ps(8.f);
      q[0] = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), eight);
      q[1] = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), eight);
      q[2] = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), eight);
      q[3] = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), eight);
    } else {
      for (int g = 0; g < 4; ++g)
        q[g] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
            _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row[b].qs + 8 * g))));
    }
    const __m256 d = _mm256_set1_ps(f16_to_f32(row[b].d));
    for (int r = 0; r < R; ++r) {
      const float* xb = xf + r * K + b * kQK;
      __m256 s = _mm256_mul_ps(q[0], _mm256_loadu_ps(xb));
      s = _mm256_fmadd_ps(q[1], _mm256_loadu_ps(xb + 8), s);
      s = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(xb + 16), s);
      s = _mm256_fmadd_ps(q[3], _mm256_loadu_ps(xb + 24), s);
      acc[r] = _mm256_fmadd_ps(d, s, acc[r]);
    }
  }
}

// out[r * (n1 - n0) + n - n0] = x_r . W[n] for rows n of [n0, n1).
template <typename TW, int R>
G3_TARGET_AVX2 void gemv_avx2(const float* xf, const TW* w, float* out, int64_t K, int64_t n0,
                              int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    __m256 acc[R];
    if constexpr (std::is_same_v<TW, bf16>)
      row_bf16_avx2<R>(xf, w + n * K, K, acc);
    else
      row_q_avx2<TW, R>(xf, w + n * (K / kQK), K, acc);
    for (int r = 0; r < R; ++r) out[r * (n1 - n0) + (n - n0)] = hsum_avx2(acc[r]);
  }
}
#endif

}  // namespace

template <typename TX, typename TW>
Status matmul(const TX* x, const TW* w, const float* w_scale, TX* y, int64_t M, int64_t N,
              int64_t K) {
  if (M < 0 || N < 0 || K <= 0)
    return invalid("matmul",
                   kv("M", M) + ", " + kv("N", N) + ", " + kv("K", K) + " (need M, N >= 0, K > 0)");
  if (!whole_blocks<TW>(K)) return invalid("matmul", whole_blocks_msg<TW>("K", K));
  if (M == 0 || N == 0) return Status::Ok();
  if (x == nullptr || w == nullptr || y == nullptr) return invalid("matmul", "null pointer");
  if constexpr (std::is_same_v<TW, block_q4_0> || std::is_same_v<TW, block_q8_0>) {
    if (M <= qdot::kMaxM && qdot::enabled()) return matmul_qdot(x, w, w_scale, y, M, N, K);
  }

  void (*range)(const Args<TX, TW>&, int64_t, int64_t) = matmul_range_portable<TX, TW>;
#if G3_CPU_X86_DISPATCH
  if (cpu_has_avx2()) range = matmul_range_avx2<TX, TW>;
#endif
  const int64_t n_blocks = (N + kNB - 1) / kNB;
  for (int64_t ms = 0; ms < M; ms += kMS) {
    const int64_t rows = std::min(kMS, M - ms);
    const float* xf;
    if constexpr (std::is_same_v<TX, float>) {
      xf = x + ms * K;
    } else {
      float* buf = scratch(kScratchCaller, size_t(rows * K));
      const TX* xs = x + ms * K;
      parallel_for(rows, grain_for(K), [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) decode(xs + r * K, 0, K, buf + r * K);
      });
      xf = buf;
    }
#if G3_CPU_X86_DISPATCH
    if constexpr (std::is_same_v<TW, block_q4_0> || std::is_same_v<TW, block_q8_0> ||
                  std::is_same_v<TW, bf16>) {
      if (rows <= 2 && K % 8 == 0 && cpu_has_avx2()) {
        TX* ys = y + ms * N;
        parallel_for(N, grain_for(K, 1 << 16), [&](int64_t b, int64_t e) {
          float tmp[2 * 64];
          for (int64_t n = b; n < e; n += 64) {
            const int64_t n1 = std::min(e, n + 64);
            if (rows == 1)
              gemv_avx2<TW, 1>(xf, w, tmp, K, n, n1);
            else
              gemv_avx2<TW, 2>(xf, w, tmp, K, n, n1);
            for (int64_t r = 0; r < rows; ++r)
              for (int64_t c = n; c < n1; ++c) {
                float v = tmp[r * (n1 - n) + c - n];
                if (w_scale != nullptr) v *= w_scale[c];
                ys[r * N + c] = from_f32<TX>(v);
              }
          }
        });
        continue;
      }
    }
#endif
    Args<TX, TW> args{xf, w, w_scale, y + ms * N, rows, N, K, n_blocks};
    const int64_t tasks = ((rows + kMB - 1) / kMB) * n_blocks;
    const int64_t per_task = std::min(rows, kMB) * kNB * K;
    parallel_for(tasks, grain_for(per_task, 1 << 17),
                 [&](int64_t b, int64_t e) { range(args, b, e); });
  }
  return Status::Ok();
}

template <typename TX, typename TW>
Status matmul_gelu_mul(const TX* x, const TW* w, const float* w_scale, TX* gate_up, TX* out,
                       int64_t M, int64_t F, int64_t K) {
  if (M < 0 || F < 0 || K <= 0 || F > (int64_t(1) << 61))
    return invalid("matmul_gelu_mul",
                   kv("M", M) + ", " + kv("F", F) + ", " + kv("K", K) + " (need M, F >= 0, K > 0)");
  if (M == 0 || F == 0) return Status::Ok();
  G3_RETURN_IF_ERROR((matmul<TX, TW>(x, w, w_scale, gate_up, M, 2 * F, K)));
  return gelu_mul<TX>(gate_up, gate_up + F, out, M, F, 2 * F, 2 * F);
}

#define G3_MATMUL(TX, TW)                                                                        \
  template Status matmul<TX, TW>(const TX*, const TW*, const float*, TX*, int64_t, int64_t,      \
                                 int64_t);                                                       \
  template Status matmul_gelu_mul<TX, TW>(const TX*, const TW*, const float*, TX*, TX*, int64_t, \
                                          int64_t, int64_t);
#define G3_MATMUL_TW(TX)    \
  G3_MATMUL(TX, float)      \
  G3_MATMUL(TX, bf16)       \
  G3_MATMUL(TX, block_q8_0) \
  G3_MATMUL(TX, block_q4_0) \
  G3_MATMUL(TX, fp8e4m3)    \
  G3_MATMUL(TX, block_q4_K) \
  G3_MATMUL(TX, block_q5_K) \
  G3_MATMUL(TX, block_q6_K)
G3_MATMUL_TW(float)
G3_MATMUL_TW(bf16)
#undef G3_MATMUL_TW
#undef G3_MATMUL

}  // namespace gemma3::cpu
