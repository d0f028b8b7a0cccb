// Plain TypeScript references for the kernels of native/kernels/kernels.inc: obviously-correct
// loops, float64 math, no addon, no threads. Tests compare both backends against these.
//
// Rounding: every function that produces a T (float or bf16) takes an optional `round` hook,
// applied at exactly the rounding points kernels.inc states. The default is Math.fround (T =
// float); pass `roundBf16` to emulate bf16 semantics. Between rounding points the math is float64,
// so the reference is at least as accurate as the float32 kernels it checks.
//
// Number formats are written from their definitions (IEEE 754 binary16 / bfloat16, OCP FP8 E4M3FN,
// GGUF Q8_0 / Q4_0 blocks), independently of runtime/dtype.h.

/** A rounding hook: maps a real value to the nearest value of the storage type. */
export type Round = (x: number) => number;

/** Identity rounding (pure float64 math), for when no rounding point should be emulated. */
export const roundNone: Round = (x) => x;
/** float32 round-to-nearest-even. */
export const roundF32: Round = Math.fround;

// ---------------------------------------------------------------------------------------------
// Floating-point formats
// ---------------------------------------------------------------------------------------------

interface FloatFormat {
  fracBits: number; // explicit fraction bits
  expBits: number;
  bias: number;
  maxFinite: number;
  /** Overflow: IEEE formats go to infinity; e4m3fn (no infinity) saturates to ±maxFinite. */
  saturate: boolean;
  /** true when the all-ones exponent encodes inf/NaN (IEEE); e4m3fn uses it for normal values. */
  ieeeSpecials: boolean;
  nanBits: number;
}

const BF16: FloatFormat = {
  fracBits: 7,
  expBits: 8,
  bias: 127,
  maxFinite: (2 - 2 ** -7) * 2 ** 127,
  saturate: false,
  ieeeSpecials: true,
  nanBits: 0x7fc0,
};
const F16: FloatFormat = {
  fracBits: 10,
  expBits: 5,
  bias: 15,
  maxFinite: 65504,
  saturate: false,
  ieeeSpecials: true,
  nanBits: 0x7e00,
};
/** OCP E4M3FN: bias 7, no infinities, S.1111.111 is NaN, max finite 448. */
const FP8E4M3: FloatFormat = {
  fracBits: 3,
  expBits: 4,
  bias: 7,
  maxFinite: 448,
  saturate: true,
  ieeeSpecials: false,
  nanBits: 0x7f,
};

/** floor(log2(a)) for finite a > 0, exact (Math.log2 alone can be off by one near powers of 2). */
function exponentOf(a: number): number {
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  return e;
}

/** Round half to even of a non-negative real. */
function rintEven(m: number): number {
  const fl = Math.floor(m);
  const diff = m - fl;
  if (diff > 0.5) return fl + 1;
  if (diff < 0.5) return fl;
  return fl % 2 === 0 ? fl : fl + 1;
}

/**
 * Rounds x to the nearest value of `fmt` (ties to even). The input is first rounded to float32,
 * as the kernels hold float32 values when they store to a narrower type.
 */
function roundToFormat(x: number, fmt: FloatFormat): number {
  x = Math.fround(x);
  if (Number.isNaN(x)) return NaN;
  if (x === 0) return x;
  const sign = x < 0 ? -1 : 1;
  const a = Math.abs(x);
  if (a === Infinity) return fmt.saturate ? sign * fmt.maxFinite : x;
  const emin = 1 - fmt.bias; // exponent of the smallest normal; subnormals share its quantum
  const e = Math.max(exponentOf(a), emin);
  const quantum = 2 ** (e - fmt.fracBits);
  const r = rintEven(a / quantum) * quantum;
  if (r > fmt.maxFinite) return fmt.saturate ? sign * fmt.maxFinite : sign * Infinity;
  return sign * r;
}

/** Bits of a value already representable in `fmt` (NaN → fmt.nanBits). */
function formatBits(v: number, fmt: FloatFormat): number {
  if (Number.isNaN(v)) return fmt.nanBits;
  const signBit = v < 0 || Object.is(v, -0) ? 1 << (fmt.expBits + fmt.fracBits) : 0;
  const a = Math.abs(v);
  const expMax = (1 << fmt.expBits) - 1;
  if (a === Infinity) return signBit | (expMax << fmt.fracBits);
  if (a === 0) return signBit;
  const emin = 1 - fmt.bias;
  const e = exponentOf(a);
  if (e < emin) return signBit | (a / 2 ** (emin - fmt.fracBits)); // subnormal: exponent field 0
  const frac = (a / 2 ** e - 1) * 2 ** fmt.fracBits;
  return signBit | ((e + fmt.bias) << fmt.fracBits) | frac;
}

/** Value of the bit pattern `bits` in `fmt`. */
function formatValue(bits: number, fmt: FloatFormat): number {
  const sign = (bits >> (fmt.expBits + fmt.fracBits)) & 1 ? -1 : 1;
  const expMax = (1 << fmt.expBits) - 1;
  const exp = (bits >> fmt.fracBits) & expMax;
  const frac = bits & ((1 << fmt.fracBits) - 1);
  if (fmt.ieeeSpecials && exp === expMax) return frac === 0 ? sign * Infinity : NaN;
  if (!fmt.ieeeSpecials && exp === expMax && frac === (1 << fmt.fracBits) - 1) return NaN;
  if (exp === 0) return sign * frac * 2 ** (1 - fmt.bias - fmt.fracBits);
  return sign * (1 + frac / 2 ** fmt.fracBits) * 2 ** (exp - fmt.bias);
}

