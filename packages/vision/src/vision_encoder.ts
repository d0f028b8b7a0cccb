// Pixels → image features for the text model: the SigLIP tower then the projector (HF
// Gemma3Model.get_image_features), all images of a request (original + Pan & Scan crops) batched.
import { Device, ShapeError, Tensor } from "@gemma3/native";
import {
  GGUFFile,
  Scratch,
  ggufMultimodalConfig,
  resolveModelPath,
  type Gemma3Config,
} from "@gemma3/model";
import type { PreprocessOptions } from "./preprocess.js";
import { Gemma3MultiModalProjector } from "./projector.js";
import { SiglipVisionTower, type VisionDType } from "./siglip.js";
import { loadMmprojWeights, mmprojPreprocess, requireMmproj } from "./vision_gguf.js";
import {
  loadVisionWeights,
  openVisionCheckpoint,
  requireVision,
  type VisionWeights,
} from "./vision_weights.js";

export interface VisionLoadOptions {
  /** "cpu" (default), "cuda" or "cuda:N" (the text model's device) */
  device?: string | Device;
  /** Compute and weight dtype (default: f32 on cpu, bf16 on cuda; use the text model's). */
  dtype?: VisionDType;
  /**
   * GGUF models: the llama.cpp mmproj GGUF holding the tower and projector (default: the one
   * mmproj-*.gguf beside the text GGUF when the model is named by its directory), as @gemma3/model's
   * loadTextModel pairs it.
   */
  mmproj?: string;
}

export class Gemma3VisionEncoder {
  readonly tower: SiglipVisionTower;
  readonly projector: Gemma3MultiModalProjector;
  /** vision_config.image_size: pixel values are [n, 3, imageSize, imageSize] */
  readonly imageSize: number;
  readonly numChannels: number;
  /** mm_tokens_per_image: feature rows per image */
  readonly tokensPerImage: number;
  /** The text model's hidden size (width of a feature row). */
  readonly textHidden: number;
  /**
   * Normalization the weights' file states (an mmproj's clip.vision.image_mean / image_std), for
   * when no preprocessor_config.json lies beside the model; empty for safetensors checkpoints.
   */
  preprocessDefaults: Pick<PreprocessOptions, "imageMean" | "imageStd"> = {};
  private readonly scratch: Scratch;

  constructor(
    readonly config: Gemma3Config,
    tower: SiglipVisionTower,
    projector: Gemma3MultiModalProjector,
    readonly device: Device,
    readonly dtype: VisionDType,
    private readonly owners: Tensor[],
  ) {
    const v = requireVision(config);
    this.tower = tower;
    this.projector = projector;
    this.imageSize = v.image_size;
    this.numChannels = v.num_channels;
    this.tokensPerImage = config.mmTokensPerImage!;
    this.textHidden = config.hiddenSize;
    this.scratch = new Scratch(device);
  }

  /**
   * Image features of a batch of images (HF get_image_features).
   * @param pixelValues [n, C, S, S] float32 (CHW, normalized to [-1, 1]): a host array (length
   *   n·C·S·S) or an f32 tensor on the encoder's device
   * @returns [n, mm_tokens_per_image, text hidden] in the compute dtype on the encoder's device
   *   (the caller disposes it); enqueued, not awaited
   * @throws ShapeError when the pixel values are not whole images of the configured size
   */
  encode(pixelValues: Float32Array | Tensor): Tensor {
    const { numChannels: C, imageSize: S } = this;
    const per = C * S * S;
    const len = pixelValues instanceof Tensor ? pixelValues.numel : pixelValues.length;
    if (len === 0 || len % per !== 0)
      throw new ShapeError(
        `encode: ${len} pixel values are not whole [${C}, ${S}, ${S}] images`,
        "E_SHAPE",
      );
    if (pixelValues instanceof Tensor && pixelValues.dtypeName !== "f32")
      throw new ShapeError(`encode: pixel values must be f32, got ${pixelValues}`, "E_DTYPE");
    const n = len / per;
    const out = Tensor.empty([n, this.tokensPerImage, this.textHidden], this.dtype, this.device);
    const s = this.scratch;
    try {
      s.begin(
        Scratch.bytes([n, C, S, S], "f32") +
          this.tower.scratchBytes(n) +
          this.projector.scratchBytes(n) +
          4096,
      );
      let pixels: Tensor;
      if (pixelValues instanceof Tensor) {
        pixels = pixelValues.view([n, C, S, S]);
      } else {
        pixels = s.alloc([n, C, S, S], "f32");
        pixels.write(pixelValues);
      }
      const h = this.tower.forward(pixels, s);
      this.projector.forward(h, n, s, out);
      return out;
    } catch (e) {
      out.dispose();
      throw e;
    }
  }

