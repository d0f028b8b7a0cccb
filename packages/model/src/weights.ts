// Checkpoint key names → one canonical layout, shape checks against the config, and uploads.
//
// Canonical text names (".weight" dropped): embed_tokens, norm, lm_head (only if stored),
// layers.{i}.{input_layernorm, post_attention_layernorm, pre_feedforward_layernorm,
// post_feedforward_layernorm, self_attn.{q_proj,k_proj,v_proj,o_proj,q_norm,k_norm},
// mlp.{gate_proj,up_proj,down_proj}}. Vision and projector keys keep their full suffix under
// "vision." / "projector." (they have biases).
//
// Stored prefixes accepted:
//   Gemma3ForCausalLM (1B hub):          model.*, lm_head.weight
//   Gemma3ForConditionalGeneration hub:  language_model.model.*, language_model.lm_head.weight,
//                                        vision_tower.vision_model.*, multi_modal_projector.*
//   transformers ≥ 5:                    model.language_model.*, lm_head.weight,
//                                        model.vision_tower[.vision_model].*, model.multi_modal_projector.*
import {
  Tensor,
  bf16ToF32,
  f16ToF32,
  fp8e4m3ToF32,
  isBlock,
  type Device,
  type DTypeName,
} from "@gemma3/native";
import type { Gemma3Config } from "./config.js";
import {
  Checkpoint,
  READ_CHUNK_BYTES,
  SINGLE_FILE,
  type CheckpointEntry,
  type ProgressCallback,
  type SafetensorsDType,
} from "./safetensors.js";

export type WeightLayout = "causal-lm" | "hub-multimodal" | "transformers5";

/** A checkpoint whose names don't fit the config or the known layouts; names tensor and file. */
export class WeightError extends Error {
  constructor(
    message: string,
    /** Canonical or stored tensor name. */
    readonly tensor: string,
    /** File (or checkpoint directory) concerned. */
    readonly file: string,
  ) {
    super(message);
    this.name = "WeightError";
  }
}

// Longest prefixes first: "model.language_model." must win over "model.".
const PREFIXES: readonly [string, "text" | "vision" | "projector", WeightLayout | null][] = [
  ["model.language_model.", "text", "transformers5"],
  ["model.vision_tower.vision_model.", "vision", "transformers5"],
  ["model.vision_tower.", "vision", "transformers5"],
  ["model.multi_modal_projector.", "projector", "transformers5"],
  ["language_model.model.", "text", "hub-multimodal"],
  ["vision_tower.vision_model.", "vision", "hub-multimodal"],
  ["multi_modal_projector.", "projector", "hub-multimodal"],
  ["model.", "text", "causal-lm"],
];

/**
 * Canonical name of a stored key, with the layout its prefix implies (null for "lm_head.weight",
 * which both causal-lm and transformers-5 files use), or null for a key of no known layout.
 */
export function canonicalName(key: string): { name: string; layout: WeightLayout | null } | null {
  if (key === "lm_head.weight") return { name: "lm_head", layout: null };
  if (key === "language_model.lm_head.weight") return { name: "lm_head", layout: "hub-multimodal" };
  for (const [prefix, part, layout] of PREFIXES) {
    if (!key.startsWith(prefix)) continue;
    const rest = key.slice(prefix.length);
    if (part === "vision") return { name: "vision." + rest, layout };
    if (part === "projector") return { name: "projector." + rest, layout };
    return { name: rest.endsWith(".weight") ? rest.slice(0, -7) : rest, layout };
  }
  return null;
}

/** Canonical view of a checkpoint. */
export interface WeightIndex {
  /** Layout of the text weights (from the embed_tokens key). */
  layout: WeightLayout;
  /** Canonical name → stored name. */
  names: Map<string, string>;
  /** Stored keys of no known layout. */
  unknown: string[];
}

const indexCache = new WeakMap<Checkpoint, WeightIndex>();

function where(ckpt: Checkpoint): string {
  return ckpt.indexFile ?? `${ckpt.dir}/${SINGLE_FILE}`;
}

