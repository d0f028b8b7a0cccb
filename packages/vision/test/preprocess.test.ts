// The PIL resize port against a plain float64 reference of the same filter (awkward sizes,
// up and down, crop views), and preprocess(): layout, Pan & Scan order, normalization values,
// preprocessor_config.json. Bit-exactness against PIL itself is in goldens.test.ts.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  GEMMA3_IMAGE_SIZE,
  ImageError,
  imageProcessorOptions,
  panAndScanCrops,
  preprocess,
  resizeBilinearPil,
  type DecodedImage,
  type RgbView,
} from "../src/index.js";
import { FIXTURES } from "./helpers.js";

function mulberry32(a: number): () => number {
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function randomImage(width: number, height: number, seed: number): DecodedImage {
  const r = mulberry32(seed);
  const data = Uint8Array.from({ length: width * height * 3 }, () => Math.floor(r() * 256));
  return { data, width, height, format: "png" };
}
const whole = (img: DecodedImage): RgbView => ({
  data: img.data,
  stride: img.width,
  x: 0,
  y: 0,
  width: img.width,
  height: img.height,
});

/**
 * Reference: the triangle filter with support max(1, in/out), weights normalized per output
 * pixel, separable, all in float64 with no intermediate rounding (Pillow rounds to uint8 after
 * the horizontal pass and keeps 22-bit weights: at most 1 level apart).
 * @returns [outH, outW, 3] float64
 */
function referenceResize(v: RgbView, outW: number, outH: number): Float64Array {
  const weights = (inSize: number, outSize: number) => {
    const scale = inSize / outSize;
    const fs = Math.max(1, scale);
    return Array.from({ length: outSize }, (_, o) => {
      const center = (o + 0.5) * scale;
      const w: [number, number][] = [];
      for (let i = 0; i < inSize; i++) {
        const t = Math.abs((i + 0.5 - center) / fs);
        if (t < 1) w.push([i, 1 - t]);
      }
      const sum = w.reduce((s, [, x]) => s + x, 0);
      return w.map(([i, x]) => [i, x / sum] as [number, number]);
    });
  };
  const wx = weights(v.width, outW);
  const wy = weights(v.height, outH);
  const out = new Float64Array(outW * outH * 3);
  for (let y = 0; y < outH; y++)
    for (let x = 0; x < outW; x++)
      for (let c = 0; c < 3; c++) {
        let s = 0;
        for (const [iy, ky] of wy[y]!)
          for (const [ix, kx] of wx[x]!)
            s += ky * kx * v.data[((v.y + iy) * v.stride + v.x + ix) * 3 + c]!;
        out[(y * outW + x) * 3 + c] = s;
      }
  return out;
}

describe("resizeBilinearPil", () => {
  it("matches the float reference within 1 level over awkward sizes (down, up, mixed)", () => {
    const cases: [number, number, number, number][] = [
      [99, 19, 7, 5],
      [19, 99, 40, 13],
      [1, 1, 17, 9],
      [3, 5, 64, 64],
      [64, 48, 64, 31], // width unchanged: vertical pass only
      [37, 29, 11, 29], // height unchanged: horizontal pass only
      [989, 7, 33, 3],
      [5, 3, 5, 3], // identity
    ];
    for (const [w, h, ow, oh] of cases) {
      const img = randomImage(w, h, w * 1000 + h);
      const ours = resizeBilinearPil(whole(img), ow, oh);
      const ref = referenceResize(whole(img), ow, oh);
      let max = 0;
      for (let i = 0; i < ref.length; i++) max = Math.max(max, Math.abs(ours[i]! - ref[i]!));
      expect(max, `${w}x${h} -> ${ow}x${oh}`).toBeLessThanOrEqual(1);
      if (w === ow && h === oh) expect(ours).toEqual(img.data);
    }
  });

  it("a crop view resizes exactly as the same pixels copied out", () => {
    const img = randomImage(61, 47, 7);
    const crop = { x: 13, y: 9, width: 30, height: 21 };
    const copy = new Uint8Array(crop.width * crop.height * 3);
    for (let y = 0; y < crop.height; y++)
      copy.set(
        img.data.subarray(
          ((crop.y + y) * 61 + crop.x) * 3,
          ((crop.y + y) * 61 + crop.x + crop.width) * 3,
        ),
        y * crop.width * 3,
      );
    const fromView = resizeBilinearPil({ ...whole(img), ...crop }, 17, 40);
    const fromCopy = resizeBilinearPil(
      { data: copy, stride: crop.width, x: 0, y: 0, width: crop.width, height: crop.height },
      17,
      40,
    );
    expect(fromView).toEqual(fromCopy);
  });

  it("a constant image stays constant; bad sizes and rectangles throw", () => {
    const img: DecodedImage = {
      data: new Uint8Array(30 * 20 * 3).fill(77),
      width: 30,
      height: 20,
      format: "png",
    };
    expect(resizeBilinearPil(whole(img), 896, 7).every((v) => v === 77)).toBe(true);
    expect(() => resizeBilinearPil(whole(img), 0, 5)).toThrow(RangeError);
    expect(() => resizeBilinearPil({ ...whole(img), x: 25, width: 10 }, 5, 5)).toThrow(RangeError);
  });
});

describe("preprocess", () => {
  it("[1 + crops, 3, S, S]: whole image first, then the Pan & Scan crops row-major", () => {
    const img = randomImage(800, 300, 3); // 3 crops of 267 × 300
    const S = 32;
    const p = preprocess(img, { panAndScan: true, imageSize: S });
    expect(p.numCrops).toBe(3);
    expect(p.crops).toEqual(panAndScanCrops(800, 300));
    expect(p.crops.map((c) => c.x)).toEqual([0, 267, 534]);
    expect(p.pixelValues.length).toBe(4 * 3 * S * S);
    const off = preprocess(img, { imageSize: S });
    expect(off.numCrops).toBe(0);
    expect(off.pixelValues).toEqual(p.pixelValues.subarray(0, 3 * S * S));
    // Crop 2 is the preprocessing of those pixels on their own.
    const c = p.crops[2]!;
    const sub = new Uint8Array(c.width * c.height * 3);
    for (let y = 0; y < c.height; y++)
      sub.set(
        img.data.subarray((y * 800 + c.x) * 3, (y * 800 + c.x + c.width) * 3),
        y * c.width * 3,
      );
    const alone = preprocess(
      { data: sub, width: c.width, height: c.height, format: "png" },
      { imageSize: S },
    );
    expect(p.pixelValues.subarray(3 * 3 * S * S)).toEqual(alone.pixelValues);
  });

  it("values: (v/255 − 0.5)/0.5 in float32, channels first", () => {
    // 2 × 1 → S = 2 is the identity in x and a 2× upscale in y.
    const img: DecodedImage = {
      data: new Uint8Array([0, 128, 255, 1, 2, 3]),
      width: 2,
      height: 1,
      format: "png",
    };
    const p = preprocess(img, { imageSize: 2 });
    const f = (v: number) => Math.fround(Math.fround(Math.fround(v / 255) - 0.5) / 0.5);
    // Channel planes [3, 2, 2]: row 0 and row 1 equal (upscaled from one row).
    expect([...p.pixelValues]).toEqual([0, 1, 0, 1, 128, 2, 128, 2, 255, 3, 255, 3].map(f));
    expect(f(0)).toBe(-1);
    expect(f(255)).toBe(1);
  });

  it("P&S off by default, on per request, not triggered below the ratio or under 256 px", () => {
    expect(preprocess(randomImage(1000, 900, 1), { panAndScan: true, imageSize: 8 }).numCrops).toBe(
      0,
    );
    expect(preprocess(randomImage(600, 200, 1), { panAndScan: true, imageSize: 8 }).numCrops).toBe(
      0,
    ); // 2 crops of 300 × 200: under 256
    expect(preprocess(randomImage(1600, 300, 1), { imageSize: 8 }).numCrops).toBe(0);
    expect(preprocess(randomImage(1600, 300, 1), { panAndScan: true, imageSize: 8 }).numCrops).toBe(
      4,
    );
    expect(
      preprocess(randomImage(1600, 300, 1), { panAndScan: { maxNumCrops: 2 }, imageSize: 8 })
        .numCrops,
    ).toBe(2);
    expect(() => preprocess(randomImage(4, 4, 1), { imageSize: 0 })).toThrow(ImageError);
    expect(() =>
      preprocess({ data: new Uint8Array(5), width: 4, height: 4, format: "png" }),
    ).toThrow(/expected 4x4x3 RGB bytes/);
  });

  it("imageProcessorOptions reads the published preprocessor_config.json (nulls → HF defaults)", () => {
    const cfg = JSON.parse(readFileSync(join(FIXTURES, "preprocessor_config.json"), "utf8"));
    const o = imageProcessorOptions(cfg);
    expect(o).toEqual({
      imageSize: 896,
      rescaleFactor: 0.00392156862745098,
      imageMean: [0.5, 0.5, 0.5],
      imageStd: [0.5, 0.5, 0.5],
    });
    expect(GEMMA3_IMAGE_SIZE).toBe(896);
    const on = imageProcessorOptions({
      ...cfg,
      do_pan_and_scan: true,
      pan_and_scan_max_num_crops: 3,
    });
    expect(on.panAndScan).toBe(true);
    expect(on.panAndScanParams).toEqual({ maxNumCrops: 3 });
    expect(preprocess(randomImage(1600, 300, 1), { ...on, imageSize: 8 }).numCrops).toBe(3);
    expect(() => imageProcessorOptions({ resample: 3 })).toThrow(/only 2 \(bilinear\)/);
    expect(() => imageProcessorOptions({ size: { height: 896, width: 448 } })).toThrow(/size/);
    expect(() => imageProcessorOptions({ do_resize: false })).toThrow(/do_resize/);
  });
});
