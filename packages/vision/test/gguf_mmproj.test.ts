// Vision from a llama.cpp GGUF pair (text GGUF + mmproj GGUF), on the two tiny multimodal fixtures
// of siglip.test.ts (tiny-27b: pool kernel 1, written as clip.vision.projector.scale_factor;
// tiny-mm: kernel 4, the default, image ids 500/501/502 named in the text GGUF's vocabulary).
// The mmproj files are written as convert_hf_to_gguf.py --mmproj writes them
// (model/test/gguf_mmproj_writer.ts), at --outtype f32, f16, bf16 and q8_0, and read back by
// @huggingface/gguf as an independent parser. References:
// - the safetensors path on a checkpoint holding the values the mmproj carries (the converter
//   forces mm.input_projection to F16 and rounds the other matrices to the outtype): features, prompt logits
//   with two images and 8 greedy tokens must be bit-identical (same kernels, same weights);
// - HF transformers' float32 goldens (vision_model_goldens.py) within the rounding the file
//   format adds.
// Hostile mmproj files get a typed GGUFError naming the key or tensor.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gguf as hfGGUF } from "@huggingface/gguf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { f16ToF32 } from "@gemma3/native";
import {
  GGUFError,
  WeightError,
  loadModelConfig,
  loadTextModel,
  resolveModelPath,
  type Gemma3TextModel,
} from "@gemma3/model";
import { loadVisionEncoder, type Gemma3VisionEncoder } from "../src/index.js";
import { arr, str, u32, writeGemma3GGUF, type KV } from "../../model/test/gguf_writer.js";
import {
  mmprojGGUF,
  mmprojReferenceCheckpoint,
  writeMmprojGGUF,
  type MmprojGGUF,
} from "../../model/test/gguf_mmproj_writer.js";
import { writeGGUF } from "../../model/test/gguf_writer.js";
import { maxAbsDiff, mmGolden, relL2 } from "./helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "g3-mmproj-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const argmax = (v: Float32Array) => v.reduce((b, x, i) => (x > v[b]! ? i : b), 0);

/** Features, prompt logits (all positions) and 8 greedy tokens with their logits. */
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
  const tokens: number[] = [];
  const greedy = new Float32Array(greedy_ids.length * vocab);
  let next = argmax(logits.subarray((ids.length - 1) * vocab));
  for (let i = 0; i < greedy_ids.length; i++) {
    tokens.push(next);
    const l = model.forward([next], seq);
    const v = (await l.toArray()) as Float32Array;
    l.dispose();
    greedy.set(v, i * vocab);
    next = argmax(v);
  }
  seq.dispose();
  return { features: featuresHost, logits, tokens, greedy };
}

/** The text GGUF's vocabulary with the fixture's image tokens named (as a real Gemma 3 GGUF has). */
function vocabMetadata(cfg: {
  vocabSize: number;
  boi: number | null;
  eoi: number | null;
  image: number | null;
}): [string, KV][] {
  const named: Record<number, string> = {
    0: "<pad>",
    1: "<eos>",
    2: "<bos>",
    3: "<unk>",
    105: "<start_of_turn>",
    106: "<end_of_turn>",
  };
  if (cfg.boi !== null && cfg.boi < cfg.vocabSize) named[cfg.boi] = "<start_of_image>";
  if (cfg.eoi !== null && cfg.eoi < cfg.vocabSize) named[cfg.eoi] = "<end_of_image>";
  if (cfg.image !== null && cfg.image < cfg.vocabSize) named[cfg.image] = "<image_soft_token>";
  return [
    [
      "tokenizer.ggml.tokens",
      arr(
        "string",
        Array.from({ length: cfg.vocabSize }, (_, i) => named[i] ?? `tok${i}`),
      ),
    ],
  ];
}

interface Pair {
  text: string;
  mmproj: string;
  g: MmprojGGUF;
  reference: string;
}
/** Text GGUF (F32) + mmproj at `outtype` + the reference checkpoint of the mmproj's values. */
async function makePair(name: string, outtype: "F32" | "F16" | "BF16" | "Q8_0"): Promise<Pair> {
  const { modelDir } = mmGolden(name);
  const dir = mkdtempSync(join(tmp, `${name}-${outtype}-`));
  const g = await mmprojGGUF(modelDir, outtype);
  const c = g.config;
  const text = await writeGemma3GGUF(modelDir, "F32", join(dir, "model-F32.gguf"), {
    metadata: vocabMetadata({
      vocabSize: c.vocabSize,
      boi: c.boiTokenId,
      eoi: c.eoiTokenId,
      image: c.imageTokenIndex,
    }),
  });
  const mmproj = writeGGUF(
    join(dir, `mmproj-model-${outtype.toLowerCase()}.gguf`),
    g.metadata,
    g.tensors,
  );
  const reference = await mmprojReferenceCheckpoint(
    modelDir,
    g,
    join(tmp, `${name}-${outtype}-ref`),
  );
  return { text, mmproj, g, reference };
}

