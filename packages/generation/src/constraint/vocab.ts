// The vocabulary as the token-mask walk needs it, built once per (tokenizer, vocabulary size) and
// cached: each token's text as UTF-8 bytes, and byte tries in preorder with subtree-skip pointers
// (a token whose first bytes the automaton refuses is dropped with its whole subtree in one jump).
//
// A token's text is what the streaming detokenizer emits for it: pieceText of the token ("▁" →
// " "), or one byte for a byte-fallback token (<0xE2>), which may be part of a character. Special
// tokens (<bos>, <end_of_turn>, …) are never text here: the detokenizer drops them, so they could
// only hide; the stop ids among them are allowed by the constraint when the value is complete.
//
// "Plain" tokens (text without `"`, `\` or control characters, and not a byte token) leave a JSON
// string's lexer where it was, so inside a free string they are allowed without a walk; a second
// trie holds every other token for that state (mask.ts).

/** What the constraint needs of a tokenizer (Gemma3Tokenizer has it). */
export interface ConstraintTokenizer {
  readonly vocabSize: number;
  idToToken(id: number): string | undefined;
  /** Byte of a byte-fallback token, or -1. */
  byteOf(id: number): number;
  /** A token's text after the decoder's replacements ("▁" → " "). */
  pieceText(token: string): string;
  isSpecial(id: number): boolean;
}

/** A byte trie in preorder; node 0 is the root (the empty prefix). */
export interface ByteTrie {
  readonly n: number;
  /** [n] the byte on the edge into the node */
  readonly byte: Uint8Array;
  /** [n] bytes from the root */
  readonly depth: Uint16Array;
  /** [n] the first node after the node's subtree */
  readonly skip: Int32Array;
  /** [n] the node's tokens are ids[tokStart[i] … tokEnd[i]) (tokens with exactly these bytes) */
  readonly tokStart: Int32Array;
  readonly tokEnd: Int32Array;
  readonly ids: Int32Array;
  readonly maxDepth: number;
}

export class TokenVocab {
  /** Mask width: the model's vocabulary (logits per row). */
  readonly size: number;
  /** Uint32 words of a mask. */
  readonly words: number;
  /** Each token's text as UTF-8 bytes in a latin1 string; undefined for tokens that are never text. */
  readonly bytes: (string | undefined)[];
  /** Every text token. */
  readonly full: ByteTrie;
  /** Text tokens that are not plain (see the header). */
  readonly nonPlain: ByteTrie;
  /** Plain tokens: all of them, and by code point count (see plainUpTo). */
  readonly plainBits: Uint32Array;
  private readonly plainSorted: Int32Array;
  private readonly plainLen: Uint16Array;
  private readonly maxPlainLen: number;
  /** plain tokens of at most r code points, r < maxPlainLen */
  private readonly upTo = new Map<number, Uint32Array>();

  constructor(tok: ConstraintTokenizer, size: number) {
    this.size = size;
    this.words = Math.ceil(size / 32);
    const n = Math.min(size, tok.vocabSize);
    this.bytes = new Array<string | undefined>(size);
    const text: number[] = [];
    const nonPlain: number[] = [];
    const plainIds: number[] = [];
    const plainLen = new Uint16Array(size);
    this.plainBits = new Uint32Array(this.words);
    for (let id = 0; id < n; id++) {
      const t = tok.idToToken(id);
      if (t === undefined || tok.isSpecial(id)) continue;
      const b = tok.byteOf(id);
      let s: string;
      if (b >= 0) s = String.fromCharCode(b);
      else {
        const piece = tok.pieceText(t);
        if (piece.length === 0) continue;
        s = Buffer.from(piece, "utf8").toString("latin1");
      }
      this.bytes[id] = s;
      text.push(id);
      let plain = b < 0;
      let chars = 0;
      for (let i = 0; i < s.length && plain; i++) {
        const c = s.charCodeAt(i);
        if (c === 0x22 || c === 0x5c || c < 0x20) plain = false;
        if ((c & 0xc0) !== 0x80) chars++;
      }
      if (plain && chars <= 0xffff) {
        plainIds.push(id);
        plainLen[id] = chars;
        this.plainBits[id >>> 5]! |= 1 << (id & 31);
      } else nonPlain.push(id);
    }
    this.full = buildTrie(text, this.bytes);
    this.nonPlain = buildTrie(nonPlain, this.bytes);
    this.plainLen = plainLen;
    this.plainSorted = Int32Array.from(plainIds).sort((a, b) => plainLen[a]! - plainLen[b]!);
    this.maxPlainLen = plainIds.length > 0 ? plainLen[this.plainSorted[plainIds.length - 1]!]! : 0;
  }

