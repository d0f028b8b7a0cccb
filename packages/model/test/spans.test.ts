// Image-block spans through the model (issue 5 item 2): forward(ids, seq, { spans }) and
// forwardBatch steps with spans make a block's tokens attend to each other. Tokens before a block
// keep their logits exactly; the block's own tokens change; a chunked prefill with the block in a
// later chunk equals the one-shot prefill with the same spans; a chunk that splits a block is
// refused before anything runs.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadTextModel, type Gemma3TextModel, type KVSequence } from "../src/index.js";
import { fixtures, maxAbsDiff } from "./golden.js";

const TOL = 1e-4; // CPU float32, as chunked.test.ts

describe("tiny-1b: image-block spans", () => {
  const dir = join(fixtures, "tiny-1b");
  const prompt = (
    JSON.parse(readFileSync(join(dir, "goldens.json"), "utf8")) as { prompt_ids: number[] }
  ).prompt_ids;
  const span = { start: 5, end: 12 }; // shorter than tiny-1b's window (16), as 256 < 1024
  let model: Gemma3TextModel;
  let V: number;

  beforeAll(async () => {
    model = await loadTextModel(dir, { device: "cpu", dtype: "f32" });
    V = model.config.vocabSize;
  });
  afterAll(() => model.dispose());

  async function run(
    seq: KVSequence,
    ids: number[],
    spans?: { start: number; end: number }[],
  ): Promise<Float32Array> {
    const t = model.forward(ids, seq, spans ? { allLogits: true, spans } : { allLogits: true });
    const v = (await t.toArray()) as Float32Array;
    t.dispose();
    return v;
  }
  async function oneShot(spans?: { start: number; end: number }[]): Promise<Float32Array> {
    const seq = model.newCache(prompt.length + 1);
    try {
      return await run(seq, prompt, spans);
    } finally {
      seq.dispose();
    }
  }
  const row = (x: Float32Array, p: number) => x.subarray(p * V, (p + 1) * V);

  it("logits before the block are unchanged, inside it they differ", async () => {
    const plain = await oneShot();
    const spanned = await oneShot([span]);
    for (let p = 0; p < span.start; p++) expect(row(spanned, p)).toEqual(row(plain, p));
    // Every token but the block's last sees later keys of the block (the last one sees the same
    // keys, computed from different hidden states, so it differs too).
    for (let p = span.start; p < span.end; p++)
      expect(maxAbsDiff(row(spanned, p), row(plain, p))).toBeGreaterThan(1e-3);
  });

  it("a chunked prefill with the block in a later chunk equals the one-shot prefill", async () => {
    const spanned = await oneShot([span]);
    const seq = model.newCache(prompt.length + 1);
    const got = new Float32Array(prompt.length * V);
    let at = 0;
    for (const n of [3, 9, prompt.length - 12]) {
      // Every chunk brings the sequence's spans; only the one holding the block uses them.
      got.set(await run(seq, prompt.slice(at, at + n), [span]), at * V);
      at += n;
    }
    seq.dispose();
    expect(maxAbsDiff(got, spanned)).toBeLessThan(TOL);
  });

  it("forwardBatch passes each sequence's spans", async () => {
    const spanned = await oneShot([span]);
    const plain = await oneShot();
    const cache = model.newKVCache({ maxSeqLen: prompt.length + 1, maxSeqs: 2 });
    const a = cache.sequence();
    const b = cache.sequence();
    const t = model.forwardBatch(
      [
        { seq: a, ids: prompt, spans: [span] },
        { seq: b, ids: prompt },
      ],
      { allLogits: true },
    );
    const got = (await t.toArray()) as Float32Array;
    t.dispose();
    cache.dispose();
    const n = prompt.length * V;
    expect(maxAbsDiff(got.subarray(0, n), spanned)).toBeLessThan(TOL);
    expect(maxAbsDiff(got.subarray(n), plain)).toBeLessThan(TOL);
  });

  it("a chunk boundary inside a block is refused and leaves the sequence as it was", async () => {
    const seq = model.newCache(prompt.length + 1);
    await run(seq, prompt.slice(0, 8)); // ends at 8, inside [5, 12)
    expect(() => model.forward(prompt.slice(8, 16), seq, { spans: [span] })).toThrow(
      /span \[5, 12\) .* split/,
    );
    expect(seq.length).toBe(8);
    seq.dispose();
  });
});
