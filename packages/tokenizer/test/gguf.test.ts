// The tokenizer embedded in a GGUF file (tokenizer.ggml.*), as llama.cpp's converter writes it for
// Gemma 3 (gguf_convert.ts), against HF tokenizers' goldens and the tokenizer.json path: the same
// ids on every golden string, the shared string table, a 1 MB corpus and 3000 adversarial strings;
// decode, chat template and image tokens; llama.cpp's by-score merging on a hand-made vocabulary;
// the merges path; and clear errors for inconsistent metadata.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import {
  Gemma3Tokenizer,
  TokenizerFormatError,
  panAndScanCrops,
  type ChatMessage,
  type GGUFVocab,
} from "../src/index.js";
import type { TokenizerJson } from "../src/tokenizer.js";
import {
  convertGemma3Vocab,
  hfMergesFromScores,
  sentencePieceModel,
  type ConvertedVocab,
} from "./gguf_convert.js";
import { FIXTURES, STRINGS, TOKENIZER_DIR, realTokenizer } from "./helpers.js";

const tokJson: TokenizerJson = JSON.parse(
  readFileSync(join(TOKENIZER_DIR, "tokenizer.json"), "utf8"),
);
const tokConfig = JSON.parse(readFileSync(join(TOKENIZER_DIR, "tokenizer_config.json"), "utf8"));
const hf = await realTokenizer();
// 4B and up: config vocab_size 262208 (<image_soft_token> 262144, then [PAD262145]…).
const v4b = convertGemma3Vocab(tokJson, tokConfig, 262208);
const gguf = Gemma3Tokenizer.fromGGUF(v4b, { vocabSize: 262208 });

const GOLDENS = join(FIXTURES, "goldens.json");
interface Goldens {
  strings: {
    name: string;
    text: string;
    ids_with_special: number[];
    ids: number[];
    tokens: string[];
    decoded: string;
    decoded_skip_special: string;
  }[];
  decode_cases: { name: string; ids: number[]; decoded: string; decoded_skip_special: string }[];
  conversations: { name: string; text: string; ids: number[] }[];
  processor_cases: {
    conversation: string;
    images: [number, number][];
    pan_and_scan: boolean;
    input_ids: number[];
  }[];
}
const g: Goldens | undefined = existsSync(GOLDENS)
  ? JSON.parse(readFileSync(GOLDENS, "utf8"))
  : undefined;

/** Deterministic LCG in [0, n). */
function rng(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => (a = (Math.imul(a, 1103515245) + 12345) >>> 0) % n;
}

describe("the converter's vocabulary (gguf_convert.ts mirrors convert_hf_to_gguf.py)", () => {
  it("the reconstructed SentencePiece scores give back tokenizer.json's 514,906 merges in order", () => {
    const sp = sentencePieceModel(tokJson);
    const merges = hfMergesFromScores(sp.pieces, sp.scores);
    const ref = tokJson.model.merges.map((m) => (typeof m === "string" ? m : m.join(" ")));
    expect(merges.length).toBe(ref.length);
    let firstDiff = -1;
    for (let i = 0; i < ref.length && firstDiff < 0; i++) if (merges[i] !== ref[i]) firstDiff = i;
    expect(firstDiff).toBe(-1);
  });

  it("has the converter's layout: padding, types, scores, special ids, flags", () => {
    expect(v4b.tokens).toHaveLength(262208);
    expect(v4b.tokens[262150]).toBe("[PAD262150]");
    expect(v4b.tokenTypes[262150]).toBe(5);
    expect(v4b.scores[262150]).toBe(-10000);
    expect(v4b.tokens[262144]).toBe("<image_soft_token>");
    expect(v4b.tokenTypes[262144]).toBe(3);
    // user-defined: "▁▁" pre-normalized to spaces, score -1000; <unused5> looks special → control
    expect([v4b.tokens[138], v4b.tokenTypes[138], v4b.scores[138]]).toEqual(["  ", 4, -1000]);
    expect([v4b.tokens[11], v4b.tokenTypes[11]]).toEqual(["<unused5>", 3]);
    expect([v4b.tokenTypes[238], v4b.tokenTypes[493]]).toEqual([6, 6]); // <0x00>, <0xFF>
    expect([v4b.bosTokenId, v4b.eosTokenId, v4b.unkTokenId, v4b.padTokenId]).toEqual([
      2, 106, 3, 0,
    ]);
    expect([v4b.addBosToken, v4b.addEosToken, v4b.addSpacePrefix]).toEqual([true, false, false]);
    // 1B: vocab_size 262144, so <image_soft_token> (262144) is out of range and left out
    const v1b = convertGemma3Vocab(tokJson, tokConfig, 262144);
    expect(v1b.tokens).toHaveLength(262144);
    expect(v1b.tokens.includes("<image_soft_token>")).toBe(false);
  });
});

