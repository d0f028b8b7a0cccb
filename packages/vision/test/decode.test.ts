// decode(): PIL's RGB rules on hand-made files, data URLs, limits, and hostile input (corrupt,
// truncated, empty, decompression bombs): typed errors, never a crash. Parity with HF on the
// fixture images is in goldens.test.ts.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { constants, deflateRawSync } from "node:zlib";
import sharp from "sharp";
import { afterAll, describe, expect, it } from "vitest";
import {
  decode,
  gifTransparentColour,
  ImageError,
  isImageError,
  parseDataUrl,
  probeImage,
  sniffFormat,
  type ImageErrorCode,
} from "../src/index.js";
import { IMAGES, pngWithHeader, rgbPng } from "./helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "gemma3-vision-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function code(p: Promise<unknown>): Promise<ImageErrorCode> {
  try {
    await p;
  } catch (e) {
    expect(isImageError(e)).toBe(true);
    expect(e).toBeInstanceOf(ImageError);
    expect((e as Error).message.length).toBeGreaterThan(10);
    return (e as ImageError).code;
  }
  throw new Error("expected an ImageError, got a result");
}

const fixture = (name: string) => readFileSync(join(IMAGES, name));
const dataUrl = (mime: string, b: Uint8Array) =>
  `data:${mime};base64,${Buffer.from(b).toString("base64")}`;

/**
 * A valid PNG whose pixels are all zero, built from one deflated piece of `piecerows` rows
 * repeated: a zlib stream of any length for a few kilobytes per piece (sync-flushed raw deflate
 * blocks concatenate), so a 20000 × 20000 "bomb" is a real, decodable file of ~1 MB.
 */
function zeroPng(width: number, height: number, pieceRows: number): Buffer {
  const rowBytes = 1 + width * 3;
  if (height % pieceRows) throw new Error("height must be a multiple of pieceRows");
  const piece = deflateRawSync(Buffer.alloc(rowBytes * pieceRows), {
    finishFlush: constants.Z_SYNC_FLUSH,
  });
  const n = height / pieceRows;
  const total = rowBytes * height;
  const adler = Buffer.alloc(4);
  adler.writeUInt32BE((((total % 65521) << 16) | 1) >>> 0); // adler32 of zeros: a = 1, b = n
  const idat = Buffer.concat([
    Buffer.from([0x78, 0x9c]),
    ...Array<Buffer>(n).fill(piece),
    Buffer.from([0x03, 0x00]), // final empty fixed block
    adler,
  ]);
  return pngWithHeader(width, height, { idat });
}