/** Maps every stored key of `ckpt` to its canonical name (cached per checkpoint). */
export function indexWeights(ckpt: Checkpoint): WeightIndex {
  const cached = indexCache.get(ckpt);
  if (cached) return cached;
  const names = new Map<string, string>();
  const unknown: string[] = [];
  for (const key of ckpt.tensors.keys()) {
    const c = canonicalName(key);
    if (!c) {
      unknown.push(key);
      continue;
    }
    const prev = names.get(c.name);
    if (prev !== undefined)
      throw new WeightError(
        `${where(ckpt)}: "${prev}" and "${key}" both map to "${c.name}" (mixed layouts?)`,
        c.name,
        where(ckpt),
      );
    names.set(c.name, key);
  }
  const embedKey = names.get("embed_tokens");
  const layout = (embedKey !== undefined && canonicalName(embedKey)?.layout) || "causal-lm";
  const idx = { layout, names, unknown };
  indexCache.set(ckpt, idx);
  return idx;
}

export interface ExpectedWeight {
  /** Canonical name. */
  name: string;
  /** [out, in] for linears (torch layout), [n] for norms. */
  shape: number[];
}

/** Every canonical text tensor `cfg` needs, with its shape. lm_head only when untied. */
export function expectedTextWeights(cfg: Gemma3Config): ExpectedWeight[] {
  const hidden = cfg.hiddenSize;
  const q = cfg.numAttentionHeads * cfg.headDim;
  const kv = cfg.numKeyValueHeads * cfg.headDim;
  const inter = cfg.intermediateSize;
  const out: ExpectedWeight[] = [{ name: "embed_tokens", shape: [cfg.vocabSize, hidden] }];
  for (let i = 0; i < cfg.numHiddenLayers; i++) {
    const p = `layers.${i}.`;
    out.push(
      { name: p + "input_layernorm", shape: [hidden] },
      { name: p + "self_attn.q_proj", shape: [q, hidden] },
      { name: p + "self_attn.k_proj", shape: [kv, hidden] },
      { name: p + "self_attn.v_proj", shape: [kv, hidden] },
      { name: p + "self_attn.o_proj", shape: [hidden, q] },
      { name: p + "self_attn.q_norm", shape: [cfg.headDim] },
      { name: p + "self_attn.k_norm", shape: [cfg.headDim] },
      { name: p + "post_attention_layernorm", shape: [hidden] },
      { name: p + "pre_feedforward_layernorm", shape: [hidden] },
      { name: p + "mlp.gate_proj", shape: [inter, hidden] },
      { name: p + "mlp.up_proj", shape: [inter, hidden] },
      { name: p + "mlp.down_proj", shape: [hidden, inter] },
      { name: p + "post_feedforward_layernorm", shape: [hidden] },
    );
  }
  out.push({ name: "norm", shape: [hidden] });
  if (!cfg.tieWordEmbeddings) out.push({ name: "lm_head", shape: [cfg.vocabSize, hidden] });
  return out;
}

const FLOAT_DTYPES: ReadonlySet<SafetensorsDType> = new Set(["BF16", "F16", "F32"]);
const sameShape = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((x, i) => x === b[i]);

export interface TextWeightsReport {
  layout: WeightLayout;
  /**
   * "tied": the head is embed_tokens (a stored lm_head of the same shape is ignored, as HF ties
   * it); "separate": tie_word_embeddings is false and lm_head is loaded on its own.
   */
  lmHead: "tied" | "separate";
  /** A stored lm_head exists (ignored when tied). */
  lmHeadStored: boolean;
  index: WeightIndex;
}

/**
 * Checks that `ckpt` holds every text tensor of `cfg` with the right shape and a float dtype,
 * and nothing unexpected in the text namespace.
 * @throws WeightError naming the canonical tensor, its stored key and file
 */