describe("GGUF-embedded tokenizer vs HF goldens", () => {
  it("vocabulary, specials and ids as tokenizer.json", () => {
    expect(gguf.vocabSize).toBe(262208);
    expect(gguf.specialTokenIds).toEqual(hf.specialTokenIds);
    expect(gguf.isSpecial(11)).toBe(false); // <unused5>: CONTROL in the file, not special in HF
    for (const id of [0, 2, 105, 138, 167, 238, 493, 494, 9259, 255968, 255999, 262143, 262144])
      expect(gguf.idToToken(id), String(id)).toBe(hf.idToToken(id));
    expect(gguf.idToToken(262150)).toBeUndefined(); // unused padding is no token
    expect(gguf.tokenToId("▁▁")).toBe(138);
    expect(gguf.encode("Hello world!")).toEqual([2, 9259, 1902, 236888]);
  });

  for (const s of g?.strings ?? [])
    it(`golden ${s.name}: ids, pieces and decode as HF tokenizers`, () => {
      expect(gguf.encode(s.text)).toEqual(s.ids_with_special);
      expect(gguf.encode(s.text, { addSpecialTokens: false })).toEqual(s.ids);
      expect(gguf.tokenize(s.text, { addSpecialTokens: false })).toEqual(s.tokens);
      expect(gguf.decode(s.ids_with_special)).toBe(s.decoded);
      expect(gguf.decode(s.ids_with_special, { skipSpecialTokens: true })).toBe(
        s.decoded_skip_special,
      );
    });

  it("decode cases as HF tokenizers", () => {
    expect(g?.decode_cases.length ?? 1).toBeGreaterThan(0);
    for (const c of g?.decode_cases ?? []) {
      expect(gguf.decode(c.ids), c.name).toBe(c.decoded);
      expect(gguf.decode(c.ids, { skipSpecialTokens: true }), c.name).toBe(c.decoded_skip_special);
    }
  });

  it("chat template from tokenizer.chat_template: same text and ids as apply_chat_template", () => {
    expect(gguf.chatTemplate).toBe(hf.chatTemplate);
    for (const c of g?.conversations ?? []) {
      const src = STRINGS.conversations.find((x) => x.name === c.name)!;
      const opts = { addGenerationPrompt: src.add_generation_prompt };
      expect(gguf.applyChatTemplate(src.messages as ChatMessage[], opts), c.name).toBe(c.text);
      const enc = gguf.encodeChat(src.messages as ChatMessage[], { ...opts, expandImages: false });
      expect(enc.ids, c.name).toEqual(c.ids);
    }
  });

  it("image prompts: same ids as Gemma3Processor", () => {
    expect(g?.processor_cases.length ?? 1).toBeGreaterThan(0);
    for (const c of g?.processor_cases ?? []) {
      const src = STRINGS.conversations.find((x) => x.name === c.conversation)!;
      const numCrops = c.images.map(([w, h]) =>
        c.pan_and_scan ? panAndScanCrops(w, h).length : 0,
      );
      const ours = gguf.encodeChat(src.messages as ChatMessage[], {
        addGenerationPrompt: src.add_generation_prompt,
        numCrops,
      }).ids;
      const ref = c.input_ids[0] === 2 && c.input_ids[1] === 2 ? c.input_ids.slice(1) : c.input_ids;
      expect(ours).toEqual(ref);
    }
  });
});

