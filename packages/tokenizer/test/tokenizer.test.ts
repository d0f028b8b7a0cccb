// Encode / decode on the real Gemma 3 tokenizer, without HF: ids from FACTS.md, round trips over
// the shared string table, byte fallback, invalid input, and a 10 MB input.
import { describe, expect, it } from "vitest";
import { Gemma3Tokenizer, TokenizerFormatError } from "../src/index.js";
import { STRINGS, TOKENIZER_DIR, byteId, realTokenizer, tinyTokenizerJson } from "./helpers.js";

const tok = await realTokenizer();

describe("Gemma 3 tokenizer: ids from FACTS.md", () => {
  it('"Hello world!" → [2, 9259, 1902, 236888] (the post-processor adds <bos>)', () => {
    expect(tok.encode("Hello world!")).toEqual([2, 9259, 1902, 236888]);
    expect(tok.encode("Hello world!", { addSpecialTokens: false })).toEqual([9259, 1902, 236888]);
    expect(tok.tokenize("Hello world!")).toEqual(["<bos>", "Hello", "▁world", "!"]);
  });

  it("special tokens have their ids, both ways, and are marked special", () => {
    const ids: Record<string, number> = {
      "<pad>": 0,
      "<eos>": 1,
      "<bos>": 2,
      "<unk>": 3,
      "<start_of_turn>": 105,
      "<end_of_turn>": 106,
      "<start_of_image>": 255999,
      "<end_of_image>": 256000,
      "<image_soft_token>": 262144,
    };
    for (const [t, id] of Object.entries(ids)) {
      expect(tok.tokenToId(t), t).toBe(id);
      expect(tok.idToToken(id)).toBe(t);
      expect(tok.isSpecial(id), t).toBe(true);
      // Written inline in text, a special token is that one id.
      expect(tok.encode(t, { addSpecialTokens: false }), t).toEqual([id]);
    }
    expect(tok.specialTokenIds).toEqual(Object.values(ids).sort((a, b) => a - b));
    expect(tok.vocabSize).toBe(262145);
    expect(tok.tokenToId("no such token")).toBeUndefined();
    expect(tok.idToToken(999_999)).toBeUndefined();
    // Non-special added tokens still match inline: <unused5>, "\n\n", HTML tags.
    expect(tok.encode("<unused5>\n\n<b>", { addSpecialTokens: false })).toEqual([11, 108, 200]);
    expect(tok.isSpecial(11)).toBe(false);
  });

  it("the empty string is just <bos>, or nothing", () => {
    expect(tok.encode("")).toEqual([2]);
    expect(tok.encode("", { addSpecialTokens: false })).toEqual([]);
    expect(tok.decode([])).toBe("");
  });
});

describe("round trip over the shared string table (no HF needed)", () => {
  for (const { name, text } of STRINGS.strings)
    it(`decode(encode(s)) == s: ${name}`, () => {
      const ids = tok.encode(text, { addSpecialTokens: false });
      // U+2581 "▁" is the tokenizer's own space marker: it decodes to " " (HF does the same).
      expect(tok.decode(ids)).toBe(text.replaceAll("\u2581", " "));
      expect(tok.decode(tok.encode(text), { skipSpecialTokens: true })).toBe(
        tok.decode(ids, { skipSpecialTokens: true }),
      );
      for (const id of ids) expect(id).toBeLessThan(tok.vocabSize);
    });

  it("has the categories the issue asks for (≥ 40 strings)", () => {
    expect(STRINGS.strings.length).toBeGreaterThanOrEqual(40);
    const names = STRINGS.strings.map((s) => s.name).join(" ");
    for (const k of [
      "korean",
      "japanese",
      "chinese",
      "arabic",
      "hindi",
      "thai",
      "emoji_zwj",
      "flags",
      "code",
      "latex",
      "whitespace",
      "tabs",
      "control",
      "private_use",
      "rare",
      "nfd",
      "fullwidth",
      "long_repeat",
      "special_start_of_turn",
      "special_image_soft_token",
      "special_unused",
      "special_pad",
      "urls",
    ])
      expect(names).toContain(k);
  });
});

