// A GGUF writer for tests: well-formed v3 files by default (llama.cpp layout: header, tensor infos,
// padding to the alignment, tensors at padded offsets), with overrides for every field the reader
// validates, so each check (and each published llama.cpp exploit shape) can be hit on purpose.
// `gemma3GGUF` turns a tiny HF fixture (config.json + model.safetensors) into the GGUF that
// llama.cpp's convert_hf_to_gguf.py (Gemma3Model) would write: gemma3.* keys, blk.N.* names, norms
// stored as 1 + w in F32, 2-D weights in the chosen type (Q8_0/Q4_0 and the K-quants Q4_K/Q5_K/Q6_K
// quantized with the native ops.quantize, which follows llama.cpp's reference quantizers);
// `q4KMTypeOf` picks the per-tensor types of llama-quantize's Q4_K_M recipe. The embedded tokenizer
// is a synthetic one by default, or the real Gemma 3 vocabulary as the converter writes it
// (`vocab: { tokenizerDir }`).
import { readFileSync, writeFileSync } from "node:fs";
import { Tensor, f32ToBf16, f32ToF16, ops } from "@gemma3/native";
import { loadConfig, type Gemma3Config } from "../src/config.js";
import { GGML_TYPES, type GGMLTypeName } from "../src/gguf.js";
import { ggufTensorName, isNormWeight } from "../src/gguf_load.js";
import { SafetensorsFile } from "../src/safetensors.js";
import { canonicalName, expectedTextWeights, toFloat32 } from "../src/weights.js";
import { convertGemma3Vocab } from "../../tokenizer/test/gguf_convert.js";

export type ScalarType =
  "u8" | "i8" | "u16" | "i16" | "u32" | "i32" | "f32" | "bool" | "string" | "u64" | "i64" | "f64";
const TYPE_ID: Record<ScalarType | "array", number> = {
  u8: 0,
  i8: 1,
  u16: 2,
  i16: 3,
  u32: 4,
  i32: 5,
  f32: 6,
  bool: 7,
  string: 8,
  array: 9,
  u64: 10,
  i64: 11,
  f64: 12,
};

export type KV =
  | {
      type: ScalarType;
      value: number | bigint | boolean | string;
      /** Written instead of a string's true byte length. */
      lengthOverride?: bigint;
    }
  | {
      type: "array";
      elementType: ScalarType | "array";
      value: (number | bigint | boolean | string)[];
      /** Written instead of the true element count. */
      lengthOverride?: bigint;
      /** Written instead of elementType's id. */
      elementTypeId?: number;
    };

export const u32 = (value: number): KV => ({ type: "u32", value });
export const f32 = (value: number): KV => ({ type: "f32", value });
export const str = (value: string): KV => ({ type: "string", value });
export const bool = (value: boolean): KV => ({ type: "bool", value });
export const arr = (
  elementType: ScalarType,
  value: (number | bigint | boolean | string)[],
): KV => ({
  type: "array",
  elementType,
  value,
});

export interface GGUFTensorSpec {
  name: string;
  type: GGMLTypeName;
  /** ne: innermost dimension first (a torch [out, in] weight is [in, out]). */
  ne: (number | bigint)[];
  /** Raw data bytes (default: zeros of the right size). */
  data?: Uint8Array;
  /** Written instead of the type's id. */
  typeId?: number;
  /** Written instead of the padded running offset (data still goes where it belongs). */
  offset?: bigint;
}

export interface GGUFBuildOptions {
  version?: number;
  magic?: number;
  /** Padding used for the data section (default: general.alignment if a valid u32, else 32). */
  alignment?: number;
  /** Written instead of the true counts. */
  nTensors?: bigint;
  nKv?: bigint;
  /** Bytes cut from the end of the file. */
  truncate?: number;
}

