// The SigLIP tower + projector and prompts with images through the text model, against HF
// transformers 5.17 float32 goldens (tools/reference/vision_model_goldens.py) on two tiny
// Gemma3ForConditionalGeneration checkpoints in the hub layout:
//   tiny-27b (packages/model/test/fixtures): 2×2 patches, pool kernel 1, image token 262144 outside
//     the 512-token vocabulary (embedded as PAD by HF), no boi/eoi;
//   tiny-mm (fixtures/mm/tiny-mm): 8×8 patches avg-pooled 4×4 (the real model's kernel), vision
//     head_dim 72 (So400m's), 2 vision layers, boi/eoi/image ids inside the vocabulary.
// Each prompt holds two images (two bidirectional blocks); 8 greedy steps run through the KV cache.
import { copyFileSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ShapeError, Tensor, cudaAvailable } from "@gemma3/native";
import {
  WeightError,
  imageTokenSpans,
  loadTextModel,
  openCheckpoint,
  type Gemma3TextModel,
} from "@gemma3/model";
import { loadVisionEncoder, type Gemma3VisionEncoder } from "../src/index.js";
import { writeSafetensors, type TensorSpec } from "../../model/test/safetensors_writer.js";
import { maxAbsDiff, mmGolden, relL2 } from "./helpers.js";

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, "..", "..", "..");
const mmFixtures = join(here, "fixtures", "mm");

function argmaxRows(x: Float32Array, rows: number, cols: number): number[] {
  return Array.from({ length: rows }, (_, r) => {
    let best = 0;
    for (let i = 1; i < cols; i++) if (x[r * cols + i]! > x[r * cols + best]!) best = i;
    return best;
  });
}

/** Prompt logits with the images, then greedy steps through the cache. */
async function run(
  model: Gemma3TextModel,
  enc: Gemma3VisionEncoder,
  g: ReturnType<typeof mmGolden>,
) {
  const { prompt_ids: ids, greedy_ids, vocab } = g.meta;
  const features = enc.encode(g.pixels);
  const seq = model.newCache(ids.length + greedy_ids.length + 1);
  const t = model.forward(ids, seq, { allLogits: true, imageFeatures: features });
  const logits = (await t.toArray()) as Float32Array;
  t.dispose();
  const featuresHost = (await features.toArray()) as Float32Array;
  features.dispose();
  const out: number[] = [];
  const greedyLogits = new Float32Array(greedy_ids.length * vocab);
  let next = argmaxRows(logits.subarray((ids.length - 1) * vocab), 1, vocab)[0]!;
  for (let i = 0; i < greedy_ids.length; i++) {
    out.push(next);
    const l = model.forward([next], seq);
    const v = (await l.toArray()) as Float32Array;
    l.dispose();
    greedyLogits.set(v, i * vocab);
    next = argmaxRows(v, 1, vocab)[0]!;
  }
  seq.dispose();
  return { features: featuresHost, logits, ids: out, greedyLogits };
}

// Float32 through a few layers differs from torch's float32 by summation order (~1e-6
// relative); 1e-3 absolute is the bound.
const F32_TOL = 1e-3;
const NAMES = ["tiny-27b", "tiny-mm"].filter((n) =>
  existsSync(join(mmFixtures, n, "goldens.json")),
);

describe("multimodal goldens are present", () => {
  it("both fixtures", () => expect(NAMES).toEqual(["tiny-27b", "tiny-mm"]));
});

