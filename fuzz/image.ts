// Fuzz target: the image path of the server's chat endpoint: decode() from @gemma3/vision (header
// sniffing, sharp/libvips header read, byte and pixel limits, PIL's RGB rules) on the bytes of a
// mutated PNG / JPEG / WebP / GIF, then preprocess() (resize, Pan & Scan) of what decoded, at a
// small output size and a 4 M pixel limit (FUZZ_LIMITS) so the fuzzer spends its time in the
// decoders rather than in filling the largest buffers the default limit allows.
// Acceptable errors: ImageError (E_IMAGE_* codes) only. Invariants: a decoded image is
// width × height × 3 bytes within the pixel limit; preprocess returns (1 + crops) planes.
// Memory here is libvips', outside the JS heap: the bound is the pixel limit (maxPixels × 3 bytes
// of output, plus libvips' working set), not the file size; the report gives the RSS high-water.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import sharp from "sharp";
import { decode, isImageError, preprocess } from "@gemma3/vision";
import { concat, havoc, normalise, type Outcome, type Rng, type Target } from "./engine.js";

const FIXTURES = join(
  fileURLToPath(new URL(".", import.meta.url)),
  ...(import.meta.url.includes("/fuzz/dist/") ? [".."] : []),
  "..",
  "packages/vision/test/fixtures/images",
);
const OUT_SIZE = 32;
/**
 * The fuzz run's pixel limit: 4 M instead of the 50 M default, so the run spends its time in the
 * header and decoder paths rather than filling 49 M-pixel buffers (~1–4 s each here, whatever the
 * file size; measured separately in docs/reliability.md). The limit check itself is the same code.
 */
export const FUZZ_LIMITS = { maxPixels: 4_000_000 };

