// matmul on CPU with q8_0 / q4_0 weights at 1 <= M <= 8: the q-dot contract (kernels.inc, matmul;
// kernels/qdot.h). x is rounded once per call to int8 blocks of 32 with an f32 scale each, then
// every (x block, weight block) pair is an exact integer dot product scaled by d_w * d_x, as
// llama.cpp's ggml_vec_dot_q4_0_q8_0 / ggml_vec_dot_q8_0_q8_0 compute it. The AVX2 path uses
// llama.cpp's mul_sum_i8_pairs for q8_0: maddubs(|w|, sign(x, w)) then madd with ones, exact in
// int32 (|w| <= 128, |q_x| <= 127: a pair sums to at most 32512 < 2^15); for q4_0 the nibbles n
// go in unsigned, maddubs(n, q_x) then madd, minus 8 x each lane's sum of q_x (QX::s8): the same
// exact lane sums with two fewer instructions per weight block.
#include <algorithm>
#include <type_traits>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#endif

#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/qdot.h"
#include "runtime/threadpool.h"

namespace gemma3::cpu::detail {
namespace {

// x rows rounded to the contract: q [M, K] int8, d [M, K/32] f32. s8 (q4_0 on AVX2, else null):
// [M, K/32, 8] int32, 8 x the sum of each 4 consecutive q values (an AVX2 lane's share of a block).
struct QX {
  const int8_t* q;
  const float* d;
  const int32_t* s8;
};

// s8 of QX: for block b of row m, lane l holds 8 * (q[4l] + q[4l+1] + q[4l+2] + q[4l+3]).
void lane_sums8(const int8_t* q, int64_t blocks, int32_t* s8) {
  for (int64_t b = 0; b < blocks; ++b)
    for (int l = 0; l < 8; ++l) {
      const int8_t* v = q + b * kQK + 4 * l;
      s8[b * 8 + l] = 8 * (int32_t(v[0]) + v[1] + v[2] + v[3]);
    }
}

template <typename TX>
void quantize_rows(const TX* x, int64_t M, int64_t K, int8_t* q, float* d) {
  const int64_t nb = K / kQK;
  for (int64_t b = 0; b < M * nb; ++b) {
    const TX* xb = x + b * kQK;
    float v[kQK];
    uint32_t amax = 0;
    for (int i = 0; i < kQK; ++i) {
      v[i] = to_f32(xb[i]);
      amax = std::max(amax, qdot::abs_bits(v[i]));
    }
    const float db = qdot::block_scale(amax), id = qdot::block_inv_scale(db);
    for (int i = 0; i < kQK; ++i) q[b * kQK + i] = qdot::quantize_one(v[i], id);
    d[b] = db;
  }
}

// The 32 integer weights of block b: q (q8_0) or nibble - 8 (q4_0), in element order.
G3_ALWAYS_INLINE void weight_ints(const block_q8_0& b, int8_t* out) {
  for (int i = 0; i < kQK; ++i) out[i] = b.qs[i];
}
G3_ALWAYS_INLINE void weight_ints(const block_q4_0& b, int8_t* out) {
  for (int i = 0; i < kQK / 2; ++i) {
    out[i] = int8_t((b.qs[i] & 0xf) - 8);
    out[i + kQK / 2] = int8_t((b.qs[i] >> 4) - 8);
  }
}

// out[m * ldo + n - n0] = sum_b (d_w * d_x[m, b]) * sum_i w_i q_x[m, b, i] for rows n of [n0, n1).
template <typename TW>
void rows_portable(const QX& x, const TW* w, int64_t M, int64_t K, int64_t n0, int64_t n1,
                   float* out, int64_t ldo) {
  const int64_t nb = K / kQK;
  for (int64_t n = n0; n < n1; ++n) {
    float acc[qdot::kMaxM] = {};
    for (int64_t b = 0; b < nb; ++b) {
      const TW& blk = w[n * nb + b];
      int8_t wi[kQK];
      weight_ints(blk, wi);
      const float dw = f16_to_f32(blk.d);
      for (int64_t m = 0; m < M; ++m) {
        const int8_t* xq = x.q + m * K + b * kQK;
        int32_t s = 0;
        for (int i = 0; i < kQK; ++i) s += int32_t(wi[i]) * int32_t(xq[i]);
        acc[m] += dw * x.d[m * nb + b] * float(s);
      }
    }
    for (int64_t m = 0; m < M; ++m) out[m * ldo + n - n0] = acc[m];
  }
}

#if G3_CPU_X86_DISPATCH
G3_TARGET_AVX2 inline float hsum_ps_avx2(__m256 v) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

G3_TARGET_AVX2 inline __m256i weight_ints_avx2(const block_q8_0& b) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
}
// q4_0's nibbles in element order (0..15, not yet minus 8).
G3_TARGET_AVX2 inline __m256i nibbles_avx2(const block_q4_0& b) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m128i m = _mm_set1_epi8(0x0f);
  const __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
  return _mm256_set_m128i(hi, lo);
}