/** Rounds to the nearest bfloat16 value (via float32, ties to even). */
export const roundBf16: Round = (x) => roundToFormat(x, BF16);
/** Rounds to the nearest IEEE binary16 value (via float32, ties to even; overflow → ±inf). */
export const roundF16: Round = (x) => roundToFormat(x, F16);
/** Rounds to the nearest e4m3fn value (via float32, ties to even; saturates at ±448, inf too). */
export const roundFp8e4m3: Round = (x) => roundToFormat(x, FP8E4M3);

/** bf16 bits (uint16) of x, round to nearest even. */
export function f32ToBf16Bits(x: number): number {
  return formatBits(roundBf16(x), BF16);
}
/** Value of bf16 bits. */
export function bf16BitsToF32(bits: number): number {
  return formatValue(bits, BF16);
}
/** binary16 bits (uint16) of x, round to nearest even. */
export function f32ToF16Bits(x: number): number {
  return formatBits(roundF16(x), F16);
}
/** Value of binary16 bits. */
export function f16BitsToF32(bits: number): number {
  return formatValue(bits, F16);
}
/** e4m3fn bits (uint8) of x, round to nearest even, saturating. */
export function f32ToFp8e4m3Bits(x: number): number {
  return formatBits(roundFp8e4m3(x), FP8E4M3);
}
/** Value of e4m3fn bits. */
export function fp8e4m3BitsToF32(bits: number): number {
  return formatValue(bits, FP8E4M3);
}

/** x: [n] → bf16 bits [n]. */
export function encodeBf16(x: ArrayLike<number>): Uint16Array {
  return Uint16Array.from({ length: x.length }, (_, i) => f32ToBf16Bits(x[i]!));
}
/** bits: [n] bf16 → [n] float32. */
export function decodeBf16(bits: ArrayLike<number>): Float32Array {
  return Float32Array.from({ length: bits.length }, (_, i) => bf16BitsToF32(bits[i]!));
}
/** x: [n] → binary16 bits [n]. */
export function encodeF16(x: ArrayLike<number>): Uint16Array {
  return Uint16Array.from({ length: x.length }, (_, i) => f32ToF16Bits(x[i]!));
}
/** bits: [n] binary16 → [n] float32. */
export function decodeF16(bits: ArrayLike<number>): Float32Array {
  return Float32Array.from({ length: bits.length }, (_, i) => f16BitsToF32(bits[i]!));
}
/** x: [n] → e4m3fn bytes [n]. */
export function encodeFp8e4m3(x: ArrayLike<number>): Uint8Array {
  return Uint8Array.from({ length: x.length }, (_, i) => f32ToFp8e4m3Bits(x[i]!));
}
/** bytes: [n] e4m3fn → [n] float32. */
export function decodeFp8e4m3(bytes: ArrayLike<number>): Float32Array {
  return Float32Array.from({ length: bytes.length }, (_, i) => fp8e4m3BitsToF32(bytes[i]!));
}

// ---------------------------------------------------------------------------------------------
// GGUF blocks: Q8_0 = f16 d (little-endian) + 32 x int8, x = q*d;
//              Q4_0 = f16 d (little-endian) + 16 bytes, byte j = q[j] | q[j+16] << 4, x = (q-8)*d
// ---------------------------------------------------------------------------------------------

export const QK = 32;
export const Q8_0_BLOCK_BYTES = 34;
export const Q4_0_BLOCK_BYTES = 18;

function checkBlockCols(cols: number): void {
  if (cols % QK !== 0) throw new Error(`cols=${cols} must be a multiple of ${QK}`);
}

/** One Q8_0 block from d (as f16 bits) and 32 int8 quants. */
export function packQ8_0Block(dBits: number, qs: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(Q8_0_BLOCK_BYTES);
  out[0] = dBits & 0xff;
  out[1] = (dBits >> 8) & 0xff;
  for (let j = 0; j < QK; j++) out[2 + j] = qs[j]! & 0xff;
  return out;
}
/** The block at bytes[offset..offset+34): d bits, d, and its 32 int8 quants. */
export function unpackQ8_0Block(
  bytes: Uint8Array,
  offset = 0,
): { dBits: number; d: number; qs: Int8Array } {
  const dBits = bytes[offset]! | (bytes[offset + 1]! << 8);
  const qs = new Int8Array(QK);
  for (let j = 0; j < QK; j++) qs[j] = (bytes[offset + 2 + j]! << 24) >> 24;
  return { dBits, d: f16BitsToF32(dBits), qs };
}
/** One Q4_0 block from d (as f16 bits) and 32 quants in 0..15, in element order. */
export function packQ4_0Block(dBits: number, q: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(Q4_0_BLOCK_BYTES);
  out[0] = dBits & 0xff;
  out[1] = (dBits >> 8) & 0xff;
  for (let j = 0; j < QK / 2; j++) out[2 + j] = (q[j]! & 0xf) | ((q[j + QK / 2]! & 0xf) << 4);
  return out;
}
/** The block at bytes[offset..offset+18): d bits, d, and its 32 quants (0..15, element order). */
export function unpackQ4_0Block(
  bytes: Uint8Array,
  offset = 0,
): { dBits: number; d: number; q: Uint8Array } {
  const dBits = bytes[offset]! | (bytes[offset + 1]! << 8);
  const q = new Uint8Array(QK);
  for (let j = 0; j < QK / 2; j++) {
    const byte = bytes[offset + 2 + j]!;
    q[j] = byte & 0xf;
    q[j + QK / 2] = byte >> 4;
  }
  return { dBits, d: f16BitsToF32(dBits), q };
}

