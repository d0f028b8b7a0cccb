// The tokenizer embedded in a gemma3 GGUF: the writer embeds the real Gemma 3 vocabulary as
// convert_hf_to_gguf.py does, @huggingface/gguf reads it back the same, loadTokenizer uses it when no
// tokenizer.json lies beside the file (and prefers one that does), the ids equal the tokenizer.json
// path's, and hostile tokenizer metadata fails with typed errors. Load time for 262k tokens is
// measured (cold: header + pair table; warm: the parsed-form cache).
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { gguf as hfGGUF } from "@huggingface/gguf";
import { Gemma3Tokenizer } from "@gemma3/tokenizer";
import { afterAll, describe, expect, it } from "vitest";
import {
  GGUFError,
  GGUFFile,
  MissingTokenizerError,
  ggufTokenizerInfo,
  loadTokenizer,
  type GGUFReadStats,
} from "../src/index.js";
import { STRINGS, TOKENIZER_DIR } from "../../tokenizer/test/helpers.js";
import {
  arr,
  buildGGUF,
  gemma3TokenizerMetadata,
  writeGGUF,
  writeGemma3GGUF,
  type GGUFTensorSpec,
  type KV,
} from "./gguf_writer.js";

const fixtures = fileURLToPath(new URL("./fixtures", import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), "gemma3-gguf-tok-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const fresh = () => {
  const d = join(tmp, `d${n++}`);
  mkdirSync(d);
  return d;
};

/** A vocabulary-only gemma3-like GGUF: the tokenizer keys and a token_embd of `rows` × 8 (F16). */
function vocabFile(
  dir: string,
  rows: number,
  metadata: [string, KV][] = gemma3TokenizerMetadata({ tokenizerDir: TOKENIZER_DIR }, rows),
): string {
  const tensors: GGUFTensorSpec[] = [{ name: "token_embd.weight", type: "F16", ne: [8, rows] }];
  return writeGGUF(
    join(dir, "vocab.gguf"),
    [["general.architecture", { type: "string", value: "gemma3" }], ...metadata],
    tensors,
  );
}

const reference = await Gemma3Tokenizer.fromDir(TOKENIZER_DIR, { cacheDir: null });
const REAL = gemma3TokenizerMetadata({ tokenizerDir: TOKENIZER_DIR }, 262208);

describe("the writer embeds the real Gemma 3 vocabulary as convert_hf_to_gguf.py", () => {
  it("@huggingface/gguf and our reader read back the same tokenizer keys", async () => {
    const path = vocabFile(fresh(), 262208, REAL);
    const theirs = (await hfGGUF(path, { allowLocalFile: true })).metadata as Record<
      string,
      unknown
    >;
    const f = await GGUFFile.open(path);
    const ours = ggufTokenizerInfo(f);
    await f.close();
    // @huggingface/gguf 0.4.6 decodes strings with a default TextDecoder, which drops a leading
    // U+FEFF: Gemma's 6 tokens that start with one ("\uFEFF//", "\uFEFF#", …) come back without it.
    const noBom = (x: unknown) => (typeof x === "string" ? x.replace(/^\uFEFF/, "") : x);
    for (const [key, kv] of REAL) {
      const want = Array.isArray(kv.value) ? kv.value.map(noBom) : kv.value;
      expect(
        Array.isArray(want) ? Array.from(theirs[key] as ArrayLike<unknown>) : theirs[key],
        key,
      ).toEqual(want);
    }
    const tokens = REAL.find(([k]) => k === "tokenizer.ggml.tokens")![1].value as string[];
    expect(tokens.filter((t) => t.startsWith("\uFEFF"))).toHaveLength(6);
    expect(theirs["tokenizer.ggml.tokens"]).toHaveLength(262208);
    expect(ours.model).toBe("llama");
    expect(ours.tokens).toEqual(tokens); // ours keeps the U+FEFF (TextDecoder ignoreBOM)
    expect(Array.from(ours.scores!)).toEqual(theirs["tokenizer.ggml.scores"]);
    expect(Array.from(ours.tokenTypes!)).toEqual(theirs["tokenizer.ggml.token_type"]);
    expect([ours.bosTokenId, ours.eosTokenId, ours.unkTokenId, ours.padTokenId]).toEqual([
      2, 106, 3, 0,
    ]);
    expect([ours.addBosToken, ours.addEosToken, ours.addSpacePrefix]).toEqual([true, false, false]);
    expect(ours.chatTemplate).toBe(reference.chatTemplate);
  });
});

