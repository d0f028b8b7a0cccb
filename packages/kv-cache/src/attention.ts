// Attention of one layer through the hybrid cache, the read/write protocol in one place:
//   decode:  scatter the new K/V into the cache, then attention_decode over its pages/ring.
//   prefill: gather the cached context K/V (ring: the W − 1 tokens before each chunk; global: all
//            of them) into [context + chunk] buffers, attention_prefill over them ("append"
//            positions, window on sliding layers), then scatter the chunk into the cache.
//   both:    sliding layers of a cache with snapshot blocks also scatter every new token's K/V
//            into snapshot storage (what a later prefix hit restores its ring from).
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
  if (kv.snapshot && g.snapshotRows) {
    ops.copyRows(k, kv.snapshot.k, g.snapshotRows);
    ops.copyRows(v, kv.snapshot.v, g.snapshotRows);
  }
  if (plan.decode) {
    ops.copyRows(k, kv.k, g.writeRows);
    ops.copyRows(v, kv.v, g.writeRows);
    const t = g.decode!;
    const paged = [kv.rows / t.pageSize, t.pageSize, hkv, d];
    return ops.attentionDecode(
      q,
      kv.k.view(paged),
      kv.v.view(paged),
      t.kvIndptr,
      t.kvIndices,
      t.kvLen,
      {
        smScale: o.smScale,
        maxKvLen: t.maxKvLen,
        out,
      },
    );
  }
  let keys = k;
  let values = v;
  let kvIndptr = plan.qoIndptr;
  const temps: Tensor[] = [];
  const c = g.context;
  if (c) {
    const alloc =
      o.alloc ??
      ((shape: Shape, dtype: DTypeName) => {
        const t = Tensor.empty(shape, dtype, q.device);
        temps.push(t);
        return t;
      });
    keys = alloc([c.rows, hkv, d], k.dtypeName);
    values = alloc([c.rows, hkv, d], v.dtypeName);
    // A row gather is embedding with scale 1 (exact in f32 and bf16); −1 rows are the chunk's.
    const flat = [kv.rows, hkv * d];
    ops.embedding(c.gatherRows, kv.k.view(flat), 1, { out: keys.view([c.rows, hkv * d]) });
    ops.embedding(c.gatherRows, kv.v.view(flat), 1, { out: values.view([c.rows, hkv * d]) });
    ops.copyRows(k, keys, c.chunkRows);
    ops.copyRows(v, values, c.chunkRows);
    kvIndptr = c.kvIndptr;
  }
  ops.attentionPrefill(q, keys, values, plan.qoIndptr, kvIndptr, {
    smScale: o.smScale,
    window: kv.window,
    maxQLen: plan.maxQLen,
    out,
  });
  ops.copyRows(k, kv.k, g.writeRows);
  ops.copyRows(v, kv.v, g.writeRows);
  for (const t of temps) t.dispose(); // freed after the queued ops that use them
  return out;
}
