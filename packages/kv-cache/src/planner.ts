// The hybrid cache's bookkeeping and per-step plan, in pure TS (no addon): sequences, their ring
// slot (sliding layers) and page table (global layers), page reservations, and the Int32 plan
// every layer's attention reads. HybridKVCache (cache.ts) uploads the plan and owns the storage.
//
// Storage the rows below index (per layer, K and V alike, rows of [Hkv, D]):
//   sliding: maxSeqs rings of S slots; token p of the sequence in ring r lives in row r·S + p % S
//   full:    numPages pages of P slots; token p lives in row pages[⌊p/P⌋]·P + p % P
// A ring keeps the last S tokens; a step needs the W − 1 before its first query (W = window).
//
// Prefix reuse (opt-in: prefixCache, snapshotBlocks): see prefix.ts and the README. Full pages of
// a sequence whose token ids the steps bring are registered at commit under a chained block hash;
// they outlive the sequence (the index holds a reference) and are evicted least recently released
// first when the pool needs pages, so admission counts them as available. add(maxTokens, prompt)
// starts a sequence at the longest cached prefix its rings can be restored for:
//   a sequence starting at length B needs, in every sliding layer, the K/V of positions
//   [B − W + 1, B) in its ring. They come from snapshot blocks: while a sequence fills block b
//   (positions [bP, bP + P)) every sliding layer also writes its K/V into a snapshot block, which
//   goes to the block's index entry at registration. A hit is usable at B = kP only if blocks
//   ⌊(B − W + 1)/P⌋ … k − 1 all hold snapshots; else the longest shorter prefix that has them,
//   else none (length 0). With snapshotBlocks = 0 a layout with sliding layers (every Gemma 3)
//   never reuses a prefix: recomputing only the last W − 1 tokens would not be exact, since the
//   hidden state at p in layer l depends on positions back to p − l·(W − 1) through the windows
//   of earlier sliding layers.
import { KVCacheError, KVCacheFullError } from "./errors.js";
import {
  checkInt,
  checkLayout,
  layerCounts,
  ringGeometry,
  type AttentionLayout,
} from "./layout.js";
import { PagePool } from "./pages.js";
import { PrefixIndex, type BlockHash, type PrefixEntry } from "./prefix.js";

export interface PlannerOptions {
  /** Most tokens one sequence may hold (positions 0 … maxSeqLen − 1). */
  maxSeqLen: number;
  /** Sequences live at once; each holds one ring (default 1). */
  maxSeqs?: number;
  /** Tokens per global page (default 16). */
  pageSize?: number;
  /** Pages in the global pool (default maxSeqs · ⌈maxSeqLen / pageSize⌉: every sequence full). */
  numPages?: number;
  /** Tokens trim() can always take back exactly: ring slots S = W − 1 + rollback (default 1). */
  rollback?: number;
  /**
   * Keep full global pages in a prefix index (keyed by a chained hash of their token ids) after
   * their sequence is freed, for add(maxTokens, prompt) to share. Default: snapshotBlocks > 0.
   */
  prefixCache?: boolean;
  /**
   * Sliding-layer snapshot blocks (default 0 = none): each holds pageSize tokens of K/V for every
   * sliding layer, L_local · pageSize · 2·Hkv·d·bytes (4B bf16, pages of 16: 1.81 MiB). A prefix
   * of B tokens is reusable only with snapshots of its last ⌈(W − 1)/pageSize⌉ blocks (4B, W 1024:
   * 64 blocks ≈ 116 MiB = L_local · (W − 1) · 2·Hkv·d·bytes for the first boundary; each further
   * boundary of the same prefix costs one block more). Needs prefixCache.
   */
  snapshotBlocks?: number;
  /** Block hash of the prefix index (default hashBlock); a test hook to force collisions. */
  prefixHash?: BlockHash;
}

/** Positions [start, end) of a sequence whose tokens attend to each other bidirectionally. */
export interface Span {
  readonly start: number;
  readonly end: number;
}

/** One sequence's share of a step: `count` new tokens appended at its current length. */
export interface StepRequest {
  seq: number;
  count: number;
  /**
   * The new tokens' ids (length `count`). With a prefix cache, the sequence's full blocks are
   * registered at commit while every step so far brought its ids; ignored otherwise.
   */
  ids?: readonly number[];
  /**
   * The step's one new token id is not known on the host yet (pipelined decoding: it is the
   * previous step's argmax, still on the device). It comes later through provideIds(seq, start,
   * [id]), which registers the blocks it completes; a step planned before it came ends the
   * registration of the sequence (as a step without ids does).
   */
  idsLater?: boolean;
  /**
   * Bidirectional spans of the sequence (Gemma 3 image blocks: the positions of one image's soft
   * tokens), absolute positions, half-open, disjoint. A query inside a span also sees the span's
   * later keys (HF's token_type_ids mask, OR-ed with causal; sliding layers keep their window).
   * A span must be prefilled in one chunk: plan() throws a RangeError when a step's first or
   * last position splits one (its keys past the chunk would not exist yet). Spans outside the
   * chunk are ignored, so every step may bring all of the sequence's spans. Prefill only: in a
   * one-token step only a span of length 1 can hold the token, which changes nothing.
   */
  spans?: readonly Span[];
}

/** A sequence in a planned step: its new tokens are positions [start, start + count). */
export interface StepSeq {
  readonly seq: number;
  readonly start: number;
  readonly count: number;
  /** the step's token ids (prefix cache only) */
  readonly ids?: readonly number[];
  /** the ids come later, through provideIds (prefix cache only) */
  readonly idsLater?: boolean;
  /** first position of a bidirectional span in this chunk (prefix cache only; see register) */
  readonly firstSpan?: number;
}