const NAMES = ["tiny-27b", "tiny-mm"];

for (const name of NAMES)
  for (const outtype of ["F32", "F16", "BF16", "Q8_0"] as const)
    describe(`${name}: text GGUF + mmproj ${outtype} (CPU f32)`, () => {
      const gold = mmGolden(name);
      let pair: Pair;
      let model: Gemma3TextModel;
      let enc: Gemma3VisionEncoder;
      let refModel: Gemma3TextModel;
      let refEnc: Gemma3VisionEncoder;
      beforeAll(async () => {
        pair = await makePair(name, outtype);
        model = await loadTextModel(pair.text, {
          mmproj: pair.mmproj,
          device: "cpu",
          dtype: "f32",
        });
        enc = await loadVisionEncoder(pair.text, {
          mmproj: pair.mmproj,
          device: "cpu",
          dtype: "f32",
        });
        refModel = await loadTextModel(pair.reference, { device: "cpu", dtype: "f32" });
        refEnc = await loadVisionEncoder(pair.reference, { device: "cpu", dtype: "f32" });
      });
      afterAll(() => {
        for (const x of [model, enc, refModel, refEnc]) x?.dispose();
      });

      it("the pair's config is the checkpoint's multimodal config", () => {
        const a = model.config;
        const b = refModel.config;
        expect(a.modelType).toBe("gemma3");
        expect(a.architecture).toBe("Gemma3ForConditionalGeneration");
        for (const k of [
          "hidden_size",
          "intermediate_size",
          "num_hidden_layers",
          "num_attention_heads",
          "num_channels",
          "image_size",
          "patch_size",
          "layer_norm_eps",
          "hidden_act",
        ] as const)
          expect(a.vision![k], k).toBe(b.vision![k]);
        expect(a.mmTokensPerImage).toBe(b.mmTokensPerImage);
        expect(a.imageTokenIndex).toBe(b.imageTokenIndex);
        expect(a.boiTokenId).toBe(b.boiTokenId);
        expect(a.eoiTokenId).toBe(b.eoiTokenId);
        expect(enc.config.mmTokensPerImage).toBe(b.mmTokensPerImage);
        expect(enc.preprocessDefaults).toEqual({
          imageMean: [0.5, 0.5, 0.5],
          imageStd: [0.5, 0.5, 0.5],
        });
      });

      it("features, logits with two images and 8 greedy tokens equal the safetensors path on the file's values", async () => {
        const ours = await run(model, enc, gold);
        const ref = await run(refModel, refEnc, gold);
        expect(maxAbsDiff(ours.features, ref.features)).toBe(0);
        expect(maxAbsDiff(ours.logits, ref.logits)).toBe(0);
        expect(ours.tokens).toEqual(ref.tokens);
        expect(maxAbsDiff(ours.greedy, ref.greedy)).toBe(0);
      });

      it("bf16 compute: the same features as the reference checkpoint at bf16", async () => {
        const opts = { mmproj: pair.mmproj, device: "cpu", dtype: "bf16" } as const;
        const a = await loadVisionEncoder(pair.text, opts);
        const b = await loadVisionEncoder(pair.reference, { device: "cpu", dtype: "bf16" });
        const fa = a.encode(gold.pixels);
        const fb = b.encode(gold.pixels);
        const [ha, hb] = [
          (await fa.toArray()) as Float32Array,
          (await fb.toArray()) as Float32Array,
        ];
        for (const x of [fa, fb, a, b]) x.dispose();
        expect(maxAbsDiff(ha, hb)).toBe(0);
        expect(relL2(ha, gold.features)).toBeLessThan(3e-2); // bf16 activations (siglip.test.ts)
      });

      it("and HF transformers' float32 goldens within the format's rounding", async () => {
        const ours = await run(model, enc, gold);
        // F32 files round only mm.input_projection to f16 (2^-11 relative per weight); F16 files
        // every tower matrix too; BF16 (2^-9) and Q8_0 (half a step of max|block|/127) coarser.
        // Random-sign errors add in quadrature, so the features' relative L2 error stays near the
        // per-weight one. Measured on tiny-mm: 2.5e-4 (F32), 4.7e-4 (F16), 3.1e-3 (BF16),
        // 4.8e-3 (Q8_0).
        const bound = { F32: 1e-3, F16: 2e-3, BF16: 1e-2, Q8_0: 1e-2 }[outtype];
        expect(relL2(ours.features, gold.features)).toBeLessThan(bound);
        expect(relL2(ours.logits, gold.logits)).toBeLessThan(bound);
        if (outtype === "F32") expect(ours.tokens).toEqual(gold.meta.greedy_ids);
      });
    });

