// Prefix reuse in the planner (issue 5 item 4), without the addon: full pages registered under a
// chained block hash, shared by a later prompt with the same prefix, kept after their sequence is
// freed and evicted least recently released first; snapshot blocks deciding which cached prefix
// the rings can be restored for; exact-id verification when hashes collide; every reference back
// to zero once the sequences are freed and the index is cleared.
import { describe, expect, it } from "vitest";
import { KVCacheFullError } from "../src/errors.js";
import type { AttentionLayout } from "../src/layout.js";
import { KVPlanner, type HostField, type HostPlan } from "../src/planner.js";

// window 4: a sequence starting at B needs positions [B − 3, B) in its rings.
const layout: AttentionLayout = {
  layerTypes: ["sliding", "sliding", "full"],
  numKeyValueHeads: 1,
  headDim: 4,
  slidingWindow: 4,
};
const globalOnly: AttentionLayout = { ...layout, layerTypes: ["full", "full"] };
const field = (p: HostPlan, f: HostField) =>
  Array.from(p.data.subarray(f.offset, f.offset + f.length));
const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);

/** Prefills `ids` into a sequence in chunks, ids passed with every step. */
function prefill(pl: KVPlanner, seq: number, ids: number[], chunks: number[] = [ids.length]) {
  let at = 0;
  for (const n of chunks) {
    pl.commit(pl.plan([{ seq, count: n, ids: ids.slice(at, at + n) }]));
    at += n;
  }
  expect(at).toBe(ids.length);
}

/** Every page's refcount equals its holders: live sequences' page tables plus the index. */
function checkRefcounts(pl: KVPlanner) {
  const holders = new Int32Array(pl.numPages);
  for (const s of pl.sequences) for (const p of pl.pagesOf(s)) holders[p]!++;
  for (const e of pl.prefix?.entries() ?? []) holders[e.page]!++;
  for (let p = 0; p < pl.numPages; p++) expect(pl.pool.refcount(p)).toBe(holders[p]);
  expect(pl.pool.free).toBe(holders.filter((h) => h === 0).length);
}