  /** Plain tokens of at most r code points (a cached bitset; do not modify). */
  plainUpTo(r: number): Uint32Array {
    if (r >= this.maxPlainLen) return this.plainBits;
    if (this.upTo.size === 0) {
      // Every level in one pass over the tokens sorted by length (~1.5 MB for Gemma's 48 levels).
      const m = new Uint32Array(this.words);
      let k = 0;
      for (let len = 0; len < this.maxPlainLen; len++) {
        for (; k < this.plainSorted.length; k++) {
          const id = this.plainSorted[k]!;
          if (this.plainLen[id]! > len) break;
          m[id >>> 5]! |= 1 << (id & 31);
        }
        this.upTo.set(len, m.slice());
      }
    }
    return this.upTo.get(r)!;
  }

  private static readonly cache = new WeakMap<object, Map<number, TokenVocab>>();

  /** The vocabulary of `tok` for masks of `size` tokens, built on first use (~1 s at 262144). */
  static of(tok: ConstraintTokenizer, size: number): TokenVocab {
    let m = TokenVocab.cache.get(tok);
    if (!m) TokenVocab.cache.set(tok, (m = new Map()));
    let v = m.get(size);
    if (!v) m.set(size, (v = new TokenVocab(tok, size)));
    return v;
  }
}

/** The trie of `ids` (each with bytes[id] non-empty). */
function buildTrie(ids: number[], bytes: readonly (string | undefined)[]): ByteTrie {
  const sorted = Int32Array.from(ids).sort((a, b) => {
    const x = bytes[a]!;
    const y = bytes[b]!;
    return x < y ? -1 : x > y ? 1 : a - b;
  });
  const byte: number[] = [0];
  const depth: number[] = [0];
  const tokStart: number[] = [0];
  const tokEnd: number[] = [0];
  const path: number[] = [0];
  let prev = "";
  let maxDepth = 0;
  for (let k = 0; k < sorted.length; k++) {
    const s = bytes[sorted[k]!]!;
    let l = 0;
    const m = Math.min(s.length, prev.length);
    while (l < m && s.charCodeAt(l) === prev.charCodeAt(l)) l++;
    if (l === s.length && l === prev.length) {
      tokEnd[path[l]!] = k + 1; // same bytes as the previous token
      continue;
    }
    for (let d = l; d < s.length; d++) {
      path[d + 1] = byte.length;
      byte.push(s.charCodeAt(d));
      depth.push(d + 1);
      tokStart.push(0);
      tokEnd.push(0);
    }
    const node = path[s.length]!;
    tokStart[node] = k;
    tokEnd[node] = k + 1;
    maxDepth = Math.max(maxDepth, s.length);
    prev = s;
  }
  const n = byte.length;
  const skip = new Int32Array(n).fill(n);
  const stack: number[] = [];
  for (let j = 0; j < n; j++) {
    while (stack.length > 0 && depth[stack[stack.length - 1]!]! >= depth[j]!)
      skip[stack.pop()!] = j;
    stack.push(j);
  }
  return {
    n,
    byte: Uint8Array.from(byte),
    depth: Uint16Array.from(depth),
    skip,
    tokStart: Int32Array.from(tokStart),
    tokEnd: Int32Array.from(tokEnd),
    ids: sorted,
    maxDepth,
  };
}
