// The Gemma 3 text decoder over N tensor-parallel ranks, one device each (Megatron-LM layout, see
// layout.ts). Every rank keeps the full residual stream h [n, hidden]; per layer:
//   r_k = o_proj_k(attn_k(input_layernorm(h)))      rank k: its heads, its KV cache
//   r = Σ_k r_k   (all-reduce);   h += post_attention_layernorm(r)
//   r_k = down_k(gelu_tanh(gate_k(x)) · up_k(x))    x = pre_feedforward_layernorm(h), its units
//   r = Σ_k r_k   (all-reduce);   h += post_feedforward_layernorm(r)
// Embedding: rank k gathers its vocabulary rows (other ids hit a zero row), and the all-reduce adds
// them (exact: one non-zero term per element). Logits: rank k computes its vocabulary columns and
// they are gathered into one [rows, vocab] f32 tensor on rank 0's device (the sampler needs rows).
// Steps run eagerly (no CUDA graph capture across devices): `opts.graph` is accepted and ignored.
import {
  Communicator,
  Device,
  Tensor,
  bf16ToF32,
  copyColumns,
  f32ToBf16,
  ops,
} from "@gemma3/native";
import { KVSequence, type HybridKVCacheOptions, type Span, type StepPlan } from "@gemma3/kv-cache";
import { DecoderLayer } from "../block.js";
import type { Gemma3Config } from "../config.js";
import { planImageMerge, stepRequests, type ImageMerge } from "../multimodal.js";
import { Scratch } from "../scratch.js";
import type { ComputeDType, ModelStep, TextModel, TextWeights } from "../text_model.js";
import { TensorParallelKVCache } from "./cache.js";
import type { RankShard, TensorParallelLayout } from "./layout.js";

/** One rank's part of the model. */
export interface RankWeights {
  device: Device;
  /**
   * embedTokens: [vocabPerRank + 1, hidden], the rank's vocabulary rows, zero-padded, then one zero
   * row that ids of other ranks gather; lmHead (untied configs only): [vocabPerRank, hidden].
   * Layer weights: the rank's shards (q/k/v, gate/up rows; o_proj, down columns), norms whole.
   */
  weights: TextWeights;
}

interface Rank {
  device: Device;
  shard: RankShard;
  config: Gemma3Config;
  weights: TextWeights;
  layers: DecoderLayer[];
  scratch: Scratch;
  decodeWs: Tensor | null;
}

export class TensorParallelTextModel implements TextModel {
  /** Rank 0's device: where logits (and image features for forward) live. */
  readonly device: Device;
  readonly devices: readonly Device[];
  /** √hidden_size as HF applies it (cast to the weight dtype first). */
  readonly embedScale: number;
  private readonly ranks: Rank[];

  /**
   * Takes ownership of the weights and the communicator.
   * @param parts rank r's device and weight shards (see RankWeights), in rank order
   */
  constructor(
    readonly config: Gemma3Config,
    readonly layout: TensorParallelLayout,
    parts: readonly RankWeights[],
    readonly dtype: ComputeDType,
    readonly comm: Communicator,
  ) {
    if (parts.length !== layout.size || comm.size !== layout.size)
      throw new RangeError(
        `TensorParallelTextModel: ${parts.length} parts, ${comm.size} ranks, layout of ${layout.size}`,
      );
    this.ranks = parts.map((p, r) => {
      const cfg = layout.rankConfigs[r]!;
      return {
        device: p.device,
        shard: layout.ranks[r]!,
        config: cfg,
        weights: p.weights,
        layers: p.weights.layers.map((w, i) => new DecoderLayer(i, cfg, w)),
        scratch: new Scratch(p.device),
        decodeWs: null,
      };
    });
    this.devices = this.ranks.map((r) => r.device);
    this.device = this.devices[0]!;
    const s = Math.sqrt(config.hiddenSize);
    this.embedScale = dtype === "bf16" ? bf16ToF32(f32ToBf16(s)) : Math.fround(s);
  }

  get size(): number {
    return this.ranks.length;
  }

  /** A KV cache (every rank's part) holding one sequence of up to `capacity` tokens. */
  newCache(
    capacity: number,
    kv: Pick<HybridKVCacheOptions, "kvDtype" | "kScale" | "vScale"> = {},
  ): KVSequence {
    const cache = new TensorParallelKVCache(this.layout.rankConfigs, this.devices, {
      ...kv,
      maxSeqLen: capacity,
      maxSeqs: 1,
      dtype: this.dtype,
    });
    return new KVSequence(cache, cache.add(), true);
  }

  /** A KV cache for several sequences (see Gemma3TextModel.newKVCache); each rank's on its device. */
  newKVCache(o: Omit<HybridKVCacheOptions, "dtype" | "device">): TensorParallelKVCache {
    return new TensorParallelKVCache(this.layout.rankConfigs, this.devices, {
      ...o,
      dtype: this.dtype,
    });
  }

