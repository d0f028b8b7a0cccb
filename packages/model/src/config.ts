// Gemma 3 config.json → one normalized, validated shape the runtime reads.
// Accepts the hub's sparse transformers-4.50 files (model_type "gemma3_text" flat, or "gemma3" with
// text_config + vision_config) and the transformers ≥ 5 form (layer_types + rope_parameters).
// Missing keys take HF's defaults: Gemma3TextConfig for text, SiglipVisionConfig for vision
// (transformers/models/gemma3/configuration_gemma3.py, models/siglip/configuration_siglip.py).
import { readFile } from "node:fs/promises";

/** A config.json that is malformed, inconsistent or asks for something Gemma 3 here can't run. */
export class ConfigError extends Error {
  constructor(
    message: string,
    /** The file (or label) the config came from. */
    readonly source: string,
    /** The offending field as a JSON path, e.g. "text_config.num_key_value_heads". */
    readonly field: string,
  ) {
    super(message);
    this.name = "ConfigError";
  }
}

/** Attention kind of one layer: sliding-window ("local") or full ("global"). */
export type LayerType = "sliding" | "full";

/** RoPE of one layer kind: inv_freq = scale⁻¹ · base^(−2i/head_dim) (HF "default"/"linear"). */
export interface RopeConfig {
  /** rope_theta (global) / rope_local_base_freq (local) */
  base: number;
  /** linear scaling factor (rope_scaling.factor); 1 = none */
  scale: number;
}

export type Architecture = "Gemma3ForCausalLM" | "Gemma3ForConditionalGeneration";

/**
 * vision_config as written (snake_case, extra keys kept), with SiglipVisionConfig's defaults filled
 * for missing keys. Note HF's defaults are SigLIP-base (768/224/16/12/12/3072), not Gemma 3's
 * So400m tower (1152/896/14/27/16/4304): every published Gemma 3 config spells those out.
 */
export interface SiglipVisionConfig {
  model_type: string;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_channels: number;
  image_size: number;
  patch_size: number;
  hidden_act: string;
  layer_norm_eps: number;
  attention_dropout: number;
  [key: string]: unknown;
}

/** SiglipVisionConfig.__init__ defaults (transformers models/siglip/configuration_siglip.py). */
export const SIGLIP_VISION_DEFAULTS: Readonly<SiglipVisionConfig> = Object.freeze({
  model_type: "siglip_vision_model",
  hidden_size: 768,
  intermediate_size: 3072,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  num_channels: 3,
  image_size: 224,
  patch_size: 16,
  hidden_act: "gelu_pytorch_tanh",
  layer_norm_eps: 1e-6,
  attention_dropout: 0,
});

/** Gemma3TextConfig.__init__ defaults (transformers models/gemma3/configuration_gemma3.py). */
export const GEMMA3_TEXT_DEFAULTS = Object.freeze({
  vocab_size: 262_208,
  hidden_size: 2304,
  intermediate_size: 9216,
  num_hidden_layers: 26,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  head_dim: 256,
  hidden_activation: "gelu_pytorch_tanh",
  max_position_embeddings: 131_072,
  rms_norm_eps: 1e-6,
  pad_token_id: 0,
  eos_token_id: 1,
  bos_token_id: 2,
  tie_word_embeddings: true,
  rope_theta: 1_000_000,
  rope_local_base_freq: 10_000,
  query_pre_attn_scalar: 256,
  sliding_window: 4096,
  sliding_window_pattern: 6,
});

/** Gemma3Config.__init__ defaults for the multimodal wrapper. */
export const GEMMA3_MM_DEFAULTS = Object.freeze({
  mm_tokens_per_image: 256,
  boi_token_index: 255_999,
  eoi_token_index: 256_000,
  image_token_index: 262_144,
});

