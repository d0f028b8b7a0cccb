// The Gemma 3 text decoder over N tensor-parallel ranks, one device each (Megatron-LM layout, see
// layout.ts). Every rank keeps the full residual stream h [n, hidden]; per layer:
//   r_k = o_proj_k(attn_k(input_layernorm(h)))      rank k: its heads, its KV cache
//   r = Σ_k r_k   (all-reduce);   h += post_attention_layernorm(r)
//   r_k = down_k(gelu_tanh(gate_k(x)) · up_k(x))    x = pre_feedforward_layernorm(h), its units
//   r = Σ_k r_k   (all-reduce);   h += post_feedforward_layernorm(r)
// Embedding: rank k gathers its vocabulary rows (other ids hit a zero row), and the all-reduce adds
// them (exact: one non-zero term per element). Logits: rank k computes its vocabulary columns and
// they are gathered into one [rows, vocab] f32 tensor on rank 0's device (the sampler needs rows).
// Decode steps (opts.graph) replay captured graphs as the one-device model does: one graph per
// rank device, captured together (every rank's stream records at once, so each NCCL all-reduce is
// recorded into every rank's graph: NCCL's "Using NCCL with CUDA Graphs"), launched rank after
// rank; CPU ranks share the CPU stream and record one task list. Each graph ends with its rank's
// logits columns in a buffer of its own; the gather onto rank 0 runs eagerly after the launches
// (a copy across devices joins two streams, which per-device captures cannot record). A
// communicator that cannot be captured (the host fallback of CUDA ranks) keeps every step eager.
import {
  Communicator,
  Device,
  Graph,
  Tensor,
  UnsupportedError,
  bf16ToF32,
  copyColumns,
  f32ToBf16,
  ops,
} from "@gemma3/native";
import {
  KVSequence,
  type HybridKVCache,
  type HybridKVCacheOptions,
  type Span,
  type StepPlan,
} from "@gemma3/kv-cache";
import { DecoderLayer } from "../block.js";
import type { Gemma3Config } from "../config.js";
import { planImageMerge, stepRequests, type ImageMerge } from "../multimodal.js";
import { Scratch } from "../scratch.js";
import {
  MAX_GRAPH_BATCH,
  decodeWeightBytes,
  type ComputeDType,
  type ModelStep,
  type TextModel,
  type TextWeights,
} from "../text_model.js";
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

/** One rank's state during a step: its scratch, plan, KV cache and decode workspace. */
interface RankStep {
  rk: Rank;
  s: Scratch;
  plan: StepPlan;
  kv: HybridKVCache;
  ws: Tensor | null;
}

/** A captured decode step for one batch size, with what its recorded addresses depend on. */
interface StepGraph {
  /** one per distinct rank device, in rank order (one for CPU ranks) */
  graphs: Graph[];
  cache: TensorParallelKVCache;
  /** per rank: its cache's plan storage, scratch generation and decode workspace */
  plans: Tensor[];
  generations: number[];
  ws: (Tensor | null)[];
}

