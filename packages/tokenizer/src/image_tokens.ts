// Image placeholders in the prompt, ported from transformers' processing_gemma3.py (Gemma3Processor)
// and the crop count of image_processing_gemma3.py (pan_and_scan). Pure functions: the vision
// package shares them.

export interface ImageTokenConfig {
  /** "<start_of_image>" (id 255999): what the chat template emits per image. */
  boiToken: string;
  /** "<end_of_image>" (id 256000) */
  eoiToken: string;
  /** "<image_soft_token>" (id 262144): one per vision embedding. */
  imageToken: string;
  /** Soft tokens per image (crop): config.json mm_tokens_per_image, 256. */
  mmTokensPerImage: number;
}

export const GEMMA3_IMAGE_TOKENS: Readonly<ImageTokenConfig> = Object.freeze({
  boiToken: "<start_of_image>",
  eoiToken: "<end_of_image>",
  imageToken: "<image_soft_token>",
  mmTokensPerImage: 256,
});

/**
 * Image token settings from config.json (mm_tokens_per_image) and tokenizer_config.json (boi_token,
 * eoi_token, image_token); Gemma 3's values where absent.
 */
export function imageTokenConfig(
  configJson?: Record<string, unknown>,
  tokenizerConfig?: Record<string, unknown>,
): ImageTokenConfig {
  const str = (k: string, d: string) => {
    const v = tokenizerConfig?.[k];
    return typeof v === "string" ? v : d;
  };
  const mm = configJson?.mm_tokens_per_image;
  if (mm !== undefined && (!Number.isInteger(mm) || (mm as number) <= 0))
    throw new Error(
      `config.json: mm_tokens_per_image must be a positive integer, got ${String(mm)}`,
    );
  return {
    boiToken: str("boi_token", GEMMA3_IMAGE_TOKENS.boiToken),
    eoiToken: str("eoi_token", GEMMA3_IMAGE_TOKENS.eoiToken),
    imageToken: str("image_token", GEMMA3_IMAGE_TOKENS.imageToken),
    mmTokensPerImage: (mm as number | undefined) ?? GEMMA3_IMAGE_TOKENS.mmTokensPerImage,
  };
}

/** HF `full_image_sequence`: "\n\n<start_of_image>" + N × "<image_soft_token>" + "<end_of_image>\n\n". */
export function fullImageSequence(cfg: ImageTokenConfig = GEMMA3_IMAGE_TOKENS): string {
  return `\n\n${cfg.boiToken}${cfg.imageToken.repeat(cfg.mmTokensPerImage)}${cfg.eoiToken}\n\n`;
}

/**
 * What one image's placeholder becomes before expansion: itself without crops; with Pan & Scan
 * crops, HF's wording (spacing exact) with one more placeholder per crop.
 */
export function panAndScanText(numCrops: number, boiToken = GEMMA3_IMAGE_TOKENS.boiToken): string {
  if (numCrops <= 0) return boiToken;
  return (
    `Here is the original image ${boiToken} and here are some crops to help you see better ` +
    Array(numCrops).fill(boiToken).join(" ")
  );
}

/**
 * Expands every image placeholder (`<start_of_image>`, one per image, as the chat template emits)
 * into the model's image token sequence: HF Gemma3Processor's P&S rewrite, then each placeholder
 * → fullImageSequence.
 * @param numCrops Pan & Scan crops per image, in order (0 = no crops); or the image count.
 */
export function expandImageTokens(
  prompt: string,
  numCrops: readonly number[] | number,
  cfg: ImageTokenConfig = GEMMA3_IMAGE_TOKENS,
): string {
  const parts = prompt.split(cfg.boiToken);
  const found = parts.length - 1;
  const crops = typeof numCrops === "number" ? Array<number>(numCrops).fill(0) : numCrops;
  if (found !== crops.length)
    throw new Error(`Prompt contained ${found} image tokens but received ${crops.length} images.`);
  const full = fullImageSequence(cfg);
  let out = parts[0]!;
  for (let i = 0; i < found; i++) {
    const n = crops[i]!;
    if (!Number.isInteger(n) || n < 0)
      throw new Error(`numCrops[${i}]: expected an integer >= 0, got ${n}`);
    out += panAndScanText(n, cfg.boiToken).split(cfg.boiToken).join(full) + parts[i + 1]!;
  }
  return out;
}

export interface PanAndScanOptions {
  /** pan_and_scan_min_crop_size, default 256 */
  minCropSize?: number;
  /** pan_and_scan_max_num_crops, default 4 */
  maxNumCrops?: number;
  /** pan_and_scan_min_ratio_to_activate, default 1.2 */
  minRatioToActivate?: number;
}

/** A crop in pixels of the original image (clipped to it, as numpy slicing clips). */
export interface CropBox {
  x: number;
  y: number;
  width: number;
  height: number;
}

/**
 * Pan & Scan crops of a width × height image, row-major; [] when P&S does not apply (aspect
 * ratio under the threshold, or crops would be under minCropSize). Port of HF `pan_and_scan`.
 */
export function panAndScanCrops(
  width: number,
  height: number,
  opts: PanAndScanOptions = {},
): CropBox[] {
  const minCrop = opts.minCropSize ?? 256;
  const maxCrops = opts.maxNumCrops ?? 4;
  const minRatio = opts.minRatioToActivate ?? 1.2;
  if (!(width > 0 && height > 0))
    throw new Error(`panAndScanCrops: bad image size ${width}x${height}`);
  let nw: number, nh: number;
  if (width >= height) {
    // Square or landscape: only when sufficiently exaggerated; crops close to the aspect ratio.
    if (width / height < minRatio) return [];
    nw = Math.floor(width / height + 0.5); // half round up
    nw = Math.min(Math.floor(width / minCrop), nw);
    nw = Math.min(maxCrops, Math.max(2, nw));
    nh = 1;
  } else {
    if (height / width < minRatio) return [];
    nh = Math.floor(height / width + 0.5);
    nh = Math.min(Math.floor(height / minCrop), nh);
    nh = Math.min(maxCrops, Math.max(2, nh));
    nw = 1;
  }
  const cw = Math.ceil(width / nw);
  const ch = Math.ceil(height / nh);
  if (Math.min(cw, ch) < minCrop) return [];
  const out: CropBox[] = [];
  for (let r = 0; r < nh; r++)
    for (let c = 0; c < nw; c++) {
      const x = cw * c;
      const y = ch * r;
      out.push({ x, y, width: Math.min(cw, width - x), height: Math.min(ch, height - y) });
    }
  return out;
}
