// The streaming detokenizer: text only as complete UTF-8, and the same text as decode().
import { describe, expect, it } from "vitest";
import { STRINGS, byteId, realTokenizer } from "./helpers.js";

const tok = await realTokenizer();

function stream(ids: number[], skipSpecialTokens = false): string[] {
  const d = tok.detokenizer({ skipSpecialTokens });
  const out = ids.map((id) => d.push(id));
  out.push(d.flush());
  return out;
}

describe("StreamingDetokenizer", () => {
  it("holds byte tokens until the character is complete: <0xE2> <0x82> <0xAC> → '€' at the third", () => {
    expect(stream([9259, byteId(0xe2), byteId(0x82), byteId(0xac), 1902])).toEqual([
      "Hello",
      "",
      "",
      "€",
      " world",
      "",
    ]);
    // 4-byte character (U+F0000, private use: not in the vocabulary, so byte fallback)
    const ids = tok.encode("\u{F0000}!", { addSpecialTokens: false });
    expect(ids.slice(0, 4)).toEqual([0xf3, 0xb0, 0x80, 0x80].map(byteId));
    expect(stream(ids)).toEqual(["", "", "", "\u{F0000}", "!", ""]);
  });

  it("never emits a lone surrogate or U+FFFD for text that encode() produced", () => {
    for (const { name, text } of STRINGS.strings) {
      const ids = tok.encode(text);
      const pieces = stream(ids);
      for (const p of pieces) {
        expect(Buffer.from(p, "utf8").toString("utf8"), name).toBe(p); // well-formed
        if (!text.includes("\ufffd")) expect(p, name).not.toContain("\ufffd");
      }
      expect(pieces.join(""), name).toBe(tok.decode(ids));
      expect(stream(ids, true).join(""), name).toBe(tok.decode(ids, { skipSpecialTokens: true }));
    }
  });

  it("a character cut off by a non-byte token or by the end becomes U+FFFD per byte", () => {
    expect(stream([byteId(0xe2), byteId(0x82), 1902]).join("")).toBe("\ufffd\ufffd world");
    expect(stream([byteId(0xe2), byteId(0x82), 1902]).join("")).toBe(
      tok.decode([byteId(0xe2), byteId(0x82), 1902]),
    );
    const d = tok.detokenizer();
    expect(d.push(byteId(0xf0))).toBe("");
    expect(d.hasPending).toBe(true);
    expect(d.flush()).toBe("\ufffd");
    expect(d.hasPending).toBe(false);
  });

  it("bytes that cannot be UTF-8 are U+FFFD at once; a broken sequence restarts at the bad byte", () => {
    expect(stream([byteId(0xff), byteId(0x80), byteId(0xc0)])).toEqual([
      "\ufffd",
      "\ufffd",
      "\ufffd",
      "",
    ]);
    // E2 then 41 ('A' as a byte): E2 is dropped, 41 is emitted.
    expect(stream([byteId(0xe2), byteId(0x41)])).toEqual(["", "\ufffdA", ""]);
    // E2 then E2 82 AC: the first E2 is garbage, the rest is "€".
    expect(stream([byteId(0xe2), byteId(0xe2), byteId(0x82), byteId(0xac)]).join("")).toBe(
      "\ufffd€",
    );
    // Overlong / surrogate second bytes are rejected as UTF-8 requires.
    expect(stream([byteId(0xe0), byteId(0x80)]).join("")).toBe("\ufffd\ufffd");
    expect(stream([byteId(0xed), byteId(0xa0)]).join("")).toBe("\ufffd\ufffd");
    // Documented difference: decode() judges a whole run, so "€" + FF is four U+FFFD there.
    expect(stream([byteId(0xe2), byteId(0x82), byteId(0xac), byteId(0xff)]).join("")).toBe(
      "€\ufffd",
    );
  });

  it("skips special tokens on request and ignores unknown ids", () => {
    expect(stream([2, 105, 9259, 106, 300_000], true).join("")).toBe("Hello");
    expect(stream([2, 105, 9259, 106, 300_000]).join("")).toBe(
      "<bos><start_of_turn>Hello<end_of_turn>",
    );
    const d = tok.detokenizer();
    expect(d.pushAll([9259, 1902, 236888])).toBe("Hello world!");
  });

  it("survives random id streams: output is always well-formed", () => {
    let seed = 1;
    const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296;
    for (let k = 0; k < 300; k++) {
      const ids = Array.from({ length: 20 }, () =>
        rnd() < 0.7 ? byteId(Math.floor(rnd() * 256)) : Math.floor(rnd() * 262_200),
      );
      const s = stream(ids).join("");
      expect(Buffer.from(s, "utf8").toString("utf8")).toBe(s);
    }
  });
});
