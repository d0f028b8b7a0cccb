// Shared by the vision tests: fixture paths, the sample-index rule of the HF goldens, and a PNG
// writer for hand-made (hostile) files.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { deflateSync } from "node:zlib";
import { fileURLToPath } from "node:url";

export const FIXTURES = fileURLToPath(new URL("./fixtures", import.meta.url));
export const IMAGES = `${FIXTURES}/images`;
const REPO = fileURLToPath(new URL("../../..", import.meta.url));

/** goldens.json of a multimodal fixture (tools/reference/vision_model_goldens.py). */
export interface MmGoldens {
  model_dir: string | null;
  pixel_values_shape: number[];
  image_features_shape: number[];
  prompt_ids: number[];
  image_token_id: number;
  greedy_ids: number[];
  argmax: number[];
  top2_margin: number[];
  vocab: number;
  bidirectional_effect_max_abs: number;
}

/** fixtures/mm/<name>: its checkpoint directory, goldens and the HF float32 tensors. */
export function mmGolden(name: string) {
  const dir = join(FIXTURES, "mm", name);
  const meta = JSON.parse(readFileSync(join(dir, "goldens.json"), "utf8")) as MmGoldens;
  const f32 = (file: string) => {
    const b = readFileSync(join(dir, file));
    return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  };
  return {
    modelDir: meta.model_dir ? join(REPO, meta.model_dir) : dir,
    meta,
    pixels: f32("pixel_values.f32"),
    features: f32("image_features.f32"),
    logits: f32("mm_logits.f32"),
    greedyLogits: f32("mm_greedy_logits.f32"),
  };
}

export { maxAbsDiff } from "../../model/test/golden.js";

/** ‖a − b‖ / ‖b‖. */
export function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

/**
 * The goldens' sample indices (tools/reference/vision_goldens.py): n ≤ 4096 → all; else
 * step = ⌊n / 4096⌋ and idx_k = k·step + (k·7919 + 13) mod step.
 */
export function sampleIndices(n: number, k = 4096): number[] {
  if (n <= k) return Array.from({ length: n }, (_, i) => i);
  const step = Math.floor(n / k);
  return Array.from({ length: k }, (_, i) => i * step + ((i * 7919 + 13) % step));
}

const CRC = new Int32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c;
});
function crc32(b: Uint8Array): number {
  let c = -1;
  for (const x of b) c = CRC[(c ^ x) & 255]! ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}
export function pngChunk(type: string, data: Uint8Array): Buffer {
  const b = Buffer.alloc(12 + data.length);
  b.writeUInt32BE(data.length, 0);
  b.write(type, 4, "latin1");
  Buffer.from(data).copy(b, 8);
  b.writeUInt32BE(crc32(b.subarray(4, 8 + data.length)), 8 + data.length);
  return b;
}

/**
 * An 8-bit PNG whose IHDR says width × height; `idat` is the compressed data (default: `rows`
 * zero rows, deflated — a few hundred bytes however large the header claims the image is).
 */
export function pngWithHeader(
  width: number,
  height: number,
  opts: { colorType?: number; rows?: number; idat?: Uint8Array } = {},
): Buffer {
  const ct = opts.colorType ?? 2;
  const ch = { 0: 1, 2: 3, 4: 2, 6: 4 }[ct as 0 | 2 | 4 | 6] ?? 1;
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = ct;
  const rows = opts.rows ?? height;
  const idat = opts.idat ?? deflateSync(Buffer.alloc(rows * (1 + width * ch)));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk("IHDR", ihdr),
    pngChunk("IDAT", idat),
    pngChunk("IEND", new Uint8Array()),
  ]);
}

/** An RGB PNG of the given pixels ([h, w, 3] uint8). */
export function rgbPng(width: number, height: number, rgb: Uint8Array): Buffer {
  const raw = Buffer.alloc(height * (1 + width * 3));
  for (let y = 0; y < height; y++)
    Buffer.from(rgb.subarray(y * width * 3, (y + 1) * width * 3)).copy(
      raw,
      y * (1 + width * 3) + 1,
    );
  return pngWithHeader(width, height, { idat: deflateSync(raw) });
}
