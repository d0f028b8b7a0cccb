// gemma3 generate --image: the CLI's images reach the model as the library path computes them
// (decode + preprocess + Pan & Scan → SigLIP encode → features at the image-token positions, in
// order), on the tiny-mm fixture (vision_model_goldens.py; its own parity is siglip.test.ts).
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { loadTextModel } from "@gemma3/model";
import { ops } from "@gemma3/native";
import { loadImage, loadVisionEncoder } from "@gemma3/vision";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const cli = join(root, "dist", "cli.js");
const model = join(root, "..", "..", "packages", "vision", "test", "fixtures", "mm", "tiny-mm");
const images = join(root, "..", "..", "packages", "vision", "test", "fixtures", "images");
const wide = join(images, "exif6_1200x700.jpg"); // Pan & Scan: 2 crops (HF)
const other = join(images, "palette_1000x900.png"); // no crops

function gemma3(...args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: "utf8" });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

// tiny-mm: boi 500, eoi 501, image 502, 4 tokens per image.
const block = [500, 502, 502, 502, 502, 501];
const promptFor = (images: number) => [2, 10, ...Array(images).fill(block).flat(), 11, 12];

describe("gemma3 generate --image", () => {
  it("--prompt-ids with Pan & Scan: the same greedy tokens as the library path", async () => {
    const ids = promptFor(3); // the image, then its 2 crops
    const r = gemma3(
      "generate",
      "--model",
      model,
      "--image",
      wide,
      "--pan-and-scan",
      "--prompt-ids",
      ids.join(","),
      "--max-tokens",
      "6",
      "--ignore-eos",
      "--json",
    );
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    const out = JSON.parse(r.out) as { tokens: number[] };

    const m = await loadTextModel(model);
    const enc = await loadVisionEncoder(model);
    const pre = await loadImage(wide, { imageSize: enc.imageSize, panAndScan: true });
    expect(pre.numCrops).toBe(2);
    const features = enc.encode(pre.pixelValues);
    const seq = m.newCache(ids.length + 8);
    let step = m.forward(ids, seq, { imageFeatures: features });
    const want: number[] = [];
    for (let i = 0; i < 6; i++) {
      const am = ops.argmax(step);
      const t = (await am.toArray())[0]!;
      am.dispose();
      step.dispose();
      want.push(t);
      step = m.forward([t], seq);
    }
    step.dispose();
    seq.dispose();
    features.dispose();
    enc.dispose();
    m.dispose();
    expect(out.tokens).toEqual(want);
  });

  it("the image changes the distribution; a token count that does not match is an error", () => {
    const run = (img: string) =>
      gemma3(
        "generate",
        "--model",
        model,
        "--image",
        img,
        "--prompt-ids",
        promptFor(1).join(","),
        "--max-tokens",
        "1",
        "--logprobs",
        "3",
        "--json",
      );
    const a = JSON.parse(run(wide).out);
    const b = JSON.parse(run(other).out);
    expect(a.logprobs[0].top).not.toEqual(b.logprobs[0].top);

    const bad = gemma3(
      "generate",
      "--model",
      model,
      "--image",
      wide,
      "--pan-and-scan",
      "--prompt-ids",
      promptFor(1).join(","),
    );
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/image features \[3, 4, 48\] must be 4 rows of 48/);
    const usage = gemma3("generate", "--model", model, "--pan-and-scan", "--prompt-ids", "2,10");
    expect(usage.code).toBe(2);
    expect(usage.err).toMatch(/--pan-and-scan goes with --image/);
  });
});