// MM x rows (compile time, so the accumulators stay in registers) against RR weight rows at a time
// (two at M <= 2: each x block load is shared, and two independent FMA chains hide the latency).
// Per block the arithmetic is the portable path's: an exact int32 dot per lane, then
// fma(f32(d_w * d_x), lane sum, acc) — so the result does not depend on RR.
template <int MM, int RR, typename TW>
G3_TARGET_AVX2 void rows_avx2_t(const QX& x, const TW* w, int64_t K, int64_t n0, int64_t n1,
                                float* out, int64_t ldo) {
  const int64_t nb = K / kQK;
  const __m256i ones = _mm256_set1_epi16(1);
  // q4_0: nibbles n (0..15) against q (|q| <= 127): a maddubs pair is at most 2 * 15 * 127 < 2^15.
  constexpr bool kQ4 = std::is_same_v<TW, block_q4_0>;
  int64_t n = n0;
  for (; n + RR <= n1; n += RR) {
    __m256 acc[RR][MM];
    for (int r = 0; r < RR; ++r)
      for (int m = 0; m < MM; ++m) acc[r][m] = _mm256_setzero_ps();
    const TW* wr = w + n * nb;
    for (int64_t b = 0; b < nb; ++b) {
      __m256i wv[RR], aw[RR];
      __m256 dw[RR];
      for (int r = 0; r < RR; ++r) {
        const TW& blk = wr[r * nb + b];
        if constexpr (kQ4) {
          aw[r] = nibbles_avx2(blk);  // unsigned 0..15: maddubs takes them as they are
        } else {
          wv[r] = weight_ints_avx2(blk);
          aw[r] = _mm256_sign_epi8(wv[r], wv[r]);  // |w| as unsigned bytes (-128 -> 128)
        }
        dw[r] = _mm256_set1_ps(_cvtsh_ss(blk.d.bits));
      }
      for (int m = 0; m < MM; ++m) {
        const __m256i xv =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + m * K + b * kQK));
        const __m256 dx = _mm256_set1_ps(x.d[m * nb + b]);
        // q4_0: sum (n - 8) q per lane = sum n q - 8 sum q, the second term from x.s8 (exact
        // either way, so the lane sums and everything after them are the q8_0 form's bits).
        __m256i xs8;
        if constexpr (kQ4)
          xs8 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.s8 + (m * nb + b) * 8));
        for (int r = 0; r < RR; ++r) {
          __m256i p32;
          if constexpr (kQ4) {
            p32 = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(aw[r], xv), ones), xs8);
          } else {
            const __m256i p16 = _mm256_maddubs_epi16(aw[r], _mm256_sign_epi8(xv, wv[r]));
            p32 = _mm256_madd_epi16(p16, ones);
          }
          acc[r][m] = _mm256_fmadd_ps(_mm256_mul_ps(dw[r], dx), _mm256_cvtepi32_ps(p32), acc[r][m]);
        }
      }
    }
    for (int r = 0; r < RR; ++r)
      for (int m = 0; m < MM; ++m) out[m * ldo + n + r - n0] = hsum_ps_avx2(acc[r][m]);
  }
  if constexpr (RR > 1) {
    if (n < n1) rows_avx2_t<MM, 1, TW>(x, w, K, n, n1, out + (n - n0), ldo);
  }
}

