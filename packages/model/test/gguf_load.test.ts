// loadTextModel on gemma3 GGUFs written from the tiny HF fixtures (gguf_writer.ts, llama.cpp's
// conventions): F32 gives the safetensors logits within 1e-5 (the norms' +1/−1 round trip is the
// only change), and F32/BF16 give *identical* logits to safetensors holding the same values (2-D
// weights rounded to bf16, norms through fround(fround(w + 1) − 1)). Config from metadata, the
// 27B query scale rule, tokenizer metadata, and typed errors for what cannot load.
import { copyFileSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { bf16ToF32, f32ToBf16 } from "@gemma3/native";
import { afterAll, describe, expect, it } from "vitest";
import { loadConfig } from "../src/config.js";
import { GGUFError, GGUFFile, parseGGUF, type GGUFTensorInfo } from "../src/gguf.js";
import { ggufTextConfig, ggufTokenizerInfo } from "../src/gguf_load.js";
import { loadTextModel, resolveModelPath } from "../src/load.js";
import { SafetensorsFile } from "../src/safetensors.js";
import { maxAbsDiff, promptLogits } from "./golden.js";
import type { Gemma3TextModel } from "../src/text_model.js";
import { toFloat32 } from "../src/weights.js";
import { buildGGUF, f32, gemma3GGUF, str, u32, writeGemma3GGUF, type KV } from "./gguf_writer.js";
import {
  removeTempDirs,
  tempDir,
  writeSafetensors,
  type TensorSpec,
} from "./safetensors_writer.js";

const fixtures = join(dirname(fileURLToPath(import.meta.url)), "fixtures");
afterAll(removeTempDirs);

interface Goldens {
  prompt_ids: number[];
  vocab: number;
}
const goldens = (name: string) =>
  JSON.parse(readFileSync(join(fixtures, name, "goldens.json"), "utf8")) as Goldens;

async function logitsOf(path: string, ids: number[]): Promise<Float32Array> {
  const model = await loadTextModel(path, { device: "cpu", dtype: "f32" });
  try {
    return await promptLogits(model, ids);
  } finally {
    model.dispose();
  }
}

/**
 * A copy of a fixture's safetensors whose values went through what the GGUF does to them: 2-D
 * weights rounded to bf16 (when `bf16`), norms through f32 (w + 1) − 1.
 */
async function asStoredInGGUF(name: string, bf16: boolean): Promise<string> {
  const src = await SafetensorsFile.open(join(fixtures, name, "model.safetensors"));
  const tensors: Record<string, TensorSpec> = {};
  for (const [key, info] of src.tensors) {
    const v = toFloat32(await src.read(key), info.dtype);
    if (key.endsWith("norm.weight") && !key.includes("vision"))
      for (let i = 0; i < v.length; i++) v[i] = Math.fround(Math.fround(v[i]! + 1) - 1);
    else if (bf16 && info.shape.length === 2 && !key.includes("vision"))
      for (let i = 0; i < v.length; i++) v[i] = bf16ToF32(f32ToBf16(v[i]!));
    tensors[key] = { dtype: "F32", shape: [...info.shape], data: new Uint8Array(v.buffer) };
  }
  await src.close();
  const dir = tempDir("gguf-ref");
  copyFileSync(join(fixtures, name, "config.json"), join(dir, "config.json"));
  writeSafetensors(join(dir, "model.safetensors"), tensors);
  return dir;
}

for (const name of ["tiny-1b", "tiny-27b"]) {
  describe(`${name} as GGUF (CPU f32)`, () => {
    const g = goldens(name);

    it("F32: logits within 1e-5 of safetensors, identical to safetensors with the norm round trip", async () => {
      const path = await writeGemma3GGUF(
        join(fixtures, name),
        "F32",
        join(tempDir("gguf"), "m.gguf"),
      );
      const ours = await logitsOf(path, g.prompt_ids);
      const st = await logitsOf(join(fixtures, name), g.prompt_ids);
      expect(maxAbsDiff(ours, st)).toBeLessThan(1e-5);
      const same = await logitsOf(await asStoredInGGUF(name, false), g.prompt_ids);
      expect(maxAbsDiff(ours, same)).toBe(0);
    });

    it("BF16: logits identical to safetensors weights rounded to bf16 (loaded the same way)", async () => {
      const path = await writeGemma3GGUF(
        join(fixtures, name),
        "BF16",
        join(tempDir("gguf"), "m.gguf"),
      );
      const ours = await logitsOf(path, g.prompt_ids);
      const same = await logitsOf(await asStoredInGGUF(name, true), g.prompt_ids);
      expect(maxAbsDiff(ours, same)).toBe(0);
    });

    it("the config from GGUF metadata equals the one from config.json", async () => {
      const path = await writeGemma3GGUF(
        join(fixtures, name),
        "Q8_0",
        join(tempDir("gguf"), "m.gguf"),
      );
      const f = await GGUFFile.open(path);
      const ours = ggufTextConfig(f);
      await f.close();
      const hf = await loadConfig(join(fixtures, name, "config.json"));
      for (const k of [
        "vocabSize",
        "hiddenSize",
        "intermediateSize",
        "numHiddenLayers",
        "numAttentionHeads",
        "numKeyValueHeads",
        "headDim",
        "queryPreAttnScalar",
        "slidingWindow",
        "layerTypes",
        "rope",
        "maxPositionEmbeddings",
        "tieWordEmbeddings",
        "bosTokenId",
        "eosTokenIds",
        "padTokenId",
      ] as const)
        expect(ours[k], k).toEqual(hf[k]);
      expect(ours.rmsNormEps).toBe(Math.fround(hf.rmsNormEps)); // stored as FLOAT32
    });
  });
}

describe("GGUF metadata → config (llama.cpp's gemma3 rules)", () => {
  /** A header-only source: metadata plus a token_embd info of the right width. */
  function source(meta: [string, KV][], hidden: number, vocab: number) {
    return (async () => {
      const h = await parseGGUF(buildGGUF(meta, []));
      const embd: GGUFTensorInfo = {
        name: "token_embd.weight",
        typeId: 8,
        type: "Q8_0",
        ne: [hidden, vocab],
        shape: [vocab, hidden],
        offset: 0,
        nbytes: 0,
      };
      return {
        path: "x.gguf",
        metadata: h.metadata,
        tensors: new Map([["token_embd.weight", embd]]),
      };
    })();
  }
  const base = (
    layers: number,
    hidden: number,
    heads: number,
    kv: number,
    hd: number,
  ): [string, KV][] => [
    ["general.architecture", str("gemma3")],
    ["gemma3.context_length", u32(131072)],
    ["gemma3.embedding_length", u32(hidden)],
    ["gemma3.block_count", u32(layers)],
    ["gemma3.feed_forward_length", u32(4 * hidden)],
    ["gemma3.attention.head_count", u32(heads)],
    ["gemma3.attention.head_count_kv", u32(kv)],
    ["gemma3.attention.key_length", u32(hd)],
    ["gemma3.attention.value_length", u32(hd)],
    ["gemma3.attention.layer_norm_rms_epsilon", f32(1e-6)],
    ["gemma3.rope.freq_base", f32(1e6)],
    ["gemma3.attention.sliding_window", u32(1024)],
    ["gemma3.rope.scaling.type", str("linear")],
    ["gemma3.rope.scaling.factor", f32(8)],
  ];

  it("27B (62 layers): query_pre_attn_scalar = embedding_length / head_count = 168", async () => {
    const c = ggufTextConfig(await source(base(62, 5376, 32, 16, 128), 5376, 262144));
    expect(c.queryPreAttnScalar).toBe(168);
    expect(c.headDim).toBe(128);
    expect(c.vocabSize).toBe(262144); // from token_embd's rows, not 262208
    expect(c.rope).toEqual({ local: { base: 10000, scale: 1 }, global: { base: 1e6, scale: 8 } });
    expect(c.layerTypes.filter((t) => t === "full").length).toBe(10); // layers 5, 11, …, 59
    expect(c.layerTypes[5]).toBe("full");
    expect(c.layerTypes[61]).toBe("sliding");
  });

  it("4B (34 layers): query_pre_attn_scalar = key_length = 256", async () => {
    const c = ggufTextConfig(await source(base(34, 2560, 8, 4, 256), 2560, 262144));
    expect(c.queryPreAttnScalar).toBe(256);
    expect(c.slidingWindow).toBe(1024);
  });

  it("no sliding window: every layer global; an explicit pattern key is honoured", async () => {
    const noSwa = base(6, 64, 2, 1, 32).filter(([k]) => k !== "gemma3.attention.sliding_window");
    expect(ggufTextConfig(await source(noSwa, 64, 16)).layerTypes).toEqual(Array(6).fill("full"));
    const p3 = [
      ...base(6, 64, 2, 1, 32),
      ["gemma3.attention.sliding_window_pattern", u32(3)] as [string, KV],
    ];
    expect(ggufTextConfig(await source(p3, 64, 16)).layerTypes).toEqual([
      "sliding",
      "sliding",
      "full",
      "sliding",
      "sliding",
      "full",
    ]);
  });

  it("wrong architecture, yarn RoPE and missing keys are named GGUFErrors", async () => {
    const arch = base(6, 64, 2, 1, 32);
    arch[0] = ["general.architecture", str("gemma3n")];
    await expect(source(arch, 64, 16).then(ggufTextConfig)).rejects.toThrow(
      /"gemma3n" is not "gemma3"/,
    );
    const yarn = base(6, 64, 2, 1, 32);
    yarn[12] = ["gemma3.rope.scaling.type", str("yarn")];
    await expect(source(yarn, 64, 16).then(ggufTextConfig)).rejects.toMatchObject({
      code: "E_METADATA",
      key: "gemma3.rope.scaling.type",
    });
    const missing = base(6, 64, 2, 1, 32).filter(([k]) => k !== "gemma3.block_count");
    await expect(source(missing, 64, 16).then(ggufTextConfig)).rejects.toThrow(
      /key "gemma3.block_count": missing/,
    );
  });
});

describe("GGUF loading: tokenizer metadata, paths and typed errors", () => {
  it("reports the embedded tokenizer", async () => {
    const path = await writeGemma3GGUF(
      join(fixtures, "tiny-1b"),
      "Q4_0",
      join(tempDir("gguf"), "m.gguf"),
    );
    const f = await GGUFFile.open(path);
    const t = ggufTokenizerInfo(f);
    await f.close();
    expect(t.model).toBe("llama");
    expect(t.tokens).toHaveLength(512);
    expect(t.tokens!.slice(0, 4)).toEqual(["<pad>", "<eos>", "<bos>", "<unk>"]);
    expect(t.scores).toHaveLength(512);
    expect(t.tokenTypes![3]).toBe(2);
    expect([t.bosTokenId, t.eosTokenId, t.eotTokenId, t.padTokenId, t.unkTokenId]).toEqual([
      2, 1, 106, 0, 3,
    ]);
    expect(t.addBosToken).toBe(true);
    expect(t.chatTemplate).toContain("bos_token");
  });

  it("a directory with one .gguf (an mmproj beside it is paired, not counted) loads it; two are refused by name", async () => {
    const dir = tempDir("gguf-dir");
    const path = await writeGemma3GGUF(join(fixtures, "tiny-1b"), "F32", join(dir, "tiny.gguf"));
    const mmproj = join(dir, "mmproj-tiny.gguf");
    writeFileSync(mmproj, new Uint8Array(8));
    expect(await resolveModelPath(dir)).toEqual({ format: "gguf", file: path, mmproj });
    // Named by its file, the text GGUF is not paired (llama.cpp's --mmproj is explicit).
    expect(await resolveModelPath(path)).toEqual({ format: "gguf", file: path });
    // The paired mmproj is read (its header), so a broken one is an error naming it.
    await expect(loadTextModel(dir)).rejects.toThrow(/mmproj-tiny\.gguf/);
    rmSync(mmproj);
    const g = goldens("tiny-1b");
    expect(maxAbsDiff(await logitsOf(dir, g.prompt_ids), await logitsOf(path, g.prompt_ids))).toBe(
      0,
    );
    await writeGemma3GGUF(join(fixtures, "tiny-1b"), "F32", join(dir, "other.gguf"));
    await expect(loadTextModel(dir)).rejects.toThrow(/2 \.gguf files \(other\.gguf, tiny\.gguf\)/);
  });

  it("general.alignment 64 (data padded to it) loads to the same logits as the default 32", async () => {
    const g = goldens("tiny-1b");
    const dir = tempDir("gguf");
    const a32 = await writeGemma3GGUF(join(fixtures, "tiny-1b"), "Q8_0", join(dir, "a32.gguf"));
    const a64 = await writeGemma3GGUF(join(fixtures, "tiny-1b"), "Q8_0", join(dir, "a64.gguf"), {
      alignment: 64,
    });
    const f = await GGUFFile.open(a64);
    expect(f.alignment).toBe(64);
    expect([...f.tensors.values()].every((t) => t.offset % 64 === 0)).toBe(true);
    await f.close();
    expect(maxAbsDiff(await logitsOf(a64, g.prompt_ids), await logitsOf(a32, g.prompt_ids))).toBe(
      0,
    );
  });

  it("an unsupported tensor type (Q4_1) is a typed error naming the tensor, before any upload", async () => {
    const path = await writeGemma3GGUF(
      join(fixtures, "tiny-1b"),
      "Q8_0",
      join(tempDir("gguf"), "m.gguf"),
      {
        typeOf: (c, t) => (c === "layers.3.mlp.down_proj" ? "Q4_1" : t),
      },
    );
    const e = await loadTextModel(path).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(GGUFError);
    expect(e).toMatchObject({ code: "E_UNSUPPORTED_TYPE", tensor: "blk.3.ffn_down.weight" });
    expect((e as Error).message).toMatch(/type Q4_1, which this runtime cannot load/);
  });

  it("missing, unexpected and mis-shaped tensors name the tensor", async () => {
    const g = await gemma3GGUF(join(fixtures, "tiny-1b"), "F32");
    const dir = tempDir("gguf");
    const write = (tensors: typeof g.tensors, file: string) => {
      writeFileSync(join(dir, file), buildGGUF(g.metadata, tensors));
      return join(dir, file);
    };
    await expect(
      loadTextModel(
        write(
          g.tensors.filter((t) => t.name !== "blk.2.attn_k.weight"),
          "a.gguf",
        ),
      ),
    ).rejects.toMatchObject({ code: "E_TENSOR", tensor: "blk.2.attn_k.weight" });
    await expect(
      loadTextModel(
        write([...g.tensors, { name: "rope_freqs.weight", type: "F32", ne: [16] }], "b.gguf"),
      ),
    ).rejects.toMatchObject({ code: "E_TENSOR", tensor: "rope_freqs.weight" });
    await expect(
      loadTextModel(
        write(
          [...g.tensors, { name: "blk.7.attn_q.weight", type: "F32", ne: [64, 128] }],
          "c.gguf",
        ),
      ),
    ).rejects.toThrow(/unexpected tensor "blk.7.attn_q.weight" for a 7-layer gemma3 model/);
    const t = g.tensors.map((x) =>
      x.name === "blk.0.attn_q.weight" ? { ...x, ne: [128, 64] } : x,
    );
    await expect(loadTextModel(write(t, "d.gguf"))).rejects.toThrow(
      /"blk.0.attn_q.weight" has ne \[128, 64\], the config needs \[64, 128\]/,
    );
  });
});