/** C roundf: half away from zero. */
function roundAway(v: number): number {
  return v < 0 ? -Math.floor(-v + 0.5) : Math.floor(v + 0.5);
}

/**
 * llama.cpp quantize_row_q8_0_ref, float32 operation for operation.
 * x: [rows, cols] float32 values (cols % 32 == 0) → [rows * cols/32 * 34] bytes.
 */
export function quantizeQ8_0(x: ArrayLike<number>, rows: number, cols: number): Uint8Array {
  checkBlockCols(cols);
  const f = Math.fround;
  const out = new Uint8Array((rows * cols * Q8_0_BLOCK_BYTES) / QK);
  const qs = new Int8Array(QK);
  for (let b = 0; b < (rows * cols) / QK; b++) {
    let amax = 0;
    for (let j = 0; j < QK; j++) amax = Math.max(amax, Math.abs(f(x[b * QK + j]!)));
    const d = f(amax / 127);
    const id = d !== 0 ? f(1 / d) : 0;
    for (let j = 0; j < QK; j++) qs[j] = roundAway(f(f(x[b * QK + j]!) * id));
    out.set(packQ8_0Block(f32ToF16Bits(d), qs), b * Q8_0_BLOCK_BYTES);
  }
  return out;
}

/**
 * llama.cpp quantize_row_q4_0_ref, float32 operation for operation: m = the element of largest
 * |x| (first one on ties, sign kept), d = m / -8, q = min(15, trunc(x / d + 8.5)).
 * x: [rows, cols] float32 values (cols % 32 == 0) → [rows * cols/32 * 18] bytes.
 */
export function quantizeQ4_0(x: ArrayLike<number>, rows: number, cols: number): Uint8Array {
  checkBlockCols(cols);
  const f = Math.fround;
  const out = new Uint8Array((rows * cols * Q4_0_BLOCK_BYTES) / QK);
  const q = new Uint8Array(QK);
  for (let b = 0; b < (rows * cols) / QK; b++) {
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK; j++) {
      const v = f(x[b * QK + j]!);
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = f(max / -8);
    const id = d !== 0 ? f(1 / d) : 0;
    for (let j = 0; j < QK; j++)
      q[j] = Math.min(15, Math.trunc(f(f(f(x[b * QK + j]!) * id) + 8.5)));
    out.set(packQ4_0Block(f32ToF16Bits(d), q), b * Q4_0_BLOCK_BYTES);
  }
  return out;
}

/** bytes: [rows, cols/32] Q8_0 blocks → [rows, cols] float32 (x = q * d). */
export function dequantizeQ8_0(bytes: Uint8Array, rows: number, cols: number): Float32Array {
  checkBlockCols(cols);
  const out = new Float32Array(rows * cols);
  for (let b = 0; b < (rows * cols) / QK; b++) {
    const { d, qs } = unpackQ8_0Block(bytes, b * Q8_0_BLOCK_BYTES);
    for (let j = 0; j < QK; j++) out[b * QK + j] = qs[j]! * d;
  }
  return out;
}

/** bytes: [rows, cols/32] Q4_0 blocks → [rows, cols] float32 (x = (q - 8) * d). */
/**
 * q4_0 / q8_0 blocks [rows, cols] (q = 16 / 32 quant bytes a block) in their split row layout
 * (q4_0s / q8_0s, native/runtime/dtype.h): each row's q quant bytes of block b at q b, then block
 * b's f16 d at q nb + 2 b.
 */
export function repackSplit(bytes: Uint8Array, rows: number, cols: number, q: 16 | 32): Uint8Array {
  const nb = cols / 32;
  const rowBytes = nb * (2 + q);
  const out = new Uint8Array(bytes.length);
  for (let r = 0; r < rows; r++)
    for (let b = 0; b < nb; b++) {
      const g = r * rowBytes + b * (2 + q);
      out.set(bytes.subarray(g, g + 2), r * rowBytes + q * nb + 2 * b);
      out.set(bytes.subarray(g + 2, g + 2 + q), r * rowBytes + q * b);
    }
  return out;
}

export function dequantizeQ4_0(bytes: Uint8Array, rows: number, cols: number): Float32Array {
  checkBlockCols(cols);
  const out = new Float32Array(rows * cols);
  for (let b = 0; b < (rows * cols) / QK; b++) {
    const { d, q } = unpackQ4_0Block(bytes, b * Q4_0_BLOCK_BYTES);
    for (let j = 0; j < QK; j++) out[b * QK + j] = (q[j]! - 8) * d;
  }
  return out;
}

