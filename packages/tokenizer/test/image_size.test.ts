// Image sizes from file headers (for Pan & Scan crop counts in prompts), on hand-built headers.
import { describe, expect, it } from "vitest";
import { readImageSize } from "../src/index.js";

const u8 = (...parts: (number[] | string)[]) =>
  Uint8Array.from(
    parts.flatMap((p) => (typeof p === "string" ? [...p].map((c) => c.charCodeAt(0)) : p)),
  );
const be16 = (v: number) => [v >> 8, v & 255];
const be32 = (v: number) => [v >>> 24, (v >> 16) & 255, (v >> 8) & 255, v & 255];
const le16 = (v: number) => [v & 255, v >> 8];

function jpeg(w: number, h: number, orientation?: number): Uint8Array {
  const app1 = orientation
    ? // Exif\0\0 + big-endian TIFF, IFD0 with one entry: 0x0112 SHORT 1 = orientation
      u8(
        [0xff, 0xe1],
        be16(2 + 6 + 8 + 2 + 12 + 4),
        "Exif",
        [0, 0],
        "MM",
        [0, 42],
        be32(8),
        be16(1),
        be16(0x0112),
        be16(3),
        be32(1),
        be16(orientation),
        [0, 0],
        be32(0),
      )
    : u8();
  return u8(
    [0xff, 0xd8],
    [0xff, 0xe0],
    be16(4),
    [0, 0],
    [...app1],
    [0xff, 0xc0],
    be16(11),
    [8],
    be16(h),
    be16(w),
    [1, 1, 0x11, 0],
    [0xff, 0xd9],
  );
}

describe("readImageSize", () => {
  it("PNG, GIF, WebP (VP8, VP8L, VP8X)", () => {
    expect(
      readImageSize(
        u8([0x89], "PNG\r\n\x1a\n", be32(13), "IHDR", be32(1920), be32(600), [8, 2, 0, 0, 0]),
      ),
    ).toEqual({ width: 1920, height: 600, format: "png" });
    expect(readImageSize(u8("GIF89a", le16(500), le16(1400), [0, 0, 0]))).toEqual({
      width: 500,
      height: 1400,
      format: "gif",
    });
    const riff = (kind: string, body: number[]) =>
      u8("RIFF", [0, 0, 0, 0], "WEBP", kind, [0, 0, 0, 0], body);
    expect(
      readImageSize(riff("VP8 ", [0, 0, 0, 0x9d, 0x01, 0x2a, ...le16(800), ...le16(300), 0, 0])),
    ).toEqual({ width: 800, height: 300, format: "webp" });
    const v = (1200 - 1) | ((700 - 1) << 14);
    expect(
      readImageSize(
        riff("VP8L", [
          0x2f,
          v & 255,
          (v >> 8) & 255,
          (v >> 16) & 255,
          (v >>> 24) & 255,
          0,
          0,
          0,
          0,
        ]),
      ),
    ).toEqual({ width: 1200, height: 700, format: "webp" });
    expect(
      readImageSize(riff("VP8X", [0, 0, 0, 0, 999 & 255, 999 >> 8, 0, 599 & 255, 599 >> 8, 0])),
    ).toEqual({ width: 1000, height: 600, format: "webp" });
  });

  it("JPEG, with EXIF orientations 5–8 swapping the sides", () => {
    expect(readImageSize(jpeg(3000, 700))).toEqual({ width: 3000, height: 700, format: "jpeg" });
    expect(readImageSize(jpeg(3000, 700, 1))).toEqual({ width: 3000, height: 700, format: "jpeg" });
    expect(readImageSize(jpeg(3000, 700, 6))).toEqual({ width: 700, height: 3000, format: "jpeg" });
  });

  it("anything else fails with a message", () => {
    expect(() => readImageSize(u8("hello world"))).toThrow(/not a PNG, JPEG, GIF or WebP/);
    expect(() => readImageSize(u8([0xff, 0xd8, 0xff, 0xd9]))).toThrow(/JPEG/);
  });
});
