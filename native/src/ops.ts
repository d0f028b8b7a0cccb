// The ops API: each function validates in native code (errors name the op and shapes, typed by
// errors.ts), enqueues on the tensors' device and returns at once. Outputs are passed in with
// `out` (no allocation on hot paths) or allocated here when omitted.
import { addon } from "./addon.js";
import { native } from "./errors.js";
import { Tensor, type Shape } from "./tensor.js";
import type { Device } from "./device.js";
import type { DTypeName, KQuantName } from "./dtype.js";

const outOr = (out: Tensor | undefined, shape: Shape, dtype: DTypeName, like: Tensor): Tensor =>
  out ?? Tensor.empty(shape, dtype, like.device);
const lead = (t: Tensor): number[] => t.shape.slice(0, -1) as number[];
const lastDim = (t: Tensor): number => t.shape[t.shape.length - 1] ?? 1;
const rowCount = (t: Tensor): number => lead(t).reduce((a, b) => a * b, 1);

/**
 * y = x·Wᵀ (float32 accumulate).
 * @param x [..., K] f32|bf16
 * @param w [N, K] f32|bf16|q8_0|q4_0|fp8_e4m3|q4_k|q5_k|q6_k, or q4_0s/q8_0s on CUDA (K % 32 / % 256 for the blocks)
 * @param opts.scale [N] f32, required for fp8_e4m3 weights (per-row scale)
 * @returns y [..., N] with x's dtype
 */
export function matmul(x: Tensor, w: Tensor, opts: { scale?: Tensor; out?: Tensor } = {}): Tensor {
  const y = outOr(opts.out, [...lead(x), w.shape[0] ?? 0], x.dtypeName, x);
  native(() => addon().matmul(x, w, opts.scale ?? null, y));
  return y;
}

/** Gemma RMSNorm: x·rsqrt(mean(x²)+eps)·(1+w). x, out: [..., D]; w: [D]. `out` may be x. */
export function rmsnorm(x: Tensor, w: Tensor, eps: number, out?: Tensor): Tensor {
  const y = outOr(out, x.shape, x.dtypeName, x);
  native(() => addon().rmsnorm(x, w, y, eps));
  return y;
}

/** residual += rmsnorm(x, w) with HF's rounding (Gemma's `h = h + post_norm(r)`). Returns residual. */
export function rmsnormAdd(x: Tensor, w: Tensor, residual: Tensor, eps: number): Tensor {
  native(() => addon().rmsnormAdd(x, w, residual, eps));
  return residual;
}

/** LayerNorm with bias (biased variance). x, out: [..., D]; w, b: [D]. */
export function layernorm(x: Tensor, w: Tensor, b: Tensor, eps: number, out?: Tensor): Tensor {
  const y = outOr(out, x.shape, x.dtypeName, x);
  native(() => addon().layernorm(x, w, b, y, eps));
  return y;
}

/**
 * gelu_tanh(gate) · up. gate, up: [..., F]; or `up` null and gate [..., 2F] = [gate | up] per row.
 * With `proj` (that fused form): `gate` is first computed as `matmul(proj.x, proj.w)` ([..., K] and
 * [2F, K], `proj.scale` as matmul's), with the same bits as matmul then this op (kernels.inc
 * matmul_gelu_mul). On CUDA at decode that is one GEMV that writes only the result: `gate` is then
 * scratch left unwritten. x, gate and out must not overlap.
 * @returns [..., F]
 */
export function geluMul(
  gate: Tensor,
  up: Tensor | null,
  out?: Tensor,
  proj?: { x: Tensor; w: Tensor; scale?: Tensor },
): Tensor {
  const F = up ? lastDim(gate) : lastDim(gate) / 2;
  const y = outOr(out, [...lead(gate), F], gate.dtypeName, gate);
  native(() =>
    proj
      ? addon().geluMul(gate, up, y, proj.x, proj.w, proj.scale ?? null)
      : addon().geluMul(gate, up, y),
  );
  return y;
}

/** a + b elementwise (same shape and dtype). `out` may be a or b. */
export function add(a: Tensor, b: Tensor, out?: Tensor): Tensor {
  const y = outOr(out, a.shape, a.dtypeName, a);
  native(() => addon().add(a, b, y));
  return y;
}

/** x · s elementwise. */
export function scale(x: Tensor, s: number, out?: Tensor): Tensor {
  const y = outOr(out, x.shape, x.dtypeName, x);
  native(() => addon().scale(x, y, s));
  return y;
}

