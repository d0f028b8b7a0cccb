// Stop rules and the text stream of one sequence: stop tokens, stop strings matched on the
// detokenized text across token boundaries, max tokens. Text that could be the start of a stop
// string is held back until it is known not to be one; a matched stop string is cut from the output
// (OpenAI's behaviour; vLLM's include_stop_str_in_output keeps it).

/** Incremental detokenizer: push ids, get the text they complete (Gemma3Tokenizer.detokenizer()). */
export interface Detokenizer {
  push(id: number): string;
  /** Ends the stream: text still held (an incomplete character) comes out. */
  flush(): string;
}

export type FinishReason = "stop" | "length" | "abort";

export interface StopOptions {
  /** Ids that end generation (resolveStopTokenIds). The stop token's id is output, its text not. */
  stopTokenIds?: Iterable<number>;
  /** Strings that end generation when they appear in the text. */
  stop?: readonly string[];
  /** Keep the matched stop string (or the stop token's text) in the output. Default false. */
  includeStopStrInOutput?: boolean;
  /** Most tokens to generate. */
  maxTokens: number;
  /** Stop tokens and stop strings count only after this many tokens (vLLM's min_tokens). */
  minTokens?: number;
}

export interface StopStep {
  /** Text to emit now (may be "" while a character or a possible stop string is incomplete). */
  text: string;
  /** Set when this token ended the sequence. */
  finish?: { reason: "stop" | "length"; stopReason: number | string | null };
}

export class StopChecker {
  private readonly stopIds: ReadonlySet<number>;
  private readonly stops: readonly string[];
  private readonly include: boolean;
  private readonly maxTokens: number;
  private readonly minTokens: number;
  /** Text detokenized so far (up to the cut once a stop string matched). */
  private full = "";
  /** Length of `full` already emitted. */
  private emitted = 0;
  private tokens = 0;
  private done = false;

  constructor(
    private readonly detok: Detokenizer | null,
    o: StopOptions,
  ) {
    this.stopIds = new Set(o.stopTokenIds ?? []);
    this.stops = (o.stop ?? []).filter((s) => s.length > 0);
    if (this.stops.length > 0 && !detok)
      throw new TypeError("stop strings need a tokenizer (a detokenizer to match them on)");
    this.include = o.includeStopStrInOutput ?? false;
    this.maxTokens = o.maxTokens;
    this.minTokens = o.minTokens ?? 0;
  }

  /** The whole output text emitted so far. */
  get text(): string {
    return this.full.slice(0, this.emitted);
  }
  get finished(): boolean {
    return this.done;
  }

  /** Takes one sampled token: the text it releases and whether it ends the sequence. */
  push(token: number): StopStep {
    if (this.done) throw new Error("StopChecker.push after the sequence finished");
    this.tokens++;
    const counts = this.tokens > this.minTokens;
    if (counts && this.stopIds.has(token)) {
      if (this.include && this.detok) this.full += this.detok.push(token);
      return this.end({ reason: "stop", stopReason: token });
    }
    const before = this.full.length;
    if (this.detok) this.full += this.detok.push(token);
    if (counts && this.stops.length > 0 && this.full.length > before) {
      const hit = this.findStop(before);
      if (hit) {
        this.full = this.full.slice(0, hit.at + (this.include ? hit.stop.length : 0));
        this.done = true;
        const text = this.full.slice(this.emitted);
        this.emitted = this.full.length;
        return { text, finish: { reason: "stop", stopReason: hit.stop } };
      }
    }
    if (this.tokens >= this.maxTokens) return this.end({ reason: "length", stopReason: null });
    const end = this.full.length - this.heldBack();
    const text = this.full.slice(this.emitted, end);
    this.emitted = end;
    return { text };
  }

  /** Ends the sequence for another reason (abort, context full): releases every held character. */
  finish(): string {
    return this.end(null).text;
  }

  private end(finish: StopStep["finish"] | null): StopStep {
    this.done = true;
    if (this.detok) this.full += this.detok.flush();
    const text = this.full.slice(this.emitted);
    this.emitted = this.full.length;
    return finish ? { text, finish } : { text };
  }

  /** The earliest stop string occurrence that ends in the new text (from `before`). */
  private findStop(before: number): { at: number; stop: string } | null {
    let best: { at: number; stop: string } | null = null;
    for (const s of this.stops) {
      // A match must end after `before`; it cannot start in emitted text (held back, see below).
      const from = Math.max(this.emitted, before - s.length + 1);
      const at = this.full.indexOf(s, from);
      if (at >= 0 && (!best || at < best.at)) best = { at, stop: s };
    }
    return best;
  }

  /** Characters at the end of the text that could begin a stop string: the longest such suffix. */
  private heldBack(): number {
    let hold = 0;
    const pending = this.full.length - this.emitted;
    for (const s of this.stops)
      for (let n = Math.min(s.length - 1, pending); n > hold; n--)
        if (this.full.endsWith(s.slice(0, n))) {
          hold = n;
          break;
        }
    return hold;
  }
}
