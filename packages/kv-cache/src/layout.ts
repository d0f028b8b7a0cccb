// What the KV cache needs to know of a model: which layers slide and how big a token's K/V is.
// Gemma3Config (@gemma3/model) satisfies AttentionLayout structurally, so this package never
// imports the model (the model depends on the cache, not the reverse). Pure TS: no addon.

/** Attention kind of one layer, with HF's names: "sliding" (local, windowed) or "full" (global). */
export type KVLayerType = "sliding" | "full";

/** The attention shape of a decoder, in HF config names. */
export interface AttentionLayout {
  /** layer_types: one entry per decoder layer */
  readonly layerTypes: readonly KVLayerType[];
  /** num_key_value_heads */
  readonly numKeyValueHeads: number;
  /** head_dim */
  readonly headDim: number;
  /** sliding_window: a query at p sees keys j with p − window < j ≤ p on sliding layers */
  readonly slidingWindow: number;
}

/** KV element types the estimator knows; the runtime cache stores bf16 or f32. */
export type KVDType = "bf16" | "f32" | "fp8";

export const KV_DTYPE_BYTES: Readonly<Record<KVDType, number>> = Object.freeze({
  f32: 4,
  bf16: 2,
  fp8: 1,
});

/** Bytes one token's K and V take in one layer: 2 · num_kv_heads · head_dim · element bytes. */
export function kvBytesPerLayerToken(layout: AttentionLayout, dtype: KVDType): number {
  return 2 * layout.numKeyValueHeads * layout.headDim * KV_DTYPE_BYTES[dtype];
}

/** Counts of global ("full") and local ("sliding") layers. */
export function layerCounts(layout: AttentionLayout): { global: number; local: number } {
  const global = layout.layerTypes.filter((t) => t === "full").length;
  return { global, local: layout.layerTypes.length - global };
}

/**
 * Ring geometry of the sliding layers for sequences of up to `maxSeqLen` tokens.
 * window: W = min(sliding_window, maxSeqLen), the tokens a query can see (itself included).
 * slots: S = min(W − 1 + rollback, maxSeqLen). A step needs the W − 1 tokens before its first
 * query, so S = W slots allow rolling back 1 token exactly; each extra slot allows one more.
 */
export function ringGeometry(
  layout: AttentionLayout,
  maxSeqLen: number,
  rollback = 1,
): { window: number; slots: number } {
  const window = Math.min(layout.slidingWindow, maxSeqLen);
  const slots = Math.min(window - 1 + Math.max(rollback, 1), maxSeqLen);
  return { window, slots };
}

/** Throws a RangeError unless `v` is an integer >= min (option validation). */
export function checkInt(v: number, what: string, min: number): number {
  if (!Number.isInteger(v) || v < min)
    throw new RangeError(`${what} must be an integer >= ${min}, got ${v}`);
  return v;
}

/** Validates a layout (every count positive, known layer types). */
export function checkLayout(layout: AttentionLayout): void {
  checkInt(layout.numKeyValueHeads, "num_key_value_heads", 1);
  checkInt(layout.headDim, "head_dim", 1);
  checkInt(layout.slidingWindow, "sliding_window", 1);
  if (layout.layerTypes.length === 0) throw new RangeError("layer_types is empty");
  for (const t of layout.layerTypes)
    if (t !== "sliding" && t !== "full")
      throw new RangeError(`layer_types: unknown layer type "${String(t)}"`);
}
