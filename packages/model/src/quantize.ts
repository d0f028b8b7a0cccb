// Weight quantization for the linear layers (and, opt-in, the embedding / output head), and the
// tools to measure what it costs.
//   q8_0 / q4_0: GGUF blocks (llama.cpp reference rules, ops.quantize on the weight's device).
//   q4_k / q5_k / q6_k: GGUF K-quant super-blocks of 256 (llama.cpp's reference quantizers, as
//                llama-quantize without an importance matrix; ops.quantize on the weight's device).
//   fp8_e4m3:    one byte per weight plus a per-row f32 scale (y = (x·qᵀ) · scale[row]).
// fp8 weights are ScaledWeight tensors: the bytes of the fp8 matrix with the scale attached, so
// they travel in LayerWeights like any Tensor and dispose() frees both. `layerOps.matmul` passes
// the scale of a ScaledWeight automatically (the native ops.matmul must be given it).
import { Tensor, blockSize, f16ToF32, ops as nativeOps } from "@gemma3/native";

/** Weight formats the loader can quantize to. */
export type WeightQuantization = "q8_0" | "q4_0" | "fp8_e4m3" | "q4_k" | "q5_k" | "q6_k";
export const WEIGHT_QUANTIZATIONS: readonly WeightQuantization[] = [
  "q8_0",
  "q4_0",
  "fp8_e4m3",
  "q4_k",
  "q5_k",
  "q6_k",
];

/**
 * Formats the embedding table (and the tied output head) can be quantized to: the block formats.
 * Not fp8_e4m3: the embedding gather applies one per-tensor fp8 scale, quantize-on-load makes one
 * per row.
 */
export type HeadQuantization = Exclude<WeightQuantization, "fp8_e4m3">;
export const HEAD_QUANTIZATIONS: readonly HeadQuantization[] = [
  "q8_0",
  "q4_0",
  "q4_k",
  "q5_k",
  "q6_k",
];

/** An fp8_e4m3 weight [N, K] (a view of `data`) with its per-row scale [N] f32. */
export class ScaledWeight extends Tensor {
  private constructor(
    /** The owning fp8 tensor. */
    readonly data: Tensor,
    /** [N] f32: row n of the weight is fp8 row n · scale[n]. */
    readonly scale: Tensor,
  ) {
    super(data.storage, data.byteOffset, data.shape, data.dtypeName, data.device, data);
  }

  /** Takes ownership of both tensors. */
  static of(data: Tensor, scale: Tensor): ScaledWeight {
    if (scale.dtypeName !== "f32" || scale.numel !== (data.shape[0] ?? 1))
      throw new RangeError(`ScaledWeight: scale ${scale} does not match weight ${data}`);
    return new ScaledWeight(data, scale);
  }

  override dispose(): void {
    super.dispose();
    this.data.dispose();
    this.scale.dispose();
  }
}

/** The per-row scale a matmul needs for `w` (fp8 weights), else undefined. */
export function scaleOf(w: Tensor): Tensor | undefined {
  return w instanceof ScaledWeight ? w.scale : undefined;
}

/**
 * @gemma3/native's ops with a matmul that applies a ScaledWeight's scale. A layer that imports
 * `layerOps as ops` from here instead of `ops` from @gemma3/native runs fp8 weights correctly and
 * nothing else changes.
 */
export const layerOps: typeof nativeOps = {
  ...nativeOps,
  matmul: (x, w, opts = {}) => nativeOps.matmul(x, w, { ...opts, scale: opts.scale ?? scaleOf(w) }),
  geluMul: (gate, up, out, proj) =>
    nativeOps.geluMul(gate, up, out, proj && { ...proj, scale: proj.scale ?? scaleOf(proj.w) }),
};

/**
 * Whether a [N, K] weight can take `type`: block formats need whole blocks per row (32 elements,
 * 256 for the K-quants). The loaders keep the others in the compute dtype, as llama.cpp's converter
 * falls back to F16.
 */