/** A run of the plan's Int32 data. */
export interface HostField {
  readonly offset: number;
  readonly length: number;
}

/** Decode-attention tables (flashinfer's paged words) over storage seen as [rows / pageSize, pageSize, Hkv, D]. */
export interface HostDecodeTables {
  readonly pageSize: number;
  /** [batch + 1] */
  readonly kvIndptr: HostField;
  /** fixed capacity per step size: batch · (pages one sequence can hold), so graphs can replay */
  readonly kvIndices: HostField;
  /** [batch] tokens visible to each sequence's query */
  readonly kvLen: HostField;
  /** host upper bound of kvLen (fixed per cache) */
  readonly maxKvLen: number;
}

/** Prefill over cached context: per sequence, its context rows then its chunk, contiguous. */
export interface HostContext {
  /** rows of the [context + chunk] buffer over all sequences */
  readonly rows: number;
  /** [rows]: storage row to gather, −1 for the chunk's own rows (filled from k/v) */
  readonly gatherRows: HostField;
  /** [numTokens]: buffer row of each new token */
  readonly chunkRows: HostField;
  /** [batch + 1]: buffer rows of each sequence */
  readonly kvIndptr: HostField;
}

export interface HostGroupPlan {
  /** [numTokens]: storage row each new token's K/V is written to; −1 = not kept */
  readonly writeRows: HostField;
  /** decode steps only */
  readonly decode: HostDecodeTables | null;
  /** prefill steps where some sequence has cached tokens this group reads */
  readonly context: HostContext | null;
  /**
   * [numTokens]: snapshot-storage row each new token's K/V is also written to (sliding layers,
   * snapshotBlocks > 0: row slot · pageSize + p % pageSize); −1 = none. null otherwise.
   */
  readonly snapshotRows: HostField | null;
  /**
   * Prefill steps with spans (StepRequest.spans), else null. [numTokens]: for a token at p inside
   * a span [a, b), the index of key b − 1 in its sequence's key list ([context + chunk]: global
   * b − 1, ring (b − 1) − (start − context)); −1 elsewhere. attention_prefill's kv_last.
   */
  readonly kvLast: HostField | null;
}

export interface HostPlan {
  /** The step's Int32 data (valid until the next plan). */
  readonly data: Int32Array;
  /** Ints of `data` the device needs: the rest is unused capacity of the decode page lists. */
  readonly uploadLength: number;
  readonly seqs: readonly StepSeq[];
  readonly numTokens: number;
  /** Largest count of one sequence (sizes the prefill grid). */
  readonly maxQLen: number;
  /** Every sequence takes exactly one token: scatter, then decode attention. */
  readonly decode: boolean;
  /** Rows of the largest [context + chunk] buffer a layer gathers (0 = none). */
  readonly contextRows: number;
  /** [numTokens] i32 */
  readonly positions: HostField;
  /** [batch + 1] i32: each sequence's rows among the step's tokens */
  readonly qoIndptr: HostField;
  /** [batch] i32: row of each sequence's last new token */
  readonly lastRows: HostField;
  /** sliding layers */
  readonly ring: HostGroupPlan;
  /** global layers */
  readonly global: HostGroupPlan;
  /** [src, dst] pages to copy in every global layer before the step writes (copy-on-write) */
  readonly pageCopies: readonly (readonly [number, number])[];
}

interface Seq {
  readonly id: number;
  readonly ring: number;
  length: number;
  /** 1 + the highest position ever written to the ring (ring rows below it may be overwritten) */
  ringHigh: number;
  /** first position the ring ever held (> 0 when a prefix hit restored only part of a ring) */
  ringLow: number;
  maxTokens: number;
  pages: number[];
  /** prefix cache: ids of positions [0, ids.length) (ids.length < length once a step had none) */
  ids: number[];
  /** prefix cache: the last committed step's ids come later (StepRequest.idsLater) */
  idsPending: boolean;
  /** prefix cache: no block reaching this position is registered (an image span starts there) */
  noRegisterFrom: number;
  /** prefix cache: index entries of blocks 0 … chain.length − 1 */
  chain: PrefixEntry[];
  /** snapshot block this sequence is filling for block b, or −1 */
  snaps: number[];
}

/** A prompt's cached prefix: every matching block, and how many of them a sequence can start with. */
interface PrefixHit {
  chain: PrefixEntry[];
  blocks: number;
  /** first ring position the snapshots restore */
  ringLow: number;
}

/** What add() found in the prefix cache for a prompt. */
export interface PrefixLookup {
  /** tokens of the longest cached prefix (whole blocks, at most prompt length − 1) */
  cached: number;
  /** tokens a sequence would start with: the longest cached prefix whose ring can be restored */
  reusable: number;
}

/** A sequence admitted by admit(): where it starts and the ring rows the cache must restore. */
export interface Admission {
  readonly seq: number;
  /** tokens taken from the prefix cache (the sequence's length) */
  readonly reused: number;
  /** ring restore: snapshot-storage rows (slot · pageSize + p % pageSize), one per position */
  readonly restoreFrom: Int32Array;
  /** ring restore: ring rows (ring · S + p % S), positions [reused − restoreFrom.length, reused) */
  readonly restoreTo: Int32Array;
}

export interface PlannerStats {
  sequences: number;
  freeSequenceSlots: number;
  numPages: number;
  freePages: number;
  /** pages live sequences may still take up to their declared maxTokens */
  reservedPages: number;
  /** free pages (plus evictable prefix pages) no sequence has reserved: what admission can hand out */
  availablePages: number;
  /** pages registered in the prefix index (0 without prefixCache) */
  prefixPages: number;
  /** prefix pages only the index holds: evicted when the pool needs them */
  evictablePages: number;
  snapshotBlocks: number;
  freeSnapshotBlocks: number;
}

