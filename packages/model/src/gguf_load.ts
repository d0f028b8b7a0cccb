// A llama.cpp-convention gemma3 GGUF → the runtime's config and canonical weights (weights.ts).
//
// Metadata (llama.cpp src/llama-model.cpp, LLM_ARCH_GEMMA3): gemma3.{block_count, embedding_length,
// feed_forward_length, context_length, attention.{head_count, head_count_kv, key_length,
// value_length, layer_norm_rms_epsilon, sliding_window}, rope.freq_base, rope.scaling.{type,
// factor}}. llama.cpp fixes what the file does not say: sliding layers use base 10000 without
// scaling, the pattern is 5 sliding : 1 global, and the softmax scale is key_length^-½ except for the
// 62-layer 27B, which uses (embedding_length / head_count)^-½ = 168^-½ (gemma_pytorch config.py).
// Tensors: token_embd, output_norm, [output], blk.N.{attn_norm, attn_q, attn_k, attn_v,
// attn_output, attn_q_norm, attn_k_norm, post_attention_norm, ffn_norm, ffn_gate, ffn_up,
// ffn_down, post_ffw_norm}. The converter stores every "*norm.weight" as 1 + w (Gemma3Model
// norm_shift); loading subtracts the 1 again.
import { Tensor, bf16ToF32, f16ToF32, type Device, type DTypeName } from "@gemma3/native";
import { ConfigError, parseConfig, type Gemma3Config } from "./config.js";
import { GGUFMetadata } from "./gguf_metadata.js";
import {
  GGUFError,
  GGUFValueType,
  type GGMLTypeName,
  type GGUFFile,
  type GGUFTensorInfo,
} from "./gguf.js";
import {
  canQuantize,
  dequantizeBlocks,
  quantizeWeight,
  type BlockType,
  type WeightQuantization,
} from "./quantize.js";
import { READ_CHUNK_BYTES } from "./safetensors.js";
import { expectedTextWeights } from "./weights.js";

/** blk.N.<gguf> → layers.N.<canonical>. */
const LAYER_TENSORS: Readonly<Record<string, string>> = Object.freeze({
  attn_norm: "input_layernorm",
  attn_q: "self_attn.q_proj",
  attn_k: "self_attn.k_proj",
  attn_v: "self_attn.v_proj",
  attn_output: "self_attn.o_proj",
  attn_q_norm: "self_attn.q_norm",
  attn_k_norm: "self_attn.k_norm",
  post_attention_norm: "post_attention_layernorm",
  ffn_norm: "pre_feedforward_layernorm",
  ffn_gate: "mlp.gate_proj",
  ffn_up: "mlp.up_proj",
  ffn_down: "mlp.down_proj",
  post_ffw_norm: "post_feedforward_layernorm",
});
const CANONICAL_LAYER = new Map(Object.entries(LAYER_TENSORS).map(([g, c]) => [c, g]));

/** Canonical name (weights.ts) of a gemma3 GGUF tensor name, or null for a name of no known role. */
export function ggufCanonicalName(name: string): string | null {
  if (name === "token_embd.weight") return "embed_tokens";
  if (name === "output_norm.weight") return "norm";
  if (name === "output.weight") return "lm_head";
  const m = /^blk\.(0|[1-9][0-9]*)\.([a-z_]+)\.weight$/.exec(name);
  const role = m && Object.hasOwn(LAYER_TENSORS, m[2]!) ? LAYER_TENSORS[m[2]!] : undefined;
  return role ? `layers.${m![1]}.${role}` : null;
}

/** The GGUF tensor name of a canonical text weight name. */
export function ggufTensorName(canonical: string): string {
  if (canonical === "embed_tokens") return "token_embd.weight";
  if (canonical === "norm") return "output_norm.weight";
  if (canonical === "lm_head") return "output.weight";
  const m = /^layers\.(\d+)\.(.+)$/.exec(canonical);
  const g = m && CANONICAL_LAYER.get(m[2]!);
  if (!g) throw new RangeError(`ggufTensorName: no GGUF name for "${canonical}"`);
  return `blk.${m![1]}.${g}.weight`;
}

/** Norm weights: stored as 1 + w by llama.cpp's converter (every HF name ending "norm.weight"). */
export function isNormWeight(canonical: string): boolean {
  return canonical.endsWith("norm");
}

/** Linear layer weights: what `quantize` applies to (embeddings, head and norms never). */
export function isLinearWeight(canonical: string): boolean {
  return /\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$/.test(canonical);
}

/** The embedding (the tied output head) and an untied lm_head: what `quantizeHead` applies to. */
export function isHeadWeight(canonical: string): boolean {
  return canonical === "embed_tokens" || canonical === "lm_head";
}

