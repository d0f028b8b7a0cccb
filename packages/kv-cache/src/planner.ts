// The hybrid cache's bookkeeping and per-step plan, in pure TS (no addon): sequences, their ring
// slot (sliding layers) and page table (global layers), page reservations, and the Int32 plan
// every layer's attention reads. HybridKVCache (cache.ts) uploads the plan and owns the storage.
//
// Storage the rows below index (per layer, K and V alike, rows of [Hkv, D]):
//   sliding: maxSeqs rings of S slots; token p of the sequence in ring r lives in row r·S + p % S
//   full:    numPages pages of P slots; token p lives in row pages[⌊p/P⌋]·P + p % P
// A ring keeps the last S tokens; a step needs the W − 1 before its first query (W = window).
import { KVCacheError, KVCacheFullError } from "./errors.js";
import { checkInt, checkLayout, ringGeometry, type AttentionLayout } from "./layout.js";
import { PagePool } from "./pages.js";

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
}

/** One sequence's share of a step: `count` new tokens appended at its current length. */
export interface StepRequest {
  seq: number;
  count: number;
}

/** A sequence in a planned step: its new tokens are positions [start, start + count). */
export interface StepSeq {
  readonly seq: number;
  readonly start: number;
  readonly count: number;
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
  maxTokens: number;
  pages: number[];
}

export interface PlannerStats {
  sequences: number;
  freeSequenceSlots: number;
  numPages: number;
  freePages: number;
  /** pages live sequences may still take up to their declared maxTokens */
  reservedPages: number;
  /** free pages no sequence has reserved: what admission can hand out */
  availablePages: number;
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

  /** Why a new sequence of up to `maxTokens` tokens cannot be admitted now, or null if it can. */
  admission(maxTokens: number = this.maxSeqLen): string | null {
    if (!Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > this.maxSeqLen)
      return `a sequence of ${maxTokens} tokens is outside [1, maxSeqLen = ${this.maxSeqLen}]`;
    if (this.freeRings.length === 0) return `all ${this.maxSeqs} sequence slots are in use`;
    const need = Math.ceil(maxTokens / this.pageSize);
    const avail = this.pool.free - this.reserved();
    if (need > avail)
      return `a sequence of up to ${maxTokens} tokens needs ${need} pages of ${this.pageSize}; ${this.pool.free} of ${this.numPages} are free, ${this.pool.free - Math.max(avail, 0)} of them reserved by live sequences`;
    return null;
  }

  /**
   * Admits a sequence that will hold at most `maxTokens` tokens (default maxSeqLen): its pages
   * are reserved now, so its steps never run out. Throws KVCacheFullError when it does not fit.
   */
  add(maxTokens: number = this.maxSeqLen): number {
    const why = this.admission(maxTokens);
    if (why) throw new KVCacheFullError(`KV cache full: ${why}`);
    const s: Seq = {
      id: this.nextId++,
      ring: this.freeRings.pop()!,
      length: 0,
      ringHigh: 0,
      maxTokens,
      pages: [],
    };
    this.seqs.set(s.id, s);
    return s.id;
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
      maxTokens: max,
      pages,
    };
    // Sharing turns the parent's partial last page copy-on-write for both: check both reservations.
    for (const pg of pages) this.pool.retain(pg);
    const need = this.reserved() + this.needed(child);
    if (need > this.pool.free) {
      for (const pg of pages) this.pool.release(pg);
      throw new KVCacheFullError(
        `KV cache full: fork of sequence ${parent} (up to ${max} tokens) needs ${need} reserved pages, ${this.pool.free} free`,
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
   * throws (E_KV_ROLLBACK: the sliding layers lost the tokens; free and prefill again).
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
    for (const pg of s.pages.splice(keep)) this.pool.release(pg);
    s.length = length;
  }

  /** Releases a sequence: its pages (shared ones when their last holder goes) and ring. */
  free(seq: number): void {
    const s = this.get(seq);
    for (const pg of s.pages) this.pool.release(pg);
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
      availablePages: this.pool.free - reserved,
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
      list.push(s);
      newPages += this.cowPages(s, end).length + Math.max(0, Math.ceil(end / P) - s.pages.length);
      othersReserved -= this.needed(s);
      ownNeeds += Math.max(
        0,
        Math.ceil(s.maxTokens / P) - Math.max(s.pages.length, Math.ceil(end / P)),
      );
    }
    if (newPages + othersReserved + ownNeeds > this.pool.free)
      throw new KVCacheFullError(
        `KV cache full: the step needs ${newPages} new page${newPages === 1 ? "" : "s"} of ${P} tokens; ${this.pool.free} are free and ${othersReserved + ownNeeds} of them are reserved for live sequences`,
      );

    // Take pages: copies of shared pages the step writes into, then fresh ones.
    const pageCopies: [number, number][] = [];
    const seqs: StepSeq[] = [];
    for (let b = 0; b < list.length; b++) {
      const s = list[b]!;
      const end = s.length + steps[b]!.count;
      for (const i of this.cowPages(s, end)) {
        const fresh = this.pool.alloc();
        pageCopies.push([s.pages[i]!, fresh]);
        this.pool.release(s.pages[i]!);
        s.pages[i] = fresh;
      }
      while (s.pages.length < Math.ceil(end / P)) s.pages.push(this.pool.alloc());
      s.ringHigh = Math.max(s.ringHigh, end);
      seqs.push({ seq: s.id, start: s.length, count: steps[b]!.count });
    }
    return this.layoutPlan(list, seqs, pageCopies);
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
    for (const st of plan.seqs) this.get(st.seq).length = st.start + st.count;
  }

  /** Int32s a decode step of `batch` sequences takes (the plan buffer's steady-state size). */
  decodePlanInts(batch: number): number {
    const ringEntries = this.ringSlots === this.window ? 1 : this.window;
    return (
      3 * batch +
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
    return first === length || first >= Math.max(0, s.ringHigh - this.ringSlots);
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

  private layoutPlan(list: Seq[], seqs: StepSeq[], pageCopies: [number, number][]): HostPlan {
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
    const heads = () => (decode ? { kvIndptr: take(B + 1), kvLen: take(B) } : null);
    const ringHead = heads();
    const globalHead = heads();
    const context = (rows: number): HostContext | null =>
      !decode && rows > 0
        ? { rows, gatherRows: take(rows), chunkRows: take(n), kvIndptr: take(B + 1) }
        : null;
    const ringContext = context(ringRows);
    const globalContext = context(globalRows);
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
      ring: { writeRows: ringWrite, decode: ringDecode, context: ringContext },
      global: { writeRows: globalWrite, decode: globalDecode, context: globalContext },
      pageCopies,
    };
  }
}