export class KVPlanner {
  readonly maxSeqLen: number;
  readonly maxSeqs: number;
  readonly pageSize: number;
  readonly numPages: number;
  readonly rollback: number;
  /** W: tokens a sliding-layer query sees (itself included) */
  readonly window: number;
  /** S: ring slots per sequence */
  readonly ringSlots: number;
  /** Pages one sequence can hold: ⌈maxSeqLen / pageSize⌉ */
  readonly pagesPerSeq: number;
  readonly pool: PagePool;
  /** The prefix index (null without prefixCache). */
  readonly prefix: PrefixIndex | null;
  readonly snapshotBlocks: number;
  /** Steps write snapshot rows (prefix cache, snapshot blocks and sliding layers). */
  private readonly capture: boolean;
  private readonly numLocal: number;
  private readonly seqs = new Map<number, Seq>();
  private readonly freeRings: number[];
  private nextId = 0;
  private buf = new Int32Array(0);

  constructor(
    readonly layout: AttentionLayout,
    o: PlannerOptions,
  ) {
    checkLayout(layout);
    this.maxSeqLen = checkInt(o.maxSeqLen, "maxSeqLen", 1);
    this.maxSeqs = checkInt(o.maxSeqs ?? 1, "maxSeqs", 1);
    this.pageSize = checkInt(o.pageSize ?? 16, "pageSize", 1);
    this.rollback = checkInt(o.rollback ?? 1, "rollback", 1);
    this.pagesPerSeq = Math.ceil(this.maxSeqLen / this.pageSize);
    this.numPages = checkInt(o.numPages ?? this.maxSeqs * this.pagesPerSeq, "numPages", 1);
    const g = ringGeometry(layout, this.maxSeqLen, this.rollback);
    this.window = g.window;
    this.ringSlots = g.slots;
    this.pool = new PagePool(this.numPages);
    this.snapshotBlocks = checkInt(o.snapshotBlocks ?? 0, "snapshotBlocks", 0);
    const prefixCache = o.prefixCache ?? this.snapshotBlocks > 0;
    if (!prefixCache && this.snapshotBlocks > 0)
      throw new RangeError("snapshotBlocks needs prefixCache (snapshots belong to cached blocks)");
    this.prefix = prefixCache
      ? new PrefixIndex(this.pool, this.pageSize, this.snapshotBlocks, o.prefixHash)
      : null;
    this.numLocal = layerCounts(layout).local;
    this.capture = this.snapshotBlocks > 0 && this.numLocal > 0;
    this.freeRings = Array.from({ length: this.maxSeqs }, (_, i) => this.maxSeqs - 1 - i);
  }

  // ---- sequences ----------------------------------------------------------------------------

  /** Live sequence ids, in creation order. */
  get sequences(): number[] {
    return [...this.seqs.keys()];
  }
  length(seq: number): number {
    return this.get(seq).length;
  }
  /** Ring index of a sequence (its rows in sliding layers are ring·S … ring·S + S − 1). */
  ringOf(seq: number): number {
    return this.get(seq).ring;
  }
  /** The sequence's page table (a copy). */
  pagesOf(seq: number): number[] {
    return [...this.get(seq).pages];
  }

  /**
   * Why a new sequence of up to `maxTokens` tokens cannot be admitted now, or null if it can.
   * With a `prompt`, the pages of its reusable cached prefix are shared, not taken.
   */
  admission(maxTokens: number = this.maxSeqLen, prompt?: readonly number[]): string | null {
    return this.refusal(maxTokens, () => this.findPrefix(maxTokens, prompt));
  }

  private refusal(maxTokens: number, prefix: () => PrefixHit): string | null {
    if (!Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > this.maxSeqLen)
      return `a sequence of ${maxTokens} tokens is outside [1, maxSeqLen = ${this.maxSeqLen}]`;
    if (this.freeRings.length === 0) return `all ${this.maxSeqs} sequence slots are in use`;
    const hit = prefix();
    const shared = hit.blocks;
    const need = Math.ceil(maxTokens / this.pageSize) - shared;
    // Shared pages that only the index holds stop being evictable once the sequence holds them.
    let idleShared = 0;
    for (let b = 0; b < shared; b++) if (this.prefix!.isIdle(hit.chain[b]!.page)) idleShared++;
    const evictable = this.evictable() - idleShared;
    const avail = this.pool.free + evictable - this.reserved();
    if (need > avail)
      return `a sequence of up to ${maxTokens} tokens needs ${need} pages of ${this.pageSize}${shared > 0 ? ` (${shared} more shared from the prefix cache)` : ""}; ${this.pool.free} of ${this.numPages} are free${evictable > 0 ? ` and ${evictable} evictable from the prefix cache` : ""}, ${this.pool.free + evictable - Math.max(avail, 0)} of them reserved by live sequences`;
    return null;
  }

  /**
   * Admits a sequence that will hold at most `maxTokens` tokens (default maxSeqLen): its pages
   * are reserved now, so its steps never run out. Throws KVCacheFullError when it does not fit.
   * With a `prompt` and a prefix cache, the sequence starts at the longest reusable cached prefix
   * of it (length(seq) tokens, whole pages, at most prompt.length − 1): prefill the rest. The
   * rings must then be restored from snapshot blocks: HybridKVCache.add does it (admit()).
   */
  add(maxTokens: number = this.maxSeqLen, prompt?: readonly number[]): number {
    return this.admit(maxTokens, prompt).seq;
  }

