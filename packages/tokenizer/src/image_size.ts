// Width and height from an image file's header (PNG, JPEG, GIF, WebP), without decoding pixels:
// enough to count Pan & Scan crops for a prompt. JPEG EXIF orientations 5–8 swap the sides, as
// transformers' load_image (exif_transpose) sees the image.

export interface ImageSize {
  width: number;
  height: number;
  format: "png" | "jpeg" | "gif" | "webp";
}

function be16(b: Uint8Array, o: number): number {
  return (b[o]! << 8) | b[o + 1]!;
}
function be32(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
}
function le16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}
function le24(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16);
}

/** EXIF orientation (1–8) from an APP1 segment's payload, or 1. */
function exifOrientation(b: Uint8Array, start: number, end: number): number {
  if (end - start < 14 || String.fromCharCode(...b.subarray(start, start + 4)) !== "Exif") return 1;
  const t = start + 6; // TIFF header
  const little = b[t] === 0x49;
  const u16 = (o: number) => (little ? le16(b, o) : be16(b, o));
  const u32 = (o: number) => (little ? (le16(b, o) | (le16(b, o + 2) << 16)) >>> 0 : be32(b, o));
  const ifd = t + u32(t + 4);
  if (ifd + 2 > end) return 1;
  const n = u16(ifd);
  for (let i = 0; i < n; i++) {
    const e = ifd + 2 + i * 12;
    if (e + 12 > end) break;
    if (u16(e) === 0x0112) return u16(e + 8);
  }
  return 1;
}

/** Size of a PNG, JPEG, GIF or WebP image from its bytes; throws on anything else. */
export function readImageSize(b: Uint8Array): ImageSize {
  const fail = (why: string): never => {
    throw new Error(`readImageSize: ${why}`);
  };
  if (b.length >= 24 && be32(b, 0) === 0x89504e47 && be32(b, 12) === 0x49484452)
    return { width: be32(b, 16), height: be32(b, 20), format: "png" };
  if (b.length >= 10 && String.fromCharCode(...b.subarray(0, 4)) === "GIF8")
    return { width: le16(b, 6), height: le16(b, 8), format: "gif" };
  if (b.length >= 16 && String.fromCharCode(...b.subarray(0, 4)) === "RIFF") {
    const kind = String.fromCharCode(...b.subarray(12, 16));
    if (b.length < (kind === "VP8L" ? 25 : 30)) return fail("WebP: truncated header");
    if (kind === "VP8 ")
      return { width: le16(b, 26) & 0x3fff, height: le16(b, 28) & 0x3fff, format: "webp" };
    if (kind === "VP8L") {
      const v = (b[21]! | (b[22]! << 8) | (b[23]! << 16) | (b[24]! << 24)) >>> 0;
      return { width: (v & 0x3fff) + 1, height: ((v >>> 14) & 0x3fff) + 1, format: "webp" };
    }
    if (kind === "VP8X") return { width: le24(b, 24) + 1, height: le24(b, 27) + 1, format: "webp" };
    return fail(`unknown WebP chunk "${kind}"`);
  }
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    let orientation = 1;
    let o = 2;
    while (o + 4 <= b.length) {
      if (b[o] !== 0xff) return fail(`JPEG: bad marker at byte ${o}`);
      const marker = b[o + 1]!;
      if (marker === 0xff) {
        o++; // fill byte
        continue;
      }
      if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
        o += 2;
        continue;
      }
      const len = be16(b, o + 2);
      if (marker === 0xe1 && orientation === 1)
        orientation = exifOrientation(b, o + 4, Math.min(b.length, o + 2 + len));
      // SOF0–SOF15, except DHT (C4), JPG (C8) and DAC (CC).
      if (
        marker >= 0xc0 &&
        marker <= 0xcf &&
        marker !== 0xc4 &&
        marker !== 0xc8 &&
        marker !== 0xcc
      ) {
        if (o + 9 > b.length) break;
        const height = be16(b, o + 5);
        const width = be16(b, o + 7);
        return orientation >= 5 && orientation <= 8
          ? { width: height, height: width, format: "jpeg" }
          : { width, height, format: "jpeg" };
      }
      o += 2 + len;
    }
    return fail("JPEG: no frame header (SOF) found");
  }
  return fail("not a PNG, JPEG, GIF or WebP file");
}
