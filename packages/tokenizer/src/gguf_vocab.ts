// The tokenizer embedded in a GGUF file (tokenizer.ggml.* metadata), as the TokenizerCore the
// tokenizer.json path builds, so the same Gemma3Tokenizer runs on it. Plain data in: the model
// package reads the file and hands the arrays over (this package never touches the native addon).
//
// What llama.cpp's convert_hf_to_gguf.py writes for Gemma 3 (Gemma3Model.set_vocab →
// _set_vocab_sentencepiece, gguf-py SpecialVocab): tokenizer.ggml.model "llama" (SentencePiece),
// tokens = the tokenizer.model pieces padded with "[PAD{i}]" (type UNUSED, score -10000) up to
// config vocab_size; scores = the pieces' SentencePiece scores; token_type 1 normal, 2 unknown,
// 3 control, 4 user-defined, 5 unused, 6 byte; every tokenizer_config.json added token gets score
// -1000 and type CONTROL when it is special or "looks special" (<mask>, <unusedN>, …), else
// USER_DEFINED with "▁" replaced by " " ("pre-normalize user-defined spaces"); bos/eos/unk/pad ids,
// add_bos_token, add_eos_token, add_space_prefix false, tokenizer.chat_template.
//
// How llama.cpp tokenizes that (src/llama-vocab.cpp): control, user-defined and unknown tokens are
// cut out of the raw text first (tokenizer_st_partition); each remaining fragment has " " → "▁"
// (llama_escape_whitespace) and goes through llm_tokenizer_spm_session: one symbol per character,
// repeatedly merge the adjacent pair whose concatenation is a token of highest score (leftmost on
// ties), then characters that are no token become their <0xXX> byte tokens.
//
// HF's tokenizer.json for Gemma is the same tokenizer as a BPE: its merges are every split of every
// piece into two pieces, ranked by the piece's score (transformers convert_slow_tokenizer
// generate_merges). So the SentencePiece merge step is run here as BPE over a pair table built the
// same way from the GGUF tokens, ranked by score: highest score first, leftmost on ties, exactly
// llama.cpp's bigram order. Where llama.cpp and tokenizer.json could part (see README), the
// choice made here is the one that gives tokenizer.json's ids, which the tests check on the
// shared corpus.
import { TokenizerFormatError, type DecodeStep, type TokenizerCore } from "./tokenizer.js";