  /** add(), also returning the ring rows to restore from snapshot storage (device copies). */
  admit(maxTokens: number = this.maxSeqLen, prompt?: readonly number[]): Admission {
    let hit: PrefixHit | undefined;
    const why = this.refusal(maxTokens, () => (hit = this.findPrefix(maxTokens, prompt)));
    if (why || !hit) throw new KVCacheFullError(`KV cache full: ${why}`);
    const P = this.pageSize;
    const S = this.ringSlots;
    const chain = hit.chain.slice(0, hit.blocks);
    const reused = hit.blocks * P;
    const s: Seq = {
      id: this.nextId++,
      ring: this.freeRings.pop()!,
      length: reused,
      ringHigh: reused,
      ringLow: hit.ringLow,
      maxTokens,
      pages: chain.map((e) => e.page),
      ids: prompt && this.prefix ? prompt.slice(0, reused) : [],
      idsPending: false,
      noRegisterFrom: Infinity,
      chain,
      snaps: chain.map(() => -1),
    };
    for (const pg of s.pages) this.retain(pg);
    const m = this.capture ? reused - hit.ringLow : 0;
    const restoreFrom = new Int32Array(m);
    const restoreTo = new Int32Array(m);
    for (let i = 0; i < m; i++) {
      const p = hit.ringLow + i;
      const e = chain[Math.floor(p / P)]!;
      restoreFrom[i] = e.snap * P + (p % P);
      restoreTo[i] = s.ring * S + (p % S);
    }
    if (this.capture)
      for (let b = Math.floor(hit.ringLow / P); b < hit.blocks; b++)
        this.prefix!.touchSnapshot(chain[b]!);
    this.seqs.set(s.id, s);
    return { seq: s.id, reused, restoreFrom, restoreTo };
  }

  /** What add(maxTokens, prompt) would take from the prefix cache now. */
  prefixLookup(prompt: readonly number[], maxTokens: number = this.maxSeqLen): PrefixLookup {
    const hit = this.findPrefix(maxTokens, prompt);
    return { cached: hit.chain.length * this.pageSize, reusable: hit.blocks * this.pageSize };
  }

  /** Drops every prefix-index entry (pages only the index held are freed). */
  clearPrefixCache(): void {
    this.prefix?.clear();
  }

  /**
   * A new sequence with `parent`'s tokens: full pages are shared (refcounts), a shared partial
   * page is copied when either side writes to it; the ring is copied by the caller (ringOf).
   * The child may grow to `maxTokens` (default the parent's); its pages are reserved now.
   */
  fork(parent: number, maxTokens?: number): number {
    const p = this.get(parent);
    const max = maxTokens ?? Math.max(p.maxTokens, p.length);
    if (!Number.isInteger(max) || max < p.length || max > this.maxSeqLen)
      throw new KVCacheError(
        `fork: maxTokens ${max} outside [${p.length} (parent length), ${this.maxSeqLen}]`,
        "E_KV_RANGE",
      );
    if (this.freeRings.length === 0)
      throw new KVCacheFullError(`KV cache full: all ${this.maxSeqs} sequence slots are in use`);
    const pages = p.pages.slice(0, Math.ceil(p.length / this.pageSize));
    const child: Seq = {
      id: -1,
      ring: -1,
      length: p.length,
      ringHigh: p.ringHigh,
      ringLow: p.ringLow,
      maxTokens: max,
      pages,
      ids: [...p.ids],
      idsPending: false,
      noRegisterFrom: p.noRegisterFrom,
      chain: [...p.chain],
      // The parent keeps filling its snapshot blocks; the child starts its own at its next block.
      snaps: pages.map(() => -1),
    };
    // Sharing turns the parent's partial last page copy-on-write for both: check both reservations.
    for (const pg of pages) this.retain(pg);
    const need = this.reserved() + this.needed(child);
    if (need > this.pool.free + this.evictable()) {
      for (const pg of pages) this.release(pg);
      throw new KVCacheFullError(
        `KV cache full: fork of sequence ${parent} (up to ${max} tokens) needs ${need} reserved pages, ${this.pool.free} free${this.evictable() > 0 ? ` and ${this.evictable()} evictable` : ""}`,
      );
    }
    const s: Seq = { ...child, id: this.nextId++, ring: this.freeRings.pop()! };
    this.seqs.set(s.id, s);
    return s.id;
  }

  /** Whether trim(seq, length) can restore the ring exactly. */
  canTrim(seq: number, length: number): boolean {
    const s = this.get(seq);
    return (
      Number.isInteger(length) && length >= 0 && length <= s.length && this.ringIntact(s, length)
    );
  }

  /**
   * Rolls a sequence back to its first `length` tokens (global pages past it are released).
   * Exact for up to `rollback` tokens, or any amount while the ring has not wrapped; otherwise
   * throws (E_KV_ROLLBACK: the sliding layers lost the tokens; free and prefill again). A
   * sequence started from a cached prefix holds the ring's tokens from its restore on only.
   */
  trim(seq: number, length: number): void {
    const s = this.get(seq);
    if (!Number.isInteger(length) || length < 0 || length > s.length)
      throw new KVCacheError(`trim: length ${length} outside [0, ${s.length}]`, "E_KV_RANGE");
    if (!this.ringIntact(s, length))
      throw new KVCacheError(
        `trim: sequence ${seq} cannot roll back from ${s.length} to ${length} tokens: its ring of ${this.ringSlots} slots (window ${this.window}, rollback ${this.rollback}) no longer holds tokens ${Math.max(0, length - this.window + 1)}…${length - 1}`,
        "E_KV_ROLLBACK",
      );
    const keep = Math.ceil(length / this.pageSize);
    // Deepest first: released prefix pages are evicted in the order they became idle.
    for (const pg of s.pages.splice(keep).reverse()) this.release(pg);
    for (const slot of s.snaps.splice(keep)) if (slot >= 0) this.prefix!.freeSnapshot(slot);
    if (s.ids.length > length) s.ids.length = length;
    s.idsPending = false;
    if (s.chain.length > Math.floor(length / this.pageSize))
      s.chain.length = Math.floor(length / this.pageSize);
    s.length = length;
  }

