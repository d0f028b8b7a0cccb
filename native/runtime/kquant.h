// GGUF K-quant codecs (q4_K, q5_K, q6_K), shared by the CPU and CUDA backends (host and device
// code). Decoding follows llama.cpp's dequantize_row_q4_K / q5_K / q6_K (ggml-quants.c) operation
// for operation; encoding ports quantize_row_q4_K_ref / q5_K_ref / q6_K_ref with make_qkx2_quants
// and make_qx_quants, so the bytes equal what llama-quantize writes without an importance matrix.
// Encoding must not be FMA-contracted to stay bit-exact: CUDA builds its user with --fmad=false
// (CMakeLists.txt), and the portable x86-64 CPU build has no FMA instructions to contract into.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "runtime/dtype.h"

namespace gemma3 {

template <typename T>
struct is_kquant : std::false_type {};
template <>
struct is_kquant<block_q4_K> : std::true_type {};
template <>
struct is_kquant<block_q5_K> : std::true_type {};
template <>
struct is_kquant<block_q6_K> : std::true_type {};
template <typename T>
inline constexpr bool is_kquant_v = is_kquant<T>::value;

// ---- decoding ----

// Scale and min (6 bits each) of sub-block j in 0..7 of a q4_K / q5_K block (get_scale_min_k4):
// bytes 0..3 hold scales 0..3 (low 6 bits), 4..7 mins 0..3, 8..11 the low nibbles of scale / min
// 4..7, whose top two bits ride in the top bits of bytes 0..7.
G3_HD void kq_scale_min(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Every decoder below gives x = a * q - b for an exact small integer q (q4_K: 0..15, q5_K: 0..31,
// q6_K: 0..63) and per-sub-block floats a, b: q4_K / q5_K a = d * sc, b = dmin * m (both exact:
// 11 x 6 bits); q6_K a = d * sc (exact, 11 x 8 bits), b = 32 a. Kernels that factor the sums
// (sum x w = a sum x q - b sum x) use kq_sub; kq_dequant8 gives the values themselves.

// a, b of the sub-block holding element e, and q of elements e0 .. e0 + 7 (e0 % 8 == 0).
G3_HD void kq_sub(const block_q4_K& b, int e0, float* a, float* bm, int* q) {
  const int s = e0 >> 5, j = s >> 1, h = s & 1, l0 = e0 & 31;
  int sc, m;
  kq_scale_min(s, b.scales, &sc, &m);
  *a = f16_to_f32(b.d) * float(sc);
  *bm = f16_to_f32(b.dmin) * float(m);
  for (int i = 0; i < 8; ++i) q[i] = (b.qs[32 * j + l0 + i] >> (4 * h)) & 0xF;
}
G3_HD void kq_sub(const block_q5_K& b, int e0, float* a, float* bm, int* q) {
  const int s = e0 >> 5, j = s >> 1, h = s & 1, l0 = e0 & 31;
  int sc, m;
  kq_scale_min(s, b.scales, &sc, &m);
  *a = f16_to_f32(b.d) * float(sc);
  *bm = f16_to_f32(b.dmin) * float(m);
  for (int i = 0; i < 8; ++i)
    q[i] = ((b.qs[32 * j + l0 + i] >> (4 * h)) & 0xF) | (((b.qh[l0 + i] >> s) & 1) << 4);
}
// q6_K element e = 128 n + 32 g + l: low 4 bits in nibble g / 2 of ql[64 n + 32 (g % 2) + l], high
// 2 bits at bit 2 g of qh[32 n + l], scale scales[8 n + 2 g + l / 16]; q here is the stored 0..63.
G3_HD void kq_sub(const block_q6_K& b, int e0, float* a, float* bm, int* q) {
  const int n = e0 >> 7, g = (e0 >> 5) & 3, l0 = e0 & 31;
  *a = f16_to_f32(b.d) * float(b.scales[8 * n + 2 * g + (l0 >> 4)]);
  *bm = 32.f * *a;
  for (int i = 0; i < 8; ++i) {
    const int lo = (b.ql[64 * n + 32 * (g & 1) + l0 + i] >> (4 * (g >> 1))) & 0xF;
    const int hi = (b.qh[32 * n + l0 + i] >> (2 * g)) & 3;
    q[i] = lo | (hi << 4);
  }
}

// Elements e0 .. e0 + 7 (e0 % 8 == 0) of a super-block, as llama.cpp computes them:
// q4_K / q5_K (d * sc) * q - dmin * m; q6_K (d * sc) * (q - 32). Products of the first kind are
// exact, so an FMA-contracted evaluation rounds the same.
template <typename TB>
G3_HD void kq_dequant8(const TB& b, int e0, float* y) {
  float a, bm;
  int q[8];
  kq_sub(b, e0, &a, &bm, q);
  for (int i = 0; i < 8; ++i) {
    if constexpr (std::is_same_v<TB, block_q6_K>) {
      y[i] = a * float(q[i] - 32);
    } else {
      y[i] = a * float(q[i]) - bm;
    }
  }
}

// Element e (0..255) of a super-block.
template <typename TB>
G3_HD float kq_dequant1(const TB& b, int e) {
  float y[8];
  kq_dequant8(b, e & ~7, y);
  return y[e & 7];
}

// ---- encoding (llama.cpp reference quantizers, float32 operation for operation) ----

// Round to nearest, ties to even, for |f| <= 2^22 (llama.cpp nearest_int: the bits of f + 1.5 *
// 2^23).
G3_HD int kq_nearest_int(float f) {
  const float v = f + 12582912.f;
  int i;
  memcpy(&i, &v, sizeof i);
  return (i & 0x007fffff) - 0x00400000;
}
G3_HD int kq_min(int a, int b) { return a < b ? a : b; }
G3_HD int kq_max(int a, int b) { return a > b ? a : b; }

// make_qkx2_quants: levels L in 0..nmax and (scale, min) minimizing the weighted error of
// x ~ scale * L - the_min, searching nstep + 1 scales around nmax / (max - min).
G3_HD float kq_make_qkx2(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                         float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep,
                         bool use_mad) {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = float(nmax) / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = kq_nearest_int(iscale * (x[i] - min));
    L[i] = uint8_t(kq_max(0, kq_min(nmax, l)));
    float diff = scale * float(L[i]) + min - x[i];
    diff = use_mad ? fabsf(diff) : diff * diff;
    best_error += weights[i] * diff;
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * float(is) + float(nmax)) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = kq_nearest_int(iscale * (x[i] - min));
      l = kq_max(0, kq_min(nmax, l));
      Laux[i] = uint8_t(l);
      const float w = weights[i];
      sum_l += w * float(l);
      sum_l2 += w * float(l) * float(l);
      sum_xl += w * float(l) * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * float(Laux[i]) + this_min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        cur_error += weights[i] * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// make_qx_quants with rmse_type 1 and no importance weights (w = x^2): levels L in 0..2 nmax - 1
// (stored with the + nmax offset) and the scale, trying 19 scales around -nmax / max.
G3_HD float kq_make_qx(int n, int nmax, const float* x, int8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = fabsf(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < 1e-15f) {  // GROUP_MAX_EPS: all zero
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = float(-nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = kq_nearest_int(iscale * x[i]);
    l = kq_max(-nmax, kq_min(nmax - 1, l));
    L[i] = int8_t(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * float(l);
    suml2 += w * float(l) * float(l);
  }
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(float(nmax) + 0.1f * float(is)) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = kq_nearest_int(iscale * x[i]);
      l = kq_max(-nmax, kq_min(nmax - 1, l));
      const float w = x[i] * x[i];
      sumlx += w * x[i] * float(l);
      suml2 += w * float(l) * float(l);
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = kq_nearest_int(iscale * x[i]);
        L[i] = int8_t(nmax + kq_max(-nmax, kq_min(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// q4_K / q5_K share everything but the level count (nmax 15 / 31), the search (rmin, nstep) and
// the packing of the levels.
template <typename TB>
G3_HD void kq_quantize_qkx(const float* x, TB* y) {
  constexpr bool kQ5 = std::is_same_v<TB, block_q5_K>;
  constexpr int nmax = kQ5 ? 31 : 15;
  uint8_t L[kQK_K];
  uint8_t Laux[32];
  float weights[32];
  float mins[kQK_K / 32];
  float scales[kQK_K / 32];
  float max_scale = 0, max_min = 0;  // as the min is subtracted, scales are always positive
  for (int j = 0; j < kQK_K / 32; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = sqrtf(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32 * j + l]);
    scales[j] = kq_make_qkx2(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux,
                             kQ5 ? -0.5f : -1.f, 0.1f, kQ5 ? 15 : 20, false);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  for (int j = 0; j < kQK_K / 32; ++j) {
    uint8_t ls = uint8_t(kq_nearest_int(inv_scale * scales[j]));  // truncated as in llama.cpp
    uint8_t lm = uint8_t(kq_nearest_int(inv_min * mins[j]));
    ls = ls < 63 ? ls : 63;
    lm = lm < 63 ? lm : 63;
    if (j < 4) {
      y->scales[j] = ls;
      y->scales[j + 4] = lm;
    } else {
      y->scales[j + 4] = uint8_t((ls & 0xF) | ((lm & 0xF) << 4));
      y->scales[j - 4] |= uint8_t((ls >> 4) << 6);
      y->scales[j] |= uint8_t((lm >> 4) << 6);
    }
  }
  y->d = f32_to_f16(max_scale / 63.f);
  y->dmin = f32_to_f16(max_min / 63.f);
  // Requantize each sub-block against its rounded scale and min (a zero scale keeps the levels).
  for (int j = 0; j < kQK_K / 32; ++j) {
    int sc, m;
    kq_scale_min(j, y->scales, &sc, &m);
    const float d = f16_to_f32(y->d) * float(sc);
    if (d == 0) continue;
    const float dm = f16_to_f32(y->dmin) * float(m);
    for (int ii = 0; ii < 32; ++ii) {
      const int l = kq_nearest_int((x[32 * j + ii] + dm) / d);
      L[32 * j + ii] = uint8_t(kq_max(0, kq_min(nmax, l)));
    }
  }
  if constexpr (kQ5) {
    for (int i = 0; i < kQK_K / 8; ++i) y->qh[i] = 0;
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < kQK_K; n += 64) {
      for (int j = 0; j < 32; ++j) {
        int l1 = L[n + j], l2 = L[n + j + 32];
        if (l1 > 15) {
          l1 -= 16;
          y->qh[j] |= m1;
        }
        if (l2 > 15) {
          l2 -= 16;
          y->qh[j] |= m2;
        }
        y->qs[n / 2 + j] = uint8_t(l1 | (l2 << 4));
      }
      m1 = uint8_t(m1 << 2);
      m2 = uint8_t(m2 << 2);
    }
  } else {
    for (int n = 0; n < kQK_K; n += 64)
      for (int l = 0; l < 32; ++l) y->qs[n / 2 + l] = uint8_t(L[n + l] | (L[n + l + 32] << 4));
  }
}

// quantize_row_q4_K_ref / q5_K_ref / q6_K_ref for one super-block: x [256] float.
G3_HD void kq_quantize(const float* x, block_q4_K* y) { kq_quantize_qkx(x, y); }
G3_HD void kq_quantize(const float* x, block_q5_K* y) { kq_quantize_qkx(x, y); }
G3_HD void kq_quantize(const float* x, block_q6_K* y) {
  int8_t L[kQK_K];
  float scales[kQK_K / 16];
  float max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < kQK_K / 16; ++ib) {
    const float scale = kq_make_qx(16, 32, x + 16 * ib, L + 16 * ib);
    scales[ib] = scale;
    const float abs_scale = fabsf(scale);
    if (abs_scale > max_abs_scale) {
      max_abs_scale = abs_scale;
      max_scale = scale;
    }
  }
  if (max_abs_scale < 1e-15f) {  // GROUP_MAX_EPS: an all-zero block
    memset(y, 0, sizeof *y);
    return;
  }
  const float iscale = -128.f / max_scale;
  y->d = f32_to_f16(1 / iscale);
  for (int ib = 0; ib < kQK_K / 16; ++ib)
    y->scales[ib] = int8_t(kq_min(127, kq_nearest_int(iscale * scales[ib])));
  for (int j = 0; j < kQK_K / 16; ++j) {
    const float d = f16_to_f32(y->d) * float(y->scales[j]);
    if (d == 0) continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = kq_nearest_int(x[16 * j + ii] / d);
      L[16 * j + ii] = int8_t(kq_max(-32, kq_min(31, l)) + 32);
    }
  }
  for (int j = 0; j < kQK_K; j += 128) {
    uint8_t* ql = y->ql + j / 2;
    uint8_t* qh = y->qh + j / 4;
    for (int l = 0; l < 32; ++l) {
      const int q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF;
      const int q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
      ql[l] = uint8_t(q1 | (q3 << 4));
      ql[l + 32] = uint8_t(q2 | (q4 << 4));
      qh[l] = uint8_t((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                      ((L[j + l + 96] >> 4) << 6));
    }
  }
}

}  // namespace gemma3
