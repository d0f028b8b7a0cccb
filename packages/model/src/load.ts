// Loading a model onto a device: a directory of config.json + *.safetensors (single or sharded),
// or a llama.cpp-convention gemma3 .gguf file (or a directory holding one). Linear weights can be
// quantized on load (q8_0, q4_0, fp8_e4m3, q4_k/q5_k/q6_k), and, opt-in, the embedding table (the
// tied head) to a block format; norms stay in the compute dtype.
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { Device, Tensor, UnsupportedError } from "@gemma3/native";
import { DecoderLayer, type LayerWeights, type StoredLayerWeight } from "./block.js";
import { fuseProjections } from "./fuse.js";
import { repackSplitWeights, splitFormats } from "./layout.js";
import { loadConfig, type Gemma3Config } from "./config.js";
import { GGUFError, GGUFFile } from "./gguf.js";
import { ggufMultimodalConfig, isMmprojFileName, resolveMmproj } from "./gguf_mmproj.js";
import {
  checkGGUFTextWeights,
  ggufTextConfig,
  isHeadWeight,
  isLinearWeight,
  loadGGUFTensor,
} from "./gguf_load.js";
import {
  HEAD_QUANTIZATIONS,
  WEIGHT_QUANTIZATIONS,
  canQuantize,
  quantizeWeight,
  type HeadQuantization,
  type WeightQuantization,
} from "./quantize.js";
import { openCheckpoint } from "./safetensors.js";
import { Gemma3TextModel, type ComputeDType, type TextWeights } from "./text_model.js";
import { checkTextWeights, expectedTextWeights, indexWeights, loadTensor } from "./weights.js";

export interface LoadOptions {
  /** "cpu" (default), "cuda" or "cuda:N" */
  device?: string | Device;
  /** Compute and weight dtype: "f32" or "bf16" (default: f32 on cpu, bf16 on cuda). */
  dtype?: ComputeDType;
  /**
   * Quantize the linear weights (q/k/v/o, gate/up/down) on load, on the device: q8_0 / q4_0 (GGUF
   * blocks, llama.cpp rules), q4_k / q5_k / q6_k (K-quants, llama.cpp's reference quantizers) or
   * fp8_e4m3 (per-row f32 scale). GGUF tensors stored as blocks keep them; a weight whose rows are
   * not whole blocks (32, or 256 for the K-quants) stays in `dtype`.
   */
  quantize?: WeightQuantization;
  /**
   * Quantize the token embedding table on load (Gemma 3 ties it to the output head; an untied
   * lm_head is quantized too): q8_0 / q4_0 / q4_k / q5_k / q6_k, from the stored precision as
   * `quantize` does. Default: none; the table stays in `dtype` (bf16 on CUDA). llama.cpp's
   * llama-quantize quantizes the tied head by default (Q6_K in a Q4_0 file, Q8_0 in a Q8_0 file);
   * here it is opt-in. At decode the head is the largest weight read per token (4B: 262208 × 2560,
   * 1.34 GB in bf16). Applies where the table is stored as floats (safetensors; GGUF F32/F16/BF16)
   * and its rows are whole blocks (hidden % 32, % 256 for the K-quants), else it stays in `dtype`;
   * a GGUF token_embd stored as blocks keeps them. Not fp8_e4m3: the embedding gather applies one
   * per-tensor fp8 scale, quantize-on-load makes one per row.
   */
  quantizeHead?: HeadQuantization;
  /** Progress over the text weights: (tensors done, fractional, tensors total). */
  onProgress?: (done: number, total: number) => void;
  /**
   * GGUF models: the llama.cpp mmproj GGUF (vision tower + projector) to pair with the text file
   * (llama.cpp's --mmproj). Without it, a model named by its directory takes the one mmproj-*.gguf
   * there. With an mmproj the config is multimodal (vision, image token ids); @gemma3/vision's
   * loadVisionEncoder reads its weights.
   */
  mmproj?: string;
  /**
   * Fuse each layer (default true): [q; k; v] and [gate; up] weights concatenated at load (one
   * matmul each; the separate weights become row views, so memory is unchanged) and the fused
   * norm/RoPE kernels (DecoderLayer). false: the unfused reference sequence, for comparisons.
   */
  fuse?: boolean;
}

/** Canonical checkpoint name (after "layers.{i}.") of each layer weight. */
export const LAYER_KEYS: Record<StoredLayerWeight, string> = {
  inputLayernorm: "input_layernorm",
  postAttentionLayernorm: "post_attention_layernorm",
  preFeedforwardLayernorm: "pre_feedforward_layernorm",
  postFeedforwardLayernorm: "post_feedforward_layernorm",
  qProj: "self_attn.q_proj",
  kProj: "self_attn.k_proj",
  vProj: "self_attn.v_proj",
  oProj: "self_attn.o_proj",
  qNorm: "self_attn.q_norm",
  kNorm: "self_attn.k_norm",
  gateProj: "mlp.gate_proj",
  upProj: "mlp.up_proj",
  downProj: "mlp.down_proj",
};

