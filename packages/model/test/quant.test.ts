// Quantization: q8_0 / q4_0 blocks and fp8_e4m3 with per-row scales (error bounds per format, the
// scaled matmul), compareLogits, and the quality of quantized tiny models against the unquantized
// one (mean KL and top-1 agreement, printed as a table): quantize-on-load from safetensors, GGUF
// Q8_0/Q4_0 files, and fp8 (fake-quantized weights until DecoderLayer passes the scales).
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Tensor, UnsupportedError, ops } from "@gemma3/native";
import { afterAll, describe, expect, it } from "vitest";
import { DecoderLayer, type StoredLayerWeight } from "../src/block.js";
import { loadTextModel } from "../src/load.js";
import {
  ScaledWeight,
  compareLogits,
  dequantizeBlocks,
  layerOps,
  quantizeWeight,
  scaleOf,
  type LogitComparison,
} from "../src/quantize.js";
import type { Gemma3TextModel } from "../src/text_model.js";
import { writeGemma3GGUF } from "./gguf_writer.js";
import { removeTempDirs, tempDir } from "./safetensors_writer.js";

const fixtures = join(dirname(fileURLToPath(import.meta.url)), "fixtures");
afterAll(removeTempDirs);

/** Deterministic values of unit scale with a few outliers (block maxima matter). */
function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const u = s / 2 ** 32 - 0.5;
    out[i] = i % 97 === 0 ? u * 20 : u * 2;
  }
  return out;
}

async function arrayOf(t: Tensor): Promise<Float32Array> {
  return (await t.toArray()) as Float32Array;
}

describe("quantizeWeight: error bounds per format", () => {
  const N = 19;
  const K = 96;
  const w = values(N * K, 7);

  it("q8_0: |w − deq| ≤ 0.51·amax(block)/127 (+ the f16 rounding of d); host and native dequant agree", async () => {
    const t = Tensor.from(w, [N, K]);
    const q = quantizeWeight(t, "q8_0");
    expect(q.dtypeName).toBe("q8_0");
    const deq = await arrayOf(ops.dequantize(q, "f32"));
    expect(dequantizeBlocks(await q.bytes(), "q8_0")).toEqual(deq);
    for (let b = 0; b < (N * K) / 32; b++) {
      let amax = 0;
      for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(w[b * 32 + i]!));
      for (let i = 0; i < 32; i++)
        expect(Math.abs(w[b * 32 + i]! - deq[b * 32 + i]!)).toBeLessThanOrEqual(
          (0.5 * amax) / 127 + amax * 2 ** -11,
        );
    }
    t.dispose();
    q.dispose();
  });

  it("q4_0: |w − deq| ≤ d = |max|/8 (the top value clamps to q = 15); host and native agree", async () => {
    const t = Tensor.from(w, [N, K]);
    const q = quantizeWeight(t, "q4_0");
    const deq = await arrayOf(ops.dequantize(q, "f32"));
    expect(dequantizeBlocks(await q.bytes(), "q4_0")).toEqual(deq);
    for (let b = 0; b < (N * K) / 32; b++) {
      let amax = 0;
      for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(w[b * 32 + i]!));
      for (let i = 0; i < 32; i++)
        expect(Math.abs(w[b * 32 + i]! - deq[b * 32 + i]!)).toBeLessThanOrEqual(
          (amax / 8) * (1 + 2 ** -10),
        );
    }
    t.dispose();
    q.dispose();
  });

  it("fp8_e4m3: a ScaledWeight; |w − deq| ≤ 2^-4·|w| + 2^-10·scale (3-bit mantissa, subnormals)", async () => {
    const t = Tensor.from(w, [N, K]);
    const q = quantizeWeight(t, "fp8_e4m3") as ScaledWeight;
    expect(q).toBeInstanceOf(ScaledWeight);
    expect(q.dtypeName).toBe("fp8_e4m3");
    expect(scaleOf(q)).toBe(q.scale);
    expect(scaleOf(t)).toBeUndefined();
    const scale = await arrayOf(q.scale);
    const deq = await arrayOf(ops.dequantize(q, "f32", { scale: q.scale }));
    for (let r = 0; r < N; r++) {
      let amax = 0;
      for (let c = 0; c < K; c++) amax = Math.max(amax, Math.abs(w[r * K + c]!));
      expect(scale[r]).toBeCloseTo(amax / 448, 6);
      for (let c = 0; c < K; c++) {
        const i = r * K + c;
        expect(Math.abs(w[i]! - deq[i]!)).toBeLessThanOrEqual(
          2 ** -4 * Math.abs(w[i]!) + 2 ** -10 * scale[r]!,
        );
      }
    }
    t.dispose();
    q.dispose();
    expect(q.data.disposed).toBe(true);
    expect(q.scale.disposed).toBe(true);
  });

  it("fp8 matmul with the scale = matmul of the dequantized weight; layerOps passes the scale itself", async () => {
    const M = 5;
    const x = Tensor.from(values(M * K, 3), [M, K]);
    const t = Tensor.from(w, [N, K]);
    const q = quantizeWeight(t, "fp8_e4m3") as ScaledWeight;
    const deq = ops.dequantize(q, "f32", { scale: q.scale });
    const ref = await arrayOf(ops.matmul(x, deq));
    const scaled = await arrayOf(ops.matmul(x, q, { scale: q.scale }));
    const auto = await arrayOf(layerOps.matmul(x, q));
    expect(auto).toEqual(scaled);
    // Both sum in float32: (Σ x·q)·s vs Σ x·(q·s) differ by rounding only (|y| ~ 10).
    for (let i = 0; i < ref.length; i++)
      expect(Math.abs(scaled[i]! - ref[i]!)).toBeLessThanOrEqual(1e-5 * (1 + Math.abs(ref[i]!)));
    for (const z of [x, t, q, deq]) z.dispose();
  });
});

