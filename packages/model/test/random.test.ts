// randomTextModel (benchmarks at published sizes without a checkpoint) must be exactly "a checkpoint
// whose tensor `name` holds pool[(fnv1a(name) + k) mod 2^24] at element k": this test writes that
// checkpoint from the rule, independently, loads it with the safetensors loader, and compares
// logits bit for bit (CPU f32). Also: fused = unfused, and on-device quantization applies.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  expectedTextWeights,
  loadConfig,
  loadTextModel,
  randomTensorParallelModel,
  randomTextModel,
  type TextModel,
} from "../src/index.js";
import { Device } from "@gemma3/native";
import { ScaledWeight } from "../src/quantize.js";
import { fixtures } from "./golden.js";
import { removeTempDirs, tempDir, writeSafetensors } from "./safetensors_writer.js";

afterAll(removeTempDirs);

const POOL = 1 << 24;
function fnv1a(name: string): number {
  let h = 2166136261;
  for (const ch of name) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  return h % POOL;
}
function pool(): Float32Array {
  const v = new Float32Array(POOL);
  let s = 12345;
  for (let i = 0; i < POOL; i++) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    v[i] = (s / 2 ** 31 - 0.5) * 0.06;
  }
  return v;
}

async function logits(model: TextModel, ids: number[]): Promise<Float32Array> {
  const seq = model.newCache(ids.length + 1);
  const l = model.forward(ids, seq, { allLogits: true });
  const out = Float32Array.from((await l.toArray()) as Float32Array);
  l.dispose();
  seq.dispose();
  return out;
}

describe("randomTextModel", () => {
  const cfgPath = join(fixtures, "tiny-1b", "config.json");
  const ids = [2, 17, 300, 45, 9, 511, 128, 7, 64, 3, 99, 250, 18, 400, 21, 5, 77, 13];

  it("equals the checkpoint its rule describes (tied head), logits bit for bit", async () => {
    const cfg = { ...(await loadConfig(cfgPath)), tieWordEmbeddings: true };
    const p = pool();
    const tensors: Record<string, { dtype: string; shape: number[]; data: Uint8Array }> = {};
    for (const w of expectedTextWeights(cfg)) {
      const n = w.shape.reduce((a, b) => a * b, 1);
      const v = new Float32Array(n);
      const o = fnv1a(w.name);
      for (let k = 0; k < n; k++) v[k] = p[(o + k) % POOL]!;
      const key = w.name === "norm" ? "model.norm.weight" : `model.${w.name}.weight`;
      tensors[key] = { dtype: "F32", shape: [...w.shape], data: new Uint8Array(v.buffer) };
    }
    const dir = tempDir("random");
    writeSafetensors(join(dir, "model.safetensors"), tensors);
    const json = JSON.parse(readFileSync(cfgPath, "utf8")) as Record<string, unknown>;
    json.tie_word_embeddings = true;
    writeFileSync(join(dir, "config.json"), JSON.stringify(json));

    const fromFile = await loadTextModel(dir, { device: "cpu", dtype: "f32" });
    const random = await randomTextModel(cfgPath, { device: "cpu", dtype: "f32" });
    const a = await logits(fromFile, ids);
    const b = await logits(random, ids);
    expect(b.length).toBe(ids.length * cfg.vocabSize);
    expect(Array.from(b)).toEqual(Array.from(a));
    // Not a constant: the random weights spread the logits.
    expect(Math.max(...b) - Math.min(...b)).toBeGreaterThan(1e-3);
    fromFile.dispose();

    const unfused = await randomTextModel(cfgPath, { device: "cpu", dtype: "f32", fuse: false });
    expect(Array.from(await logits(unfused, ids))).toEqual(Array.from(b));
    unfused.dispose();
    random.dispose();
  });

  it("quantizes the linear weights on the device like a loaded checkpoint", async () => {
    const m = await randomTextModel(cfgPath, { device: "cpu", dtype: "f32", quantize: "q8_0" });
    const layer = m.weights.layers[0]!;
    expect(layer.downProj.dtypeName).toBe("q8_0");
    expect(layer.inputLayernorm.dtypeName).toBe("f32");
    expect(m.weights.embedTokens.dtypeName).toBe("f32");
    const ref = await randomTextModel(cfgPath, { device: "cpu", dtype: "f32" });
    const [a, b] = [await logits(m, ids), await logits(ref, ids)];
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    expect(worst).toBeGreaterThan(0); // quantized
    expect(worst).toBeLessThan(0.05); // q8_0 of uniform(±0.03) weights stays close
    expect(layer.downProj instanceof ScaledWeight).toBe(false);
    m.dispose();
    ref.dispose();
  });

  it("quantizeHead quantizes the tied table, on one device and on each rank's padded table", async () => {
    const o = { dtype: "f32", quantizeHead: "q8_0" } as const;
    const m = await randomTextModel(cfgPath, { device: "cpu", ...o });
    expect(m.weights.embedTokens.dtypeName).toBe("q8_0");
    expect(m.weights.layers[0]!.downProj.dtypeName).toBe("f32");
    const ref = await randomTextModel(cfgPath, { device: "cpu", dtype: "f32" });
    const [a, b] = [await logits(m, ids), await logits(ref, ids)];
    ref.dispose();
    m.dispose();
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    expect(worst).toBeGreaterThan(0); // quantized
    expect(worst).toBeLessThan(0.05); // q8_0 of uniform(±0.03) weights stays close
    const tp = await randomTensorParallelModel(cfgPath, {
      devices: [Device.cpu, Device.cpu],
      ...o,
    });
    const got = await logits(tp, ids);
    tp.dispose();
    let d = 0;
    for (let i = 0; i < got.length; i++) d = Math.max(d, Math.abs(got[i]! - a[i]!));
    // Rows quantize independently: the ranks hold one device's blocks (below: 1e-4).
    expect(d).toBeLessThan(1e-4);
  });

  it("split over N CPU ranks (2, 4): the shards of the same tensors, logits as one device", async () => {
    const one = await randomTextModel(cfgPath, { device: "cpu", dtype: "f32" });
    const ref = await logits(one, ids);
    one.dispose();
    for (const n of [2, 4]) {
      const tp = await randomTensorParallelModel(cfgPath, {
        devices: Array.from({ length: n }, () => Device.cpu),
        dtype: "f32",
      });
      const got = await logits(tp, ids);
      tp.dispose();
      let worst = 0;
      for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - ref[i]!));
      // Only the all-reduce's summation order differs (tp.test.ts holds loaded TP models to 1e-4).
      expect(worst).toBeLessThan(1e-4);
    }
  });
});
