// What llama.cpp's convert_hf_to_gguf.py writes as the tokenizer of a Gemma 3 checkpoint
// (Gemma3Model.set_vocab → TextModel._set_vocab_sentencepiece / _create_vocab_sentencepiece,
// gguf-py SpecialVocab, add_space_prefix false), built from tokenizer.json + tokenizer_config.json.
// Shared by the tokenizer tests and the model package's GGUF writer (test/gguf_writer.ts).
//
// The converter reads the SentencePiece tokenizer.model, which is not available offline; its
// pieces are tokenizer.json's vocabulary (HF's GemmaConverter copies them), and its scores are
// reconstructed: 0 for control, user-defined and byte pieces, and -(id - first normal id) for
// normal pieces (the SentencePiece BPE trainer's -index). `hfMergesFromScores` checks the
// reconstruction: HF derives tokenizer.json's merges from the scores (convert_slow_tokenizer
// generate_merges), and these scores give back all 514,906 merges in the same order.
import type { GGUFVocab } from "../src/index.js";
import type { AddedTokenJson, TokenizerJson } from "../src/tokenizer.js";

/** gguf-py TokenType */
const T = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

const isByte = (s: string) => /^<0x[0-9A-Fa-f]{2}>$/.test(s);

/** convert_hf_to_gguf.py TextModel.does_token_look_special */
export function doesTokenLookSpecial(t: string): boolean {
  return (
    ["<pad>", "<mask>", "<2mass>", "[@BOS@]"].includes(t) ||
    (t.startsWith("<|") && t.endsWith("|>")) ||
    (t.startsWith("<｜") && t.endsWith("｜>")) ||
    (t.startsWith("<unused") && t.endsWith(">"))
  );
}

/** The SentencePiece model as the converter sees it: pieces, (reconstructed) scores, types. */
export function sentencePieceModel(tok: TokenizerJson): {
  pieces: string[];
  scores: Float64Array;
  types: Uint8Array;
} {
  const pieces: string[] = [];
  for (const [p, id] of Object.entries(tok.model.vocab)) pieces[id] = p;
  const added = new Map<number, AddedTokenJson>((tok.added_tokens ?? []).map((t) => [t.id, t]));
  const unk = tok.model.unk_token;
  const scores = new Float64Array(pieces.length);
  const types = new Uint8Array(pieces.length);
  let firstNormal = -1;
  for (let id = 0; id < pieces.length; id++) {
    const p = pieces[id]!;
    const a = added.get(id);
    // SentencePiece types: IsUnknown, IsControl (the special added tokens), IsByte; user-defined
    // pieces read as NORMAL (the converter has no branch for them; added_tokens_decoder decides).
    types[id] = p === unk ? T.UNKNOWN : a?.special ? T.CONTROL : isByte(p) ? T.BYTE : T.NORMAL;
    if (a || isByte(p)) continue; // score 0
    if (firstNormal < 0) firstNormal = id;
    scores[id] = -(id - firstNormal);
  }
  return { pieces, scores, types };
}

/** A GGUF tokenizer as the converter writes it (types and scores as stored in the file). */
export interface ConvertedVocab extends GGUFVocab {
  model: "llama";
  pre: "default";
  tokens: string[];
  scores: Float32Array;
  tokenTypes: Int32Array;
}

/**
 * The tokenizer.ggml.* values convert_hf_to_gguf.py writes for a Gemma 3 checkpoint.
 * @param vocabSize config.json's vocab_size (text_config's for Gemma3ForConditionalGeneration):
 *   262144 (1B) or 262208 (4B and up); tokens are padded ("[PAD{i}]") or cut to it
 */
export function convertGemma3Vocab(
  tok: TokenizerJson,
  tokConfig: Record<string, unknown>,
  vocabSize: number,
): ConvertedVocab {
  const sp = sentencePieceModel(tok);
  // _create_vocab_sentencepiece
  const tokens = Array.from({ length: vocabSize }, (_, i) => `[PAD${i}]`);
  const scores = new Float32Array(vocabSize).fill(-10000);
  const types = new Int32Array(vocabSize).fill(T.UNUSED);
  for (let id = 0; id < sp.pieces.length && id < vocabSize; id++) {
    tokens[id] = sp.pieces[id]!;
    scores[id] = sp.scores[id]!;
    types[id] = sp.types[id]!;
  }
  const decoder = (tokConfig.added_tokens_decoder ?? {}) as Record<
    string,
    { content: string; special?: boolean }
  >;
  for (const [key, data] of Object.entries(decoder)) {
    const id = Number(key);
    if (id >= vocabSize) continue; // "ignore token …: id is out of range"
    let token = data.content;
    if (data.special || doesTokenLookSpecial(token)) types[id] = T.CONTROL;
    else {
      token = token.replaceAll("\u2581", " "); // pre-normalize user-defined spaces
      types[id] = T.USER_DEFINED;
    }
    scores[id] = -1000;
    tokens[id] = token;
  }
  // gguf-py SpecialVocab: ids of tokenizer_config.json's *_token in tokenizer.json's added tokens
  // (first match), add_*_token flags, chat_template; config.json ids only fill what is still unset.
  const addedTokens = tok.added_tokens ?? [];
  const special = (key: string): number | undefined => {
    const e = tokConfig[key];
    const content = typeof e === "string" ? e : (e as { content?: unknown } | undefined)?.content;
    if (typeof content !== "string") return undefined;
    const id = addedTokens.find((t) => t.content === content)?.id;
    return id !== undefined && id < vocabSize ? id : undefined;
  };
  const flag = (key: string) =>
    typeof tokConfig[key] === "boolean" ? (tokConfig[key] as boolean) : null;
  const template = tokConfig.chat_template;
  return {
    model: "llama",
    pre: "default",
    tokens,
    scores,
    tokenTypes: types,
    bosTokenId: special("bos_token") ?? null,
    eosTokenId: special("eos_token") ?? null,
    unkTokenId: special("unk_token") ?? null,
    padTokenId: special("pad_token") ?? null,
    addBosToken: flag("add_bos_token"),
    addEosToken: flag("add_eos_token"),
    addSpacePrefix: false,
    chatTemplate: typeof template === "string" ? template : null,
  };
}

/**
 * transformers' generate_merges (convert_slow_tokenizer.py) over SentencePiece pieces and scores:
 * every split of every piece into two pieces, the splits of one piece by (left id, right id), all
 * sorted by (score, left length, right length) descending, stably. Returns "left right" strings.
 */
export function hfMergesFromScores(pieces: readonly string[], scores: ArrayLike<number>): string[] {
  const id = new Map(pieces.map((p, i) => [p, i]));
  const all: { l: string; r: string; s: number; ll: number; lr: number; i: number }[] = [];
  for (let t = 0; t < pieces.length; t++) {
    const cps = [...pieces[t]!];
    const local: { l: string; r: string }[] = [];
    for (let k = 1; k < cps.length; k++) {
      const l = cps.slice(0, k).join("");
      const r = cps.slice(k).join("");
      if (id.has(l) && id.has(r)) local.push({ l, r });
    }
    local.sort((a, b) => id.get(a.l)! - id.get(b.l)! || id.get(a.r)! - id.get(b.r)!);
    for (const { l, r } of local)
      all.push({ l, r, s: scores[t]!, ll: [...l].length, lr: [...r].length, i: all.length });
  }
  all.sort((a, b) => b.s - a.s || b.ll - a.ll || b.lr - a.lr || a.i - b.i);
  return all.map((m) => `${m.l} ${m.r}`);
}
