// The Gemma 3 text decoder (HF Gemma3TextModel + tied LM head) on @gemma3/native ops:
//   h = embed[ids] · √hidden        (the scale rounded to the weight dtype first, as HF does)
//   h[image tokens] = image features (multimodal.ts; each image's tokens one bidirectional span)
//   for each layer: h = layer(h)    (block.ts)
//   logits = norm(h) · embedᵀ       (tied, 262208 rows for 4B+; lm_head when a config unties it)
import { Device, Graph, Tensor, bf16ToF32, f32ToBf16, ops } from "@gemma3/native";
import { DecoderLayer, type LayerWeights } from "./block.js";
import {
  HybridKVCache,
  KVSequence,
  type HybridKVCacheOptions,
  type Span,
  type StepPlan,
} from "@gemma3/kv-cache";
import type { Gemma3Config } from "./config.js";
import { Scratch } from "./scratch.js";
import { checkDeviceIds, copyDeviceIds, type DeviceIds } from "./device_ids.js";
import { planImageMerge, stepRequests, type ImageMerge } from "./multimodal.js";

export type ComputeDType = "f32" | "bf16";

/** Largest decode batch replayed from a captured graph (one graph per batch size up to it). */
export const MAX_GRAPH_BATCH = 64;

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

/**
 * Bytes of weights one decode step reads on its device(s): every layer weight once (a fused
 * projection and its row views counted once, by owner), the final norm, and the output head (the
 * untied lm_head, else the whole tied embedding table; the embedding gather's few rows are not
 * counted). At batch B one step serves B tokens, so a step rate × this is the weight bandwidth
 * the step sustains (gemma3 bench reports it against the card's).
 */
export function decodeWeightBytes(w: TextWeights): number {
  const owners = new Set<Tensor>([w.norm, w.lmHead ?? w.embedTokens]);
  for (const layer of w.layers)
    for (const t of Object.values(layer) as (Tensor | undefined)[]) if (t) owners.add(t.base ?? t);
  let bytes = 0;
  for (const t of owners) bytes += t.byteLength;
  return bytes;
}

/** One sequence's share of a forward step. */
export interface ModelStep {
  seq: KVSequence;
  /** the new token ids ([] with idsFrom) */
  ids: readonly number[];
  /**
   * One decode token whose id is on the device only: row `row` of `tensor` ([rows] i32 on the
   * model's device), e.g. the previous step's argmax (pipelined decoding, Scheduler asyncDecode).
   * Copied into the step's ids on the device in stream order, so it may be written by ops enqueued
   * before this forward that have not run yet. The KV cache gets the id later
   * (KVSequence.provideIds) for its prefix index. Models with `deviceIdsInput` only.
   */
  idsFrom?: DeviceIds;
  /** bidirectional spans of the sequence (absolute positions), see StepRequest.spans */
  spans?: readonly Span[];
  /**
   * Features of the image tokens among `ids` (id config.imageTokenIndex), in order: [k, hidden]
   * or [images, mm_tokens_per_image, hidden] in the model's dtype on its device (e.g. from
   * @gemma3/vision's encode). Their rows replace those tokens' embeddings. Without `spans`, each
   * run of image tokens in `ids` becomes a bidirectional span (HF's token_type_ids blocks); a
   * chunked prefill must pass the whole prompt's spans (imageTokenSpans) so a chunk that splits
   * an image is refused.
   */
  imageFeatures?: Tensor;
}

/**
 * What the apps need of a text model: Gemma3TextModel on one device, or TensorParallelTextModel
 * (tp/model.ts) over several (its device is rank 0's, where logits land).
 */
export interface TextModel {
  readonly config: Gemma3Config;
  /** forwardBatch takes ModelStep.idsFrom (the tensor-parallel model does not: ids per rank) */
  readonly deviceIdsInput?: boolean;
  readonly device: Device;
  /** Every rank's device (tensor parallel only). */
  readonly devices?: readonly Device[];
  readonly dtype: ComputeDType;
  newCache(
    capacity: number,
    kv?: Pick<HybridKVCacheOptions, "kvDtype" | "kScale" | "vScale">,
  ): KVSequence;
  newKVCache(o: Omit<HybridKVCacheOptions, "dtype" | "device">): HybridKVCache;
  forward(
    ids: readonly number[],
    seq: KVSequence,
    opts?: {
      allLogits?: boolean;
      graph?: boolean;
      spans?: readonly Span[];
      imageFeatures?: Tensor;
    },
  ): Tensor;
  forwardBatch(
    steps: readonly ModelStep[],
    opts?: { allLogits?: boolean; graph?: boolean },
  ): Tensor;
  /** decodeWeightBytes of the model's weights (all ranks together under tensor parallelism). */
  decodeWeightBytes?(): number;
  dispose(): void;
}