export class TensorParallelTextModel implements TextModel {
  /** Rank 0's device: where logits (and image features for forward) live. */
  readonly device: Device;
  readonly devices: readonly Device[];
  /** √hidden_size as HF applies it (cast to the weight dtype first). */
  readonly embedScale: number;
  private readonly ranks: Rank[];
  /** Captured decode steps per batch size. */
  private readonly graphs = new Map<number, StepGraph>();
  /** Batch sizes whose first decode step ran eagerly (the next one is captured). */
  private readonly warmDecode = new Set<number>();
  private graphOut: {
    cache: TensorParallelKVCache;
    logits: Tensor;
    shards: Tensor[];
  } | null = null;
  /**
   * Why decode steps stay eager although graphs were asked for and the communicator can be
   * captured (a capture on CUDA ranks failed; the message names the failing op), else null.
   */
  graphFallback: string | null = null;
  private captureFailures = 0;
  /** Whether the last step replayed graphs or ran eagerly (see enterMode). */
  private mode: "graph" | "eager" | null = null;

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
   * One step for several sequences of one cache, as Gemma3TextModel.forwardBatch.
   * @param opts.graph decode steps (one token per sequence, batch ≤ MAX_GRAPH_BATCH, no images)
   *   replay graphs captured on the second such step, when the communicator can be captured
   *   (graphCapturable); the logits are then a view of a buffer the next graph step overwrites.
   * @returns logits f32 on rank 0's device: [Σ n, vocab] with allLogits, else [batch, vocab]
   */
  forwardBatch(
    steps: readonly ModelStep[],
    opts: { allLogits?: boolean; graph?: boolean } = {},
  ): Tensor {
    const { vocabSize: vocab } = this.config;
    const cache = steps[0]?.seq.cache;
    if (!cache) throw new RangeError("forward: no sequences");
    if (!(cache instanceof TensorParallelKVCache) || cache.size !== this.size)
      throw new TypeError(
        "forwardBatch: the sequences' cache is not a tensor-parallel cache of this model (newKVCache)",
      );
    if (steps.some((st) => st.idsFrom))
      throw new UnsupportedError(
        "forwardBatch: idsFrom (device-side ids) is not supported tensor-parallel (each rank needs its shard's local ids)",
        "E_UNSUPPORTED",
      );
    const requests = stepRequests(steps, cache, this.config);
    const merge = planImageMerge(steps, this.config, this.dtype, this.device.toString());
    const plan0 = cache.plan(requests);
    const plans = cache.rankPlans(plan0);
    try {
      const n = plan0.numTokens;
      const batch = steps.length;
      const all = opts.allLogits === true;
      const rows = all ? n : batch;
      const images = merge.copies.length > 0 ? merge : null;
      const st = this.ranks.map((rk, r) =>
        this.beginStep(rk, cache, plans[r]!, n, batch, rows, images),
      );
      // Each rank's ids first (written before any capture; a replay reads them at this address).
      const ids = st.map(({ rk, s }) => {
        const t = s.alloc([n], "i32");
        t.write(localIds(merge.embedIds, rk.shard.vocab, this.layout.vocabPerRank));
        return t;
      });
      const graphable =
        opts.graph === true &&
        plan0.decode &&
        !all &&
        batch <= MAX_GRAPH_BATCH &&
        !images &&
        this.comm.graphCapturable &&
        this.graphFallback === null;
      if (graphable) {
        const g = this.stepGraph(cache, st, batch, ids);
        if (g) {
          this.enterMode("graph");
          for (const x of g.graphs) x.launch();
          const out = this.graphOut!;
          const logits = out.logits.slice(0, batch);
          st.forEach(({ rk }, r) => this.gather(rk, out.shards[r]!.slice(0, batch), logits));
          cache.commit(plan0);
          return logits.view([batch, vocab]);
        }
        this.warmDecode.add(batch);
      }
      this.enterMode("eager");
      const shards = this.body(st, ids, rows, all, images, null);
      const logits = Tensor.empty([rows, vocab], "f32", this.device);
      st.forEach(({ rk }, r) => this.gather(rk, shards[r]!, logits));
      cache.commit(plan0);
      return logits;
    } finally {
      for (const p of plans) p.dispose();
    }
  }

  /**
   * The step's ops on every rank, from the ids to each rank's f32 logits columns (all enqueued):
   * embedding, layers with their all-reduces, final norm, the rank's vocabulary slice of the head.
   * @param ids per rank: [n] i32 rank-local embedding rows (see localIds)
   * @param out per rank: [rows, vocabPerRank] f32 to write (null: scratch)
   * @returns per rank: [rows, vocabPerRank] f32
   */
  private body(
    st: readonly RankStep[],
    ids: readonly Tensor[],
    rows: number,
    all: boolean,
    images: ImageMerge | null,
    out: readonly Tensor[] | null,
  ): Tensor[] {
    const { hiddenSize: hidden, rmsNormEps: eps, numHiddenLayers: L } = this.config;
    const n = ids[0]!.numel;
    // Embedding: each rank its vocabulary rows; ids of other ranks gather its zero row.
    const hs = st.map(({ rk, s }, r) =>
      ops.embedding(ids[r]!, rk.weights.embedTokens, this.embedScale, {
        out: s.alloc([n, hidden], this.dtype),
      }),
    );
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
    return st.map(({ rk, s, plan }, r) =>
      this.logitsShard(rk, s, plan, hs[r]!, rows, all, out?.[r]),
    );
  }

  /** logits[:, v0:v1] = rank `rk`'s columns (the padding past the vocabulary dropped). */
  private gather(rk: Rank, part: Tensor, logits: Tensor): void {
    const [v0, v1] = rk.shard.vocab;
    if (v1 > v0) copyColumns(part, 0, logits, v0, v1 - v0);
  }