/**
 * Per-row fp8: scale[r] = amax(row) / 448 (1 when amax == 0), q = e4m3(x / scale[r]) in float32.
 * x: [rows, cols] → q: [rows, cols] bytes, scale: [rows].
 */
export function quantizeFp8e4m3(
  x: ArrayLike<number>,
  rows: number,
  cols: number,
): { q: Uint8Array; scale: Float32Array } {
  const f = Math.fround;
  const q = new Uint8Array(rows * cols);
  const scale = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let amax = 0;
    for (let c = 0; c < cols; c++) amax = Math.max(amax, Math.abs(f(x[r * cols + c]!)));
    const s = amax > 0 ? f(amax / 448) : 1;
    scale[r] = s;
    for (let c = 0; c < cols; c++) q[r * cols + c] = f32ToFp8e4m3Bits(f(x[r * cols + c]!) / s);
  }
  return { q, scale };
}

/** q: [rows, cols] e4m3fn bytes, scale: [rows] → [rows, cols] float32 (value * scale[r]). */
export function dequantizeFp8e4m3(
  q: Uint8Array,
  scale: ArrayLike<number>,
  rows: number,
  cols: number,
): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++)
      out[r * cols + c] = fp8e4m3BitsToF32(q[r * cols + c]!) * scale[r]!;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

/**
 * y[m, n] = round(sum_k x[m, k] * w[n, k] * (wScale?.[n] ?? 1)); one rounding of the sum.
 * x: [M, K]; w: [N, K] (already decoded to values); wScale: [N] (fp8 per-row scale) → y: [M, N].
 */
export function matmul(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  M: number,
  N: number,
  K: number,
  wScale?: ArrayLike<number> | null,
  round: Round = roundF32,
): Float32Array {
  const y = new Float32Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += x[m * K + k]! * w[n * K + k]!;
      y[m * N + n] = round(wScale ? s * wScale[n]! : s);
    }
  return y;
}

/** Rows of x up to which q8_0 / q4_0 matmuls use the q-dot contract (kernels.inc, matmul). */
export const QDOT_MAX_M = 8;
/** Whether the q-dot contract is on in this process (GEMMA3_QDOT=float turns it off). */
export const qdotEnabled = (): boolean => process.env.GEMMA3_QDOT !== "float";

/**
 * x rows rounded to the q-dot contract (kernels.inc, matmul; llama.cpp quantize_q8_1 with an f32
 * scale): per block of 32, d = f32(amax / 127) (NaN when amax is not finite), q = roundAway(f32(x *
 * f32(1 / d))) (0 when d is 0 or NaN). x: [rows, cols] (values already in the storage type) → q
 * [rows, cols] int8, d [rows, cols/32].
 */
export function quantizeActQ8(
  x: ArrayLike<number>,
  rows: number,
  cols: number,
): { q: Int8Array; d: Float32Array } {
  checkBlockCols(cols);
  const f = Math.fround;
  const nb = (rows * cols) / QK;
  const q = new Int8Array(rows * cols);
  const d = new Float32Array(nb);
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    let finite = true;
    for (let j = 0; j < QK; j++) {
      const v = Math.abs(f(x[b * QK + j]!));
      if (!Number.isFinite(v)) finite = false;
      else amax = Math.max(amax, v);
    }
    const db = finite ? f(amax / 127) : NaN;
    const id = db > 0 ? f(1 / db) : 0;
    d[b] = db;
    for (let j = 0; j < QK; j++)
      q[b * QK + j] = id === 0 ? 0 : roundAway(f(f(x[b * QK + j]!) * id));
  }
  return { q, d };
}

/**
 * matmul with q8_0 / q4_0 weights under the q-dot contract (M <= 8): x rounded by quantizeActQ8,
 * then y[m, n] = round(sum_b f32(f32(d_w * d_x) * s_b)) with s_b the exact integer dot of the
 * block's integer weights (q, or nibble - 8) with x's int8 values. Block terms summed in float64
 * (the backends sum them in float32, in their own orders).
 * x: [M, K]; wBytes: [N, K/32] Q8_0 / Q4_0 blocks → y: [M, N].
 */
export function matmulQdot(
  x: ArrayLike<number>,
  wBytes: Uint8Array,
  format: "q8_0" | "q4_0",
  M: number,
  N: number,
  K: number,
  round: Round = roundF32,
): Float32Array {
  const f = Math.fround;
  const nb = K / QK;
  const ax = quantizeActQ8(x, M, K);
  const wi = new Int8Array(QK);
  const y = new Float32Array(M * N);
  for (let n = 0; n < N; n++) {
    const acc = new Float64Array(M);
    for (let b = 0; b < nb; b++) {
      let dw: number;
      if (format === "q8_0") {
        const blk = unpackQ8_0Block(wBytes, (n * nb + b) * Q8_0_BLOCK_BYTES);
        dw = blk.d;
        wi.set(blk.qs);
      } else {
        const blk = unpackQ4_0Block(wBytes, (n * nb + b) * Q4_0_BLOCK_BYTES);
        dw = blk.d;
        for (let j = 0; j < QK; j++) wi[j] = blk.q[j]! - 8;
      }
      for (let m = 0; m < M; m++) {
        let s = 0;
        for (let j = 0; j < QK; j++) s += wi[j]! * ax.q[m * K + b * QK + j]!;
        acc[m] = acc[m]! + f(f(dw * ax.d[m * nb + b]!) * s);
      }
    }
    for (let m = 0; m < M; m++) y[m * N + n] = round(acc[m]!);
  }
  return y;
}