/**
 * Embedding gather with scale: out[t] = table[ids[t]] · s. Ids outside [0, V) give NaN rows.
 * An fp8_e4m3 table is e4m3 · s (the dequantizing row gather of an fp8 KV cache).
 * @param ids [n] i32
 * @param table [V, D] f32|bf16|q8_0|q4_0|fp8_e4m3|q4_k|q5_k|q6_k, or q4_0s/q8_0s on CUDA
 * @returns [n, D] of `dtype` (default bf16 for bf16/quantized tables, else f32)
 */
export function embedding(
  ids: Tensor,
  table: Tensor,
  s: number,
  opts: { out?: Tensor; dtype?: DTypeName } = {},
): Tensor {
  const dtype = opts.dtype ?? (table.dtypeName === "f32" ? "f32" : "bf16");
  const y = outOr(opts.out, [ids.numel, table.shape[1] ?? 0], dtype, ids);
  native(() => addon().embedding(ids, table, y, s));
  return y;
}

/** Row softmax in float32. x, out: [..., C]. */
export function softmax(x: Tensor, out?: Tensor): Tensor {
  const y = outOr(out, x.shape, x.dtypeName, x);
  native(() => addon().softmax(x, y));
  return y;
}

/** First index of the row maximum. x: [..., C] → [...] i32. */
export function argmax(x: Tensor, out?: Tensor): Tensor {
  const y = outOr(out, [rowCount(x)], "i32", x);
  native(() => addon().argmax(x, y));
  return y;
}

/** Row top-k sorted descending (ties → lower index). x: [..., C] → values [rows, k] f32, indices [rows, k] i32. */
export function topk(
  x: Tensor,
  k: number,
  out?: { values: Tensor; indices: Tensor },
): { values: Tensor; indices: Tensor } {
  const values = out?.values ?? Tensor.empty([rowCount(x), k], "f32", x.device);
  const indices = out?.indices ?? Tensor.empty([rowCount(x), k], "i32", x.device);
  native(() => addon().topk(x, values, indices));
  return { values, indices };
}

/**
 * RoPE in place, rotate-half layout over the full head_dim; positions read from device memory.
 * @param x [tokens, heads, head_dim] f32|bf16
 * @param positions [tokens] i32
 * @param scale linear scaling factor (inv_freq / scale); 1 = none
 */
export function rope(x: Tensor, positions: Tensor, base: number, scale = 1): Tensor {
  native(() => addon().rope(x, positions, base, scale));
  return x;
}

/** RMSNorm and RoPE parameters of qkNormRope (Gemma: rms_norm_eps, the layer's rope base/scale). */
export interface QkNormRopeParams {
  eps: number;
  base: number;
  /** linear RoPE scaling factor (1 = none) */
  scale?: number;
}

/**
 * Per-head RMSNorm of q and k (weights qW, kW), then RoPE at `positions`: rmsnorm then rope in one
 * kernel (HF Gemma3Attention's q_norm, k_norm, apply_rotary_pos_emb), with v passed through.
 * Fused form: `qkv` [n, (Hq + 2·Hkv)·D] holds one projection's [q | k | v] rows; the results go to
 * `out.q` [n, Hq, D], `out.k` [n, Hkv, D] and `out.v` [n, Hkv, D] (contiguous, overlapping nothing).
 * With `out.kvRows` ([n] i32), `out.k` and `out.v` are a layer's KV storage [capacity, Hkv, D] and
 * token t's k and v go to row kvRows[t] (copyRows' rule: < 0 skipped), so the cache write needs no
 * kernel of its own.
 * With `proj` (fused form), `qkv` is first computed as `matmul(proj.x, proj.w)` ([n, K] and
 * [(Hq + 2·Hkv)·D, K]), with the same bits as matmul then this op (kernels.inc
 * matmul_qk_norm_rope; GEMMA3_QKV_EPILOGUE=1 makes it one GEMV on CUDA at decode).
 * Separate form: `{ q, k }` ([n, Hq, D], [n, Hkv, D]) are normed and rotated in place.
 * @param qW [D]; kW [D]; positions [n] i32
 * @returns the normed and rotated q and k (and v in the fused form)
 */
