// One request, start to finish, on a scheduler of its own (one sequence, a cache sized to it).
import type { GenerationConfigDefaults } from "./params.js";
import type { SamplerOptions } from "./sampler.js";
import {
  Scheduler,
  type GenerationModel,
  type GenerationRequest,
  type TokenizerLike,
} from "./scheduler.js";
import type { GenerationStream } from "./stream.js";

export interface GenerateOptions {
  generationConfig?: GenerationConfigDefaults;
  sampler?: SamplerOptions;
  /** Context when the request gives no maxTokens (default min(max_position_embeddings, 8192)). */
  maxSeqLen?: number;
  /** Pipelined greedy decoding (SchedulerOptions.asyncDecode; default false). */
  asyncDecode?: boolean;
}

/**
 * Generates for one request: an AsyncIterable of text deltas (token ids, logprobs) ending in a
 * summary event; `stream.result` is the summary. The KV cache is sized to prompt + maxTokens and
 * freed when the stream ends. Several concurrent requests share a Scheduler instead.
 */
export function generate(
  model: GenerationModel,
  tokenizer: TokenizerLike | null | undefined,
  request: GenerationRequest,
  opts: GenerateOptions = {},
): GenerationStream {
  const context = opts.maxSeqLen ?? Math.min(model.config.maxPositionEmbeddings, 8192);
  const promptLen =
    typeof request.prompt === "string"
      ? (tokenizer?.encode(request.prompt, { addSpecialTokens: request.addSpecialTokens ?? true })
          .length ?? 0)
      : request.prompt.length;
  const maxTokens = request.maxTokens ?? opts.generationConfig?.maxTokens;
  const maxSeqLen = maxTokens !== undefined ? Math.min(context, promptLen + maxTokens) : context;
  const scheduler = new Scheduler(model, {
    tokenizer: tokenizer ?? null,
    maxSeqs: 1,
    maxSeqLen: Math.max(maxSeqLen, 1),
    ...(opts.generationConfig ? { generationConfig: opts.generationConfig } : {}),
    ...(opts.sampler ? { sampler: opts.sampler } : {}),
    ...(opts.asyncDecode ? { asyncDecode: true } : {}),
  });
  let stream: GenerationStream;
  try {
    stream = scheduler.submit(request);
  } catch (e) {
    void scheduler.close();
    throw e;
  }
  stream.result.then(
    () => scheduler.close(),
    () => scheduler.close(),
  );
  return stream;
}