/** llama.cpp's llama_token_type (gguf-py TokenType). */
export const GGUFTokenType = {
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

/**
 * The tokenizer.ggml.* metadata of a GGUF file, as the model package reads it (field names match
 * @gemma3/model's GGUFTokenizerInfo, so that object can be passed as it is).
 */
export interface GGUFVocab {
  /** tokenizer.ggml.model: "llama" (SentencePiece, Gemma 3) or a BPE with merges. */
  model: string | null;
  /** tokenizer.ggml.tokens: id → token text. */
  tokens: readonly string[] | null;
  /** tokenizer.ggml.scores: one per token (required for "llama"). */
  scores?: ArrayLike<number> | null;
  /** tokenizer.ggml.token_type: one per token (GGUFTokenType). */
  tokenTypes?: ArrayLike<number> | null;
  /** tokenizer.ggml.merges: "left right", in rank order (BPE models). */
  merges?: readonly string[] | null;
  bosTokenId?: number | null;
  eosTokenId?: number | null;
  eotTokenId?: number | null;
  padTokenId?: number | null;
  unkTokenId?: number | null;
  addBosToken?: boolean | null;
  addEosToken?: boolean | null;
  /** tokenizer.ggml.add_space_prefix (llama.cpp's default for "llama" when absent: true). */
  addSpacePrefix?: boolean | null;
  /** tokenizer.chat_template */
  chatTemplate?: string | null;
}

export interface FromGGUFOptions {
  /**
   * The model's vocabulary size (token_embd rows): the token count must equal it, as llama.cpp
   * requires. Unchecked when omitted.
   */
  vocabSize?: number;
}

const SPIECE_SPACE = "\u2581";
/** Most tokens accepted (llama_token is int32; Gemma 3 has 262,208). */
export const GGUF_MAX_TOKENS = 1 << 24;

/**
 * Added tokens the converter marks CONTROL only because they "look special"
 * (convert_hf_to_gguf.py does_token_look_special, the Gemma entries): tokenizer.json has them as
 * added tokens with special = false, so decode(…, skipSpecialTokens) keeps them. "<pad>" is in that
 * list too but is special in Gemma's tokenizer.json.
 */
function looksSpecialOnly(text: string): boolean {
  return (
    text === "<mask>" ||
    text === "<2mass>" ||
    text === "[@BOS@]" ||
    (text.startsWith("<unused") && text.endsWith(">"))
  );
}

function fail(msg: string): never {
  throw new TokenizerFormatError(`GGUF tokenizer: ${msg}`);
}

function checkId(name: string, id: number | null | undefined, n: number): number | undefined {
  if (id === null || id === undefined) return undefined;
  if (!Number.isSafeInteger(id) || id < 0 || id >= n)
    fail(`tokenizer.ggml.${name} ${id} is not a token id (the vocabulary has ${n} tokens)`);
  return id;
}

/** llama.cpp requires as many tokens as token_embd.weight has rows. */
export function checkGGUFVocabSize(tokens: number, vocabSize: number): void {
  if (tokens !== vocabSize)
    fail(
      `${tokens} tokens, but the model's vocabulary (token_embd.weight rows) is ${vocabSize}: ` +
        `the embedded tokenizer does not belong to these weights`,
    );
}

/** The Gemma decoder: "▁" → " ", byte fallback, fuse (tokenizer.json's, and llama.cpp's SPM). */
const DECODE_STEPS: DecodeStep[] = [
  { kind: "replace", from: SPIECE_SPACE, to: " " },
  { kind: "bytefallback" },
  { kind: "fuse" },
];

/** The parsed tokenizer of GGUF metadata, plus the tokenizer_config.json-like settings it implies. */
export function coreFromGGUF(
  v: GGUFVocab,
  opts: FromGGUFOptions = {},
): { core: TokenizerCore; config: Record<string, unknown> } {
  if (!v || typeof v !== "object") fail("no metadata given");
  const tokens = v.tokens;
  if (!tokens) fail("tokenizer.ggml.tokens is missing (the file has no embedded tokenizer)");
  const n = tokens.length;
  if (n === 0) fail("tokenizer.ggml.tokens is empty");
  if (n > GGUF_MAX_TOKENS) fail(`${n} tokens is more than the ${GGUF_MAX_TOKENS} accepted`);
  if (opts.vocabSize !== undefined && n !== opts.vocabSize) checkGGUFVocabSize(n, opts.vocabSize);
  const model = v.model ?? fail("tokenizer.ggml.model is missing");
  const types = v.tokenTypes ?? null;
  if (types && types.length !== n)
    fail(`tokenizer.ggml.token_type has ${types.length} entries for ${n} tokens`);
  const scores = v.scores ?? null;
  if (scores && scores.length !== n)
    fail(`tokenizer.ggml.scores has ${scores.length} entries for ${n} tokens`);
  const typeOf = (id: number): number => (types ? types[id]! : GGUFTokenType.NORMAL);
  if (types)
    for (let id = 0; id < n; id++) {
      const t = types[id]!;
      if (!Number.isInteger(t) || t < 1 || t > 6)
        fail(`token ${id} has type ${t} (llama_token_type is 1…6)`);
    }

  const bos = checkId("bos_token_id", v.bosTokenId, n);
  const eos = checkId("eos_token_id", v.eosTokenId, n);
  checkId("eot_token_id", v.eotTokenId, n);
  const pad = checkId("padding_token_id", v.padTokenId, n);
  const unk = checkId("unknown_token_id", v.unkTokenId, n);

  // Token texts as tokenizer.json has them: user-defined tokens get their "▁" back (the converter
  // replaced it by " "); unused padding ("[PAD262150]", not in tokenizer.json) is a hole.
  const modelVocab: (string | undefined)[] = new Array(n);
  const added: TokenizerCore["added"] = [];
  for (let id = 0; id < n; id++) {
    const text = tokens[id]!;
    if (typeof text !== "string") fail(`token ${id} is not a string`);
    const type = typeOf(id);
    if (type === GGUFTokenType.UNUSED) continue;
    if (type === GGUFTokenType.USER_DEFINED) {
      const hf = text.replaceAll(" ", SPIECE_SPACE);
      modelVocab[id] = hf;
      // Matched in raw text as tokenizer.json's "▁▁" (llama.cpp would match "  " there; a space
      // run becomes the same token either way, as "▁" runs merge first below).
      added.push({ id, content: hf, special: false });
    } else {
      modelVocab[id] = text;
      if (type === GGUFTokenType.CONTROL || type === GGUFTokenType.UNKNOWN)
        added.push({ id, content: text, special: !looksSpecialOnly(text) });
    }
  }

  let merges: Int32Array;
  let mergeRanks: Int32Array | undefined;
  if (model === "llama") {
    if (!scores) fail('tokenizer.ggml.scores is missing (a "llama" tokenizer merges by score)');
    ({ merges, ranks: mergeRanks } = spmPairs(modelVocab, scores, typeOf));
  } else {
    const m = v.merges;
    if (!m || m.length === 0)
      fail(
        `tokenizer.ggml.model "${model}" without tokenizer.ggml.merges: only SentencePiece ` +
          `("llama") or a BPE with merges can be read`,
      );
    if (!modelVocab.includes(SPIECE_SPACE) || !modelVocab.includes("<0x00>"))
      fail(
        `tokenizer.ggml.model "${model}" is not a SentencePiece-style vocabulary ("▁" spaces, ` +
          `<0xXX> byte tokens): byte-level BPE is not the Gemma 3 tokenizer`,
      );
    merges = bpeMerges(m, modelVocab);
  }

  const core: TokenizerCore = {
    modelVocab,
    added,
    merges,
    ...(mergeRanks ? { mergeRanks } : {}),
    unkId: unk ?? -1,
    byteFallback: true,
    fuseUnk: true,
    ignoreMerges: false,
    spacesToSpiece: true,
    // llama.cpp's default for a "llama" vocabulary without the key is to add the space prefix.
    addSpacePrefix: v.addSpacePrefix ?? model === "llama",
    template: {
      before: (v.addBosToken ?? true) && bos !== undefined ? [bos] : [],
      after: v.addEosToken && eos !== undefined ? [eos] : [],
    },
    decodeSteps: DECODE_STEPS,
  };
  const config: Record<string, unknown> = {};
  if (v.chatTemplate != null) config.chat_template = v.chatTemplate;
  const name = (id: number | undefined) => (id === undefined ? undefined : modelVocab[id]);
  for (const [k, id] of [
    ["bos_token", bos],
    ["eos_token", eos],
    ["pad_token", pad],
    ["unk_token", unk],
  ] as const) {
    const t = name(id);
    if (t !== undefined) config[k] = t;
  }
  if (v.addBosToken != null) config.add_bos_token = v.addBosToken;
  if (v.addEosToken != null) config.add_eos_token = v.addEosToken;
  return { core, config };
}

/**
 * The SentencePiece merge step as a pair table: for every token, every split into two tokens is a
 * pair (left id, right id) → token. Ranked as HF's generate_merges orders tokenizer.json's merges:
 * by the token's score, highest first, then the longer left part first; pairs of equal rank go
 * leftmost first (llama.cpp's llm_bigram_spm order). Texts are tokenizer.json's (user-defined "▁"
 * restored); unused tokens take no part. User-defined tokens rank above everything: their
 * SentencePiece score is 0, above every normal piece (the converter writes -1000), so "▁" runs
 * merge first, as in tokenizer.json.
 * @returns merges [left, right, merged] × pairs (int32) and their ranks
 */
function spmPairs(
  modelVocab: readonly (string | undefined)[],
  scores: ArrayLike<number>,
  typeOf: (id: number) => number,
): { merges: Int32Array; ranks: Int32Array } {
  const n = modelVocab.length;
  const score = new Float64Array(n);
  let maxLen = 0;
  for (let id = 0; id < n; id++) {
    const t = modelVocab[id];
    if (t === undefined) continue;
    const s = scores[id]!;
    if (typeof s !== "number" || Number.isNaN(s)) fail(`token ${id} has score ${s}`);
    score[id] = typeOf(id) === GGUFTokenType.USER_DEFINED ? Infinity : s;
    if (t.length > maxLen) maxLen = t.length;
  }
  const table = new TextTable(modelVocab);
  const ids = table.ids();
  const ascending = Float64Array.from(ids, (id) => score[id]!).sort();
  const scoreRank = new Map<number, number>(); // 0 = highest score
  for (let i = ascending.length - 1; i >= 0; i--)
    if (!scoreRank.has(ascending[i]!)) scoreRank.set(ascending[i]!, scoreRank.size);

  let buf = new Int32Array(3 << 16); // [left, right, merged] per pair
  let keys = new Float64Array(1 << 16);
  let m = 0;
  const pre = new Int32Array(maxLen + 1);
  const suf = new Int32Array(maxLen + 1);
  const pow = new Int32Array(maxLen + 1);
  pow[0] = 1;
  for (let i = 1; i <= maxLen; i++) pow[i] = Math.imul(pow[i - 1]!, HASH_BASE);
  for (const id of ids) {
    const text = modelVocab[id]!;
    const L = text.length;
    if (L < 2) continue;
    for (let i = 0; i < L; i++)
      pre[i + 1] = (Math.imul(pre[i]!, HASH_BASE) + text.charCodeAt(i)) | 0;
    suf[L] = 0;
    for (let i = L - 1; i >= 0; i--)
      suf[i] = (Math.imul(text.charCodeAt(i), pow[L - 1 - i]!) + suf[i + 1]!) | 0;
    const r = scoreRank.get(score[id]!)!;
    // Longer left part first: split positions from the right end.
    for (let i = L - 1; i >= 1; i--) {
      const c = text.charCodeAt(i);
      if (c >= 0xdc00 && c < 0xe000) continue; // never split a surrogate pair
      const a = table.find(text, 0, i, pre[i]!);
      if (a < 0) continue;
      const b = table.find(text, i, L, suf[i]!);
      if (b < 0) continue;
      if (m === keys.length) {
        const k2 = new Float64Array(2 * m);
        k2.set(keys);
        keys = k2;
        const b2 = new Int32Array(6 * m);
        b2.set(buf);
        buf = b2;
      }
      buf[3 * m] = a;
      buf[3 * m + 1] = b;
      buf[3 * m + 2] = id;
      // (score rank, left length descending) as one exact number: rank < 2^24, lengths < 2^26
      keys[m++] = r * 2 ** 26 + (2 ** 26 - 1 - Math.min(i, 2 ** 26 - 1));
    }
  }
  const sorted = keys.slice(0, m).sort();
  let u = 0; // distinct keys, in place
  for (let i = 0; i < m; i++) if (i === 0 || sorted[i] !== sorted[u - 1]) sorted[u++] = sorted[i]!;
  const ranks = new Int32Array(m);
  for (let i = 0; i < m; i++) {
    // dense rank: binary search of the key among the distinct keys
    const k = keys[i]!;
    let lo = 0;
    let hi = u - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sorted[mid]! < k) lo = mid + 1;
      else hi = mid;
    }
    ranks[i] = lo;
  }
  return { merges: buf.slice(0, 3 * m), ranks };
}

