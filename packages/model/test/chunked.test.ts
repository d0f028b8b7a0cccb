// Prefill through a filled cache (issue 5): a prompt fed in chunks, a live session fed turn by
// turn, sequences batched in one step, forked and rolled back, each against the one-shot
// prefill of the same tokens and against HF transformers' float32 goldens. The chunks cross the
// sliding window (16 for tiny-1b, 12 for tiny-27b) and wrap the rings.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadTextModel, type Gemma3TextModel } from "../src/index.js";
import { argmax, fixtures, maxAbsDiff, take } from "./golden.js";

// CPU float32 on both sides: one-shot and chunked runs differ only in which buffer a key is read
// from (summation order is the same), and HF by summation order (measured 5e-6): 1e-4 is tight.
const TOL = 1e-4;

for (const name of ["tiny-1b", "tiny-27b"]) {
  describe(`${name}: prefill over a filled cache equals the one-shot prefill`, () => {
    const dir = join(fixtures, name);
    const meta = JSON.parse(readFileSync(join(dir, "goldens.json"), "utf8")) as {
      prompt_ids: number[];
      greedy_ids: number[];
      vocab: number;
    };
    const f32 = (file: string) => {
      const b = readFileSync(join(dir, file));
      return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
    };
    const hf = f32("logits.f32");
    const hfGreedy = f32("greedy_logits.f32");
    const V = meta.vocab;
    const prompt = meta.prompt_ids;
    let model: Gemma3TextModel;

    /** Logits [ids.length, V] of a fresh one-shot prefill. */
    async function oneShot(ids: number[]): Promise<Float32Array> {
      const seq = model.newCache(ids.length + 1);
      try {
        return await take(model, ids, seq);
      } finally {
        seq.dispose();
      }
    }

    beforeAll(async () => {
      model = await loadTextModel(dir, { device: "cpu", dtype: "f32" });
    });
    afterAll(() => model.dispose());

    for (const split of [
      [7, 13, 20],
      [3, 17, 1, 19],
      [1, 1, 30, 8],
    ])
      it(`chunks ${split.join(" + ")}, then 24 greedy tokens`, async () => {
        expect(split.reduce((a, b) => a + b)).toBe(prompt.length);
        const seq = model.newCache(prompt.length + meta.greedy_ids.length + 1);
        const logits = new Float32Array(prompt.length * V);
        let at = 0;
        for (const n of split) {
          logits.set(await take(model, prompt.slice(at, at + n), seq), at * V);
          at += n;
        }
        expect(seq.length).toBe(prompt.length);
        expect(maxAbsDiff(logits, await oneShot(prompt))).toBeLessThan(TOL);
        expect(maxAbsDiff(logits, hf)).toBeLessThan(TOL);

        const ids: number[] = [];
        const stepLogits = new Float32Array(meta.greedy_ids.length * V);
        let next = argmax(logits.subarray((prompt.length - 1) * V));
        for (let i = 0; i < meta.greedy_ids.length; i++) {
          ids.push(next);
          const l = await take(model, [next], seq, false);
          stepLogits.set(l, i * V);
          next = argmax(l);
        }
        seq.dispose();
        expect(ids).toEqual(meta.greedy_ids);
        expect(maxAbsDiff(stepLogits, hfGreedy)).toBeLessThan(TOL);
      });

    it("a live session prefills only the new turn", async () => {
      // Turn 1 (18 tokens), 6 generated tokens, turn 2 (the other 22): the turn-2 logits equal
      // the one-shot prefill of the whole conversation.
      const seq = model.newCache(64);
      const turn1 = prompt.slice(0, 18);
      let next = argmax((await take(model, turn1, seq, false)).subarray(0, V));
      const generated: number[] = [];
      for (let i = 0; i < 6; i++) {
        generated.push(next);
        next = argmax(await take(model, [next], seq, false));
      }
      const turn2 = prompt.slice(18);
      const ours = await take(model, turn2, seq);
      seq.dispose();
      const all = await oneShot([...turn1, ...generated, ...turn2]);
      expect(maxAbsDiff(ours, all.subarray((turn1.length + generated.length) * V))).toBeLessThan(
        TOL,
      );
    });

    it("two sequences in one ragged step equal each run alone (prefill and decode)", async () => {
      const cache = model.newKVCache({ maxSeqs: 2, maxSeqLen: 48, pageSize: 8 });
      const a = cache.sequence();
      const b = cache.sequence();
      const pa = prompt.slice(0, 29);
      const pb = prompt.slice(11, 40);
      // Step 1: a prefills 10 tokens, b 21; step 2: a its other 19 while b takes 8 (over context).
      const t1 = model.forwardBatch(
        [
          { seq: a, ids: pa.slice(0, 10) },
          { seq: b, ids: pb.slice(0, 21) },
        ],
        { allLogits: true },
      );
      const t2 = model.forwardBatch([
        { seq: a, ids: pa.slice(10) },
        { seq: b, ids: pb.slice(21) },
      ]);
      const l1 = (await t1.toArray()) as Float32Array;
      const l2 = (await t2.toArray()) as Float32Array;
      t1.dispose();
      t2.dispose();
      const ra = await oneShot(pa);
      const rb = await oneShot(pb);
      expect(maxAbsDiff(l1.subarray(0, 10 * V), ra.subarray(0, 10 * V))).toBeLessThan(TOL);
      expect(maxAbsDiff(l1.subarray(10 * V), rb.subarray(0, 21 * V))).toBeLessThan(TOL);
      expect(maxAbsDiff(l2.subarray(0, V), ra.subarray(28 * V))).toBeLessThan(TOL);
      expect(maxAbsDiff(l2.subarray(V), rb.subarray(28 * V))).toBeLessThan(TOL);
      // A batched decode step (both sequences past the window: their rings have wrapped).
      const ta = argmax(l2.subarray(0, V));
      const tb = argmax(l2.subarray(V));
      const t3 = model.forwardBatch([
        { seq: a, ids: [ta] },
        { seq: b, ids: [tb] },
      ]);
      const l3 = (await t3.toArray()) as Float32Array;
      t3.dispose();
      expect(
        maxAbsDiff(l3.subarray(0, V), (await oneShot([...pa, ta])).subarray(29 * V)),
      ).toBeLessThan(TOL);
      expect(
        maxAbsDiff(l3.subarray(V), (await oneShot([...pb, tb])).subarray(29 * V)),
      ).toBeLessThan(TOL);
      a.dispose();
      b.dispose();
      cache.dispose();
    });

    it("a fork shares the prefix and diverges; a rollback of 2 tokens replays exactly", async () => {
      // rollback 2: the rings keep W + 1 slots, decode reads the window's rows by index.
      const cache = model.newKVCache({ maxSeqs: 2, maxSeqLen: 48, pageSize: 8, rollback: 2 });
      const a = cache.sequence();
      await take(model, prompt.slice(0, 30), a, false); // 30 % 8 = 6: the last page is shared
      const b = a.fork();
      expect(cache.stats().freePages).toBe(cache.planner.numPages - 4);
      const la = await take(model, prompt.slice(30, 34), a);
      const lb = await take(model, prompt.slice(36, 40), b);
      expect(maxAbsDiff(la, (await oneShot(prompt.slice(0, 34))).subarray(30 * V))).toBeLessThan(
        TOL,
      );
      const refB = await oneShot([...prompt.slice(0, 30), ...prompt.slice(36, 40)]);
      expect(maxAbsDiff(lb, refB.subarray(30 * V))).toBeLessThan(TOL);
      // Roll b back by 2 and feed other tokens: equals the one-shot run of that sequence.
      b.trim(32);
      const lb2 = await take(model, [prompt[0]!, prompt[1]!], b);
      const refB2 = await oneShot([
        ...prompt.slice(0, 30),
        ...prompt.slice(36, 38),
        prompt[0]!,
        prompt[1]!,
      ]);
      expect(maxAbsDiff(lb2, refB2.subarray(32 * V))).toBeLessThan(TOL);
      a.dispose();
      b.dispose();
      expect(cache.stats().freePages).toBe(cache.planner.numPages);
      cache.dispose();
    });
  });
}