describe("decode: PIL's RGB rules", () => {
  it("RGB PNG: the stored pixels, row-major HWC", async () => {
    const rgb = Uint8Array.from({ length: 5 * 3 * 3 }, (_, i) => (i * 37) % 256);
    const img = await decode(rgbPng(5, 3, rgb));
    expect(img).toEqual({ data: rgb, width: 5, height: 3, format: "png" });
  });

  it("alpha is dropped, not composited (HF convert_to_rgb is convert('RGB'))", async () => {
    const rgba = new Uint8Array([250, 10, 20, 0, 30, 40, 50, 128]);
    const png = await sharp(Buffer.from(rgba), { raw: { width: 2, height: 1, channels: 4 } })
      .png()
      .toBuffer();
    expect((await decode(png)).data).toEqual(new Uint8Array([250, 10, 20, 30, 40, 50]));
  });

  it("16-bit grayscale clips at 255 (PIL 'I;16' → 'RGB'); 16-bit RGB keeps the high byte", async () => {
    const g16 = new Uint16Array([0, 200, 255, 256, 40000, 65535]);
    const gray = await sharp(g16, { raw: { width: 6, height: 1, channels: 1 } })
      .toColourspace("grey16")
      .png()
      .toBuffer();
    expect(gray[25]).toBe(0); // colour type gray
    expect(gray[24]).toBe(16);
    const g = await decode(gray);
    expect([...g.data].filter((_, i) => i % 3 === 0)).toEqual([0, 200, 255, 255, 255, 255]);
    const rgb16 = new Uint16Array([0x1234, 0xabff, 0x00ff, 0xff00, 0x8080, 0x7fff]);
    const rgb = await sharp(rgb16, { raw: { width: 2, height: 1, channels: 3 } })
      .toColourspace("rgb16")
      .png()
      .toBuffer();
    expect([...(await decode(rgb)).data]).toEqual([0x12, 0xab, 0x00, 0xff, 0x80, 0x7f]);
  });

  it("grayscale is replicated to RGB", async () => {
    const png = await sharp(Buffer.from([0, 100, 255]), {
      raw: { width: 3, height: 1, channels: 1 },
    })
      .toColourspace("b-w")
      .png()
      .toBuffer();
    expect([...(await decode(png)).data]).toEqual([0, 0, 0, 100, 100, 100, 255, 255, 255]);
  });

  it("EXIF orientation is applied (exif_transpose): 6 turns a 4 × 2 JPEG into 2 × 4", async () => {
    const jpg = fixture("exif6_1200x700.jpg");
    expect(await probeImage(jpg)).toEqual({
      format: "jpeg",
      width: 700,
      height: 1200,
      orientation: 6,
      bytes: jpg.length,
    });
    const img = await decode(jpg);
    expect([img.width, img.height]).toEqual([700, 1200]);
  });

  it("GIF: the first frame; transparent pixels take the palette colour of the transparent index", async () => {
    const gif = fixture("transparent_64x48.gif");
    const rgb = gifTransparentColour(gif)!;
    expect(rgb).toHaveLength(3);
    const img = await decode(gif);
    const centre = (24 * 64 + 32) * 3;
    expect([...img.data.subarray(centre, centre + 3)]).toEqual(rgb);
    const anim = await decode(fixture("anim_320x240.gif"));
    expect([anim.width, anim.height]).toEqual([320, 240]);
  });

  it("sniffs formats by their bytes", () => {
    expect(sniffFormat(fixture("wide_1600x300.png"))).toBe("png");
    expect(sniffFormat(fixture("tall_300x1200.jpg"))).toBe("jpeg");
    expect(sniffFormat(fixture("lossy_800x300.webp"))).toBe("webp");
    expect(sniffFormat(fixture("anim_320x240.gif"))).toBe("gif");
    expect(sniffFormat(Buffer.from("<svg xmlns="))).toBeUndefined();
    expect(sniffFormat(new Uint8Array())).toBeUndefined();
  });
});

describe("decode: sources", () => {
  it("a path, a Buffer, a Uint8Array and a data URL give the same pixels", async () => {
    const path = join(IMAGES, "lossy_800x300.webp");
    const bytes = readFileSync(path);
    const a = await decode(path);
    const b = await decode(bytes);
    const c = await decode(new Uint8Array(bytes));
    const d = await decode(dataUrl("image/webp", bytes));
    expect(a.data.length).toBe(800 * 300 * 3);
    // Buffer.equals: toEqual on 720 kB typed arrays takes seconds.
    for (const x of [b, c, d]) expect(Buffer.from(x.data).equals(Buffer.from(a.data))).toBe(true);
  });

  it("data URLs: strict base64, taken MIME types only, MIME must match the bytes", async () => {
    const png = fixture("rgb_1x1.png");
    expect(parseDataUrl(dataUrl("image/png", png)).format).toBe("png");
    expect(parseDataUrl(dataUrl("IMAGE/PNG", png)).mime).toBe("image/png");
    const b64 = Buffer.from(png).toString("base64");
    const bad = [
      `data:image/png;base64,${b64.slice(0, -1)}`, // not a multiple of 4
      `data:image/png;base64,${b64.slice(0, 8)} ${b64.slice(8)}`, // whitespace
      `data:image/png;base64,${b64.replace(/[+/]/g, "-").slice(0, 4)}-___`, // base64url
      `data:image/png;base64,${b64}=`, // padding in the wrong place
      `data:image/png;base64,`,
      `data:image/png,${b64}`, // not base64
      `data:image/svg+xml;base64,${b64}`,
      `data:text/plain;base64,${b64}`,
      `data:image/jpeg;base64,${b64}`, // a PNG declared as JPEG
      `data:;base64,${b64}`,
      "data:image/png;base64", // no comma
    ];
    for (const url of bad)
      expect(await code(decode(url)), url.slice(0, 40)).toBe("E_IMAGE_DATA_URL");
  });

  it("missing files and directories are E_IMAGE_READ; other inputs E_IMAGE_ARGUMENT", async () => {
    expect(await code(decode(join(tmp, "nope.png")))).toBe("E_IMAGE_READ");
    expect(await code(decode(tmp))).toBe("E_IMAGE_READ");
    expect(await code(decode(42 as unknown as string))).toBe("E_IMAGE_ARGUMENT");
    expect(await code(decode(fixture("rgb_1x1.png"), { maxPixels: 0 }))).toBe("E_IMAGE_ARGUMENT");
  });
});