class Bytes {
  private chunks: Uint8Array[] = [];
  length = 0;
  push(b: Uint8Array): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  num(type: ScalarType, v: number | bigint | boolean): void {
    const size = {
      u8: 1,
      i8: 1,
      bool: 1,
      u16: 2,
      i16: 2,
      u32: 4,
      i32: 4,
      f32: 4,
      u64: 8,
      i64: 8,
      f64: 8,
    }[type as Exclude<ScalarType, "string">];
    const b = new Uint8Array(size);
    const dv = new DataView(b.buffer);
    const n = typeof v === "boolean" ? Number(v) : v;
    switch (type) {
      case "u8":
      case "bool":
        dv.setUint8(0, Number(n));
        break;
      case "i8":
        dv.setInt8(0, Number(n));
        break;
      case "u16":
        dv.setUint16(0, Number(n), true);
        break;
      case "i16":
        dv.setInt16(0, Number(n), true);
        break;
      case "u32":
        dv.setUint32(0, Number(n), true);
        break;
      case "i32":
        dv.setInt32(0, Number(n), true);
        break;
      case "f32":
        dv.setFloat32(0, Number(n), true);
        break;
      case "u64":
        dv.setBigUint64(0, BigInt(n), true);
        break;
      case "i64":
        dv.setBigInt64(0, BigInt(n), true);
        break;
      case "f64":
        dv.setFloat64(0, Number(n), true);
        break;
    }
    this.push(b);
  }
  str(s: string, lengthOverride?: bigint): void {
    const b = new TextEncoder().encode(s);
    this.num("u64", lengthOverride ?? BigInt(b.length));
    this.push(b);
  }
  concat(): Uint8Array {
    const out = new Uint8Array(this.length);
    let p = 0;
    for (const c of this.chunks) {
      out.set(c, p);
      p += c.length;
    }
    return out;
  }
}

const padTo = (x: number, a: number) => Math.ceil(x / a) * a;

/** Bytes of a tensor of type `type` and dims `ne`. */
export function ggufNbytes(type: GGMLTypeName, ne: readonly (number | bigint)[]): number {
  const t = GGML_TYPES[type];
  const nel = ne.reduce<number>((a, d) => a * Number(d), 1);
  return (nel / t.blockSize) * t.typeSize;
}

/** Serializes a GGUF. Metadata is written in the given order. */
export function buildGGUF(
  metadata: [string, KV][],
  tensors: GGUFTensorSpec[],
  opts: GGUFBuildOptions = {},
): Uint8Array {
  const h = new Bytes();
  h.num("u32", opts.magic ?? 0x46554747);
  h.num("u32", opts.version ?? 3);
  h.num("u64", opts.nTensors ?? BigInt(tensors.length));
  h.num("u64", opts.nKv ?? BigInt(metadata.length));
  for (const [key, kv] of metadata) {
    h.str(key);
    h.num("u32", TYPE_ID[kv.type]);
    if (kv.type === "array") {
      h.num("u32", kv.elementTypeId ?? TYPE_ID[kv.elementType]);
      h.num("u64", kv.lengthOverride ?? BigInt(kv.value.length));
      for (const v of kv.value)
        if (kv.elementType === "string") h.str(v as string);
        else h.num(kv.elementType as ScalarType, v as number);
    } else if (kv.type === "string") h.str(kv.value as string, kv.lengthOverride);
    else h.num(kv.type, kv.value as number);
  }
  const al = metadata.find(([k]) => k === "general.alignment")?.[1];
  const alignment =
    opts.alignment ??
    (al &&
    al.type === "u32" &&
    Number(al.value) > 0 &&
    (Number(al.value) & (Number(al.value) - 1)) === 0
      ? Number(al.value)
      : 32);
  const datas: Uint8Array[] = [];
  let offset = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    h.str(t.name);
    h.num("u32", t.ne.length);
    for (const d of t.ne) h.num("u64", BigInt(d));
    h.num("u32", t.typeId ?? GGML_TYPES[t.type].id);
    h.num("u64", t.offset ?? BigInt(offset));
    const n = t.data?.length ?? ggufNbytes(t.type, t.ne);
    datas.push(t.data ?? new Uint8Array(n));
    offsets.push(offset);
    offset += padTo(n, alignment);
  }
  const header = h.concat();
  const dataStart = padTo(header.length, alignment);
  const end = tensors.length
    ? dataStart + offsets[offsets.length - 1]! + datas[datas.length - 1]!.length
    : header.length;
  const total = tensors.length ? dataStart + offset : end;
  const out = new Uint8Array(Math.max(total, end));
  out.set(header, 0);
  datas.forEach((d, i) => out.set(d, dataStart + offsets[i]!));
  return opts.truncate ? out.slice(0, out.length - opts.truncate) : out;
}

export function writeGGUF(
  path: string,
  metadata: [string, KV][],
  tensors: GGUFTensorSpec[],
  opts: GGUFBuildOptions = {},
): string {
  writeFileSync(path, buildGGUF(metadata, tensors, opts));
  return path;
}

// ---- gemma3 fixtures ------------------------------------------------------------------------------

/** llama.cpp's LlamaFileType for the file types written here. */
const FILE_TYPE: Partial<Record<GGMLTypeName, number>> = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q8_0: 7,
  Q4_K: 15, // MOSTLY_Q4_K_M: a Q4_K default comes with q4KMTypeOf's mix
  Q5_K: 17, // MOSTLY_Q5_K_M
  Q6_K: 18,
  BF16: 32,
};