describe("prefix reuse: shared pages", () => {
  it("a second request with the same system prompt reuses its pages; only new tokens take pages", () => {
    const pl = new KVPlanner(layout, {
      maxSeqLen: 64,
      maxSeqs: 2,
      pageSize: 4,
      snapshotBlocks: 16,
    });
    const sys = range(0, 20); // 5 blocks
    const a = pl.add(32, [...sys, 100, 101, 102]);
    expect(pl.length(a)).toBe(0); // nothing cached yet
    prefill(pl, a, [...sys, 100, 101, 102], [10, 13]);
    const pagesA = pl.pagesOf(a);
    expect(pl.stats()).toMatchObject({ prefixPages: 5, evictablePages: 0 });
    pl.free(a);
    // The 5 full pages stay (held by the index only); the partial 6th is free again.
    expect(pl.stats()).toMatchObject({
      freePages: pl.numPages - 5,
      prefixPages: 5,
      evictablePages: 5,
    });
    checkRefcounts(pl);

    const promptB = [...sys, 200, 201, 202, 203, 204];
    expect(pl.prefixLookup(promptB)).toEqual({ cached: 20, reusable: 20 });
    const adm = pl.admit(32, promptB);
    const b = adm.seq;
    expect(pl.length(b)).toBe(20);
    expect(pl.pagesOf(b)).toEqual(pagesA.slice(0, 5));
    expect(pl.stats()).toMatchObject({ freePages: pl.numPages - 5, evictablePages: 0 });
    // Ring restore: positions [max(B − S, 0), B) = 16…19 from block 4's snapshot block.
    const slot4 = pl.prefix!.entries().find((e) => e.depth === 4)!.snap;
    expect(slot4).toBeGreaterThanOrEqual(0);
    expect(Array.from(adm.restoreFrom)).toEqual(range(16, 20).map((p) => slot4 * 4 + (p % 4)));
    expect(Array.from(adm.restoreTo)).toEqual(range(16, 20).map((p) => pl.ringOf(b) * 4 + (p % 4)));
    // Prefill only the rest: 5 tokens in 2 new pages; the first plan has 20 tokens of context.
    const p = pl.plan([{ seq: b, count: 5, ids: promptB.slice(20) }]);
    expect(field(p, p.positions)).toEqual(range(20, 25));
    expect(p.global.context!.rows).toBe(25);
    expect(p.ring.context!.rows).toBe(3 + 5);
    pl.commit(p);
    expect(pl.pool.used).toBe(5 + 2);
    checkRefcounts(pl);
    pl.free(b);
    pl.clearPrefixCache();
    expect(pl.stats()).toMatchObject({
      freePages: pl.numPages,
      prefixPages: 0,
      evictablePages: 0,
      freeSnapshotBlocks: 16,
    });
    for (let q = 0; q < pl.numPages; q++) expect(pl.pool.refcount(q)).toBe(0);
  });

  it("without snapshots, sliding layers make reuse impossible: the sequence starts at 0", () => {
    const pl = new KVPlanner(layout, { maxSeqLen: 64, pageSize: 4, prefixCache: true });
    const ids = range(0, 13);
    prefill(pl, pl.add(), ids);
    pl.free(0);
    expect(pl.prefixLookup(ids)).toEqual({ cached: 12, reusable: 0 });
    const s = pl.add(undefined, ids);
    expect(pl.length(s)).toBe(0);
    expect(pl.pagesOf(s)).toEqual([]);
    // A layout without sliding layers needs no snapshot.
    const g = new KVPlanner(globalOnly, { maxSeqLen: 64, pageSize: 4, prefixCache: true });
    prefill(g, g.add(), ids);
    g.free(0);
    expect(g.prefixLookup(ids)).toEqual({ cached: 12, reusable: 12 });
    // At least the prompt's last token is left to compute (its logits are the point).
    expect(g.prefixLookup(ids.slice(0, 12))).toEqual({ cached: 8, reusable: 8 });
    const t = g.add(undefined, ids);
    expect(g.length(t)).toBe(12);
  });

  it("prefix cache off: no index, pages freed with their sequence (the default)", () => {
    const pl = new KVPlanner(layout, { maxSeqLen: 64, pageSize: 4 });
    const ids = range(0, 13);
    const a = pl.add(undefined, ids);
    prefill(pl, a, ids);
    pl.free(a);
    expect(pl.prefix).toBeNull();
    expect(pl.stats()).toMatchObject({ freePages: pl.numPages, prefixPages: 0 });
    expect(
      () => new KVPlanner(layout, { maxSeqLen: 8, prefixCache: false, snapshotBlocks: 2 }),
    ).toThrow(RangeError);
  });

  it("registers blocks filled by decode steps; a step without ids stops registration", () => {
    const pl = new KVPlanner(layout, {
      maxSeqLen: 64,
      pageSize: 4,
      rollback: 12,
      snapshotBlocks: 8,
    });
    const a = pl.add();
    prefill(pl, a, range(0, 6));
    for (let i = 6; i < 9; i++) pl.commit(pl.plan([{ seq: a, count: 1, ids: [i] }]));
    expect(pl.stats().prefixPages).toBe(2);
    pl.commit(pl.plan([{ seq: a, count: 4 }])); // no ids: positions 9…12 unknown
    expect(pl.stats().prefixPages).toBe(2);
    pl.commit(pl.plan([{ seq: a, count: 4, ids: range(13, 17) }]));
    expect(pl.stats().prefixPages).toBe(2);
    // Snapshot blocks of blocks that can never register went back to the pool.
    expect(pl.stats().freeSnapshotBlocks).toBe(8 - 2);
    // Trimming back to the known ids makes the sequence registrable again.
    pl.trim(a, 9);
    pl.commit(pl.plan([{ seq: a, count: 4, ids: range(9, 13) }]));
    expect(pl.stats().prefixPages).toBe(3);
    expect(() => pl.plan([{ seq: a, count: 2, ids: [1] }])).toThrow(/1 ids for 2 tokens/);
  });

  it("idsLater + provideIds (pipelined decoding) registers exactly what steps with ids do", () => {
    const opts = { maxSeqLen: 64, pageSize: 4, snapshotBlocks: 8 };
    const eager = new KVPlanner(layout, opts);
    const late = new KVPlanner(layout, opts);
    const a = eager.add();
    const b = late.add();
    prefill(eager, a, range(0, 6));
    prefill(late, b, range(0, 6));
    // Decode 6…17 one token a step: `late` learns each step's id only after committing it.
    for (let i = 6; i < 18; i++) {
      const pe = eager.plan([{ seq: a, count: 1, ids: [i] }]);
      const p = late.plan([{ seq: b, count: 1, idsLater: true }]);
      // Snapshot rows are written as for a step with ids (the block may still register).
      expect(field(p, p.ring.snapshotRows!)).toEqual(field(pe, pe.ring.snapshotRows!));
      eager.commit(pe);
      late.commit(p);
      expect(late.provideIds(b, i, [i])).toBe(true);
      expect(late.stats()).toEqual(eager.stats());
    }
    expect(late.stats().prefixPages).toBe(4);
    const ids = (pl: KVPlanner) => pl.prefix!.entries().map((e) => [e.page, e.snap >= 0]);
    expect(ids(late)).toEqual(ids(eager));
    expect(late.prefixLookup([...range(0, 18), 99])).toEqual(
      eager.prefixLookup([...range(0, 18), 99]),
    );
    // A wrong start or length, or ids already given: nothing changes.
    late.commit(late.plan([{ seq: b, count: 1, idsLater: true }]));
    expect(late.provideIds(b, 17, [17, 18])).toBe(false);
    expect(late.provideIds(b, 19, [18])).toBe(false);
    // The pending position rolled back (the discarded extra token): registrable again with ids.
    late.trim(b, 18);
    expect(late.provideIds(b, 18, [18])).toBe(false);
    late.commit(late.plan([{ seq: b, count: 2, ids: [18, 19] }]));
    eager.commit(eager.plan([{ seq: a, count: 2, ids: [18, 19] }]));
    expect(late.stats()).toEqual(eager.stats());
    // A step planned before the ids came ends registration, as a step without ids does.
    late.commit(late.plan([{ seq: b, count: 1, idsLater: true }]));
    late.commit(late.plan([{ seq: b, count: 4, ids: range(21, 25) }]));
    expect(late.provideIds(b, 20, [20])).toBe(false);
    expect(late.stats().prefixPages).toBe(5);
    late.free(b);
    checkRefcounts(late);
    // Without a prefix cache there is nothing to register.
    const plain = new KVPlanner(layout, { maxSeqLen: 64, pageSize: 4 });
    const c = plain.add();
    plain.commit(plain.plan([{ seq: c, count: 1, idsLater: true }]));
    expect(plain.provideIds(c, 0, [0])).toBe(false);
  });

  it("plan: snapshot rows per token (decode offsets still depend on the batch size only)", () => {
    const pl = new KVPlanner(layout, { maxSeqLen: 32, maxSeqs: 2, pageSize: 4, snapshotBlocks: 4 });
    const a = pl.add();
    const p = pl.plan([{ seq: a, count: 6, ids: range(0, 6) }]);
    // Blocks 0 and 1 take snapshot blocks 0 and 1 (lowest first).
    expect(field(p, p.ring.snapshotRows!)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(p.global.snapshotRows).toBeNull();
    pl.commit(p);
    const b = pl.add();
    pl.commit(pl.plan([{ seq: b, count: 2 }])); // no ids: no snapshot rows
    const d = pl.plan([
      { seq: a, count: 1, ids: [6] },
      { seq: b, count: 1, ids: [0] },
    ]);
    expect(d.data.length).toBe(pl.decodePlanInts(2));
    expect(field(d, d.ring.snapshotRows!)).toEqual([1 * 4 + 2, -1]);
  });
});

describe("prefix reuse: snapshots decide what the rings can restore", () => {
  it("falls back to the longest prefix whose window has snapshots", () => {
    // Pages of 2: a boundary B needs blocks covering [B − 3, B), i.e. 2 blocks. 3 snapshot blocks
    // for a 12-token prefill: blocks 0, 1, 2 get them, 3…5 do not.
    const pl = new KVPlanner(layout, { maxSeqLen: 64, pageSize: 2, snapshotBlocks: 3 });
    const ids = range(0, 12);
    prefill(pl, pl.add(), ids);
    pl.free(0);
    expect(pl.prefix!.entries().map((e) => e.snap >= 0)).toEqual([
      true,
      true,
      true,
      false,
      false,
      false,
    ]);
    expect(pl.prefixLookup([...ids, 99])).toEqual({ cached: 12, reusable: 6 });
    const adm = pl.admit(undefined, [...ids, 99]);
    expect(adm.reused).toBe(6);
    // S = 4: restores positions 2…5 (the snapshots hold them all).
    expect(adm.restoreTo.length).toBe(4);
    // trim: within the restored positions only.
    expect(pl.canTrim(adm.seq, 5)).toBe(true); // needs 2…4
    expect(pl.canTrim(adm.seq, 4)).toBe(false); // needs 1…3: 1 was never restored
    expect(pl.canTrim(adm.seq, 0)).toBe(true);
  });

  it("snapshot blocks are reused least recently used first when the pool runs out", () => {
    const pl = new KVPlanner(layout, { maxSeqLen: 64, maxSeqs: 2, pageSize: 4, snapshotBlocks: 2 });
    const x = range(0, 8);
    prefill(pl, pl.add(), x);
    pl.free(0);
    expect(pl.prefixLookup([...x, 1]).reusable).toBe(8);
    // Another prompt takes both snapshot blocks from x's (LRU) entries: x is no longer reusable
    // but its pages are still cached.
    const y = range(100, 108);
    const s = pl.add();
    prefill(pl, s, y);
    expect(pl.prefixLookup([...x, 1])).toEqual({ cached: 8, reusable: 0 });
    expect(pl.prefixLookup([...y, 1])).toEqual({ cached: 8, reusable: 8 });
    pl.free(s);
    checkRefcounts(pl);
  });
});

describe("prefix reuse: LRU eviction under pool pressure", () => {
  it("counts idle prefix pages as available and evicts least recently released, deepest first", () => {
    const pl = new KVPlanner(globalOnly, {
      maxSeqLen: 32,
      maxSeqs: 3,
      pageSize: 4,
      numPages: 8,
      prefixCache: true,
    });
    const x = range(0, 16);
    const y = range(50, 66);
    prefill(pl, pl.add(16), x);
    pl.free(0);
    prefill(pl, pl.add(16), y);
    pl.free(1);
    expect(pl.stats()).toMatchObject({ freePages: 0, evictablePages: 8, availablePages: 8 });
    expect(pl.admission(32)).toBeNull();
    // 3 pages for a new sequence: x's last three blocks go (x was released first).
    const c = pl.add(12);
    pl.commit(pl.plan([{ seq: c, count: 12 }]));
    expect(pl.prefixLookup([...x, 0]).cached).toBe(4);
    expect(pl.prefixLookup([...y, 0]).cached).toBe(16);
    checkRefcounts(pl);
    // A hit holds its pages: they are no longer evictable, and admission says so.
    const d = pl.add(20, [...y, 0]);
    expect(pl.length(d)).toBe(16);
    expect(pl.stats()).toMatchObject({ freePages: 0, evictablePages: 1, reservedPages: 1 });
    expect(pl.admission(8)).toMatch(/needs 2 pages of 4; 0 of 8 are free and 1 evictable/);
    expect(() => pl.add(8)).toThrow(KVCacheFullError);
    // d's reservation is served by evicting x's block 0.
    pl.commit(pl.plan([{ seq: d, count: 4 }]));
    expect(pl.prefixLookup([...x, 0]).cached).toBe(0);
    pl.free(c);
    pl.free(d);
    checkRefcounts(pl);
    pl.clearPrefixCache();
    expect(pl.pool.free).toBe(pl.numPages);
  });

  it("a hit on an idle prefix counts the pages it shares as no longer evictable", () => {
    const pl = new KVPlanner(globalOnly, {
      maxSeqLen: 32,
      maxSeqs: 2,
      pageSize: 4,
      numPages: 4,
      prefixCache: true,
    });
    const x = range(0, 16);
    prefill(pl, pl.add(16), x);
    pl.free(0);
    // 4 idle pages. A sequence sharing 3 of them and growing to 16 tokens needs 1 more: it fits
    // (the 4th idle page). Growing to 20 would need 2 and only 1 page is evictable then.
    expect(pl.admission(20, [...x.slice(0, 12), 7])).toMatch(/needs 2 pages of 4 \(3 more shared/);
    const s = pl.add(16, [...x.slice(0, 12), 7]);
    expect(pl.length(s)).toBe(12);
    pl.commit(pl.plan([{ seq: s, count: 4, ids: [7, 7, 7, 7] }]));
    expect(pl.prefixLookup([...x, 0]).cached).toBe(12);
    pl.free(s);
    checkRefcounts(pl);
  });
});

describe("prefix reuse: hashes are never trusted alone", () => {
  it("with every block hashing alike, lookups still compare ids and parents exactly", () => {
    const pl = new KVPlanner(globalOnly, {
      maxSeqLen: 32,
      maxSeqs: 3,
      pageSize: 4,
      prefixCache: true,
      prefixHash: () => 42,
    });
    const x = [1, 2, 3, 4, 5, 6, 7, 8];
    const y = [1, 2, 3, 4, 9, 9, 9, 9];
    prefill(pl, pl.add(), x);
    prefill(pl, pl.add(), y);
    // y's block 0 equals x's: registered once (y keeps its own page, chains from x's entry).
    expect(pl.stats().prefixPages).toBe(3);
    expect(new Set(pl.prefix!.entries().map((e) => e.hash))).toEqual(new Set([42]));
    expect(pl.prefixLookup([...x, 0]).cached).toBe(8);
    expect(pl.prefixLookup([...y, 0]).cached).toBe(8);
    expect(pl.prefixLookup([1, 2, 3, 4, 9, 9, 9, 8, 0]).cached).toBe(4);
    // Same ids as x's block 1 at depth 0: same hash, same ids, another parent: no match.
    expect(pl.prefixLookup([5, 6, 7, 8, 1, 2, 3, 4, 0]).cached).toBe(0);
    const s = pl.add(undefined, [...y, 0]);
    const pagesX = pl.pagesOf(0);
    const pagesY = pl.pagesOf(1);
    expect(pl.pagesOf(s)).toEqual([pagesX[0], pagesY[1]]);
    for (const q of [0, 1, s]) pl.free(q);
    pl.clearPrefixCache();
    expect(pl.pool.free).toBe(pl.numPages);
    checkRefcounts(pl);
  });
});

describe("prefix reuse with forks and rollback", () => {
  it("forks and trims keep every reference accounted for", () => {
    const pl = new KVPlanner(layout, {
      maxSeqLen: 64,
      maxSeqs: 3,
      pageSize: 4,
      rollback: 2,
      snapshotBlocks: 12,
    });
    const a = pl.add();
    prefill(pl, a, range(0, 10));
    const b = pl.fork(a);
    pl.commit(pl.plan([{ seq: b, count: 6, ids: range(10, 16) }]));
    pl.commit(pl.plan([{ seq: a, count: 6, ids: range(30, 36) }]));
    expect(pl.stats().prefixPages).toBe(2 + 2 + 2);
    // Trim a into a registered block and write other tokens: copy-on-write keeps the index's page.
    pl.trim(a, 14);
    const page3 = pl.pagesOf(a)[3]!;
    const p = pl.plan([{ seq: a, count: 3, ids: [7, 7, 7] }]);
    expect(p.pageCopies.map(([src]) => src)).toEqual([page3]);
    pl.commit(p);
    expect(pl.prefixLookup([...range(0, 10), ...range(30, 36), 0]).cached).toBe(16);
    checkRefcounts(pl);
    const c = pl.add(undefined, [...range(0, 10), ...range(10, 16), 5]);
    expect(pl.length(c)).toBe(16);
    for (const q of [a, b, c]) pl.free(q);
    checkRefcounts(pl);
    pl.clearPrefixCache();
    expect(pl.stats()).toMatchObject({ freePages: pl.numPages, freeSnapshotBlocks: 12 });
  });
});

describe("prefix reuse and image spans", () => {
  it("never registers blocks from the first span on (every image's soft tokens share one id)", () => {
    const pl = new KVPlanner(layout, {
      maxSeqLen: 64,
      maxSeqs: 2,
      pageSize: 4,
      snapshotBlocks: 16,
    });
    // 6 text tokens, an "image" of 8 identical soft-token ids at [6, 14), then text.
    const ids = [...range(0, 6), ...Array<number>(8).fill(262144), ...range(20, 30)];
    const a = pl.add(40, ids);
    pl.commit(pl.plan([{ seq: a, count: ids.length, ids, spans: [{ start: 6, end: 14 }] }]));
    // Only block 0 ([0, 4)) lies before the span: block 1 ([4, 8)) already holds image tokens.
    expect(pl.stats()).toMatchObject({ prefixPages: 1 });
    pl.free(a);
    // The same ids (as a prompt with another image would bring) reuse at most the text block.
    const b = pl.add(40, ids);
    expect(pl.length(b)).toBeLessThanOrEqual(4);
    pl.free(b);
    pl.clearPrefixCache();
    checkRefcounts(pl);
  });
});