const HASH_BASE = 0x01000193;

/**
 * Token texts in an open-addressing table keyed by a polynomial hash of their UTF-16 code units
 * (Horner, base HASH_BASE, mod 2^32), so that a substring is looked up from its rolling hash
 * without being sliced out: 1.2 M split look-ups for Gemma's 262k tokens.
 */
class TextTable {
  private readonly slotId: Int32Array;
  private readonly slotHash: Int32Array;
  private readonly mask: number;

  constructor(private readonly texts: readonly (string | undefined)[]) {
    let cap = 1024;
    while (cap < texts.length * 2) cap *= 2;
    this.mask = cap - 1;
    this.slotId = new Int32Array(cap).fill(-1);
    this.slotHash = new Int32Array(cap);
    for (let id = 0; id < texts.length; id++) {
      const t = texts[id];
      if (t === undefined) continue;
      let h = 0;
      for (let i = 0; i < t.length; i++) h = (Math.imul(h, HASH_BASE) + t.charCodeAt(i)) | 0;
      // llama.cpp's token_to_id: a repeated text maps to its last id
      const at = this.slot(t, 0, t.length, h);
      this.slotId[at] = id;
      this.slotHash[at] = h;
    }
  }

  private static mix(h: number, len: number): number {
    let x = Math.imul(h ^ len, 0x9e3779b1);
    x ^= x >>> 15;
    return Math.imul(x, 0x85ebca77) ^ (x >>> 13);
  }