/** Tensor types this runtime loads. */
export const GGUF_LOADABLE_TYPES: readonly GGMLTypeName[] = [
  "F32",
  "F16",
  "BF16",
  "Q8_0",
  "Q4_0",
  "Q4_K",
  "Q5_K",
  "Q6_K",
];

/** GGUF block types kept as native blocks, and their dtype. */
const BLOCK_DTYPE: Partial<Record<GGMLTypeName, BlockType>> = {
  Q8_0: "q8_0",
  Q4_0: "q4_0",
  Q4_K: "q4_k",
  Q5_K: "q5_k",
  Q6_K: "q6_k",
};

function metaFail(file: string, key: string, msg: string): never {
  throw new GGUFError(`${file}: key "${key}": ${msg}`, "E_METADATA", file, undefined, key);
}

function uniform(file: string, key: string, v: number[]): number {
  if (v.some((x) => x !== v[0]))
    metaFail(file, key, `differs between layers ([${v.join(", ")}]); Gemma 3 layers are uniform`);
  return v[0]!;
}

/** What `ggufTextConfig` reads from a file. */
export interface GGUFSource {
  path: string;
  metadata: GGUFFile["metadata"];
  tensors: GGUFFile["tensors"];
}

/**
 * The Gemma 3 config of a gemma3 GGUF, validated by parseConfig like a config.json.
 * vocab_size comes from token_embd's rows (the converter trims 262208 to the tokenizer's 262144
 * or so); layer types from sliding_window and the 5:1 pattern; the LM head is tied unless the file
 * has output.weight.
 * @throws GGUFError (E_METADATA / E_TENSOR) naming the file and key
 */
export function ggufTextConfig(f: GGUFSource): Gemma3Config {
  try {
    return parseConfig(ggufTextConfigJson(f), `${f.path} (GGUF metadata)`);
  } catch (e) {
    if (e instanceof ConfigError)
      throw new GGUFError(e.message, "E_METADATA", f.path, undefined, e.field);
    throw e;
  }
}

/**
 * The config.json-shaped (gemma3_text) object ggufTextConfig validates; gguf_mmproj.ts nests it
 * as text_config of a multimodal config.
 * @throws GGUFError (E_METADATA / E_TENSOR) naming the file and key
 */