/** A parsed, validated Gemma 3 config. Field comments give the HF key each comes from. */
export interface Gemma3Config {
  /** model_type: "gemma3_text" (flat) or "gemma3" (text_config + vision_config) */
  modelType: "gemma3_text" | "gemma3";
  /** Derived from model_type (the class transformers builds for it). */
  architecture: Architecture;
  /** vocab_size (rows of embed_tokens; 262208 for 4B+, above the tokenizer's 262145) */
  vocabSize: number;
  /** hidden_size */
  hiddenSize: number;
  /** intermediate_size */
  intermediateSize: number;
  /** num_hidden_layers */
  numHiddenLayers: number;
  /** num_attention_heads */
  numAttentionHeads: number;
  /** num_key_value_heads (divides numAttentionHeads) */
  numKeyValueHeads: number;
  /** head_dim (not hidden/heads: 27B has 5376/32 = 168 but head_dim 128) */
  headDim: number;
  /** rms_norm_eps */
  rmsNormEps: number;
  /** query_pre_attn_scalar: scores are scaled by its −½ power (27B: 168, not head_dim) */
  queryPreAttnScalar: number;
  /** sliding_window: a query at i sees keys j with i − window < j ≤ i on sliding layers */
  slidingWindow: number;
  /** layer_types, or from sliding_window_pattern: layer i is "full" iff (i + 1) % pattern == 0 */
  layerTypes: LayerType[];
  /** rope_local_base_freq / rope_theta + rope_scaling, or rope_parameters (transformers 5) */
  rope: { local: RopeConfig; global: RopeConfig };
  /** max_position_embeddings */
  maxPositionEmbeddings: number;
  /** hidden_activation (only "gelu_pytorch_tanh" is accepted) */
  hiddenActivation: "gelu_pytorch_tanh";
  /** tie_word_embeddings: the LM head is embed_tokens */
  tieWordEmbeddings: boolean;
  /** bos_token_id */
  bosTokenId: number | null;
  /** eos_token_id, always a list */
  eosTokenIds: number[];
  /** pad_token_id */
  padTokenId: number | null;
  /** torch_dtype (transformers 4) / dtype (transformers 5), e.g. "bfloat16"; null if absent */
  torchDtype: string | null;
  /** vision_config with SigLIP defaults filled (multimodal only) */
  vision: SiglipVisionConfig | null;
  /** mm_tokens_per_image (multimodal only) */
  mmTokensPerImage: number | null;
  /** boi_token_index: <start_of_image> (multimodal only) */
  boiTokenId: number | null;
  /** eoi_token_index: <end_of_image> (multimodal only) */
  eoiTokenId: number | null;
  /** image_token_index: <image_soft_token>, replaced by projected image features (multimodal only) */
  imageTokenIndex: number | null;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
function show(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? s.slice(0, 57) + "..." : s;
}

/** Reads typed fields of one JSON object; every error names the source file and the field path. */
class Fields {
  constructor(
    readonly obj: Json,
    readonly source: string,
    readonly prefix: string,
  ) {}

  path(key: string): string {
    return this.prefix + key;
  }
  fail(key: string, msg: string): never {
    const field = this.path(key);
    throw new ConfigError(`${this.source}: ${field}: ${msg}`, this.source, field);
  }
  has(key: string): boolean {
    return this.obj[key] !== undefined;
  }
  raw(key: string): unknown {
    return this.obj[key];
  }
  posInt(key: string, def: number): number {
    const v = this.has(key) ? this.obj[key] : def;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0)
      this.fail(key, `must be a positive integer, got ${show(v)}`);
    return v;
  }
  posNum(key: string, def: number): number {
    const v = this.has(key) ? this.obj[key] : def;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0)
      this.fail(key, `must be a positive number, got ${show(v)}`);
    return v;
  }
  str(key: string, def: string): string {
    const v = this.has(key) ? this.obj[key] : def;
    if (typeof v !== "string") this.fail(key, `must be a string, got ${show(v)}`);
    return v;
  }
  bool(key: string, def: boolean): boolean {
    const v = this.has(key) ? this.obj[key] : def;
    if (typeof v !== "boolean") this.fail(key, `must be true or false, got ${show(v)}`);
    return v;
  }
  tokenId(key: string, def: number | null): number | null {
    const v = this.has(key) ? this.obj[key] : def;
    if (v === null) return null;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0)
      this.fail(key, `must be a token id (integer >= 0) or null, got ${show(v)}`);
    return v;
  }
  tokenIds(key: string, def: number | number[] | null): number[] {
    const v = this.has(key) ? this.obj[key] : def;
    if (v === null) return [];
    const list = Array.isArray(v) ? v : [v];
    for (const t of list)
      if (typeof t !== "number" || !Number.isSafeInteger(t) || t < 0)
        this.fail(key, `must be a token id or a list of token ids, got ${show(v)}`);
    return list as number[];
  }
  /** Fields that Gemma 3 never sets; anything but absent/null/false means another model. */
  mustBeUnset(key: string, why: string): void {
    const v = this.obj[key];
    if (v !== undefined && v !== null && v !== false)
      this.fail(key, `is ${show(v)}, but ${why} (Gemma 3 has none)`);
  }
  sub(key: string): Fields {
    const v = this.obj[key];
    if (v === undefined || v === null) return new Fields({}, this.source, this.path(key) + ".");
    if (!isObject(v)) this.fail(key, `must be an object, got ${show(v)}`);
    return new Fields(v, this.source, this.path(key) + ".");
  }
}

