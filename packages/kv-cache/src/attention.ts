// Attention of one layer through the hybrid cache, the read/write protocol in one place:
//   decode:  scatter the new K/V into the cache, then attention_decode over its pages/ring.
//   prefill: gather the cached context K/V (ring: the W − 1 tokens before each chunk; global: all
//            of them) into [context + chunk] buffers, attention_prefill over them ("append"
//            positions, window on sliding layers; image-block spans widen the causal mask through
//            the plan's kvLast), then scatter the chunk into the cache.
//   both:    sliding layers of a cache with snapshot blocks also scatter every new token's K/V
//            into snapshot storage (what a later prefix hit restores its ring from).
//   fp8:     e4m3 storage (per-tensor kScale, vScale): new K/V are scaled by 1/scale and cast to
//            e4m3 before the scatter; decode reads the e4m3 cache directly; a prefill gathers the
//            context dequantized (embedding with the scale) into the compute dtype.
// Gathering first matters: a chunk that wraps the ring overwrites slots its own queries still read.
import { Tensor, ops, type DTypeName, type Shape } from "@gemma3/native";
import type { LayerKV, StepPlan } from "./types.js";

export interface CachedAttentionOptions {
  /** Softmax scale (Gemma: query_pre_attn_scalar^-½). */
  smScale: number;
  /** Output [numTokens, Hq, D]; allocated when omitted. */
  out?: Tensor;
  /** Allocator for the [context + chunk] K/V buffers (a step arena); default Tensor.empty. */
  alloc?: (shape: Shape, dtype: DTypeName) => Tensor;
  /**
   * f32 scratch that lets decode split long sequences over many CTAs (flash-decoding); size it
   * with ops.decodeWorkspaceFloats. Without it decode runs one CTA per (sequence, kv head).
   */
  workspace?: Tensor | null;
  /**
   * The new tokens' K/V are already in storage: written by the op that produced them at the rows
   * `directKvWrite` gave (decode only), so no copy is made here.
   */
  stored?: boolean;
  /**
   * Decode with a direct write (`directKvWrite` non-null) only: the attention op makes q (into
   * the `q` given) and the new K/V rows itself from the projection rows (ops.attentionDecode's
   * prologue), so `k` and `v` are not read.
   */
  prologue?: Omit<ops.DecodePrologue, "kvRows">;
}

/** GEMMA3_KV_DIRECT=0: the cache writes decode K/V itself (copyRows), for A/B measurements. */
const KV_DIRECT_OFF = globalThis.process?.env?.GEMMA3_KV_DIRECT === "0";

/**
 * Where a decode step's new K/V can go straight into the layer's storage from the op that makes
 * them (ops.qkNormRope's kvRows), which saves the two copyRows kernels of the cache write: the
 * storage [rows, Hkv, D] and each new token's row in it. Null where the cache must write them
 * itself: a prefill (the context gather must come first), e4m3 storage (scaled cast) or storage in
 * another dtype, and sliding layers that also copy into snapshot storage.
 * @param dtype the dtype the producing op writes (the model's compute dtype)
 */
export function directKvWrite(
  kv: LayerKV,
  plan: StepPlan,
  dtype: DTypeName,
): { k: Tensor; v: Tensor; rows: Tensor } | null {
  if (!plan.decode || kv.k.dtypeName !== dtype || kv.v.dtypeName !== dtype) return null;
  if (KV_DIRECT_OFF) return null;
  const g = kv.sliding ? plan.ring : plan.global;
  if (kv.snapshot && g.snapshotRows) return null;
  return { k: kv.k, v: kv.v, rows: g.writeRows };
}

/**
 * softmax(q·kᵀ·smScale)·v of the step's new tokens against everything their sequences hold,
 * writing the new K/V into the layer's cache.
 * @param q [numTokens, num_qo_heads, head_dim] (normed, RoPE applied)
 * @param k [numTokens, num_kv_heads, head_dim] (normed, RoPE applied); v likewise
 * @returns out [numTokens, num_qo_heads, head_dim]
 */
