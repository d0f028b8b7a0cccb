// Image-block spans (issue 5 item 2): StepRequest.spans widens a prefill's causal mask so that the
// tokens of one block attend to each other (HF's token_type_ids mask; sliding layers keep their
// window). Through the cache on CPU against the naive full-cache reference of attention.test.ts
// (a query in block [a, b) sees every key < b, within the window on sliding layers), with spans
// in a first chunk, in later chunks (context from the ring and from global pages), two in one
// chunk, in a ragged batch; the plan's kvLast fields; and the spans a plan refuses.
import { describe, expect, it } from "vitest";
import { KVPlanner, type HostField, type HostPlan, type Span } from "../src/planner.js";
import { WINDOW, layout, scenario, type Fp8 } from "./attention.test.js";

const variants: [string, "f32" | "bf16", number, Fp8][] = [
  ["f32, rollback 1", "f32", 1, undefined],
  ["f32, rollback 3", "f32", 3, undefined],
  ["bf16, rollback 1", "bf16", 1, undefined],
  ["bf16, rollback 3, fp8 kScale 0.75 vScale 1.5", "bf16", 3, { kScale: 0.75, vScale: 1.5 }],
];

for (const [label, dtype, rollback, fp8] of variants)
  describe(`image-block spans through the cache vs the naive reference (cpu, ${label})`, () => {
    it("first chunk, later chunks over ring and page context, two per chunk, ragged batch", async () => {
      const s = scenario(dtype, rollback, fp8);
      const a = s.add();
      const b = s.add();
      // Every step brings all of a sequence's spans: the planner uses those in the chunk.
      const sa: Span[] = [];
      const sb: Span[] = [];
      const hasLast = (p: { ring: { kvLast?: unknown }; global: { kvLast?: unknown } }) =>
        p.ring.kvLast != null && p.global.kvLast != null;

      sa.push({ start: 2, end: 6 }); // in the first chunk (no context)
      expect(hasLast(await s.step([{ seq: a, count: 8, spans: sa }]))).toBe(true);

      // a: [8, 18) over 8 cached tokens (ring: the last W − 1, global: all 8), the block at
      // [11, 15); b: its first chunk in the same step, with a block from its first position.
      sa.push({ start: 11, end: 15 });
      sb.push({ start: 0, end: 3 });
      await s.step([
        { seq: a, count: 10, spans: sa },
        { seq: b, count: 6, spans: sb },
      ]);

      // Two blocks in one chunk [18, 30) that wraps the ring: one at its first position, one
      // longer than the window (sliding layers still see only the last W keys of a query).
      sa.push({ start: 18, end: 21 }, { start: 22, end: 29 });
      expect(WINDOW).toBeLessThan(29 - 22);
      await s.step([{ seq: a, count: 12, spans: sa }]);

      // A 1-token row beside a chunk with a block ending at its last position; then a step with
      // no spans in its chunks (only earlier ones): no kvLast.
      sb.push({ start: 9, end: 14 });
      await s.step([
        { seq: a, count: 1, spans: sa },
        { seq: b, count: 8, spans: sb },
      ]);
      expect(hasLast(await s.step([{ seq: a, count: 5, spans: sa }]))).toBe(false);

      // Decode with the sequences' spans (all behind them) and with a 1-token span of its own.
      for (let i = 0; i < 6; i++) {
        const p = await s.step([
          {
            seq: a,
            count: 1,
            spans: [...sa, { start: s.cache.length(a), end: s.cache.length(a) + 1 }],
          },
          { seq: b, count: 1, spans: sb },
        ]);
        expect(p.decode).toBe(true);
        expect(hasLast(p)).toBe(false);
      }

      // A block after decoding, over a long global context.
      const at = s.cache.length(a);
      sa.push({ start: at + 1, end: at + 5 });
      await s.step([{ seq: a, count: 7, spans: sa }]);
      expect(s.stats().worst).toBeGreaterThan(0); // the comparisons ran
      s.cache.dispose();
    });
  });

