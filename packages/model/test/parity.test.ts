// The text decoder against HF transformers 5.17 float32 goldens (tools/reference/make_goldens.py)
// on tiny random checkpoints in the hub layout: a 1B-like one (window 16 < 40-token prompt, MQA)
// and a 27B-like one (head_dim 16 ≠ query_pre_attn_scalar 24, linear RoPE scaling 8, GQA,
// Gemma3ForConditionalGeneration key names).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadTextModel, type Gemma3TextModel } from "../src/index.js";
import { cudaAvailable } from "@gemma3/native";
import { argmax, fixtures, maxAbsDiff } from "./golden.js";

interface Goldens {
  prompt_ids: number[];
  greedy_ids: number[];
  argmax: number[];
  top2_margin: number[];
  vocab: number;
}

function golden(name: string) {
  const dir = join(fixtures, name);
  const meta = JSON.parse(readFileSync(join(dir, "goldens.json"), "utf8")) as Goldens;
  const f32 = (file: string) => {
    const b = readFileSync(join(dir, file));
    return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  };
  return { dir, meta, logits: f32("logits.f32"), greedyLogits: f32("greedy_logits.f32") };
}

/** argmax of each row of x [rows, cols]. */
function argmaxRows(x: Float32Array, rows: number, cols: number): number[] {
  return Array.from({ length: rows }, (_, r) => argmax(x.subarray(r * cols, (r + 1) * cols)));
}

/** Prompt logits [T, V] and 24 greedy steps (ids and their logits) from our model. */
async function run(model: Gemma3TextModel, meta: Goldens) {
  const T = meta.prompt_ids.length;
  const steps = meta.greedy_ids.length;
  const cache = model.newCache(T + steps + 1);
  const prompt = model.forward(meta.prompt_ids, cache, { allLogits: true });
  const logits = (await prompt.toArray()) as Float32Array;
  prompt.dispose();
  const ids: number[] = [];
  const stepLogits: Float32Array[] = [];
  let next = argmaxRows(logits.subarray((T - 1) * meta.vocab), 1, meta.vocab)[0]!;
  for (let i = 0; i < steps; i++) {
    ids.push(next);
    const l = model.forward([next], cache);
    const v = (await l.toArray()) as Float32Array;
    l.dispose();
    stepLogits.push(v);
    next = argmaxRows(v, 1, meta.vocab)[0]!;
  }
  cache.dispose();
  const greedyLogits = new Float32Array(steps * meta.vocab);
  stepLogits.forEach((v, i) => greedyLogits.set(v, i * meta.vocab));
  return { logits, ids, greedyLogits };
}

// Logits are of unit scale (std ≈ 1); float32 through 7–8 layers differs from torch's float32 by
// summation order only (~1e-6 relative): 1e-3 absolute is the bound, with a wide margin.
const F32_TOL = 1e-3;

for (const name of ["tiny-1b", "tiny-27b"]) {
  describe(`${name}: CPU f32 vs HF transformers float32`, () => {
    const g = golden(name);
    it("prompt logits, argmax at every position, 24 greedy tokens and their logits", async () => {
      const model = await loadTextModel(g.dir, { device: "cpu", dtype: "f32" });
      const T = g.meta.prompt_ids.length;
      const ours = await run(model, g.meta);
      model.dispose();
      expect(maxAbsDiff(ours.logits, g.logits)).toBeLessThan(F32_TOL);
      expect(argmaxRows(ours.logits, T, g.meta.vocab)).toEqual(g.meta.argmax);
      expect(ours.ids).toEqual(g.meta.greedy_ids);
      expect(maxAbsDiff(ours.greedyLogits, g.greedyLogits)).toBeLessThan(F32_TOL);
    });
  });

  const gpu = cudaAvailable() || process.env.GEMMA3_TEST_CUDA === "1";
  describe.skipIf(!gpu)(`${name}: CUDA vs HF transformers`, () => {
    const g = golden(name);
    it("f32 on CUDA matches HF like the CPU path", async () => {
      const model = await loadTextModel(g.dir, { device: "cuda", dtype: "f32" });
      const ours = await run(model, g.meta);
      model.dispose();
      expect(maxAbsDiff(ours.logits, g.logits)).toBeLessThan(F32_TOL);
      expect(ours.ids).toEqual(g.meta.greedy_ids);
    });
    it("bf16 argmax agrees with HF at >= 99% of positions whose HF top-2 margin > 0.05", async () => {
      const model = await loadTextModel(g.dir, { device: "cuda", dtype: "bf16" });
      const T = g.meta.prompt_ids.length;
      const ours = await run(model, g.meta);
      model.dispose();
      const am = argmaxRows(ours.logits, T, g.meta.vocab);
      let counted = 0;
      let agree = 0;
      for (let t = 0; t < T; t++)
        if (g.meta.top2_margin[t]! > 0.05) {
          counted++;
          if (am[t] === g.meta.argmax[t]) agree++;
        }
      expect(counted).toBeGreaterThan(T / 2);
      expect(agree / counted).toBeGreaterThanOrEqual(0.99);
    });
  });
}
