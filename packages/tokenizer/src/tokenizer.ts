// The Gemma 3 tokenizer: HF tokenizer.json semantics (Rust `tokenizers`) for the one pipeline Gemma 3
// ships: added-token split → Replace(" " → "▁") → BPE with byte fallback → <bos> template;
// decoding Replace("▁" → " ") → ByteFallback → Fuse. Anything else in a tokenizer.json fails loudly.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { AddedTokenSplitter } from "./added_tokens.js";
import { MAX_MERGE_RANKS, MergeTable, mergeWord } from "./bpe.js";
import { cacheSlot, defaultCacheDir, readCache, writeCache } from "./cache.js";
import {
  ChatTemplate,
  ChatTemplateError,
  chatTemplateSource,
  type ChatMessage,
  type ChatTemplateOptions,
} from "./chat.js";
import { StreamingDetokenizer, type DetokenizerOptions } from "./detokenizer.js";
import {
  checkGGUFVocabSize,
  coreFromGGUF,
  type FromGGUFOptions,
  type GGUFVocab,
} from "./gguf_vocab.js";
import { expandImageTokens, imageTokenConfig, type ImageTokenConfig } from "./image_tokens.js";

/** tokenizer.json as HF writes it (the parts read here). */
export interface TokenizerJson {
  added_tokens?: AddedTokenJson[];
  normalizer?: unknown;
  pre_tokenizer?: unknown;
  post_processor?: unknown;
  decoder?: unknown;
  model: {
    type: string;
    vocab: Record<string, number>;
    merges: (string | [string, string])[];
    unk_token?: string | null;
    byte_fallback?: boolean;
    fuse_unk?: boolean;
    ignore_merges?: boolean;
    dropout?: number | null;
    continuing_subword_prefix?: string | null;
    end_of_word_suffix?: string | null;
  };
}

export interface AddedTokenJson {
  id: number;
  content: string;
  special: boolean;
  normalized?: boolean;
  lstrip?: boolean;
  rstrip?: boolean;
  single_word?: boolean;
}

/** tokenizer_config.json (the parts read here); special tokens may be strings or {content}. */
export type TokenizerConfigJson = Record<string, unknown> & { chat_template?: unknown };

export interface EncodeOptions {
  /** Add the post-processor's special tokens (Gemma 3: a leading <bos>). Default true, as HF. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop tokens marked special (<bos>, <eos>, <pad>, <start_of_turn>, …). Default false, as HF. */
  skipSpecialTokens?: boolean;
}

export interface EncodeChatOptions extends ChatTemplateOptions {
  /** Expand each image placeholder into the image token sequence. Default true. */
  expandImages?: boolean;
  /** Pan & Scan crops per image, in order (default: 0 for every image). */
  numCrops?: readonly number[];
  /** Image token strings and soft tokens per image (default: tokenizer_config.json's, 256). */
  imageTokens?: ImageTokenConfig;
}

export interface EncodedChat {
  /** The prompt text as encoded: the rendered template, image placeholders expanded. */
  text: string;
  /** Its ids, encoded without adding special tokens (the template writes <bos> itself). */
  ids: number[];
}

export interface FromDirOptions {
  /** Directory for the parsed-tokenizer cache; null disables it. Default: defaultCacheDir(). */
  cacheDir?: string | null;
}

export class TokenizerFormatError extends Error {
  override name = "TokenizerFormatError";
}

const SPIECE_SPACE = "\u2581"; // "▁"

function unsupported(what: string, value: unknown): never {
  throw new TokenizerFormatError(
    `Unsupported tokenizer.json ${what}: ${JSON.stringify(value)?.slice(0, 200)} ` +
      `(@gemma3/tokenizer implements the Gemma 3 tokenizer pipeline only)`,
  );
}

interface Replace {
  type: "Replace";
  pattern: { String?: string };
  content: string;
}

function isStringReplace(x: unknown): x is Replace {
  const r = x as Replace;
  return (
    r?.type === "Replace" && typeof r.pattern?.String === "string" && typeof r.content === "string"
  );
}