export class Gemma3TextModel implements TextModel {
  readonly deviceIdsInput = true;
  readonly layers: DecoderLayer[];
  /** √hidden_size as HF applies it: cast to the weight dtype first (√2560 → 50.5 in bf16). */
  readonly embedScale: number;
  private readonly scratch: Scratch;
  /** Captured decode steps per batch size, with what their addresses depend on. */
  private readonly graphs = new Map<
    number,
    {
      graph: Graph;
      logits: Tensor;
      cache: HybridKVCache;
      plans: Tensor;
      generation: number;
      ws: Tensor | null;
    }
  >();

  /**
   * @param opts.fusedOps fused layer kernels (default true; false: the unfused reference
   *   sequence, see DecoderLayer)
   */
  constructor(
    readonly config: Gemma3Config,
    readonly weights: TextWeights,
    readonly device: Device,
    readonly dtype: ComputeDType,
    opts: { fusedOps?: boolean } = {},
  ) {
    this.layers = weights.layers.map((w, i) => new DecoderLayer(i, config, w, opts.fusedOps));
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
   * @param opts.graph decode steps replay a captured graph (see forwardBatch)
   * @param opts.spans bidirectional spans (image blocks) of the sequence, see StepRequest.spans
   * @param opts.imageFeatures see ModelStep.imageFeatures
   * @returns logits [n or 1, vocab] f32 on the model's device (the caller disposes it)
   */
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
   * One step for several sequences of one cache (ragged: each brings any number of tokens).
   * @param opts.graph decode steps (one token per sequence, batch ≤ MAX_GRAPH_BATCH) replay a graph captured
   *   on the second such step (a CUDA graph, or a recorded task list on the CPU): one launch
   *   instead of ~11 op calls per layer (~19 unfused). The returned logits are then a view of a
   *   buffer the next graph step overwrites: read them before the next forward.
   * @returns logits f32: [Σ n, vocab] with allLogits (sequence after sequence), else [batch, vocab]
   *   (each sequence's last token)
   */
  forwardBatch(
    steps: readonly ModelStep[],
    opts: { allLogits?: boolean; graph?: boolean } = {},
  ): Tensor {
    const { vocabSize: vocab, hiddenSize: hidden } = this.config;
    const cache = steps[0]?.seq.cache;
    if (!cache) throw new RangeError("forward: no sequences");
    const requests = stepRequests(steps, cache, this.config);
    checkDeviceIds(steps, this.device.toString());
    // A device id takes one row of the host write (placeholder 0), then its copy overwrites it.
    const hostSteps = steps.map((st) => (st.idsFrom ? { ...st, ids: [0] } : st));
    const merge = planImageMerge(hostSteps, this.config, this.dtype, this.device.toString());
    const plan = cache.plan(requests);
    const n = plan.numTokens;
    const batch = steps.length;
    const rows = opts.allLogits ? n : batch;
    const s = this.scratch;
    const dt = this.dtype;
    s.begin(
      3 * Scratch.bytes([n, hidden], dt) +
        2 * Scratch.bytes([rows, hidden], dt) +
        Scratch.bytes([rows, vocab], dt) +
        DecoderLayer.scratchBytes(this.config, n, dt, plan.contextRows) +
        cache.attentionScratchBytes(n) +
        Scratch.bytes([n], "i32") +
        4096,
    );
    try {
      const idsT = s.alloc([n], "i32");
      idsT.write(merge.embedIds);
      // Before any capture below: a replay reads idsT at this address, whatever wrote it.
      if (steps.some((st) => st.idsFrom)) copyDeviceIds(idsT, steps);
      const images = merge.copies.length > 0 ? merge : null;
      // The step's ops, from the ids in `idsT` to f32 logits in `logits`.
      const ws = plan.decode ? this.workspaceFor(batch, cache.planner.maxSeqLen) : null;
      const run = (logits: Tensor) => {
        this.body(idsT, cache, plan, logits, opts.allLogits === true, ws, images);
      };
      if (opts.graph && plan.decode && !opts.allLogits && batch <= MAX_GRAPH_BATCH && !images) {
        let g = this.graphs.get(batch);
        const stale =
          g &&
          (g.cache !== cache ||
            g.plans !== cache.planStorage ||
            g.generation !== s.generation ||
            g.ws !== ws);
        if (g && stale) {
          g.graph.dispose();
          this.graphs.delete(batch);
          g = undefined;
        }
        if (!g && this.warmDecode.has(batch)) {
          // Capture on the second decode step: the first ran eagerly, so every lazy one-time
          // setup (occupancy queries, function attributes) happened outside the capture.
          const logits = this.graphLogits(cache, batch);
          const graph = Graph.capture(this.device, () => run(logits));
          g = { graph, logits, cache, plans: cache.planStorage, generation: s.generation, ws };
          this.graphs.set(batch, g);
        }
        if (g) {
          g.graph.launch();
          cache.commit(plan);
          return g.logits.view([batch, vocab]);
        }
        this.warmDecode.add(batch);
      }
      const logits = Tensor.empty([rows, vocab], "f32", this.device);
      run(logits);
      cache.commit(plan);
      return logits;
    } finally {
      plan.dispose();
    }
  }

  /** h[rows] = features, per step that brings image features (HF masked_scatter, unscaled). */
  private mergeImages(h: Tensor, images: ImageMerge): void {
    const all = images.copies.flatMap((c) => c.rows);
    const rowsT = this.scratch.alloc([all.length], "i32");
    rowsT.write(all);
    let at = 0;
    for (const { features, rows } of images.copies) {
      ops.copyRows(features, h, rowsT.slice(at, at + rows.length));
      at += rows.length;
    }
  }

  /** Split-KV scratch for decode attention (grown on demand; captured graphs hold its address). */
  private decodeWs: Tensor | null = null;
  private readonly wsFloats = new Map<string, number>();

  /** The decode workspace for `batch` sequences of up to `maxKvLen` tokens (null on the CPU). */
  private workspaceFor(batch: number, maxKvLen: number): Tensor | null {
    const { numAttentionHeads: hq, headDim: d } = this.config;
    // Asked once per (batch, maxKvLen): this runs on every decode step.
    const key = `${batch}:${maxKvLen}`;
    let floats = this.wsFloats.get(key);
    if (floats === undefined) {
      floats = ops.decodeWorkspaceFloats(this.device, batch, hq, d, maxKvLen);
      this.wsFloats.set(key, floats);
    }
    if (floats === 0) return null;
    if (!this.decodeWs || this.decodeWs.numel < floats) {
      this.decodeWs?.dispose();
      this.decodeWs = Tensor.empty([floats], "f32", this.device);
    }
    return this.decodeWs;
  }

  /** Batch sizes whose first decode step ran eagerly (the next one is captured). */
  private readonly warmDecode = new Set<number>();

  /** Embedding → layers → final norm → f32 logits of one planned step (all enqueued). */
  private body(
    idsT: Tensor,
    cache: HybridKVCache,
    plan: StepPlan,
    logits: Tensor,
    all: boolean,
    ws: Tensor | null,
    images: ImageMerge | null,
  ) {
    const { hiddenSize: hidden, vocabSize: vocab, rmsNormEps: eps } = this.config;
    const s = this.scratch;
    const dt = this.dtype;
    const n = idsT.numel;
    const rows = logits.shape[0]!;
    {
      const h = ops.embedding(idsT, this.weights.embedTokens, this.embedScale, {
        out: s.alloc([n, hidden], dt),
      });
      if (images) this.mergeImages(h, images);
      // Fused: each layer's last kernel also computes the next layer's input norm, into `xNext`
      // (the layer reading it has consumed it by the time it writes the next one: stream order).
      const xNext = this.layers[0]?.fusedOps ? s.alloc([n, hidden], dt) : null;
      const mark = s.mark();
      this.layers.forEach((layer, i) => {
        const next = xNext && this.layers[i + 1];
        layer.forward(
          h,
          cache,
          plan,
          s,
          ws,
          i > 0 ? xNext : null,
          next ? { norm: next.w.inputLayernorm, out: xNext } : null,
        );
        s.rewind(mark); // the layer's temporaries are dead once its ops are enqueued
      });
      // Each sequence's last row: a row gather (embedding with scale 1 is exact) for a batch.
      const last = all
        ? h
        : rows === 1
          ? h.slice(n - 1, n)
          : ops.embedding(plan.lastRows, h, 1, { out: s.alloc([rows, hidden], dt) });
      const x = ops.rmsnorm(last, this.weights.norm, eps, s.alloc([rows, hidden], dt));
      const head = this.weights.lmHead ?? this.weights.embedTokens;
      if (dt === "f32") ops.matmul(x, head, { out: logits });
      else ops.cast(ops.matmul(x, head, { out: s.alloc([rows, vocab], dt) }), "f32", logits);
    }
  }

  /**
   * Rows [0, batch) of the logits buffer every captured decode graph of `cache` writes (one buffer
   * of cache.maxSeqs rows rather than one per batch size: 64 graphs of a 262k vocabulary would
   * otherwise hold 2 GB of logits). A new cache drops the graphs of the old one.
   */
  private graphLogits(cache: HybridKVCache, batch: number): Tensor {
    if (this.graphOut?.cache !== cache) {
      this.dropGraphs();
      const rows = Math.max(cache.planner.maxSeqs, batch);
      this.graphOut = { cache, t: Tensor.empty([rows, this.config.vocabSize], "f32", this.device) };
    }
    return this.graphOut.t.slice(0, batch);
  }
  private graphOut: { cache: HybridKVCache; t: Tensor } | null = null;

  private dropGraphs(): void {
    for (const g of this.graphs.values()) g.graph.dispose();
    this.graphs.clear();
    this.graphOut?.t.dispose();
    this.graphOut = null;
  }

  decodeWeightBytes(): number {
    return decodeWeightBytes(this.weights);
  }

  dispose(): void {
    this.dropGraphs();
    this.decodeWs?.dispose();
    this.decodeWs = null;
    const w = this.weights;
    w.embedTokens.dispose();
    w.norm.dispose();
    w.lmHead?.dispose();
    for (const l of w.layers) for (const t of Object.values(l)) (t as Tensor).dispose();
    this.scratch.dispose();
  }
}