describe("GGUF-embedded tokenizer vs the tokenizer.json path", () => {
  const tmp = mkdtempSync(join(tmpdir(), "gemma3-gguf-tok-"));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it("the shared string table: same ids; decode round trips; streaming = decode", () => {
    for (const { name, text } of STRINGS.strings) {
      const ids = gguf.encode(text, { addSpecialTokens: false });
      expect(ids, name).toEqual(hf.encode(text, { addSpecialTokens: false }));
      expect(gguf.decode(ids), name).toBe(text.replaceAll("\u2581", " "));
      const d = gguf.detokenizer();
      expect(ids.map((id) => d.push(id)).join("") + d.flush(), name).toBe(gguf.decode(ids));
    }
  });

  it("the 1 MB benchmark corpus (bench/corpus.mjs): same 258k ids", () => {
    const file = join(tmp, "corpus.txt");
    const script = fileURLToPath(new URL("../bench/corpus.mjs", import.meta.url));
    expect(spawnSync(process.execPath, [script, file]).status).toBe(0);
    const text = readFileSync(file, "utf8");
    const a = hf.encode(text);
    const b = gguf.encode(text);
    expect(b.length).toBe(a.length);
    expect(b.length).toBeGreaterThan(200_000);
    expect(b).toEqual(a);
  });

  it("3000 adversarial strings: vocabulary pieces, space runs beside a typed ▁, specials, bad UTF-16", () => {
    const r = rng(7);
    const seps = [" ", "  ", "   ", "\u2581", " \u2581", "\u2581 ", "\u2581\u2581", "\n", "\t"];
    seps.push("", "", "<b>", "<start_of_turn>", "<unused3>", "😀", "é", "e\u0301", "\ud800");
    let diff = 0;
    let example = "";
    for (let k = 0; k < 3000; k++) {
      let s = "";
      for (let i = 0, n = 1 + r(12); i < n; i++) {
        s += r(3) ? hf.decode([r(262144)]) : seps[r(seps.length)];
        if (r(4) === 0) s += seps[r(seps.length)];
      }
      if (JSON.stringify(gguf.encode(s)) !== JSON.stringify(hf.encode(s))) {
        diff++;
        example ||= JSON.stringify(s);
      }
    }
    expect(example).toBe("");
    expect(diff).toBe(0);
  });

  it("long inputs: 200k CJK characters in one word, 100k spaces, 50k typed ▁", () => {
    const r = rng(11);
    const cjk = Array.from({ length: 200_000 }, () => String.fromCharCode(0x4e00 + r(20000))).join(
      "",
    );
    for (const text of [cjk, " ".repeat(100_001) + "x", "\u2581".repeat(50_000) + " a"])
      expect(gguf.encode(text)).toEqual(hf.encode(text));
  });

  it("a 1B vocabulary (262144 tokens, no image token) tokenizes text the same", () => {
    const t = Gemma3Tokenizer.fromGGUF(convertGemma3Vocab(tokJson, tokConfig, 262144));
    expect(t.vocabSize).toBe(262144);
    expect(t.tokenToId("<image_soft_token>")).toBeUndefined();
    for (const { name, text } of STRINGS.strings)
      if (!text.includes("<image_soft_token>"))
        expect(t.encode(text), name).toEqual(hf.encode(text));
  });

  it("a BPE GGUF with tokenizer.json's merges (convert_hf_to_gguf _set_vocab_gpt2 layout) gives the same ids", () => {
    const vocab = Array.from({ length: 262145 }, (_, id) => hf.idToToken(id)!);
    const added = new Map((tokJson.added_tokens ?? []).map((t) => [t.id, t]));
    const types = vocab.map((_, id) => {
      const a = added.get(id);
      return a ? (a.special || /^<unused\d+>$|^<mask>$/.test(a.content) ? 3 : 4) : 1;
    });
    const t = Gemma3Tokenizer.fromGGUF({
      model: "gpt2",
      tokens: vocab.map((s, id) => (types[id] === 4 ? s.replaceAll("\u2581", " ") : s)),
      tokenTypes: types,
      merges: tokJson.model.merges.map((m) => (typeof m === "string" ? m : m.join(" "))),
      bosTokenId: 2,
      eosTokenId: 1,
      addBosToken: true,
    });
    for (const { name, text } of STRINGS.strings)
      expect(t.encode(text), name).toEqual(hf.encode(text));
  });
});