describe("the mmproj file as @huggingface/gguf reads it", () => {
  for (const outtype of ["F32", "F16"] as const)
    it(`tiny-mm ${outtype}: metadata, tensor infos and tensor bytes are the converter's`, async () => {
      const { modelDir } = mmGolden("tiny-mm");
      const g = await mmprojGGUF(modelDir, outtype);
      const path = writeGGUF(join(tmp, `hf-${outtype}.gguf`), g.metadata, g.tensors);
      const theirs = await hfGGUF(path, { allowLocalFile: true });
      const md = theirs.metadata as Record<string, unknown>;
      expect(md["general.architecture"]).toBe("clip");
      expect(md["clip.projector_type"]).toBe("gemma3");
      expect(md["clip.vision.image_size"]).toBe(56);
      expect(md["clip.vision.projection_dim"]).toBe(48);
      expect(md["clip.vision.projector.scale_factor"]).toBeUndefined(); // 8 / 2 = 4: the default
      const fh = await open(path);
      try {
        const want = new Map(g.tensors.map((t) => [t.name, t]));
        expect(theirs.tensorInfos.map((t) => t.name).sort()).toEqual([...want.keys()].sort());
        for (const t of theirs.tensorInfos) {
          const w = want.get(t.name)!;
          // ne is torch's shape reversed: the bytes are the checkpoint's row-major data.
          expect(t.shape.map(Number), t.name).toEqual([...w.shape].reverse());
          const type = t.dtype === 0 ? "F32" : t.dtype === 1 ? "F16" : `id ${t.dtype}`;
          // The converter's types: embeddings F32, input projection F16, 1-D F32, rest the outtype.
          const expectType =
            t.name.startsWith("v.patch_embd") ||
            t.name.startsWith("v.position_embd") ||
            t.shape.length === 1
              ? "F32"
              : t.name === "mm.input_projection.weight"
                ? "F16"
                : outtype;
          expect(type, t.name).toBe(expectType);
          const n = w.values.length;
          const bytes = Buffer.alloc(n * (type === "F32" ? 4 : 2));
          await fh.read(bytes, 0, bytes.length, Number(theirs.tensorDataOffset + t.offset));
          const got =
            type === "F32"
              ? new Float32Array(bytes.buffer, bytes.byteOffset, n)
              : Float32Array.from(new Uint16Array(bytes.buffer, bytes.byteOffset, n), f16ToF32);
          // Independent of the writer: the checkpoint's value (+1 for the Gemma norm), rounded to
          // the stored type.
          const src = await sourceValues(modelDir, w.key);
          const exp = src.map((x) => (t.name === "mm.soft_emb_norm.weight" ? x + 1 : x));
          const tol = type === "F16" ? 2 ** -11 : 0;
          for (let i = 0; i < n; i++)
            if (
              !(
                Math.abs(got[i]! - exp[i]!) <=
                tol * Math.abs(exp[i]!) + (type === "F16" ? 2 ** -25 : 0)
              )
            )
              throw new Error(`${t.name}[${i}]: ${got[i]} vs ${exp[i]}`);
        }
      } finally {
        await fh.close();
      }
    });
});

/** A checkpoint tensor as float32 (the fixtures are float32). */
async function sourceValues(dir: string, key: string): Promise<Float32Array> {
  const { SafetensorsFile, toFloat32 } = await import("@gemma3/model");
  const st = await SafetensorsFile.open(join(dir, "model.safetensors"));
  try {
    return toFloat32(await st.read(key), st.info(key).dtype);
  } finally {
    await st.close();
  }
}