/** GGUF block types this tool encodes, and the native dtype ops.quantize writes for each. */
const BLOCK_DTYPE: Partial<Record<GGMLTypeName, "q8_0" | "q4_0" | "q4_k" | "q5_k" | "q6_k">> = {
  Q8_0: "q8_0",
  Q4_0: "q4_0",
  Q4_K: "q4_k",
  Q5_K: "q5_k",
  Q6_K: "q6_k",
};

/** llama.cpp's use_more_bits (llama-quant.cpp): the first and last eighth, every third between. */
export function useMoreBits(i: number, n: number): boolean {
  const e = Math.floor(n / 8);
  return i < e || i >= Math.floor((7 * n) / 8) || (i - e) % 3 === 2;
}

/**
 * The tensor types llama-quantize's Q4_K_M recipe (llama_tensor_get_type, no imatrix) gives a
 * gemma3 model: Q4_K by default; Q6_K for the tied token_embd (it is also the output), for attn_v
 * and ffn_down where use_more_bits(layer, layers). A row that is not whole 256-blocks falls back as
 * llama.cpp does (Q6_K → Q8_0; Q4_K → Q5_0, which this runtime does not load: Q8_0 stands in).
 * Norms stay F32. For `gemma3GGUF(dir, "Q4_K", { typeOf: q4KMTypeOf(layers) })`.
 */
export function q4KMTypeOf(
  numLayers: number,
): (canonical: string, t: GGMLTypeName, ne: readonly number[]) => GGMLTypeName {
  return (canonical, t, ne) => {
    if (ne.length !== 2) return t;
    let type: GGMLTypeName = "Q4_K";
    const layer = /^layers\.(\d+)\.(self_attn\.v_proj|mlp\.down_proj)$/.exec(canonical);
    if (canonical === "embed_tokens" || canonical === "lm_head") type = "Q6_K";
    else if (layer && useMoreBits(Number(layer[1]), numLayers)) type = "Q6_K";
    return ne[0]! % 256 === 0 ? type : "Q8_0";
  };
}

/**
 * Encodes float32 values as a GGUF tensor of `type` (Q8_0/Q4_0/Q4_K/Q5_K/Q6_K through ops.quantize
 * on the CPU; other types as zeros of the right size).
 */
export async function encodeTensor(
  values: Float32Array,
  ne: readonly number[],
  type: GGMLTypeName,
): Promise<Uint8Array> {
  switch (type) {
    case "F32":
      return new Uint8Array(
        values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength),
      );
    case "F16":
    case "BF16": {
      const enc = type === "F16" ? f32ToF16 : f32ToBf16;
      return new Uint8Array(Uint16Array.from(values, (v) => enc(v)).buffer);
    }
    case "Q8_0":
    case "Q4_0":
    case "Q4_K":
    case "Q5_K":
    case "Q6_K": {
      const cols = ne[0]!;
      const src = Tensor.from(values, [values.length / cols, cols], "f32", "cpu");
      const { data } = ops.quantize(src, BLOCK_DTYPE[type]!);
      try {
        return await data.bytes();
      } finally {
        src.dispose();
        data.dispose();
      }
    }
    default:
      // Types this tool cannot encode get zero bytes of the right size (for type-refusal tests).
      return new Uint8Array(ggufNbytes(type, ne));
  }
}

/** A GGUF written from an HF fixture, with the values each tensor was encoded from. */
export interface Gemma3GGUF {
  metadata: [string, KV][];
  tensors: GGUFTensorSpec[];
  config: Gemma3Config;
}

export interface Gemma3GGUFOptions {
  /** Type of each tensor (default: `type` for 2-D weights, F32 for norms, as the converter). */
  typeOf?: (canonical: string, defaultType: GGMLTypeName, ne: readonly number[]) => GGMLTypeName;
  /** Extra or replacement metadata. */
  metadata?: [string, KV][];
  /** Write general.alignment (the data section is padded to it). */
  alignment?: number;
  /**
   * The embedded tokenizer: "synthetic" (default: special tokens at their Gemma 3 ids, "tokN"
   * otherwise), "none" (no tokenizer.* keys), or the real Gemma 3 vocabulary of a directory's
   * tokenizer.json + tokenizer_config.json as convert_hf_to_gguf.py writes it
   * (tokenizer/test/gguf_convert.ts), padded or cut to the config's vocab_size.
   */
  vocab?: "synthetic" | "none" | { tokenizerDir: string };
}