export function qkNormRope(
  qkv: Tensor | { q: Tensor; k: Tensor },
  qW: Tensor,
  kW: Tensor,
  positions: Tensor,
  p: QkNormRopeParams,
  out?: { q: Tensor; k: Tensor; v?: Tensor; kvRows?: Tensor },
  proj?: { x: Tensor; w: Tensor },
): { q: Tensor; k: Tensor; v?: Tensor } {
  const scale = p.scale ?? 1;
  if (!(qkv instanceof Tensor)) {
    native(() =>
      addon().qkNormRope(null, qkv.q, qkv.k, null, qW, kW, positions, p.eps, p.base, scale),
    );
    return qkv;
  }
  if (!out) throw new TypeError("qkNormRope: the fused form needs out { q, k, v? }");
  native(() =>
    addon().qkNormRope(
      qkv,
      out.q,
      out.k,
      out.v ?? null,
      qW,
      kW,
      positions,
      p.eps,
      p.base,
      scale,
      out.kvRows ?? null,
      proj?.x ?? null,
      proj?.w ?? null,
    ),
  );
  return out;
}

/**
 * residual += rmsnorm(x, w) (as rmsnormAdd), then rmsnorm(residual, wNext) into `out`: Gemma's
 * `h = h + post_norm(r); x = next_norm(h)` in one kernel.
 * @param x [..., D]; residual [..., D] (updated); w, wNext [D]
 * @returns out [..., D] (must not overlap x or residual)
 */
export function rmsnormAddRmsnorm(
  x: Tensor,
  w: Tensor,
  residual: Tensor,
  wNext: Tensor,
  eps: number,
  out?: Tensor,
): Tensor {
  const y = outOr(out, residual.shape, residual.dtypeName, residual);
  native(() => addon().rmsnormAddRmsnorm(x, w, residual, wNext, y, eps));
  return y;
}

export interface PrefillOptions {
  /** Softmax scale (Gemma: query_pre_attn_scalar ** -0.5). */
  smScale: number;
  /** Causal (default) or full bidirectional attention within each sequence. */
  causal?: boolean;
  /** Sliding window: key j visible to query position p iff j > p - window (0 = none). */
  window?: number;
  /** [total_q] i32: the last key each query may see beyond causality (image blocks); -1 = none. */
  kvLast?: Tensor | null;
  /** Upper bound of any sequence's query count (defaults to total_q). */
  maxQLen?: number;
  out?: Tensor;
}

/**
 * Prefill attention over a ragged batch ("append": each sequence's queries are its last keys).
 * @param q [total_q, num_qo_heads, head_dim]
 * @param k [total_kv, num_kv_heads, head_dim]
 * @param v [total_kv, num_kv_heads, head_dim]
 * @param qoIndptr [batch + 1] i32; kvIndptr [batch + 1] i32
 * @returns out [total_q, num_qo_heads, head_dim]
 */
export function attentionPrefill(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  qoIndptr: Tensor,
  kvIndptr: Tensor,
  o: PrefillOptions,
): Tensor {
  const y = outOr(o.out, q.shape, q.dtypeName, q);
  const p = {
    maxQLen: o.maxQLen ?? 0,
    smScale: o.smScale,
    window: o.window ?? 0,
    causal: o.causal ?? true,
  };
  native(() => addon().attentionPrefill(q, k, v, y, qoIndptr, kvIndptr, o.kvLast ?? null, p));
  return y;
}

export interface DecodeOptions {
  smScale: number;
  /**
   * fp8_e4m3 caches (per-tensor scales, as vLLM's fp8 KV cache): a key element is e4m3 · kScale,
   * a value element e4m3 · vScale. Default 1; must stay 1 for caches of q's dtype.
   */
  kScale?: number;
  vScale?: number;
  /** Only the last `window` tokens of each sequence are visible (0 = all). */
  window?: number;
  /** Upper bound of kv_len (sizes split-KV); defaults to the cache's capacity. */
  maxKvLen?: number;
  /** f32 scratch for split-KV (see attentionDecodeWorkspaceFloats); null = no split. */
  workspace?: Tensor | null;
  out?: Tensor;
  /**
   * The attention's prologue, run by the op itself: `q` is first written as qkNormRope's fused
   * form of `qkv` (q into `q`, k and v into the caches at `kvRows`), then attended. The same bits
   * as qkNormRope then attentionDecode (kernels.inc attention_decode_qkv; on CUDA two launches, or
   * one kernel with GEMMA3_DECODE_PROLOGUE=1, measured slower). Caches of q's dtype only (kScale,
   * vScale 1); no sequence's new row may be visible to another sequence of the batch.
   */
  prologue?: DecodePrologue;
}

/** What attentionDecode's prologue makes q and the new K/V rows from. */
export interface DecodePrologue {
  /** [batch, (Hq + 2·Hkv)·D]: the step's [q | k | v] projection rows, one token a sequence */
  qkv: Tensor;
  qW: Tensor;
  kW: Tensor;
  /** [batch] i32 */
  positions: Tensor;
  /** [batch] i32: each token's row of the caches seen as [pages · page_size, Hkv, D] (< 0: none) */
  kvRows: Tensor;
  rope: QkNormRopeParams;
}

