// Prompts with images through the Scheduler (continuous batching, chunked prefill) against HF
// transformers' greedy ids for the tiny multimodal fixtures (tools/reference/vision_model_goldens.py,
// float32): the image features come from @gemma3/vision's encoder, each image's tokens form one
// bidirectional block, and a prefill chunk never splits a block, whatever the chunk budget.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadTextModel, type Gemma3TextModel } from "@gemma3/model";
import { loadVisionEncoder, type Gemma3VisionEncoder } from "@gemma3/vision";
import { chunkEnd, Scheduler } from "../src/index.js";

const here = dirname(fileURLToPath(import.meta.url));
const mm = join(here, "..", "..", "vision", "test", "fixtures", "mm");
const fixtures = {
  "tiny-27b": join(here, "..", "..", "model", "test", "fixtures", "tiny-27b"),
  "tiny-mm": join(mm, "tiny-mm"),
};

describe("chunkEnd keeps image blocks whole", () => {
  const spans = [
    { start: 5, end: 9 },
    { start: 12, end: 20 },
  ];
  it("ends before a block it would cut into, or after a block it starts at", () => {
    expect(chunkEnd(spans, 0, 4, 30)).toBe(4);
    expect(chunkEnd(spans, 0, 7, 30)).toBe(5);
    expect(chunkEnd(spans, 5, 6, 30)).toBe(9);
    expect(chunkEnd(spans, 9, 14, 30)).toBe(12);
    expect(chunkEnd(spans, 12, 13, 30)).toBe(20);
    expect(chunkEnd(spans, 20, 99, 30)).toBe(30);
  });
});

for (const [name, dir] of Object.entries(fixtures)) {
  const goldens = join(mm, name, "goldens.json");
  describe.skipIf(!existsSync(goldens))(`${name}: scheduler greedy with two images vs HF`, () => {
    const g = JSON.parse(readFileSync(goldens, "utf8")) as {
      prompt_ids: number[];
      greedy_ids: number[];
    };
    let model: Gemma3TextModel;
    let enc: Gemma3VisionEncoder;
    let pixels: Float32Array;
    beforeAll(async () => {
      model = await loadTextModel(dir, { device: "cpu", dtype: "f32" });
      enc = await loadVisionEncoder(dir, { device: "cpu", dtype: "f32" });
      const b = readFileSync(join(mm, name, "pixel_values.f32"));
      pixels = new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
    });
    afterAll(() => {
      model?.dispose();
      enc?.dispose();
    });

    for (const maxBatchTokens of [512, 3]) {
      it(`maxBatchTokens ${maxBatchTokens}: the same ${g.greedy_ids.length} greedy ids; features freed`, async () => {
        const sched = new Scheduler(model, {
          maxSeqs: 2,
          maxSeqLen: 64,
          pageSize: 8,
          maxBatchTokens,
        });
        try {
          // Two requests at once: one with the images, one text-only prompt decoding beside it.
          const features = enc.encode(pixels);
          const withImages = sched.submit({
            prompt: g.prompt_ids,
            imageFeatures: features,
            maxTokens: g.greedy_ids.length,
            temperature: 0,
            ignoreEos: true,
          });
          const text = sched.submit({
            prompt: [2, 5, 6, 7],
            maxTokens: 4,
            temperature: 0,
            ignoreEos: true,
          });
          const [r] = await Promise.all([withImages.result, text.result]);
          expect(r.tokenIds).toEqual(g.greedy_ids);
          expect(features.disposed).toBe(true);
        } finally {
          await sched.close();
        }
      });
    }

    it("refuses features that do not match the prompt's image tokens", () => {
      const sched = new Scheduler(model, { maxSeqs: 1, maxSeqLen: 64 });
      const features = enc.encode(pixels.subarray(0, pixels.length / 2));
      expect(() =>
        sched.submit({ prompt: g.prompt_ids, imageFeatures: features, maxTokens: 2 }),
      ).toThrow(/image tokens .* but \d+ image feature rows/);
      expect(features.disposed).toBe(true);
      return sched.close();
    });
  });
}
