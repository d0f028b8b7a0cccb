// Layer fusion (fuse.ts, DecoderLayer's fused kernels) changes the number of kernels, not the
// arithmetic: [q; k; v] and [gate; up] weights concatenated at load hold the parts' stored rows
// byte for byte (every weight format), the parts become views (nothing held twice), and a fused
// model's logits equal the unfused model's (`fuse: false`, the separate ops) bit for bit on the CPU.
// On CUDA the fused GEMV may split K differently (N changes), so there the two agree to a
// float32 accumulation bound.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { cudaAvailable, type Tensor } from "@gemma3/native";
import { loadTextModel, type Gemma3TextModel } from "../src/index.js";
import { ScaledWeight, type WeightQuantization } from "../src/quantize.js";
import { fixtures, maxAbsDiff, promptAndGreedy } from "./golden.js";

const gpu = cudaAvailable() || process.env.GEMMA3_TEST_CUDA === "1";

/** Prompt logits and 8 greedy decode steps' logits, graph-replayed or not. */
const run = (model: Gemma3TextModel, ids: number[], graph = false) =>
  promptAndGreedy(model, ids, { graph });

const bytesOf = async (t: Tensor) => Array.from(await t.bytes());

for (const name of ["tiny-1b", "tiny-27b"]) {
  const dir = join(fixtures, name);
  const g = JSON.parse(readFileSync(join(dir, "goldens.json"), "utf8")) as { prompt_ids: number[] };
  const ids = g.prompt_ids;

  describe(`${name}: fused layers vs the unfused sequence (CPU f32)`, () => {
    for (const quantize of [undefined, "q8_0", "q4_0", "fp8_e4m3"] as const) {
      it(`${quantize ?? "f32"} weights: concatenated rows, views, logits bit for bit`, async () => {
        const o = { device: "cpu", dtype: "f32" as const, quantize };
        const fused = await loadTextModel(dir, o);
        const plain = await loadTextModel(dir, { ...o, fuse: false });
        try {
          const { numAttentionHeads: hq, numKeyValueHeads: hkv, headDim: d } = fused.config;
          const { hiddenSize: h, intermediateSize: f } = fused.config;
          for (const [i, l] of fused.weights.layers.entries()) {
            const p = plain.weights.layers[i]!;
            expect(p.qkvProj).toBeUndefined();
            expect(l.qkvProj!.shape).toEqual([(hq + 2 * hkv) * d, h]);
            expect(l.gateUpProj!.shape).toEqual([2 * f, h]);
            expect(l.qkvProj!.dtypeName).toBe(p.qProj.dtypeName);
            // The fused weight is the parts' stored rows in order, and the parts are its views.
            const parts = [p.qProj, p.kProj, p.vProj];
            expect(await bytesOf(l.qkvProj!)).toEqual(
              (await Promise.all(parts.map(bytesOf))).flat(),
            );
            expect(await bytesOf(l.gateUpProj!)).toEqual([
              ...(await bytesOf(p.gateProj)),
              ...(await bytesOf(p.upProj)),
            ]);
            for (const v of [l.qProj, l.kProj, l.vProj]) {
              expect(v.isView).toBe(true);
              expect(v.storage).toBe(l.qkvProj!.storage);
            }
            expect(l.upProj.storage).toBe(l.gateUpProj!.storage);
            if (quantize === "fp8_e4m3") {
              // Per-row scales travel with their rows.
              const scales = [p.qProj, p.kProj, p.vProj].map((t) => (t as ScaledWeight).scale);
              const fusedScale = (l.qkvProj as ScaledWeight).scale;
              expect(Array.from(await fusedScale.toArray())).toEqual(
                (await Promise.all(scales.map(async (s) => Array.from(await s.toArray())))).flat(),
              );
              expect((l.kProj as ScaledWeight).scale.shape).toEqual([hkv * d]);
            }
          }
          const a = await run(fused, ids);
          const b = await run(plain, ids);
          a.forEach((x, i) => expect(Array.from(x), `output ${i}`).toEqual(Array.from(b[i]!)));
          // Graph replay of the fused step is the same again (CPU graphs record the same tasks).
          const c = await run(fused, ids, true);
          c.forEach((x, i) => expect(Array.from(x), `graph ${i}`).toEqual(Array.from(b[i]!)));
        } finally {
          fused.dispose();
          plain.dispose();
        }
      });
    }
  });

  describe.skipIf(!gpu)(`${name}: fused layers vs the unfused sequence (CUDA)`, () => {
    for (const [dtype, quantize] of [
      ["f32", undefined],
      ["bf16", undefined],
      ["bf16", "q8_0"],
    ] as ["f32" | "bf16", WeightQuantization | undefined][]) {
      it(`${dtype} ${quantize ?? ""}: logits within the accumulation bound`, async () => {
        const o = { device: "cuda", dtype, quantize };
        const fused = await loadTextModel(dir, o);
        const plain = await loadTextModel(dir, { ...o, fuse: false });
        try {
          const a = await run(fused, ids, true);
          const b = await run(plain, ids, true);
          // f32: the GEMV's K order may differ (split-K chosen per N), ~1e-6 relative per dot
          // product through 8 layers; bf16: such a difference can flip a bf16 rounding of an
          // activation (2^-8 relative), which the logits carry at most a few times over.
          const bound = dtype === "f32" ? 1e-3 : 0.25;
          a.forEach((x, i) => expect(maxAbsDiff(x, b[i]!), `output ${i}`).toBeLessThan(bound));
        } finally {
          fused.dispose();
          plain.dispose();
        }
      });
    }
  });
}
