// Image decoding as transformers sees an image: `load_image` (image_utils.py) opens it with PIL,
// applies `ImageOps.exif_transpose`, then `convert("RGB")`; the Gemma 3 processor's
// `convert_to_rgb` (image_transforms.py) is also a plain `convert("RGB")`. So alpha is DROPPED,
// not composited on white (unlike Idefics2's convert_to_rgb), and PIL's mode rules decide the
// 8-bit values: palette → its colours (transparent entries keep theirs), 16-bit grayscale
// ("I;16") is CLIPPED at 255, other 16-bit samples keep their high byte, CMYK goes through PIL's
// naive cmyk2rgb. No ICC colour management (PIL does none).
//
// Pixels come from sharp (libvips) with every colour conversion turned off, so the bytes are the
// stored samples; the PIL rules above are applied here. Limits are checked on the header before
// a pixel is decoded.
import { readFile, stat } from "node:fs/promises";
import sharp from "sharp";
import type { Metadata, OutputInfo } from "sharp";
import { ImageError } from "./errors.js";

export type ImageFormat = "png" | "jpeg" | "webp" | "gif";

/** What any image source may be: a file path, a `data:image/…;base64,` URL, or the file's bytes. */
export type ImageSource = string | Uint8Array;

export interface DecodeLimits {
  /** Largest encoded size in bytes (file, buffer, or decoded data URL). Default 32 MiB. */
  maxBytes?: number;
  /** Largest width × height, read from the header before decoding. Default 50 M pixels. */
  maxPixels?: number;
}

export const DEFAULT_DECODE_LIMITS: Readonly<Required<DecodeLimits>> = Object.freeze({
  maxBytes: 32 * 1024 * 1024,
  maxPixels: 50_000_000,
});

/** Header facts, sizes as HF sees them (after EXIF orientation). */
export interface ImageInfo {
  format: ImageFormat;
  /** Width after EXIF orientation (what HF's exif_transpose gives). */
  width: number;
  height: number;
  /** EXIF orientation 1–8 (1 when absent). */
  orientation: number;
  /** Encoded size in bytes. */
  bytes: number;
}

/** An 8-bit RGB image. */
export interface DecodedImage {
  /** data: [height, width, 3] uint8, row-major (HWC), RGB. */
  data: Uint8Array;
  width: number;
  height: number;
  format: ImageFormat;
}

const MIME: Record<string, ImageFormat> = {
  "image/png": "png",
  "image/jpeg": "jpeg",
  "image/webp": "webp",
  "image/gif": "gif",
};

/** The format from the first bytes (magic numbers), or undefined for anything else. */
export function sniffFormat(b: Uint8Array): ImageFormat | undefined {
  const ascii = (o: number, s: string) =>
    b.length >= o + s.length && [...s].every((c, i) => b[o + i] === c.charCodeAt(0));
  if (ascii(0, "\x89PNG\r\n\x1a\n")) return "png";
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "jpeg";
  if (ascii(0, "GIF87a") || ascii(0, "GIF89a")) return "gif";
  if (ascii(0, "RIFF") && ascii(8, "WEBP")) return "webp";
  return undefined;
}