describe("pairing and hostile mmproj files", () => {
  const { modelDir } = mmGolden("tiny-mm");
  let text: string;
  beforeAll(async () => {
    text = await writeGemma3GGUF(modelDir, "F32", join(tmp, "text.gguf"), {
      metadata: vocabMetadata({ vocabSize: 512, boi: 500, eoi: 501, image: 502 }),
    });
  });
  const mmproj = (file: string, edit?: (g: MmprojGGUF) => void, opts = {}) =>
    writeMmprojGGUF(modelDir, "F16", join(tmp, file), { ...opts, edit });
  const expectGGUFError = async (
    p: Promise<unknown>,
    code: string,
    what: { tensor?: string; key?: string },
    msg: RegExp,
  ) => {
    const e = await p.then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(GGUFError);
    const ge = e as GGUFError;
    expect(ge.code).toBe(code);
    if (what.tensor) expect(ge.tensor).toBe(what.tensor);
    if (what.key) expect(ge.key).toBe(what.key);
    expect(ge.message).toMatch(msg);
  };

  it("a directory holding the text GGUF and one mmproj-*.gguf pairs them; a file path does not", async () => {
    const dir = mkdtempSync(join(tmp, "dir-"));
    const t = await writeGemma3GGUF(modelDir, "F32", join(dir, "tiny-F32.gguf"), {
      metadata: vocabMetadata({ vocabSize: 512, boi: 500, eoi: 501, image: 502 }),
    });
    await writeMmprojGGUF(modelDir, "F16", join(dir, "mmproj-tiny-f16.gguf"));
    const src = await resolveModelPath(dir);
    expect(src).toEqual({ format: "gguf", file: t, mmproj: join(dir, "mmproj-tiny-f16.gguf") });
    expect((await resolveModelPath(t)).format).toBe("gguf");
    expect(await resolveModelPath(t)).not.toHaveProperty("mmproj");
    expect((await loadModelConfig(dir)).vision?.hidden_size).toBe(144);
    expect((await loadModelConfig(t)).vision).toBeNull();
    const enc = await loadVisionEncoder(dir);
    expect(enc.tokensPerImage).toBe(4);
    enc.dispose();
    // A GGUF with no mmproj has no vision tower.
    await expect(loadVisionEncoder(t)).rejects.toThrow(WeightError);
    await expect(loadVisionEncoder(t)).rejects.toThrow(/no vision tower; pair it with its mmproj/);
    // Two mmproj files: the caller must choose.
    await writeMmprojGGUF(modelDir, "F32", join(dir, "mmproj-tiny-f32.gguf"));
    await expectGGUFError(resolveModelPath(dir), "E_IO", {}, /2 mmproj files .*--mmproj/);
    expect(
      (await resolveModelPath(dir, { mmproj: join(dir, "mmproj-tiny-f32.gguf") })).format,
    ).toBe("gguf");
    await expectGGUFError(
      resolveModelPath(t, { mmproj: join(dir, "nope.gguf") }),
      "E_IO",
      {},
      /nope\.gguf: mmproj file not found/,
    );
    await expect(
      resolveModelPath(modelDir, { mmproj: join(dir, "mmproj-tiny-f32.gguf") }),
    ).rejects.toThrow(/goes with a GGUF model/);
  });

  it("old files with fc1/fc2 under swapped names load the same tower (clip.cpp is_ffn_swapped)", async () => {
    const a = await loadVisionEncoder(text, { mmproj: await mmproj("ok.gguf") });
    const b = await loadVisionEncoder(text, {
      mmproj: await mmproj("legacy.gguf", undefined, { legacyFfnNames: true }),
    });
    const px = mmGolden("tiny-mm").pixels;
    const fa = a.encode(px);
    const fb = b.encode(px);
    expect(
      maxAbsDiff((await fa.toArray()) as Float32Array, (await fb.toArray()) as Float32Array),
    ).toBe(0);
    for (const x of [fa, fb, a, b]) x.dispose();
  });

  it("the text GGUF as the mmproj, another projector, a missing key: E_METADATA naming the key", async () => {
    await expectGGUFError(
      loadVisionEncoder(text, { mmproj: text }),
      "E_METADATA",
      { key: "general.architecture" },
      /"gemma3" is not "clip": not an mmproj file/,
    );
    const other = await mmproj("qwen.gguf", (g) => {
      g.metadata.find(([k]) => k === "clip.projector_type")![1] = str("qwen2vl_merger");
    });
    await expectGGUFError(
      loadVisionEncoder(text, { mmproj: other }),
      "E_METADATA",
      { key: "clip.projector_type" },
      /"qwen2vl_merger" is not "gemma3"/,
    );
    await expectGGUFError(
      loadTextModel(text, { mmproj: other }),
      "E_METADATA",
      { key: "clip.projector_type" },
      /qwen2vl_merger/,
    );
    const noSize = await mmproj("nosize.gguf", (g) => {
      g.metadata = g.metadata.filter(([k]) => k !== "clip.vision.image_size");
    });
    await expectGGUFError(
      loadVisionEncoder(text, { mmproj: noSize }),
      "E_METADATA",
      { key: "clip.vision.image_size" },
      /missing/,
    );
    const badScale = await mmproj("scale.gguf", (g) => {
      g.metadata.push(["clip.vision.projector.scale_factor", u32(3)]);
    });
    await expectGGUFError(
      loadVisionEncoder(text, { mmproj: badScale }),
      "E_METADATA",
      { key: "clip.vision.projector.scale_factor" },
      /3 does not divide the 8×8 patch grid/,
    );
    const otherModel = await mmproj("dim.gguf", (g) => {
      g.metadata.find(([k]) => k === "clip.vision.projection_dim")![1] = u32(2560);
    });
    await expectGGUFError(
      loadTextModel(text, { mmproj: otherModel }),
      "E_METADATA",
      { key: "clip.vision.projection_dim" },
      /2560, but .* has embedding_length 48: the mmproj belongs to another model/,
    );
  });

  it("a missing, mis-shaped, unexpected or unloadable tensor: GGUFError naming the tensor", async () => {
    const missing = await mmproj("missing.gguf", (g) => {
      g.tensors = g.tensors.filter((t) => t.name !== "v.blk.1.attn_k.weight");
    });
    await expectGGUFError(
      loadVisionEncoder(text, { mmproj: missing }),
      "E_TENSOR",
      { tensor: "v.blk.1.attn_k.weight" },
      /missing tensor "v\.blk\.1\.attn_k\.weight"/,
    );
    // An mmproj of a model with another text width: the projection's shape gives it away too.
    const wide = await mmproj("wide.gguf", (g) => {
      const t = g.tensors.find((x) => x.name === "mm.input_projection.weight")!;
      t.ne = [96, 144];
      t.data = new Uint8Array(96 * 144 * 2);
    });
    await expectGGUFError(
      loadVisionEncoder(text, { mmproj: wide }),
      "E_TENSOR",
      { tensor: "mm.input_projection.weight" },
      /has ne \[96, 144\], the mmproj's config needs \[48, 144\]/,
    );
    const pos = await mmproj("pos.gguf", (g) => {
      const t = g.tensors.find((x) => x.name === "v.position_embd.weight")!;
      t.ne = [144, 63];
      t.data = t.data!.subarray(0, 144 * 63 * 4);
    });
    await expectGGUFError(
      loadVisionEncoder(text, { mmproj: pos }),
      "E_TENSOR",
      { tensor: "v.position_embd.weight" },
      /ne \[144, 63\].*\[144, 64\]/,
    );
    const extra = await mmproj("extra.gguf", (g) => {
      g.tensors.push({ ...g.tensors[0]!, name: "v.head.weight" });
    });
    await expectGGUFError(
      loadVisionEncoder(text, { mmproj: extra }),
      "E_TENSOR",
      { tensor: "v.head.weight" },
      /not part of a Gemma 3 \(SigLIP\) mmproj/,
    );
    const q41 = await mmproj("q41.gguf", (g) => {
      const t = g.tensors.find((x) => x.name === "v.blk.0.ffn_down.weight")!; // ne [288, 144]
      t.type = "Q4_1";
      t.data = new Uint8Array(((288 * 144) / 32) * 20);
    });
    await expectGGUFError(
      loadVisionEncoder(text, { mmproj: q41 }),
      "E_UNSUPPORTED_TYPE",
      { tensor: "v.blk.0.ffn_down.weight" },
      /type Q4_1, which this runtime cannot load/,
    );
    // A truncated file is the reader's error (its own tests cover every header field).
    const g = await mmprojGGUF(modelDir, "F16");
    const cut = join(tmp, "cut.gguf");
    writeGGUF(cut, g.metadata, g.tensors, { truncate: 100 });
    await expectGGUFError(loadVisionEncoder(text, { mmproj: cut }), "E_TRUNCATED", {}, /cut\.gguf/);
    writeFileSync(join(tmp, "empty.gguf"), new Uint8Array(0));
    await expect(loadVisionEncoder(text, { mmproj: join(tmp, "empty.gguf") })).rejects.toThrow(
      GGUFError,
    );
  });
});