/**
 * Decode attention: one query per sequence over a paged NHD cache. A ring buffer of W slots is
 * one page of page_size W with kvLen = min(n, W).
 * @param q [batch, num_qo_heads, head_dim] f32|bf16
 * @param kCache [num_pages, page_size, num_kv_heads, head_dim] of q's dtype or fp8_e4m3 (vCache the
 *   same)
 * @param kvIndptr [batch + 1] i32; kvIndices [nnz_pages] i32; kvLen [batch] i32
 */
export function attentionDecode(
  q: Tensor,
  kCache: Tensor,
  vCache: Tensor,
  kvIndptr: Tensor,
  kvIndices: Tensor,
  kvLen: Tensor,
  o: DecodeOptions,
): Tensor {
  const y = outOr(o.out, q.shape, q.dtypeName, q);
  const p = {
    maxKvLen: o.maxKvLen ?? 0,
    smScale: o.smScale,
    window: o.window ?? 0,
    kScale: o.kScale ?? 1,
    vScale: o.vScale ?? 1,
  };
  const pro = o.prologue;
  if (pro) {
    const { eps, base, scale = 1 } = pro.rope;
    const ws = o.workspace ?? null;
    const args = [pro.qkv, q, pro.qW, pro.kW, pro.positions, pro.kvRows, kCache, vCache] as const;
    native(() =>
      addon().attentionDecodeQkv(...args, y, kvIndptr, kvIndices, kvLen, ws, {
        ...p,
        eps,
        base,
        ropeScale: scale,
      }),
    );
    return y;
  }
  native(() =>
    addon().attentionDecode(
      q,
      kCache,
      vCache,
      y,
      kvIndptr,
      kvIndices,
      kvLen,
      o.workspace ?? null,
      p,
    ),
  );
  return y;
}

/** Floats of workspace attentionDecode can use to split long sequences on `device` (0 on CPU). */
export function attentionDecodeWorkspaceFloats(q: Tensor, maxKvLen: number): number {
  const [batch = 0, heads = 0, dim = 0] = q.shape;
  return decodeWorkspaceFloats(q.device, batch, heads, dim, maxKvLen);
}

/** The same, from the shapes alone (to size a workspace before any q exists). */
export function decodeWorkspaceFloats(
  device: Device,
  batch: number,
  numQoHeads: number,
  headDim: number,
  maxKvLen: number,
): number {
  return native(() =>
    addon().attentionDecodeWorkspaceFloats(device.index, batch, numQoHeads, headDim, maxKvLen),
  );
}

/**
 * Converts between f32, bf16 and f16 (round to nearest even), and f32|bf16 to fp8_e4m3 (round to
 * nearest even, saturating at ±448: KV cache writes).
 */
export function cast(src: Tensor, dtype: DTypeName, out?: Tensor): Tensor {
  const y = outOr(out, src.shape, dtype, src);
  native(() => addon().cast(src, y));
  return y;
}

/**
 * Row-wise quantization (llama.cpp reference rules for q8_0/q4_0 and, without an importance matrix,
 * the K-quants q4_k/q5_k/q6_k; fp8 e4m3 with a per-row scale).
 * @param src [..., C] f32|bf16 (C % 32 == 0 for q8_0/q4_0, C % 256 == 0 for the K-quants)
 * @returns data [..., C] of `dtype`, and scale [rows] f32 for fp8_e4m3
 */
export function quantize(
  src: Tensor,
  dtype: "q8_0" | "q4_0" | "fp8_e4m3" | KQuantName,
  out?: { data: Tensor; scale?: Tensor },
): { data: Tensor; scale?: Tensor } {
  const data = out?.data ?? Tensor.empty(src.shape, dtype, src.device);
  const scale =
    dtype === "fp8_e4m3"
      ? (out?.scale ?? Tensor.empty([rowCount(src)], "f32", src.device))
      : undefined;
  native(() => addon().quantize(src, data, scale ?? null));
  return scale ? { data, scale } : { data };
}

/** Inverse of quantize. src [..., C] q8_0|q4_0|fp8_e4m3|q4_k|q5_k|q6_k → [..., C] of `dtype` (f32|bf16). */
export function dequantize(
  src: Tensor,
  dtype: "f32" | "bf16" = "f32",
  opts: { scale?: Tensor; out?: Tensor } = {},
): Tensor {
  const y = outOr(opts.out, src.shape, dtype, src);
  native(() => addon().dequantize(src, opts.scale ?? null, y));
  return y;
}