describe("image-block spans in the plan", () => {
  const field = (h: HostPlan, f: HostField | null) =>
    f ? [...h.data.subarray(f.offset, f.offset + f.length)] : null;

  it("kvLast: the block's last key within each layer kind's [context + chunk] keys", () => {
    const pl = new KVPlanner(layout, { maxSeqLen: 64, maxSeqs: 2, pageSize: 4 });
    const a = pl.add();
    const b = pl.add();
    let h = pl.plan([{ seq: a, count: 8, spans: [{ start: 2, end: 5 }] }]);
    expect(field(h, h.global.kvLast)).toEqual([-1, -1, 4, 4, 4, -1, -1, -1]);
    expect(field(h, h.ring.kvLast)).toEqual([-1, -1, 4, 4, 4, -1, -1, -1]);
    pl.commit(h);
    // a: [8, 18), context 8 (global) and W − 1 = 4 (ring: positions 4…7 are its keys 0…3);
    // b: [0, 3), no context: its keys are its chunk.
    h = pl.plan([
      {
        seq: a,
        count: 10,
        spans: [
          { start: 2, end: 5 },
          { start: 11, end: 15 },
        ],
      },
      { seq: b, count: 3, spans: [{ start: 1, end: 3 }] },
    ]);
    const none = [-1, -1, -1];
    expect(field(h, h.global.kvLast)).toEqual([...none, 14, 14, 14, 14, ...none, -1, 2, 2]);
    expect(field(h, h.ring.kvLast)).toEqual([...none, 10, 10, 10, 10, ...none, -1, 2, 2]);
    pl.commit(h);
    // No span in the chunks, and decode steps: null (the existing path).
    h = pl.plan([
      { seq: a, count: 2, spans: [{ start: 2, end: 5 }] },
      { seq: b, count: 2 },
    ]);
    expect([h.ring.kvLast, h.global.kvLast]).toEqual([null, null]);
    pl.commit(h);
    h = pl.plan([{ seq: a, count: 1, spans: [{ start: 20, end: 21 }] }]);
    expect(h.decode).toBe(true);
    expect([h.ring.kvLast, h.global.kvLast]).toEqual([null, null]);
  });

  it("refuses a chunk boundary inside a span, overlapping and malformed spans, changing nothing", () => {
    const pl = new KVPlanner(layout, { maxSeqLen: 64, maxSeqs: 1, pageSize: 4 });
    const a = pl.add();
    pl.commit(pl.plan([{ seq: a, count: 10 }]));
    const before = pl.stats();
    const plan = (count: number, spans: Span[]) => () => pl.plan([{ seq: a, count, spans }]);
    // The step's first position splits a block begun in an earlier chunk.
    expect(plan(4, [{ start: 8, end: 12 }])).toThrow(RangeError);
    expect(plan(4, [{ start: 8, end: 12 }])).toThrow(
      /span \[8, 12\) of sequence 0 is split .* at 10/,
    );
    // Its last position splits a block that goes on past the chunk.
    expect(plan(4, [{ start: 12, end: 20 }])).toThrow(/span \[12, 20\) .* split .* at 14/);
    // A decode-sized step inside a longer block.
    expect(plan(1, [{ start: 10, end: 13 }])).toThrow(/span \[10, 13\) .* split .* at 11/);
    expect(
      plan(6, [
        { start: 11, end: 14 },
        { start: 13, end: 15 },
      ]),
    ).toThrow(/overlaps/);
    expect(plan(6, [{ start: 12, end: 12 }])).toThrow(/0 <= start < end/);
    expect(plan(6, [{ start: 11.5, end: 13 }])).toThrow(RangeError);
    expect(pl.stats()).toEqual(before);
    expect(pl.length(a)).toBe(10);
    // Boundaries at a span's ends are fine.
    const h = pl.plan([
      {
        seq: a,
        count: 4,
        spans: [
          { start: 8, end: 10 },
          { start: 10, end: 14 },
        ],
      },
    ]);
    expect(field(h, h.global.kvLast)).toEqual([13, 13, 13, 13]);
  });
});
