// quantizeHead (LoadOptions): the token embedding table, which Gemma 3 ties to the output head,
// quantized on load to a block format (opt-in; llama.cpp quantizes the tied head by default). On
// the tiny fixtures, CPU f32: the table's dtype, the layers left as they were, the logits against
// the float head (mean KL and top-1 agreement, printed as a table like quant.test.ts), greedy
// decode eager and graph-replayed, the fallback for rows that are not whole blocks, the refusals,
// and GGUF files (a float token_embd is quantized, a block one kept).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { Tensor } from "@gemma3/native";
import type { LayerWeights } from "../src/block.js";
import { loadTextModel, type LoadOptions } from "../src/load.js";
import { compareLogits, type LogitComparison } from "../src/quantize.js";
import { randomTextModel } from "../src/random.js";
import type { Gemma3TextModel } from "../src/text_model.js";
import { loadTensorParallelModel } from "../src/tp/load.js";
import { fixtures, promptAndGreedy, promptLogits } from "./golden.js";
import { writeGemma3GGUF } from "./gguf_writer.js";
import { removeTempDirs, tempDir } from "./safetensors_writer.js";

afterAll(removeTempDirs);

const dir = join(fixtures, "tiny-1b"); // hidden 64: whole q8_0 / q4_0 blocks, not K-quant ones
const g = JSON.parse(readFileSync(join(dir, "goldens.json"), "utf8")) as {
  prompt_ids: number[];
  greedy_ids: number[];
  vocab: number;
};
const ids = [...g.prompt_ids, ...g.greedy_ids];

const load = (path: string, o: LoadOptions = {}) =>
  loadTextModel(path, { device: "cpu", dtype: "f32", ...o });

/** Logits [T, vocab] of `ids`, teacher-forced. */
const logitsOf = (model: Gemma3TextModel) => promptLogits(model, ids);

/** Every layer weight with its name (fused owners and their row views included). */
function layerWeights(m: Gemma3TextModel): [string, Tensor][] {
  return m.weights.layers.flatMap((l, i) =>
    (Object.entries(l) as [keyof LayerWeights, Tensor][]).map(
      ([k, t]) => [`layers.${i}.${k}`, t] as [string, Tensor],
    ),
  );
}

const table: string[] = [];
afterAll(() => {
  if (table.length)
    console.log(
      [
        "model     | head (layers f32)  | mean KL    | max KL     | top-1  | max |Δlogit|",
        "----------|--------------------|------------|------------|--------|------------",
        ...table,
      ].join("\n"),
    );
});
function row(what: string, c: LogitComparison): void {
  table.push(
    `tiny-1b   | ${what.padEnd(18)} | ${c.meanKL.toExponential(2).padEnd(10)} | ` +
      `${c.maxKL.toExponential(2).padEnd(10)} | ${c.top1Agreement.toFixed(3).padEnd(6)} | ${c.maxAbsDiff.toFixed(4)}`,
  );
}

describe("tiny-1b: quantizeHead (CPU f32, 64 positions)", () => {
  let ref: Float32Array;

  it("q8_0 and q4_0: the tied table is quantized, the layers are not; logits stay close", async () => {
    const float = await load(dir);
    ref = await logitsOf(float);
    const before = new Map<string, { dtype: string; bytes: Uint8Array }>();
    for (const [k, t] of layerWeights(float))
      before.set(k, { dtype: t.dtypeName, bytes: await t.bytes() });
    float.dispose();
    const c: Record<string, LogitComparison> = {};
    for (const q of ["q8_0", "q4_0"] as const) {
      const m = await load(dir, { quantizeHead: q });
      try {
        expect(m.weights.embedTokens.dtypeName).toBe(q);
        expect(m.weights.embedTokens.shape).toEqual([g.vocab, 64]);
        expect(m.weights.lmHead).toBeUndefined(); // tied: the table is the head
        // Without `quantize` every layer weight is what the float-head model loads, bit for bit.
        const layers = layerWeights(m);
        expect(layers.length).toBe(before.size);
        for (const [k, t] of layers) {
          expect(t.dtypeName, k).toBe(before.get(k)!.dtype);
          expect(Buffer.from(await t.bytes()).equals(before.get(k)!.bytes), k).toBe(true);
        }
        c[q] = compareLogits(ref, await logitsOf(m), g.vocab);
        row(`${q} head`, c[q]);
      } finally {
        m.dispose();
      }
    }
    // The bounds quant.test.ts holds `quantize` to on these models (sanity bounds, not targets:
    // near-flat distributions, HF top-2 margins ~0.03). The head is one [512, 64] matrix where
    // `quantize` rounds seven layers' seven matrices: measured mean KL 7.4e-5 (q8_0, top-1 62/64)
    // and 2.2e-2 (q4_0, 39/64), against `quantize`'s 3.0e-4 and 8.1e-2.
    expect(c.q8_0!.meanKL).toBeLessThan(1e-3);
    expect(c.q8_0!.top1Agreement).toBeGreaterThanOrEqual(0.9);
    expect(c.q4_0!.meanKL).toBeGreaterThan(c.q8_0!.meanKL);
    expect(c.q4_0!.meanKL).toBeLessThan(0.2);
  });

  it("greedy decode with a q8_0 / q4_0 head: graph-replayed steps equal eager ones bit for bit", async () => {
    for (const q of ["q8_0", "q4_0"] as const) {
      const m = await load(dir, { quantizeHead: q });
      try {
        const eager = await promptAndGreedy(m, g.prompt_ids, { steps: 8 });
        const graphed = await promptAndGreedy(m, g.prompt_ids, { steps: 8, graph: true });
        expect(graphed.length).toBe(9);
        graphed.forEach((r, i) =>
          expect(Array.from(r), `${q} output ${i}`).toEqual(Array.from(eager[i]!)),
        );
        for (const r of graphed) expect(r.every(Number.isFinite)).toBe(true);
      } finally {
        m.dispose();
      }
    }
  });

  it("quantize + quantizeHead q8_0 quantize the table as a GGUF Q8_0 file stores it", async () => {
    // llama.cpp's Q8_0 file type stores token_embd in Q8_0; the writer quantizes with ops.quantize
    // from the same f32 values, so the bytes match.
    const path = await writeGemma3GGUF(dir, "Q8_0", join(tempDir("head"), "tiny-Q8_0.gguf"));
    const file = await load(path);
    const ours = await load(dir, { quantize: "q8_0", quantizeHead: "q8_0" });
    try {
      expect(file.weights.embedTokens.dtypeName).toBe("q8_0");
      expect(ours.weights.embedTokens.dtypeName).toBe("q8_0");
      const [a, b] = [
        await file.weights.embedTokens.bytes(),
        await ours.weights.embedTokens.bytes(),
      ];
      expect(Buffer.from(a).equals(b)).toBe(true);
    } finally {
      file.dispose();
      ours.dispose();
    }
  });

  it("K-quants need rows of 256: hidden 64 keeps the table in f32 (logits equal the float head)", async () => {
    for (const q of ["q4_k", "q5_k", "q6_k"] as const) {
      const m = await load(dir, { quantizeHead: q });
      try {
        expect(m.weights.embedTokens.dtypeName, q).toBe("f32");
        expect(Array.from(await logitsOf(m)), q).toEqual(Array.from(ref));
      } finally {
        m.dispose();
      }
    }
  });
});