  /** Releases a sequence: its pages (shared ones when their last holder goes) and ring. */
  free(seq: number): void {
    const s = this.get(seq);
    // Deepest first, so a cached prefix is evicted from its end.
    for (let i = s.pages.length - 1; i >= 0; i--) this.release(s.pages[i]!);
    for (const slot of s.snaps) if (slot >= 0) this.prefix!.freeSnapshot(slot);
    this.freeRings.push(s.ring);
    this.seqs.delete(seq);
  }

  stats(): PlannerStats {
    const reserved = this.reserved();
    return {
      sequences: this.seqs.size,
      freeSequenceSlots: this.freeRings.length,
      numPages: this.numPages,
      freePages: this.pool.free,
      reservedPages: reserved,
      availablePages: this.pool.free + this.evictable() - reserved,
      prefixPages: this.prefix?.size ?? 0,
      evictablePages: this.evictable(),
      snapshotBlocks: this.snapshotBlocks,
      freeSnapshotBlocks: this.prefix?.freeSnapshotBlocks ?? 0,
    };
  }

  // ---- the step plan ------------------------------------------------------------------------

  /**
   * Plans one step: appends `count` tokens to each listed sequence (their pages are taken now,
   * shared pages about to be written are replaced by copies) and lays out what the layers read.
   * Lengths move on at commit(). Throws, changing nothing, on a bad request or a full pool.
   */
  plan(steps: readonly StepRequest[]): HostPlan {
    const P = this.pageSize;
    if (steps.length === 0) throw new KVCacheError("plan: no sequences in the step", "E_KV_SEQ");
    const list: Seq[] = [];
    const spans: Span[][] = [];
    let newPages = 0;
    let othersReserved = this.reserved();
    let ownNeeds = 0;
    for (const st of steps) {
      const s = this.get(st.seq);
      if (list.includes(s))
        throw new KVCacheError(`plan: sequence ${st.seq} listed twice`, "E_KV_SEQ");
      if (!Number.isInteger(st.count) || st.count < 1)
        throw new KVCacheError(
          `plan: sequence ${st.seq}: count ${st.count} must be >= 1`,
          "E_KV_RANGE",
        );
      if (st.ids && st.ids.length !== st.count)
        throw new KVCacheError(
          `plan: sequence ${st.seq}: ${st.ids.length} ids for ${st.count} tokens`,
          "E_KV_RANGE",
        );
      const end = s.length + st.count;
      if (end > this.maxSeqLen)
        throw new KVCacheError(
          `KV cache: sequence ${st.seq} would hold ${end} tokens, maxSeqLen is ${this.maxSeqLen}`,
          "E_KV_RANGE",
        );
      if (!this.ringIntact(s, s.length))
        throw new KVCacheError(
          `plan: sequence ${st.seq}: its ring was overwritten by a step that was planned but not committed; trim cannot restore it (free it and prefill again)`,
          "E_KV_ROLLBACK",
        );
      spans.push(chunkSpans(st, s.length, end));
      list.push(s);
      newPages += this.cowPages(s, end).length + Math.max(0, Math.ceil(end / P) - s.pages.length);
      othersReserved -= this.needed(s);
      ownNeeds += Math.max(
        0,
        Math.ceil(s.maxTokens / P) - Math.max(s.pages.length, Math.ceil(end / P)),
      );
    }
    const evictable = this.evictable();
    if (newPages + othersReserved + ownNeeds > this.pool.free + evictable)
      throw new KVCacheFullError(
        `KV cache full: the step needs ${newPages} new page${newPages === 1 ? "" : "s"} of ${P} tokens; ${this.pool.free} are free${evictable > 0 ? ` (+${evictable} evictable)` : ""} and ${othersReserved + ownNeeds} of them are reserved for live sequences`,
      );
    this.prefix?.reclaim(newPages);

    // Take pages: copies of shared pages the step writes into, then fresh ones.
    const pageCopies: [number, number][] = [];
    const seqs: StepSeq[] = [];
    const captures: boolean[] = [];
    for (let b = 0; b < list.length; b++) {
      const s = list[b]!;
      const st = steps[b]!;
      const end = s.length + st.count;
      for (const i of this.cowPages(s, end)) {
        const fresh = this.pool.alloc();
        pageCopies.push([s.pages[i]!, fresh]);
        this.release(s.pages[i]!);
        s.pages[i] = fresh;
      }
      while (s.pages.length < Math.ceil(end / P)) s.pages.push(this.pool.alloc());
      s.ringHigh = Math.max(s.ringHigh, end);
      captures.push(this.takeSnapshots(s, st));
      const sp = spans[b]!;
      seqs.push(
        this.prefix && st.ids
          ? {
              seq: s.id,
              start: s.length,
              count: st.count,
              ids: st.ids,
              ...(sp.length > 0 ? { firstSpan: sp[0]!.start } : {}),
            }
          : this.prefix && st.idsLater
            ? { seq: s.id, start: s.length, count: st.count, idsLater: true }
            : { seq: s.id, start: s.length, count: st.count },
      );
    }
    return this.layoutPlan(list, seqs, pageCopies, captures, spans);
  }

