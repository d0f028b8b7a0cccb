// The multimodal config of a text GGUF + mmproj GGUF pair at the published Gemma 3 sizes (4B, 12B,
// 27B): the mmproj metadata as convert_hf_to_gguf.py writes it from the hub's config.json and
// preprocessor_config.json (gguf_mmproj_writer.ts), the text GGUF's gemma3.* keys and vocabulary;
// the reference is the hub's config.json as parseConfig reads it. Headers only: token_embd's
// 262208 × hidden shape is given as tensor info, no data. Tensor loading is in
// @gemma3/vision's gguf_mmproj.test.ts.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { parseConfig, type Gemma3Config } from "../src/config.js";
import { GGUFError, GGUFFile, type GGUFTensorInfo } from "../src/gguf.js";
import type { GGUFSource } from "../src/gguf_load.js";
import { ggufMmprojInfo, ggufMultimodalConfig } from "../src/gguf_mmproj.js";
import { mmprojMetadata } from "./gguf_mmproj_writer.js";
import { arr, f32, str, u32, writeGGUF, type KV } from "./gguf_writer.js";
import { removeTempDirs, tempDir } from "./safetensors_writer.js";

const here = dirname(fileURLToPath(import.meta.url));
const configs = join(here, "fixtures", "configs");
const pre = JSON.parse(
  readFileSync(
    join(here, "..", "..", "vision", "test", "fixtures", "preprocessor_config.json"),
    "utf8",
  ),
) as Record<string, unknown>;
afterAll(removeTempDirs);

/** A header-only GGUF's metadata, read back by the reader. */
async function header(metadata: [string, KV][], name: string): Promise<GGUFSource> {
  const path = writeGGUF(join(tempDir("mmproj-cfg"), name), metadata, []);
  const f = await GGUFFile.open(path);
  await f.close();
  return { path, metadata: f.metadata, tensors: new Map() };
}

/** The gemma3.* keys llama.cpp's Gemma3Model writes for a config (as gguf_writer.ts does). */
function textMetadata(c: Gemma3Config, tokens?: string[]): [string, KV][] {
  return [
    ["general.architecture", str("gemma3")],
    ["gemma3.context_length", u32(c.maxPositionEmbeddings)],
    ["gemma3.embedding_length", u32(c.hiddenSize)],
    ["gemma3.block_count", u32(c.numHiddenLayers)],
    ["gemma3.feed_forward_length", u32(c.intermediateSize)],
    ["gemma3.attention.head_count", u32(c.numAttentionHeads)],
    ["gemma3.attention.head_count_kv", u32(c.numKeyValueHeads)],
    ["gemma3.attention.key_length", u32(c.headDim)],
    ["gemma3.attention.value_length", u32(c.headDim)],
    ["gemma3.attention.layer_norm_rms_epsilon", f32(c.rmsNormEps)],
    ["gemma3.rope.freq_base", f32(c.rope.global.base)],
    ["gemma3.attention.sliding_window", u32(c.slidingWindow)],
    ["gemma3.rope.scaling.type", str("linear")],
    ["gemma3.rope.scaling.factor", f32(c.rope.global.scale)],
    ...(tokens ? [["tokenizer.ggml.tokens", arr("string", tokens)] as [string, KV]] : []),
  ];
}

async function pair(model: string, tokens?: (c: Gemma3Config) => string[]) {
  const hub = parseConfig(
    JSON.parse(readFileSync(join(configs, `${model}.config.json`), "utf8")),
    model,
  );
  const text = await header(textMetadata(hub, tokens?.(hub)), `${model}.gguf`);
  const rows = 262_208; // the converter keeps config.json's vocab_size rows
  const embd: GGUFTensorInfo = {
    name: "token_embd.weight",
    typeId: 1,
    type: "F16",
    ne: [hub.hiddenSize, rows],
    shape: [rows, hub.hiddenSize],
    offset: 0,
    nbytes: 0,
  };
  text.tensors.set(embd.name, embd);
  const mm = await header(mmprojMetadata(hub, pre, "F16"), `mmproj-${model}.gguf`);
  return { hub, text, mm };
}

/** The vocabulary a Gemma 3 GGUF carries (tokenizer.model padded to vocab_size + added tokens). */
const gemmaTokens = (c: Gemma3Config) => {
  const t = Array.from({ length: c.vocabSize }, (_, i) => `[PAD${i}]`);
  t[255_999] = "<start_of_image>";
  t[256_000] = "<end_of_image>";
  t[262_144] = "<image_soft_token>";
  return t;
};

describe("a Gemma 3 mmproj's config at the published sizes", () => {
  for (const model of ["gemma-3-4b-it", "gemma-3-12b-it", "gemma-3-27b-it"])
    it(`${model}: the hub config's vision_config, 256 tokens per image, the image token ids`, async () => {
      for (const tokens of [gemmaTokens, undefined]) {
        const { hub, text, mm } = await pair(model, tokens);
        const info = ggufMmprojInfo(mm);
        // 896 / 14 = 64 patches a side, pooled by clip.cpp's default 4 (no key written) to 16².
        expect(mm.metadata.has("clip.vision.projector.scale_factor")).toBe(false);
        expect(info.scaleFactor).toBe(4);
        expect(info.mmTokensPerImage).toBe(256);
        expect(info.projectionDim).toBe(hub.hiddenSize);
        const c = ggufMultimodalConfig(text, mm);
        expect(c.modelType).toBe("gemma3");
        expect(c.vision).toEqual(hub.vision && { ...hub.vision, vision_use_head: undefined });
        expect(c.mmTokensPerImage).toBe(hub.mmTokensPerImage);
        expect([c.boiTokenId, c.eoiTokenId, c.imageTokenIndex]).toEqual([
          255_999, 256_000, 262_144,
        ]);
        expect([c.boiTokenId, c.eoiTokenId, c.imageTokenIndex]).toEqual([
          hub.boiTokenId,
          hub.eoiTokenId,
          hub.imageTokenIndex,
        ]);
        for (const k of [
          "hiddenSize",
          "numHiddenLayers",
          "headDim",
          "queryPreAttnScalar",
          "layerTypes",
          "rope",
        ] as const)
          expect(c[k], k).toEqual(hub[k]);
      }
    });

  it("image token ids follow the text GGUF's vocabulary when it names them elsewhere", async () => {
    const { text, mm } = await pair("gemma-3-4b-it", (c) => {
      const t = gemmaTokens(c);
      [t[7], t[8], t[9]] = ["<start_of_image>", "<end_of_image>", "<image_soft_token>"];
      return t;
    });
    const c = ggufMultimodalConfig(text, mm);
    expect([c.boiTokenId, c.eoiTokenId, c.imageTokenIndex]).toEqual([7, 8, 9]);
  });

  it("an mmproj of another model size is refused by projection_dim", async () => {
    const a = await pair("gemma-3-4b-it");
    const b = await pair("gemma-3-27b-it");
    const e = (() => {
      try {
        ggufMultimodalConfig(a.text, b.mm);
      } catch (x) {
        return x;
      }
    })() as GGUFError;
    expect(e).toBeInstanceOf(GGUFError);
    expect(e.key).toBe("clip.vision.projection_dim");
    expect(e.message).toMatch(
      /5376, but .* has embedding_length 2560: the mmproj belongs to another model/,
    );
  });
});