  /**
   * The captured decode step of `batch` sequences: the existing one if what it recorded is still
   * where it was (cache, plan storage, arenas, workspaces), else a fresh capture on the second
   * decode step of this batch size (the first ran eagerly, so every lazy one-time setup: kernel
   * attributes, NCCL's connections, happened outside a capture), else null (run eagerly).
   */
  private stepGraph(
    cache: TensorParallelKVCache,
    st: readonly RankStep[],
    batch: number,
    ids: readonly Tensor[],
  ): StepGraph | null {
    let g = this.graphs.get(batch);
    const stale =
      g &&
      (g.cache !== cache ||
        st.some(
          ({ kv, s, ws }, r) =>
            g!.plans[r] !== kv.planStorage || g!.generations[r] !== s.generation || g!.ws[r] !== ws,
        ));
    if (g && stale) {
      for (const x of g.graphs) x.dispose();
      this.graphs.delete(batch);
      g = undefined;
    }
    if (g || !this.warmDecode.has(batch)) return g ?? null;
    const out = this.graphOutputs(cache, batch);
    this.enterMode("graph");
    let graphs: Graph[];
    try {
      graphs = captureAll(uniqueDevices(this.devices), () =>
        this.body(
          st,
          ids,
          batch,
          false,
          null,
          out.shards.map((t) => t.slice(0, batch)),
        ),
      );
    } catch (e) {
      // CUDA ranks: a driver or NCCL that cannot record the step leaves decode eager (correct,
      // slower) and says why; CPU task lists always record, so a failure there is a bug.
      if (!this.device.isCuda) throw e;
      // A first failure may be transient (NCCL setting up what it needs for captured work on
      // first use): the next decode step tries once more. The eager step after it waits for the
      // ranks first (enterMode: the mode is "graph" since the capture began).
      if (++this.captureFailures < 2) return null;
      this.graphFallback = `decode graph capture failed, decode stays eager: ${(e as Error).message}`;
      return null;
    }
    g = {
      graphs,
      cache,
      plans: st.map(({ kv }) => kv.planStorage),
      generations: st.map(({ s }) => s.generation),
      ws: st.map(({ ws }) => ws),
    };
    this.graphs.set(batch, g);
    return g;
  }

  /**
   * The buffers every captured graph of `cache` writes: per rank [maxSeqs, vocabPerRank] f32
   * logits columns on its device, and the gathered [maxSeqs, vocab] f32 logits on rank 0's (one
   * set for every batch size, rows [0, batch) used, as Gemma3TextModel.graphLogits). A new cache
   * drops the graphs of the old one.
   */
  private graphOutputs(cache: TensorParallelKVCache, batch: number) {
    if (this.graphOut?.cache !== cache) {
      this.dropGraphs();
      const rows = Math.max(cache.planner.maxSeqs, batch);
      const vr = this.layout.vocabPerRank;
      this.graphOut = {
        cache,
        logits: Tensor.empty([rows, this.config.vocabSize], "f32", this.device),
        shards: this.devices.map((d) => Tensor.empty([rows, vr], "f32", d)),
      };
    }
    return this.graphOut;
  }

  /**
   * NCCL runs without graph mixing support (native/ops/collective.cc): between graph replays and
   * eager steps, wait for the ranks' queued work (idle already when the caller read the previous
   * step's logits, as the scheduler does).
   */
  private enterMode(mode: "graph" | "eager"): void {
    if (this.mode !== null && this.mode !== mode && this.comm.backend === "nccl")
      this.comm.waitIdle();
    this.mode = mode;
  }

  /** Batch sizes with a captured decode step (what the next graph decode of that size replays). */
  get capturedBatches(): number[] {
    return [...this.graphs.keys()].sort((a, b) => a - b);
  }

  private dropGraphs(): void {
    for (const g of this.graphs.values()) for (const x of g.graphs) x.dispose();
    this.graphs.clear();
    if (this.graphOut) {
      this.graphOut.logits.dispose();
      for (const t of this.graphOut.shards) t.dispose();
    }
    this.graphOut = null;
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
  ): RankStep {
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

  /** Rank `rk`'s vocabulary columns of the logits: [rows, vocabPerRank] f32 (`out` or scratch). */
  private logitsShard(
    rk: Rank,
    s: Scratch,
    plan: StepPlan,
    h: Tensor,
    rows: number,
    all: boolean,
    out?: Tensor,
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
    const o = out ?? s.alloc([rows, vr], "f32");
    if (dt === "f32") return ops.matmul(x, head, { out: o });
    return ops.cast(ops.matmul(x, head, { out: s.alloc([rows, vr], dt) }), "f32", o);
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

  decodeWeightBytes(): number {
    return this.ranks.reduce((a, r) => a + decodeWeightBytes(r.weights), 0);
  }

  dispose(): void {
    this.dropGraphs(); // before the communicator: NCCL's captured work goes with the graphs
    for (const rk of this.ranks) {
      rk.decodeWs?.dispose();
      rk.decodeWs = null;
      disposeWeights(rk.weights);
      rk.scratch.dispose();
    }
    this.comm.dispose();
  }
}

/** The distinct devices of `devices`, in order (CPU ranks share the one CPU stream). */
function uniqueDevices(devices: readonly Device[]): Device[] {
  const out: Device[] = [];
  for (const d of devices) if (!out.some((o) => o.index === d.index)) out.push(d);
  return out;
}

/**
 * Graphs of `fn`'s ops on every device of `devices`, all capturing at once (nested captures: a
 * failure ends and frees every capture begun).
 */
function captureAll(devices: readonly Device[], fn: () => void): Graph[] {
  if (devices.length === 0) {
    fn();
    return [];
  }
  let rest: Graph[] = [];
  try {
    const g = Graph.capture(devices[0]!, () => {
      rest = captureAll(devices.slice(1), fn);
    });
    return [g, ...rest];
  } catch (e) {
    for (const x of rest) x.dispose();
    throw e;
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
