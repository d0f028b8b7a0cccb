// Weight names of the three layouts (1B hub, 4B+ hub, transformers 5) → canonical names, shape
// checks against the config, and uploads to a CPU tensor with and without dtype conversion.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { bf16ToF32, f32ToBf16, f16ToF32 } from "@gemma3/native";
import { loadConfig, parseConfig, type Gemma3Config } from "../src/config.js";
import { openCheckpoint, type Checkpoint } from "../src/safetensors.js";
import {
  WeightError,
  canonicalName,
  checkTextWeights,
  expectedTextWeights,
  indexWeights,
  loadTensor,
  toFloat32,
} from "../src/weights.js";
import {
  removeTempDirs,
  tempDir,
  writeSafetensors,
  writeSharded,
  type TensorSpec,
} from "./safetensors_writer.js";

afterAll(removeTempDirs);

// A tiny Gemma 3: 2 layers, hidden 8, 2 heads of 4, 1 kv head, intermediate 12, vocab 16.
const TINY = parseConfig({
  model_type: "gemma3_text",
  vocab_size: 16,
  hidden_size: 8,
  intermediate_size: 12,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  head_dim: 4,
  sliding_window: 4,
});

const PREFIX = {
  "causal-lm": "model.",
  "hub-multimodal": "language_model.model.",
  transformers5: "model.language_model.",
} as const;
type Layout = keyof typeof PREFIX;

/** Stored tensors of `cfg` in a layout, BF16, with optional edits. */
function textTensors(
  cfg: Gemma3Config,
  layout: Layout,
  dtype = "BF16",
): Record<string, TensorSpec> {
  const out: Record<string, TensorSpec> = {};
  for (const { name, shape } of expectedTextWeights(cfg))
    out[`${PREFIX[layout]}${name}.weight`] = { dtype, shape };
  return out;
}
const VISION: Record<Layout, Record<string, TensorSpec>> = {
  "causal-lm": {},
  "hub-multimodal": {
    "vision_tower.vision_model.embeddings.patch_embedding.bias": { dtype: "F32", shape: [4] },
    "vision_tower.vision_model.post_layernorm.weight": { dtype: "F32", shape: [4] },
    "multi_modal_projector.mm_input_projection_weight": { dtype: "F32", shape: [4, 8] },
    "multi_modal_projector.mm_soft_emb_norm.weight": { dtype: "F32", shape: [4] },
  },
  transformers5: {
    "model.vision_tower.embeddings.patch_embedding.bias": { dtype: "F32", shape: [4] },
    "model.vision_tower.post_layernorm.weight": { dtype: "F32", shape: [4] },
    "model.multi_modal_projector.mm_input_projection_weight": { dtype: "F32", shape: [4, 8] },
    "model.multi_modal_projector.mm_soft_emb_norm.weight": { dtype: "F32", shape: [4] },
  },
};

async function checkpoint(tensors: Record<string, TensorSpec>): Promise<Checkpoint> {
  const dir = tempDir("w");
  writeSafetensors(join(dir, "model.safetensors"), tensors);
  return openCheckpoint(dir);
}

function expectWeightError(
  fn: () => unknown,
  pattern: RegExp,
  tensor: string,
  file: string | RegExp,
): WeightError {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(WeightError);
  const we = err as WeightError;
  expect(we.message).toMatch(pattern);
  expect(we.tensor).toBe(tensor);
  if (typeof file === "string") {
    expect(we.file).toBe(file);
    expect(we.message).toContain(file);
  } else expect(we.file).toMatch(file);
  return we;
}