  dispose(): void {
    for (const t of this.owners) t.dispose();
    this.owners.length = 0;
    this.scratch.dispose();
  }
}

/**
 * Loads the vision tower and projector of a model path: a Gemma3ForConditionalGeneration
 * safetensors directory (hub layout vision_tower.vision_model.* / multi_modal_projector.*, or
 * transformers ≥ 5 names), or a gemma3 GGUF (file or directory) with its llama.cpp mmproj GGUF
 * (vision_gguf.ts). Every tensor is checked against the config before anything is uploaded.
 * @throws WeightError for a text-only config or checkpoint tensor problems; GGUFError for a GGUF
 *   pair's (not an mmproj, another projector, a missing / mis-shaped tensor, named)
 */
export async function loadVisionEncoder(
  path: string,
  opts: VisionLoadOptions = {},
): Promise<Gemma3VisionEncoder> {
  const device = Device.of(opts.device ?? "cpu");
  const dtype: VisionDType = opts.dtype ?? (device.isCuda ? "bf16" : "f32");
  const src = await resolveModelPath(
    path,
    opts.mmproj !== undefined ? { mmproj: opts.mmproj } : {},
  );
  if (src.format === "gguf") return loadFromMmproj(src.file, src.mmproj, device, dtype);
  const { config, ckpt } = await openVisionCheckpoint(src.dir);
  try {
    const { weights, owners } = await loadVisionWeights(config, ckpt, device, dtype);
    return assemble(config, weights, owners, device, dtype);
  } finally {
    await ckpt.close();
  }
}

/** The encoder of a text GGUF + mmproj GGUF pair (the config from both headers). */
async function loadFromMmproj(
  textFile: string,
  mmproj: string | undefined,
  device: Device,
  dtype: VisionDType,
): Promise<Gemma3VisionEncoder> {
  const mmFile = requireMmproj(textFile, mmproj);
  const text = await GGUFFile.open(textFile);
  let config: Gemma3Config;
  try {
    const mm = await GGUFFile.open(mmFile);
    try {
      config = ggufMultimodalConfig(text, mm);
      const { weights, owners } = await loadMmprojWeights(config, mm, device, dtype);
      const enc = assemble(config, weights, owners, device, dtype);
      enc.preprocessDefaults = mmprojPreprocess(mm);
      return enc;
    } finally {
      await mm.close();
    }
  } finally {
    await text.close();
  }
}

function assemble(
  config: Gemma3Config,
  weights: VisionWeights,
  owners: Tensor[],
  device: Device,
  dtype: VisionDType,
): Gemma3VisionEncoder {
  const v = requireVision(config);
  const tower = new SiglipVisionTower(v, weights, dtype);
  const projector = new Gemma3MultiModalProjector(
    weights.softEmbNorm,
    weights.projection,
    v.image_size / v.patch_size,
    config.mmTokensPerImage!,
    v.layer_norm_eps,
    dtype,
  );
  return new Gemma3VisionEncoder(config, tower, projector, device, dtype, owners);
}