  /** Moves each planned sequence's length on (after the step's K/V are written). */
  commit(plan: { readonly seqs: readonly StepSeq[] }): void {
    for (const st of plan.seqs) {
      const s = this.seqs.get(st.seq);
      if (!s || s.length !== st.start)
        throw new KVCacheError(
          `commit: sequence ${st.seq} changed since the plan (freed, trimmed or already committed)`,
          "E_KV_SEQ",
        );
    }
    for (const st of plan.seqs) {
      const s = this.get(st.seq);
      s.length = st.start + st.count;
      if (!this.prefix) continue;
      if (st.ids && s.ids.length === st.start) for (const id of st.ids) s.ids.push(id);
      s.idsPending = !st.ids && st.idsLater === true && s.ids.length === st.start;
      // Image blocks: every image's soft tokens share one id, so blocks from a span on could match
      // a prompt with another image. Never register them (the ids alone cannot tell images apart).
      if (st.firstSpan !== undefined) s.noRegisterFrom = Math.min(s.noRegisterFrom, st.firstSpan);
      this.register(s);
    }
  }

  /**
   * The ids of the last committed step of `seq`, planned with idsLater: positions [start, start +
   * ids.length) = up to the sequence's length. Registers the full blocks they complete (prefix
   * cache). Returns false, changing nothing, when the sequence does not track its ids there (no
   * prefix cache, a step without ids, or another step planned since): its blocks from there on
   * are simply never registered.
   */
  provideIds(seq: number, start: number, ids: readonly number[]): boolean {
    const s = this.get(seq);
    if (!s.idsPending || s.ids.length !== start || start + ids.length !== s.length) return false;
    for (const id of ids) s.ids.push(id);
    s.idsPending = false;
    this.register(s);
    return true;
  }

  /** Int32s a decode step of `batch` sequences takes (the plan buffer's steady-state size). */
  decodePlanInts(batch: number): number {
    const ringEntries = this.ringSlots === this.window ? 1 : this.window;
    return (
      (this.capture ? 4 : 3) * batch +
      1 +
      2 * batch +
      (2 * batch + 1 + batch * ringEntries) +
      (2 * batch + 1 + batch * this.pagesPerSeq)
    );
  }

  // ---- internals ----------------------------------------------------------------------------

  private get(seq: number): Seq {
    const s = this.seqs.get(seq);
    if (!s) throw new KVCacheError(`KV cache: no live sequence ${seq}`, "E_KV_SEQ");
    return s;
  }

  /** The ring still holds the W − 1 tokens before position `length` (what the next step reads). */
  private ringIntact(s: Seq, length: number): boolean {
    const first = length - Math.min(length, this.window - 1);
    return first === length || first >= Math.max(s.ringLow, s.ringHigh - this.ringSlots);
  }

  // Page references go through these so the prefix index knows which of its pages are idle.
  private retain(page: number): void {
    this.pool.retain(page);
    this.prefix?.refChanged(page);
  }
  private release(page: number): void {
    this.pool.release(page);
    this.prefix?.refChanged(page);
  }
  private evictable(): number {
    return this.prefix?.evictable ?? 0;
  }

  /**
   * The cached prefix of `prompt` (chain: every matching block) and how much of it a new
   * sequence can start with (blocks): the longest prefix of B = blocks · P tokens whose ring can
   * be restored, i.e. whose blocks ⌊(B − W + 1)/P⌋ … blocks − 1 hold snapshots; ringLow: the first
   * position restored (as many of the last S as the snapshots hold).
   */
  private findPrefix(maxTokens: number, prompt: readonly number[] | undefined): PrefixHit {
    const P = this.pageSize;
    // At least the prompt's last token is computed: its logits are what the caller wants.
    const limit = Math.min(prompt?.length ?? 0, maxTokens) - 1;
    if (!this.prefix || !prompt || limit < P) return { chain: [], blocks: 0, ringLow: 0 };
    const chain = this.prefix.match(prompt, Math.floor(limit / P));
    // No sliding layers: nothing to restore, every cached block is usable.
    if (this.numLocal === 0) return { chain, blocks: chain.length, ringLow: 0 };
    let blocks = 0;
    let ringLow = 0;
    let run = 0; // first block of the current run of blocks with snapshots
    for (let k = 1; k <= chain.length; k++) {
      if (chain[k - 1]!.snap < 0) {
        run = k;
        continue;
      }
      const B = k * P;
      if (run * P <= Math.max(0, B - this.window + 1)) {
        blocks = k;
        ringLow = Math.max(run * P, B - this.ringSlots, 0);
      }
    }
    return { chain, blocks, ringLow };
  }

  /**
   * Snapshot blocks for the blocks a step starts (it writes them from their first position):
   * best effort, a block without one is simply never restorable. Returns whether the step
   * writes snapshot rows for s (its ids are known from position 0 on).
   */
  private takeSnapshots(s: Seq, st: StepRequest): boolean {
    if (!this.capture) return false;
    const P = this.pageSize;
    if (!(st.ids || st.idsLater) || s.ids.length !== s.length) {
      // The blocks being filled can never be registered: give their snapshot blocks back.
      for (let b = 0; b < s.snaps.length; b++)
        if (s.snaps[b]! >= 0) {
          this.prefix!.freeSnapshot(s.snaps[b]!);
          s.snaps[b] = -1;
        }
      return false;
    }
    const end = s.length + st.count;
    while (s.snaps.length < Math.ceil(end / P)) s.snaps.push(-1);
    for (let b = Math.ceil(s.length / P); b * P < end; b++)
      if (s.snaps[b]! < 0) s.snaps[b] = this.prefix!.allocSnapshot();
    return true;
  }