describe("loadTokenizer", () => {
  it("a GGUF alone: the embedded tokenizer, with tokenizer.json's ids and chat template; cold vs warm load timed", async () => {
    const dir = fresh();
    const path = vocabFile(dir, 262208, REAL);
    const cacheDir = join(dir, "cache");
    const t0 = performance.now();
    const f = await GGUFFile.open(path);
    const headerMs = performance.now() - t0;
    await f.close();
    const t1 = performance.now();
    const cold = await loadTokenizer(path, { cacheDir });
    const coldMs = performance.now() - t1;
    const t2 = performance.now();
    const warm = await loadTokenizer(path, { cacheDir });
    const warmMs = performance.now() - t2;
    console.log(
      `embedded tokenizer, 262208 tokens: header parse ${headerMs.toFixed(0)} ms, cold load ` +
        `${coldMs.toFixed(0)} ms, cached load ${warmMs.toFixed(0)} ms`,
    );
    expect(warmMs).toBeLessThan(coldMs);
    for (const { tokenizer, source, file } of [cold, warm]) {
      expect(source).toBe("embedded");
      expect(file).toBe(path);
      expect(tokenizer.vocabSize).toBe(262208);
      expect(tokenizer.chatTemplate).toBe(reference.chatTemplate);
      for (const { name, text } of STRINGS.strings)
        expect(tokenizer.encode(text), name).toEqual(reference.encode(text));
    }
  });

  it("tokenizer.json beside the GGUF wins (it is the reference)", async () => {
    const dir = fresh();
    const path = vocabFile(dir, 262208, REAL);
    for (const name of ["tokenizer.json", "tokenizer_config.json"])
      copyFileSync(join(TOKENIZER_DIR, name), join(dir, name));
    const t = await loadTokenizer(path, { cacheDir: null });
    expect(t.source).toBe("tokenizer.json");
    expect(t.file).toBe(join(dir, "tokenizer.json"));
    expect(t.tokenizer.vocabSize).toBe(262145);
    // the directory holding one .gguf resolves to it, tokenizer.json still first
    expect((await loadTokenizer(dir, { cacheDir: null })).source).toBe("tokenizer.json");
  });

  it("a tiny fixture as GGUF with the real vocabulary cut to its 512 rows, as the converter cuts it", async () => {
    const path = await writeGemma3GGUF(join(fixtures, "tiny-1b"), "F32", join(fresh(), "t.gguf"), {
      vocab: { tokenizerDir: TOKENIZER_DIR },
    });
    const t = await loadTokenizer(path, { cacheDir: null });
    expect(t.tokenizer.vocabSize).toBe(512);
    // Words past id 511 are gone: text falls back to the byte tokens (238…493), ids stay < 512.
    const text = "<start_of_turn>user\nwörld!<end_of_turn>\n";
    const ids = t.tokenizer.encode(text);
    expect(ids.slice(0, 2)).toEqual([2, 105]);
    expect(Math.max(...ids)).toBeLessThan(512);
    expect(t.tokenizer.decode(ids)).toBe("<bos>" + text);
  });

  it("no tokenizer anywhere: MissingTokenizerError naming the file", async () => {
    const gguf = vocabFile(fresh(), 512, []);
    await expect(loadTokenizer(gguf, { cacheDir: null })).rejects.toThrow(MissingTokenizerError);
    await expect(loadTokenizer(gguf, { cacheDir: null })).rejects.toThrow(
      /vocab\.gguf has no embedded tokenizer \(tokenizer\.ggml\.tokens\) and there is no tokenizer\.json beside it/,
    );
    const dir = fresh();
    writeFileSync(join(dir, "config.json"), "{}");
    await expect(loadTokenizer(dir, { cacheDir: null })).rejects.toThrow(
      /tokenizer\.json is missing/,
    );
  });
});

