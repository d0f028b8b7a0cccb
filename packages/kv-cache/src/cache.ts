// The hybrid KV cache on a device: per sliding layer, maxSeqs rings of S slots; per global layer,
// a pool of pages shared by all sequences (one page table per sequence serves every global layer).
// All storage is allocated here, once; a step only writes its plan (one Int32 upload into a
// persistent device buffer, sized at construction for the largest decode step) and runs the
// page copies a copy-on-write needs. Bookkeeping is KVPlanner's (planner.ts, no addon).
// With snapshotBlocks, each sliding layer also holds snapshot storage (prefix reuse, README).
import { Device, Tensor, ops } from "@gemma3/native";
import { formatBytes, hybridCacheBytes } from "./estimate.js";
import type { AttentionLayout } from "./layout.js";
import {
  KVPlanner,
  type PrefixLookup,
  type HostDecodeTables,
  type HostField,
  type HostGroupPlan,
  type PlannerOptions,
  type PlannerStats,
  type StepRequest,
} from "./planner.js";
import type { GroupPlan, KVCache, LayerKV, StepPlan } from "./types.js";

/** Element types K/V storage can have: the compute dtype, or fp8 e4m3 with per-tensor scales. */
export type KVStorageDType = "f32" | "bf16" | "fp8_e4m3";

export interface HybridKVCacheOptions extends PlannerOptions {
  /** The model's compute dtype: K/V enter and attention runs in it. */
  dtype: "f32" | "bf16";
  /**
   * Element type of K/V storage (default `dtype`). "fp8_e4m3" (CUDA's option for long contexts,
   * half of bf16's bytes; runs on CPU too): a new token's K is stored as e4m3(k / kScale) and read
   * as e4m3 · kScale (V likewise with vScale), vLLM's per-tensor fp8 KV cache. Saturates at ±448.
   */
  kvDtype?: KVStorageDType;
  /** fp8_e4m3 storage: K dequantization scale (default 1; Gemma's K is RMS-normed by k_norm). */
  kScale?: number;
  /** fp8_e4m3 storage: V dequantization scale (default 1; V is not normalized). */
  vScale?: number;
  device?: string | Device;
}

export class HybridKVCache implements KVCache {
  readonly planner: KVPlanner;
  readonly device: Device;
  /** compute dtype */
  readonly dtype: "f32" | "bf16";
  /** storage dtype of K and V */
  readonly kvDtype: KVStorageDType;
  readonly kScale: number;
  readonly vScale: number;
  private readonly layers: LayerKV[];
  private planBuf: Tensor;
  /** The device buffer plans are uploaded into; replaced when a larger plan needs more room (a
   * captured graph that reads plans is valid only while this stays the same object). */
  get planStorage(): Tensor {
    return this.planBuf;
  }

  constructor(
    readonly layout: AttentionLayout,
    o: HybridKVCacheOptions,
  ) {
    this.planner = new KVPlanner(layout, o);
    this.device = Device.of(o.device ?? "cpu");
    this.dtype = o.dtype;
    this.kvDtype = o.kvDtype ?? o.dtype;
    this.kScale = o.kScale ?? 1;
    this.vScale = o.vScale ?? 1;
    const fp8 = this.kvDtype === "fp8_e4m3";
    if (!fp8 && this.kvDtype !== o.dtype)
      throw new RangeError(
        `kvDtype: ${this.kvDtype} must be the compute dtype ${o.dtype} or fp8_e4m3`,
      );
    for (const [name, s] of [
      ["kScale", this.kScale],
      ["vScale", this.vScale],
    ] as const)
      if (fp8 ? !(Number.isFinite(s) && s > 0) : s !== 1)
        throw new RangeError(
          `${name}: ${s} (${fp8 ? "must be finite and > 0" : "scales apply to fp8_e4m3 storage only"})`,
        );
    const { numKeyValueHeads: hkv, headDim: d } = layout;
    const pl = this.planner;
    const made: Tensor[] = [];
    const zeros = (rows: number) => {
      const t = Tensor.zeros([rows, hkv, d], this.kvDtype, this.device);
      made.push(t);
      return t;
    };
    try {
      const snapRows = pl.snapshotBlocks * pl.pageSize;
      this.layers = layout.layerTypes.map((type) => {
        const sliding = type === "sliding";
        const rows = sliding ? pl.maxSeqs * pl.ringSlots : pl.numPages * pl.pageSize;
        return {
          sliding,
          window: sliding ? layout.slidingWindow : 0,
          rows,
          k: zeros(rows),
          v: zeros(rows),
          kScale: this.kScale,
          vScale: this.vScale,
          snapshot: sliding && snapRows > 0 ? { k: zeros(snapRows), v: zeros(snapRows) } : null,
        };
      });
      this.planBuf = Tensor.empty([pl.decodePlanInts(pl.maxSeqs)], "i32", this.device);
    } catch (e) {
      for (const t of made) t.dispose();
      const bytes = hybridCacheBytes(layout, {
        maxSeqs: pl.maxSeqs,
        maxSeqLen: pl.maxSeqLen,
        pageSize: pl.pageSize,
        numPages: pl.numPages,
        rollback: pl.rollback,
        snapshotBlocks: pl.snapshotBlocks,
        dtype: fp8 ? "fp8" : this.kvDtype,
      });
      const why = e instanceof Error ? e.message : String(e);
      throw Object.assign(
        new Error(
          `KV cache (${formatBytes(bytes)}: ${pl.maxSeqs} × ${pl.maxSeqLen} tokens, ${pl.numPages} pages) does not fit on ${this.device}: ${why}`,
        ),
        { code: (e as { code?: string }).code ?? "E_OUT_OF_MEMORY" },
      );
    }
  }