describe("fromGGUFFile: the parsed form is cached by the GGUF file's identity", () => {
  it("a warm load does not read the metadata, and tokenizes the same; a vocabulary mismatch still fails", async () => {
    const dir = mkdtempSync(join(tmpdir(), "gemma3-gguf-cache-"));
    try {
      const file = join(dir, "model.gguf");
      writeFileSync(file, "stands in for a GGUF file: only its identity keys the cache");
      let reads = 0;
      const read = () => (reads++, v4b);
      const opts = { cacheDir: join(dir, "cache"), vocabSize: 262208 };
      const cold = await Gemma3Tokenizer.fromGGUFFile(file, read, opts);
      const warm = await Gemma3Tokenizer.fromGGUFFile(file, read, opts);
      expect(reads).toBe(1);
      expect(warm.vocabSize).toBe(262208);
      expect(warm.chatTemplate).toBe(hf.chatTemplate);
      expect(warm.specialTokenIds).toEqual(cold.specialTokenIds);
      for (const { name, text } of STRINGS.strings)
        expect(warm.encode(text), name).toEqual(cold.encode(text));
      await expect(
        Gemma3Tokenizer.fromGGUFFile(file, read, { ...opts, vocabSize: 512 }),
      ).rejects.toThrow(/262208 tokens, but the model's vocabulary .* is 512/);
      // A changed file is a cold load again.
      writeFileSync(file, "another file now");
      await Gemma3Tokenizer.fromGGUFFile(file, read, opts);
      expect(reads).toBe(2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("llama.cpp semantics on hand-made vocabularies", () => {
  // ids: 0 <unk>, 1 <s>, 2 <ctl>, 3-5 a b c, 6 ab, 7 bc, 8 abc, 9 ▁, 10 ▁a, then the 256 bytes
  const bytes = Array.from(
    { length: 256 },
    (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`,
  );
  const base = ["<unk>", "<s>", "<ctl>", "a", "b", "c", "ab", "bc", "abc", "▁", "▁a", ...bytes];
  const types = base.map((t, id) => (id === 0 ? 2 : id <= 2 ? 3 : id >= 11 ? 6 : 1));
  const spm = (scores: Record<string, number>, extra: Partial<GGUFVocab> = {}) =>
    Gemma3Tokenizer.fromGGUF({
      model: "llama",
      tokens: base,
      scores: base.map((t) => scores[t] ?? 0),
      tokenTypes: types,
      bosTokenId: 1,
      eosTokenId: 2,
      unkTokenId: 0,
      addSpacePrefix: false,
      ...extra,
    });

  it("the pair whose token scores highest merges first; equal scores merge leftmost first", () => {
    // ab > bc: "abc" → ab + c → abc
    expect(spm({ ab: -1, bc: -2, abc: -3 }).encode("abc", { addSpecialTokens: false })).toEqual([
      8,
    ]);
    // bc > ab and no abc: a + bc
    const noAbc = { ab: -2, bc: -1, abc: -3 };
    const t = Gemma3Tokenizer.fromGGUF({
      model: "llama",
      tokens: base.map((s) => (s === "abc" ? "xyz" : s)),
      scores: base.map((s) => (noAbc as Record<string, number>)[s] ?? 0),
      tokenTypes: types,
      bosTokenId: 1,
      addSpacePrefix: false,
    });
    expect(t.encode("abc", { addSpecialTokens: false })).toEqual([3, 7]);
    // ab == bc: leftmost (ab) first, then c
    const tie = Gemma3Tokenizer.fromGGUF({
      model: "llama",
      tokens: base.map((s) => (s === "abc" ? "xyz" : s)),
      scores: base.map((s) => (s === "ab" || s === "bc" ? -1 : 0)),
      tokenTypes: types,
      bosTokenId: 1,
      addSpacePrefix: false,
    });
    expect(tie.encode("abc", { addSpecialTokens: false })).toEqual([6, 5]);
  });

  it("characters with no token fall back to their UTF-8 bytes; control tokens split the text", () => {
    const t = spm({ ab: -1, bc: -2, abc: -3 });
    expect(t.encode("aé<ctl>b", { addSpecialTokens: false })).toEqual([
      3,
      11 + 0xc3,
      11 + 0xa9,
      2,
      4,
    ]);
    expect(t.decode([3, 11 + 0xc3, 11 + 0xa9, 2, 4])).toBe("aé<ctl>b");
    expect(t.decode([3, 11 + 0xc3, 11 + 0xa9, 2, 4], { skipSpecialTokens: true })).toBe("aéb");
  });

  it("add_space_prefix (llama.cpp's default for a llama vocabulary): ' ' before the text and after each added token", () => {
    const t = spm({ "▁a": -1 }, { addSpacePrefix: undefined });
    expect(t.encode("a<ctl>a b")).toEqual([1, 10, 2, 10, 9, 4]);
    expect(spm({ "▁a": -1 }).encode("a<ctl>a b")).toEqual([1, 3, 2, 3, 9, 4]);
  });

  it("add_bos_token false and add_eos_token true", () => {
    const t = spm({}, { addBosToken: false, addEosToken: true });
    expect(t.encode("a")).toEqual([3, 2]);
  });
});

describe("inconsistent metadata: TokenizerFormatError naming what is wrong", () => {
  const n = v4b.tokens.length;
  const bad =
    (patch: Partial<ConvertedVocab> | Record<string, unknown>, opts = {}) =>
    () =>
      Gemma3Tokenizer.fromGGUF({ ...v4b, ...patch } as GGUFVocab, opts);
  const cases: [string, () => unknown, RegExp][] = [
    ["no tokens", bad({ tokens: null }), /tokenizer\.ggml\.tokens is missing/],
    ["empty", bad({ tokens: [] }), /tokenizer\.ggml\.tokens is empty/],
    [
      "token count ≠ the model's vocabulary",
      bad({}, { vocabSize: 262144 }),
      /262208 tokens, but the model's vocabulary \(token_embd\.weight rows\) is 262144/,
    ],
    [
      "scores length mismatch",
      bad({ scores: v4b.scores.subarray(0, n - 1) }),
      /tokenizer\.ggml\.scores has 262207 entries for 262208 tokens/,
    ],
    [
      "token types length mismatch",
      bad({ tokenTypes: v4b.tokenTypes.subarray(1) }),
      /tokenizer\.ggml\.token_type has 262207 entries/,
    ],
    [
      "an unknown token type",
      bad({ tokenTypes: v4b.tokenTypes.map((t, i) => (i === 7 ? 9 : t)) }),
      /token 7 has type 9/,
    ],
    ["no scores for SentencePiece", bad({ scores: null }), /tokenizer\.ggml\.scores is missing/],
    [
      "a NaN score",
      bad({ scores: v4b.scores.map((s, i) => (i === 600 ? NaN : s)) }),
      /token 600 has score NaN/,
    ],
    ["bos id out of range", bad({ bosTokenId: n }), /bos_token_id 262208 is not a token id/],
    ["no model", bad({ model: null }), /tokenizer\.ggml\.model is missing/],
    [
      "another model without merges",
      bad({ model: "bert" }),
      /"bert" without tokenizer\.ggml\.merges/,
    ],
    [
      "byte-level BPE",
      () => Gemma3Tokenizer.fromGGUF({ model: "gpt2", tokens: ["a", "b", "ab"], merges: ["a b"] }),
      /not a SentencePiece-style vocabulary/,
    ],
    [
      "a merge naming no token",
      bad({ model: "gpt2", merges: ["▁ zzzzzz"] }),
      /merges\[0\] "▁ zzzzzz": "zzzzzz" is not a token/,
    ],
    [
      "a malformed merge",
      bad({ model: "gpt2", merges: ["▁"] }),
      /merges\[0\] "▁" is not "left right"/,
    ],
  ];
  for (const [name, f, msg] of cases)
    it(name, () => {
      expect(f).toThrow(TokenizerFormatError);
      expect(f).toThrow(msg);
    });
});