function limitsOf(l: DecodeLimits | undefined): Required<DecodeLimits> {
  const r = { ...DEFAULT_DECODE_LIMITS, ...l };
  for (const k of ["maxBytes", "maxPixels"] as const)
    if (!(Number.isSafeInteger(r[k]) && r[k] > 0))
      throw new ImageError("E_IMAGE_ARGUMENT", `limits.${k}: expected a positive integer`);
  return r;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Bytes of a `data:image/(png|jpeg|webp|gif);base64,…` URL. Strict: RFC 4648 alphabet with
 * padding, no whitespace; the MIME type must match the bytes.
 */
export function parseDataUrl(
  url: string,
  limits?: DecodeLimits,
): { mime: string; format: ImageFormat; bytes: Uint8Array } {
  const { maxBytes } = limitsOf(limits);
  const comma = url.indexOf(",");
  const head = comma < 0 ? "" : url.slice(0, comma);
  const m = /^data:([^;,]*)((?:;[^;,]*)*)$/i.exec(head);
  if (!m) throw new ImageError("E_IMAGE_DATA_URL", "data URL: expected data:<mime>;base64,<data>");
  const mime = m[1]!.toLowerCase();
  const format = MIME[mime];
  if (!format)
    throw new ImageError(
      "E_IMAGE_DATA_URL",
      `data URL: MIME type "${mime}" is not taken (image/png, image/jpeg, image/webp, image/gif)`,
    );
  if (!m[2]!.toLowerCase().split(";").includes("base64"))
    throw new ImageError("E_IMAGE_DATA_URL", "data URL: only base64 data is taken (;base64,)");
  const b64 = url.slice(comma + 1);
  // Checked before decoding: 4 characters carry 3 bytes.
  if (Math.floor(b64.length / 4) * 3 > maxBytes + 3)
    throw new ImageError(
      "E_IMAGE_TOO_LARGE",
      `data URL: about ${Math.floor(b64.length / 4) * 3} bytes, over the limit of ${maxBytes}`,
    );
  if (b64.length === 0) throw new ImageError("E_IMAGE_DATA_URL", "data URL: no data");
  if (b64.length % 4 !== 0 || !BASE64.test(b64))
    throw new ImageError(
      "E_IMAGE_DATA_URL",
      "data URL: invalid base64 (RFC 4648 alphabet, padded to a multiple of 4, no whitespace)",
    );
  const bytes = new Uint8Array(Buffer.from(b64, "base64"));
  if (bytes.length > maxBytes)
    throw new ImageError(
      "E_IMAGE_TOO_LARGE",
      `data URL: ${bytes.length} bytes, over the limit of ${maxBytes}`,
    );
  const actual = sniffFormat(bytes);
  if (actual !== format)
    throw new ImageError(
      "E_IMAGE_DATA_URL",
      `data URL: declared ${mime} but the data is ${actual ? `image/${actual}` : "not an image of a taken format"}`,
    );
  return { mime, format, bytes };
}

/** The encoded bytes of a source, within maxBytes (a file's size is checked before reading). */
export async function readImageSource(
  src: ImageSource,
  limits?: DecodeLimits,
): Promise<Uint8Array> {
  const { maxBytes } = limitsOf(limits);
  let bytes: Uint8Array;
  if (typeof src === "string") {
    if (/^data:/i.test(src)) return parseDataUrl(src, limits).bytes;
    let size: number;
    try {
      const s = await stat(src);
      if (!s.isFile()) throw new Error("not a regular file");
      size = s.size;
    } catch (e) {
      throw new ImageError("E_IMAGE_READ", `${src}: ${(e as Error).message}`, { cause: e });
    }
    if (size > maxBytes)
      throw new ImageError(
        "E_IMAGE_TOO_LARGE",
        `${src}: ${size} bytes, over the limit of ${maxBytes}`,
      );
    try {
      bytes = await readFile(src);
    } catch (e) {
      throw new ImageError("E_IMAGE_READ", `${src}: ${(e as Error).message}`, { cause: e });
    }
  } else if (src instanceof Uint8Array) bytes = src;
  else
    throw new ImageError(
      "E_IMAGE_ARGUMENT",
      "image: expected a file path, a data URL, or a Buffer/Uint8Array of the file",
    );
  if (bytes.length > maxBytes)
    throw new ImageError(
      "E_IMAGE_TOO_LARGE",
      `image: ${bytes.length} bytes, over the limit of ${maxBytes}`,
    );
  return bytes;
}

interface Header extends ImageInfo {
  meta: Metadata;
  /** PNG IHDR colour type and bit depth (PIL's mode depends on them). */
  png?: { colorType: number; bitDepth: number };
}

/** libvips' message, its repeated lines once: "VipsJpeg: premature end of JPEG image; …". */
function vipsMessage(e: unknown): string {
  const lines = String((e as Error)?.message ?? e)
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  return [...new Set(lines)].join("; ");
}

async function header(bytes: Uint8Array, limits: Required<DecodeLimits>): Promise<Header> {
  if (bytes.length === 0) throw new ImageError("E_IMAGE_CORRUPT", "image: 0 bytes");
  const format = sniffFormat(bytes);
  if (!format) {
    const head = Buffer.from(bytes.subarray(0, 8)).toString("hex");
    throw new ImageError(
      "E_IMAGE_FORMAT",
      `image: not a PNG, JPEG, WebP or GIF file (first bytes ${head})`,
    );
  }
  let meta: Metadata;
  try {
    // Reads the header only; the pixel limit is enforced below, before any decoding.
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (e) {
    throw new ImageError("E_IMAGE_CORRUPT", `${format}: unreadable header (${vipsMessage(e)})`, {
      cause: e,
    });
  }
  if (meta.format !== format)
    throw new ImageError(
      "E_IMAGE_FORMAT",
      `image: looks like ${format} but decodes as ${meta.format}`,
    );
  const w = meta.width ?? 0;
  const h = meta.height ?? 0;
  if (!(w > 0 && h > 0)) throw new ImageError("E_IMAGE_CORRUPT", `${format}: bad size ${w}x${h}`);
  if (format === "gif" && bytes.length >= 10) {
    // PIL's image is the logical screen; libvips may size it by the first frame instead.
    const sw = bytes[6]! | (bytes[7]! << 8);
    const sh = bytes[8]! | (bytes[9]! << 8);
    if (sw * sh > limits.maxPixels)
      throw new ImageError(
        "E_IMAGE_TOO_LARGE",
        `gif: ${sw}x${sh} = ${sw * sh} pixels, over the limit of ${limits.maxPixels}`,
      );
    if (sw !== w || sh !== h)
      throw new ImageError(
        "E_IMAGE_FORMAT",
        `gif: logical screen ${sw}x${sh} differs from the first frame's ${w}x${h} (not supported)`,
      );
  }
  if (w * h > limits.maxPixels)
    throw new ImageError(
      "E_IMAGE_TOO_LARGE",
      `${format}: ${w}x${h} = ${w * h} pixels, over the limit of ${limits.maxPixels}`,
    );
  const orientation = meta.orientation ?? 1;
  const swap = orientation >= 5 && orientation <= 8;
  const out: Header = {
    format,
    width: swap ? h : w,
    height: swap ? w : h,
    orientation,
    bytes: bytes.length,
    meta,
  };
  if (format === "png" && bytes.length >= 26)
    out.png = { colorType: bytes[25]!, bitDepth: bytes[24]! };
  return out;
}

/** Format, size (after EXIF orientation) and byte count from the header, without decoding pixels. */
export async function probeImage(src: ImageSource, limits?: DecodeLimits): Promise<ImageInfo> {
  const l = limitsOf(limits);
  const { format, width, height, orientation, bytes } = await header(
    await readImageSource(src, l),
    l,
  );
  return { format, width, height, orientation, bytes };
}

/**
 * For a GIF whose first frame has a transparent index, that palette entry's colour: PIL keeps
 * it for transparent pixels ("P" → "RGB"), libvips decodes them as (0, 0, 0, alpha 0).
 */
export function gifTransparentColour(b: Uint8Array): [number, number, number] | undefined {
  if (b.length < 13) return undefined;
  let o = 13;
  let palette: Uint8Array | undefined;
  if (b[10]! & 0x80) {
    const n = 3 << ((b[10]! & 7) + 1);
    palette = b.subarray(o, o + n);
    o += n;
  }
  let transparent: number | undefined;
  while (o < b.length) {
    const block = b[o]!;
    if (block === 0x21) {
      const label = b[o + 1];
      if (label === 0xf9 && o + 6 < b.length && b[o + 2] === 4)
        transparent = b[o + 3]! & 1 ? b[o + 6] : undefined;
      o += 2;
      while (o < b.length && b[o] !== 0) o += b[o]! + 1; // data sub-blocks
      o++;
    } else if (block === 0x2c) {
      if (o + 10 > b.length) return undefined;
      const packed = b[o + 9]!;
      if (packed & 0x80) palette = b.subarray(o + 10, o + 10 + (3 << ((packed & 7) + 1)));
      if (transparent === undefined || !palette || 3 * transparent + 2 >= palette.length)
        return undefined;
      return [
        palette[3 * transparent]!,
        palette[3 * transparent + 1]!,
        palette[3 * transparent + 2]!,
      ];
    } else return undefined;
  }
  return undefined;
}

/** PIL's cmyk2rgb: R = (255 − K) − C·(255 − K)/255 with its MULDIV255 rounding. */
function cmykToRgb(c: number, k: number): number {
  const nk = 255 - k;
  const t = c * nk + 128;
  return Math.max(0, Math.min(255, nk - (((t >> 8) + t) >> 8)));
}

/**
 * Decodes an image to 8-bit RGB exactly as HF's load_image + convert("RGB") sees it (see the
 * file comment). Errors are ImageError with a code (E_IMAGE_FORMAT, E_IMAGE_TOO_LARGE,
 * E_IMAGE_CORRUPT, E_IMAGE_DATA_URL, E_IMAGE_READ, E_IMAGE_ARGUMENT).
 */
export async function decode(src: ImageSource, limits?: DecodeLimits): Promise<DecodedImage> {
  const l = limitsOf(limits);
  const bytes = await readImageSource(src, l);
  const h = await header(bytes, l);
  const space = h.meta.space ?? "srgb";
  if (!["srgb", "b-w", "grey16", "rgb16", "cmyk"].includes(space))
    throw new ImageError("E_IMAGE_FORMAT", `${h.format}: colour space ${space} is not supported`);
  const sixteen = h.meta.depth === "ushort";
  let data: Buffer;
  let info: OutputInfo;
  try {
    // pipelineColourspace + toColourspace = the stored space: libvips converts nothing;
    // ignoreIcc: no colour management, as PIL. failOn "error": truncated data is an error, as in
    // PIL (LOAD_TRUNCATED_IMAGES off).
    ({ data, info } = await sharp(bytes, {
      limitInputPixels: l.maxPixels,
      failOn: "error",
      ignoreIcc: true,
      autoOrient: true,
      pages: 1,
      page: 0,
    })
      .pipelineColourspace(space)
      .toColourspace(space)
      .raw({ depth: sixteen ? "ushort" : "uchar" })
      .toBuffer({ resolveWithObject: true }));
  } catch (e) {
    const msg = vipsMessage(e);
    if (/pixel limit/i.test(msg))
      throw new ImageError("E_IMAGE_TOO_LARGE", `${h.format}: ${msg}`, { cause: e });
    throw new ImageError("E_IMAGE_CORRUPT", `${h.format}: cannot decode (${msg})`, { cause: e });
  }
  const { width, height, channels } = info;
  const n = width * height;
  const out = new Uint8Array(n * 3);
  const u16 = sixteen ? new Uint16Array(data.buffer, data.byteOffset, data.length >> 1) : undefined;
  const px = sixteen ? u16! : data;
  if ((sixteen ? u16!.length : data.length) !== n * channels)
    throw new ImageError("E_IMAGE_CORRUPT", `${h.format}: decoder returned a short buffer`);
  // 16-bit gray without alpha is PIL mode "I;16": convert("RGB") clips (I16_RGB in Convert.c);
  // every other 16-bit mode is unpacked to 8 bits by keeping the high byte.
  const clip16 = sixteen && h.png?.colorType === 0;
  const to8 = sixteen
    ? clip16
      ? (v: number) => (v > 255 ? 255 : v)
      : (v: number) => v >> 8
    : (v: number) => v;
  if (space === "cmyk") {
    if (channels < 4)
      throw new ImageError("E_IMAGE_CORRUPT", `${h.format}: CMYK with ${channels} bands`);
    for (let i = 0; i < n; i++) {
      const k = to8(px[i * channels + 3]!);
      for (let c = 0; c < 3; c++) out[i * 3 + c] = cmykToRgb(to8(px[i * channels + c]!), k);
    }
  } else if (channels <= 2) {
    for (let i = 0; i < n; i++) {
      const v = to8(px[i * channels]!);
      out[i * 3] = v;
      out[i * 3 + 1] = v;
      out[i * 3 + 2] = v;
    }
  } else {
    for (let i = 0; i < n; i++)
      for (let c = 0; c < 3; c++) out[i * 3 + c] = to8(px[i * channels + c]!);
  }
  if (h.format === "gif" && (channels === 2 || channels === 4)) {
    const rgb = gifTransparentColour(bytes);
    const a = channels - 1;
    if (rgb) for (let i = 0; i < n; i++) if (px[i * channels + a] === 0) out.set(rgb, i * 3);
  }
  return { data: out, width, height, format: h.format };
}