describe("hostile tokenizer metadata: typed errors, no large allocation", () => {
  const replace = (key: string, kv: KV | null): [string, KV][] =>
    REAL.flatMap(([k, v]): [string, KV][] => (k !== key ? [[k, v]] : kv ? [[k, kv]] : []));
  const scores = REAL.find(([k]) => k === "tokenizer.ggml.scores")![1].value as number[];
  const types = REAL.find(([k]) => k === "tokenizer.ggml.token_type")![1].value as number[];

  const cases: [string, () => string, RegExp, string][] = [
    [
      "token count ≠ token_embd rows",
      () => vocabFile(fresh(), 262144, REAL),
      /262208 tokens, but the model's vocabulary \(token_embd\.weight rows\) is 262144/,
      "E_METADATA",
    ],
    [
      "scores shorter than tokens",
      () =>
        vocabFile(fresh(), 262208, replace("tokenizer.ggml.scores", arr("f32", scores.slice(1)))),
      /tokenizer\.ggml\.scores has 262207 entries for 262208 tokens/,
      "E_METADATA",
    ],
    [
      "token types of the wrong value type",
      () =>
        vocabFile(
          fresh(),
          262208,
          replace("tokenizer.ggml.token_type", arr("string", types.map(String))),
        ),
      /key "tokenizer\.ggml\.token_type": must be a numeric ARRAY, got ARRAY of STRING/,
      "E_METADATA",
    ],
    [
      "a bos id past the vocabulary",
      () =>
        vocabFile(
          fresh(),
          262208,
          replace("tokenizer.ggml.bos_token_id", { type: "u32", value: 300000 }),
        ),
      /bos_token_id 300000 is not a token id/,
      "E_METADATA",
    ],
    [
      "no scores for a SentencePiece vocabulary",
      () => vocabFile(fresh(), 262208, replace("tokenizer.ggml.scores", null)),
      /tokenizer\.ggml\.scores is missing/,
      "E_METADATA",
    ],
  ];
  for (const [name, make, msg, code] of cases)
    it(name, async () => {
      const path = make();
      const err = await loadTokenizer(path, { cacheDir: null }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(GGUFError);
      expect((err as GGUFError).code).toBe(code);
      expect((err as Error).message).toMatch(msg);
      expect((err as Error).message).toContain(path);
    });

  it("a token array claiming 2^40 strings, or a chat template of 2^62 bytes: the reader's bounds, fast", async () => {
    for (const [key, kv] of [
      [
        "tokenizer.ggml.tokens",
        { type: "array", elementType: "string", value: ["a", "b"], lengthOverride: 1n << 40n },
      ],
      ["tokenizer.chat_template", { type: "string", value: "{{ x }}", lengthOverride: 1n << 62n }],
    ] as [string, KV][]) {
      const dir = fresh();
      const path = join(dir, "h.gguf");
      writeFileSync(
        path,
        buildGGUF(
          [
            ["general.architecture", { type: "string", value: "gemma3" }],
            ["tokenizer.ggml.model", { type: "string", value: "llama" }],
            [key, kv],
          ],
          [],
        ),
      );
      const stats: GGUFReadStats = { largestAllocation: 0 };
      let err: unknown;
      let ms = Infinity; // best of 3: the reader's time, not the shared machine's scheduling noise
      for (let i = 0; i < 3; i++) {
        const t0 = performance.now();
        err = await GGUFFile.open(path, { stats }).catch((e: unknown) => e);
        ms = Math.min(ms, performance.now() - t0);
      }
      expect(err).toBeInstanceOf(GGUFError);
      expect(["E_BOUNDS", "E_TRUNCATED"]).toContain((err as GGUFError).code);
      expect(ms).toBeLessThan(50);
      expect(stats.largestAllocation).toBeLessThanOrEqual(1 << 20);
      await expect(loadTokenizer(path, { cacheDir: null })).rejects.toBeInstanceOf(GGUFError);
    }
  });
});