  /** As Gemma3TextModel.forward. */
  forward(
    ids: readonly number[],
    seq: KVSequence,
    opts: {
      allLogits?: boolean;
      graph?: boolean;
      spans?: readonly Span[];
      imageFeatures?: Tensor;
    } = {},
  ): Tensor {
    const { spans, imageFeatures, ...rest } = opts;
    return this.forwardBatch([{ seq, ids, spans, imageFeatures }], rest);
  }

  /**
   * One step for several sequences of one cache, as Gemma3TextModel.forwardBatch (eager: `graph`
   * is ignored).
   * @returns logits f32 on rank 0's device: [Σ n, vocab] with allLogits, else [batch, vocab]
   */
  forwardBatch(
    steps: readonly ModelStep[],
    opts: { allLogits?: boolean; graph?: boolean } = {},
  ): Tensor {
    const {
      hiddenSize: hidden,
      vocabSize: vocab,
      rmsNormEps: eps,
      numHiddenLayers: L,
    } = this.config;
    const cache = steps[0]?.seq.cache;
    if (!cache) throw new RangeError("forward: no sequences");
    if (!(cache instanceof TensorParallelKVCache) || cache.size !== this.size)
      throw new TypeError(
        "forwardBatch: the sequences' cache is not a tensor-parallel cache of this model (newKVCache)",
      );
    const requests = stepRequests(steps, cache, this.config);
    const merge = planImageMerge(steps, this.config, this.dtype, this.device.toString());
    const plan0 = cache.plan(requests);
    const plans = cache.rankPlans(plan0);
    try {
      const n = plan0.numTokens;
      const batch = steps.length;
      const rows = opts.allLogits ? n : batch;
      const images = merge.copies.length > 0 ? merge : null;
      const st = this.ranks.map((rk, r) =>
        this.beginStep(rk, cache, plans[r]!, n, batch, rows, images),
      );
      // Embedding: each rank its vocabulary rows; ids of other ranks gather its zero row.
      const hs = st.map(({ rk, s }) => {
        const idsT = s.alloc([n], "i32");
        idsT.write(localIds(merge.embedIds, rk.shard.vocab, this.layout.vocabPerRank));
        return ops.embedding(idsT, rk.weights.embedTokens, this.embedScale, {
          out: s.alloc([n, hidden], this.dtype),
        });
      });
      this.comm.allReduce(hs);
      if (images) st.forEach(({ rk, s }, r) => this.mergeImages(rk, s, hs[r]!, images));
      const marks = st.map(({ s }) => s.mark());
      for (let i = 0; i < L; i++) {
        const attn = st.map(({ rk, s, plan, kv, ws }, r) => {
          const w = rk.layers[i]!.w;
          const x = ops.rmsnorm(hs[r]!, w.inputLayernorm, eps, s.alloc([n, hidden], this.dtype));
          return rk.layers[i]!.attention(x, kv, plan, s, ws);
        });
        this.comm.allReduce(attn);
        const mlp = st.map(({ rk, s }, r) => {
          const w = rk.layers[i]!.w;
          ops.rmsnormAdd(attn[r]!, w.postAttentionLayernorm, hs[r]!, eps);
          const x = ops.rmsnorm(
            hs[r]!,
            w.preFeedforwardLayernorm,
            eps,
            s.alloc([n, hidden], this.dtype),
          );
          return rk.layers[i]!.mlp(x, s);
        });
        this.comm.allReduce(mlp);
        st.forEach(({ rk, s }, r) => {
          ops.rmsnormAdd(mlp[r]!, rk.layers[i]!.w.postFeedforwardLayernorm, hs[r]!, eps);
          s.rewind(marks[r]!); // the layer's temporaries are dead once its ops are enqueued
        });
      }
      const logits = Tensor.empty([rows, vocab], "f32", this.device);
      st.forEach(({ rk, s, plan }, r) => {
        const part = this.logitsShard(rk, s, plan, hs[r]!, rows, opts.allLogits === true);
        const [v0, v1] = rk.shard.vocab;
        if (v1 > v0) copyColumns(part, 0, logits, v0, v1 - v0);
      });
      cache.commit(plan0);
      return logits;
    } finally {
      for (const p of plans) p.dispose();
    }
  }

