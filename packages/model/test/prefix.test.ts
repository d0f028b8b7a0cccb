// Prefix reuse through the model (issue 5 item 4): a second request with the same system prompt
// starts from the cached pages (global layers) and a ring restored from snapshot blocks (sliding
// layers), prefills only its own tokens, and its logits equal a fresh run of the whole prompt;
// with snapshots off the request starts at 0 (reuse is skipped) and equals it trivially. The
// shared prefix (24 tokens) is longer than the sliding window (16 for tiny-1b, 12 for tiny-27b),
// so the restored ring wraps.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadTextModel, type Gemma3TextModel } from "../src/index.js";
import { argmax, fixtures, maxAbsDiff, take } from "./golden.js";

// CPU float32: a reused K/V row was computed by the first request from the same tokens at the
// same positions (causal: nothing after it), so it equals the fresh run's row; the brief's bound.
const TOL = 1e-5;

for (const name of ["tiny-1b", "tiny-27b"]) {
  describe(`${name}: prefix reuse equals a fresh run`, () => {
    const dir = join(fixtures, name);
    const meta = JSON.parse(readFileSync(join(dir, "goldens.json"), "utf8")) as {
      prompt_ids: number[];
      vocab: number;
    };
    const V = meta.vocab;
    const prompt = meta.prompt_ids;
    const sys = prompt.slice(0, 24); // 3 pages of 8
    const promptA = prompt; // 40 tokens
    const promptB = [...sys, ...prompt.slice(3, 17)]; // 38 tokens, another tail
    let model: Gemma3TextModel;

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

    for (const snapshotBlocks of [16, 0])
      it(`second request with the same system prompt (snapshot blocks: ${snapshotBlocks})`, async () => {
        const cache = model.newKVCache({
          maxSeqs: 2,
          maxSeqLen: 64,
          pageSize: 8,
          prefixCache: true,
          snapshotBlocks,
        });
        // Request A, prefilled in chunks that cross page boundaries, then freed.
        const a = cache.sequence(64, promptA);
        expect(a.length).toBe(0);
        await take(model, promptA.slice(0, 13), a, false);
        await take(model, promptA.slice(13), a, false);
        const pagesA = cache.planner.pagesOf(a.id);
        a.dispose();
        expect(cache.stats()).toMatchObject({ prefixPages: 5, evictablePages: 5 });
        const used = cache.planner.pool.used;

        // Request B: same 24-token system prompt.
        const b = cache.sequence(64, promptB);
        const reused = snapshotBlocks > 0 ? 24 : 0;
        expect(b.length).toBe(reused);
        expect(cache.planner.pagesOf(b.id)).toEqual(pagesA.slice(0, reused / 8));
        const lb = await take(model, promptB.slice(reused), b);
        // Pool usage grows by the pages of B's own tokens only.
        expect(cache.planner.pool.used - used).toBe(Math.ceil(promptB.length / 8) - reused / 8);
        const ref = await oneShot(promptB);
        expect(maxAbsDiff(lb, ref.subarray(reused * V))).toBeLessThan(TOL);

        // Decode on from the reused prefix: 6 greedy tokens equal the fresh run's.
        const ids = [...promptB];
        let next = argmax(lb.subarray(lb.length - V));
        const steps = new Float32Array(6 * V);
        for (let i = 0; i < 6; i++) {
          ids.push(next);
          const l = await take(model, [next], b, false);
          steps.set(l, i * V);
          next = argmax(l);
        }
        const fresh = await oneShot(ids);
        expect(maxAbsDiff(steps, fresh.subarray(promptB.length * V))).toBeLessThan(TOL);
        b.dispose();
        cache.clearPrefixCache();
        expect(cache.stats()).toMatchObject({
          freePages: cache.planner.numPages,
          prefixPages: 0,
          freeSnapshotBlocks: snapshotBlocks,
        });
        for (let p = 0; p < cache.planner.numPages; p++)
          expect(cache.planner.pool.refcount(p)).toBe(0);
        cache.dispose();
      });

    it("a conversation's next turn reuses the generated tokens too", async () => {
      const cache = model.newKVCache({
        maxSeqs: 1,
        maxSeqLen: 80,
        pageSize: 8,
        snapshotBlocks: 12,
      });
      const turn1 = prompt.slice(0, 30);
      const s1 = cache.sequence(80, turn1);
      let next = argmax((await take(model, turn1, s1, false)).subarray(0, V));
      const generated: number[] = [];
      for (let i = 0; i < 12; i++) {
        generated.push(next);
        next = argmax(await take(model, [next], s1, false));
      }
      s1.dispose();
      // Turn 2 = turn 1 + the 12 generated tokens (42: 5 full pages) + new tokens.
      const turn2 = [...turn1, ...generated, ...prompt.slice(30)];
      expect(cache.prefixLookup(turn2)).toEqual({ cached: 40, reusable: 40 });
      const s2 = cache.sequence(80, turn2);
      expect(s2.length).toBe(40);
      const l2 = await take(model, turn2.slice(40), s2);
      expect(maxAbsDiff(l2, (await oneShot(turn2)).subarray(40 * V))).toBeLessThan(TOL);
      s2.dispose();
      cache.dispose();
    });

    it("two requests with the same prefix at once share its pages", async () => {
      const cache = model.newKVCache({ maxSeqs: 3, maxSeqLen: 48, pageSize: 8, snapshotBlocks: 8 });
      const warm = cache.sequence(48, promptA);
      await take(model, promptA, warm, false);
      // Both start at 24 while `warm` still holds the pages: refcount 4 (3 sequences + index).
      const b = cache.sequence(48, promptB);
      const c = cache.sequence(48, [...sys, ...prompt.slice(20, 30)]);
      expect([b.length, c.length]).toEqual([24, 24]);
      const shared = cache.planner.pagesOf(b.id);
      expect(shared.map((p) => cache.planner.pool.refcount(p))).toEqual([4, 4, 4]);
      const t = model.forwardBatch(
        [
          { seq: b, ids: promptB.slice(24) },
          { seq: c, ids: prompt.slice(20, 30) },
        ],
        { allLogits: true },
      );
      const l = (await t.toArray()) as Float32Array;
      t.dispose();
      const nb = promptB.length - 24;
      expect(
        maxAbsDiff(l.subarray(0, nb * V), (await oneShot(promptB)).subarray(24 * V)),
      ).toBeLessThan(TOL);
      expect(
        maxAbsDiff(
          l.subarray(nb * V),
          (await oneShot([...sys, ...prompt.slice(20, 30)])).subarray(24 * V),
        ),
      ).toBeLessThan(TOL);
      for (const s of [warm, b, c]) s.dispose();
      cache.clearPrefixCache();
      expect(cache.stats().freePages).toBe(cache.planner.numPages);
      cache.dispose();
    });
  });
}