/**
 * Parses a Gemma 3 config.json (already JSON-parsed).
 * @param json the parsed file
 * @param source file name used in error messages
 * @throws ConfigError naming the source and the field
 */
export function parseConfig(json: unknown, source = "config.json"): Gemma3Config {
  if (!isObject(json)) throw new ConfigError(`${source}: not a JSON object`, source, "");
  const top = new Fields(json, source, "");
  const modelType = top.raw("model_type");
  if (modelType === "gemma3_text") {
    const text = parseText(top);
    return {
      modelType,
      architecture: "Gemma3ForCausalLM",
      ...text,
      vision: null,
      mmTokensPerImage: null,
      boiTokenId: null,
      eoiTokenId: null,
      imageTokenIndex: null,
    };
  }
  if (modelType === "gemma3") {
    const tc = top.sub("text_config");
    if (tc.has("model_type") && tc.raw("model_type") !== "gemma3_text")
      tc.fail("model_type", `expected "gemma3_text", got ${show(tc.raw("model_type"))}`);
    const text = parseText(tc);
    const vision = parseVision(top.sub("vision_config"));
    const mmTokensPerImage = top.posInt(
      "mm_tokens_per_image",
      GEMMA3_MM_DEFAULTS.mm_tokens_per_image,
    );
    // Gemma3MultiModalProjector pools the (image/patch)² grid to mm_tokens_per_image with a square
    // kernel: the token count must be a square whose side divides the patch grid.
    const side = Math.round(Math.sqrt(mmTokensPerImage));
    const grid = vision.image_size / vision.patch_size;
    if (side * side !== mmTokensPerImage || grid % side !== 0)
      top.fail(
        "mm_tokens_per_image",
        `${mmTokensPerImage} must be k² with k dividing the ${grid}×${grid} patch grid ` +
          `(vision_config.image_size / patch_size)`,
      );
    // Token ids, dtype and tying live on the wrapper in these files; text_config's are fallbacks.
    const pick = <T>(key: string, read: (f: Fields) => T, fallback: T): T =>
      top.has(key) ? read(top) : fallback;
    return {
      modelType,
      architecture: "Gemma3ForConditionalGeneration",
      ...text,
      tieWordEmbeddings: pick(
        "tie_word_embeddings",
        (f) => f.bool("tie_word_embeddings", true),
        text.tieWordEmbeddings,
      ),
      bosTokenId: pick("bos_token_id", (f) => f.tokenId("bos_token_id", null), text.bosTokenId),
      eosTokenIds: pick("eos_token_id", (f) => f.tokenIds("eos_token_id", null), text.eosTokenIds),
      padTokenId: pick("pad_token_id", (f) => f.tokenId("pad_token_id", null), text.padTokenId),
      torchDtype: readDtype(top) ?? text.torchDtype,
      vision,
      mmTokensPerImage,
      // attribute_map: boi_token_id → boi_token_index etc.; either spelling may be on disk.
      boiTokenId: mmTokenId(top, "boi_token_index", "boi_token_id"),
      eoiTokenId: mmTokenId(top, "eoi_token_index", "eoi_token_id"),
      imageTokenIndex: mmTokenId(top, "image_token_index", "image_token_id"),
    };
  }
  if (modelType === undefined)
    top.fail("model_type", 'missing (expected "gemma3_text" or "gemma3")');
  return top.fail(
    "model_type",
    `unknown model_type ${show(modelType)} (expected "gemma3_text" or "gemma3")`,
  );
}