export function ggufTextConfigJson(f: GGUFSource): Record<string, unknown> {
  const file = f.path;
  const m = new GGUFMetadata(f.metadata, file);
  const arch = m.str("general.architecture");
  if (arch !== "gemma3")
    metaFail(
      file,
      "general.architecture",
      `"${arch}" is not "gemma3" (Gemma 3 text models only; gemma3n, gemma-embedding and mmproj ` +
        `files are other architectures)`,
    );
  const k = (s: string) => `gemma3.${s}`;
  const layers = m.uint(k("block_count"));
  // llama.cpp's LLAMA_MAX_LAYERS: per-layer arrays are sized by it.
  if (layers < 1 || layers > 512) metaFail(file, k("block_count"), `${layers} is not in 1..512`);
  const hidden = m.uint(k("embedding_length"));
  const heads = uniform(
    file,
    k("attention.head_count"),
    m.uintPerLayer(k("attention.head_count"), layers),
  );
  const kvHeads = uniform(
    file,
    k("attention.head_count_kv"),
    m.uintPerLayer(k("attention.head_count_kv"), layers, heads),
  );
  const ffn = uniform(
    file,
    k("feed_forward_length"),
    m.uintPerLayer(k("feed_forward_length"), layers),
  );
  if (heads === 0) metaFail(file, k("attention.head_count"), "must be positive");
  const headDim = m.uint(k("attention.key_length"), Math.floor(hidden / heads));
  const vDim = m.uint(k("attention.value_length"), headDim);
  if (vDim !== headDim)
    metaFail(file, k("attention.value_length"), `${vDim} differs from key_length ${headDim}`);
  for (const cap of ["final_logit_softcapping", "attn_logit_softcapping"])
    if (m.num(k(cap), 0) !== 0)
      metaFail(file, k(cap), "logit soft-capping is not implemented (Gemma 3 has none)");

  const scalingType = m.str(k("rope.scaling.type"), "none");
  if (scalingType !== "none" && scalingType !== "linear")
    metaFail(file, k("rope.scaling.type"), `"${scalingType}" is not supported (none or linear)`);
  // llama.cpp: rope.scaling.factor, else the older rope.scale_linear; 0 or absent = no scaling.
  const factor = m.num(k("rope.scaling.factor"), 0) || m.num(k("rope.scale_linear"), 0);

  const context = m.uint(k("context_length"));
  const window = m.uint(k("attention.sliding_window"), 0);
  const layerTypes = ggufLayerTypes(m, k("attention.sliding_window_pattern"), layers, window);

  const embd = f.tensors.get("token_embd.weight");
  if (!embd)
    throw new GGUFError(
      `${file}: missing tensor "token_embd.weight"`,
      "E_TENSOR",
      file,
      "token_embd.weight",
    );
  if (embd.ne.length !== 2 || embd.ne[0] !== hidden)
    throw new GGUFError(
      `${file}: tensor "token_embd.weight" has ne [${embd.ne.join(", ")}], expected [${hidden}, vocab]`,
      "E_TENSOR",
      file,
      "token_embd.weight",
    );

  const tok = "tokenizer.ggml.";
  const eos = m.uint(tok + "eos_token_id", 1);
  const eot = m.has(tok + "eot_token_id") ? m.uint(tok + "eot_token_id") : undefined;
  const json: Record<string, unknown> = {
    model_type: "gemma3_text",
    vocab_size: embd.shape[0],
    hidden_size: hidden,
    intermediate_size: ffn,
    num_hidden_layers: layers,
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    head_dim: headDim,
    rms_norm_eps: m.num(k("attention.layer_norm_rms_epsilon")),
    // Not in llama.cpp's keys: our writer adds it where llama.cpp's rule would give another value.
    query_pre_attn_scalar: m.has(k("attention.query_pre_attn_scalar"))
      ? m.num(k("attention.query_pre_attn_scalar"))
      : layers === 62
        ? Math.floor(hidden / heads)
        : headDim,
    sliding_window: window > 0 ? window : context,
    layer_types: layerTypes.map((t) => (t === "full" ? "full_attention" : "sliding_attention")),
    rope_theta: m.num(k("rope.freq_base"), 10_000),
    rope_local_base_freq: m.num(k("rope.freq_base_swa"), 10_000),
    rope_scaling: factor > 0 && factor !== 1 ? { rope_type: "linear", factor } : null,
    max_position_embeddings: context,
    tie_word_embeddings: !f.tensors.has("output.weight"),
    bos_token_id: m.uint(tok + "bos_token_id", 2),
    eos_token_id: eot === undefined || eot === eos ? [eos] : [eos, eot],
    pad_token_id: m.uint(tok + "padding_token_id", 0),
  };
  return json;
}

/**
 * Layer types: all global without a sliding window (newer llama.cpp); else the pattern key when
 * present (a period, or one bool per layer, true = sliding, as gemma3n files write it), else
 * llama.cpp's set_swa_pattern(6): layer i is global iff (i + 1) % 6 == 0.
 */
function ggufLayerTypes(
  m: GGUFMetadata,
  key: string,
  layers: number,
  window: number,
): ("sliding" | "full")[] {
  if (window === 0) return Array.from({ length: layers }, () => "full");
  const v = m.metadata.get(key);
  if (v?.type === GGUFValueType.ARRAY && v.elementType === GGUFValueType.BOOL) {
    const a = v.value as boolean[];
    if (a.length !== layers) m.fail(key, `has ${a.length} entries, block_count is ${layers}`);
    return a.map((s) => (s ? "sliding" : "full"));
  }
  const period = m.uint(key, 6);
  if (period === 0) m.fail(key, "must be positive");
  return Array.from({ length: layers }, (_, i) => ((i + 1) % period === 0 ? "full" : "sliding"));
}

/** The embedded tokenizer, as stored (tokenizer.ggml.*). */
export interface GGUFTokenizerInfo {
  /** tokenizer.ggml.model: "llama" (SentencePiece) for Gemma 3, "gpt2" for BPE conversions. */
  model: string | null;
  /** tokenizer.ggml.pre (pre-tokenizer name), if any. */
  pre: string | null;
  tokens: string[] | null;
  scores: Float64Array | null;
  /** llama_token_type per token: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte. */
  tokenTypes: Float64Array | null;
  /** BPE merges ("a b"), for "gpt2" tokenizers. */
  merges: string[] | null;
  bosTokenId: number | null;
  eosTokenId: number | null;
  eotTokenId: number | null;
  padTokenId: number | null;
  unkTokenId: number | null;
  addBosToken: boolean | null;
  addEosToken: boolean | null;
  addSpacePrefix: boolean | null;
  chatTemplate: string | null;
}

/**
 * Reads tokenizer.ggml.* (loadTokenizer hands it to Gemma3Tokenizer.fromGGUF when no tokenizer.json
 * lies beside the file).
 */