/** 1 / sqrt(mean(x[off..off+dim)^2) + eps). */
function rmsFactor(x: ArrayLike<number>, off: number, dim: number, eps: number): number {
  let ss = 0;
  for (let i = 0; i < dim; i++) ss += x[off + i]! ** 2;
  return 1 / Math.sqrt(ss / dim + eps);
}

/**
 * Gemma RMSNorm (HF Gemma3RMSNorm): out = round(x * rsqrt(mean(x^2) + eps) * (1 + w)).
 * x: [rows, dim]; w: [dim] → out: [rows, dim].
 */
export function rmsnorm(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  rows: number,
  dim: number,
  eps: number,
  round: Round = roundF32,
): Float32Array {
  const out = new Float32Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    const f = rmsFactor(x, r * dim, dim, eps);
    for (let i = 0; i < dim; i++) out[r * dim + i] = round(x[r * dim + i]! * f * (1 + w[i]!));
  }
  return out;
}

/**
 * Fused residual form: returns residual' = round(residual + round(rmsnorm(x, w))).
 * x, residual: [rows, dim]; w: [dim] → [rows, dim] (the input residual is not modified).
 */
export function rmsnormAdd(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  residual: ArrayLike<number>,
  rows: number,
  dim: number,
  eps: number,
  round: Round = roundF32,
): Float32Array {
  const normed = rmsnorm(x, w, rows, dim, eps, round);
  return Float32Array.from({ length: rows * dim }, (_, i) => round(residual[i]! + normed[i]!));
}

/**
 * LayerNorm with bias (SigLIP), biased variance: out = round((x - mean) * rsqrt(var + eps) * w + b).
 * x: [rows, dim]; w, b: [dim] → out: [rows, dim].
 */
export function layernorm(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  b: ArrayLike<number>,
  rows: number,
  dim: number,
  eps: number,
  round: Round = roundF32,
): Float32Array {
  const out = new Float32Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let i = 0; i < dim; i++) mean += x[r * dim + i]!;
    mean /= dim;
    let v = 0;
    for (let i = 0; i < dim; i++) v += (x[r * dim + i]! - mean) ** 2;
    const rstd = 1 / Math.sqrt(v / dim + eps);
    for (let i = 0; i < dim; i++)
      out[r * dim + i] = round((x[r * dim + i]! - mean) * rstd * w[i]! + b[i]!);
  }
  return out;
}

/** gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
export function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
}

/**
 * Gated GELU as HF computes it in T: out = round(round(gelu_tanh(gate)) * up).
 * gate: [rows, cols] row stride ldGate; up: [rows, cols] row stride ldUp → out: [rows, cols].
 */
export function geluMul(
  gate: ArrayLike<number>,
  up: ArrayLike<number>,
  rows: number,
  cols: number,
  ldGate: number,
  ldUp: number,
  round: Round = roundF32,
): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++)
      out[r * cols + c] = round(round(geluTanh(gate[r * ldGate + c]!)) * up[r * ldUp + c]!);
  return out;
}

/** out[i] = round(a[i] + b[i]). a, b: [n] → [n]. */
export function add(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  round: Round = roundF32,
): Float32Array {
  return Float32Array.from({ length: a.length }, (_, i) => round(a[i]! + b[i]!));
}

/** out[i] = round(x[i] * s). x: [n] → [n]. */
export function scale(x: ArrayLike<number>, s: number, round: Round = roundF32): Float32Array {
  return Float32Array.from({ length: x.length }, (_, i) => round(x[i]! * s));
}

/** Row softmax: out = round(exp(x - max) / sum). x: [rows, cols] → [rows, cols]. */
export function softmax(
  x: ArrayLike<number>,
  rows: number,
  cols: number,
  round: Round = roundF32,
): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    let mx = -Infinity;
    for (let c = 0; c < cols; c++) mx = Math.max(mx, x[r * cols + c]!);
    let sum = 0;
    for (let c = 0; c < cols; c++) sum += Math.exp(x[r * cols + c]! - mx);
    for (let c = 0; c < cols; c++) out[r * cols + c] = round(Math.exp(x[r * cols + c]! - mx) / sum);
  }
  return out;
}

/** "a ranks before b": larger value first, NaN after every number, ties to the lower index. */
function ranksBefore(va: number, ia: number, vb: number, ib: number): boolean {
  const an = Number.isNaN(va);
  const bn = Number.isNaN(vb);
  if (an !== bn) return bn;
  if (!an && va !== vb) return va > vb;
  return ia < ib;
}

/**
 * Row argmax: first index of the maximum. NaN never wins over a number (a row of only NaN → 0).
 * x: [rows, cols] → [rows] int32.
 */