describe("canonicalName", () => {
  it("maps the three layouts to one set of names", () => {
    const cases: [string, string, string | null][] = [
      ["model.embed_tokens.weight", "embed_tokens", "causal-lm"],
      ["model.layers.3.self_attn.q_norm.weight", "layers.3.self_attn.q_norm", "causal-lm"],
      ["model.norm.weight", "norm", "causal-lm"],
      ["lm_head.weight", "lm_head", null],
      [
        "language_model.model.layers.0.mlp.down_proj.weight",
        "layers.0.mlp.down_proj",
        "hub-multimodal",
      ],
      ["language_model.lm_head.weight", "lm_head", "hub-multimodal"],
      [
        "vision_tower.vision_model.encoder.layers.0.mlp.fc1.bias",
        "vision.encoder.layers.0.mlp.fc1.bias",
        "hub-multimodal",
      ],
      [
        "multi_modal_projector.mm_input_projection_weight",
        "projector.mm_input_projection_weight",
        "hub-multimodal",
      ],
      [
        "model.language_model.layers.0.post_feedforward_layernorm.weight",
        "layers.0.post_feedforward_layernorm",
        "transformers5",
      ],
      ["model.language_model.embed_tokens.weight", "embed_tokens", "transformers5"],
      [
        "model.vision_tower.encoder.layers.0.layer_norm1.weight",
        "vision.encoder.layers.0.layer_norm1.weight",
        "transformers5",
      ],
      [
        "model.vision_tower.vision_model.post_layernorm.bias",
        "vision.post_layernorm.bias",
        "transformers5",
      ],
      [
        "model.multi_modal_projector.mm_soft_emb_norm.weight",
        "projector.mm_soft_emb_norm.weight",
        "transformers5",
      ],
    ];
    for (const [key, name, layout] of cases)
      expect(canonicalName(key), key).toEqual({ name, layout });
    expect(canonicalName("transformer.h.0.attn.weight")).toBeNull();
  });
});

describe("expectedTextWeights", () => {
  it("lists every tensor with torch [out, in] shapes", () => {
    const w = expectedTextWeights(TINY);
    expect(w).toHaveLength(1 + 2 * 13 + 1);
    const byName = new Map(w.map((e) => [e.name, e.shape]));
    expect(byName.get("embed_tokens")).toEqual([16, 8]);
    expect(byName.get("layers.1.self_attn.q_proj")).toEqual([8, 8]); // 2 heads × 4
    expect(byName.get("layers.1.self_attn.k_proj")).toEqual([4, 8]); // 1 kv head × 4
    expect(byName.get("layers.1.self_attn.v_proj")).toEqual([4, 8]);
    expect(byName.get("layers.1.self_attn.o_proj")).toEqual([8, 8]);
    expect(byName.get("layers.0.self_attn.q_norm")).toEqual([4]);
    expect(byName.get("layers.0.mlp.gate_proj")).toEqual([12, 8]);
    expect(byName.get("layers.0.mlp.down_proj")).toEqual([8, 12]);
    expect(byName.get("layers.0.pre_feedforward_layernorm")).toEqual([8]);
    expect(byName.get("norm")).toEqual([8]);
    expect(byName.has("lm_head")).toBe(false);
    const untied = expectedTextWeights({ ...TINY, tieWordEmbeddings: false });
    expect(untied.at(-1)).toEqual({ name: "lm_head", shape: [16, 8] });
  });

  it("27B shapes: q_proj [32·128, 5376], o_proj [5376, 4096]", () => {
    const c = parseConfig({
      model_type: "gemma3_text",
      hidden_size: 5376,
      num_attention_heads: 32,
      num_key_value_heads: 16,
      head_dim: 128,
      num_hidden_layers: 1,
    });
    const byName = new Map(expectedTextWeights(c).map((e) => [e.name, e.shape]));
    expect(byName.get("layers.0.self_attn.q_proj")).toEqual([4096, 5376]);
    expect(byName.get("layers.0.self_attn.k_proj")).toEqual([2048, 5376]);
    expect(byName.get("layers.0.self_attn.o_proj")).toEqual([5376, 4096]);
  });
});

