// Device weight layouts (layout.ts): q4_0 / q8_0 weights become q4_0s / q8_0s on CUDA. On the CPU
// the repack of a loaded model is checked byte for byte against the layout as the test reference
// writes it (every weight, the fused projections' views remade on the repacked owners); on CUDA a
// repacked model's logits match the same model kept in GGUF blocks (GEMMA3_Q4_0_LAYOUT=gguf,
// GEMMA3_Q8_0_LAYOUT=gguf) to a float32 accumulation bound: the GEMVs form the same per-block
// integer dots and differ only in the order they sum the block terms.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { cudaAvailable, type Tensor } from "@gemma3/native";
import { repackSplit } from "../../../native/test/reference.js";
import type { LayerWeights } from "../src/block.js";
import { loadTextModel } from "../src/load.js";
import { repackSplitWeights } from "../src/layout.js";
import type { Gemma3TextModel } from "../src/text_model.js";
import { fixtures, maxAbsDiff, promptAndGreedy } from "./golden.js";
import { writeGemma3GGUF } from "./gguf_writer.js";
import { removeTempDirs, tempDir } from "./safetensors_writer.js";

const gpu = cudaAvailable() || process.env.GEMMA3_TEST_CUDA === "1";
afterAll(removeTempDirs);

/** Every weight of a text model with its name. */
function named(w: Gemma3TextModel["weights"]): [string, Tensor][] {
  const out: [string, Tensor][] = [["embedTokens", w.embedTokens]];
  if (w.lmHead) out.push(["lmHead", w.lmHead]);
  w.layers.forEach((l, i) => {
    for (const [k, t] of Object.entries(l) as [keyof LayerWeights, Tensor][])
      out.push([`layers.${i}.${k}`, t]);
  });
  return out;
}

const LAYOUT_VARS = ["GEMMA3_Q4_0_LAYOUT", "GEMMA3_Q8_0_LAYOUT"] as const;

/** A model loaded with both layout variables set to `layout` (undefined: the default). */
async function loadWith(
  layout: string | undefined,
  path: string,
  o: Parameters<typeof loadTextModel>[1],
): Promise<Gemma3TextModel> {
  const before = LAYOUT_VARS.map((v) => process.env[v]);
  for (const v of LAYOUT_VARS)
    if (layout === undefined) delete process.env[v];
    else process.env[v] = layout;
  try {
    return await loadTextModel(path, o);
  } finally {
    LAYOUT_VARS.forEach((v, i) => {
      if (before[i] === undefined) delete process.env[v];
      else process.env[v] = before[i];
    });
  }
}

for (const name of ["tiny-1b", "tiny-27b"]) {
  const dir = join(fixtures, name);
  const g = JSON.parse(readFileSync(join(dir, "goldens.json"), "utf8")) as { prompt_ids: number[] };

  for (const q of ["q4_0", "q8_0"] as const)
    it(`${name}: repackSplitWeights turns every ${q} weight into its ${q}s bytes, views included`, async () => {
      // quantizeHead too: the tied table (tiny-1b's; tiny-27b's 48-wide rows stay f32) is repacked
      // like the layers' weights.
      const model = await loadTextModel(dir, {
        device: "cpu",
        dtype: "f32",
        quantize: q,
        quantizeHead: q,
      });
      try {
        const before = new Map<string, { bytes: Uint8Array; shape: number[]; dtype: string }>();
        for (const [k, t] of named(model.weights))
          before.set(k, { bytes: await t.bytes(), shape: [...t.shape], dtype: t.dtypeName });
        const owned: Tensor[] = [];
        const originals = named(model.weights).map(([, t]) => t.base ?? t);
        repackSplitWeights(model.weights, [q], owned);
        // Every repacked original is freed (repackSplitWeights frees them layer by layer).
        for (const t of originals) expect(t.disposed, `${t}`).toBe(t.dtypeName === q);
        let split = 0;
        for (const [k, t] of named(model.weights)) {
          const b = before.get(k)!;
          expect(t.shape, k).toEqual(b.shape);
          if (b.dtype !== q) {
            expect(t.dtypeName, k).toBe(b.dtype);
            continue;
          }
          split++;
          expect(t.dtypeName, k).toBe(`${q}s`);
          const [rows, cols] = b.shape as [number, number];
          expect(Array.from(await t.bytes()), k).toEqual(
            Array.from(repackSplit(b.bytes, rows, cols, q === "q4_0" ? 16 : 32)),
          );
        }
        // Linear weights whose rows are whole blocks were quantized (not tiny-27b's K = 48 rows).
        expect(split).toBeGreaterThan(0);
        expect(model.weights.embedTokens.dtypeName).toBe(name === "tiny-1b" ? `${q}s` : "f32");
        for (const l of model.weights.layers) {
          if (l.qkvProj?.dtypeName === `${q}s`) expect(l.qProj.base).toBe(l.qkvProj);
          if (l.gateUpProj?.dtypeName === `${q}s`) expect(l.upProj.base).toBe(l.gateUpProj);
        }
      } finally {
        model.dispose();
      }
    });

  describe.skipIf(!gpu)(`${name}: split layouts vs GGUF blocks on CUDA (f32)`, () => {
    for (const q of ["q4_0", "q8_0"] as const)
      it(`quantize-on-load ${q}, and a GGUF ${q} file (token_embd, the tied head, in ${q}s)`, async () => {
        const type = q === "q4_0" ? "Q4_0" : "Q8_0";
        const gguf = await writeGemma3GGUF(dir, type, join(tempDir("layout"), `${name}-${q}.gguf`));
        for (const [path, o] of [
          [dir, { device: "cuda", dtype: "f32", quantize: q }],
          [dir, { device: "cuda", dtype: "f32", quantize: q, quantizeHead: q }],
          [gguf, { device: "cuda", dtype: "f32" }],
        ] as const) {
          const split = await loadWith(undefined, path, o);
          const blocks = await loadWith("gguf", path, o);
          try {
            const dtypes = (m: Gemma3TextModel) =>
              new Set(named(m.weights).map(([, t]) => t.dtypeName));
            expect(dtypes(split).has(`${q}s`) && !dtypes(split).has(q)).toBe(true);
            expect(dtypes(blocks).has(q) && !dtypes(blocks).has(`${q}s`)).toBe(true);
            const e = blocks.weights.embedTokens.dtypeName;
            expect(split.weights.embedTokens.dtypeName).toBe(e === q ? `${q}s` : e);
            // tiny-1b's GGUF token_embd is in the file's type, and so is its table with quantizeHead
            // (the embedding and the tied head read the split layout); tiny-27b's 48-wide rows are
            // not whole blocks and stay F32.
            if ((path === gguf || "quantizeHead" in o) && name === "tiny-1b") expect(e).toBe(q);
            const a = await promptAndGreedy(split, g.prompt_ids, { steps: 6, graph: true });
            const b = await promptAndGreedy(blocks, g.prompt_ids, { steps: 6, graph: true });
            // Same integer block dots, float32 sums in another order: ~1e-6 relative per dot
            // product, carried through the layers.
            a.forEach((x, i) =>
              expect(maxAbsDiff(x, b[i]!), `${path} output ${i}`).toBeLessThan(1e-3),
            );
          } finally {
            split.dispose();
            blocks.dispose();
          }
        }
      });
  });
}
