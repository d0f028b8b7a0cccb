// Pan & Scan (image_processing_gemma3.py `pan_and_scan`): the crop count and boxes live in
// @gemma3/tokenizer (image_tokens.ts), which needs them for the prompt text from the image size
// alone; here they become views into the decoded pixels, in HF's order.
import { panAndScanCrops, type CropBox, type PanAndScanOptions } from "@gemma3/tokenizer";
import type { DecodedImage } from "./decode.js";
import type { RgbView } from "./resize.js";

export { panAndScanCrops, type CropBox, type PanAndScanOptions };

/** HF's values when preprocessor_config.json leaves them null (Gemma3ProcessorKwargs defaults). */
export const PAN_AND_SCAN_DEFAULTS: Readonly<Required<PanAndScanOptions>> = Object.freeze({
  minCropSize: 256,
  maxNumCrops: 4,
  minRatioToActivate: 1.2,
});

/**
 * The images the processor resizes for one input image: the whole image, then its Pan & Scan
 * crops row-major (HF: `[image] + pas_images`). No crops when `opts` is undefined (P&S off).
 */
export function panAndScanViews(
  image: DecodedImage,
  opts?: PanAndScanOptions,
): { views: RgbView[]; crops: CropBox[] } {
  const whole: RgbView = {
    data: image.data,
    stride: image.width,
    x: 0,
    y: 0,
    width: image.width,
    height: image.height,
  };
  const crops = opts ? panAndScanCrops(image.width, image.height, opts) : [];
  return {
    views: [
      whole,
      ...crops.map((c) => ({ ...whole, x: c.x, y: c.y, width: c.width, height: c.height })),
    ],
    crops,
  };
}