/** Normalizer: null, or Replace(" " → "▁") alone or in a Sequence. Returns whether spaces map to ▁. */
function checkNormalizer(n: unknown): boolean {
  if (n === null || n === undefined) return false;
  const list =
    (n as { type: string }).type === "Sequence"
      ? (n as { normalizers: unknown[] }).normalizers
      : [n];
  if (list.length === 0) return false;
  if (list.length !== 1 || !isStringReplace(list[0])) unsupported("normalizer", n);
  const r = list[0];
  if (r.pattern.String !== " " || r.content !== SPIECE_SPACE) unsupported("normalizer", n);
  return true;
}

/** Pre-tokenizer: null, or a split on " " (a no-op once the normalizer has replaced spaces). */
function checkPreTokenizer(p: unknown, spacesReplaced: boolean): void {
  if (p === null || p === undefined) return;
  const s = p as { type: string; pattern?: { String?: string }; invert?: boolean };
  if (s.type === "Split" && s.pattern?.String === " " && !s.invert && spacesReplaced) return;
  unsupported("pre_tokenizer", p);
}

export type DecodeStep =
  { kind: "replace"; from: string; to: string } | { kind: "bytefallback" } | { kind: "fuse" };

/** Decoder: a Sequence (or single) of Replace / ByteFallback / Fuse, applied in order. */
function checkDecoder(d: unknown): DecodeStep[] {
  if (d === null || d === undefined) return [];
  const list =
    (d as { type: string }).type === "Sequence" ? (d as { decoders: unknown[] }).decoders : [d];
  return list.map((x): DecodeStep => {
    if (isStringReplace(x)) return { kind: "replace", from: x.pattern.String!, to: x.content };
    const t = (x as { type?: string }).type;
    if (t === "ByteFallback") return { kind: "bytefallback" };
    if (t === "Fuse") return { kind: "fuse" };
    return unsupported("decoder", x);
  });
}

/** Post-processor: TemplateProcessing's "single" template → ids before and after the sequence. */
function checkPostProcessor(p: unknown): { before: number[]; after: number[] } {
  if (p === null || p === undefined) return { before: [], after: [] };
  const t = p as {
    type: string;
    single?: ({ SpecialToken?: { id: string } } | { Sequence?: { id: string } })[];
    special_tokens?: Record<string, { ids: number[] }>;
  };
  if (t.type !== "TemplateProcessing" || !Array.isArray(t.single)) unsupported("post_processor", p);
  const before: number[] = [];
  const after: number[] = [];
  let seen = false;
  for (const item of t.single) {
    if ("Sequence" in item && item.Sequence) {
      if (item.Sequence.id !== "A" || seen) unsupported("post_processor", p);
      seen = true;
    } else if ("SpecialToken" in item && item.SpecialToken) {
      const ids = t.special_tokens?.[item.SpecialToken.id]?.ids;
      if (!ids) unsupported("post_processor special token", item);
      (seen ? after : before).push(...ids);
    } else unsupported("post_processor item", item);
  }
  if (!seen) unsupported("post_processor", p);
  return { before, after };
}

function wellFormed(s: string): string {
  // Lone surrogates cannot be UTF-8: they become U+FFFD, as TextEncoder and Buffer write them.
  const w = s as string & { isWellFormed?(): boolean; toWellFormed?(): string };
  if (w.isWellFormed) return w.isWellFormed() ? s : w.toWellFormed!();
  return Buffer.from(s, "utf8").toString("utf8");
}

/** Strict UTF-8 decode (no BOM stripping), or null when the bytes are not valid UTF-8. */
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
function utf8OrNull(bytes: number[]): string | null {
  try {
    return strictUtf8.decode(Uint8Array.from(bytes));
  } catch {
    return null;
  }
}

/** Special-token strings from tokenizer_config.json (string or {content}), for the chat template. */
export function configToken(
  config: TokenizerConfigJson | undefined,
  key: string,
): string | undefined {
  const v = config?.[key];
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string")
    return (v as { content: string }).content;
  return undefined;
}

/**
 * The parsed form of a tokenizer.json that the tokenizer is built from: what the binary cache
 * (cache.ts) stores, so a warm load skips parsing 33 MB of JSON.
 */
