// Streaming detokenization for generation: push ids one at a time, get back only text that is
// complete UTF-8. Byte-fallback tokens (<0xE2> <0x82> <0xAC> = "€") are held until the character
// is complete, so no half character or stray U+FFFD reaches the user.
import type { Gemma3Tokenizer } from "./tokenizer.js";

export interface DetokenizerOptions {
  /** Drop special tokens (<bos>, <end_of_turn>, …) from the text. Default false, as decode(). */
  skipSpecialTokens?: boolean;
}

/** Bytes still expected after a UTF-8 lead byte, or -1 for a byte that cannot lead. */
function continuationCount(b: number): number {
  if (b < 0x80) return 0;
  if (b >= 0xc2 && b <= 0xdf) return 1;
  if (b >= 0xe0 && b <= 0xef) return 2;
  if (b >= 0xf0 && b <= 0xf4) return 3;
  return -1;
}

/** Valid range of the second byte after `lead` (the overlong / surrogate / > U+10FFFF exclusions). */
function secondByteOk(lead: number, b: number): boolean {
  if (lead === 0xe0) return b >= 0xa0 && b <= 0xbf;
  if (lead === 0xed) return b >= 0x80 && b <= 0x9f;
  if (lead === 0xf0) return b >= 0x90 && b <= 0xbf;
  if (lead === 0xf4) return b >= 0x80 && b <= 0x8f;
  return b >= 0x80 && b <= 0xbf;
}

/**
 * Incremental decoder. For ids whose byte-token runs are valid UTF-8 (everything `encode` produces,
 * and what a model almost always samples), the concatenation of every `push` plus `flush` equals
 * `decode(ids)`. A byte that cannot continue the pending character is emitted as U+FFFD at once,
 * one per byte, and the pending bytes with it; `decode` instead turns the whole run into U+FFFDs
 * (HF's ByteFallback), which a stream cannot do without holding text back indefinitely.
 */
export class StreamingDetokenizer {
  private pending: number[] = [];
  private need = 0;
  private readonly skip: boolean;

  constructor(
    private readonly tok: Gemma3Tokenizer,
    opts: DetokenizerOptions = {},
  ) {
    this.skip = opts.skipSpecialTokens ?? false;
  }

  /** Adds one id; returns the text it completes (often "", e.g. mid-character). */
  push(id: number): string {
    const token = this.tok.idToToken(id);
    if (token === undefined || (this.skip && this.tok.isSpecial(id))) return "";
    const b = this.tok.byteOf(id);
    if (b >= 0) return this.pushByte(b);
    return this.dropPending() + this.tok.pieceText(token);
  }

  /** Adds several ids; returns the text they complete. */
  pushAll(ids: Iterable<number>): string {
    let s = "";
    for (const id of ids) s += this.push(id);
    return s;
  }

  /** Ends the stream: an incomplete character left pending becomes U+FFFD per byte. */
  flush(): string {
    return this.dropPending();
  }

  /** Whether bytes of an incomplete character are being held back. */
  get hasPending(): boolean {
    return this.pending.length > 0;
  }

  private dropPending(): string {
    const s = "\ufffd".repeat(this.pending.length);
    this.pending = [];
    this.need = 0;
    return s;
  }

  private pushByte(b: number): string {
    if (this.pending.length > 0) {
      const ok =
        this.pending.length === 1 ? secondByteOk(this.pending[0]!, b) : b >= 0x80 && b <= 0xbf;
      if (ok) {
        this.pending.push(b);
        if (--this.need > 0) return "";
        const s = Buffer.from(this.pending).toString("utf8");
        this.pending = [];
        return s;
      }
      // The character broke off: its bytes are garbage, and b starts afresh.
      return this.dropPending() + this.pushByte(b);
    }
    const k = continuationCount(b);
    if (k < 0) return "\ufffd";
    if (k === 0) return String.fromCharCode(b);
    this.pending.push(b);
    this.need = k;
    return "";
  }
}