  /**
   * Registers s's full blocks whose ids are known (at commit: their K/V are written). A block
   * already cached under the same ids is not registered twice: s keeps its own page and chains on
   * from the cached entry. Snapshot blocks of full blocks go to their entries (or back to the pool).
   */
  private register(s: Seq): void {
    const P = this.pageSize;
    const index = this.prefix!;
    const full = Math.floor(Math.min(s.ids.length, s.noRegisterFrom) / P);
    for (let b = s.chain.length; b < full; b++) {
      const parent = b === 0 ? null : s.chain[b - 1]!;
      if (parent && !parent.alive) break; // evicted under us: the chain cannot grow
      const ids = s.ids.slice(b * P, (b + 1) * P);
      let e = index.find(parent, ids);
      if (!e) {
        // A page registered under another chain (cannot happen by construction): stop, never alias.
        if (index.has(s.pages[b]!)) break;
        e = index.insert(parent, ids, s.pages[b]!);
      }
      s.chain.push(e);
      const slot = s.snaps[b] ?? -1;
      if (slot >= 0) {
        s.snaps[b] = -1;
        index.giveSnapshot(e, slot);
      }
    }
    // Full blocks that stay unregistered never need their snapshot blocks (those whose ids are
    // still to come keep theirs).
    const settled = Math.floor((s.idsPending ? s.ids.length : s.length) / P);
    for (let b = s.chain.length; b < settled && b < s.snaps.length; b++)
      if (s.snaps[b]! >= 0) {
        index.freeSnapshot(s.snaps[b]!);
        s.snaps[b] = -1;
      }
  }

  /** Indices in s.pages of shared pages a step ending at `end` writes into. */
  private cowPages(s: Seq, end: number): number[] {
    const out: number[] = [];
    const last = Math.min(s.pages.length, Math.ceil(end / this.pageSize));
    for (let i = Math.floor(s.length / this.pageSize); i < last; i++)
      if (this.pool.refcount(s.pages[i]!) > 1) out.push(i);
    return out;
  }

  /** Pages s may still take to reach its maxTokens (a shared page it will write counts as missing). */
  private needed(s: Seq): number {
    const writable = s.pages.length - this.cowPages(s, s.maxTokens).length;
    return Math.max(0, Math.ceil(s.maxTokens / this.pageSize) - writable);
  }

  private reserved(): number {
    let r = 0;
    for (const s of this.seqs.values()) r += this.needed(s);
    return r;
  }

  private layoutPlan(
    list: Seq[],
    seqs: StepSeq[],
    pageCopies: [number, number][],
    captures: boolean[],
    spans: Span[][],
  ): HostPlan {
    const B = list.length;
    const P = this.pageSize;
    const S = this.ringSlots;
    const W = this.window;
    const n = seqs.reduce((a, s) => a + s.count, 0);
    const decode = seqs.every((s) => s.count === 1);
    const ringCtx = seqs.map((s) => Math.min(s.start, W - 1));
    const globalCtx = seqs.map((s) => s.start);
    const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);
    const ringRows = sum(ringCtx) > 0 ? sum(ringCtx) + n : 0;
    const globalRows = sum(globalCtx) > 0 ? sum(globalCtx) + n : 0;
    const singleRingPage = S === W;

    // Field layout: sizes first. Decode offsets depend on the batch size only, and the page
    // lists come last so only their used prefix is uploaded (see uploadLength).
    let size = 0;
    const take = (length: number): HostField => {
      const f = { offset: size, length };
      size += length;
      return f;
    };
    const positions = take(n);
    const qoIndptr = take(B + 1);
    const lastRows = take(B);
    const ringWrite = take(n);
    const globalWrite = take(n);
    // Right after the write rows, so decode offsets still depend on the batch size only.
    const snapWrite = this.capture ? take(n) : null;
    const heads = () => (decode ? { kvIndptr: take(B + 1), kvLen: take(B) } : null);
    const ringHead = heads();
    const globalHead = heads();
    const context = (rows: number): HostContext | null =>
      !decode && rows > 0
        ? { rows, gatherRows: take(rows), chunkRows: take(n), kvIndptr: take(B + 1) }
        : null;
    const ringContext = context(ringRows);
    const globalContext = context(globalRows);
    // Spans widen a prefill's mask; in a decode step (one token each) they cannot (plan() checked).
    const withSpans = !decode && spans.some((x) => x.length > 0);
    const ringLast = withSpans ? take(n) : null;
    const globalLast = withSpans ? take(n) : null;
    const ringDecode: HostDecodeTables | null = ringHead && {
      ...ringHead,
      ...(singleRingPage ? { pageSize: S, maxKvLen: S } : { pageSize: 1, maxKvLen: W }),
      kvIndices: take(B * (singleRingPage ? 1 : W)),
    };
    const globalDecode: HostDecodeTables | null = globalHead && {
      ...globalHead,
      pageSize: P,
      maxKvLen: this.maxSeqLen,
      kvIndices: take(B * this.pagesPerSeq),
    };

    if (this.buf.length < size) this.buf = new Int32Array(Math.max(size, 2 * this.buf.length));
    const d = this.buf.subarray(0, size);
    // Unused entries stay −1; the page-list tail past the used prefix is never read.
    const upload = globalDecode
      ? globalDecode.kvIndices.offset + seqs.reduce((a, st) => a + Math.ceil((st.start + 1) / P), 0)
      : size;
    d.fill(-1, 0, upload);