template <typename TW>
G3_TARGET_AVX2 void rows_avx2(const QX& x, const TW* w, int64_t M, int64_t K, int64_t n0,
                              int64_t n1, float* out, int64_t ldo) {
  switch (M) {
    case 1:
      return rows_avx2_t<1, 2, TW>(x, w, K, n0, n1, out, ldo);
    case 2:
      return rows_avx2_t<2, 2, TW>(x, w, K, n0, n1, out, ldo);
    case 3:
      return rows_avx2_t<3, 1, TW>(x, w, K, n0, n1, out, ldo);
    case 4:
      return rows_avx2_t<4, 1, TW>(x, w, K, n0, n1, out, ldo);
    case 5:
      return rows_avx2_t<5, 1, TW>(x, w, K, n0, n1, out, ldo);
    case 6:
      return rows_avx2_t<6, 1, TW>(x, w, K, n0, n1, out, ldo);
    case 7:
      return rows_avx2_t<7, 1, TW>(x, w, K, n0, n1, out, ldo);
    default:
      return rows_avx2_t<8, 1, TW>(x, w, K, n0, n1, out, ldo);
  }
}
#endif

}  // namespace

// Called by matmul<TX, TW> (matmul.cc) for TW in {block_q8_0, block_q4_0}, 1 <= M <= 8, arguments
// already checked.
template <typename TX, typename TW>
Status matmul_qdot(const TX* x, const TW* w, const float* w_scale, TX* y, int64_t M, int64_t N,
                   int64_t K) {
  const int64_t nb = K / kQK;
  // One f32 scratch holds d [M, nb], then s8 [M, nb, 8] int32 (q4_0 on AVX2), then q [M, K] bytes
  // (read-only for the workers).
  const int64_t s8n = std::is_same_v<TW, block_q4_0> ? M * nb * 8 : 0;
  float* buf = scratch(kScratchCaller, size_t(M * nb + s8n + (M * K + 3) / 4));
  float* xd = buf;
  int32_t* s8 = reinterpret_cast<int32_t*>(buf + M * nb);
  int8_t* xq = reinterpret_cast<int8_t*>(buf + M * nb + s8n);
  quantize_rows(x, M, K, xq, xd);
  QX qx{xq, xd, nullptr};

  void (*rows)(const QX&, const TW*, int64_t, int64_t, int64_t, int64_t, float*, int64_t) =
      rows_portable<TW>;
#if G3_CPU_X86_DISPATCH
  if (cpu_has_avx2()) {
    rows = rows_avx2<TW>;
    if constexpr (std::is_same_v<TW, block_q4_0>) {
      lane_sums8(xq, M * nb, s8);
      qx.s8 = s8;
    }
  }
#endif
  constexpr int64_t kRows = 64;  // W rows per inner call (out tile: kMaxM x kRows floats)
  parallel_for(N, grain_for(K * M, 1 << 16), [&](int64_t b, int64_t e) {
    float tmp[qdot::kMaxM * kRows];
    for (int64_t n = b; n < e; n += kRows) {
      const int64_t n1 = std::min(e, n + kRows), cnt = n1 - n;
      rows(qx, w, M, K, n, n1, tmp, cnt);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t c = 0; c < cnt; ++c) {
          float v = tmp[m * cnt + c];
          if (w_scale != nullptr) v *= w_scale[n + c];
          y[m * N + n + c] = from_f32<TX>(v);
        }
    }
  });
  return Status::Ok();
}

#define G3_MATMUL_QDOT(TX, TW)                                                                   \
  template Status matmul_qdot<TX, TW>(const TX*, const TW*, const float*, TX*, int64_t, int64_t, \
                                      int64_t);
G3_MATMUL_QDOT(float, block_q8_0)
G3_MATMUL_QDOT(float, block_q4_0)
G3_MATMUL_QDOT(bf16, block_q8_0)
G3_MATMUL_QDOT(bf16, block_q4_0)
#undef G3_MATMUL_QDOT

}  // namespace gemma3::cpu::detail