export function checkTextWeights(cfg: Gemma3Config, ckpt: Checkpoint): TextWeightsReport {
  const index = indexWeights(ckpt);
  const keyFor = (name: string) => index.names.get(name);
  const hint = (name: string) => {
    const prefix = {
      "causal-lm": "model.",
      "hub-multimodal": "language_model.model.",
      transformers5: "model.language_model.",
    }[index.layout];
    return name === "lm_head" ? "lm_head.weight" : `${prefix}${name}.weight`;
  };
  if (index.unknown.length > 0) {
    const key = index.unknown[0]!;
    const e = ckpt.tensors.get(key)!;
    throw new WeightError(
      `${e.file.path}: tensor "${key}" fits no known Gemma 3 layout` +
        (index.unknown.length > 1 ? ` (and ${index.unknown.length - 1} more)` : ""),
      key,
      e.file.path,
    );
  }
  const expected = expectedTextWeights(cfg);
  for (const { name, shape } of expected) {
    const key = keyFor(name);
    if (key === undefined)
      throw new WeightError(
        `${where(ckpt)}: missing tensor "${name}" (stored as "${hint(name)}" in this layout)`,
        name,
        where(ckpt),
      );
    const { file, info } = ckpt.tensors.get(key)!;
    if (!sameShape(info.shape, shape))
      throw new WeightError(
        `${file.path}: tensor "${key}" has shape [${info.shape.join(", ")}], config needs [${shape.join(", ")}]`,
        name,
        file.path,
      );
    if (!FLOAT_DTYPES.has(info.dtype))
      throw new WeightError(
        `${file.path}: tensor "${key}" is ${info.dtype}; weights must be BF16, F16 or F32`,
        name,
        file.path,
      );
  }

  const names = new Set(expected.map((e) => e.name));
  const lmKey = keyFor("lm_head");
  if (lmKey !== undefined && cfg.tieWordEmbeddings) {
    const { file, info } = ckpt.tensors.get(lmKey)!;
    if (!sameShape(info.shape, [cfg.vocabSize, cfg.hiddenSize]))
      throw new WeightError(
        `${file.path}: tensor "${lmKey}" has shape [${info.shape.join(", ")}], but the tied head is ` +
          `embed_tokens [${cfg.vocabSize}, ${cfg.hiddenSize}]`,
        "lm_head",
        file.path,
      );
    names.add("lm_head");
  }
  for (const [name, key] of index.names) {
    if (names.has(name) || name.startsWith("vision.") || name.startsWith("projector.")) continue;
    const file = ckpt.tensors.get(key)!.file.path;
    throw new WeightError(
      `${file}: unexpected tensor "${key}" for a ${cfg.numHiddenLayers}-layer Gemma 3 text model`,
      name,
      file,
    );
  }
  return {
    layout: index.layout,
    lmHead: cfg.tieWordEmbeddings ? "tied" : "separate",
    lmHeadStored: lmKey !== undefined,
    index,
  };
}

// ---- decoding and upload ------------------------------------------------------------------------

/** The @gemma3/native dtype a safetensors dtype uploads to without conversion, if any. */
const RAW_TARGET: Partial<Record<SafetensorsDType, DTypeName>> = {
  F32: "f32",
  BF16: "bf16",
  F16: "f16",
  F8_E4M3: "fp8_e4m3",
  I32: "i32",
};

/**
 * Decodes little-endian safetensors bytes to float32 (exact for every listed dtype except
 * F64/I32/U32/I64/U64 beyond float32's range or precision, which round).
 * @param bytes tensor data; its byteOffset must be a multiple of the element size
 */
export function toFloat32(bytes: Uint8Array, dtype: SafetensorsDType): Float32Array {
  const { buffer, byteOffset: o, byteLength: n } = bytes;
  const from = (a: ArrayLike<number | bigint>) => {
    const out = new Float32Array(a.length);
    for (let i = 0; i < a.length; i++) out[i] = Number(a[i]!);
    return out;
  };
  const decode16 = (dec: (h: number) => number) => {
    const u = new Uint16Array(buffer, o, n / 2);
    const out = new Float32Array(u.length);
    for (let i = 0; i < u.length; i++) out[i] = dec(u[i]!);
    return out;
  };
  switch (dtype) {
    case "F32":
      return new Float32Array(buffer.slice(o, o + n));
    case "BF16":
      return decode16(bf16ToF32);
    case "F16":
      return decode16(f16ToF32);
    case "F64":
      return from(new Float64Array(buffer, o, n / 8));
    case "F8_E4M3": {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = fp8e4m3ToF32(bytes[i]!);
      return out;
    }
    case "F8_E5M2": {
      // E5M2 is the top byte of an IEEE half.
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = f16ToF32(bytes[i]! << 8);
      return out;
    }
    case "BOOL":
    case "U8":
      return from(bytes);
    case "I8":
      return from(new Int8Array(buffer, o, n));
    case "I16":
      return from(new Int16Array(buffer, o, n / 2));
    case "U16":
      return from(new Uint16Array(buffer, o, n / 2));
    case "I32":
      return from(new Int32Array(buffer, o, n / 4));
    case "U32":
      return from(new Uint32Array(buffer, o, n / 4));
    case "I64":
      return from(new BigInt64Array(buffer, o, n / 8));
    case "U64":
      return from(new BigUint64Array(buffer, o, n / 8));
    default:
      throw new TypeError(`toFloat32: cannot decode safetensors dtype ${dtype}`);
  }
}

