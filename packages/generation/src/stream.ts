// What a request gives back: an AsyncIterable of text deltas (with their token ids and logprobs)
// ending in one summary event, plus the summary as a promise.
import type { FinishReason } from "./stop.js";
import type { TokenLogprob } from "./reference.js";

/** A generated token's logprob and the top alternatives (of the model's distribution). */
export interface TokenLogprobs extends TokenLogprob {
  top: TokenLogprob[];
}

export interface GenerationDelta {
  type: "delta";
  /** New text (UTF-8-complete; "" while a character or a possible stop string is pending). */
  text: string;
  /** Tokens sampled in this step (a stop token's id included, its text not). */
  tokenIds: number[];
  /** One entry per token id, when the request asked for logprobs. */
  logprobs?: TokenLogprobs[];
}

export interface GenerationSummary {
  type: "finish";
  /** The whole output text (stop string cut off unless includeStopStrInOutput). */
  text: string;
  tokenIds: number[];
  finishReason: FinishReason;
  /** The stop token id or stop string that ended it (vLLM's stop_reason); null otherwise. */
  stopReason: number | string | null;
  /** cachedTokens: prompt tokens reused from the prefix cache (OpenAI's cached_tokens) */
  usage: { promptTokens: number; completionTokens: number; cachedTokens: number };
  logprobs?: TokenLogprobs[];
  timings: {
    /** submit → admitted into the KV cache */
    queueMs: number;
    /** submit → first token (NaN when none came) */
    ttftMs: number;
    totalMs: number;
  };
}

export type GenerationEvent = GenerationDelta | GenerationSummary;

/** A running request. Iterate it once; breaking out of the loop cancels the request. */
export class GenerationStream implements AsyncIterable<GenerationEvent> {
  /** The summary (rejects with the request's error). */
  readonly result: Promise<GenerationSummary>;
  private readonly queue: GenerationEvent[] = [];
  private wake: (() => void) | undefined;
  private ended = false;
  private error: { e: unknown } | undefined;
  private resolve!: (s: GenerationSummary) => void;
  private reject!: (e: unknown) => void;

  constructor(
    readonly id: number,
    private readonly onCancel: () => void,
  ) {
    this.result = new Promise<GenerationSummary>((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
    this.result.catch(() => undefined); // the iterator reports it too; never an unhandled rejection
  }

  /** Cancels the request: its KV is freed at once and the stream finishes with "abort". */
  cancel(): void {
    this.onCancel();
  }

  /** @internal */
  push(e: GenerationDelta): void {
    if (this.ended) return;
    this.queue.push(e);
    this.wake?.();
  }
  /** @internal */
  finish(s: GenerationSummary): void {
    if (this.ended) return;
    this.queue.push(s);
    this.ended = true;
    this.resolve(s);
    this.wake?.();
  }
  /** @internal */
  fail(e: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.error = { e };
    this.reject(e);
    this.wake?.();
  }

  [Symbol.asyncIterator](): AsyncIterator<GenerationEvent> {
    return {
      next: async () => {
        for (;;) {
          const e = this.queue.shift();
          if (e) return { value: e, done: false };
          if (this.error) throw this.error.e;
          if (this.ended) return { value: undefined, done: true };
          await new Promise<void>((r) => (this.wake = r));
          this.wake = undefined;
        }
      },
      return: async () => {
        if (!this.ended) this.cancel();
        return { value: undefined, done: true };
      },
    };
  }
}
