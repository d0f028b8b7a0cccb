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

export interface HybridKVCacheOptions extends PlannerOptions {
  /** K/V element type (the model's compute dtype). */
  dtype: "f32" | "bf16";
  device?: string | Device;
}

export class HybridKVCache implements KVCache {
  readonly planner: KVPlanner;
  readonly device: Device;
  readonly dtype: "f32" | "bf16";
  private readonly layers: LayerKV[];
  private planBuf: Tensor;

  constructor(
    readonly layout: AttentionLayout,
    o: HybridKVCacheOptions,
  ) {
    this.planner = new KVPlanner(layout, o);
    this.device = Device.of(o.device ?? "cpu");
    this.dtype = o.dtype;
    const { numKeyValueHeads: hkv, headDim: d } = layout;
    const pl = this.planner;
    const made: Tensor[] = [];
    const zeros = (rows: number) => {
      const t = Tensor.zeros([rows, hkv, d], o.dtype, this.device);
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
        dtype: o.dtype,
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
      // Gather the snapshot rows, scatter them into the ring (two ops per tensor and layer).
      const { numKeyValueHeads: hkv, headDim: d } = this.layout;
      const from = Tensor.from(a.restoreFrom, [m], "i32", this.device);
      const to = Tensor.from(a.restoreTo, [m], "i32", this.device);
      const tmp = Tensor.empty([m, hkv * d], this.dtype, this.device);
      for (const l of this.layers)
        if (l.snapshot)
          for (const [src, dst] of [
            [l.snapshot.k, l.k],
            [l.snapshot.v, l.v],
          ] as const) {
            ops.embedding(from, src.view([src.shape[0]!, hkv * d]), 1, { out: tmp });
            ops.copyRows(tmp.view([m, hkv, d]), dst, to);
          }
      for (const t of [from, to, tmp]) t.dispose(); // freed after the queued copies
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
  /** Frees the sequence (and its cache when it owns it). */
  dispose(): void {
    if (this.freed) return;
    this.freed = true;
    this.cache.free(this.id);
    if (this.ownsCache) this.cache.dispose();
  }
}