const CRC = new Int32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c;
});
function crc32(b: Uint8Array): number {
  let c = -1;
  for (let i = 0; i < b.length; i++) c = CRC[(c ^ b[i]!) & 255]! ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

/** Rewrites every PNG chunk CRC so a mutation reaches the decoder instead of the CRC check. */
function fixPngCrcs(b: Uint8Array): void {
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  let p = 8;
  while (p + 12 <= b.length) {
    const len = dv.getUint32(p);
    if (p + 12 + len > b.length) return;
    dv.setUint32(p + 8 + len, crc32(b.subarray(p + 4, p + 8 + len)));
    p += 12 + len;
  }
}

/** (offset, width, big-endian) of the size and layout fields a decoder trusts. */
function hotFields(b: Uint8Array): [number, number, boolean][] {
  const out: [number, number, boolean][] = [];
  const fmt = sniff(b);
  if (fmt === "png") {
    let p = 8;
    const dv = new DataView(b.buffer, b.byteOffset, b.length);
    while (p + 12 <= b.length) {
      const len = dv.getUint32(p);
      out.push([p, 4, true]); // chunk length
      const type = String.fromCharCode(...b.subarray(p + 4, p + 8));
      if (type === "IHDR" && len >= 13)
        out.push(
          [p + 8, 4, true],
          [p + 12, 4, true],
          [p + 16, 1, true],
          [p + 17, 1, true],
          [p + 20, 1, true],
        );
      if (type === "PLTE" || type === "tRNS" || type === "eXIf") out.push([p + 8, 4, true]);
      p += 12 + len;
    }
  } else if (fmt === "jpeg") {
    for (let p = 2; p + 9 < b.length; p++)
      if (b[p] === 0xff && b[p + 1]! >= 0xc0 && b[p + 1]! <= 0xfe && b[p + 1] !== 0xd8) {
        out.push([p + 2, 2, true]); // segment length
        if (b[p + 1]! >= 0xc0 && b[p + 1]! <= 0xc3)
          out.push([p + 4, 1, true], [p + 5, 2, true], [p + 7, 2, true], [p + 9, 1, true]);
      }
  } else if (fmt === "gif") {
    out.push([6, 2, false], [8, 2, false], [10, 1, false]);
    for (let p = 13; p + 10 < b.length; p++)
      if (b[p] === 0x2c)
        out.push(
          [p + 1, 2, false],
          [p + 3, 2, false],
          [p + 5, 2, false],
          [p + 7, 2, false],
          [p + 9, 1, false],
        );
  } else if (fmt === "webp") {
    out.push([4, 4, false], [16, 4, false]);
    if (b.length > 30) out.push([24, 3, false], [27, 3, false], [20, 1, false]);
    if (b.length > 30) out.push([26, 2, false], [28, 2, false], [21, 4, false]);
  }
  return out.filter(([o, w]) => o + w <= b.length);
}

function sniff(b: Uint8Array): string | undefined {
  if (b[0] === 0x89 && b[1] === 0x50) return "png";
  if (b[0] === 0xff && b[1] === 0xd8) return "jpeg";
  if (b[0] === 0x47 && b[1] === 0x49) return "gif";
  if (b[0] === 0x52 && b[8] === 0x57) return "webp";
  return undefined;
}

const SIZE_VALUES = [
  0, 1, 2, 3, 7, 8, 16, 255, 256, 4096, 7071, 7072, 16383, 16384, 65535, 65536, 0x7fffffff,
  0xffffffff,
];

export function mutateImage(rng: Rng, input: Uint8Array): Uint8Array {
  let b = Uint8Array.from(input);
  const fields = hotFields(b);
  if (fields.length && rng.chance(0.6)) {
    for (let k = 1 + rng.int(2); k > 0; k--) {
      const [at, w, be] = rng.pick(fields);
      let v = rng.chance(0.7) ? rng.pick(SIZE_VALUES) : rng.int(1 << Math.min(31, 8 * w));
      for (let i = 0; i < w; i++) {
        b[be ? at + w - 1 - i : at + i] = v & 0xff;
        v = Math.floor(v / 256);
      }
    }
  } else b = havoc(rng, b) as Uint8Array<ArrayBuffer>;
  if (sniff(b) === "png" && rng.chance(0.8)) fixPngCrcs(b);
  return b;
}

/** Small images of every kind decode() handles, made by sharp (deterministic encoders). */
async function seeds(): Promise<Uint8Array[]> {
  const w = 12;
  const h = 9;
  const raw = (ch: 1 | 2 | 3 | 4) =>
    sharp(Buffer.from(Uint8Array.from({ length: w * h * ch }, (_, i) => (i * 37) & 255)), {
      raw: { width: w, height: h, channels: ch },
    });
  const made = await Promise.all([
    raw(3).png().toBuffer(),
    raw(4).png().toBuffer(),
    raw(1).png().toBuffer(),
    raw(2).png().toBuffer(),
    raw(3).png({ palette: true, colours: 16 }).toBuffer(),
    raw(1).toColourspace("grey16").png().toBuffer(),
    raw(3).toColourspace("rgb16").png().toBuffer(),
    raw(3).jpeg({ quality: 80 }).toBuffer(),
    raw(3).jpeg({ progressive: true }).toBuffer(),
    raw(1).jpeg().toBuffer(),
    raw(3).jpeg().withMetadata({ orientation: 6 }).toBuffer(),
    raw(3).webp({ quality: 70 }).toBuffer(),
    raw(4).webp({ lossless: true }).toBuffer(),
    raw(4).webp({ quality: 50, alphaQuality: 50 }).toBuffer(),
    raw(3).gif().toBuffer(),
    raw(4).gif().toBuffer(),
  ]);
  const fixtures = [
    "rgb_1x1.png",
    "gray_alpha_3x5.png",
    "exif5_40x24.jpg",
    "transparent_64x48.gif",
  ];
  return [
    ...made.map((b) => new Uint8Array(b)),
    ...fixtures.map((f) => new Uint8Array(readFileSync(join(FIXTURES, f)))),
  ];
}

export async function runImage(input: Uint8Array): Promise<Outcome> {
  let feature: string;
  try {
    const img = await decode(input, FUZZ_LIMITS);
    const { width, height, data } = img;
    if (data.length !== width * height * 3 || width * height > FUZZ_LIMITS.maxPixels)
      throw new Error(`decoded ${width}x${height} with ${data.length} bytes`);
    const p = preprocess(img, { imageSize: OUT_SIZE, panAndScan: true });
    if (p.pixelValues.length !== (1 + p.numCrops) * 3 * OUT_SIZE * OUT_SIZE)
      throw new Error(`preprocess gave ${p.pixelValues.length} values for ${p.numCrops} crops`);
    feature = `ok ${img.format} ${p.numCrops > 0 ? "crops" : "single"}`;
  } catch (e) {
    if (!isImageError(e)) throw e;
    feature = `${e.code} ${normalise(e.message.replace(/first bytes [0-9a-f]*/, "first bytes …"))}`;
  }
  return { feature };
}

export const imageTarget: Target = {
  name: "image",
  seeds,
  generate: (rng) => {
    // A sniffable header followed by noise: the decoders' own header parsers get the bytes.
    const heads = [
      [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a],
      [0xff, 0xd8, 0xff],
      [0x47, 0x49, 0x46, 0x38, 0x39, 0x61],
      [0x52, 0x49, 0x46, 0x46, 0, 0, 0, 0, 0x57, 0x45, 0x42, 0x50],
    ];
    const noise = new Uint8Array(rng.int(64));
    for (let i = 0; i < noise.length; i++) noise[i] = rng.int(256);
    return concat(Uint8Array.from(rng.pick(heads)), noise);
  },
  mutate: mutateImage,
  run: runImage,
  coverageFiles: ["/packages/vision/dist/decode.js", "/packages/vision/dist/preprocess.js"],
  maxInputBytes: 64 * 1024,
  // Decoding costs what the pixel limit allows, whatever the file size (FUZZ_LIMITS above).
  hangMs: 1000,
};