/**
 * GGUF blocks ↔ their CUDA split row layout: q4_0 ↔ q4_0s, q8_0 ↔ q8_0s (each row's quant runs,
 * then its f16 scales; the same bytes per row, so row views and row concatenation still hold).
 * matmul and embedding take the split layouts on CUDA only, where the GEMV reads a block with
 * aligned 16-byte loads.
 * @param src [..., C] q4_0, q4_0s, q8_0 or q8_0s (C % 32 == 0)
 * @returns [..., C] in `dtype` (its pair), a new tensor unless `out` is given (no overlap)
 */
export function repack(
  src: Tensor,
  dtype: "q4_0" | "q4_0s" | "q8_0" | "q8_0s",
  out?: Tensor,
): Tensor {
  const y = outOr(out, src.shape, dtype, src);
  native(() => addon().repack(src, y));
  return y;
}

/** dst[dstRows[i]] = src[i] along the first dim (KV cache writes); negative rows are skipped. */
export function copyRows(src: Tensor, dst: Tensor, dstRows: Tensor): Tensor {
  native(() => addon().copyRows(src, dst, dstRows));
  return dst;
}

/**
 * Linear-layer epilogue (a Linear with bias, then what follows it in a vision encoder), rounding to
 * the dtype after each step as HF does: y = x + bias; y = gelu_tanh(y) when `gelu`; then
 * residual + y when a residual is given.
 * @param x [..., N] f32|bf16
 * @param bias [N]
 * @param opts.residual [..., N] (may be `out`); opts.out may be x
 * @returns out [..., N]
 */
export function biasAdd(
  x: Tensor,
  bias: Tensor,
  opts: { gelu?: boolean; residual?: Tensor; out?: Tensor } = {},
): Tensor {
  const y = outOr(opts.out, x.shape, x.dtypeName, x);
  native(() => addon().biasAdd(x, bias, opts.residual ?? null, y, opts.gelu === true));
  return y;
}

/**
 * Image patches as rows: the im2col of a Conv2d with kernel = stride = patch, in the order of its
 * weight [out, C, patch, patch] flattened (so the convolution is matmul(patches, weight)).
 * @param pixels [n, C, H, W] f32
 * @returns [n, (H/patch)·(W/patch), C·patch·patch] of `dtype`
 */
export function patchify(
  pixels: Tensor,
  patch: number,
  opts: { dtype?: "f32" | "bf16"; out?: Tensor } = {},
): Tensor {
  const [n = 0, c = 0, h = 0, w = 0] = pixels.shape;
  const shape = [n, Math.floor(h / patch) * Math.floor(w / patch), c * patch * patch];
  const y = outOr(opts.out, shape, opts.dtype ?? "f32", pixels);
  native(() => addon().patchify(pixels, y, patch));
  return y;
}

/**
 * Average pool of a square grid of rows (AvgPool2d, kernel = stride = k), float32 sums.
 * @param x [n, side², C] f32|bf16
 * @returns [n, (side/k)², C]
 */
export function avgPool2d(x: Tensor, k: number, out?: Tensor): Tensor {
  const [n = 0, p = 0, c = 0] = x.shape;
  const side = Math.round(Math.sqrt(p));
  const y = outOr(out, [n, Math.floor(side / k) ** 2, c], x.dtypeName, x);
  native(() => addon().avgPool2d(x, y, k));
  return y;
}

/**
 * Prefill attention on a fused projection: each row of qkv is [q | k | v] (a vision encoder's one
 * QKV matmul); queries and keys index the same rows. Options as attentionPrefill (no kvLast).
 * @param qkv [total, (numQoHeads + 2·numKvHeads)·head_dim]
 * @param qoIndptr [batch + 1] i32; kvIndptr [batch + 1] i32 (the same rows)
 * @returns out [total, numQoHeads, head_dim]
 */
export function attentionPrefillQkv(
  qkv: Tensor,
  numQoHeads: number,
  numKvHeads: number,
  qoIndptr: Tensor,
  kvIndptr: Tensor,
  o: Omit<PrefillOptions, "kvLast">,
): Tensor {
  const [total = 0, width = 0] = qkv.shape;
  const d = width / (numQoHeads + 2 * numKvHeads);
  const y = outOr(o.out, [total, numQoHeads, d], qkv.dtypeName, qkv);
  const p = {
    maxQLen: o.maxQLen ?? 0,
    smScale: o.smScale,
    window: o.window ?? 0,
    causal: o.causal ?? true,
  };
  native(() => addon().attentionPrefillQkv(qkv, y, qoIndptr, kvIndptr, numQoHeads, numKvHeads, p));
  return y;
}
