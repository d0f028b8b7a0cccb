// The mmproj GGUF of a multimodal HF fixture, as llama.cpp's `convert_hf_to_gguf.py --mmproj`
// writes it for Gemma 3 (conversion MmprojModel + Gemma3VisionModel, gguf-py tensor_mapping.py):
// general.architecture "clip", clip.* keys, v.* / mm.* tensor names in torch's layouts (no
// transposes), mm.soft_emb_norm stored as 1 + w computed in the checkpoint's dtype, and the
// converter's types: the embeddings always F32 and mm.input_projection always F16
// (Gemma3VisionModel.tensor_force_quant), 1-D tensors F32, other matrices the outtype (a block type
// falls back to F16 where rows are not whole blocks, gguf-py's QuantError path).
// `mmprojReferenceCheckpoint` writes the safetensors checkpoint holding exactly the values such a
// file carries, so the two load paths can be compared bit for bit.
import { existsSync, mkdirSync, readFileSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from "@gemma3/native";
import { loadConfig, type Gemma3Config } from "../src/config.js";
import { GGML_TYPES, type GGMLTypeName } from "../src/gguf.js";
import { ggufFloats } from "../src/gguf_load.js";
import { SafetensorsFile } from "../src/safetensors.js";
import { canonicalName, toFloat32 } from "../src/weights.js";
import {
  arr,
  bool,
  encodeTensor,
  f32,
  str,
  u32,
  writeGGUF,
  type GGUFBuildOptions,
  type GGUFTensorSpec,
  type KV,
} from "./gguf_writer.js";
import { writeSafetensors, type TensorSpec } from "./safetensors_writer.js";

/** llama.cpp's LlamaFileType (general.file_type) per --outtype. */
const FILE_TYPE: Partial<Record<GGMLTypeName, number>> = { F32: 0, F16: 1, Q8_0: 7, BF16: 32 };

const LAYER: Record<string, string> = {
  layer_norm1: "ln1",
  layer_norm2: "ln2",
  "self_attn.q_proj": "attn_q",
  "self_attn.k_proj": "attn_k",
  "self_attn.v_proj": "attn_v",
  "self_attn.out_proj": "attn_out",
  "mlp.fc1": "ffn_up",
  "mlp.fc2": "ffn_down",
};

/** gguf-py's name for a canonical vision / projector weight (legacy: fc1/fc2 swapped, old files). */
function mmprojName(canonical: string, legacyFfn = false): string {
  const fixed: Record<string, string> = {
    "vision.embeddings.patch_embedding.weight": "v.patch_embd.weight",
    "vision.embeddings.patch_embedding.bias": "v.patch_embd.bias",
    "vision.embeddings.position_embedding.weight": "v.position_embd.weight",
    "vision.post_layernorm.weight": "v.post_ln.weight",
    "vision.post_layernorm.bias": "v.post_ln.bias",
    "projector.mm_soft_emb_norm.weight": "mm.soft_emb_norm.weight",
    "projector.mm_input_projection_weight": "mm.input_projection.weight",
  };
  if (fixed[canonical]) return fixed[canonical]!;
  const m = /^vision\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(canonical)!;
  let part = LAYER[m[2]!]!;
  if (legacyFfn && part.startsWith("ffn_")) part = part === "ffn_up" ? "ffn_down" : "ffn_up";
  return `v.blk.${m[1]}.${part}.${m[3]}`;
}

/** Rounds float32 values as a tensor of `dtype` would hold them. */
function roundTo(v: Float32Array, dtype: string): Float32Array {
  if (dtype === "BF16") return v.map((x) => bf16ToF32(f32ToBf16(x)));
  if (dtype === "F16") return v.map((x) => f16ToF32(f32ToF16(x)));
  return v;
}

/** One tensor of an mmproj, with the float values the file holds (decoded). */
export interface MmprojTensor extends GGUFTensorSpec {
  /** The checkpoint key it came from. */
  key: string;
  /** Canonical name (weights.ts): vision.* / projector.* */
  canonical: string;
  /** What a reader decodes from the file, in torch order. */
  values: Float32Array;
  /** torch shape */
  shape: number[];
}

export interface MmprojGGUF {
  metadata: [string, KV][];
  tensors: MmprojTensor[];
  config: Gemma3Config;
}

export interface MmprojGGUFOptions {
  /** Replace a tensor's type after the converter's choice. */
  typeOf?: (name: string, defaultType: GGMLTypeName, ne: readonly number[]) => GGMLTypeName;
  /** Extra or replacement metadata (replaces a key in place). */
  metadata?: [string, KV][];
  /** Write fc1 as ffn_down and fc2 as ffn_up, as some old Gemma 3 mmproj files did. */
  legacyFfnNames?: boolean;
}

/**
 * The mmproj GGUF of a Gemma3ForConditionalGeneration fixture directory (config.json +
 * model.safetensors; preprocessor_config.json's image_mean / image_std and image_seq_length when
 * present, else Gemma 3's 0.5 / 0.5 and mm_tokens_per_image).
 * @param outtype the converter's --outtype: F32, F16, BF16 or Q8_0
 */
export async function mmprojGGUF(
  dir: string,
  outtype: GGMLTypeName,
  opts: MmprojGGUFOptions = {},
): Promise<MmprojGGUF> {
  const config = await loadConfig(join(dir, "config.json"));
  const pre = existsSync(join(dir, "preprocessor_config.json"))
    ? (JSON.parse(readFileSync(join(dir, "preprocessor_config.json"), "utf8")) as Record<
        string,
        unknown
      >)
    : {};
  const st = await SafetensorsFile.open(join(dir, "model.safetensors"));
  const tensors: MmprojTensor[] = [];
  try {
    // The converter walks the checkpoint's keys in file order and keeps vision_tower.* /
    // multi_modal_projector.* (Gemma3VisionModel.filter_tensors).
    for (const key of st.tensors.keys()) {
      const c = canonicalName(key);
      if (!c || !(c.name.startsWith("vision.") || c.name.startsWith("projector."))) continue;
      const { dtype, shape } = st.info(key);
      let values = toFloat32(await st.read(key), dtype);
      // modify_tensors: data_torch + 1, in the checkpoint's dtype.
      if (c.name === "projector.mm_soft_emb_norm.weight")
        values = roundTo(
          values.map((x) => x + 1),
          dtype,
        );
      const name = mmprojName(c.name, opts.legacyFfnNames);
      const ne = [...shape].reverse();
      let t: GGMLTypeName;
      if (key.includes("input_projection")) t = "F16";
      else if (key.includes(".embeddings.")) t = "F32";
      else t = outtype;
      if (shape.length <= 1 || name.endsWith("_norm.weight") || !name.endsWith(".weight"))
        t = "F32";
      if (GGML_TYPES[t].blockSize > 1 && ne[0]! % GGML_TYPES[t].blockSize !== 0) t = "F16";
      t = opts.typeOf?.(name, t, ne) ?? t;
      const data = await encodeTensor(values, ne, t);
      const decoded =
        t === "F32" || t === "F16" || t === "BF16" ? roundTo(values, t) : ggufFloats(data, t);
      tensors.push({ key, canonical: c.name, name, type: t, ne, data, values: decoded, shape });
    }
  } finally {
    await st.close();
  }
  const metadata = mmprojMetadata(config, pre, outtype);
  for (const [k, val] of opts.metadata ?? []) {
    const i = metadata.findIndex(([key]) => key === k);
    if (i >= 0) metadata[i] = [k, val];
    else metadata.push([k, val]);
  }
  return { metadata, tensors, config };
}

/**
 * The metadata convert_hf_to_gguf.py writes for a Gemma 3 mmproj (MmprojModel +
 * Gemma3VisionModel.set_gguf_parameters), from the parsed config and preprocessor_config.json.
 */
export function mmprojMetadata(
  config: Gemma3Config,
  pre: Record<string, unknown>,
  outtype: GGMLTypeName,
): [string, KV][] {
  const v = config.vision!;
  const grid = v.image_size / v.patch_size;
  const seq =
    typeof pre.image_seq_length === "number" ? pre.image_seq_length : config.mmTokensPerImage!;
  const scale = Math.floor(grid / Math.floor(Math.sqrt(seq)));
  const triple = (k: string) => (Array.isArray(pre[k]) ? (pre[k] as number[]) : [0.5, 0.5, 0.5]);
  return [
    ["general.architecture", str("clip")],
    ["general.type", str("mmproj")],
    ["general.name", str("tiny gemma3 mmproj")],
    ["general.file_type", u32(FILE_TYPE[outtype] ?? 0)],
    ["clip.has_vision_encoder", bool(true)],
    ["clip.vision.projection_dim", u32(config.hiddenSize)],
    ["clip.vision.image_size", u32(v.image_size)],
    ["clip.vision.patch_size", u32(v.patch_size)],
    ["clip.vision.embedding_length", u32(v.hidden_size)],
    ["clip.vision.feed_forward_length", u32(v.intermediate_size)],
    ["clip.vision.block_count", u32(v.num_hidden_layers)],
    ["clip.vision.attention.head_count", u32(v.num_attention_heads)],
    ["clip.vision.image_mean", arr("f32", triple("image_mean"))],
    ["clip.vision.image_std", arr("f32", triple("image_std"))],
    ["clip.projector_type", str("gemma3")],
    ["clip.vision.attention.layer_norm_epsilon", f32(v.layer_norm_eps)],
    ["clip.use_gelu", bool(true)],
    // Written only when it is not clip.cpp's default 4 (the converter's tinygemma3 case).
    ...(scale > 0 && scale !== 4
      ? [["clip.vision.projector.scale_factor", u32(scale)] as [string, KV]]
      : []),
    ["general.quantization_version", u32(2)],
  ];
}

/** Writes the mmproj GGUF of a fixture and returns its path. */
export async function writeMmprojGGUF(
  dir: string,
  outtype: GGMLTypeName,
  path: string,
  opts: MmprojGGUFOptions & { edit?: (g: MmprojGGUF) => void } = {},
  build: GGUFBuildOptions = {},
): Promise<string> {
  const g = await mmprojGGUF(dir, outtype, opts);
  opts.edit?.(g);
  return writeGGUF(path, g.metadata, g.tensors, build);
}

/**
 * A copy of the fixture checkpoint whose vision / projector tensors hold exactly what the mmproj
 * `g` carries (F32; the norm as stored − 1, the loader's inverse), text tensors and side files
 * (config, preprocessor, tokenizer: linked) as they are. Loading it by the safetensors path must
 * give the same numbers as loading the GGUF pair.
 */
export async function mmprojReferenceCheckpoint(
  dir: string,
  g: MmprojGGUF,
  out: string,
): Promise<string> {
  mkdirSync(out, { recursive: true });
  for (const f of [
    "config.json",
    "preprocessor_config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
  ])
    if (existsSync(join(dir, f))) symlinkSync(join(dir, f), join(out, f));
  const byKey = new Map(g.tensors.map((t) => [t.key, t]));
  const st = await SafetensorsFile.open(join(dir, "model.safetensors"));
  const tensors: Record<string, TensorSpec> = {};
  try {
    for (const key of st.tensors.keys()) {
      const info = st.info(key);
      const t = byKey.get(key);
      if (!t) {
        tensors[key] = { dtype: info.dtype, shape: [...info.shape], data: await st.read(key) };
        continue;
      }
      const values =
        t.canonical === "projector.mm_soft_emb_norm.weight" ? t.values.map((x) => x - 1) : t.values;
      tensors[key] = {
        dtype: "F32",
        shape: [...info.shape],
        data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
      };
    }
  } finally {
    await st.close();
  }
  writeSafetensors(join(out, "model.safetensors"), tensors);
  return out;
}