describe("compareLogits", () => {
  it("identical logits: KL 0, top-1 1; a two-token case matches the closed form", () => {
    const a = Float32Array.from([1, 2, 3, 0, 0, 5]);
    expect(compareLogits(a, a, 3)).toEqual({
      rows: 2,
      meanKL: 0,
      maxKL: 0,
      top1Agreement: 1,
      maxAbsDiff: 0,
    });
    const p = Float32Array.from([0, Math.log(3)]); // P = (1/4, 3/4)
    const q = Float32Array.from([Math.log(3), 0]); // Q = (3/4, 1/4)
    const kl = 0.25 * Math.log(1 / 3) + 0.75 * Math.log(3);
    const c = compareLogits(p, q, 2);
    expect(Math.abs(c.meanKL - kl)).toBeLessThan(1e-7);
    expect(c.top1Agreement).toBe(0);
    expect(() => compareLogits(a, a.subarray(1), 3)).toThrow(RangeError);
  });
});

// ---- quality of quantized tiny models ----------------------------------------------------------

interface Goldens {
  prompt_ids: number[];
  greedy_ids: number[];
  vocab: number;
}

/** Logits [T, vocab] of prompt + HF's greedy continuation, teacher-forced (64 positions). */
async function logitsOf(model: Gemma3TextModel, ids: number[]): Promise<Float32Array> {
  const cache = model.newCache(ids.length + 1);
  const l = model.forward(ids, cache, { allLogits: true });
  const out = await arrayOf(l);
  l.dispose();
  cache.dispose();
  return out;
}

/**
 * The same logits [T, vocab] one position per forward (decode, M = 1): q8_0 / q4_0 matmuls take
 * the q-dot path (x rounded to int8 blocks, kernels.inc) unless GEMMA3_QDOT=float.
 */
async function decodeLogitsOf(model: Gemma3TextModel, ids: number[]): Promise<Float32Array> {
  const cache = model.newCache(ids.length + 1);
  const rows: Float32Array[] = [];
  for (const id of ids) {
    const l = model.forward([id], cache, { allLogits: true });
    rows.push(await arrayOf(l));
    l.dispose();
  }
  cache.dispose();
  const out = new Float32Array(rows.reduce((n, r) => n + r.length, 0));
  let o = 0;
  for (const r of rows) out.set(r, (o += r.length) - r.length);
  return out;
}

/** fp8 as the layers will run it: every quantizable linear weight replaced by dequant(quant(w)). */
async function fakeQuantFp8(model: Gemma3TextModel): Promise<void> {
  const linear: StoredLayerWeight[] = [
    "qProj",
    "kProj",
    "vProj",
    "oProj",
    "gateProj",
    "upProj",
    "downProj",
  ];
  for (const l of model.weights.layers)
    for (const t of linear.map((f) => l[f])) {
      const q = quantizeWeight(t, "fp8_e4m3") as ScaledWeight;
      const deq = ops.dequantize(q, t.dtypeName as "f32", { scale: q.scale });
      t.copyFrom(deq);
      q.dispose();
      deq.dispose();
    }
}

const table: string[] = [];
afterAll(() => {
  if (table.length)
    console.log(
      [
        "model     | weights                         | mean KL    | max KL     | top-1  | max |Δlogit|",
        "----------|---------------------------------|------------|------------|--------|------------",
        ...table,
      ].join("\n"),
    );
});
function row(model: string, what: string, c: LogitComparison): void {
  table.push(
    `${model.padEnd(9)} | ${what.padEnd(31)} | ${c.meanKL.toExponential(2).padEnd(10)} | ` +
      `${c.maxKL.toExponential(2).padEnd(10)} | ${c.top1Agreement.toFixed(3).padEnd(6)} | ${c.maxAbsDiff.toFixed(4)}`,
  );
}