  get numLayers(): number {
    return this.layers.length;
  }
  /**
   * Scratch bytes cachedAttention takes from its `alloc` for `numTokens` new tokens beyond the
   * context buffers (fp8 storage: the e4m3 copy of K then V, and a scaled copy when a scale ≠ 1),
   * each rounded up to 256-byte arena alignment. 0 for storage in the compute dtype.
   */
  attentionScratchBytes(numTokens: number): number {
    if (this.kvDtype !== "fp8_e4m3") return 0;
    const row = this.layout.numKeyValueHeads * this.layout.headDim;
    const up = (b: number) => Math.ceil(b / 256) * 256;
    const scaled = this.kScale !== 1 || this.vScale !== 1;
    return (
      up(numTokens * row) + (scaled ? up(numTokens * row * (this.dtype === "f32" ? 4 : 2)) : 0)
    );
  }
  /** Device bytes of K and V storage (snapshot storage included). */
  get bytes(): number {
    return this.layers.reduce(
      (a, l) =>
        a +
        l.k.byteLength +
        l.v.byteLength +
        (l.snapshot ? l.snapshot.k.byteLength + l.snapshot.v.byteLength : 0),
      0,
    );
  }
  layer(i: number): LayerKV {
    const l = this.layers[i];
    if (!l) throw new RangeError(`KV cache has no layer ${i}`);
    return l;
  }

  // ---- sequences (see KVPlanner for the rules) ---------------------------------------------

  /** Why a sequence of up to `maxTokens` tokens would be refused now, or null. */
  admission(maxTokens?: number, prompt?: readonly number[]): string | null {
    return this.planner.admission(maxTokens, prompt);
  }
  /**
   * Admits a sequence, reserving its pages (throws KVCacheFullError). Returns its id. With a
   * `prompt` and a prefix cache it starts at the longest reusable cached prefix of the prompt
   * (length(id) tokens: shared pages, rings restored from snapshot blocks); prefill the rest.
   */
  add(maxTokens?: number, prompt?: readonly number[]): number {
    const a = this.planner.admit(maxTokens, prompt);
    const m = a.restoreFrom.length;
    if (m > 0) {
      // Gather the snapshot rows, scatter them into the ring (two ops per tensor and layer; fp8
      // storage: gather with scale 1 into the compute dtype, which holds every e4m3 value exactly,
      // and cast back, so the bytes are unchanged).
      const { numKeyValueHeads: hkv, headDim: d } = this.layout;
      const from = Tensor.from(a.restoreFrom, [m], "i32", this.device);
      const to = Tensor.from(a.restoreTo, [m], "i32", this.device);
      const tmp = Tensor.empty([m, hkv * d], this.dtype, this.device);
      const tmp8 =
        this.kvDtype === "fp8_e4m3" ? Tensor.empty([m, hkv * d], "fp8_e4m3", this.device) : null;
      for (const l of this.layers)
        if (l.snapshot)
          for (const [src, dst] of [
            [l.snapshot.k, l.k],
            [l.snapshot.v, l.v],
          ] as const) {
            ops.embedding(from, src.view([src.shape[0]!, hkv * d]), 1, { out: tmp });
            const rows = tmp8 ? ops.cast(tmp, "fp8_e4m3", tmp8) : tmp;
            ops.copyRows(rows.view([m, hkv, d]), dst, to);
          }
      for (const t of [from, to, tmp, tmp8]) t?.dispose(); // freed after the queued copies
    }
    return a.seq;
  }
  /** add() wrapped in a handle. */
  sequence(maxTokens?: number, prompt?: readonly number[]): KVSequence {
    return new KVSequence(this, this.add(maxTokens, prompt));
  }
  /** What add(maxTokens, prompt) would reuse from the prefix cache now. */
  prefixLookup(prompt: readonly number[], maxTokens?: number): PrefixLookup {
    return this.planner.prefixLookup(prompt, maxTokens);
  }
  /** Drops the prefix cache (pages and snapshot blocks only it held are freed). */
  clearPrefixCache(): void {
    this.planner.clearPrefixCache();
  }
  /** A copy of `parent` sharing its full global pages; the ring is copied here. */
  fork(parent: number, maxTokens?: number): number {
    const child = this.planner.fork(parent, maxTokens);
    const S = this.planner.ringSlots;
    const [from, to] = [this.planner.ringOf(parent) * S, this.planner.ringOf(child) * S];
    for (const l of this.layers)
      if (l.sliding) {
        l.k.slice(to, to + S).copyFrom(l.k.slice(from, from + S));
        l.v.slice(to, to + S).copyFrom(l.v.slice(from, from + S));
      }
    return child;
  }
  trim(seq: number, length: number): void {
    this.planner.trim(seq, length);
  }
  /** The ids of a step planned with idsLater (KVPlanner.provideIds). */
  provideIds(seq: number, start: number, ids: readonly number[]): boolean {
    return this.planner.provideIds(seq, start, ids);
  }
  free(seq: number): void {
    this.planner.free(seq);
  }
  length(seq: number): number {
    return this.planner.length(seq);
  }
  stats(): PlannerStats {
    return this.planner.stats();
  }