export function argmax(x: ArrayLike<number>, rows: number, cols: number): Int32Array {
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let c = 1; c < cols; c++)
      if (ranksBefore(x[r * cols + c]!, c, x[r * cols + best]!, best)) best = c;
    out[r] = best;
  }
  return out;
}

/**
 * Row top-k by full sort: values descending, ties to the lower index, NaN last.
 * x: [rows, cols] → values: [rows, k] float32, indices: [rows, k] int32.
 */
export function topk(
  x: ArrayLike<number>,
  rows: number,
  cols: number,
  k: number,
): { values: Float32Array; indices: Int32Array } {
  const values = new Float32Array(rows * k);
  const indices = new Int32Array(rows * k);
  for (let r = 0; r < rows; r++) {
    const order = Array.from({ length: cols }, (_, c) => c);
    const v = (c: number) => x[r * cols + c]!;
    order.sort((a, b) => (ranksBefore(v(a), a, v(b), b) ? -1 : 1));
    for (let j = 0; j < k; j++) {
      const c = order[j]!;
      values[r * k + j] = v(c);
      indices[r * k + j] = c;
    }
  }
  return { values, indices };
}

/**
 * RoPE, rotate-half over the full head_dim (HF apply_rotary_pos_emb). Returns a rotated copy.
 *   inv_freq[i] = 1 / base^(2i / headDim) / scale (float32); a = float32(pos * inv_freq[i]);
 *   c = round(cos a), s = round(sin a);
 *   x1' = round(round(x1 c) - round(x2 s)), x2' = round(round(x2 c) + round(x1 s)).
 * x: [tokens, heads, headDim] with token stride ldToken; positions: [tokens].
 */
export function rope(
  x: ArrayLike<number>,
  positions: ArrayLike<number>,
  tokens: number,
  heads: number,
  headDim: number,
  ldToken: number,
  base: number,
  scale = 1,
  round: Round = roundF32,
): Float32Array {
  const f = Math.fround;
  const out = Float32Array.from(x);
  const half = headDim / 2;
  const invFreq = Array.from({ length: half }, (_, i) =>
    f(f(1 / f(Math.pow(f(base), f((2 * i) / headDim)))) / f(scale)),
  );
  for (let t = 0; t < tokens; t++)
    for (let i = 0; i < half; i++) {
      const a = f(positions[t]! * invFreq[i]!);
      const c = round(Math.cos(a));
      const s = round(Math.sin(a));
      for (let h = 0; h < heads; h++) {
        const o = t * ldToken + h * headDim + i;
        const x1 = x[o]!;
        const x2 = x[o + half]!;
        out[o] = round(round(x1 * c) - round(x2 * s));
        out[o + half] = round(round(x2 * c) + round(x1 * s));
      }
    }
  return out;
}

/** out[0..D) = round(softmax(q.k_j * smScale) . v_j) over the given keys; zeros if none. */
function attendOne(
  q: ArrayLike<number>,
  qOff: number,
  keys: ReadonlyArray<{ k: number; v: number }>,
  kData: ArrayLike<number>,
  vData: ArrayLike<number>,
  D: number,
  smScale: number,
  round: Round,
  out: Float32Array,
  outOff: number,
): void {
  if (keys.length === 0) {
    for (let d = 0; d < D; d++) out[outOff + d] = 0;
    return;
  }
  const scores = keys.map(({ k }) => {
    let s = 0;
    for (let d = 0; d < D; d++) s += q[qOff + d]! * kData[k + d]!;
    return s * smScale;
  });
  let mx = -Infinity;
  for (const s of scores) mx = Math.max(mx, s);
  const p = scores.map((s) => Math.exp(s - mx));
  const l = p.reduce((a, b) => a + b, 0);
  for (let d = 0; d < D; d++) {
    let acc = 0;
    keys.forEach(({ v }, j) => (acc += p[j]! * vData[v + d]!));
    out[outOff + d] = round(acc / l);
  }
}

/** Arguments of {@link attentionPrefill}. */
export interface PrefillArgs {
  /** [totalQ, numQoHeads, headDim], token stride ldQ */
  q: ArrayLike<number>;
  /** [totalKv, numKvHeads, headDim], token stride ldK */
  k: ArrayLike<number>;
  /** [totalKv, numKvHeads, headDim], token stride ldV */
  v: ArrayLike<number>;
  /** [batch + 1]: sequence b owns queries [qoIndptr[b], qoIndptr[b+1]) */
  qoIndptr: ArrayLike<number>;
  /** [batch + 1]: sequence b owns keys [kvIndptr[b], kvIndptr[b+1]) */
  kvIndptr: ArrayLike<number>;
  /** [totalQ] last visible key per query (bidirectional spans), -1 = none; causal only */
  kvLast?: ArrayLike<number> | null;
  batch: number;
  numQoHeads: number;
  numKvHeads: number;
  headDim: number;
  ldQ: number;
  ldK: number;
  ldV: number;
  smScale: number;
  /** > 0: sliding window (key j visible only if j > p - window); 0 = none */
  window: number;
  causal: boolean;
  round?: Round;
}

