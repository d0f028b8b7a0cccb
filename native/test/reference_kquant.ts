// GGUF K-quant blocks (q4_K, q5_K, q6_K) in plain TypeScript, written from the format's definition
// (llama.cpp ggml-common.h layouts, ggml-quants.c dequantize_row_* and quantize_row_*_ref),
// independently of native/runtime/kquant.h:
//   - pack/unpack between a block's bytes and the numbers it stores (scales, mins, levels),
//   - dequantizers in the loop structure of llama.cpp's dequantize_row_q4_K / q5_K / q6_K,
//   - llama.cpp's reference quantizers (make_qkx2_quants, make_qx_quants), float32 operation for
//     operation (every intermediate through Math.fround), so the bytes must equal the native ones.

import { f16BitsToF32, f32ToF16Bits } from "./reference.js";

export const QK_K = 256;
export type KQuant = "q4_k" | "q5_k" | "q6_k";
export const KQ_BLOCK_BYTES: Record<KQuant, number> = { q4_k: 144, q5_k: 176, q6_k: 210 };

const f = Math.fround;

// ---------------------------------------------------------------------------------------------
// The numbers a block stores
// ---------------------------------------------------------------------------------------------

/**
 * q4_K / q5_K: d, dmin (f16 bits), per 32-element sub-block a 6-bit scale and a 6-bit min, and a
 * level per element (0..15 for q4_K, 0..31 for q5_K): x = (d·sc)·q − dmin·m.
 * q6_K: d (f16 bits), per 16-element sub-block an int8 scale, a level per element (0..63):
 * x = (d·sc)·(q − 32).
 */
export interface KParts {
  dBits: number;
  dminBits: number; // q4_K / q5_K only (0 for q6_K)
  sc: number[]; // 8 (q4_K/q5_K, 0..63) or 16 (q6_K, −128..127)
  m: number[]; // 8 mins (q4_K/q5_K, 0..63); empty for q6_K
  q: number[]; // 256 levels in element order
}

function le16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}
function or(b: Uint8Array, i: number, v: number): void {
  b[i] = b[i]! | v;
}
function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >> 8) & 0xff;
}

// ggml-common.h: "scales and mins, quantized with 6 bits" in 12 bytes. Sub-blocks 0..3: scale in
// the low 6 bits of byte j, min in the low 6 bits of byte j + 4. Sub-blocks 4..7: low 4 bits of
// scale / min in the low / high nibble of byte j + 4, their top 2 bits in the top 2 bits of byte
// j − 4 (scale) and byte j (min).
function packScales12(sc: number[], m: number[], out: Uint8Array, o: number): void {
  for (let j = 0; j < 4; j++) {
    out[o + j] = (sc[j]! & 63) | ((sc[j + 4]! >> 4) << 6);
    out[o + j + 4] = (m[j]! & 63) | ((m[j + 4]! >> 4) << 6);
    out[o + j + 8] = (sc[j + 4]! & 0xf) | ((m[j + 4]! & 0xf) << 4);
  }
}
function unpackScales12(b: Uint8Array, o: number): { sc: number[]; m: number[] } {
  const sc: number[] = [];
  const m: number[] = [];
  for (let j = 0; j < 8; j++) {
    if (j < 4) {
      sc.push(b[o + j]! & 63);
      m.push(b[o + j + 4]! & 63);
    } else {
      sc.push((b[o + j + 4]! & 0xf) | ((b[o + j - 4]! >> 6) << 4));
      m.push((b[o + j + 4]! >> 4) | ((b[o + j]! >> 6) << 4));
    }
  }
  return { sc, m };
}

