// The planner's bookkeeping, without the addon: admission and page reservations, pool
// exhaustion as a clean error, fork refcounts and copy-on-write, rollback limits, plan layout.
import { describe, expect, it } from "vitest";
import { KVCacheError, KVCacheFullError } from "../src/errors.js";
import type { AttentionLayout } from "../src/layout.js";
import { KVPlanner, type HostField, type HostPlan } from "../src/planner.js";

// 3 layers (sliding, sliding, full); window 4.
const layout: AttentionLayout = {
  layerTypes: ["sliding", "sliding", "full"],
  numKeyValueHeads: 1,
  headDim: 4,
  slidingWindow: 4,
};
const field = (p: HostPlan, f: HostField) =>
  Array.from(p.data.subarray(f.offset, f.offset + f.length));
const codeOf = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    return (e as KVCacheError).code;
  }
  return "no error";
};

describe("admission and page reservations", () => {
  it("reserves a sequence's pages up front and refuses what does not fit", () => {
    const pl = new KVPlanner(layout, { maxSeqLen: 32, maxSeqs: 3, pageSize: 4, numPages: 10 });
    const a = pl.add(24); // 6 pages reserved
    expect(pl.stats()).toMatchObject({ freePages: 10, reservedPages: 6, availablePages: 4 });
    expect(pl.admission(20)).toMatch(/needs 5 pages of 4; 10 of 10 are free, 6 of them reserved/);
    expect(() => pl.add(20)).toThrow(KVCacheFullError);
    const b = pl.add(16);
    expect(pl.stats().availablePages).toBe(0);
    // Within its reservation a sequence never fails, whatever the others do.
    pl.commit(pl.plan([{ seq: a, count: 24 }]));
    expect(pl.stats()).toMatchObject({ freePages: 4, reservedPages: 4, availablePages: 0 });
    // Past its reservation it takes unreserved pages only: none are left, the step is refused
    // and nothing changes.
    const before = { ...pl.stats(), len: pl.length(a) };
    const err = (() => {
      try {
        pl.plan([{ seq: a, count: 1 }]);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(KVCacheFullError);
    expect((err as Error).message).toMatch(
      /needs 1 new page of 4 tokens; 4 are free and 4 of them are reserved/,
    );
    expect({ ...pl.stats(), len: pl.length(a) }).toEqual(before);
    pl.free(b);
    pl.commit(pl.plan([{ seq: a, count: 1 }]));
    expect(pl.length(a)).toBe(25);
    expect(pl.stats()).toMatchObject({ freePages: 3, reservedPages: 0 });
  });

  it("runs out of sequence slots with a clear error", () => {
    const pl = new KVPlanner(layout, { maxSeqLen: 8, maxSeqs: 2 });
    pl.add();
    const b = pl.add();
    expect(pl.admission()).toMatch(/all 2 sequence slots are in use/);
    expect(codeOf(() => pl.add())).toBe("E_KV_FULL");
    expect(codeOf(() => pl.fork(b))).toBe("E_KV_FULL");
    pl.free(b);
    expect(pl.admission()).toBeNull();
  });

  it("rejects steps past maxSeqLen, unknown and repeated sequences, empty counts", () => {
    const pl = new KVPlanner(layout, { maxSeqLen: 8, maxSeqs: 2 });
    const a = pl.add();
    expect(codeOf(() => pl.plan([{ seq: a, count: 9 }]))).toBe("E_KV_RANGE");
    expect(codeOf(() => pl.plan([{ seq: 7, count: 1 }]))).toBe("E_KV_SEQ");
    expect(
      codeOf(() =>
        pl.plan([
          { seq: a, count: 1 },
          { seq: a, count: 1 },
        ]),
      ),
    ).toBe("E_KV_SEQ");
    expect(codeOf(() => pl.plan([{ seq: a, count: 0 }]))).toBe("E_KV_RANGE");
    expect(codeOf(() => pl.plan([]))).toBe("E_KV_SEQ");
    expect(pl.stats().freePages).toBe(pl.numPages);
  });

  it("a stale plan cannot be committed", () => {
    const pl = new KVPlanner(layout, { maxSeqLen: 8 });
    const a = pl.add();
    const p = pl.plan([{ seq: a, count: 2 }]);
    pl.commit(p);
    expect(codeOf(() => pl.commit(p))).toBe("E_KV_SEQ");
  });
});

describe("fork, copy-on-write and free", () => {
  it("shares pages with refcounts, copies a shared partial page on write, frees at zero", () => {
    const pl = new KVPlanner(layout, { maxSeqLen: 32, maxSeqs: 3, pageSize: 4 });
    const a = pl.add();
    pl.commit(pl.plan([{ seq: a, count: 10 }])); // pages 0, 1 full; page 2 holds 2 tokens
    const pagesA = pl.pagesOf(a);
    expect(pagesA).toHaveLength(3);
    const b = pl.fork(a);
    expect(pl.pagesOf(b)).toEqual(pagesA);
    expect(pagesA.map((p) => pl.pool.refcount(p))).toEqual([2, 2, 2]);
    expect(pl.length(b)).toBe(10);
    expect(pl.ringOf(b)).not.toBe(pl.ringOf(a));
    const used = pl.pool.used;

    // b writes into the shared partial page: it gets a copy (one page copy in the plan).
    const p = pl.plan([{ seq: b, count: 3 }]);
    pl.commit(p);
    const pagesB = pl.pagesOf(b);
    expect(pagesB.slice(0, 2)).toEqual(pagesA.slice(0, 2));
    expect(pagesB[2]).not.toBe(pagesA[2]);
    expect(p.pageCopies).toEqual([[pagesA[2], pagesB[2]]]);
    expect(pl.pool.used).toBe(used + 2); // the copy, and a fresh page for token 12
    expect([pagesA[2], pagesB[2]].map((q) => pl.pool.refcount(q!))).toEqual([1, 1]);
    // Its write rows land in the copy, never in a's page.
    expect(field(p, p.global.writeRows)).toEqual([
      pagesB[2]! * 4 + 2,
      pagesB[2]! * 4 + 3,
      pagesB[3]! * 4 + 0,
    ]);

    // a writes into its (now exclusive) page 2 in place, then into a new page.
    const q = pl.plan([{ seq: a, count: 3 }]);
    pl.commit(q);
    expect(q.pageCopies).toEqual([]);
    expect(pl.pagesOf(a).slice(0, 3)).toEqual(pagesA);

    pl.free(a);
    expect(pagesA.slice(0, 2).map((x) => pl.pool.refcount(x))).toEqual([1, 1]);
    expect(pl.pool.refcount(pagesA[2]!)).toBe(0);
    pl.free(b);
    expect(pl.pool.free).toBe(pl.numPages);
    expect(pl.stats()).toMatchObject({ sequences: 0, freeSequenceSlots: 3, reservedPages: 0 });
  });

  it("reserves the copy a shared partial page will need, for parent and child", () => {
    // 5 pages. a (up to 12 tokens = 3 pages) holds 6 tokens: p0 full, p1 with 2 of 4.
    const pl = new KVPlanner(layout, { maxSeqLen: 12, maxSeqs: 2, pageSize: 4, numPages: 5 });
    const a = pl.add(12);
    pl.commit(pl.plan([{ seq: a, count: 6 }]));
    // Sharing p1 makes it copy-on-write for both: a fork up to 12 tokens needs 2 pages (p1's
    // copy + 1) and a now needs 2 as well: 4 > 3 free.
    expect(codeOf(() => pl.fork(a, 12))).toBe("E_KV_FULL");
    expect(pl.pagesOf(a).map((p) => pl.pool.refcount(p))).toEqual([1, 1]); // unchanged
    const b = pl.fork(a, 7); // b: p1's copy; a: its copy + 1 page
    expect(pl.stats()).toMatchObject({ freePages: 3, reservedPages: 3, availablePages: 0 });
    // Every step within the reservations succeeds: b copies p1, then a owns p1 alone again.
    pl.commit(pl.plan([{ seq: b, count: 1 }]));
    expect(pl.stats()).toMatchObject({ freePages: 2, reservedPages: 1, availablePages: 1 });
    pl.commit(pl.plan([{ seq: a, count: 6 }]));
    expect(pl.stats()).toMatchObject({ freePages: 1, reservedPages: 0, availablePages: 1 });
  });
});

describe("rollback (trim)", () => {
  it("any amount before the ring wraps; `rollback` tokens after; never silently wrong", () => {
    // window 4, rollback 2: rings of S = 5 slots.
    const pl = new KVPlanner(layout, { maxSeqLen: 40, maxSeqs: 1, pageSize: 4, rollback: 2 });
    expect(pl.ringSlots).toBe(5);
    const a = pl.add();
    pl.commit(pl.plan([{ seq: a, count: 5 }]));
    expect(pl.canTrim(a, 0)).toBe(true); // not wrapped yet
    pl.trim(a, 1);
    expect(pl.length(a)).toBe(1);
    expect(pl.pagesOf(a)).toHaveLength(1); // pages past the new length are released
    pl.commit(pl.plan([{ seq: a, count: 19 }])); // 20 tokens: the ring holds 15..19
    expect(pl.canTrim(a, 18)).toBe(true); // needs 15..17
    expect(pl.canTrim(a, 17)).toBe(false); // needs 14..16: 14 was overwritten
    expect(codeOf(() => pl.trim(a, 17))).toBe("E_KV_ROLLBACK");
    expect(pl.length(a)).toBe(20);
    pl.trim(a, 18);
    pl.commit(pl.plan([{ seq: a, count: 1 }]));
    expect(pl.canTrim(a, 18)).toBe(true); // the high-water mark is still 20
    expect(pl.canTrim(a, 17)).toBe(false);
    expect(pl.canTrim(a, 0)).toBe(true); // nothing to restore
  });

  it("a planned but uncommitted chunk that wrapped the ring makes the next plan fail loudly", () => {
    const pl = new KVPlanner(layout, { maxSeqLen: 40, maxSeqs: 1 });
    const a = pl.add();
    pl.commit(pl.plan([{ seq: a, count: 6 }]));
    pl.plan([{ seq: a, count: 3 }]); // abandoned: its K/V may have overwritten tokens 3..5
    expect(codeOf(() => pl.plan([{ seq: a, count: 1 }]))).toBe("E_KV_ROLLBACK");
    const b = new KVPlanner(layout, { maxSeqLen: 40, maxSeqs: 1 });
    const s = b.add();
    b.commit(b.plan([{ seq: s, count: 6 }]));
    b.plan([{ seq: s, count: 1 }]); // an abandoned decode step is always safe to redo
    b.commit(b.plan([{ seq: s, count: 1 }]));
    expect(b.length(s)).toBe(7);
  });
});

describe("plan layout", () => {
  it("prefill: positions, ring rows (last S kept), page rows, context gather rows", () => {
    const pl = new KVPlanner(layout, { maxSeqLen: 32, maxSeqs: 2, pageSize: 4 });
    const a = pl.add();
    const b = pl.add();
    pl.commit(pl.plan([{ seq: a, count: 6 }]));
    const p = pl.plan([
      { seq: a, count: 6 },
      { seq: b, count: 2 },
    ]);
    const ra = pl.ringOf(a) * 4;
    const rb = pl.ringOf(b) * 4;
    expect(p.decode).toBe(false);
    expect(field(p, p.positions)).toEqual([6, 7, 8, 9, 10, 11, 0, 1]);
    expect(field(p, p.qoIndptr)).toEqual([0, 6, 8]);
    expect(field(p, p.lastRows)).toEqual([5, 7]);
    // a's chunk is longer than the ring (S = W = 4): only positions 8..11 are written.
    expect(field(p, p.ring.writeRows)).toEqual([
      -1,
      -1,
      ra + 0,
      ra + 1,
      ra + 2,
      ra + 3,
      rb,
      rb + 1,
    ]);
    // Ring context: a's 3 tokens before position 6 (3, 4, 5 in slots 3, 0, 1), none for b.
    const c = p.ring.context!;
    expect(c.rows).toBe(3 + 6 + 2);
    expect(field(p, c.gatherRows)).toEqual([
      ra + 3,
      ra + 0,
      ra + 1,
      -1,
      -1,
      -1,
      -1,
      -1,
      -1,
      -1,
      -1,
    ]);
    expect(field(p, c.chunkRows)).toEqual([3, 4, 5, 6, 7, 8, 9, 10]);
    expect(field(p, c.kvIndptr)).toEqual([0, 9, 11]);
    // Global context: all 6 of a's tokens.
    const g = p.global.context!;
    const pa = pl.pagesOf(a);
    expect(field(p, g.gatherRows).slice(0, 6)).toEqual(
      [0, 1, 2, 3, 4, 5].map((t) => pa[t >> 2]! * 4 + (t % 4)),
    );
    expect(field(p, g.kvIndptr)).toEqual([0, 12, 14]);
    expect(p.contextRows).toBe(14);
    expect(p.maxQLen).toBe(6);
  });

  it("decode: tables at fixed offsets per batch size (a captured graph replays them)", () => {
    const pl = new KVPlanner(layout, { maxSeqLen: 32, maxSeqs: 2, pageSize: 4 });
    const a = pl.add();
    const b = pl.add();
    pl.commit(
      pl.plan([
        { seq: a, count: 9 },
        { seq: b, count: 2 },
      ]),
    );
    const p1 = pl.plan([
      { seq: a, count: 1 },
      { seq: b, count: 1 },
    ]);
    const offsets = (p: HostPlan) => [
      p.positions,
      p.ring.writeRows,
      p.global.writeRows,
      p.ring.decode!.kvIndices,
      p.global.decode!.kvIndices,
      p.global.decode!.kvLen,
    ];
    const o1 = offsets(p1);
    expect(p1.decode).toBe(true);
    expect(p1.data.length).toBe(pl.decodePlanInts(2));
    expect(field(p1, p1.ring.decode!.kvIndices)).toEqual([pl.ringOf(a), pl.ringOf(b)]);
    expect(field(p1, p1.ring.decode!.kvLen)).toEqual([4, 3]); // min(n, W)
    expect(field(p1, p1.global.decode!.kvLen)).toEqual([10, 3]);
    expect(field(p1, p1.global.decode!.kvIndptr)).toEqual([0, 3, 4]);
    expect(p1.global.decode!.kvIndices.length).toBe(2 * 8);
    pl.commit(p1);
    for (let i = 0; i < 5; i++)
      pl.commit(
        pl.plan([
          { seq: a, count: 1 },
          { seq: b, count: 1 },
        ]),
      );
    const p2 = pl.plan([
      { seq: a, count: 1 },
      { seq: b, count: 1 },
    ]);
    expect(offsets(p2)).toEqual(o1);
    expect(field(p2, p2.global.decode!.kvIndptr)).toEqual([0, 4, 7]); // 16 and 9 tokens
  });

  it("rings with rollback slots list the window's rows in position order", () => {
    const pl = new KVPlanner(layout, { maxSeqLen: 32, pageSize: 4, rollback: 3 }); // S = 6
    const a = pl.add();
    pl.commit(pl.plan([{ seq: a, count: 9 }]));
    const p = pl.plan([{ seq: a, count: 1 }]);
    const t = p.ring.decode!;
    expect(t.pageSize).toBe(1);
    expect(field(p, t.kvIndices)).toEqual([6, 7, 8, 9].map((x) => x % 6));
    expect(field(p, t.kvLen)).toEqual([4]);
  });
});
