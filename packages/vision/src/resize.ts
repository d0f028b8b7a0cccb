// PIL's resampling (Pillow src/libImaging/Resample.c, ImagingResample) for 8-bit RGB, bilinear
// filter: the resize HF's slow Gemma3 image processor does (`PIL.Image.resize(size, BILINEAR)`).
// Two separable passes, horizontal first over the rows the vertical pass needs; the triangle
// filter's support is scaled by the downscale factor (antialiasing when shrinking); coefficients
// are normalized per output pixel, then fixed-point with 22 fraction bits, and each pass rounds
// and clips to uint8, as Pillow does for "RGB" images. A port, so the output is bit-identical.

/** A rectangle of an 8-bit RGB image: the whole image or a Pan & Scan crop, without a copy. */
export interface RgbView {
  /** data: [rows, stride, 3] uint8 (HWC, RGB) */
  data: Uint8Array;
  /** Pixels per row of `data`. */
  stride: number;
  /** The rectangle: left, top, width, height, in pixels. */
  x: number;
  y: number;
  width: number;
  height: number;
}

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);

/** Pillow's bilinear_filter (support 1). */
function bilinear(x: number): number {
  if (x < 0) x = -x;
  return x < 1 ? 1 - x : 0;
}

interface Coeffs {
  /** Taps per output pixel. */
  ksize: number;
  /** bounds: [outSize, 2] int (first input index, tap count) */
  bounds: Int32Array;
  /** kk: [outSize, ksize] fixed-point (PRECISION_BITS) weights */
  kk: Int32Array;
}

/** Pillow precompute_coeffs + normalize_coeffs_8bpc, for an input span [0, inSize). */
function precomputeCoeffs(inSize: number, outSize: number): Coeffs {
  const support0 = 1; // bilinear
  const scale = inSize / outSize;
  const filterscale = scale < 1 ? 1 : scale;
  const support = support0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  const ss = 1 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    let ww = 0;
    // (int)(v + 0.5): C truncation toward zero.
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    for (let x = 0; x < xmax; x++) {
      const w = bilinear((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0 ? k[x]! / ww : k[x]!;
      // normalize_coeffs_8bpc: (int)(±0.5 + v · 2^22)
      kk[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

/** clip8: the accumulator's integer part, clipped to 0..255. */
function clip8(ss: number): number {
  const v = Math.floor(ss / ONE);
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * Resizes an 8-bit RGB rectangle to outWidth × outHeight with Pillow's BILINEAR resampling
 * (Image.resize(size, Image.BILINEAR), box = the whole rectangle, no reducing_gap).
 * @returns [outHeight, outWidth, 3] uint8 (HWC, RGB)
 */
export function resizeBilinearPil(src: RgbView, outWidth: number, outHeight: number): Uint8Array {
  const { data, stride, x: x0, y: y0, width: inW, height: inH } = src;
  if (!(Number.isInteger(outWidth) && Number.isInteger(outHeight) && outWidth > 0 && outHeight > 0))
    throw new RangeError(`resizeBilinearPil: bad output size ${outWidth}x${outHeight}`);
  if (
    !(inW > 0 && inH > 0 && x0 >= 0 && y0 >= 0 && x0 + inW <= stride) ||
    (y0 + inH) * stride * 3 > data.length
  )
    throw new RangeError(
      `resizeBilinearPil: rectangle ${inW}x${inH}+${x0}+${y0} outside the image`,
    );

  const needH = outWidth !== inW;
  const needV = outHeight !== inH;
  const vert = precomputeCoeffs(inH, outHeight);
  // Rows the vertical pass reads (ImagingResampleInner's ybox_first / ybox_last).
  const yFirst = needV ? vert.bounds[0]! : 0;
  const yLast = needV ? vert.bounds[outHeight * 2 - 2]! + vert.bounds[outHeight * 2 - 1]! : inH;

  // Horizontal pass: rows yFirst..yLast → tmp [yLast − yFirst, outWidth, 3].
  let tmp: Uint8Array;
  let tmpStride: number;
  let tmpY0: number;
  if (needH) {
    const { ksize, bounds, kk } = precomputeCoeffs(inW, outWidth);
    const rows = yLast - yFirst;
    tmp = new Uint8Array(rows * outWidth * 3);
    for (let yy = 0; yy < rows; yy++) {
      const rowIn = ((y0 + yFirst + yy) * stride + x0) * 3;
      const rowOut = yy * outWidth * 3;
      for (let xx = 0; xx < outWidth; xx++) {
        const xmin = bounds[xx * 2]!;
        const xmax = bounds[xx * 2 + 1]!;
        const kb = xx * ksize;
        let s0 = HALF;
        let s1 = HALF;
        let s2 = HALF;
        let p = rowIn + xmin * 3;
        for (let x = 0; x < xmax; x++, p += 3) {
          const w = kk[kb + x]!;
          s0 += data[p]! * w;
          s1 += data[p + 1]! * w;
          s2 += data[p + 2]! * w;
        }
        const o = rowOut + xx * 3;
        tmp[o] = clip8(s0);
        tmp[o + 1] = clip8(s1);
        tmp[o + 2] = clip8(s2);
      }
    }
    tmpStride = outWidth;
    tmpY0 = -yFirst; // tmp row r holds input row yFirst + r
  } else {
    tmp = data;
    tmpStride = stride;
    tmpY0 = y0;
  }
  const tmpX0 = needH ? 0 : x0;

  const out = new Uint8Array(outHeight * outWidth * 3);
  if (!needV) {
    // Copy the (already resized) rows.
    for (let y = 0; y < outHeight; y++) {
      const from = ((tmpY0 + y + (needH ? yFirst : 0)) * tmpStride + tmpX0) * 3;
      out.set(tmp.subarray(from, from + outWidth * 3), y * outWidth * 3);
    }
    return out;
  }
  const { ksize, bounds, kk } = vert;
  for (let yy = 0; yy < outHeight; yy++) {
    const ymin = bounds[yy * 2]!;
    const ymax = bounds[yy * 2 + 1]!;
    const kb = yy * ksize;
    const rowOut = yy * outWidth * 3;
    for (let xx = 0; xx < outWidth; xx++) {
      let s0 = HALF;
      let s1 = HALF;
      let s2 = HALF;
      let p = ((tmpY0 + ymin) * tmpStride + tmpX0 + xx) * 3;
      const step = tmpStride * 3;
      for (let y = 0; y < ymax; y++, p += step) {
        const w = kk[kb + y]!;
        s0 += tmp[p]! * w;
        s1 += tmp[p + 1]! * w;
        s2 += tmp[p + 2]! * w;
      }
      const o = rowOut + xx * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return out;
}