export function ggufTokenizerInfo(f: GGUFSource): GGUFTokenizerInfo {
  const m = new GGUFMetadata(f.metadata, f.path);
  const p = "tokenizer.ggml.";
  const opt = <T>(key: string, read: (k: string) => T): T | null => (m.has(key) ? read(key) : null);
  return {
    model: opt(p + "model", (k) => m.str(k)),
    pre: opt(p + "pre", (k) => m.str(k)),
    tokens: m.strings(p + "tokens") ?? null,
    scores: m.numbers(p + "scores") ?? null,
    tokenTypes: m.numbers(p + "token_type") ?? null,
    merges: m.strings(p + "merges") ?? null,
    bosTokenId: opt(p + "bos_token_id", (k) => m.uint(k)),
    eosTokenId: opt(p + "eos_token_id", (k) => m.uint(k)),
    eotTokenId: opt(p + "eot_token_id", (k) => m.uint(k)),
    padTokenId: opt(p + "padding_token_id", (k) => m.uint(k)),
    unkTokenId: opt(p + "unknown_token_id", (k) => m.uint(k)),
    addBosToken: opt(p + "add_bos_token", (k) => m.bool(k)),
    addEosToken: opt(p + "add_eos_token", (k) => m.bool(k)),
    addSpacePrefix: opt(p + "add_space_prefix", (k) => m.bool(k)),
    chatTemplate: opt("tokenizer.chat_template", (k) => m.str(k)),
  };
}

/**
 * Checks that the file holds every text tensor of `cfg` (shape = config's, ne reversed), of a
 * loadable type, and nothing else. Fails before anything is uploaded.
 * @returns canonical name → tensor info
 * @throws GGUFError: E_TENSOR (missing / unexpected / mis-shaped), E_UNSUPPORTED_TYPE (names the
 *   tensor and its type)
 */
export function checkGGUFTextWeights(
  cfg: Gemma3Config,
  f: GGUFSource,
): Map<string, GGUFTensorInfo> {
  const file = f.path;
  const out = new Map<string, GGUFTensorInfo>();
  for (const [name, info] of f.tensors) {
    const c = ggufCanonicalName(name);
    if (c === null)
      throw new GGUFError(
        `${file}: unexpected tensor "${name}" for a gemma3 text model`,
        "E_TENSOR",
        file,
        name,
      );
    out.set(c, info);
  }
  const expected = expectedTextWeights(cfg);
  if (!cfg.tieWordEmbeddings && !expected.some((e) => e.name === "lm_head"))
    expected.push({ name: "lm_head", shape: [cfg.vocabSize, cfg.hiddenSize] });
  const names = new Set(expected.map((e) => e.name));
  for (const { name, shape } of expected) {
    const info = out.get(name);
    const g = ggufTensorName(name);
    if (!info) throw new GGUFError(`${file}: missing tensor "${g}"`, "E_TENSOR", file, g);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i]))
      throw new GGUFError(
        `${file}: tensor "${g}" has ne [${info.ne.join(", ")}], the config needs ` +
          `[${[...shape].reverse().join(", ")}]`,
        "E_TENSOR",
        file,
        g,
      );
    if (!GGUF_LOADABLE_TYPES.includes(info.type))
      throw new GGUFError(
        `${file}: tensor "${g}" has type ${info.type}, which this runtime cannot load ` +
          `(supported: ${GGUF_LOADABLE_TYPES.join(", ")})`,
        "E_UNSUPPORTED_TYPE",
        file,
        g,
      );
  }
  for (const [c, info] of out)
    if (!names.has(c))
      throw new GGUFError(
        `${file}: unexpected tensor "${info.name}" for a ${cfg.numHiddenLayers}-layer gemma3 model`,
        "E_TENSOR",
        file,
        info.name,
      );
  return out;
}

/**
 * Stored bytes of a loadable type (GGUF_LOADABLE_TYPES) → float32 values: floats decoded exactly,
 * blocks dequantized as llama.cpp's dequantize_row_* does.
 */
export function ggufFloats(bytes: Uint8Array, type: GGMLTypeName): Float32Array {
  const { buffer, byteOffset: o, byteLength: n } = bytes;
  switch (type) {
    case "F32":
      return new Float32Array(buffer.slice(o, o + n));
    case "F16":
    case "BF16": {
      const u = new Uint16Array(buffer, o, n / 2);
      const dec = type === "F16" ? f16ToF32 : bf16ToF32;
      const out = new Float32Array(u.length);
      for (let i = 0; i < u.length; i++) out[i] = dec(u[i]!);
      return out;
    }
    case "Q8_0":
    case "Q4_0":
    case "Q4_K":
    case "Q5_K":
    case "Q6_K":
      return dequantizeBlocks(bytes, BLOCK_DTYPE[type]!);
    default:
      throw new TypeError(`ggufFloats: cannot decode ${type}`);
  }
}