  /** The slot holding s[start, end) (hash h), or the empty slot where it would go. */
  private slot(s: string, start: number, end: number, h: number): number {
    const len = end - start;
    for (let i = TextTable.mix(h, len) & this.mask; ; i = (i + 1) & this.mask) {
      const id = this.slotId[i]!;
      if (id < 0) return i;
      if (this.slotHash[i] !== h) continue;
      const t = this.texts[id]!;
      if (t.length !== len) continue;
      let k = 0;
      while (k < len && t.charCodeAt(k) === s.charCodeAt(start + k)) k++;
      if (k === len) return i;
    }
  }

  /** Id of the token s[start, end) whose hash is h, or -1. */
  find(s: string, start: number, end: number, h: number): number {
    return this.slotId[this.slot(s, start, end, h)]!;
  }

  /** Ids of the distinct texts (the last id of a repeated text), ascending. */
  ids(): Int32Array {
    return this.slotId.filter((id) => id >= 0).sort();
  }
}

/** tokenizer.ggml.merges ("left right") → [left, right, merged] ids, in rank order. */
function bpeMerges(m: readonly string[], modelVocab: readonly (string | undefined)[]): Int32Array {
  const byText = new Map<string, number>();
  modelVocab.forEach((t, id) => t !== undefined && byText.set(t, id));
  const out = new Int32Array(3 * m.length);
  const lookup = (s: string, r: number): number => {
    const id = byText.get(s);
    if (id === undefined)
      fail(`tokenizer.ggml.merges[${r}] ${JSON.stringify(m[r])}: "${s}" is not a token`);
    return id;
  };
  for (let r = 0; r < m.length; r++) {
    const mg = m[r]!;
    const sp = typeof mg === "string" ? mg.indexOf(" ") : -1;
    if (sp <= 0 || sp === mg.length - 1 || mg.indexOf(" ", sp + 1) >= 0)
      fail(`tokenizer.ggml.merges[${r}] ${JSON.stringify(mg)} is not "left right"`);
    const a = mg.slice(0, sp);
    const b = mg.slice(sp + 1);
    out[3 * r] = lookup(a, r);
    out[3 * r + 1] = lookup(b, r);
    out[3 * r + 2] = lookup(a + b, r);
  }
  return out;
}