export function cachedAttention(
  kv: LayerKV,
  plan: StepPlan,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: CachedAttentionOptions,
): Tensor {
  const g = kv.sliding ? plan.ring : plan.global;
  const [, hkv = 0, d = 0] = k.shape;
  const out = o.out ?? Tensor.empty(q.shape, q.dtypeName, q.device);
  const temps: Tensor[] = [];
  const alloc =
    o.alloc ??
    ((shape: Shape, dtype: DTypeName) => {
      const t = Tensor.empty(shape, dtype, q.device);
      temps.push(t);
      return t;
    });
  const fp8 = kv.k.dtypeName === "fp8_e4m3";
  const kScale = kv.kScale ?? 1;
  const vScale = kv.vScale ?? 1;

  // The new tokens' K and V into storage (and snapshot storage). fp8: x · (1/scale) in the compute
  // dtype, cast to e4m3 (saturating); one e4m3 buffer serves K, then V (the device runs in order).
  const store = () => {
    let buf8: Tensor | undefined;
    let scaled: Tensor | undefined;
    for (const [x, s, dst, snap] of [
      [k, kScale, kv.k, kv.snapshot?.k],
      [v, vScale, kv.v, kv.snapshot?.v],
    ] as const) {
      let rows = x;
      if (fp8) {
        buf8 ??= alloc(x.shape, "fp8_e4m3");
        if (s !== 1) rows = ops.scale(x, 1 / s, (scaled ??= alloc(x.shape, x.dtypeName)));
        rows = ops.cast(rows, "fp8_e4m3", buf8);
      }
      if (snap && g.snapshotRows) ops.copyRows(rows, snap, g.snapshotRows);
      ops.copyRows(rows, dst, g.writeRows);
    }
  };

  if (o.prologue && !directKvWrite(kv, plan, q.dtypeName)) {
    throw new Error("cachedAttention: a prologue needs a decode step with a direct K/V write");
  }
  if (plan.decode) {
    if (!o.stored && !o.prologue) store();
    const t = g.decode!;
    const paged = [kv.rows / t.pageSize, t.pageSize, hkv, d];
    ops.attentionDecode(q, kv.k.view(paged), kv.v.view(paged), t.kvIndptr, t.kvIndices, t.kvLen, {
      smScale: o.smScale,
      maxKvLen: t.maxKvLen,
      kScale,
      vScale,
      workspace: o.workspace ?? null,
      out,
      ...(o.prologue ? { prologue: { ...o.prologue, kvRows: g.writeRows } } : {}),
    });
    for (const t of temps) t.dispose(); // freed after the queued ops that use them
    return out;
  }
  let keys = k;
  let values = v;
  let kvIndptr = plan.qoIndptr;
  const c = g.context;
  if (c) {
    keys = alloc([c.rows, hkv, d], k.dtypeName);
    values = alloc([c.rows, hkv, d], v.dtypeName);
    // A row gather is embedding with scale 1 (exact in f32 and bf16), or with the fp8 scale (the
    // dequantized rows); −1 rows are the chunk's, which attends to its own K/V unquantized.
    const flat = [kv.rows, hkv * d];
    const kOut = { out: keys.view([c.rows, hkv * d]) };
    const vOut = { out: values.view([c.rows, hkv * d]) };
    ops.embedding(c.gatherRows, kv.k.view(flat), fp8 ? kScale : 1, kOut);
    ops.embedding(c.gatherRows, kv.v.view(flat), fp8 ? vScale : 1, vOut);
    ops.copyRows(k, keys, c.chunkRows);
    ops.copyRows(v, values, c.chunkRows);
    kvIndptr = c.kvIndptr;
  }
  ops.attentionPrefill(q, keys, values, plan.qoIndptr, kvIndptr, {
    smScale: o.smScale,
    window: kv.window,
    kvLast: g.kvLast ?? null,
    maxQLen: plan.maxQLen,
    out,
  });
  store(); // after the gather: a chunk that wraps the ring overwrites slots its queries read
  for (const t of temps) t.dispose(); // freed after the queued ops that use them
  return out;
}