for (const name of ["tiny-1b", "tiny-27b"]) {
  describe(`${name}: quantized vs unquantized (CPU f32, 64 positions)`, () => {
    const dir = join(fixtures, name);
    const g = JSON.parse(readFileSync(join(dir, "goldens.json"), "utf8")) as Goldens;
    const ids = [...g.prompt_ids, ...g.greedy_ids];
    let ref: Float32Array;
    const load = async (path: string, o: Parameters<typeof loadTextModel>[1] = {}) => {
      const m = await loadTextModel(path, { device: "cpu", dtype: "f32", ...o });
      try {
        return await logitsOf(m, ids);
      } finally {
        m.dispose();
      }
    };

    it("q8_0 and q4_0 quantize-on-load: q8_0 near-lossless, q4_0 worse but close", async () => {
      ref = await load(dir);
      const q8 = compareLogits(ref, await load(dir, { quantize: "q8_0" }), g.vocab);
      const q4 = compareLogits(ref, await load(dir, { quantize: "q4_0" }), g.vocab);
      row(name, "q8_0 (quantize on load)", q8);
      row(name, "q4_0 (quantize on load)", q4);
      // Sanity bounds, not targets: these random models have near-flat distributions (HF top-2
      // margins ~0.03), so top-1 flips easily; measured values are in the report table.
      expect(q8.meanKL).toBeLessThan(1e-3);
      expect(q8.top1Agreement).toBeGreaterThanOrEqual(0.9);
      expect(q4.meanKL).toBeGreaterThan(q8.meanKL);
      expect(q4.meanKL).toBeLessThan(0.2);
    });

    it("q8_0 and q4_0 decode, one position per step (M = 1: q8 activations unless GEMMA3_QDOT=float)", async () => {
      const path = process.env.GEMMA3_QDOT === "float" ? "float x" : "q8 x";
      for (const q of ["q8_0", "q4_0"] as const) {
        const m = await loadTextModel(dir, { device: "cpu", dtype: "f32", quantize: q });
        const c = compareLogits(ref, await decodeLogitsOf(m, ids), g.vocab);
        m.dispose();
        row(name, `${q} decode (${path})`, c);
        // The prompt pass's KL bounds. q8 activations round x as finely as q8_0 rounds W, so q8_0's
        // KL about doubles (tiny-1b 3.0e-4 -> 5.6e-4, tiny-27b 1.1e-4 -> 2.2e-4) and, on these
        // near-flat distributions (top-2 margins ~0.03), 56 of 64 top-1s agree on tiny-1b (60
        // with float x): the top-1 bound is 0.85 here, not the prompt pass's 0.9.
        expect(c.meanKL).toBeLessThan(q === "q8_0" ? 1e-3 : 0.2);
        if (q === "q8_0") expect(c.top1Agreement).toBeGreaterThanOrEqual(0.85);
      }
    });

    it("GGUF Q8_0 / Q4_0 files (token_embd quantized too, norms F32)", async () => {
      for (const type of ["Q8_0", "Q4_0"] as const) {
        const path = await writeGemma3GGUF(dir, type, join(tempDir("quant"), `m-${type}.gguf`));
        const c = compareLogits(ref, await load(path), g.vocab);
        row(name, `GGUF ${type}`, c);
        expect(c.meanKL).toBeLessThan(type === "Q8_0" ? 1e-3 : 0.2);
      }
    });

    it("fp8_e4m3 (weights fake-quantized: dequant(quant(w)) in f32)", async () => {
      const m = await loadTextModel(dir, { device: "cpu", dtype: "f32" });
      await fakeQuantFp8(m);
      const c = compareLogits(ref, await logitsOf(m, ids), g.vocab);
      m.dispose();
      row(name, "fp8_e4m3 (fake-quant)", c);
      expect(c.meanKL).toBeLessThan(0.02);
    });

    it("loadTextModel quantize fp8_e4m3: refused until DecoderLayer applies weight scales, then matches fake-quant", async () => {
      const wired = (DecoderLayer as unknown as { supportsWeightScales?: boolean })
        .supportsWeightScales;
      if (!wired) {
        await expect(load(dir, { quantize: "fp8_e4m3" })).rejects.toBeInstanceOf(UnsupportedError);
        return;
      }
      const real = await load(dir, { quantize: "fp8_e4m3" });
      const m = await loadTextModel(dir, { device: "cpu", dtype: "f32" });
      await fakeQuantFp8(m);
      const fake = await logitsOf(m, ids);
      m.dispose();
      const c = compareLogits(fake, real, g.vocab);
      row(name, "fp8_e4m3 (loaded) vs fake-quant", c);
      expect(c.maxAbsDiff).toBeLessThan(1e-4);
    });
  });
}