/** Reads and parses a config.json file; errors name the path. */
export async function loadConfig(path: string): Promise<Gemma3Config> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new ConfigError(`${path}: cannot read: ${(e as Error).message}`, path, "");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${path}: not valid JSON: ${(e as Error).message}`, path, "");
  }
  return parseConfig(json, path);
}

type TextPart = Omit<
  Gemma3Config,
  | "modelType"
  | "architecture"
  | "vision"
  | "mmTokensPerImage"
  | "boiTokenId"
  | "eoiTokenId"
  | "imageTokenIndex"
>;

function readDtype(f: Fields): string | null {
  // transformers 5 renamed torch_dtype to dtype.
  for (const key of ["dtype", "torch_dtype"]) {
    const v = f.raw(key);
    if (v === undefined || v === null) continue;
    if (typeof v !== "string") f.fail(key, `must be a string, got ${show(v)}`);
    return v;
  }
  return null;
}

function mmTokenId(f: Fields, key: string, alias: string): number {
  const k = f.has(key) || !f.has(alias) ? key : alias;
  const v = f.tokenId(k, GEMMA3_MM_DEFAULTS[key as keyof typeof GEMMA3_MM_DEFAULTS]);
  if (v === null) f.fail(k, "must be a token id, got null");
  return v;
}

function parseText(f: Fields): TextPart {
  const D = GEMMA3_TEXT_DEFAULTS;
  const numHiddenLayers = f.posInt("num_hidden_layers", D.num_hidden_layers);
  const numAttentionHeads = f.posInt("num_attention_heads", D.num_attention_heads);
  const numKeyValueHeads = f.posInt("num_key_value_heads", D.num_key_value_heads);
  if (numAttentionHeads % numKeyValueHeads !== 0)
    f.fail(
      "num_key_value_heads",
      `${numKeyValueHeads} does not divide num_attention_heads ${numAttentionHeads}`,
    );

  const act = f.str("hidden_activation", D.hidden_activation);
  if (act !== "gelu_pytorch_tanh")
    f.fail("hidden_activation", `unsupported ${show(act)} (Gemma 3 uses "gelu_pytorch_tanh")`);
  f.mustBeUnset("attn_logit_softcapping", "attention logit soft-capping is not implemented");
  f.mustBeUnset("final_logit_softcapping", "final logit soft-capping is not implemented");
  f.mustBeUnset("attention_bias", "q/k/v/o biases are not implemented");
  // EmbeddingGemma's encoder flag: bidirectional attention and a halved window.
  f.mustBeUnset(
    "use_bidirectional_attention",
    "bidirectional (encoder) attention is not supported",
  );

  return {
    vocabSize: f.posInt("vocab_size", D.vocab_size),
    hiddenSize: f.posInt("hidden_size", D.hidden_size),
    intermediateSize: f.posInt("intermediate_size", D.intermediate_size),
    numHiddenLayers,
    numAttentionHeads,
    numKeyValueHeads,
    headDim: f.posInt("head_dim", D.head_dim),
    rmsNormEps: f.posNum("rms_norm_eps", D.rms_norm_eps),
    queryPreAttnScalar: f.posNum("query_pre_attn_scalar", D.query_pre_attn_scalar),
    slidingWindow: f.posInt("sliding_window", D.sliding_window),
    layerTypes: parseLayerTypes(f, numHiddenLayers),
    rope: parseRope(f),
    maxPositionEmbeddings: f.posInt("max_position_embeddings", D.max_position_embeddings),
    hiddenActivation: "gelu_pytorch_tanh",
    tieWordEmbeddings: f.bool("tie_word_embeddings", D.tie_word_embeddings),
    bosTokenId: f.tokenId("bos_token_id", D.bos_token_id),
    eosTokenIds: f.tokenIds("eos_token_id", D.eos_token_id),
    padTokenId: f.tokenId("pad_token_id", D.pad_token_id),
    torchDtype: readDtype(f),
  };
}

function parseLayerTypes(f: Fields, n: number): LayerType[] {
  // HF reads the legacy int even when layer_types is given (and then ignores it); a bad one is
  // still a broken file.
  const pattern = f.posInt("sliding_window_pattern", GEMMA3_TEXT_DEFAULTS.sliding_window_pattern);
  const given = f.raw("layer_types");
  if (given === undefined || given === null)
    return Array.from({ length: n }, (_, i) => ((i + 1) % pattern === 0 ? "full" : "sliding"));
  if (!Array.isArray(given)) f.fail("layer_types", `must be a list, got ${show(given)}`);
  if (given.length !== n)
    f.fail("layer_types", `has ${given.length} entries but num_hidden_layers is ${n}`);
  return given.map((t, i) => {
    if (t === "sliding_attention") return "sliding";
    if (t === "full_attention") return "full";
    return f.fail(
      `layer_types[${i}]`,
      `unsupported ${show(t)} (expected "sliding_attention" or "full_attention")`,
    );
  });
}

/** One rope dict ({rope_type|type, factor, rope_theta}) → base and scale. */
function ropeFrom(f: Fields, key: string, baseDefault: number): RopeConfig {
  const r = f.sub(key);
  const typeKey = r.has("rope_type") ? "rope_type" : "type";
  const type = r.str(typeKey, "default");
  const base = r.posNum("rope_theta", baseDefault);
  if (type === "default") return { base, scale: 1 };
  if (type === "linear") {
    if (!r.has("factor")) r.fail("factor", "missing (linear RoPE needs a factor)");
    return { base, scale: r.posNum("factor", 1) };
  }
  return r.fail(typeKey, `unsupported RoPE type ${show(type)} (only "default" and "linear")`);
}

function parseRope(f: Fields): { local: RopeConfig; global: RopeConfig } {
  const D = GEMMA3_TEXT_DEFAULTS;
  const theta = f.posNum("rope_theta", D.rope_theta);
  const localTheta = f.posNum("rope_local_base_freq", D.rope_local_base_freq);
  const params = f.raw("rope_parameters");
  const scaling = f.raw("rope_scaling");
  if (scaling !== undefined && scaling !== null && !isObject(scaling))
    f.fail("rope_scaling", `must be an object or null, got ${show(scaling)}`);

  if (params === undefined || params === null) {
    // transformers 4.50: rope_scaling is for global layers only; local layers use the default
    // RoPE at rope_local_base_freq (Gemma3TextModel.rotary_emb_local).
    return {
      local: { base: localTheta, scale: 1 },
      global: scaling ? ropeFrom(f, "rope_scaling", theta) : { base: theta, scale: 1 },
    };
  }
  // transformers 5 (Gemma3TextConfig.convert_rope_params_to_dict): one dict per layer type;
  // a legacy rope_scaling still present is merged into full_attention; rope_theta and
  // rope_local_base_freq only fill a missing per-type rope_theta.
  if (!isObject(params)) f.fail("rope_parameters", `must be an object, got ${show(params)}`);
  for (const k of Object.keys(params))
    if (k !== "sliding_attention" && k !== "full_attention")
      f.fail(
        `rope_parameters.${k}`,
        "unexpected key: Gemma 3 rope_parameters are keyed by layer type " +
          "(sliding_attention, full_attention)",
      );
  const rp = f.sub("rope_parameters");
  const full = { ...rp.sub("full_attention").obj, ...(isObject(scaling) ? scaling : {}) };
  const merged = new Fields({ ...params, full_attention: full }, f.source, rp.prefix);
  return {
    local: ropeFrom(merged, "sliding_attention", localTheta),
    global: ropeFrom(merged, "full_attention", theta),
  };
}

function parseVision(f: Fields): SiglipVisionConfig {
  const D = SIGLIP_VISION_DEFAULTS;
  if (f.has("model_type") && f.raw("model_type") !== "siglip_vision_model")
    f.fail("model_type", `expected "siglip_vision_model", got ${show(f.raw("model_type"))}`);
  const v: SiglipVisionConfig = {
    ...f.obj,
    model_type: "siglip_vision_model",
    hidden_size: f.posInt("hidden_size", D.hidden_size),
    intermediate_size: f.posInt("intermediate_size", D.intermediate_size),
    num_hidden_layers: f.posInt("num_hidden_layers", D.num_hidden_layers),
    num_attention_heads: f.posInt("num_attention_heads", D.num_attention_heads),
    num_channels: f.posInt("num_channels", D.num_channels),
    image_size: f.posInt("image_size", D.image_size),
    patch_size: f.posInt("patch_size", D.patch_size),
    hidden_act: f.str("hidden_act", D.hidden_act),
    layer_norm_eps: f.posNum("layer_norm_eps", D.layer_norm_eps),
    attention_dropout:
      typeof f.raw("attention_dropout") === "number" ? (f.raw("attention_dropout") as number) : 0,
  };
  if (v.hidden_act !== "gelu_pytorch_tanh")
    f.fail("hidden_act", `unsupported ${show(v.hidden_act)} (SigLIP uses "gelu_pytorch_tanh")`);
  if (v.hidden_size % v.num_attention_heads !== 0)
    f.fail(
      "num_attention_heads",
      `${v.num_attention_heads} does not divide hidden_size ${v.hidden_size}`,
    );
  if (v.image_size % v.patch_size !== 0)
    f.fail("patch_size", `${v.patch_size} does not divide image_size ${v.image_size}`);
  return v;
}

// ---- inspection ------------------------------------------------------------------------------

export interface ConfigSummary {
  /** "LLLLLG×4 + LL" (L = sliding, G = full), or one letter per layer when not periodic. */
  layerPattern: string;
  numGlobal: number;
  numLocal: number;
  /** Exact parameter counts of the text model (vision tower and projector not included). */
  params: {
    /** vocab · hidden (embed_tokens) */
    embedding: number;
    /** 0 when tied (the head is embed_tokens), else vocab · hidden */
    lmHead: number;
    perLayer: {
      /** q_proj + k_proj + v_proj + o_proj = hidden·H·d + 2·hidden·Hkv·d + H·d·hidden */
      attention: number;
      /** gate_proj + up_proj + down_proj = 3 · hidden · intermediate */
      mlp: number;
      /** 4 · hidden (input, post_attention, pre_feedforward, post_feedforward) + 2 · d (q/k norm) */
      norms: number;
    };
    /** embedding + lmHead + layers · (attention + mlp + norms) + hidden (final norm) */
    total: number;
    /** total − embedding − lmHead */
    totalWithoutEmbedding: number;
  };
  /** bf16 K+V bytes: one position of one layer stores 2 · Hkv · d values of 2 bytes. */
  kvBytesPerToken: {
    /** every layer keeps every token: 2 · layers · Hkv · d · 2 */
    full: number;
    /** hybrid cache, steady state: only global layers grow: 2 · numGlobal · Hkv · d · 2 */
    globalOnly: number;
    /** hybrid cache ring buffers, a constant (bytes, not per token): numLocal · window · 2 · Hkv · d · 2 */
    localFixed: number;
  };
}

/** Shape, size and KV-cache cost of a config, for logs and memory planning. */
export function inspectConfig(cfg: Gemma3Config): ConfigSummary {
  const L = cfg.numHiddenLayers;
  const hidden = cfg.hiddenSize;
  const d = cfg.headDim;
  const H = cfg.numAttentionHeads;
  const Hkv = cfg.numKeyValueHeads;
  const numGlobal = cfg.layerTypes.filter((t) => t === "full").length;
  const numLocal = L - numGlobal;

  const embedding = cfg.vocabSize * hidden;
  const lmHead = cfg.tieWordEmbeddings ? 0 : embedding;
  const attention = hidden * H * d + 2 * hidden * Hkv * d + H * d * hidden;
  const mlp = 3 * hidden * cfg.intermediateSize;
  const norms = 4 * hidden + 2 * d;
  const total = embedding + lmHead + L * (attention + mlp + norms) + hidden;

  const kvPerLayerToken = 2 * Hkv * d * 2;
  return {
    layerPattern: layerPattern(cfg.layerTypes),
    numGlobal,
    numLocal,
    params: {
      embedding,
      lmHead,
      perLayer: { attention, mlp, norms },
      total,
      totalWithoutEmbedding: total - embedding - lmHead,
    },
    kvBytesPerToken: {
      full: L * kvPerLayerToken,
      globalOnly: numGlobal * kvPerLayerToken,
      localFixed: numLocal * cfg.slidingWindow * kvPerLayerToken,
    },
  };
}

/** Shortest repeating unit (≥ 2 repeats) with the remainder, else the per-layer string. */
function layerPattern(types: readonly LayerType[]): string {
  const s = types.map((t) => (t === "full" ? "G" : "L")).join("");
  const n = s.length;
  for (let p = 1; 2 * p <= n; p++) {
    let periodic = true;
    for (let i = p; i < n && periodic; i++) periodic = s[i] === s[i - p];
    if (!periodic) continue;
    const k = Math.floor(n / p);
    const rest = s.slice(k * p);
    return `${s.slice(0, p)}×${k}${rest ? ` + ${rest}` : ""}`;
  }
  return s;
}