describe("decode: limits and hostile input", () => {
  it("a 20000 × 20000 PNG bomb (~1 MB, valid) is refused from its header, fast, without allocating", async () => {
    // The construction decodes: the same bytes at 64 × 40.
    const small = await decode(zeroPng(64, 40, 20));
    expect([small.width, small.height]).toEqual([64, 40]);
    expect(small.data.every((v) => v === 0)).toBe(true);

    const bomb = zeroPng(20000, 20000, 100);
    expect(bomb.length).toBeLessThan(2 * 1024 * 1024);
    const path = join(tmp, "bomb.png");
    writeFileSync(path, bomb);
    global.gc?.();
    const rss0 = process.memoryUsage().rss;
    const t0 = performance.now();
    for (const src of [bomb, path, dataUrl("image/png", bomb)]) {
      let e: unknown;
      await decode(src).catch((x) => (e = x));
      expect(isImageError(e) && e.code).toBe("E_IMAGE_TOO_LARGE");
      expect((e as Error).message).toMatch(
        /20000x20000 = 400000000 pixels, over the limit of 50000000/,
      );
    }
    const ms = performance.now() - t0;
    const grew = process.memoryUsage().rss - rss0;
    // Decoding would take 1.2 GB and seconds; the header read takes a few ms and no pixel memory.
    expect(ms).toBeLessThan(1000);
    expect(grew).toBeLessThan(64 * 1024 * 1024);
  });

  it("JPEG, GIF and WebP whose headers claim huge sizes: E_IMAGE_TOO_LARGE", async () => {
    // Real small files with the size fields patched.
    const jpg = Buffer.from(fixture("exif5_40x24.jpg"));
    let o = 2;
    while (!(jpg[o + 1]! >= 0xc0 && jpg[o + 1]! <= 0xc2)) o += 2 + jpg.readUInt16BE(o + 2);
    jpg.writeUInt16BE(60000, o + 5);
    jpg.writeUInt16BE(60000, o + 7);
    expect(await code(decode(jpg))).toBe("E_IMAGE_TOO_LARGE");
    const gif = Buffer.from(fixture("anim_320x240.gif"));
    gif.writeUInt16LE(65535, 6);
    gif.writeUInt16LE(65535, 8);
    expect(await code(decode(gif))).toBe("E_IMAGE_TOO_LARGE");
    // A screen larger than the first frame: PIL would make it the image size; refused.
    gif.writeUInt16LE(640, 6);
    gif.writeUInt16LE(480, 8);
    expect(await code(decode(gif))).toBe("E_IMAGE_FORMAT");
    const webp = Buffer.from(fixture("alpha_333x222.webp"));
    expect(webp.toString("latin1", 12, 16)).toBe("VP8L");
    // VP8L: 14-bit width − 1 and height − 1 after the 0x2f signature.
    const bits = (15999 | (15999 << 14)) >>> 0;
    webp.writeUInt32LE((webp.readUInt32LE(21) & 0xf0000000) | bits, 21);
    expect(await code(decode(webp))).toBe("E_IMAGE_TOO_LARGE");
    expect(await code(decode(fixture("wide_1600x300.png"), { maxPixels: 1600 * 300 - 1 }))).toBe(
      "E_IMAGE_TOO_LARGE",
    );
    expect((await decode(fixture("wide_1600x300.png"), { maxPixels: 1600 * 300 })).width).toBe(
      1600,
    );
  });

  it("byte limits: a file's size is checked before it is read, buffers and data URLs too", async () => {
    const png = fixture("wide_1600x300.png");
    const lim = { maxBytes: png.length - 1 };
    expect(await code(decode(join(IMAGES, "wide_1600x300.png"), lim))).toBe("E_IMAGE_TOO_LARGE");
    expect(await code(decode(png, lim))).toBe("E_IMAGE_TOO_LARGE");
    expect(await code(decode(dataUrl("image/png", png), lim))).toBe("E_IMAGE_TOO_LARGE");
  });

  it("0 bytes, truncation, garbage after a valid signature, unknown formats: typed errors", async () => {
    expect(await code(decode(new Uint8Array()))).toBe("E_IMAGE_CORRUPT");
    const empty = join(tmp, "empty.png");
    writeFileSync(empty, "");
    expect(await code(decode(empty))).toBe("E_IMAGE_CORRUPT");
    for (const [name, cuts] of [
      ["wide_1600x300.png", [0.5, 0.9, 0.98]],
      ["tall_300x1200.jpg", [0.5, 0.9, 0.98]],
      ["lossy_800x300.webp", [0.5, 0.9, 0.98]],
      ["alpha_333x222.webp", [0.5, 0.9, 0.98]],
      // Inside the first frame (the only one decoded): the second starts past the middle.
      ["anim_320x240.gif", [0.1, 0.25, 0.4]],
      ["transparent_64x48.gif", [0.5, 0.9, 0.98]],
    ] as const) {
      const b = fixture(name);
      for (const keep of cuts) {
        const cut = b.subarray(0, Math.floor(b.length * keep));
        expect(await code(decode(cut)), `${name} cut at ${keep}`).toBe("E_IMAGE_CORRUPT");
      }
      for (const keep of [4, 12, 30]) {
        const c = await code(decode(b.subarray(0, keep)));
        expect(["E_IMAGE_CORRUPT", "E_IMAGE_FORMAT"]).toContain(c);
      }
    }
    // A PNG signature then noise; a PNG whose IDAT is not zlib.
    const noise = Buffer.concat([fixture("rgb_1x1.png").subarray(0, 8), Buffer.alloc(200, 0x5a)]);
    expect(await code(decode(noise))).toBe("E_IMAGE_CORRUPT");
    const badIdat = pngWithHeader(16, 16, { idat: Buffer.from("not zlib at all") });
    expect(await code(decode(badIdat))).toBe("E_IMAGE_CORRUPT");
    // Too little IDAT data for the rows the header promises.
    expect(await code(decode(pngWithHeader(16, 16, { rows: 3 })))).toBe("E_IMAGE_CORRUPT");
    // Flipped bytes in the middle of a JPEG's entropy-coded data still decode or fail cleanly.
    const jpg = Buffer.from(fixture("tall_300x1200.jpg"));
    for (let i = 2000; i < jpg.length - 2; i += 997) jpg[i] = 0xff;
    const r = await decode(jpg).catch((e: unknown) => e);
    if (isImageError(r)) expect(r.code).toBe("E_IMAGE_CORRUPT");
    else
      expect([(r as { width: number }).width, (r as { height: number }).height]).toEqual([
        300, 1200,
      ]);
    // Formats not taken: BMP, TIFF, SVG, PDF — refused before libvips sees them.
    for (const head of [
      "BM\x00\x00",
      "II*\x00",
      "<svg xmlns='http://www.w3.org/2000/svg'/>",
      "%PDF-1.4",
    ])
      expect(await code(decode(Buffer.from(head + "\x00".repeat(64), "latin1")))).toBe(
        "E_IMAGE_FORMAT",
      );
    // A bad CRC on the IHDR chunk (libpng checks critical chunks' CRCs, as PIL does).
    const crc = Buffer.from(fixture("rgb_1x1.png"));
    crc[29] = crc[29]! ^ 0xff;
    expect(await code(decode(crc))).toBe("E_IMAGE_CORRUPT");
  });

  it("1 × 1 images decode", async () => {
    const img = await decode(fixture("rgb_1x1.png"));
    expect(img).toEqual({
      data: new Uint8Array([200, 30, 90]),
      width: 1,
      height: 1,
      format: "png",
    });
  });
});