/**
 * Ragged prefill attention (kernels.inc attention_prefill). Query i of sequence b has position
 * p = kvLen_b - qLen_b + i; key j is visible iff causal: (j <= p or j <= kvLast[query]) and
 * (window == 0 or j > p - window); non-causal: every key of b. GQA: qo head h reads kv head
 * h / (numQoHeads / numKvHeads). Returns out: [totalQ, numQoHeads, headDim] contiguous.
 */
export function attentionPrefill(a: PrefillArgs): Float32Array {
  const round = a.round ?? roundF32;
  const D = a.headDim;
  const group = a.numQoHeads / a.numKvHeads;
  const q0 = a.qoIndptr[0]!;
  const totalQ = a.qoIndptr[a.batch]! - q0;
  const out = new Float32Array(totalQ * a.numQoHeads * D);
  for (let b = 0; b < a.batch; b++) {
    const qBeg = a.qoIndptr[b]!;
    const qLen = a.qoIndptr[b + 1]! - qBeg;
    const kBeg = a.kvIndptr[b]!;
    const kvLen = a.kvIndptr[b + 1]! - kBeg;
    for (let i = 0; i < qLen; i++) {
      const t = qBeg + i;
      const p = kvLen - qLen + i;
      for (let h = 0; h < a.numQoHeads; h++) {
        const hk = Math.floor(h / group);
        const keys: { k: number; v: number }[] = [];
        for (let j = 0; j < kvLen; j++) {
          let visible = true;
          if (a.causal) {
            visible = j <= p || (a.kvLast != null && j <= a.kvLast[t]!);
            if (a.window > 0 && !(j > p - a.window)) visible = false;
          }
          if (visible)
            keys.push({ k: (kBeg + j) * a.ldK + hk * D, v: (kBeg + j) * a.ldV + hk * D });
        }
        attendOne(
          a.q,
          t * a.ldQ + h * D,
          keys,
          a.k,
          a.v,
          D,
          a.smScale,
          round,
          out,
          ((t - q0) * a.numQoHeads + h) * D,
        );
      }
    }
  }
  return out;
}

/** Arguments of {@link attentionDecode}. */
export interface DecodeArgs {
  /** [batch, numQoHeads, headDim] */
  q: ArrayLike<number>;
  /** [numPages, pageSize, numKvHeads, headDim] (NHD) */
  kCache: ArrayLike<number>;
  /** [numPages, pageSize, numKvHeads, headDim] (NHD) */
  vCache: ArrayLike<number>;
  /** [batch + 1]: sequence b's pages are kvIndices[kvIndptr[b] .. kvIndptr[b+1]) */
  kvIndptr: ArrayLike<number>;
  kvIndices: ArrayLike<number>;
  /** [batch]: tokens of b = the first kvLen[b] slots of its page list */
  kvLen: ArrayLike<number>;
  batch: number;
  numQoHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  smScale: number;
  /** > 0: only the last `window` of the kvLen tokens are visible */
  window: number;
  round?: Round;
}

/**
 * Paged decode attention (kernels.inc attention_decode): one query per sequence.
 * Returns out: [batch, numQoHeads, headDim].
 */
export function attentionDecode(a: DecodeArgs): Float32Array {
  const round = a.round ?? roundF32;
  const D = a.headDim;
  const group = a.numQoHeads / a.numKvHeads;
  const out = new Float32Array(a.batch * a.numQoHeads * D);
  for (let b = 0; b < a.batch; b++) {
    const len = a.kvLen[b]!;
    const first = a.window > 0 ? Math.max(0, len - a.window) : 0;
    for (let h = 0; h < a.numQoHeads; h++) {
      const hk = Math.floor(h / group);
      const keys: { k: number; v: number }[] = [];
      for (let s = first; s < len; s++) {
        const page = a.kvIndices[a.kvIndptr[b]! + Math.floor(s / a.pageSize)]!;
        const off = ((page * a.pageSize + (s % a.pageSize)) * a.numKvHeads + hk) * D;
        keys.push({ k: off, v: off });
      }
      const o = (b * a.numQoHeads + h) * D;
      attendOne(a.q, o, keys, a.kCache, a.vCache, D, a.smScale, round, out, o);
    }
  }
  return out;
}

/**
 * Embedding gather with scale: out[t, :] = round(table[ids[t], :] * s); an id outside
 * [0, vocab) gives a row of NaN. ids: [n]; table: [vocab, dim] (decoded values) → [n, dim].
 */
export function embedding(
  ids: ArrayLike<number>,
  table: ArrayLike<number>,
  n: number,
  dim: number,
  vocab: number,
  s: number,
  round: Round = roundF32,
): Float32Array {
  const out = new Float32Array(n * dim);
  for (let t = 0; t < n; t++) {
    const id = ids[t]!;
    for (let d = 0; d < dim; d++)
      out[t * dim + d] = id >= 0 && id < vocab ? round(table[id * dim + d]! * s) : NaN;
  }
  return out;
}

/**
 * Row scatter (copy_rows): dst row dstRows[i] <- src row i; dstRows[i] < 0 skips. Works on bytes.
 * src: [n, ldSrcBytes] bytes; dst: modified in place.
 */