export function canQuantize(shape: readonly number[], type: WeightQuantization): boolean {
  return type === "fp8_e4m3" || (shape[shape.length - 1] ?? 0) % blockSize(type) === 0;
}

/**
 * Quantizes a float weight [N, K] (f32 or bf16, any device) on its device.
 * @returns a new owning tensor: q8_0/q4_0 blocks, or a ScaledWeight for fp8_e4m3 (caller disposes;
 *   `w` is left as it is)
 */
export function quantizeWeight(w: Tensor, type: WeightQuantization): Tensor {
  const { data, scale } = nativeOps.quantize(w, type);
  return scale ? ScaledWeight.of(data, scale) : data;
}

/** The GGUF block dtypes `dequantizeBlocks` decodes. */
export type BlockType = "q8_0" | "q4_0" | "q4_k" | "q5_k" | "q6_k";

/**
 * Dequantizes GGUF blocks on the host (llama.cpp dequantize_row_q8_0 / q4_0 / q4_K / q5_K / q6_K;
 * float32 math as llama.cpp does it, so values equal the native dequantize).
 */
export function dequantizeBlocks(bytes: Uint8Array, type: BlockType): Float32Array {
  if (type === "q4_k" || type === "q5_k" || type === "q6_k") return dequantizeKBlocks(bytes, type);
  const bs = type === "q8_0" ? 34 : 18;
  const nb = Math.floor(bytes.length / bs);
  const out = new Float32Array(nb * 32);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < nb; b++) {
    const o = b * bs;
    const d = f16ToF32(dv.getUint16(o, true));
    if (type === "q8_0") {
      for (let i = 0; i < 32; i++) out[b * 32 + i] = d * dv.getInt8(o + 2 + i);
    } else {
      // Low nibbles are elements 0–15, high nibbles 16–31; x = (q − 8)·d.
      for (let i = 0; i < 16; i++) {
        const q = bytes[o + 2 + i]!;
        out[b * 32 + i] = ((q & 0xf) - 8) * d;
        out[b * 32 + 16 + i] = ((q >> 4) - 8) * d;
      }
    }
  }
  return out;
}

// K-quant super-blocks of 256 (ggml-common.h): q4_K / q5_K {f16 d, dmin; 12 bytes of 6-bit scales
// and mins; (q5_K: qh[32]) qs[128]}, x = (d·sc)·q − dmin·m per 32-element sub-block; q6_K
// {ql[128], qh[64], int8 scales[16], f16 d}, x = (d·sc)·(q − 32) per 16-element sub-block.
function dequantizeKBlocks(bytes: Uint8Array, type: "q4_k" | "q5_k" | "q6_k"): Float32Array {
  const f = Math.fround;
  const bs = type === "q4_k" ? 144 : type === "q5_k" ? 176 : 210;
  const nb = Math.floor(bytes.length / bs);
  const out = new Float32Array(nb * 256);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < nb; b++) {
    const o = b * bs;
    const y = b * 256;
    if (type === "q6_k") {
      const d = f16ToF32(dv.getUint16(o + 208, true));
      for (let e = 0; e < 256; e++) {
        const n = e >> 7;
        const g = (e >> 5) & 3;
        const l = e & 31;
        const lo = (bytes[o + 64 * n + 32 * (g & 1) + l]! >> (4 * (g >> 1))) & 0xf;
        const hi = (bytes[o + 128 + 32 * n + l]! >> (2 * g)) & 3;
        const sc = dv.getInt8(o + 192 + 8 * n + 2 * g + (l >> 4));
        out[y + e] = f(f(d * sc) * ((lo | (hi << 4)) - 32));
      }
      continue;
    }
    const d = f16ToF32(dv.getUint16(o, true));
    const dmin = f16ToF32(dv.getUint16(o + 2, true));
    const qs = o + (type === "q5_k" ? 48 : 16);
    for (let s = 0; s < 8; s++) {
      // get_scale_min_k4: 6-bit scale and min of sub-block s, packed in the 12 bytes at o + 4.
      const sb = o + 4;
      const sc =
        s < 4 ? bytes[sb + s]! & 63 : (bytes[sb + s + 4]! & 0xf) | ((bytes[sb + s - 4]! >> 6) << 4);
      const m =
        s < 4 ? bytes[sb + s + 4]! & 63 : (bytes[sb + s + 4]! >> 4) | ((bytes[sb + s]! >> 6) << 4);
      const a = f(d * sc);
      const bm = f(dmin * m);
      for (let l = 0; l < 32; l++) {
        let q = (bytes[qs + 32 * (s >> 1) + l]! >> (4 * (s & 1))) & 0xf;
        if (type === "q5_k") q |= ((bytes[o + 16 + l]! >> s) & 1) << 4;
        out[y + 32 * s + l] = f(f(a * q) - bm);
      }
    }
  }
  return out;
}