describe("checkTextWeights", () => {
  for (const layout of Object.keys(PREFIX) as Layout[]) {
    it(`accepts the ${layout} layout`, async () => {
      const ck = await checkpoint({ ...textTensors(TINY, layout), ...VISION[layout] });
      const r = checkTextWeights(TINY, ck);
      expect(r.layout).toBe(layout);
      expect(r.lmHead).toBe("tied");
      expect(r.lmHeadStored).toBe(false);
      expect(r.index.names.get("layers.1.mlp.up_proj")).toBe(
        `${PREFIX[layout]}layers.1.mlp.up_proj.weight`,
      );
      if (layout !== "causal-lm")
        expect(r.index.names.has("projector.mm_input_projection_weight")).toBe(true);
      await ck.close();
    });
  }

  it("works across shards", async () => {
    const dir = tempDir("w");
    const all = Object.entries(textTensors(TINY, "hub-multimodal"));
    writeSharded(dir, {
      "model-00001-of-00002.safetensors": Object.fromEntries(all.slice(0, 10)),
      "model-00002-of-00002.safetensors": Object.fromEntries(all.slice(10)),
    });
    const ck = await openCheckpoint(dir);
    expect(checkTextWeights(TINY, ck).layout).toBe("hub-multimodal");
    await ck.close();
  });

  it("missing tensor: names it, the stored key it would have, and the checkpoint", async () => {
    const t = textTensors(TINY, "hub-multimodal");
    delete t["language_model.model.layers.1.self_attn.k_norm.weight"];
    const ck = await checkpoint(t);
    expectWeightError(
      () => checkTextWeights(TINY, ck),
      /missing tensor "layers.1.self_attn.k_norm" \(stored as "language_model.model.layers.1.self_attn.k_norm.weight"/,
      "layers.1.self_attn.k_norm",
      join(ck.dir, "model.safetensors"),
    );
    await ck.close();
  });

  it("mis-shaped tensor: names the stored key, both shapes and the file", async () => {
    const t = textTensors(TINY, "causal-lm");
    t["model.layers.0.self_attn.v_proj.weight"] = { dtype: "BF16", shape: [8, 8] };
    const ck = await checkpoint(t);
    expectWeightError(
      () => checkTextWeights(TINY, ck),
      /tensor "model.layers.0.self_attn.v_proj.weight" has shape \[8, 8\], config needs \[4, 8\]/,
      "layers.0.self_attn.v_proj",
      join(ck.dir, "model.safetensors"),
    );
    await ck.close();
  });

  it("non-float dtype, unknown keys, unexpected layers, mixed layouts", async () => {
    const bad = textTensors(TINY, "causal-lm");
    bad["model.norm.weight"] = { dtype: "I32", shape: [8] };
    let ck = await checkpoint(bad);
    expectWeightError(
      () => checkTextWeights(TINY, ck),
      /"model.norm.weight" is I32; weights must be BF16, F16 or F32/,
      "norm",
      /model\.safetensors$/,
    );
    await ck.close();

    ck = await checkpoint({
      ...textTensors(TINY, "causal-lm"),
      "transformer.wte.weight": { dtype: "F32", shape: [2] },
    });
    expectWeightError(
      () => checkTextWeights(TINY, ck),
      /"transformer.wte.weight" fits no known Gemma 3 layout/,
      "transformer.wte.weight",
      /model\.safetensors$/,
    );
    await ck.close();

    ck = await checkpoint({
      ...textTensors(TINY, "causal-lm"),
      "model.layers.2.input_layernorm.weight": { dtype: "BF16", shape: [8] },
    });
    expectWeightError(
      () => checkTextWeights(TINY, ck),
      /unexpected tensor "model.layers.2.input_layernorm.weight" for a 2-layer/,
      "layers.2.input_layernorm",
      /model\.safetensors$/,
    );
    await ck.close();

    ck = await checkpoint({
      ...textTensors(TINY, "causal-lm"),
      "language_model.model.norm.weight": { dtype: "BF16", shape: [8] },
    });
    expectWeightError(
      () => indexWeights(ck),
      /both map to "norm" \(mixed layouts\?\)/,
      "norm",
      /model\.safetensors$/,
    );
    await ck.close();
  });

  it("lm_head: tied (stored copy noted, shape checked) or separate", async () => {
    let ck = await checkpoint({
      ...textTensors(TINY, "causal-lm"),
      "lm_head.weight": { dtype: "BF16", shape: [16, 8] },
    });
    expect(checkTextWeights(TINY, ck)).toMatchObject({
      lmHead: "tied",
      lmHeadStored: true,
      layout: "causal-lm",
    });
    await ck.close();

    ck = await checkpoint({
      ...textTensors(TINY, "causal-lm"),
      "lm_head.weight": { dtype: "BF16", shape: [15, 8] },
    });
    expectWeightError(
      () => checkTextWeights(TINY, ck),
      /"lm_head.weight" has shape \[15, 8\], but the tied head is embed_tokens \[16, 8\]/,
      "lm_head",
      /model\.safetensors$/,
    );
    await ck.close();

    const untied = { ...TINY, tieWordEmbeddings: false };
    ck = await checkpoint(textTensors(TINY, "hub-multimodal"));
    expectWeightError(
      () => checkTextWeights(untied, ck),
      /missing tensor "lm_head" \(stored as "lm_head.weight"/,
      "lm_head",
      /model\.safetensors$/,
    );
    await ck.close();
    ck = await checkpoint({
      ...textTensors(TINY, "hub-multimodal"),
      "language_model.lm_head.weight": { dtype: "BF16", shape: [16, 8] },
    });
    expect(checkTextWeights(untied, ck).lmHead).toBe("separate");
    await ck.close();
  });
});

describe("fixtures written by transformers (test/fixtures/tiny-*)", () => {
  // Tiny random checkpoints saved by HF (safetensors' Python writer) in the hub layouts.
  const FIX = fileURLToPath(new URL("./fixtures", import.meta.url));
  for (const [dir, layout] of [
    ["tiny-1b", "causal-lm"],
    ["tiny-27b", "hub-multimodal"],
  ] as const) {
    it.skipIf(!existsSync(join(FIX, dir, "model.safetensors")))(
      `${dir} checks out as ${layout}`,
      async () => {
        const cfg = await loadConfig(join(FIX, dir, "config.json"));
        const ck = await openCheckpoint(join(FIX, dir));
        const r = checkTextWeights(cfg, ck);
        expect(r.layout).toBe(layout);
        expect(r.lmHead).toBe("tied");
        const norm = await loadTensor(ck, "norm", "cpu", "f32");
        expect(norm.shape).toEqual([cfg.hiddenSize]);
        norm.dispose();
        await ck.close();
      },
    );
  }
});

describe("toFloat32", () => {
  it("decodes float and integer dtypes", () => {
    const f32 = new Float32Array([1.5, -2, 3.25]);
    expect(toFloat32(new Uint8Array(f32.buffer), "F32")).toEqual(f32);
    const bf = new Uint16Array([f32ToBf16(1.5), f32ToBf16(-2), 0x7f80]);
    expect(Array.from(toFloat32(new Uint8Array(bf.buffer), "BF16"))).toEqual([1.5, -2, Infinity]);
    const h = new Uint16Array([0x3c00, 0xc000, 0x0001]);
    expect(Array.from(toFloat32(new Uint8Array(h.buffer), "F16"))).toEqual([1, -2, 2 ** -24]);
    expect(Array.from(toFloat32(new Uint8Array([0x38, 0xb8, 0x7e]), "F8_E4M3"))).toEqual([
      1, -1, 448,
    ]);
    expect(Array.from(toFloat32(new Uint8Array([0x3c, 0xc0]), "F8_E5M2"))).toEqual([1, -2]);
    expect(Array.from(toFloat32(new Uint8Array(new Int32Array([-7, 9]).buffer), "I32"))).toEqual([
      -7, 9,
    ]);
    expect(Array.from(toFloat32(new Uint8Array(new Float64Array([0.1]).buffer), "F64"))).toEqual([
      Math.fround(0.1),
    ]);
    expect(Array.from(toFloat32(new Uint8Array(new BigInt64Array([-3n]).buffer), "I64"))).toEqual([
      -3,
    ]);
  });
});

describe("loadTensor (CPU)", () => {
  // Row-major [rows, cols] float data, stored as BF16 / F32 bytes.
  const rows = 5;
  const cols = 6;
  const values = Float32Array.from({ length: rows * cols }, (_, i) => (i - 11) * 0.3137);
  const bf16 = Uint16Array.from(values, (v) => f32ToBf16(v));
  const bf16Values = Float32Array.from(bf16, (h) => bf16ToF32(h));

  async function ckWith(dtype: "BF16" | "F32" | "F16" | "I32"): Promise<Checkpoint> {
    const data =
      dtype === "BF16"
        ? new Uint8Array(bf16.buffer)
        : dtype === "F32"
          ? new Uint8Array(values.buffer)
          : dtype === "F16"
            ? new Uint8Array(new Uint16Array([0x3c00, 0xbc00, 0x4000, 0x3800, 0, 0x7bff]).buffer)
            : new Uint8Array(new Int32Array([1, 2, 3, 4, 5, 6]).buffer);
    const shape = dtype === "F16" || dtype === "I32" ? [6] : [rows, cols];
    return checkpoint({
      "model.embed_tokens.weight": { dtype, shape, data },
      "model.norm.weight": { dtype: "BF16", shape: [3] },
    });
  }

  it("BF16 → bf16 copies raw bits, streamed by rows with progress", async () => {
    const ck = await ckWith("BF16");
    const calls: [number, number][] = [];
    // 12 bytes per row, 25-byte chunks → 2 rows per chunk: rows [0,2), [2,4), [4,5).
    const t = await loadTensor(ck, "embed_tokens", "cpu", "bf16", {
      chunkBytes: 25,
      onProgress: (d, n) => calls.push([d, n]),
    });
    expect(t.shape).toEqual([rows, cols]);
    expect(t.dtypeName).toBe("bf16");
    expect(await t.bytes()).toEqual(new Uint8Array(bf16.buffer));
    expect(calls).toEqual([
      [24, 60],
      [48, 60],
      [60, 60],
    ]);
    t.dispose();
    await ck.close();
  });

  it("BF16 → f32 decodes exactly", async () => {
    const ck = await ckWith("BF16");
    const t = await loadTensor(ck, "embed_tokens", "cpu", "f32", { chunkBytes: 30 });
    expect(await t.toArray()).toEqual(bf16Values);
    t.dispose();
    await ck.close();
  });

  it("F32 → bf16 rounds to nearest even; F32 → f32 is exact", async () => {
    const ck = await ckWith("F32");
    const t = await loadTensor(ck, "embed_tokens", "cpu", "bf16");
    expect(await t.bytes()).toEqual(new Uint8Array(bf16.buffer));
    t.dispose();
    const u = await loadTensor(ck, "embed_tokens", "cpu", "f32", { chunkBytes: 1 }); // one row per chunk
    expect(await u.toArray()).toEqual(values);
    u.dispose();
    await ck.close();
  });

  it("F16 → f16 raw and → f32; I32 → i32", async () => {
    let ck = await ckWith("F16");
    const h = await loadTensor(ck, "embed_tokens", "cpu", "f16");
    expect(Array.from(await h.toArray())).toEqual([1, -1, 2, 0.5, 0, 65504]);
    const f = await loadTensor(ck, "embed_tokens", "cpu", "f32");
    expect(Array.from(await f.toArray())).toEqual(
      [0x3c00, 0xbc00, 0x4000, 0x3800, 0, 0x7bff].map(f16ToF32),
    );
    h.dispose();
    f.dispose();
    await ck.close();
    ck = await ckWith("I32");
    const i = await loadTensor(ck, "embed_tokens", "cpu", "i32");
    expect(Array.from(await i.toArray())).toEqual([1, 2, 3, 4, 5, 6]);
    i.dispose();
    await ck.close();
  });

  it("lm_head falls back to embed_tokens; bad names and conversions throw WeightError", async () => {
    const ck = await ckWith("BF16");
    const head = await loadTensor(ck, "lm_head", "cpu", "bf16");
    expect(await head.bytes()).toEqual(new Uint8Array(bf16.buffer));
    head.dispose();
    await expect(loadTensor(ck, "layers.0.mlp.up_proj", "cpu", "bf16")).rejects.toThrow(
      /no tensor "layers.0.mlp.up_proj"/,
    );
    await expect(loadTensor(ck, "norm", "cpu", "q8_0")).rejects.toThrow(
      /cannot load it as q8_0 \(load a float dtype, then quantize\)/,
    );
    await expect(loadTensor(ck, "norm", "cpu", "i32")).rejects.toThrow(WeightError);
    await ck.close();
  });
});