for (const name of NAMES) {
  describe(`${name}: CPU f32 vs HF transformers float32`, () => {
    const g = mmGolden(name);
    let model: Gemma3TextModel;
    let enc: Gemma3VisionEncoder;
    beforeAll(async () => {
      model = await loadTextModel(g.modelDir, { device: "cpu", dtype: "f32" });
      enc = await loadVisionEncoder(g.modelDir, { device: "cpu", dtype: "f32" });
    });
    afterAll(() => {
      model.dispose();
      enc.dispose();
    });

    it("image features, prompt logits with two images, 8 greedy tokens and their logits", async () => {
      const T = g.meta.prompt_ids.length;
      const ours = await run(model, enc, g);
      expect([...g.meta.image_features_shape]).toEqual([
        2,
        enc.tokensPerImage,
        model.config.hiddenSize,
      ]);
      expect(maxAbsDiff(ours.features, g.features)).toBeLessThan(F32_TOL);
      expect(maxAbsDiff(ours.logits, g.logits)).toBeLessThan(F32_TOL);
      expect(argmaxRows(ours.logits, T, g.meta.vocab)).toEqual(g.meta.argmax);
      expect(ours.ids).toEqual(g.meta.greedy_ids);
      expect(maxAbsDiff(ours.greedyLogits, g.greedyLogits)).toBeLessThan(F32_TOL);
      // The image blocks' bidirectional mask moves HF's logits by far more than the bound, so a
      // causal-only merge could not pass the comparison above.
      expect(g.meta.bidirectional_effect_max_abs).toBeGreaterThan(100 * F32_TOL);
    });

    it("a chunked prefill (text, then both images) equals the one-shot prefill", async () => {
      const ids = g.meta.prompt_ids;
      const V = g.meta.vocab;
      const img = g.meta.image_token_id;
      const spans = imageTokenSpans(ids, img);
      expect(spans.length).toBe(2);
      const features = enc.encode(g.pixels);
      const seq = model.newCache(ids.length + 1);
      const cut = spans[0]!.start - 1; // the first chunk ends before the first image
      const a = model.forward(ids.slice(0, cut), seq, { allLogits: true, spans });
      const b = model.forward(ids.slice(cut), seq, {
        allLogits: true,
        spans,
        imageFeatures: features,
      });
      const got = new Float32Array(ids.length * V);
      got.set((await a.toArray()) as Float32Array, 0);
      got.set((await b.toArray()) as Float32Array, cut * V);
      a.dispose();
      b.dispose();
      // A chunk boundary inside an image is refused before anything runs.
      const seq2 = model.newCache(ids.length + 1);
      const mid = spans[0]!.start + 1;
      const firstRow = features.view([2 * enc.tokensPerImage, enc.textHidden]).slice(0, 1);
      expect(() =>
        model.forward(ids.slice(0, mid), seq2, { spans, imageFeatures: firstRow }),
      ).toThrow(/split/);
      expect(seq2.length).toBe(0);
      seq.dispose();
      seq2.dispose();
      features.dispose();
      expect(maxAbsDiff(got, g.logits)).toBeLessThan(F32_TOL);
    });

    it("mismatched features and image tokens are clear errors", async () => {
      const ids = g.meta.prompt_ids;
      const img = g.meta.image_token_id;
      const one = enc.encode(g.pixels.subarray(0, g.pixels.length / 2));
      const seq = model.newCache(ids.length + 1);
      expect(() => model.forward(ids, seq, { imageFeatures: one })).toThrow(ShapeError);
      expect(() => model.forward(ids, seq, { imageFeatures: one })).toThrow(/must be 8 rows of/);
      if (img >= g.meta.vocab)
        expect(() => model.forward(ids, seq, {})).toThrow(/image token needs image features/);
      expect(seq.length).toBe(0);
      const f16 = Tensor.zeros([8, model.config.hiddenSize], "bf16", "cpu");
      expect(() => model.forward(ids, seq, { imageFeatures: f16 })).toThrow(/bf16 on cpu/);
      expect(() => enc.encode(new Float32Array(7))).toThrow(ShapeError);
      f16.dispose();
      one.dispose();
      seq.dispose();
    });
  });

  const gpu = cudaAvailable() || process.env.GEMMA3_TEST_CUDA === "1";
  describe.skipIf(!gpu)(`${name}: CUDA vs HF transformers`, () => {
    const g = mmGolden(name);
    it("f32 on CUDA matches HF like the CPU path", async () => {
      const model = await loadTextModel(g.modelDir, { device: "cuda", dtype: "f32" });
      const enc = await loadVisionEncoder(g.modelDir, { device: "cuda", dtype: "f32" });
      const ours = await run(model, enc, g);
      model.dispose();
      enc.dispose();
      expect(maxAbsDiff(ours.features, g.features)).toBeLessThan(F32_TOL);
      expect(maxAbsDiff(ours.logits, g.logits)).toBeLessThan(F32_TOL);
      expect(ours.ids).toEqual(g.meta.greedy_ids);
    });
    it("bf16: features within bf16 error, argmax agrees at >= 99% of positions with HF margin > 0.05", async () => {
      const model = await loadTextModel(g.modelDir, { device: "cuda", dtype: "bf16" });
      const enc = await loadVisionEncoder(g.modelDir, { device: "cuda", dtype: "bf16" });
      const T = g.meta.prompt_ids.length;
      const ours = await run(model, enc, g);
      model.dispose();
      enc.dispose();
      // bf16 weights and activations through the tower: ~2^-8 relative per rounding.
      expect(relL2(ours.features, g.features)).toBeLessThan(3e-2);
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

describe("loading", () => {
  it("transformers >= 5 key names (with and without the inner vision_model.) load the same tower", async () => {
    const g = mmGolden("tiny-mm");
    for (const inner of ["model.vision_tower.vision_model.", "model.vision_tower."]) {
      const src = await openCheckpoint(g.modelDir);
      const tensors: Record<string, TensorSpec> = {};
      for (const [key, { file, info }] of src.tensors) {
        const data = new Uint8Array(info.end - info.begin);
        await file.readInto(key, 0, data);
        const name = key.startsWith("vision_tower.vision_model.")
          ? inner + key.slice("vision_tower.vision_model.".length)
          : key.startsWith("multi_modal_projector.")
            ? "model." + key
            : key.replace("language_model.model.", "model.language_model.");
        tensors[name] = { dtype: info.dtype, shape: [...info.shape], data };
      }
      await src.close();
      const dir = mkdtempSync(join(tmpdir(), "g3-t5-"));
      try {
        copyFileSync(join(g.modelDir, "config.json"), join(dir, "config.json"));
        writeSafetensors(join(dir, "model.safetensors"), tensors);
        const enc = await loadVisionEncoder(dir);
        const f = enc.encode(g.pixels);
        const got = (await f.toArray()) as Float32Array;
        f.dispose();
        enc.dispose();
        expect(maxAbsDiff(got, g.features)).toBeLessThan(F32_TOL);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  });

  it("a text-only checkpoint has no vision tower", async () => {
    const dir = join(repo, "packages/model/test/fixtures/tiny-1b");
    await expect(loadVisionEncoder(dir)).rejects.toThrow(WeightError);
    await expect(loadVisionEncoder(dir)).rejects.toThrow(/no vision tower/);
  });
});