export interface TokenizerCore {
  /** id → token of model.vocab (holes undefined) */
  modelVocab: (string | undefined)[];
  added: { id: number; content: string; special: boolean }[];
  /** [left id, right id, merged id] per merge, in rank order: [3 × num_merges] */
  merges: Int32Array;
  /**
   * Rank of each merge: [num_merges] (lower merges first; equal ranks go leftmost first). Absent:
   * the index, as tokenizer.json. A GGUF SentencePiece vocabulary ranks by score, with ties.
   */
  mergeRanks?: Int32Array;
  /** llama.cpp's add_space_prefix: " " before the text and after each added token. */
  addSpacePrefix?: boolean;
  unkId: number;
  byteFallback: boolean;
  fuseUnk: boolean;
  ignoreMerges: boolean;
  spacesToSpiece: boolean;
  template: { before: number[]; after: number[] };
  decodeSteps: DecodeStep[];
  /** token → id of modelVocab, when already built (not cached) */
  vocabMap?: Map<string, number>;
}

/** Validates a tokenizer.json against the pipeline implemented here and resolves its merges. */
export function coreFromJson(json: TokenizerJson): TokenizerCore {
  if (!json || typeof json !== "object" || !json.model || typeof json.model !== "object")
    throw new TokenizerFormatError('tokenizer.json: expected an object with a "model"');
  const m = json.model;
  if (m.type !== "BPE") unsupported("model.type", m.type);
  if (m.dropout) unsupported("model.dropout", m.dropout);
  if (m.continuing_subword_prefix)
    unsupported("model.continuing_subword_prefix", m.continuing_subword_prefix);
  if (m.end_of_word_suffix) unsupported("model.end_of_word_suffix", m.end_of_word_suffix);
  const spacesToSpiece = checkNormalizer(json.normalizer);
  checkPreTokenizer(json.pre_tokenizer, spacesToSpiece);
  const template = checkPostProcessor(json.post_processor);
  const decodeSteps = checkDecoder(json.decoder);
  const added = (json.added_tokens ?? []).map((t) => {
    if (t.normalized || t.lstrip || t.rstrip || t.single_word)
      unsupported("added token option (normalized/lstrip/rstrip/single_word)", t);
    return { id: t.id, content: t.content, special: !!t.special };
  });

  const modelVocab: (string | undefined)[] = [];
  const vocabMap = new Map<string, number>();
  for (const tok in m.vocab) {
    const id = m.vocab[tok]!;
    modelVocab[id] = tok;
    vocabMap.set(tok, id);
  }
  const lookup = (s: string, merge: unknown): number => {
    const id = vocabMap.get(s);
    if (id === undefined)
      throw new TokenizerFormatError(
        `merge ${JSON.stringify(merge)}: "${s}" is not in the vocabulary`,
      );
    return id;
  };
  const merges = new Int32Array(3 * m.merges.length);
  for (let r = 0; r < m.merges.length; r++) {
    const mg = m.merges[r]!;
    let a: string, b: string;
    if (typeof mg === "string") {
      const parts = mg.split(" ");
      if (parts.length !== 2) throw new TokenizerFormatError(`bad merge "${mg}"`);
      [a, b] = parts as [string, string];
    } else [a, b] = mg;
    merges[3 * r] = lookup(a, mg);
    merges[3 * r + 1] = lookup(b, mg);
    merges[3 * r + 2] = lookup(a + b, mg);
  }
  const unk = m.unk_token ?? null;
  return {
    modelVocab,
    added,
    merges,
    unkId: unk !== null ? (vocabMap.get(unk) ?? -1) : -1,
    byteFallback: m.byte_fallback ?? false,
    fuseUnk: m.fuse_unk ?? false,
    ignoreMerges: m.ignore_merges ?? false,
    spacesToSpiece,
    template,
    decodeSteps,
    vocabMap,
  };
}