describe("byte fallback and invalid input", () => {
  it("characters outside the vocabulary become their UTF-8 bytes", () => {
    // U+F0000 (private use) = F3 B0 80 80
    expect(tok.encode("\u{F0000}", { addSpecialTokens: false })).toEqual(
      [0xf3, 0xb0, 0x80, 0x80].map(byteId),
    );
    expect(tok.tokenize("\u{F0000}", { addSpecialTokens: false })).toEqual([
      "<0xF3>",
      "<0xB0>",
      "<0x80>",
      "<0x80>",
    ]);
  });

  it("decoding a byte run that is not UTF-8 gives one U+FFFD per byte (HF ByteFallback)", () => {
    expect(tok.decode([byteId(0xe2), byteId(0x82), byteId(0xac)])).toBe("€");
    expect(tok.decode([9259, byteId(0xe2), byteId(0x82), 1902])).toBe("Hello\ufffd\ufffd world");
    expect(tok.decode([byteId(0xff), byteId(0xfe)])).toBe("\ufffd\ufffd");
    // The whole run is judged together: a valid "€" followed by 0xFF is 4 × U+FFFD.
    expect(tok.decode([byteId(0xe2), byteId(0x82), byteId(0xac), byteId(0xff)])).toBe(
      "\ufffd".repeat(4),
    );
    expect(tok.decode([byteId(0xed), byteId(0xa0), byteId(0x80)])).toBe("\ufffd".repeat(3)); // surrogate
    // A BOM decoded from bytes is kept, not stripped.
    expect(tok.decode([byteId(0xef), byteId(0xbb), byteId(0xbf), 9259])).toBe("\ufeffHello");
  });

  it("unknown ids are skipped, as HF does; skipSpecialTokens drops specials only", () => {
    expect(tok.decode([9259, 300_000, 1902])).toBe("Hello world");
    expect(tok.decode([2, 105, 2364, 107, 9259, 106, 1])).toBe(
      "<bos><start_of_turn>user\nHello<end_of_turn><eos>",
    );
    expect(tok.decode([2, 105, 2364, 107, 9259, 106, 1], { skipSpecialTokens: true })).toBe(
      "user\nHello",
    );
    // Non-special added tokens stay.
    expect(tok.decode([11, 108], { skipSpecialTokens: true })).toBe("<unused5>\n\n");
  });

  it("lone surrogates encode as U+FFFD (what TextEncoder writes), without throwing", () => {
    for (const s of ["a\ud800b", "\udc00", "x\ud83d", "\ud83d\ud83d\ude00"]) {
      const ids = tok.encode(s, { addSpecialTokens: false });
      const wellFormed = Buffer.from(s, "utf8").toString("utf8");
      expect(ids).toEqual(tok.encode(wellFormed, { addSpecialTokens: false }));
      expect(tok.decode(ids)).toBe(wellFormed);
    }
  });

  it("a 10 MB input without newlines (one BPE word) encodes and round-trips", () => {
    const unit =
      "The quick brown fox jumps over the lazy dog, 안녕하세요 세계 日本語 😀 \u{F0000} ";
    const s = unit.repeat(Math.ceil(10_000_000 / unit.length));
    const t0 = performance.now();
    const ids = tok.encode(s, { addSpecialTokens: false });
    const ms = performance.now() - t0;
    expect(ids.length).toBeGreaterThan(2_000_000);
    expect(tok.decode(ids)).toBe(s);
    // ~4 s on a 2-core CI machine; a quadratic merge would take minutes.
    expect(ms).toBeLessThan(20_000);
  }, 60_000);
});

describe("loading", () => {
  it("fromDir and fromObjects agree; a missing directory names the file", async () => {
    const { readFileSync } = await import("node:fs");
    const json = JSON.parse(readFileSync(`${TOKENIZER_DIR}/tokenizer.json`, "utf8"));
    const t2 = Gemma3Tokenizer.fromObjects(json);
    expect(t2.encode("Hello world!")).toEqual([2, 9259, 1902, 236888]);
    expect(t2.chatTemplate).toBeUndefined();
    expect(tok.chatTemplate).toContain("<start_of_turn>");
    await expect(Gemma3Tokenizer.fromDir("/nonexistent")).rejects.toThrow(
      /nonexistent\/tokenizer\.json/,
    );
  });
});

describe("a tiny synthetic tokenizer.json (merge order, unsupported pipelines)", () => {
  // vocab: single chars, "ab", "bc", "abc"; merges ranked a+b < b+c < ab+c.
  const base = tinyTokenizerJson;

  it("merges by rank, leftmost first among equals, like HF's Word::merge_all", () => {
    const t = Gemma3Tokenizer.fromObjects(base());
    expect(t.tokenize("abc", { addSpecialTokens: false })).toEqual(["abc"]);
    expect(t.tokenize("abab", { addSpecialTokens: false })).toEqual(["ab", "ab"]);
    expect(t.tokenize("bcab c", { addSpecialTokens: false })).toEqual(["bc", "ab", "▁", "c"]);
    // Unknown characters fuse into one <unk> (fuse_unk) when there is no byte fallback.
    expect(t.encode("xyza", { addSpecialTokens: false })).toEqual([1, 2]);
    // Old-style "a b" merges read the same.
    const old = base();
    (old.model as { merges: unknown }).merges = ["a b", "b c", "ab c"];
    expect(Gemma3Tokenizer.fromObjects(old).tokenize("abc", { addSpecialTokens: false })).toEqual([
      "abc",
    ]);
  });

  it("rejects pipelines it does not implement, naming the part", () => {
    const cases: [string, (j: ReturnType<typeof base>) => void][] = [
      ["model.type", (j) => ((j.model as { type: string }).type = "Unigram")],
      ["normalizer", (j) => ((j as { normalizer: unknown }).normalizer = { type: "NFKC" })],
      [
        "pre_tokenizer",
        (j) => ((j as { pre_tokenizer: unknown }).pre_tokenizer = { type: "ByteLevel" }),
      ],
      ["decoder", (j) => ((j as { decoder: unknown }).decoder = { type: "Metaspace" })],
      ["added token option", (j) => ((j.added_tokens[0] as { lstrip: boolean }).lstrip = true)],
    ];
    for (const [what, edit] of cases) {
      const j = base();
      edit(j);
      expect(() => Gemma3Tokenizer.fromObjects(j), what).toThrow(TokenizerFormatError);
      expect(() => Gemma3Tokenizer.fromObjects(j), what).toThrow(what);
    }
    const j = base();
    j.model.merges.push(["c", "zz"]);
    expect(() => Gemma3Tokenizer.fromObjects(j)).toThrow(/"zz" is not in the vocabulary/);
  });
});