/** The bytes of one block holding `p` (layouts of ggml-common.h). */
export function packKBlock(type: KQuant, p: KParts): Uint8Array {
  const out = new Uint8Array(KQ_BLOCK_BYTES[type]);
  if (type === "q6_k") {
    // ql[128], qh[64], scales[16], d. Element 128n + 32g + l: low nibble (g >> 1) of
    // ql[64n + 32(g & 1) + l], high 2 bits at bit 2g of qh[32n + l]; scale 8n + 2g + l / 16.
    for (let e = 0; e < QK_K; e++) {
      const n = e >> 7;
      const g = (e >> 5) & 3;
      const l = e & 31;
      const q = p.q[e]!;
      or(out, 64 * n + 32 * (g & 1) + l, (q & 0xf) << (4 * (g >> 1)));
      or(out, 128 + 32 * n + l, ((q >> 4) & 3) << (2 * g));
    }
    for (let i = 0; i < 16; i++) out[192 + i] = p.sc[i]! & 0xff;
    put16(out, 208, p.dBits);
    return out;
  }
  // d, dmin, scales[12], (q5_K: qh[32],) qs[128]. Element 64j + 32h + l: nibble h of
  // qs[32j + l]; q5_K's fifth bit is bit (2j + h) of qh[l].
  put16(out, 0, p.dBits);
  put16(out, 2, p.dminBits);
  packScales12(p.sc, p.m, out, 4);
  const qs = type === "q5_k" ? 48 : 16;
  for (let e = 0; e < QK_K; e++) {
    const j = e >> 6;
    const h = (e >> 5) & 1;
    const l = e & 31;
    or(out, qs + 32 * j + l, (p.q[e]! & 0xf) << (4 * h));
    if (type === "q5_k") or(out, 16 + l, ((p.q[e]! >> 4) & 1) << (2 * j + h));
  }
  return out;
}

/** The numbers stored in the block at bytes[o ..]. */
export function unpackKBlock(type: KQuant, b: Uint8Array, o = 0): KParts {
  const q: number[] = new Array<number>(QK_K);
  if (type === "q6_k") {
    for (let e = 0; e < QK_K; e++) {
      const n = e >> 7;
      const g = (e >> 5) & 3;
      const l = e & 31;
      const lo = (b[o + 64 * n + 32 * (g & 1) + l]! >> (4 * (g >> 1))) & 0xf;
      const hi = (b[o + 128 + 32 * n + l]! >> (2 * g)) & 3;
      q[e] = lo | (hi << 4);
    }
    const sc = Array.from({ length: 16 }, (_, i) => (b[o + 192 + i]! << 24) >> 24);
    return { dBits: le16(b, o + 208), dminBits: 0, sc, m: [], q };
  }
  const { sc, m } = unpackScales12(b, o + 4);
  const qs = type === "q5_k" ? 48 : 16;
  for (let e = 0; e < QK_K; e++) {
    const j = e >> 6;
    const h = (e >> 5) & 1;
    const l = e & 31;
    let v = (b[o + qs + 32 * j + l]! >> (4 * h)) & 0xf;
    if (type === "q5_k") v |= ((b[o + 16 + l]! >> (2 * j + h)) & 1) << 4;
    q[e] = v;
  }
  return { dBits: le16(b, o), dminBits: le16(b, o + 2), sc, m, q };
}