export class Gemma3Tokenizer {
  /** id → token string (model vocab and added tokens); holes are undefined. */
  private readonly vocab: (string | undefined)[];
  /** Model vocabulary: token string → id. */
  private readonly vocabMap: Map<string, number> = new Map();
  private readonly added = new Map<string, number>();
  private readonly specialIds = new Set<number>();
  private readonly splitter: AddedTokenSplitter;
  private readonly merges: MergeTable;
  /** Code point → id for single-code-point tokens: the initial BPE symbols. */
  private readonly charIds = new Map<number, number>();
  /** Byte → id of its "<0xXX>" token, -1 if absent. */
  private readonly byteIds = new Int32Array(256).fill(-1);
  /** id → byte for byte-fallback tokens, -1 otherwise. */
  private readonly byteOfId: Int16Array;
  private readonly unkId: number;
  private readonly byteFallback: boolean;
  private readonly fuseUnk: boolean;
  private readonly ignoreMerges: boolean;
  private readonly spacesToSpiece: boolean;
  private readonly addSpacePrefix: boolean;
  private readonly template: { before: number[]; after: number[] };
  private readonly decodeSteps: DecodeStep[];
  private readonly decodesBytes: boolean;
  private readonly cache = new Map<string, number[]>();
  private chat: ChatTemplate | undefined;
  /** tokenizer_config.json, as given (chat_template, special token names). */
  readonly config: TokenizerConfigJson;

