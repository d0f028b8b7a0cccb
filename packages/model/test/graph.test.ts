// Decode steps replayed from a captured graph give exactly the eager results (same ops on the same
// addresses), across recaptures when the cache or the arena changes. CPU graphs record the same
// task list a CUDA graph records kernels, so this runs everywhere; the GPU run covers CUDA.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { cudaAvailable } from "@gemma3/native";
import { loadTextModel, type Gemma3TextModel } from "../src/index.js";
import { argmax, fixtures } from "./golden.js";

const dir = join(fixtures, "tiny-1b");
const meta = JSON.parse(readFileSync(join(dir, "goldens.json"), "utf8")) as {
  prompt_ids: number[];
  greedy_ids: number[];
};

async function decode(model: Gemma3TextModel, graph: boolean, prompt: number[], steps: number) {
  const seq = model.newCache(prompt.length + steps + 1);
  const first = model.forward(prompt, seq);
  const rows: Float32Array[] = [(await first.toArray()) as Float32Array];
  first.dispose();
  let next = argmax(rows[0]!);
  const ids: number[] = [];
  for (let i = 0; i < steps; i++) {
    ids.push(next);
    const l = model.forward([next], seq, { graph });
    const v = (await l.toArray()) as Float32Array;
    l.dispose();
    rows.push(v);
    next = argmax(v);
  }
  seq.dispose();
  return { ids, rows };
}

const devices = ["cpu", ...(cudaAvailable() ? ["cuda"] : [])];
for (const device of devices)
  describe(`graph-replayed decode (${device})`, () => {
    it("equals eager decode bit for bit, and the HF greedy ids", async () => {
      const model = await loadTextModel(dir, { device, dtype: "f32" });
      const eager = await decode(model, false, meta.prompt_ids, 24);
      const graphed = await decode(model, true, meta.prompt_ids, 24);
      // A second sequence on a new cache forces a recapture (the graph holds cache addresses),
      // and a longer prompt grows the arena (a second recapture).
      const longer = [...meta.prompt_ids, ...meta.prompt_ids.slice(1)];
      const eager2 = await decode(model, false, longer, 12);
      const graphed2 = await decode(model, true, longer, 12);
      model.dispose();
      expect(graphed.ids).toEqual(eager.ids);
      expect(graphed.ids).toEqual(meta.greedy_ids);
      graphed.rows.forEach((r, i) => expect(Array.from(r)).toEqual(Array.from(eager.rows[i]!)));
      expect(graphed2.ids).toEqual(eager2.ids);
      graphed2.rows.forEach((r, i) => expect(Array.from(r)).toEqual(Array.from(eager2.rows[i]!)));
    });
  });

/** `n` sequences decoding together (batch n), each from a rotation of the golden prompt. */
async function decodeBatch(model: Gemma3TextModel, graph: boolean, n: number, steps: number) {
  const P = meta.prompt_ids.length;
  const cache = model.newKVCache({ maxSeqs: n, maxSeqLen: P + steps + 1 });
  const seqs = Array.from({ length: n }, () => cache.sequence(P + steps + 1));
  const prompts = seqs.map((_, i) => [
    ...meta.prompt_ids.slice(i % P),
    ...meta.prompt_ids.slice(0, i % P),
  ]);
  const first = model.forwardBatch(seqs.map((seq, i) => ({ seq, ids: prompts[i]! })));
  const V = model.config.vocabSize;
  let rows = (await first.toArray()) as Float32Array;
  first.dispose();
  const all: number[][] = [];
  for (let t = 0; t < steps; t++) {
    const next = seqs.map((_, i) => argmax(rows.subarray(i * V, (i + 1) * V)));
    all.push(next);
    const l = model.forwardBatch(
      seqs.map((seq, i) => ({ seq, ids: [next[i]!] })),
      { graph },
    );
    rows = Float32Array.from((await l.toArray()) as Float32Array);
    l.dispose();
  }
  for (const s of seqs) s.dispose();
  cache.dispose();
  return { all, last: rows };
}

for (const device of devices)
  describe(`graph-replayed decode at batch 12 (${device})`, () => {
    it("equals eager decode bit for bit (graphs beyond the old batch-8 limit)", async () => {
      const model = await loadTextModel(dir, { device, dtype: "f32" });
      const eager = await decodeBatch(model, false, 12, 6);
      const graphed = await decodeBatch(model, true, 12, 6);
      model.dispose();
      expect(graphed.all).toEqual(eager.all);
      expect(Array.from(graphed.last)).toEqual(Array.from(eager.last));
    });
  });