  // ---- steps --------------------------------------------------------------------------------

  plan(steps: readonly StepRequest[]): StepPlan {
    const h = this.planner.plan(steps);
    const P = this.planner.pageSize;
    for (const [src, dst] of h.pageCopies)
      for (const l of this.layers)
        if (!l.sliding) {
          l.k.slice(dst * P, dst * P + P).copyFrom(l.k.slice(src * P, src * P + P));
          l.v.slice(dst * P, dst * P + P).copyFrom(l.v.slice(src * P, src * P + P));
        }
    if (this.planBuf.numel < h.data.length) {
      // Only prefills over long contexts outgrow the decode-sized buffer (never a decode step).
      this.planBuf.dispose();
      this.planBuf = Tensor.empty([h.data.length], "i32", this.device);
    }
    // Stream order puts this write after the previous step's reads of the same buffer.
    this.planBuf.slice(0, h.uploadLength).write(h.data.subarray(0, h.uploadLength));
    const at = (f: HostField) => this.planBuf.slice(f.offset, f.offset + f.length);
    const tables = (t: HostDecodeTables | null) =>
      t && {
        pageSize: t.pageSize,
        kvIndptr: at(t.kvIndptr),
        kvIndices: at(t.kvIndices),
        kvLen: at(t.kvLen),
        maxKvLen: t.maxKvLen,
      };
    const group = (g: HostGroupPlan): GroupPlan => ({
      writeRows: at(g.writeRows),
      decode: tables(g.decode),
      context: g.context && {
        rows: g.context.rows,
        gatherRows: at(g.context.gatherRows),
        chunkRows: at(g.context.chunkRows),
        kvIndptr: at(g.context.kvIndptr),
      },
      snapshotRows: g.snapshotRows && at(g.snapshotRows),
      kvLast: g.kvLast && at(g.kvLast),
    });
    return {
      seqs: h.seqs,
      numTokens: h.numTokens,
      maxQLen: h.maxQLen,
      decode: h.decode,
      contextRows: h.contextRows,
      positions: at(h.positions),
      qoIndptr: at(h.qoIndptr),
      lastRows: at(h.lastRows),
      ring: group(h.ring),
      global: group(h.global),
      dispose: () => undefined,
    };
  }

  commit(plan: StepPlan): void {
    this.planner.commit(plan);
  }

  dispose(): void {
    this.planBuf.dispose();
    for (const l of this.layers) {
      l.k.dispose();
      l.v.dispose();
      l.snapshot?.k.dispose();
      l.snapshot?.v.dispose();
    }
  }
}

/** One sequence of a HybridKVCache: what a single-sequence forward takes. */
export class KVSequence {
  private freed = false;

  constructor(
    readonly cache: HybridKVCache,
    readonly id: number,
    /** Dispose the cache with the sequence (a cache made for this one sequence). */
    private readonly ownsCache = false,
  ) {}

  /** A cache holding exactly one sequence of up to `maxSeqLen` tokens. */
  static single(
    layout: AttentionLayout,
    o: Omit<HybridKVCacheOptions, "maxSeqs" | "numPages">,
  ): KVSequence {
    const cache = new HybridKVCache(layout, { ...o, maxSeqs: 1 });
    return new KVSequence(cache, cache.add(), true);
  }

  get length(): number {
    return this.cache.length(this.id);
  }
  /** Plans `count` new tokens of this sequence alone. */
  plan(count: number): StepPlan {
    return this.cache.plan([{ seq: this.id, count }]);
  }
  /** A copy sharing this sequence's pages (needs a cache with maxSeqs > 1). */
  fork(maxTokens?: number): KVSequence {
    return new KVSequence(this.cache, this.cache.fork(this.id, maxTokens));
  }
  /** Rolls back to the first `length` tokens. */
  trim(length: number): void {
    this.cache.trim(this.id, length);
  }
  /** The ids of positions [start, length) of a step planned with idsLater (KVPlanner.provideIds). */
  provideIds(start: number, ids: readonly number[]): boolean {
    return this.cache.provideIds(this.id, start, ids);
  }
  /** Frees the sequence (and its cache when it owns it). */
  dispose(): void {
    if (this.freed) return;
    this.freed = true;
    this.cache.free(this.id);
    if (this.ownsCache) this.cache.dispose();
  }
}