/** Where a model path points (a GGUF text file with the mmproj GGUF paired with it, if any). */
export type ModelSource =
  { format: "safetensors"; dir: string } | { format: "gguf"; file: string; mmproj?: string };

/**
 * Resolves a model path: a .gguf file; a directory with config.json (safetensors); or a directory
 * with exactly one .gguf besides mmproj files (the vision projector). A GGUF gets `opts.mmproj`,
 * or, when named by its directory, the one mmproj-*.gguf there. Anything else is treated as a
 * safetensors directory, whose loader then names what is missing.
 * @throws GGUFError when a directory holds several candidate .gguf (or mmproj) files, or the
 *   given mmproj does not exist
 */
export async function resolveModelPath(
  path: string,
  opts: { mmproj?: string } = {},
): Promise<ModelSource> {
  const st = await stat(path).catch(() => undefined);
  const gguf = async (file: string, byDirectory: boolean): Promise<ModelSource> => {
    const mmproj = await resolveMmproj(file, byDirectory, opts.mmproj);
    return mmproj === undefined ? { format: "gguf", file } : { format: "gguf", file, mmproj };
  };
  const safetensors = (dir: string): ModelSource => {
    if (opts.mmproj !== undefined)
      throw new RangeError(
        `mmproj ${opts.mmproj}: an mmproj goes with a GGUF model; ${dir} is a safetensors ` +
          `checkpoint (its vision tower is in the checkpoint)`,
      );
    return { format: "safetensors", dir };
  };
  // A missing *.gguf path goes to the GGUF reader too, so the error names that file.
  if (!st?.isDirectory() && path.toLowerCase().endsWith(".gguf")) return gguf(path, false);
  if (!st?.isDirectory()) return safetensors(path);
  if (await stat(join(path, "config.json")).catch(() => undefined)) return safetensors(path);
  const ggufs = (await readdir(path))
    .filter((n) => n.toLowerCase().endsWith(".gguf") && !isMmprojFileName(n))
    .sort();
  if (ggufs.length === 1) return gguf(join(path, ggufs[0]!), true);
  if (ggufs.length > 1)
    throw new GGUFError(
      `${path}: ${ggufs.length} .gguf files (${ggufs.join(", ")}): pass the one to load`,
      "E_IO",
      path,
    );
  return safetensors(path);
}

/**
 * Loads the text model of a Gemma 3 checkpoint: a safetensors directory (Gemma3ForCausalLM or the
 * text part of Gemma3ForConditionalGeneration) or a gemma3 GGUF. Every tensor is checked against
 * the config first; a missing, mis-shaped or unloadable one fails before anything is uploaded, with
 * the file and tensor named.
 */
export async function loadTextModel(
  path: string,
  opts: LoadOptions = {},
): Promise<Gemma3TextModel> {
  const device = Device.of(opts.device ?? "cpu");
  const dtype: ComputeDType = opts.dtype ?? (device.isCuda ? "bf16" : "f32");
  checkQuantize(opts.quantize);
  checkQuantizeHead(opts.quantizeHead);
  const src = await resolveModelPath(path, opts);
  return src.format === "gguf"
    ? loadFromGGUF(src.file, src.mmproj, device, dtype, opts)
    : loadFromSafetensors(src.dir, device, dtype, opts);
}

/**
 * Refuses a `quantize` that is not one of WEIGHT_QUANTIZATIONS (or fp8 where DecoderLayer cannot
 * apply its scales), before any weight is read. (Internal: the tensor-parallel and random-weight
 * loaders share it.)
 */
export function checkQuantize(q: WeightQuantization | undefined): void {
  if (q === undefined) return;
  if (!WEIGHT_QUANTIZATIONS.includes(q))
    throw new RangeError(
      `quantize: "${String(q)}" is not one of ${WEIGHT_QUANTIZATIONS.join(", ")}`,
    );
  // fp8 weights need their per-row scale in every matmul: DecoderLayer must pass it (quantize.ts
  // layerOps) and say so, or the model would silently run unscaled weights.
  if (
    q === "fp8_e4m3" &&
    !(DecoderLayer as unknown as { supportsWeightScales?: boolean }).supportsWeightScales
  )
    throw new UnsupportedError(
      "quantize fp8_e4m3: DecoderLayer does not apply per-row weight scales yet " +
        "(block.ts must use layerOps from quantize.ts and set DecoderLayer.supportsWeightScales)",
      "E_UNSUPPORTED",
    );
}

/**
 * Refuses a `quantizeHead` that is not one of HEAD_QUANTIZATIONS, before any weight is read.
 * (Internal: the tensor-parallel and random-weight loaders share it.)
 */
export function checkQuantizeHead(q: HeadQuantization | undefined): void {
  if (q === undefined) return;
  if (!HEAD_QUANTIZATIONS.includes(q))
    throw new RangeError(
      `quantizeHead: "${String(q)}" is not one of ${HEAD_QUANTIZATIONS.join(", ")}` +
        ((q as string) === "fp8_e4m3"
          ? " (the embedding gather applies one per-tensor fp8 scale, not per-row scales)"
          : ""),
    );
}