/** x of every element of `p`, in float32 as llama.cpp computes it ((d·sc)·q − dmin·m; (d·sc)·(q − 32)). */
export function dequantizeParts(type: KQuant, p: KParts): Float32Array {
  const out = new Float32Array(QK_K);
  const d = f16BitsToF32(p.dBits);
  for (let e = 0; e < QK_K; e++) {
    if (type === "q6_k") {
      const n = e >> 7;
      const g = (e >> 5) & 3;
      const l = e & 31;
      out[e] = f(f(d * p.sc[8 * n + 2 * g + (l >> 4)]!) * (p.q[e]! - 32));
    } else {
      const s = e >> 5;
      const dmin = f16BitsToF32(p.dminBits);
      out[e] = f(f(f(d * p.sc[s]!) * p.q[e]!) - f(dmin * p.m[s]!));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Dequantization in llama.cpp's loop structure (dequantize_row_q4_K / q5_K / q6_K)
// ---------------------------------------------------------------------------------------------

function getScaleMinK4(j: number, q: Uint8Array, o: number): [number, number] {
  if (j < 4) return [q[o + j]! & 63, q[o + j + 4]! & 63];
  return [
    (q[o + j + 4]! & 0xf) | ((q[o + j - 4]! >> 6) << 4),
    (q[o + j + 4]! >> 4) | ((q[o + j]! >> 6) << 4),
  ];
}

/** bytes: [rows, cols/256] blocks → [rows, cols] float32. */
export function dequantizeK(
  type: KQuant,
  bytes: Uint8Array,
  rows: number,
  cols: number,
): Float32Array {
  if (cols % QK_K !== 0) throw new Error(`cols=${cols} must be a multiple of ${QK_K}`);
  const bs = KQ_BLOCK_BYTES[type];
  const nb = (rows * cols) / QK_K;
  const y = new Float32Array(rows * cols);
  let yi = 0;
  for (let i = 0; i < nb; i++) {
    const o = i * bs;
    if (type === "q6_k") {
      const d = f16BitsToF32(le16(bytes, o + 208));
      let ql = o;
      let qh = o + 128;
      let sc = o + 192;
      for (let n = 0; n < QK_K; n += 128) {
        for (let l = 0; l < 32; l++) {
          const is = l >> 4;
          const s8 = (k: number): number => (bytes[sc + k]! << 24) >> 24;
          const q1 = ((bytes[ql + l]! & 0xf) | (((bytes[qh + l]! >> 0) & 3) << 4)) - 32;
          const q2 = ((bytes[ql + l + 32]! & 0xf) | (((bytes[qh + l]! >> 2) & 3) << 4)) - 32;
          const q3 = ((bytes[ql + l]! >> 4) | (((bytes[qh + l]! >> 4) & 3) << 4)) - 32;
          const q4 = ((bytes[ql + l + 32]! >> 4) | (((bytes[qh + l]! >> 6) & 3) << 4)) - 32;
          y[yi + l] = f(f(d * s8(is)) * q1);
          y[yi + l + 32] = f(f(d * s8(is + 2)) * q2);
          y[yi + l + 64] = f(f(d * s8(is + 4)) * q3);
          y[yi + l + 96] = f(f(d * s8(is + 6)) * q4);
        }
        yi += 128;
        ql += 64;
        qh += 32;
        sc += 8;
      }
      continue;
    }
    const d = f16BitsToF32(le16(bytes, o));
    const min = f16BitsToF32(le16(bytes, o + 2));
    let q = o + (type === "q5_k" ? 48 : 16);
    const qh = o + 16;
    let is = 0;
    let u1 = 1;
    let u2 = 2;
    for (let j = 0; j < QK_K; j += 64) {
      const [sc1, m1i] = getScaleMinK4(is, bytes, o + 4);
      const [sc2, m2i] = getScaleMinK4(is + 1, bytes, o + 4);
      const d1 = f(d * sc1);
      const m1 = f(min * m1i);
      const d2 = f(d * sc2);
      const m2 = f(min * m2i);
      for (let l = 0; l < 32; l++) {
        const hi = type === "q5_k" && bytes[qh + l]! & u1 ? 16 : 0;
        y[yi++] = f(f(d1 * ((bytes[q + l]! & 0xf) + hi)) - m1);
      }
      for (let l = 0; l < 32; l++) {
        const hi = type === "q5_k" && bytes[qh + l]! & u2 ? 16 : 0;
        y[yi++] = f(f(d2 * ((bytes[q + l]! >> 4) + hi)) - m2);
      }
      q += 32;
      is += 2;
      u1 <<= 2;
      u2 <<= 2;
    }
  }
  return y;
}

// ---------------------------------------------------------------------------------------------
// Reference quantizers (quantize_row_q4_K_ref / q5_K_ref / q6_K_ref), float32 op for op
// ---------------------------------------------------------------------------------------------

const nearestBuf = new Float32Array(1);
const nearestBits = new Int32Array(nearestBuf.buffer);
/** llama.cpp nearest_int: the low mantissa bits of f + 1.5·2^23 (round half to even). */
export function nearestInt(x: number): number {
  nearestBuf[0] = f(x + 12582912);
  return (nearestBits[0]! & 0x007fffff) - 0x00400000;
}
const clamp = (v: number, lo: number, hi: number): number => Math.max(lo, Math.min(hi, v));

/** make_qkx2_quants → [scale, the_min]; fills L[0..n) with levels 0..nmax. */
function makeQkx2(
  n: number,
  nmax: number,
  x: Float32Array,
  w: Float32Array,
  L: Uint8Array,
  rmin: number,
  rdelta: number,
  nstep: number,
): [number, number] {
  const Laux = new Uint8Array(n);
  let min = x[0]!;
  let max = x[0]!;
  let sumW = w[0]!;
  let sumX = f(sumW * x[0]!);
  for (let i = 1; i < n; i++) {
    if (x[i]! < min) min = x[i]!;
    if (x[i]! > max) max = x[i]!;
    sumW = f(sumW + w[i]!);
    sumX = f(sumX + f(w[i]! * x[i]!));
  }
  if (min > 0) min = 0;
  if (max === min) {
    L.fill(0, 0, n);
    return [0, -min];
  }
  let iscale = f(nmax / f(max - min));
  let scale = f(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    L[i] = clamp(nearestInt(f(iscale * f(x[i]! - min))), 0, nmax);
    const diff = f(f(f(scale * L[i]!) + min) - x[i]!);
    bestError = f(bestError + f(w[i]! * f(diff * diff)));
  }
  for (let is = 0; is <= nstep; is++) {
    iscale = f(f(f(rmin + f(rdelta * is)) + nmax) / f(max - min));
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = clamp(nearestInt(f(iscale * f(x[i]! - min))), 0, nmax);
      Laux[i] = l;
      const wl = f(w[i]! * l);
      sumL = f(sumL + wl);
      sumL2 = f(sumL2 + f(wl * l));
      sumXL = f(sumXL + f(wl * x[i]!));
    }
    const D = f(f(sumW * sumL2) - f(sumL * sumL));
    if (D > 0) {
      let thisScale = f(f(f(sumW * sumXL) - f(sumX * sumL)) / D);
      let thisMin = f(f(f(sumL2 * sumX) - f(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = f(sumXL / sumL2);
      }
      let cur = 0;
      for (let i = 0; i < n; i++) {
        const diff = f(f(f(thisScale * Laux[i]!) + thisMin) - x[i]!);
        cur = f(cur + f(w[i]! * f(diff * diff)));
      }
      if (cur < bestError) {
        L.set(Laux);
        bestError = cur;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  return [scale, -min];
}

/** make_qx_quants with rmse_type 1, no importance weights; L gets levels + nmax. */
function makeQx(n: number, nmax: number, x: Float32Array, L: Int8Array): number {
  let max = 0;
  let amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[i]!);
    if (ax > amax) {
      amax = ax;
      max = x[i]!;
    }
  }
  if (amax < f(1e-15)) {
    L.fill(0, 0, n);
    return 0;
  }
  const levels = (iscale: number): [number, number, number[]] => {
    let sumlx = 0;
    let suml2 = 0;
    const ls: number[] = [];
    for (let i = 0; i < n; i++) {
      const l = clamp(nearestInt(f(iscale * x[i]!)), -nmax, nmax - 1);
      ls.push(l);
      const w = f(x[i]! * x[i]!);
      sumlx = f(sumlx + f(f(w * x[i]!) * l));
      suml2 = f(suml2 + f(f(w * l) * l));
    }
    return [sumlx, suml2, ls];
  };
  let [sumlx, suml2, ls] = levels(f(-nmax / max));
  ls.forEach((l, i) => (L[i] = l + nmax));
  let scale = suml2 !== 0 ? f(sumlx / suml2) : 0;
  let best = f(scale * sumlx);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    [sumlx, suml2, ls] = levels(f(-f(nmax + f(f(0.1) * is)) / max));
    if (suml2 > 0 && f(sumlx * sumlx) > f(best * suml2)) {
      ls.forEach((l, i) => (L[i] = l + nmax));
      scale = f(sumlx / suml2);
      best = f(scale * sumlx);
    }
  }
  return scale;
}

function quantizeQkxBlock(type: "q4_k" | "q5_k", x: Float32Array): Uint8Array {
  const q5 = type === "q5_k";
  const nmax = q5 ? 31 : 15;
  const L = new Uint8Array(QK_K);
  const mins = new Float32Array(8);
  const scales = new Float32Array(8);
  const weights = new Float32Array(32);
  let maxScale = 0;
  let maxMin = 0;
  for (let j = 0; j < 8; j++) {
    const xs = x.subarray(32 * j, 32 * j + 32);
    let sumX2 = 0;
    for (let l = 0; l < 32; l++) sumX2 = f(sumX2 + f(xs[l]! * xs[l]!));
    const avX = f(Math.sqrt(f(sumX2 / 32)));
    for (let l = 0; l < 32; l++) weights[l] = f(avX + Math.abs(xs[l]!));
    const [s, m] = makeQkx2(
      32,
      nmax,
      xs,
      weights,
      L.subarray(32 * j, 32 * j + 32),
      q5 ? -0.5 : -1,
      f(0.1),
      q5 ? 15 : 20,
    );
    scales[j] = s;
    mins[j] = m;
    if (s > maxScale) maxScale = s;
    if (m > maxMin) maxMin = m;
  }
  const invScale = maxScale > 0 ? f(63 / maxScale) : 0;
  const invMin = maxMin > 0 ? f(63 / maxMin) : 0;
  const sc: number[] = [];
  const m: number[] = [];
  for (let j = 0; j < 8; j++) {
    sc.push(Math.min(63, nearestInt(f(invScale * scales[j]!)) & 0xff)); // uint8_t, then MIN(63, ·)
    m.push(Math.min(63, nearestInt(f(invMin * mins[j]!)) & 0xff));
  }
  const dBits = f32ToF16Bits(f(maxScale / 63));
  const dminBits = f32ToF16Bits(f(maxMin / 63));
  for (let j = 0; j < 8; j++) {
    const d = f(f16BitsToF32(dBits) * sc[j]!);
    if (d === 0) continue;
    const dm = f(f16BitsToF32(dminBits) * m[j]!);
    for (let i = 0; i < 32; i++)
      L[32 * j + i] = clamp(nearestInt(f(f(x[32 * j + i]! + dm) / d)), 0, nmax);
  }
  return packKBlock(type, { dBits, dminBits, sc, m, q: Array.from(L) });
}

function quantizeQ6KBlock(x: Float32Array): Uint8Array {
  const L = new Int8Array(QK_K);
  const scales = new Float32Array(16);
  let maxScale = 0;
  let maxAbsScale = 0;
  for (let ib = 0; ib < 16; ib++) {
    const s = makeQx(16, 32, x.subarray(16 * ib, 16 * ib + 16), L.subarray(16 * ib, 16 * ib + 16));
    scales[ib] = s;
    if (Math.abs(s) > maxAbsScale) {
      maxAbsScale = Math.abs(s);
      maxScale = s;
    }
  }
  if (maxAbsScale < f(1e-15)) return new Uint8Array(KQ_BLOCK_BYTES.q6_k);
  const iscale = f(-128 / maxScale);
  const dBits = f32ToF16Bits(f(1 / iscale));
  const sc = Array.from(scales, (s) => Math.min(127, nearestInt(f(iscale * s))));
  for (let j = 0; j < 16; j++) {
    const d = f(f16BitsToF32(dBits) * sc[j]!);
    if (d === 0) continue;
    for (let i = 0; i < 16; i++)
      L[16 * j + i] = clamp(nearestInt(f(x[16 * j + i]! / d)), -32, 31) + 32;
  }
  return packKBlock("q6_k", { dBits, dminBits: 0, sc, m: [], q: Array.from(L) });
}

/**
 * llama.cpp's reference quantizer of `type` (what llama-quantize writes without an importance
 * matrix). x: [rows, cols] float32 values, cols % 256 == 0 → [rows, cols/256] blocks.
 */
export function quantizeK(
  type: KQuant,
  x: ArrayLike<number>,
  rows: number,
  cols: number,
): Uint8Array {
  if (cols % QK_K !== 0) throw new Error(`cols=${cols} must be a multiple of ${QK_K}`);
  const bs = KQ_BLOCK_BYTES[type];
  const xf = Float32Array.from(x as ArrayLike<number>);
  const nb = (rows * cols) / QK_K;
  const out = new Uint8Array(nb * bs);
  for (let i = 0; i < nb; i++) {
    const xb = xf.subarray(i * QK_K, (i + 1) * QK_K);
    out.set(type === "q6_k" ? quantizeQ6KBlock(xb) : quantizeQkxBlock(type, xb), i * bs);
  }
  return out;
}

export const K_QUANT_TYPES: readonly KQuant[] = ["q4_k", "q5_k", "q6_k"];
export function isKQuantName(d: string): d is KQuant {
  return d === "q4_k" || d === "q5_k" || d === "q6_k";
}
