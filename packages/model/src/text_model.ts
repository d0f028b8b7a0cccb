// The Gemma 3 text decoder (HF Gemma3TextModel + tied LM head) on @gemma3/native ops:
//   h = embed[ids] · √hidden        (the scale rounded to the weight dtype first, as HF does)
//   for each layer: h = layer(h)    (block.ts)
//   logits = norm(h) · embedᵀ       (tied, 262208 rows for 4B+; lm_head when a config unties it)
import { Device, Tensor, bf16ToF32, f32ToBf16, ops } from "@gemma3/native";
import { DecoderLayer, type LayerWeights } from "./block.js";
import { HybridKVCache, KVSequence, type HybridKVCacheOptions } from "@gemma3/kv-cache";
import type { Gemma3Config } from "./config.js";
import { Scratch } from "./scratch.js";

export type ComputeDType = "f32" | "bf16";

/** Weights of the text model on one device, in the compute dtype. */
export interface TextWeights {
  /** [vocab, hidden] */
  embedTokens: Tensor;
  /** [hidden] */
  norm: Tensor;
  layers: LayerWeights[];
  /** [vocab, hidden]; only when the config unties it (every published Gemma 3 ties it) */
  lmHead?: Tensor;
}

export class Gemma3TextModel {
  readonly layers: DecoderLayer[];
  /** √hidden_size as HF applies it: cast to the weight dtype first (√2560 → 50.5 in bf16). */
  readonly embedScale: number;
  private readonly scratch: Scratch;

  constructor(
    readonly config: Gemma3Config,
    readonly weights: TextWeights,
    readonly device: Device,
    readonly dtype: ComputeDType,
  ) {
    this.layers = weights.layers.map((w, i) => new DecoderLayer(i, config, w));
    const s = Math.sqrt(config.hiddenSize);
    this.embedScale = dtype === "bf16" ? bf16ToF32(f32ToBf16(s)) : Math.fround(s);
    this.scratch = new Scratch(device);
  }

  /**
   * A KV cache holding one sequence of up to `capacity` tokens (disposing it frees both).
   * @param kv storage options: kvDtype "fp8_e4m3" with kScale/vScale (default: the compute dtype)
   */
  newCache(
    capacity: number,
    kv: Pick<HybridKVCacheOptions, "kvDtype" | "kScale" | "vScale"> = {},
  ): KVSequence {
    return KVSequence.single(this.config, {
      ...kv,
      maxSeqLen: capacity,
      dtype: this.dtype,
      device: this.device,
    });
  }

  /**
   * A KV cache for several sequences (continuous batching, forks): add them with `sequence()`.
   * Prefix reuse (options prefixCache, snapshotBlocks): `cache.sequence(maxTokens, prompt)`
   * starts at the longest reusable cached prefix; prefill `prompt.slice(seq.length)` only.
   */
  newKVCache(o: Omit<HybridKVCacheOptions, "dtype" | "device">): HybridKVCache {
    return new HybridKVCache(this.config, { ...o, dtype: this.dtype, device: this.device });
  }

  /**
   * Runs new tokens of one sequence through the model and appends them to its cache: a prompt,
   * a chunk of one, a new turn of a live session, or one decode token.
   * @param ids the new token ids
   * @param opts.allLogits logits for every new token (else only for the last)
   * @returns logits [n or 1, vocab] f32 on the model's device (the caller disposes it)
   */
  forward(ids: readonly number[], seq: KVSequence, opts: { allLogits?: boolean } = {}): Tensor {
    return this.forwardBatch([{ seq, ids }], opts);
  }

  /**
   * One step for several sequences of one cache (ragged: each brings any number of tokens).
   * @returns logits f32: [Σ n, vocab] with allLogits (sequence after sequence), else [batch, vocab]
   *   (each sequence's last token)
   */
  forwardBatch(
    steps: readonly { seq: KVSequence; ids: readonly number[] }[],
    opts: { allLogits?: boolean } = {},
  ): Tensor {
    const { vocabSize: vocab, hiddenSize: hidden, rmsNormEps: eps } = this.config;
    const cache = steps[0]?.seq.cache;
    if (!cache) throw new RangeError("forward: no sequences");
    for (const { seq, ids } of steps) {
      if (seq.cache !== cache) throw new RangeError("forwardBatch: sequences of different caches");
      if (ids.length === 0) throw new RangeError("forward: no tokens");
      for (const id of ids)
        if (!Number.isInteger(id) || id < 0 || id >= vocab)
          throw new RangeError(`forward: token id ${id} outside [0, ${vocab})`);
    }
    // The ids go with the step: a cache with a prefix index registers the full pages they fill.
    const plan = cache.plan(steps.map(({ seq, ids }) => ({ seq: seq.id, count: ids.length, ids })));
    const n = plan.numTokens;
    const batch = steps.length;
    const rows = opts.allLogits ? n : batch;
    const s = this.scratch;
    const dt = this.dtype;
    s.begin(
      2 * Scratch.bytes([n, hidden], dt) +
        2 * Scratch.bytes([rows, hidden], dt) +
        Scratch.bytes([rows, vocab], dt) +
        DecoderLayer.scratchBytes(this.config, n, dt, plan.contextRows) +
        cache.attentionScratchBytes(n) +
        4096,
    );
    try {
      const idsT = s.alloc([n], "i32");
      idsT.write(steps.flatMap((st) => st.ids));
      const h = ops.embedding(idsT, this.weights.embedTokens, this.embedScale, {
        out: s.alloc([n, hidden], dt),
      });
      const mark = s.mark();
      for (const layer of this.layers) {
        layer.forward(h, cache, plan, s);
        s.rewind(mark); // the layer's temporaries are dead once its ops are enqueued
      }
      // Each sequence's last row: a row gather (embedding with scale 1 is exact) for a batch.
      const last = opts.allLogits
        ? h
        : batch === 1
          ? h.slice(n - 1, n)
          : ops.embedding(plan.lastRows, h, 1, { out: s.alloc([batch, hidden], dt) });
      const x = ops.rmsnorm(last, this.weights.norm, eps, s.alloc([rows, hidden], dt));
      const head = this.weights.lmHead ?? this.weights.embedTokens;
      const logits = Tensor.empty([rows, vocab], "f32", this.device);
      if (dt === "f32") ops.matmul(x, head, { out: logits });
      else ops.cast(ops.matmul(x, head, { out: s.alloc([rows, vocab], dt) }), "f32", logits);
      cache.commit(plan);
      return logits;
    } finally {
      plan.dispose();
    }
  }

  dispose(): void {
    const w = this.weights;
    w.embedTokens.dispose();
    w.norm.dispose();
    w.lmHead?.dispose();
    for (const l of w.layers) for (const t of Object.values(l)) (t as Tensor).dispose();
    this.scratch.dispose();
  }
}
