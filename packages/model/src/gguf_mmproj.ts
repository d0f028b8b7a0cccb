// The vision half of a llama.cpp Gemma 3 pair: the mmproj GGUF that `convert_hf_to_gguf.py
// --mmproj` writes (MmprojModel + Gemma3VisionModel), read for its config here; the tensors are
// read by @gemma3/vision (vision_gguf.ts).
//
// Metadata (llama.cpp tools/mtmd/clip-impl.h KEY_*; written by MmprojModel.set_gguf_parameters
// and Gemma3VisionModel.set_gguf_parameters): general.architecture "clip", general.type "mmproj",
// clip.projector_type "gemma3" (clip.vision.projector_type in files with several encoders),
// clip.has_vision_encoder, clip.use_gelu, clip.vision.{image_size, patch_size, embedding_length,
// feed_forward_length, block_count, attention.head_count, attention.layer_norm_epsilon,
// projection_dim (the text model's hidden size), image_mean, image_std}, and
// clip.vision.projector.scale_factor (the pool kernel; written only when it is not 4, for
// llama.cpp's tinygemma3 test model: clip.cpp PROJECTOR_TYPE_GEMMA3 defaults n_merge to 4).
//
// What the pair does not say, and the rules used for it:
// - mm_tokens_per_image = (image_size / patch_size / scale_factor)² (clip.cpp pools the patch grid
//   by n_merge; the converter derives the factor from preprocessor_config's image_seq_length);
// - the image token ids: llama.cpp feeds image embeddings directly and stores no id, so they are
//   looked up by name in the text GGUF's vocabulary (tokenizer.ggml.tokens: "<start_of_image>",
//   "<end_of_image>", "<image_soft_token>"), else Gemma 3's 255999 / 256000 / 262144;
// - num_channels 3 and hidden_act gelu_pytorch_tanh (clip.cpp builds RGB inputs and, with
//   use_gelu, ggml_gelu: the tanh approximation).
import { readdir, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { ConfigError, GEMMA3_MM_DEFAULTS, parseConfig, type Gemma3Config } from "./config.js";
import { GGUFError, GGUFValueType } from "./gguf.js";
import { ggufTextConfigJson, type GGUFSource } from "./gguf_load.js";
import { GGUFMetadata } from "./gguf_metadata.js";

/** general.architecture of mmproj files (gguf-py MODEL_ARCH.MMPROJ). */
export const MMPROJ_ARCHITECTURE = "clip";
/** clip.projector_type of Gemma 3's vision tower (clip-impl.h PROJECTOR_TYPE_GEMMA3). */
export const GEMMA3_PROJECTOR_TYPE = "gemma3";
/** clip.cpp's pool kernel for gemma3 when clip.vision.projector.scale_factor is absent. */
export const GEMMA3_DEFAULT_SCALE_FACTOR = 4;

/** What an mmproj GGUF says about the vision tower and the projector. */
export interface GGUFMmprojInfo {
  /** vision_config as config.json would write it (siglip_vision_model keys). */
  visionConfig: Record<string, unknown>;
  /** (image_size / patch_size / scaleFactor)² */
  mmTokensPerImage: number;
  /** clip.vision.projector.scale_factor (avg-pool kernel and stride), default 4 */
  scaleFactor: number;
  /** clip.vision.projection_dim: the text model's hidden size, when written */
  projectionDim: number | null;
  /** clip.vision.image_mean / image_std (preprocessor_config.json's), when written */
  imageMean: [number, number, number] | null;
  imageStd: [number, number, number] | null;
}

/**
 * Reads and checks an mmproj GGUF's metadata: a clip file with Gemma 3's projector and a SigLIP
 * vision encoder of consistent sizes.
 * @throws GGUFError E_METADATA naming the file and key (not an mmproj, another projector type,
 *   a missing or out-of-range size)
 */
export function ggufMmprojInfo(f: GGUFSource): GGUFMmprojInfo {
  const m = new GGUFMetadata(f.metadata, f.path);
  const arch = m.str("general.architecture");
  if (arch !== MMPROJ_ARCHITECTURE)
    m.fail(
      "general.architecture",
      `"${arch}" is not "${MMPROJ_ARCHITECTURE}": not an mmproj file (the vision projector ` +
        `llama.cpp's convert_hf_to_gguf.py --mmproj writes)`,
    );
  // Files with several encoders name the vision one's type separately (clip.cpp KEY_VISION_PROJ_TYPE).
  const typeKey = m.has("clip.vision.projector_type")
    ? "clip.vision.projector_type"
    : "clip.projector_type";
  const type = m.str(typeKey);
  if (type !== GEMMA3_PROJECTOR_TYPE)
    m.fail(
      typeKey,
      `"${type}" is not "${GEMMA3_PROJECTOR_TYPE}": only Gemma 3's projector (SigLIP + ` +
        `avg-pool + RMSNorm + projection) is implemented`,
    );
  if (!m.bool("clip.has_vision_encoder", true))
    m.fail("clip.has_vision_encoder", "is false: the file has no vision encoder");
  if (m.bool("clip.use_silu", false) || !m.bool("clip.use_gelu", true))
    m.fail("clip.use_gelu", "SigLIP's MLP uses GELU (tanh); this file asks for another activation");

  const v = (k: string) => `clip.vision.${k}`;
  const pos = (key: string, def?: number) => {
    const x = m.uint(key, def);
    if (x < 1 || x > 1 << 20) m.fail(key, `${x} is not in 1..${1 << 20}`);
    return x;
  };
  const imageSize = pos(v("image_size"));
  const patchSize = pos(v("patch_size"));
  const hidden = pos(v("embedding_length"));
  const ffn = pos(v("feed_forward_length"));
  const layers = pos(v("block_count"));
  const heads = pos(v("attention.head_count"));
  const epsKey = v("attention.layer_norm_epsilon");
  // Stored as f32 (1e-6 reads 9.99999997e-7): back to the shortest decimal of that f32, as
  // config.json spells it; the kernels take eps as f32 either way.
  const eps = shortestF32(m.num(epsKey));
  if (!(eps > 0 && eps < 1)) m.fail(epsKey, `${eps} is not in (0, 1)`);
  if (imageSize % patchSize !== 0)
    m.fail(v("patch_size"), `${patchSize} does not divide image_size ${imageSize}`);
  if (hidden % heads !== 0)
    m.fail(v("attention.head_count"), `${heads} does not divide embedding_length ${hidden}`);
  const scaleKey = v("projector.scale_factor");
  const scaleFactor = pos(scaleKey, GEMMA3_DEFAULT_SCALE_FACTOR);
  const grid = imageSize / patchSize;
  if (grid % scaleFactor !== 0)
    m.fail(scaleKey, `${scaleFactor} does not divide the ${grid}×${grid} patch grid`);
  const side = grid / scaleFactor;
  const projectionDim = m.has(v("projection_dim")) ? pos(v("projection_dim")) : null;
  const triple = (key: string): [number, number, number] | null => {
    const a = m.numbers(key);
    if (a === undefined) return null;
    if (a.length !== 3 || !a.every(Number.isFinite))
      m.fail(key, "must be 3 finite numbers (R, G, B)");
    return [a[0]!, a[1]!, a[2]!];
  };
  const imageStd = triple(v("image_std"));
  if (imageStd?.some((s) => s <= 0)) m.fail(v("image_std"), "must be positive");
  return {
    visionConfig: {
      model_type: "siglip_vision_model",
      hidden_size: hidden,
      intermediate_size: ffn,
      num_hidden_layers: layers,
      num_attention_heads: heads,
      num_channels: 3,
      image_size: imageSize,
      patch_size: patchSize,
      hidden_act: "gelu_pytorch_tanh",
      layer_norm_eps: eps,
    },
    mmTokensPerImage: side * side,
    scaleFactor,
    projectionDim,
    imageMean: triple(v("image_mean")),
    imageStd,
  };
}

/** The shortest decimal that rounds to the same float32 as `x` (1e-6 for f32(1e-6)). */
function shortestF32(x: number): number {
  const f = Math.fround(x);
  for (let p = 1; p < 17; p++) {
    const y = Number(f.toPrecision(p));
    if (Math.fround(y) === f) return y;
  }
  return x;
}

/** The id of `token` in the text GGUF's embedded vocabulary, or `def`. */
function vocabId(f: GGUFSource, token: string, def: number): number {
  const v = f.metadata.get("tokenizer.ggml.tokens");
  if (v?.type !== GGUFValueType.ARRAY || v.elementType !== GGUFValueType.STRING) return def;
  const i = (v.value as string[]).indexOf(token);
  return i >= 0 ? i : def;
}

/**
 * The multimodal Gemma 3 config of a text GGUF + mmproj GGUF pair, validated by parseConfig like
 * a Gemma3ForConditionalGeneration config.json (model_type "gemma3", text_config from the text
 * file, vision_config from the mmproj file).
 * @throws GGUFError E_METADATA naming the file and key, also when the mmproj was made for a text
 *   model of another hidden size
 */
export function ggufMultimodalConfig(text: GGUFSource, mmproj: GGUFSource): Gemma3Config {
  const textJson = ggufTextConfigJson(text);
  const mm = ggufMmprojInfo(mmproj);
  const hidden = textJson.hidden_size as number;
  if (mm.projectionDim !== null && mm.projectionDim !== hidden)
    throw new GGUFError(
      `${mmproj.path}: key "clip.vision.projection_dim": ${mm.projectionDim}, but ${text.path} ` +
        `has embedding_length ${hidden}: the mmproj belongs to another model`,
      "E_METADATA",
      mmproj.path,
      undefined,
      "clip.vision.projection_dim",
    );
  const D = GEMMA3_MM_DEFAULTS;
  const json = {
    model_type: "gemma3",
    text_config: textJson,
    vision_config: mm.visionConfig,
    mm_tokens_per_image: mm.mmTokensPerImage,
    boi_token_index: vocabId(text, "<start_of_image>", D.boi_token_index),
    eoi_token_index: vocabId(text, "<end_of_image>", D.eoi_token_index),
    image_token_index: vocabId(text, "<image_soft_token>", D.image_token_index),
  };
  try {
    return parseConfig(json, `${text.path} + ${mmproj.path} (GGUF metadata)`);
  } catch (e) {
    if (e instanceof ConfigError)
      throw new GGUFError(e.message, "E_METADATA", mmproj.path, undefined, e.field);
    throw e;
  }
}

/** True for a file name llama.cpp's repos use for the projector (mmproj-*.gguf, *mmproj*.gguf). */
export function isMmprojFileName(name: string): boolean {
  const n = name.toLowerCase();
  return n.endsWith(".gguf") && n.includes("mmproj");
}

/**
 * The mmproj GGUF in a model directory (ggml-org's repos ship one mmproj-*.gguf beside the text
 * GGUFs), or undefined when there is none.
 * @throws GGUFError E_IO when there are several (the caller must name one)
 */
export async function findMmproj(dir: string): Promise<string | undefined> {
  const found = (await readdir(dir)).filter(isMmprojFileName).sort();
  if (found.length > 1)
    throw new GGUFError(
      `${dir}: ${found.length} mmproj files (${found.join(", ")}): pass the one to use (--mmproj)`,
      "E_IO",
      dir,
    );
  return found.length === 1 ? join(dir, found[0]!) : undefined;
}

/**
 * The mmproj for a text GGUF: `explicit` when given (it must exist), else the one mmproj file
 * beside it when the model was named by its directory; a model named by its .gguf file gets none
 * unless asked (llama.cpp's --mmproj), so a shared folder never pairs files by accident.
 */
export async function resolveMmproj(
  textFile: string,
  byDirectory: boolean,
  explicit?: string,
): Promise<string | undefined> {
  if (explicit !== undefined) {
    const st = await stat(explicit).catch(() => undefined);
    if (!st?.isFile()) throw new GGUFError(`${explicit}: mmproj file not found`, "E_IO", explicit);
    return explicit;
  }
  return byDirectory ? findMmproj(dirname(textFile)) : undefined;
}
