// forwardBatch with ModelStep.idsFrom (ids on the device, pipelined decoding): the same logits,
// bit for bit, as the same ids written from the host, eager and graph-replayed, for rows in any
// order and mixed with host-id steps; ids produced by an op that has not run yet (the previous
// step's argmax, never read) give HF's greedy ids; bad idsFrom is refused before anything changes.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ShapeError, Tensor, cudaAvailable, ops } from "@gemma3/native";
import { loadTextModel, type Gemma3TextModel, type ModelStep } from "../src/index.js";
import { argmax, fixtures } from "./golden.js";

const dir = join(fixtures, "tiny-1b");
const meta = JSON.parse(readFileSync(join(dir, "goldens.json"), "utf8")) as {
  prompt_ids: number[];
  greedy_ids: number[];
};
const P = meta.prompt_ids;

/**
 * Three sequences decoding `steps` steps from rotations of the golden prompt. `device`: ids of
 * sequences 0 and 2 come from a device tensor holding the ids in rows [5, 2] of 7 (sequence 1's
 * from the host); else all from the host. Returns every step's logits.
 */
async function run(model: Gemma3TextModel, device: boolean, graph: boolean, steps: number) {
  const n = 3;
  const cache = model.newKVCache({ maxSeqs: n, maxSeqLen: P.length + steps + 1 });
  const seqs = Array.from({ length: n }, () => cache.sequence(P.length + steps + 1));
  const prompts = seqs.map((_, i) => [...P.slice(i * 3), ...P.slice(0, i * 3)]);
  const V = model.config.vocabSize;
  let l = model.forwardBatch(seqs.map((seq, i) => ({ seq, ids: prompts[i]! })));
  let rows = Float32Array.from((await l.toArray()) as Float32Array);
  l.dispose();
  const out: Float32Array[] = [];
  const table = Tensor.zeros([7], "i32", model.device);
  const at = [5, -1, 2];
  for (let t = 0; t < steps; t++) {
    const next = seqs.map((_, i) => argmax(rows.subarray(i * V, (i + 1) * V)));
    const host = new Int32Array(7);
    at.forEach((r, i) => r >= 0 && (host[r] = next[i]!));
    table.write(host);
    const batch: ModelStep[] = seqs.map((seq, i) =>
      device && at[i]! >= 0
        ? { seq, ids: [], idsFrom: { tensor: table, row: at[i]! } }
        : { seq, ids: [next[i]!] },
    );
    l = model.forwardBatch(batch, { graph });
    rows = Float32Array.from((await l.toArray()) as Float32Array);
    l.dispose();
    out.push(rows);
  }
  table.dispose();
  for (const s of seqs) s.dispose();
  cache.dispose();
  return out;
}

const devices = [
  "cpu",
  ...(process.env.GEMMA3_TEST_CUDA === "1" && cudaAvailable() ? ["cuda"] : []),
];
for (const dev of devices)
  describe(`forwardBatch idsFrom (${dev})`, () => {
    it("equals host ids bit for bit: eager, graph-replayed, rows reordered, mixed", async () => {
      const model = await loadTextModel(dir, { device: dev, dtype: "f32" });
      for (const graph of [false, true]) {
        const ref = await run(model, false, graph, 5);
        const got = await run(model, true, graph, 5);
        got.forEach((r, i) => expect(Array.from(r)).toEqual(Array.from(ref[i]!)));
      }
      model.dispose();
    });

    it("ids from the previous step's argmax, never read on the host: HF's greedy ids", async () => {
      const model = await loadTextModel(dir, { device: dev, dtype: "f32" });
      const n = meta.greedy_ids.length;
      const seq = model.newCache(P.length + n);
      const am = Tensor.empty([1], "i32", model.device);
      const logits = model.forward(P, seq);
      ops.argmax(logits, am);
      logits.dispose();
      const ids: number[] = [];
      // Each step's id is the argmax enqueued just before it; only a copy of it is read.
      for (let i = 1; i < n; i++) {
        const next = Tensor.empty([1], "i32", model.device);
        next.copyFrom(am);
        const l = model.forwardBatch([{ seq, ids: [], idsFrom: { tensor: next, row: 0 } }], {
          graph: true,
        });
        ops.argmax(l, am);
        l.dispose();
        ids.push(((await next.toArray()) as Int32Array)[0]!);
        next.dispose();
      }
      ids.push(((await am.toArray()) as Int32Array)[0]!);
      expect(ids).toEqual(meta.greedy_ids);
      am.dispose();
      seq.dispose();
      model.dispose();
    });

    it("refuses bad idsFrom before planning (the sequence is unchanged)", async () => {
      const model = await loadTextModel(dir, { device: dev, dtype: "f32" });
      const seq = model.newCache(64);
      model.forward(P.slice(0, 4), seq).dispose();
      const i32 = Tensor.from([3, 4], [2], "i32", model.device);
      const f32 = Tensor.from([3], [1], "f32", model.device);
      const bad: [Partial<ModelStep>, RegExp | typeof ShapeError][] = [
        [{ ids: [3], idsFrom: { tensor: i32, row: 0 } }, /brings no host ids/],
        [{ ids: [], idsFrom: { tensor: f32, row: 0 } }, ShapeError],
        [{ ids: [], idsFrom: { tensor: i32, row: 2 } }, /row 2 outside \[0, 2\)/],
        [{ ids: [], idsFrom: { tensor: i32, row: -1 } }, /row -1 outside/],
      ];
      for (const [step, err] of bad) {
        expect(() => model.forwardBatch([{ seq, ids: [], ...step }])).toThrow(err);
        expect(seq.length).toBe(4);
      }
      const ok = model.forwardBatch([{ seq, ids: [], idsFrom: { tensor: i32, row: 1 } }]);
      ok.dispose();
      expect(seq.length).toBe(5);
      for (const t of [i32, f32]) t.dispose();
      seq.dispose();
      model.dispose();
    });
  });