// ---- measuring quantization --------------------------------------------------------------------

export interface LogitComparison {
  /** Rows (token positions) compared. */
  rows: number;
  /** Mean over rows of KL(P_ref ‖ P_test), in nats (float64 log-softmax). */
  meanKL: number;
  /** Largest per-row KL. */
  maxKL: number;
  /** Fraction of rows whose argmax agrees (first index of the maximum, as ops.argmax). */
  top1Agreement: number;
  /** Largest |ref − test| over all logits. */
  maxAbsDiff: number;
}

function logSoftmaxRow(x: Float32Array, o: number, n: number, out: Float64Array): void {
  let m = -Infinity;
  for (let i = 0; i < n; i++) if (x[o + i]! > m) m = x[o + i]!;
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.exp(x[o + i]! - m);
  const lse = m + Math.log(s);
  for (let i = 0; i < n; i++) out[i] = x[o + i]! - lse;
}

function argmaxRow(x: Float32Array, o: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (x[o + i]! > x[o + best]!) best = i;
  return best;
}

/**
 * Compares logits of a quantized model (`test`) with the unquantized one (`ref`), row by row.
 * @param ref [rows, vocab] f32 logits of the reference
 * @param test [rows, vocab] f32 logits of the model under test
 */
export function compareLogits(
  ref: Float32Array,
  test: Float32Array,
  vocab: number,
): LogitComparison {
  if (ref.length !== test.length || vocab <= 0 || ref.length % vocab !== 0)
    throw new RangeError(
      `compareLogits: ${ref.length} and ${test.length} logits do not form rows of ${vocab}`,
    );
  const rows = ref.length / vocab;
  const lp = new Float64Array(vocab);
  const lq = new Float64Array(vocab);
  let sumKL = 0;
  let maxKL = 0;
  let agree = 0;
  let maxAbsDiff = 0;
  for (let r = 0; r < rows; r++) {
    const o = r * vocab;
    logSoftmaxRow(ref, o, vocab, lp);
    logSoftmaxRow(test, o, vocab, lq);
    let kl = 0;
    for (let i = 0; i < vocab; i++) {
      const p = Math.exp(lp[i]!);
      if (p > 0) kl += p * (lp[i]! - lq[i]!);
      const d = Math.abs(ref[o + i]! - test[o + i]!);
      if (!(d <= maxAbsDiff)) maxAbsDiff = Number.isNaN(d) ? Infinity : d;
    }
    kl = Math.max(0, kl); // rounding can leave a tiny negative for identical rows
    sumKL += kl;
    if (!(kl <= maxKL)) maxKL = Number.isNaN(kl) ? Infinity : kl;
    if (argmaxRow(ref, o, vocab) === argmaxRow(test, o, vocab)) agree++;
  }
  return {
    rows,
    meanKL: rows ? sumKL / rows : 0,
    maxKL,
    top1Agreement: rows ? agree / rows : 1,
    maxAbsDiff,
  };
}