  private constructor(core: TokenizerCore, config: TokenizerConfigJson) {
    this.config = config;
    this.spacesToSpiece = core.spacesToSpiece;
    this.addSpacePrefix = core.addSpacePrefix ?? false;
    this.template = core.template;
    this.decodeSteps = core.decodeSteps;
    this.decodesBytes = this.decodeSteps.some((s) => s.kind === "bytefallback");
    this.byteFallback = core.byteFallback;
    this.fuseUnk = core.fuseUnk;
    this.ignoreMerges = core.ignoreMerges;
    this.unkId = core.unkId;

    const mv = core.modelVocab;
    const vocab: (string | undefined)[] = new Array(mv.length);
    if (core.vocabMap) this.vocabMap = core.vocabMap;
    for (let id = 0; id < mv.length; id++) {
      const tok = mv[id];
      if (tok === undefined) continue;
      vocab[id] = tok;
      if (!core.vocabMap) this.vocabMap.set(tok, id);
      const cp = tok.codePointAt(0)!;
      if (tok.length === (cp > 0xffff ? 2 : 1)) this.charIds.set(cp, id);
    }
    for (const t of core.added) {
      vocab[t.id] = t.content;
      this.added.set(t.content, t.id);
      if (t.special) this.specialIds.add(t.id);
    }
    this.vocab = vocab;
    this.splitter = new AddedTokenSplitter(core.added);
    for (let b = 0; b < 256; b++) {
      const id = this.vocabMap.get(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
      if (id !== undefined) this.byteIds[b] = id;
    }
    // HF's ByteFallback decoder test: exactly "<0xHH>".
    this.byteOfId = new Int16Array(vocab.length).fill(-1);
    for (let id = 0; id < vocab.length; id++) {
      const t = vocab[id];
      if (t !== undefined && t.length === 6 && t.startsWith("<0x") && t.endsWith(">")) {
        const h = t.slice(3, 5);
        if (/^[0-9a-fA-F]{2}$/.test(h)) this.byteOfId[id] = parseInt(h, 16);
      }
    }
    const m = core.merges;
    const ranks = core.mergeRanks;
    // mergeWord orders (rank, position) in one double: ranks must stay below 2^20.
    const numRanks = ranks ? ranks.reduce((a, r) => Math.max(a, r + 1), 0) : m.length / 3;
    if (numRanks > MAX_MERGE_RANKS)
      throw new TokenizerFormatError(
        `${numRanks} merge ranks: more than the ${MAX_MERGE_RANKS} supported`,
      );
    this.merges = new MergeTable(m.length / 3);
    for (let r = 0, i = 0; i < m.length; r++, i += 3)
      this.merges.set(m[i]!, m[i + 1]!, ranks ? ranks[r]! : r, m[i + 2]!);
  }

  /** From the parsed tokenizer.json and (optionally) tokenizer_config.json. */
  static fromObjects(tokenizerJson: unknown, tokenizerConfig: unknown = {}): Gemma3Tokenizer {
    return new Gemma3Tokenizer(
      coreFromJson(tokenizerJson as TokenizerJson),
      (tokenizerConfig ?? {}) as TokenizerConfigJson,
    );
  }

  /**
   * From the tokenizer embedded in a GGUF file (its tokenizer.ggml.* metadata, read by the caller:
   * @gemma3/model's ggufTokenizerInfo gives this object). "llama" (SentencePiece) vocabularies merge
   * by score, as llama.cpp; a vocabulary with merges runs them as BPE. The chat template comes from
   * tokenizer.chat_template, bos/eos/pad/unk names from their ids.
   * @throws TokenizerFormatError on missing or inconsistent metadata (counts that disagree, ids out
   *   of range, an unsupported tokenizer model), naming the key
   */
  static fromGGUF(vocab: GGUFVocab, opts: FromGGUFOptions = {}): Gemma3Tokenizer {
    const { core, config } = coreFromGGUF(vocab, opts);
    return new Gemma3Tokenizer(core, config as TokenizerConfigJson);
  }

  /**
   * The tokenizer embedded in the GGUF file `file`, cached like fromDir's (keyed by the GGUF's path,
   * size, mtime and inode): a warm load skips reading the metadata and building the merges.
   * @param read returns the file's tokenizer.ggml.* metadata; called on a cache miss only
   */
  static async fromGGUFFile(
    file: string,
    read: () => GGUFVocab | Promise<GGUFVocab>,
    opts: FromGGUFOptions & FromDirOptions = {},
  ): Promise<Gemma3Tokenizer> {
    const cacheDir = opts.cacheDir === undefined ? defaultCacheDir() : opts.cacheDir;
    const slot = cacheDir ? await cacheSlot(file, cacheDir).catch(() => undefined) : undefined;
    const hit = slot ? await readCache(slot.path, slot.key) : null;
    if (hit) {
      const n = hit.modelVocab.length;
      if (opts.vocabSize !== undefined && n !== opts.vocabSize)
        checkGGUFVocabSize(n, opts.vocabSize);
      const { config, ...core } = hit;
      return new Gemma3Tokenizer(core, (config ?? {}) as TokenizerConfigJson);
    }
    const { core, config } = coreFromGGUF(await read(), opts);
    if (slot) await writeCache(slot.path, slot.key, core, config);
    return new Gemma3Tokenizer(core, config as TokenizerConfigJson);
  }

  /**
   * From a model directory holding tokenizer.json (and usually tokenizer_config.json). The parsed
   * tokenizer is cached in `opts.cacheDir` (default: defaultCacheDir(), ~/.cache/gemma3; null: no
   * cache), which takes a warm load from ~0.9 s to ~0.15 s.
   */
  static async fromDir(dir: string, opts: FromDirOptions = {}): Promise<Gemma3Tokenizer> {
    const read = async (name: string, required: boolean): Promise<unknown> => {
      let text: string;
      try {
        text = await readFile(join(dir, name), "utf8");
      } catch (e) {
        if (!required && (e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
        throw new Error(`cannot read ${join(dir, name)}: ${(e as Error).message}`);
      }
      try {
        return JSON.parse(text);
      } catch (e) {
        throw new Error(`${join(dir, name)}: invalid JSON: ${(e as Error).message}`);
      }
    };
    const cacheDir = opts.cacheDir === undefined ? defaultCacheDir() : opts.cacheDir;
    const slot = cacheDir
      ? await cacheSlot(join(dir, "tokenizer.json"), cacheDir).catch(() => undefined)
      : undefined;
    let core = slot ? await readCache(slot.path, slot.key) : null;
    if (!core) {
      core = coreFromJson((await read("tokenizer.json", true)) as TokenizerJson);
      if (slot) await writeCache(slot.path, slot.key, core);
    }
    const cfg = await read("tokenizer_config.json", false);
    const config = { ...((cfg ?? {}) as TokenizerConfigJson) };
    // Newer saves keep the template beside the config: chat_template.jinja or chat_template.json.
    if (config.chat_template === undefined) {
      const jinja = await readFile(join(dir, "chat_template.jinja"), "utf8").catch(() => undefined);
      const viaJson = (await read("chat_template.json", false)) as
        { chat_template?: unknown } | undefined;
      const t = jinja ?? viaJson?.chat_template;
      if (t !== undefined) config.chat_template = t;
    }
    return new Gemma3Tokenizer(core, config);
  }

  /** Number of ids (highest id + 1), added tokens included: 262145 for Gemma 3. */
  get vocabSize(): number {
    return this.vocab.length;
  }

  /** Id of a token string (added tokens first, then the model vocabulary), or undefined. */
  tokenToId(token: string): number | undefined {
    const a = this.added.get(token);
    if (a !== undefined) return a;
    return this.vocabMap.get(token);
  }

  /** Token string of an id ("▁world", "<0xE2>", "<bos>"), or undefined. */
  idToToken(id: number): string | undefined {
    return this.vocab[id];
  }

  /** Whether the id is an added token marked special (<bos>, <start_of_turn>, <image_soft_token>, …). */
  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  /** Ids of all special tokens, ascending. */
  get specialTokenIds(): number[] {
    return [...this.specialIds].sort((a, b) => a - b);
  }

  /** Token ids of `text`; with addSpecialTokens (default) the post-processor's <bos> leads. */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const special = opts.addSpecialTokens ?? true;
    const out: number[] = special ? [...this.template.before] : [];
    text = wellFormed(text);
    let afterAdded = true;
    for (const p of this.splitter.split(text)) {
      if (p.id >= 0) out.push(p.id);
      else {
        let word = text.slice(p.start, p.end);
        if (this.addSpacePrefix && afterAdded) word = " " + word;
        const ids = this.encodeWord(word);
        for (let i = 0; i < ids.length; i++) out.push(ids[i]!);
      }
      afterAdded = p.id >= 0;
    }
    if (special) out.push(...this.template.after);
    return out;
  }

  /** Token strings of `text` (the pieces HF's `tokenize` / `encode(...).tokens` give). */
  tokenize(text: string, opts: EncodeOptions = {}): string[] {
    return this.encode(text, opts).map((id) => this.vocab[id]!);
  }

  /** BPE over one normalized span between added tokens (the whole span is one word for Gemma). */
  private encodeWord(word: string): number[] {
    const short = word.length < 256;
    if (short) {
      const hit = this.cache.get(word);
      if (hit) return hit;
    }
    let ids: number[] | undefined;
    if (this.ignoreMerges) {
      // HF: with ignore_merges a word that is itself in the vocabulary is taken whole.
      const w = this.normalize(word);
      const id = this.vocabMap.get(w);
      if (id !== undefined) ids = [id];
    }
    if (!ids) {
      const syms = new Int32Array(word.length * 3);
      ids = mergeWord(this.merges, syms, this.initialSymbols(word, syms));
    }
    if (short) {
      if (this.cache.size >= 10_000) this.cache.clear();
      this.cache.set(word, ids);
    }
    return ids;
  }

  private normalize(word: string): string {
    return this.spacesToSpiece ? word.replaceAll(" ", SPIECE_SPACE) : word;
  }

  /** One symbol per character; unknown characters become their UTF-8 byte tokens (or <unk>). */
  private initialSymbols(word: string, syms: Int32Array): number {
    let n = 0;
    let lastUnk = false;
    for (let i = 0; i < word.length; i++) {
      let cp = word.charCodeAt(i);
      if (cp >= 0xd800 && cp < 0xdc00 && i + 1 < word.length) {
        const lo = word.charCodeAt(i + 1);
        if (lo >= 0xdc00 && lo < 0xe000) {
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          i++;
        }
      }
      if (cp === 0x20 && this.spacesToSpiece) cp = 0x2581;
      const id = this.charIds.get(cp);
      if (id !== undefined) {
        syms[n++] = id;
        lastUnk = false;
        continue;
      }
      if (this.byteFallback) {
        const bytes = utf8Bytes(cp);
        if (bytes.every((b) => this.byteIds[b]! >= 0)) {
          for (const b of bytes) syms[n++] = this.byteIds[b]!;
          lastUnk = false;
          continue;
        }
      }
      if (this.unkId < 0)
        throw new Error(`character U+${cp.toString(16).toUpperCase()} is not in the vocabulary`);
      if (!(this.fuseUnk && lastUnk)) syms[n++] = this.unkId;
      lastUnk = true;
    }
    return n;
  }

  /**
   * Text of `ids`. Unknown ids are skipped (as HF does); a run of byte tokens that is not valid
   * UTF-8 becomes one U+FFFD per byte (HF's ByteFallback decoder).
   */
  decode(ids: Iterable<number>, opts: DecodeOptions = {}): string {
    const skip = opts.skipSpecialTokens ?? false;
    const parts: string[] = [];
    let bytes: number[] = [];
    const flush = () => {
      const s = utf8OrNull(bytes);
      parts.push(s ?? "\ufffd".repeat(bytes.length));
      bytes = [];
    };
    for (const id of ids) {
      const tok = this.vocab[id];
      if (tok === undefined || (skip && this.specialIds.has(id))) continue;
      const b = this.decodesBytes ? this.byteOfId[id]! : -1;
      if (b >= 0) {
        bytes.push(b);
        continue;
      }
      if (bytes.length) flush();
      parts.push(this.pieceText(tok));
    }
    if (bytes.length) flush();
    return parts.join("");
  }

  /** A token's text after the decoder's Replace steps ("▁world" → " world"). */
  pieceText(token: string): string {
    for (const s of this.decodeSteps)
      if (s.kind === "replace") token = token.replaceAll(s.from, s.to);
    return token;
  }

  /** Byte value of a byte-fallback token id ("<0xE2>" → 0xE2), or -1. */
  byteOf(id: number): number {
    return this.decodesBytes ? (this.byteOfId[id] ?? -1) : -1;
  }

  /** The chat template source (tokenizer_config.json chat_template), if any. */
  get chatTemplate(): string | undefined {
    return chatTemplateSource(this.config);
  }

  /**
   * Renders a conversation with the model's chat template. Gemma 3: "<bos>", system text folded
   * into the first user turn, "<start_of_turn>user\n…<end_of_turn>\n", "<start_of_image>" per
   * image part. Throws ChatTemplateError with the template's own message when roles do not alternate.
   */
  applyChatTemplate(messages: readonly ChatMessage[], opts: ChatTemplateOptions = {}): string {
    if (!this.chat) {
      const src = this.chatTemplate;
      if (src === undefined)
        throw new ChatTemplateError("this tokenizer has no chat_template (tokenizer_config.json)");
      const vars: Record<string, string> = {};
      for (const k of [
        "bos_token",
        "eos_token",
        "pad_token",
        "unk_token",
        "boi_token",
        "eoi_token",
        "image_token",
      ]) {
        const v = configToken(this.config, k);
        if (v !== undefined) vars[k] = v;
      }
      this.chat = new ChatTemplate(src, vars);
    }
    return this.chat.render(messages, opts);
  }

  /**
   * Chat template → image expansion → ids, encoded without adding special tokens: the template
   * writes the one <bos> (HF's processor adds a second; we do not).
   */
  encodeChat(messages: readonly ChatMessage[], opts: EncodeChatOptions = {}): EncodedChat {
    let text = this.applyChatTemplate(messages, opts);
    if (opts.expandImages ?? true) {
      const cfg = opts.imageTokens ?? imageTokenConfig(undefined, this.config);
      const n = text.split(cfg.boiToken).length - 1;
      if (n > 0 || (opts.numCrops?.length ?? 0) > 0)
        text = expandImageTokens(text, opts.numCrops ?? n, cfg);
    }
    return { text, ids: this.encode(text, { addSpecialTokens: false }) };
  }

  /** An incremental decoder for generated ids: text comes out only as complete UTF-8. */
  detokenizer(opts: DetokenizerOptions = {}): StreamingDetokenizer {
    return new StreamingDetokenizer(this, opts);
  }
}

/** UTF-8 bytes of one code point (surrogates excluded by the caller's well-formed input). */
function utf8Bytes(cp: number): number[] {
  if (cp < 0x80) return [cp];
  if (cp < 0x800) return [0xc0 | (cp >> 6), 0x80 | (cp & 63)];
  if (cp < 0x10000) return [0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63)];
  return [0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 63), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63)];
}
