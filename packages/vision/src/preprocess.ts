// Gemma 3 image preprocessing, as HF's slow (PIL) Gemma3ImageProcessor
// (image_processing_gemma3.py; Gemma3ImageProcessorPil in transformers ≥ 5): optional Pan & Scan
// crops, then for the image and each crop: resize to S × S ignoring aspect (PIL bilinear),
// × rescale_factor (1/255), (x − mean) / std (0.5, 0.5), channels first. float32 throughout as
// numpy does it: rescale in float64 then cast, normalize in float32.
import { decode, type DecodeLimits, type ImageSource, type DecodedImage } from "./decode.js";
import { ImageError } from "./errors.js";
import {
  PAN_AND_SCAN_DEFAULTS,
  panAndScanViews,
  type CropBox,
  type PanAndScanOptions,
} from "./pan_and_scan.js";
import { resizeBilinearPil } from "./resize.js";

export interface PreprocessOptions {
  /** Pan & Scan: off by default; true = on with `panAndScanParams` (else HF defaults: 256 px,
   *  4 crops, ratio 1.2); an object = on with those parameters. */
  panAndScan?: boolean | PanAndScanOptions;
  /** The parameters `panAndScan: true` uses (preprocessor_config.json pan_and_scan_*). */
  panAndScanParams?: PanAndScanOptions;
  /** Output side S: preprocessor_config.json size (896 for Gemma 3). Default 896. */
  imageSize?: number;
  /** rescale_factor, default 1/255. */
  rescaleFactor?: number;
  /** image_mean per channel (R, G, B), default 0.5 each. */
  imageMean?: readonly [number, number, number];
  /** image_std per channel, default 0.5 each. */
  imageStd?: readonly [number, number, number];
}

export interface PreprocessedImage {
  /** pixelValues: [1 + numCrops, 3, imageSize, imageSize] float32; the whole image first, then
   *  the crops row-major (HF's order). */
  pixelValues: Float32Array;
  /** Pan & Scan crops (0 when off or not triggered): the prompt gets one image slot per crop. */
  numCrops: number;
  /** The crops' rectangles in the decoded image. */
  crops: CropBox[];
  imageSize: number;
  /** The decoded image's size (after EXIF orientation). */
  width: number;
  height: number;
}

export const GEMMA3_IMAGE_SIZE = 896;

function resolvePanAndScan(opts: PreprocessOptions): PanAndScanOptions | undefined {
  const p = opts.panAndScan;
  if (!p) return undefined;
  const o = p === true ? (opts.panAndScanParams ?? {}) : p;
  const r = { ...PAN_AND_SCAN_DEFAULTS, ...o };
  if (!(Number.isInteger(r.minCropSize) && r.minCropSize > 0))
    throw new ImageError("E_IMAGE_ARGUMENT", "panAndScan.minCropSize: expected an integer > 0");
  if (!(Number.isInteger(r.maxNumCrops) && r.maxNumCrops > 0))
    throw new ImageError("E_IMAGE_ARGUMENT", "panAndScan.maxNumCrops: expected an integer > 0");
  if (!(r.minRatioToActivate > 0))
    throw new ImageError(
      "E_IMAGE_ARGUMENT",
      "panAndScan.minRatioToActivate: expected a number > 0",
    );
  return r;
}

/**
 * Per channel, the float32 value of each uint8 level: HF rescale (`image.astype(float64) *
 * scale`, cast to float32) then normalize (`(x − mean) / std` in float32).
 * @returns lut: [3, 256] float32
 */
function levelTable(opts: PreprocessOptions): Float32Array {
  const f = opts.rescaleFactor ?? 1 / 255;
  const mean = opts.imageMean ?? [0.5, 0.5, 0.5];
  const std = opts.imageStd ?? [0.5, 0.5, 0.5];
  const lut = new Float32Array(3 * 256);
  for (let c = 0; c < 3; c++) {
    const m = Math.fround(mean[c]!);
    const s = Math.fround(std[c]!);
    if (!(Number.isFinite(m) && Number.isFinite(s) && s !== 0))
      throw new ImageError("E_IMAGE_ARGUMENT", `imageMean/imageStd[${c}]: bad value`);
    for (let v = 0; v < 256; v++) {
      const x = Math.fround(v * f);
      lut[c * 256 + v] = Math.fround(Math.fround(x - m) / s);
    }
  }
  return lut;
}

/**
 * Preprocesses a decoded image into the vision tower's input, as HF Gemma3ImageProcessor (slow,
 * PIL) does: [image, ...Pan & Scan crops], each resized to S × S (PIL bilinear), rescaled and
 * normalized, CHW.
 */