  /** Starts rank `rk`'s scratch for a step of n tokens; its plan, cache and decode workspace. */
  private beginStep(
    rk: Rank,
    cache: TensorParallelKVCache,
    plan: StepPlan,
    n: number,
    batch: number,
    rows: number,
    images: ImageMerge | null,
  ) {
    const { hiddenSize: hidden } = this.config;
    const dt = this.dtype;
    const vr = this.layout.vocabPerRank;
    const kv = cache.rank(rk.shard.rank);
    rk.scratch.begin(
      2 * Scratch.bytes([n, hidden], dt) +
        2 * Scratch.bytes([rows, hidden], dt) +
        Scratch.bytes([rows, vr], dt) +
        Scratch.bytes([rows, vr], "f32") +
        DecoderLayer.scratchBytes(rk.config, n, dt, plan.contextRows) +
        kv.attentionScratchBytes(n) +
        2 * Scratch.bytes([n], "i32") +
        (images ? Scratch.bytes([n, hidden], dt) : 0) +
        4096,
    );
    const ws = plan.decode ? this.workspaceFor(rk, batch, cache.planner.maxSeqLen) : null;
    return { rk, s: rk.scratch, plan, kv, ws };
  }

  /** h[rows] = image features on rank `rk` (copied from rank 0's device first). */
  private mergeImages(rk: Rank, s: Scratch, h: Tensor, images: ImageMerge): void {
    const all = images.copies.flatMap((c) => c.rows);
    const rowsT = s.alloc([all.length], "i32");
    rowsT.write(all);
    let at = 0;
    for (const { features, rows } of images.copies) {
      let f = features;
      if (rk.device !== this.device) {
        f = s.alloc(features.shape, features.dtypeName);
        copyColumns(features, 0, f, 0, features.shape[1]!);
      }
      ops.copyRows(f, h, rowsT.slice(at, at + rows.length));
      at += rows.length;
    }
  }

  /** Rank `rk`'s vocabulary columns of the logits: [rows, vocabPerRank] f32 (scratch). */
  private logitsShard(
    rk: Rank,
    s: Scratch,
    plan: StepPlan,
    h: Tensor,
    rows: number,
    all: boolean,
  ): Tensor {
    const { hiddenSize: hidden, rmsNormEps: eps } = this.config;
    const dt = this.dtype;
    const n = h.shape[0]!;
    const vr = this.layout.vocabPerRank;
    // Each sequence's last row: a row gather (embedding with scale 1 is exact) for a batch.
    const last = all
      ? h
      : rows === 1
        ? h.slice(n - 1, n)
        : ops.embedding(plan.lastRows, h, 1, { out: s.alloc([rows, hidden], dt) });
    const x = ops.rmsnorm(last, rk.weights.norm, eps, s.alloc([rows, hidden], dt));
    const head = rk.weights.lmHead ?? rk.weights.embedTokens.slice(0, vr);
    if (dt === "f32") return ops.matmul(x, head, { out: s.alloc([rows, vr], "f32") });
    const y = ops.matmul(x, head, { out: s.alloc([rows, vr], dt) });
    return ops.cast(y, "f32", s.alloc([rows, vr], "f32"));
  }

  private readonly wsFloats = new Map<string, number>();
  /** Rank `rk`'s split-KV decode workspace for `batch` sequences (null on the CPU). */
  private workspaceFor(rk: Rank, batch: number, maxKvLen: number): Tensor | null {
    const { numAttentionHeads: hq, headDim: d } = rk.config;
    const key = `${rk.shard.rank}:${batch}:${maxKvLen}`;
    let floats = this.wsFloats.get(key);
    if (floats === undefined) {
      floats = ops.decodeWorkspaceFloats(rk.device, batch, hq, d, maxKvLen);
      this.wsFloats.set(key, floats);
    }
    if (floats === 0) return null;
    if (!rk.decodeWs || rk.decodeWs.numel < floats) {
      rk.decodeWs?.dispose();
      rk.decodeWs = Tensor.empty([floats], "f32", rk.device);
    }
    return rk.decodeWs;
  }

  dispose(): void {
    for (const rk of this.ranks) {
      rk.decodeWs?.dispose();
      rk.decodeWs = null;
      disposeWeights(rk.weights);
      rk.scratch.dispose();
    }
    this.comm.dispose();
  }
}

/** Frees every tensor of one rank's weights. */
export function disposeWeights(w: TextWeights): void {
  w.embedTokens.dispose();
  w.norm.dispose();
  w.lmHead?.dispose();
  for (const l of w.layers) for (const t of Object.values(l)) (t as Tensor).dispose();
}

/**
 * Ids as rank-local rows of its embedding shard: ids in its vocabulary slice [v0, v1) become
 * id − v0; every other id gathers the zero row at vocabPerRank.
 */
export function localIds(
  ids: readonly number[],
  [v0, v1]: readonly [number, number],
  vocabPerRank: number,
): Int32Array {
  const out = new Int32Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    out[i] = id >= v0 && id < v1 ? id - v0 : vocabPerRank;
  }
  return out;
}