export function copyRows(
  src: Uint8Array,
  dst: Uint8Array,
  dstRows: ArrayLike<number>,
  n: number,
  rowBytes: number,
  ldSrcBytes: number,
): void {
  for (let i = 0; i < n; i++) {
    const r = dstRows[i]!;
    if (r < 0) continue;
    dst.set(src.subarray(i * ldSrcBytes, i * ldSrcBytes + rowBytes), r * rowBytes);
  }
}

// ---------------------------------------------------------------------------------------------
// Vision encoder: bias epilogue, patches, pooling
// ---------------------------------------------------------------------------------------------

/**
 * Linear-layer epilogue, rounding after each step: y = round(x + bias); y = round(gelu(y)) when
 * gelu; out = round(residual + y) when a residual is given. x, residual: [rows, cols]; bias: [cols].
 */
export function biasAdd(
  x: ArrayLike<number>,
  bias: ArrayLike<number>,
  residual: ArrayLike<number> | null,
  rows: number,
  cols: number,
  gelu: boolean,
  round: Round = roundF32,
): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      let y = round(x[i]! + bias[c]!);
      if (gelu) y = round(geluTanh(y));
      out[i] = residual ? round(residual[i]! + y) : y;
    }
  return out;
}

/**
 * Conv2d-with-stride-=-kernel patches as rows: pixels [n, C, H, W] → [n, (H/p)(W/p), C·p·p], each
 * row ordered (c, ky, kx) like a flattened Conv2d weight.
 */
export function patchify(
  pixels: ArrayLike<number>,
  n: number,
  C: number,
  H: number,
  W: number,
  p: number,
  round: Round = roundF32,
): Float32Array {
  const gy = H / p;
  const gx = W / p;
  const row = C * p * p;
  const out = new Float32Array(n * gy * gx * row);
  for (let i = 0; i < n; i++)
    for (let py = 0; py < gy; py++)
      for (let px = 0; px < gx; px++) {
        const base = ((i * gy + py) * gx + px) * row;
        for (let c = 0; c < C; c++)
          for (let ky = 0; ky < p; ky++)
            for (let kx = 0; kx < p; kx++)
              out[base + (c * p + ky) * p + kx] = round(
                pixels[((i * C + c) * H + py * p + ky) * W + px * p + kx]!,
              );
      }
  return out;
}

/** AvgPool2d (kernel = stride = k) over a square grid of rows: x [n, side², C] → [n, (side/k)², C]. */
export function avgPool2d(
  x: ArrayLike<number>,
  n: number,
  side: number,
  C: number,
  k: number,
  round: Round = roundF32,
): Float32Array {
  const os = side / k;
  const out = new Float32Array(n * os * os * C);
  for (let i = 0; i < n; i++)
    for (let oy = 0; oy < os; oy++)
      for (let ox = 0; ox < os; ox++)
        for (let c = 0; c < C; c++) {
          let s = 0;
          for (let dy = 0; dy < k; dy++)
            for (let dx = 0; dx < k; dx++)
              s += x[((i * side + oy * k + dy) * side + ox * k + dx) * C + c]!;
          out[((i * os + oy) * os + ox) * C + c] = round(s / (k * k));
        }
  return out;
}

/**
 * Per-head RMSNorm of q and k, then RoPE, v passed through, from fused projection rows: the
 * composition rmsnorm → rope of the plain references above (HF Gemma3Attention's q_norm/k_norm
 * then apply_rotary_pos_emb, each result rounded as those functions round).
 * qkv: [tokens, (hq + 2·hkv)·headDim] rows [q | k | v] → [q' [tokens, hq, headDim], k', v].
 */
export function qkNormRope(
  qkv: ArrayLike<number>,
  qW: ArrayLike<number>,
  kW: ArrayLike<number>,
  positions: ArrayLike<number>,
  tokens: number,
  hq: number,
  hkv: number,
  headDim: number,
  eps: number,
  base: number,
  scale: number,
  round: Round = roundF32,
): Float32Array[] {
  const width = (hq + 2 * hkv) * headDim;
  // Columns [h0·D, (h0 + h)·D) of every row, packed.
  const part = (h0: number, h: number) => {
    const n = h * headDim;
    return Float32Array.from({ length: tokens * n }, (_, i) => {
      const t = Math.floor(i / n);
      return qkv[t * width + h0 * headDim + (i - t * n)]!;
    });
  };
  const normRope = (x: Float32Array, w: ArrayLike<number>, h: number) =>
    rope(
      rmsnorm(x, w, tokens * h, headDim, eps, round),
      positions,
      tokens,
      h,
      headDim,
      h * headDim,
      base,
      scale,
      round,
    );
  return [normRope(part(0, hq), qW, hq), normRope(part(hq, hkv), kW, hkv), part(hq + hkv, hkv)];
}

/**
 * residual' = rmsnormAdd(x, w, residual), then out = rmsnorm(residual', wNext) (Gemma's
 * `h = h + post_norm(r); x = next_norm(h)`). Returns [residual', out].
 */
export function rmsnormAddRmsnorm(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  residual: ArrayLike<number>,
  wNext: ArrayLike<number>,
  rows: number,
  dim: number,
  eps: number,
  round: Round = roundF32,
): Float32Array[] {
  const h = rmsnormAdd(x, w, residual, rows, dim, eps, round);
  return [h, rmsnorm(h, wNext, rows, dim, eps, round)];
}