/** Host data for Tensor.write of `chunk` (stored as `src`) into a tensor of dtype `dst`. */
function hostData(
  chunk: Uint8Array,
  src: SafetensorsDType,
  dst: DTypeName,
): Float32Array | Uint16Array | Uint8Array | Int32Array {
  const { buffer, byteOffset: o, byteLength: n } = chunk;
  if (RAW_TARGET[src] === dst) {
    switch (dst) {
      case "f32":
        return new Float32Array(buffer, o, n / 4);
      case "bf16":
      case "f16":
        return new Uint16Array(buffer, o, n / 2);
      case "i32":
        return new Int32Array(buffer, o, n / 4);
      default:
        return chunk;
    }
  }
  // Float targets take float32 values and round them (round-to-nearest-even) on upload.
  return toFloat32(chunk, src);
}

export interface LoadTensorOptions {
  /** Called after each chunk with (stored bytes done, stored bytes total). */
  onProgress?: ProgressCallback;
  /** Host bytes per chunk (whole rows, at least one; default 64 MB). */
  chunkBytes?: number;
}

/**
 * Uploads one canonical tensor to `device` as `dtype`, streaming it in row chunks of ≤ 64 MB
 * so a large embedding never needs a full host copy. Same-dtype uploads copy raw bits; float
 * conversions (BF16/F16/F32/F8/F64 → f32/bf16/f16) decode to float32 and round to nearest even.
 * "lm_head" falls back to embed_tokens when the checkpoint stores none (tied).
 * @returns an owning tensor with the stored shape (caller disposes)
 * @throws WeightError for an unknown name or an impossible conversion (e.g. BF16 → q8_0)
 */
export async function loadTensor(
  ckpt: Checkpoint,
  canonical: string,
  device: string | Device,
  dtype: DTypeName,
  opts: LoadTensorOptions = {},
): Promise<Tensor> {
  const { onProgress, chunkBytes = READ_CHUNK_BYTES } = opts;
  const { names } = indexWeights(ckpt);
  const key =
    names.get(canonical) ?? (canonical === "lm_head" ? names.get("embed_tokens") : undefined);
  if (key === undefined)
    throw new WeightError(
      `${where(ckpt)}: no tensor "${canonical}" in the checkpoint`,
      canonical,
      where(ckpt),
    );
  const entry: CheckpointEntry = ckpt.tensors.get(key)!;
  const { file, info } = entry;
  const src = info.dtype;
  const floatTarget = dtype === "f32" || dtype === "bf16" || dtype === "f16";
  const floatSource =
    src === "F32" ||
    src === "BF16" ||
    src === "F16" ||
    src === "F8_E4M3" ||
    src === "F8_E5M2" ||
    src === "F64";
  if (RAW_TARGET[src] !== dtype && !(floatTarget && floatSource))
    throw new WeightError(
      `${file.path}: tensor "${key}" is ${src}; cannot load it as ${dtype}` +
        (isBlock(dtype) ? " (load a float dtype, then quantize)" : ""),
      canonical,
      file.path,
    );

  const shape = info.shape;
  const t = Tensor.empty(shape, dtype, device);
  try {
    const total = info.end - info.begin;
    const rows = shape.length === 0 ? 1 : shape[0]!;
    const rowBytes = rows === 0 ? 0 : total / rows;
    const rowsPerChunk = Math.max(1, Math.floor(chunkBytes / Math.max(1, rowBytes)));
    let done = 0;
    for (let r = 0; r < rows; r += rowsPerChunk) {
      const r1 = Math.min(rows, r + rowsPerChunk);
      const chunk = new Uint8Array((r1 - r) * rowBytes);
      await file.readInto(key, r * rowBytes, chunk);
      const data = hostData(chunk, src, dtype);
      if (shape.length === 0) t.write(data);
      else t.slice(r, r1).write(data);
      done += chunk.length;
      onProgress?.(done, total);
    }
    if (rows === 0) onProgress?.(0, 0);
    return t;
  } catch (e) {
    t.dispose();
    throw e;
  }
}