/**
 * The format `opts` quantizes canonical weight `name` to: `quantize` for the linear weights,
 * `quantizeHead` for embed_tokens and lm_head, none for the norms. (Internal: for the loaders.)
 */
export function quantizationOf(
  name: string,
  opts: Pick<LoadOptions, "quantize" | "quantizeHead">,
): WeightQuantization | undefined {
  if (isLinearWeight(name)) return opts.quantize;
  if (isHeadWeight(name)) return opts.quantizeHead;
  return undefined;
}

/**
 * Builds the model from a per-name tensor loader; disposes what was loaded if anything fails.
 * (Internal: the safetensors, GGUF and random-weight loaders share it.)
 */
export async function assemble(
  config: Gemma3Config,
  device: Device,
  dtype: ComputeDType,
  opts: LoadOptions,
  loadOne: (name: string, progress: (frac: number) => void) => Promise<Tensor>,
): Promise<Gemma3TextModel> {
  const loaded: Tensor[] = [];
  const fuse = opts.fuse ?? true;
  const total = expectedTextWeights(config).length;
  let done = 0;
  const load = async (name: string) => {
    const t = await loadOne(name, (frac) => opts.onProgress?.(done + frac, total));
    done += 1;
    loaded.push(t);
    opts.onProgress?.(done, total);
    return t;
  };
  try {
    const embedTokens = await load("embed_tokens");
    const layers: LayerWeights[] = [];
    for (let i = 0; i < config.numHiddenLayers; i++) {
      const w = {} as LayerWeights;
      for (const [field, key] of Object.entries(LAYER_KEYS) as [StoredLayerWeight, string][])
        w[field] = await load(`layers.${i}.${key}`);
      if (fuse) loaded.push(...fuseProjections(w));
      layers.push(w);
    }
    const norm = await load("norm");
    const weights: TextWeights = { embedTokens, norm, layers };
    if (!config.tieWordEmbeddings) weights.lmHead = await load("lm_head");
    repackSplitWeights(weights, splitFormats(device), loaded);
    return new Gemma3TextModel(config, weights, device, dtype, { fusedOps: fuse });
  } catch (e) {
    for (const t of loaded) t.dispose();
    throw e;
  }
}

async function loadFromSafetensors(
  dir: string,
  device: Device,
  dtype: ComputeDType,
  opts: LoadOptions,
): Promise<Gemma3TextModel> {
  const config = await loadConfig(join(dir, "config.json"));
  const ckpt = await openCheckpoint(dir);
  try {
    checkTextWeights(config, ckpt);
    const stored = (name: string) => ckpt.tensors.get(indexWeights(ckpt).names.get(name)!)!.info;
    return await assemble(config, device, dtype, opts, async (name, progress) => {
      const onProgress = (d: number, all: number) => progress(d / Math.max(all, 1));
      const q = quantizationOf(name, opts);
      if (!q || !canQuantize(stored(name).shape, q))
        return loadTensor(ckpt, name, device, dtype, { onProgress });
      // Quantize from the stored precision: bf16 as bf16, anything else through f32.
      const src = stored(name).dtype === "BF16" ? "bf16" : "f32";
      const t = await loadTensor(ckpt, name, device, src, { onProgress });
      try {
        return quantizeWeight(t, q);
      } finally {
        t.dispose();
      }
    });
  } finally {
    await ckpt.close();
  }
}

async function loadFromGGUF(
  file: string,
  mmproj: string | undefined,
  device: Device,
  dtype: ComputeDType,
  opts: LoadOptions,
): Promise<Gemma3TextModel> {
  const f = await GGUFFile.open(file);
  try {
    const config = mmproj ? await ggufPairConfig(f, mmproj) : ggufTextConfig(f);
    const infos = checkGGUFTextWeights(config, f);
    return await assemble(config, device, dtype, opts, (name) =>
      loadGGUFTensor(f, name, infos.get(name)!, device, dtype, {
        quantize: quantizationOf(name, opts),
      }),
    );
  } finally {
    await f.close();
  }
}

/** The multimodal config of an open text GGUF and an mmproj file (headers only). */
async function ggufPairConfig(text: GGUFFile, mmproj: string): Promise<Gemma3Config> {
  const mm = await GGUFFile.open(mmproj);
  try {
    return ggufMultimodalConfig(text, mm);
  } finally {
    await mm.close();
  }
}

/**
 * The config of a model path without loading weights: config.json, or the GGUF headers (the
 * text file's, and the mmproj's when one is paired as resolveModelPath pairs it).
 */
export async function loadModelConfig(
  path: string,
  opts: { mmproj?: string } = {},
): Promise<Gemma3Config> {
  const src = await resolveModelPath(path, opts);
  if (src.format === "safetensors") return loadConfig(join(src.dir, "config.json"));
  const f = await GGUFFile.open(src.file);
  try {
    return src.mmproj ? await ggufPairConfig(f, src.mmproj) : ggufTextConfig(f);
  } finally {
    await f.close();
  }
}