export interface LoadGGUFTensorOptions {
  /**
   * Quantize a float-stored weight to this format on the device (stored blocks stay; rows that are
   * not whole blocks, 32 or 256 for the K-quants, stay float).
   */
  quantize?: WeightQuantization;
  /** Host bytes per read (whole rows, at least one; default 64 MB). */
  chunkBytes?: number;
}

/**
 * Uploads one tensor of a gemma3 GGUF as the canonical weight `canonical`:
 *   norms:          decoded to float32, 1 subtracted (the converter's norm_shift), in `dtype`;
 *   Q8_0 / Q4_0 / Q4_K / Q5_K / Q6_K: the stored blocks as they are (q8_0 / … / q6_k tensors);
 *   F32/F16/BF16:   `dtype` (raw bits when equal, else decoded and rounded to nearest even), or
 *                   quantized on the device when `opts.quantize` is set.
 * @param dtype the model's compute dtype ("f32" | "bf16")
 * @returns an owning tensor of the canonical (row-major) shape; the caller disposes it
 */
export async function loadGGUFTensor(
  f: GGUFFile,
  canonical: string,
  info: GGUFTensorInfo,
  device: Device,
  dtype: "f32" | "bf16",
  opts: LoadGGUFTensorOptions = {},
): Promise<Tensor> {
  const { type, shape, name } = info;
  if (!GGUF_LOADABLE_TYPES.includes(type))
    throw new GGUFError(
      `${f.path}: tensor "${name}" has type ${type}, which this runtime cannot load ` +
        `(supported: ${GGUF_LOADABLE_TYPES.join(", ")})`,
      "E_UNSUPPORTED_TYPE",
      f.path,
      name,
    );
  if (isNormWeight(canonical)) {
    const w = ggufFloats(await f.read(name), type);
    for (let i = 0; i < w.length; i++) w[i] = w[i]! - 1; // Float32Array store rounds like fp32 math
    return Tensor.from(w, shape, dtype, device);
  }
  const block = BLOCK_DTYPE[type];
  if (block) return upload(f, info, block, device, (b) => b, opts.chunkBytes);
  if (opts.quantize && canQuantize(shape, opts.quantize)) {
    // Quantize from the stored precision, not the compute dtype: f32 stays f32, bf16 stays bf16.
    const src: "f32" | "bf16" = type === "BF16" ? "bf16" : "f32";
    const t = await upload(f, info, src, device, hostData(type, src), opts.chunkBytes);
    try {
      return quantizeWeight(t, opts.quantize);
    } finally {
      t.dispose();
    }
  }
  return upload(f, info, dtype, device, hostData(type, dtype), opts.chunkBytes);
}

/** Host data for Tensor.write of stored `type` bytes into a `dst` tensor. */
function hostData(
  type: GGMLTypeName,
  dst: DTypeName,
): (b: Uint8Array) => Float32Array | Uint16Array | Uint8Array {
  if (type === "F32" && dst === "f32")
    return (b) => new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  if (type === "BF16" && dst === "bf16")
    return (b) => new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2);
  return (b) => ggufFloats(b, type); // decoded; Tensor.write rounds to bf16 when dst is bf16
}

/** Streams a tensor in row chunks of ≤ chunkBytes into a new `dtype` tensor. */
async function upload(
  f: GGUFFile,
  info: GGUFTensorInfo,
  dtype: DTypeName,
  device: Device,
  convert: (b: Uint8Array) => Float32Array | Uint16Array | Uint8Array,
  chunkBytes = READ_CHUNK_BYTES,
): Promise<Tensor> {
  const t = Tensor.empty(info.shape, dtype, device);
  try {
    const rows = info.shape.length <= 1 ? 1 : info.shape[0]!;
    const rowBytes = rows === 0 ? 0 : info.nbytes / rows;
    const step = Math.max(1, Math.floor(chunkBytes / Math.max(1, rowBytes)));
    for (let r = 0; r < rows; r += step) {
      const r1 = Math.min(rows, r + step);
      const chunk = new Uint8Array((r1 - r) * rowBytes);
      await f.readInto(info.name, r * rowBytes, chunk);
      const data = convert(chunk);
      if (info.shape.length <= 1) t.write(data);
      else t.slice(r, r1).write(data);
    }
    return t;
  } catch (e) {
    t.dispose();
    throw e;
  }
}