export function preprocess(image: DecodedImage, opts: PreprocessOptions = {}): PreprocessedImage {
  const S = opts.imageSize ?? GEMMA3_IMAGE_SIZE;
  if (!(Number.isInteger(S) && S > 0 && S <= 8192))
    throw new ImageError("E_IMAGE_ARGUMENT", `imageSize: expected an integer in 1..8192, got ${S}`);
  const { data, width, height } = image;
  if (!(width > 0 && height > 0 && data.length === width * height * 3))
    throw new ImageError(
      "E_IMAGE_ARGUMENT",
      `preprocess: expected ${width}x${height}x3 RGB bytes, got ${data.length}`,
    );
  const lut = levelTable(opts);
  const { views, crops } = panAndScanViews(image, resolvePanAndScan(opts));
  const plane = S * S;
  const pixelValues = new Float32Array(views.length * 3 * plane);
  views.forEach((view, i) => {
    const rgb = resizeBilinearPil(view, S, S); // [S, S, 3]
    const base = i * 3 * plane;
    for (let p = 0; p < plane; p++) {
      pixelValues[base + p] = lut[rgb[p * 3]!]!;
      pixelValues[base + plane + p] = lut[256 + rgb[p * 3 + 1]!]!;
      pixelValues[base + 2 * plane + p] = lut[512 + rgb[p * 3 + 2]!]!;
    }
  });
  return { pixelValues, numCrops: crops.length, crops, imageSize: S, width, height };
}

/** decode() then preprocess(): a path, data URL or bytes to pixel values. */
export async function loadImage(
  src: ImageSource,
  opts: PreprocessOptions & { limits?: DecodeLimits } = {},
): Promise<PreprocessedImage> {
  return preprocess(await decode(src, opts.limits), opts);
}

/**
 * PreprocessOptions from a checkpoint's preprocessor_config.json (HF names; nulls take HF's
 * defaults). Throws on settings this port does not implement (resample other than bilinear,
 * non-square size, resizing or rescaling turned off).
 */
export function imageProcessorOptions(cfg: Record<string, unknown> = {}): PreprocessOptions {
  const bad = (k: string, why: string): never => {
    throw new ImageError("E_IMAGE_ARGUMENT", `preprocessor_config.json: ${k} ${why}`);
  };
  const num = (k: string): number | undefined => {
    const v = cfg[k];
    if (v === null || v === undefined) return undefined;
    if (typeof v !== "number" || !Number.isFinite(v)) return bad(k, "must be a number");
    return v;
  };
  const triple = (k: string): [number, number, number] | undefined => {
    const v = cfg[k];
    if (v === null || v === undefined) return undefined;
    const a = typeof v === "number" ? [v, v, v] : v;
    if (!Array.isArray(a) || a.length !== 3 || !a.every((x) => typeof x === "number"))
      return bad(k, "must be a number or 3 numbers");
    return a as [number, number, number];
  };
  const resample = num("resample");
  if (resample !== undefined && resample !== 2)
    bad("resample", `= ${resample}: only 2 (bilinear) is implemented`);
  for (const k of ["do_resize", "do_rescale"])
    if (cfg[k] === false) bad(k, "= false is not supported");
  const o: PreprocessOptions = {};
  const size = cfg.size as { height?: unknown; width?: unknown } | null | undefined;
  if (size !== null && size !== undefined) {
    if (typeof size !== "object" || size.height !== size.width || !Number.isInteger(size.height))
      bad("size", "must be {height: S, width: S}");
    o.imageSize = size.height as number;
  }
  const rf = num("rescale_factor");
  if (rf !== undefined) o.rescaleFactor = rf;
  if (cfg.do_normalize === false) {
    o.imageMean = [0, 0, 0];
    o.imageStd = [1, 1, 1];
  } else {
    const mean = triple("image_mean");
    const std = triple("image_std");
    if (mean) o.imageMean = mean;
    if (std) o.imageStd = std;
  }
  const pas: PanAndScanOptions = {};
  const minCrop = num("pan_and_scan_min_crop_size");
  const maxCrops = num("pan_and_scan_max_num_crops");
  const ratio = num("pan_and_scan_min_ratio_to_activate");
  if (minCrop !== undefined) pas.minCropSize = minCrop;
  if (maxCrops !== undefined) pas.maxNumCrops = maxCrops;
  if (ratio !== undefined) pas.minRatioToActivate = ratio;
  if (Object.keys(pas).length > 0) o.panAndScanParams = pas;
  // do_pan_and_scan: null → off (the processor's default); a per-request choice overrides it.
  if (cfg.do_pan_and_scan === true) o.panAndScan = true;
  return o;
}