/** Synthetic Gemma-like vocabulary: special tokens at their Gemma 3 ids, the rest "tokN". */
function vocab(n: number): { tokens: string[]; types: number[] } {
  const special: Record<number, string> = {
    0: "<pad>",
    1: "<eos>",
    2: "<bos>",
    3: "<unk>",
    105: "<start_of_turn>",
    106: "<end_of_turn>",
  };
  const tokens = Array.from({ length: n }, (_, i) => special[i] ?? `tok${i}`);
  const types = tokens.map((_, i) => (i === 3 ? 2 : special[i] !== undefined ? 3 : 1));
  return { tokens, types };
}

/** The tokenizer.* keys of a gemma3 GGUF (Gemma3GGUFOptions.vocab). */
export function gemma3TokenizerMetadata(
  kind: NonNullable<Gemma3GGUFOptions["vocab"]>,
  vocabSize: number,
): [string, KV][] {
  if (kind === "none") return [];
  if (kind === "synthetic") {
    const { tokens, types } = vocab(vocabSize);
    return [
      ["tokenizer.ggml.model", str("llama")],
      ["tokenizer.ggml.tokens", arr("string", tokens)],
      [
        "tokenizer.ggml.scores",
        arr(
          "f32",
          tokens.map((_, i) => -i),
        ),
      ],
      ["tokenizer.ggml.token_type", arr("i32", types)],
      ["tokenizer.ggml.bos_token_id", u32(2)],
      ["tokenizer.ggml.eos_token_id", u32(1)],
      ["tokenizer.ggml.eot_token_id", u32(106)],
      ["tokenizer.ggml.unknown_token_id", u32(3)],
      ["tokenizer.ggml.padding_token_id", u32(0)],
      ["tokenizer.ggml.add_bos_token", bool(true)],
      ["tokenizer.ggml.add_eos_token", bool(false)],
      ["tokenizer.ggml.add_space_prefix", bool(false)],
      [
        "tokenizer.chat_template",
        str("{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"),
      ],
    ];
  }
  const read = (name: string) =>
    JSON.parse(readFileSync(`${kind.tokenizerDir}/${name}`, "utf8")) as Record<string, unknown>;
  const v = convertGemma3Vocab(
    read("tokenizer.json") as never,
    read("tokenizer_config.json"),
    vocabSize,
  );
  // In gguf-py's order: tokenizer model, pre, tokens, scores, types (_set_vocab_sentencepiece),
  // then SpecialVocab.add_to_gguf (ids, add_* flags, chat template), then add_space_prefix.
  const out: [string, KV][] = [
    ["tokenizer.ggml.model", str(v.model)],
    ["tokenizer.ggml.pre", str(v.pre)],
    ["tokenizer.ggml.tokens", arr("string", v.tokens)],
    ["tokenizer.ggml.scores", arr("f32", Array.from(v.scores))],
    ["tokenizer.ggml.token_type", arr("i32", Array.from(v.tokenTypes))],
  ];
  const ids: [string, number | null | undefined][] = [
    ["bos_token_id", v.bosTokenId],
    ["eos_token_id", v.eosTokenId],
    ["unknown_token_id", v.unkTokenId],
    ["padding_token_id", v.padTokenId],
  ];
  for (const [k, id] of ids) if (id != null) out.push([`tokenizer.ggml.${k}`, u32(id)]);
  if (v.addBosToken != null) out.push(["tokenizer.ggml.add_bos_token", bool(v.addBosToken)]);
  if (v.addEosToken != null) out.push(["tokenizer.ggml.add_eos_token", bool(v.addEosToken)]);
  if (v.chatTemplate != null) out.push(["tokenizer.chat_template", str(v.chatTemplate)]);
  out.push(["tokenizer.ggml.add_space_prefix", bool(false)]);
  return out;
}

/**
 * The gemma3 GGUF of a fixture directory, as llama.cpp's converter lays it out.
 * @param type F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K or Q6_K for the 2-D weights (norms stay F32)
 */