    const ringRow = (s: Seq, p: number) => s.ring * S + (p % S);
    const pageRow = (s: Seq, p: number) => s.pages[Math.floor(p / P)]! * P + (p % P);
    let row = 0;
    d[qoIndptr.offset] = 0;
    for (let b = 0; b < B; b++) {
      const s = list[b]!;
      const { start, count } = seqs[b]!;
      const end = start + count;
      for (let i = 0; i < count; i++, row++) {
        const p = start + i;
        d[positions.offset + row] = p;
        // Only the sequence's last S tokens stay in the ring: earlier rows of a long chunk would
        // collide with later ones in one scatter.
        d[ringWrite.offset + row] = p >= end - S ? ringRow(s, p) : -1;
        d[globalWrite.offset + row] = pageRow(s, p);
        if (snapWrite) {
          const slot = captures[b] ? (s.snaps[Math.floor(p / P)] ?? -1) : -1;
          d[snapWrite.offset + row] = slot >= 0 ? slot * P + (p % P) : -1;
        }
      }
      d[qoIndptr.offset + b + 1] = row;
      d[lastRows.offset + b] = row - 1;
    }

    if (ringDecode && globalDecode) {
      let ri = 0;
      let gi = 0;
      d[ringDecode.kvIndptr.offset] = 0;
      d[globalDecode.kvIndptr.offset] = 0;
      for (let b = 0; b < B; b++) {
        const s = list[b]!;
        const end = seqs[b]!.start + 1;
        if (singleRingPage) {
          // One page of S slots per ring: slot order does not matter to softmax.
          d[ringDecode.kvIndices.offset + ri++] = s.ring;
          d[ringDecode.kvLen.offset + b] = Math.min(end, S);
        } else {
          // Rings with rollback slots hold more than the window: list the window's rows in order.
          const first = Math.max(0, end - W);
          for (let p = first; p < end; p++) d[ringDecode.kvIndices.offset + ri++] = ringRow(s, p);
          d[ringDecode.kvLen.offset + b] = end - first;
        }
        d[ringDecode.kvIndptr.offset + b + 1] = ri;
        const np = Math.ceil(end / P);
        for (let i = 0; i < np; i++) d[globalDecode.kvIndices.offset + gi++] = s.pages[i]!;
        d[globalDecode.kvIndptr.offset + b + 1] = gi;
        d[globalDecode.kvLen.offset + b] = end;
      }
    }

    const fillContext = (
      c: HostContext | null,
      ctx: number[],
      rowOf: (s: Seq, p: number) => number,
    ) => {
      if (!c) return;
      let r = 0;
      let q = 0;
      d[c.kvIndptr.offset] = 0;
      for (let b = 0; b < B; b++) {
        const s = list[b]!;
        const { start, count } = seqs[b]!;
        for (let p = start - ctx[b]!; p < start; p++) d[c.gatherRows.offset + r++] = rowOf(s, p);
        for (let i = 0; i < count; i++) d[c.chunkRows.offset + q++] = r++; // gather rows stay −1
        d[c.kvIndptr.offset + b + 1] = r;
      }
    };
    fillContext(ringContext, ringCtx, ringRow);
    fillContext(globalContext, globalCtx, pageRow);

    // kv_last: a key list is [context + chunk], so position x is at index x − (start − context).
    if (ringLast && globalLast) {
      let q = 0;
      for (let b = 0; b < B; b++) {
        const { start, count } = seqs[b]!;
        for (const { start: a, end: e } of spans[b]!)
          for (let p = a; p < e; p++) {
            const r = q + p - start;
            d[globalLast.offset + r] = e - 1 - (start - globalCtx[b]!);
            d[ringLast.offset + r] = e - 1 - (start - ringCtx[b]!);
          }
        q += count;
      }
    }

    return {
      data: d,
      uploadLength: upload,
      seqs,
      numTokens: n,
      maxQLen: Math.max(...seqs.map((s) => s.count)),
      decode,
      contextRows: Math.max(ringRows, globalRows),
      positions,
      qoIndptr,
      lastRows,
      ring: {
        writeRows: ringWrite,
        decode: ringDecode,
        context: ringContext,
        snapshotRows: snapWrite,
        kvLast: ringLast,
      },
      global: {
        writeRows: globalWrite,
        decode: globalDecode,
        context: globalContext,
        snapshotRows: null,
        kvLast: globalLast,
      },
      pageCopies,
    };
  }
}

/**
 * The spans of a step's request that lie in its chunk [start, end), sorted; throws a RangeError
 * for a malformed span, overlapping spans, or a span the chunk's first or last position splits.
 */
function chunkSpans(st: StepRequest, start: number, end: number): Span[] {
  if (!st.spans || st.spans.length === 0) return [];
  const name = (x: Span) => `span [${x.start}, ${x.end}) of sequence ${st.seq}`;
  const sorted = [...st.spans].sort((x, y) => x.start - y.start);
  for (let i = 0; i < sorted.length; i++) {
    const x = sorted[i]!;
    if (!Number.isInteger(x.start) || !Number.isInteger(x.end) || x.start < 0 || x.end <= x.start)
      throw new RangeError(`plan: ${name(x)}: needs integers 0 <= start < end`);
    if (i > 0 && x.start < sorted[i - 1]!.end)
      throw new RangeError(`plan: ${name(x)} overlaps ${name(sorted[i - 1]!)}`);
    for (const cut of [start, end])
      if (x.start < cut && cut < x.end)
        throw new RangeError(
          `plan: ${name(x)} is split by the step's chunk [${start}, ${end}) at ${cut}: a span must be prefilled in one chunk (its keys past the chunk would not exist yet)`,
        );
  }
  return sorted.filter((x) => x.start >= start && x.end <= end);
}