describe("quantizeHead: fallbacks and refusals", () => {
  it("tiny-27b (hidden 48, not whole 32-blocks): the table stays in the compute dtype", async () => {
    for (const dtype of ["f32", "bf16"] as const) {
      const m = await load(join(fixtures, "tiny-27b"), { dtype, quantizeHead: "q8_0" });
      expect(m.weights.embedTokens.dtypeName).toBe(dtype);
      m.dispose();
    }
  });

  it("fp8_e4m3 and unknown formats are refused before anything is read, naming the choices", async () => {
    const missing = join(tempDir("head"), "no-such-model");
    const allowed = /is not one of q8_0, q4_0, q4_k, q5_k, q6_k/;
    for (const bad of ["fp8_e4m3", "q3_x"]) {
      const o = { quantizeHead: bad as never };
      // A missing path would fail on reading: the option is refused first.
      await expect(load(missing, o)).rejects.toThrow(RangeError);
      await expect(load(missing, o)).rejects.toThrow(allowed);
      await expect(
        loadTensorParallelModel(missing, { devices: ["cpu", "cpu"], ...o }),
      ).rejects.toThrow(allowed);
      await expect(randomTextModel(join(dir, "config.json"), o)).rejects.toThrow(allowed);
    }
    await expect(load(missing, { quantizeHead: "fp8_e4m3" as never })).rejects.toThrow(
      /per-tensor fp8 scale/,
    );
  });
});

describe("quantizeHead on GGUF files", () => {
  it("a float token_embd (F32, F16) becomes the block type; a Q8_0 one keeps its blocks", async () => {
    const tmp = tempDir("head");
    const st = await load(dir, { quantizeHead: "q4_0" });
    const want = await st.weights.embedTokens.bytes();
    st.dispose();
    const f32 = await writeGemma3GGUF(dir, "F32", join(tmp, "tiny-F32.gguf"));
    const m = await load(f32, { quantizeHead: "q4_0" });
    try {
      expect(m.weights.embedTokens.dtypeName).toBe("q4_0");
      // The same f32 values quantized the same way as from safetensors.
      expect(Buffer.from(await m.weights.embedTokens.bytes()).equals(want)).toBe(true);
      for (const [k, t] of layerWeights(m)) expect(t.dtypeName, k).toBe("f32");
      expect((await logitsOf(m)).every(Number.isFinite)).toBe(true);
    } finally {
      m.dispose();
    }
    const f16 = await writeGemma3GGUF(dir, "F16", join(tmp, "tiny-F16.gguf"));
    const h = await load(f16, { quantizeHead: "q8_0" });
    expect(h.weights.embedTokens.dtypeName).toBe("q8_0");
    h.dispose();
    const q8 = await writeGemma3GGUF(dir, "Q8_0", join(tmp, "tiny-Q8_0.gguf"));
    const b = await load(q8, { quantizeHead: "q4_0" });
    expect(b.weights.embedTokens.dtypeName).toBe("q8_0");
    b.dispose();
  });
});