export async function gemma3GGUF(
  dir: string,
  type: GGMLTypeName,
  opts: Gemma3GGUFOptions = {},
): Promise<Gemma3GGUF> {
  const config = await loadConfig(`${dir}/config.json`);
  const st = await SafetensorsFile.open(`${dir}/model.safetensors`);
  const tensors: GGUFTensorSpec[] = [];
  try {
    const byCanonical = new Map<string, string>();
    for (const key of st.tensors.keys()) {
      const c = canonicalName(key);
      if (c && !c.name.startsWith("vision.") && !c.name.startsWith("projector."))
        byCanonical.set(c.name, key);
    }
    for (const { name, shape } of expectedTextWeights(config)) {
      const key = byCanonical.get(name)!;
      const values = toFloat32(await st.read(key), st.info(key).dtype);
      const ne = [...shape].reverse();
      let t: GGMLTypeName = shape.length === 1 ? "F32" : type;
      if (isNormWeight(name)) for (let i = 0; i < values.length; i++) values[i] = values[i]! + 1;
      // llama.cpp's converter falls back to F16 where a row is not whole blocks (QuantError).
      if (GGML_TYPES[t].blockSize > 1 && ne[0]! % GGML_TYPES[t].blockSize !== 0) t = "F16";
      t = opts.typeOf?.(name, t, ne) ?? t;
      tensors.push({
        name: ggufTensorName(name),
        type: t,
        ne,
        data: await encodeTensor(values, ne, t),
      });
    }
  } finally {
    await st.close();
  }
  const c = config;
  const llamaScalar =
    c.numHiddenLayers === 62 ? Math.floor(c.hiddenSize / c.numAttentionHeads) : c.headDim;
  const window = c.layerTypes.includes("sliding") ? c.slidingWindow : 0;
  const metadata: [string, KV][] = [
    ["general.architecture", str("gemma3")],
    ["general.name", str("tiny gemma3")],
    ["general.file_type", u32(FILE_TYPE[type] ?? 0)],
    ["general.quantization_version", u32(2)],
    ...(opts.alignment !== undefined
      ? [["general.alignment", u32(opts.alignment)] as [string, KV]]
      : []),
    ["gemma3.context_length", u32(c.maxPositionEmbeddings)],
    ["gemma3.embedding_length", u32(c.hiddenSize)],
    ["gemma3.block_count", u32(c.numHiddenLayers)],
    ["gemma3.feed_forward_length", u32(c.intermediateSize)],
    ["gemma3.attention.head_count", u32(c.numAttentionHeads)],
    ["gemma3.attention.layer_norm_rms_epsilon", f32(c.rmsNormEps)],
    ["gemma3.attention.key_length", u32(c.headDim)],
    ["gemma3.attention.value_length", u32(c.headDim)],
    ["gemma3.rope.freq_base", f32(c.rope.global.base)],
    ...(window ? [["gemma3.attention.sliding_window", u32(window)] as [string, KV]] : []),
    ["gemma3.attention.head_count_kv", u32(c.numKeyValueHeads)],
    ...(c.rope.global.scale !== 1
      ? ([
          ["gemma3.rope.scaling.type", str("linear")],
          ["gemma3.rope.scaling.factor", f32(c.rope.global.scale)],
        ] as [string, KV][])
      : []),
    // Not a llama.cpp key: only written where llama.cpp's rule (key_length, or hidden/heads for the
    // 62-layer 27B) would give another value, as for the tiny 27B-like fixture.
    ...(c.queryPreAttnScalar !== llamaScalar
      ? [["gemma3.attention.query_pre_attn_scalar", f32(c.queryPreAttnScalar)] as [string, KV]]
      : []),
    // llama.cpp fixes gemma3's pattern at 5 sliding : 1 global; a config with another one (the CLI
    // demo checkpoint's 1 : 1) gets the per-layer form gemma3n files use (true = sliding).
    ...(window && c.layerTypes.some((t, i) => t !== ((i + 1) % 6 === 0 ? "full" : "sliding"))
      ? [
          [
            "gemma3.attention.sliding_window_pattern",
            arr(
              "bool",
              c.layerTypes.map((t) => t === "sliding"),
            ),
          ] as [string, KV],
        ]
      : []),
    ...gemma3TokenizerMetadata(opts.vocab ?? "synthetic", c.vocabSize),
  ];
  for (const [k, v] of opts.metadata ?? []) {
    const i = metadata.findIndex(([key]) => key === k);
    if (i >= 0) metadata[i] = [k, v];
    else metadata.push([k, v]);
  }
  return { metadata, tensors, config };
}

/** Writes the gemma3 GGUF of a fixture and returns its path. */
export async function writeGemma3GGUF(
  dir: string,
  type: GGMLTypeName,
  path: string,
  opts: Gemma3GGUFOptions = {},
  build: GGUFBuildOptions = {},
): Promise<string> {
  const g = await gemma3GGUF(dir, type, opts);
  return writeGGUF(path, g.metadata, g.tensors, { alignment: opts.alignment, ...build });
}
