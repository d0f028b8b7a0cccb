// The OpenAI endpoints over an Engine: request → prompt ids → one scheduler group per prompt (its n
// choices share one prefill) → a JSON reply or an SSE stream of chunks (OpenAI's shapes, vLLM's
// extensions). Holds no math.
import type {
  GenerationRequest,
  GenerationStream,
  GenerationSummary,
  SamplingParams,
  TokenLogprobs,
} from "@gemma3/generation";
import type { Tensor } from "@gemma3/native";
import { ChatTemplateError } from "@gemma3/tokenizer";
import { isImageError } from "@gemma3/vision";
import { ImagePool } from "./image_pool.js";
import type { Engine } from "./engine.js";
import { badRequest, HttpError } from "./errors.js";
import type { Metrics } from "./metrics.js";
import {
  parseChatRequest,
  parseCompletionRequest,
  type ChatRequest,
  type CommonParams,
  type CompletionRequest,
} from "./requests.js";
import type { SseWriter } from "./sse.js";

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details?: { cached_tokens: number };
}

/** One prompt ready to run: its ids, plus the features of its images (if any). */
export interface PreparedPrompt {
  ids: number[];
  /** prompt text as the model sees it (echo) */
  text?: string;
  /** [images + crops, mm_tokens_per_image, hidden] on the model's device; owned by the caller */
  features?: Tensor;
}

/** Largest image a URL may bring (data: URLs are bounded by the body limit). */
const MAX_IMAGE_URL_BYTES = 32 * 1024 * 1024;

let counter = 0;
function requestId(prefix: string): string {
  counter = (counter + 1) % 1e9;
  return `${prefix}-${Date.now().toString(36)}${counter.toString(36).padStart(4, "0")}`;
}

/** Bytes of one token as generated: a byte-fallback token is its byte, others their UTF-8 text. */
function tokenInfo(engine: Engine, id: number): { token: string; bytes: number[] } {
  const tok = engine.tokenizer;
  const b = tok.byteOf(id);
  if (b >= 0) return { token: `bytes:\\x${b.toString(16).padStart(2, "0")}`, bytes: [b] };
  const piece = tok.idToToken(id);
  const text = piece === undefined ? "" : tok.pieceText(piece);
  return { token: text, bytes: [...Buffer.from(text, "utf8")] };
}

function chatLogprobs(engine: Engine, lps: readonly TokenLogprobs[], top: number) {
  return {
    content: lps.map((lp) => ({
      ...tokenInfo(engine, lp.token),
      logprob: lp.logprob,
      top_logprobs: lp.top.slice(0, top).map((t) => ({
        ...tokenInfo(engine, t.token),
        logprob: t.logprob,
      })),
    })),
  };
}

function completionLogprobs(
  engine: Engine,
  lps: readonly TokenLogprobs[],
  top: number,
  offset0: number,
) {
  const tokens: string[] = [];
  const token_logprobs: number[] = [];
  const top_logprobs: Record<string, number>[] = [];
  const text_offset: number[] = [];
  let offset = offset0;
  for (const lp of lps) {
    const t = tokenInfo(engine, lp.token).token;
    tokens.push(t);
    token_logprobs.push(lp.logprob);
    top_logprobs.push(
      Object.fromEntries(
        lp.top.slice(0, top).map((x) => [tokenInfo(engine, x.token).token, x.logprob]),
      ),
    );
    text_offset.push(offset);
    offset += t.length;
  }
  return { tokens, token_logprobs, top_logprobs, text_offset };
}

function usageOf(results: readonly GenerationSummary[], promptTokens: number[]): Usage {
  const completion = results.reduce((s, r) => s + r.usage.completionTokens, 0);
  // Every choice of one prompt shares its prompt tokens: count each prompt once (as OpenAI does).
  const prompt = promptTokens.reduce((s, n) => s + n, 0);
  const cached = results.reduce((s, r) => s + r.usage.cachedTokens, 0);
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: cached },
  };
}

function finishReason(s: GenerationSummary): string {
  return s.finishReason === "abort" ? "abort" : s.finishReason;
}

export class OpenAIApi {
  /** Image decode + preprocessing workers (started on the first image). */
  private readonly images = new ImagePool();

  constructor(
    private readonly engine: Engine,
    private readonly metrics: Metrics,
    private readonly o: { allowImageUrls?: boolean } = {},
  ) {}

  async close(): Promise<void> {
    await this.images.close();
  }

  private checkModel(model: string | undefined): void {
    if (model !== undefined && model !== this.engine.info.id)
      throw new HttpError(
        404,
        `The model \`${model}\` does not exist. This server serves \`${this.engine.info.id}\`.`,
        "model",
        "model_not_found",
      );
  }

  /** The context check vLLM does: the prompt, and the prompt plus max_tokens, must fit. */
  private checkLength(promptLen: number, maxTokens: number | undefined): void {
    const ctx = this.engine.info.maxModelLen;
    if (promptLen >= ctx)
      throw badRequest(
        `This model's maximum context length is ${ctx} tokens. However, your prompt has ${promptLen} tokens, which leaves no room for the completion.`,
        "messages",
        "context_length_exceeded",
      );
    if (maxTokens !== undefined && promptLen + maxTokens > ctx)
      throw badRequest(
        `This model's maximum context length is ${ctx} tokens. However, you requested ${promptLen + maxTokens} tokens (${promptLen} in the prompt, ${maxTokens} in the completion). Please reduce the prompt or max_tokens.`,
        "max_tokens",
        "context_length_exceeded",
      );
  }

  /** A prompt's request: choice 0's sampling; the others' come from `choices`. */
  private genRequest(
    p: CommonParams,
    prompt: number[],
    signal: AbortSignal,
    features?: Tensor,
  ): GenerationRequest {
    return {
      ...p.sampling,
      prompt,
      ...(p.maxTokens !== undefined ? { maxTokens: p.maxTokens } : {}),
      stop: p.stop,
      stopTokenIds: p.stopTokenIds,
      ignoreEos: p.ignoreEos,
      skipSpecialTokens: p.skipSpecialTokens,
      ...(p.responseFormat.type !== "text" ? { responseFormat: p.responseFormat } : {}),
      // The choices' one prefill takes the features (the scheduler frees them with the group).
      ...(features ? { imageFeatures: features } : {}),
      signal,
    };
  }

  /** What differs between choices: distinct but reproducible, choice i samples with seed + i. */
  private choices(p: CommonParams, n: number): SamplingParams[] {
    const seed = p.sampling.seed;
    return Array.from({ length: n }, (_, i) =>
      seed !== undefined && i > 0 ? { seed: BigInt(seed) + BigInt(i) } : {},
    );
  }

  /**
   * Submits each prompt's n choices as one scheduler group (one prefill, the KV forked); returns
   * the streams prompt after prompt, choice after choice. If one is refused, the ones already
   * queued are cancelled.
   */
  private submitAll(p: CommonParams, reqs: GenerationRequest[], n: number): GenerationStream[] {
    const streams: GenerationStream[] = [];
    try {
      for (const r of reqs) streams.push(...this.engine.submitGroup(r, this.choices(p, n)));
    } catch (e) {
      for (const s of streams) s.cancel();
      throw e;
    }
    return streams;
  }

  /** The bytes of an image_url: a data: URL, or http(s) when the server allows fetching. */
  private async imageBytes(url: string, i: number): Promise<string | Uint8Array> {
    if (url.startsWith("data:")) return url;
    if (/^https?:\/\//i.test(url)) {
      if (!this.o.allowImageUrls)
        throw badRequest(
          `image ${i + 1}: only data: URLs are accepted (the server was started without --allow-image-urls)`,
          "messages",
          "image_url_not_allowed",
        );
      const fail = (why: string, code = "image_fetch_failed") =>
        badRequest(`image ${i + 1}: ${why}`, "messages", code);
      const r = await fetch(url, { signal: AbortSignal.timeout(15_000) }).catch((e: Error) => {
        throw fail(`cannot fetch ${url}: ${e.message}`);
      });
      if (!r.ok) throw fail(`${url} answered HTTP ${r.status}`);
      if (Number(r.headers.get("content-length")) > MAX_IMAGE_URL_BYTES)
        throw fail(`larger than ${MAX_IMAGE_URL_BYTES} bytes`, "image_too_large");
      const b = new Uint8Array(await r.arrayBuffer());
      if (b.length > MAX_IMAGE_URL_BYTES)
        throw fail(`larger than ${MAX_IMAGE_URL_BYTES} bytes`, "image_too_large");
      return b;
    }
    throw badRequest(
      `image ${i + 1}: expected a data: URL (or http(s) with --allow-image-urls)`,
      "messages",
      "invalid_image_url",
    );
  }

  /** Chat → prompt ids (the model's chat template, images expanded) and the images' features. */
  async prepareChat(req: ChatRequest, o: { features?: boolean } = {}): Promise<PreparedPrompt> {
    const vision = this.engine.vision;
    if (req.images.length > 0 && !vision)
      throw badRequest(
        `model \`${this.engine.info.id}\` does not accept images (it has no vision tower)`,
        "messages",
      );
    const pixels: Float32Array[] = [];
    const numCrops: number[] = [];
    for (const [i, url] of req.images.entries()) {
      const bytes = await this.imageBytes(url, i);
      let p: { pixels: Float32Array; numCrops: number };
      try {
        // Decode + the PIL-exact resize run in a worker thread: a large image never stalls streams.
        p = await this.images.run(bytes, { ...vision!.preprocess, panAndScan: req.panAndScan });
      } catch (e) {
        if (isImageError(e))
          throw badRequest(`image ${i + 1}: ${(e as Error).message}`, "messages", "invalid_image");
        throw e;
      }
      pixels.push(p.pixels);
      numCrops.push(p.numCrops);
    }
    let enc: { ids: number[]; text: string };
    try {
      enc = this.engine.tokenizer.encodeChat(req.messages, {
        addGenerationPrompt: true,
        ...(vision ? { imageTokens: vision.imageTokens, numCrops } : {}),
      });
    } catch (e) {
      if (e instanceof ChatTemplateError) throw badRequest(e.message, "messages");
      throw e;
    }
    // /tokenize needs only the ids (the crop counts), not the vision tower's work.
    if (pixels.length === 0 || o.features === false) return enc;
    const all = new Float32Array(pixels.reduce((n, p) => n + p.length, 0));
    let off = 0;
    for (const p of pixels) {
      all.set(p, off);
      off += p.length;
    }
    return { ...enc, features: vision!.encoder.encode(all) };
  }

  async chat(
    body: unknown,
    signal: AbortSignal,
    sse: () => SseWriter,
    json: (status: number, v: unknown) => void,
  ) {
    const req = parseChatRequest(body, this.engine.info.vocabSize);
    this.checkModel(req.model);
    const prompt = await this.prepareChat(req);
    let streams: GenerationStream[];
    try {
      this.checkLength(prompt.ids.length, req.maxTokens);
      streams = this.submitAll(
        req,
        [this.genRequest(req, prompt.ids, signal, prompt.features)],
        req.n,
      );
    } catch (e) {
      // Features not handed to a request yet are ours to free.
      if (prompt.features && !prompt.features.disposed) prompt.features.dispose();
      throw e;
    }
    const id = requestId("chatcmpl");
    const created = Math.floor(Date.now() / 1000);
    const model = this.engine.info.id;
    const top = Math.max(req.logprobs, 0);
    if (!req.stream) {
      const results = await Promise.all(streams.map((s) => this.drain(s)));
      json(200, {
        id,
        object: "chat.completion",
        created,
        model,
        choices: results.map((r, index) => ({
          index,
          message: { role: "assistant", content: r.text },
          logprobs:
            req.logprobs >= 0 && r.logprobs ? chatLogprobs(this.engine, r.logprobs, top) : null,
          finish_reason: finishReason(r),
          stop_reason: r.stopReason,
        })),
        usage: usageOf(results, [prompt.ids.length]),
      });
      return;
    }
    const out = sse();
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
      out.send({
        id,
        object: "chat.completion.chunk",
        created,
        model,
        choices,
        ...(req.includeUsage ? { usage: null } : {}),
        ...extra,
      });
    const results = await Promise.all(
      streams.map(async (s, index) => {
        chunk([
          { index, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null },
        ]);
        return this.pump(s, (d) => {
          if (d.text === "" && !d.logprobs) return;
          chunk([
            {
              index,
              delta: { content: d.text },
              logprobs:
                req.logprobs >= 0 && d.logprobs ? chatLogprobs(this.engine, d.logprobs, top) : null,
              finish_reason: null,
            },
          ]);
        }).then((r) => {
          chunk([
            {
              index,
              delta: {},
              logprobs: null,
              finish_reason: finishReason(r),
              stop_reason: r.stopReason,
            },
          ]);
          return r;
        });
      }),
    );
    if (req.includeUsage)
      out.send({
        id,
        object: "chat.completion.chunk",
        created,
        model,
        choices: [],
        usage: usageOf(results, [prompt.ids.length]),
      });
    out.done();
  }

  async completions(
    body: unknown,
    signal: AbortSignal,
    sse: () => SseWriter,
    json: (status: number, v: unknown) => void,
  ) {
    const req: CompletionRequest = parseCompletionRequest(body, this.engine.info.vocabSize);
    this.checkModel(req.model);
    const tok = this.engine.tokenizer;
    // A text prompt gets <bos> (vLLM's completions endpoint encodes with special tokens).
    const prompts = req.prompts.map((p) =>
      typeof p === "string" ? { ids: tok.encode(p), text: p } : { ids: p, text: tok.decode(p) },
    );
    for (const p of prompts) this.checkLength(p.ids.length, req.maxTokens);
    const jobs = prompts.flatMap((p, pi) =>
      Array.from({ length: req.n }, (_, c) => ({ p, index: pi * req.n + c })),
    );
    const streams = this.submitAll(
      req,
      prompts.map((p) => this.genRequest(req, p.ids, signal)),
      req.n,
    );
    const id = requestId("cmpl");
    const created = Math.floor(Date.now() / 1000);
    const model = this.engine.info.id;
    const top = Math.max(req.logprobs, 0);
    const prefix = (j: (typeof jobs)[number]) => (req.echo ? j.p.text : "");
    if (!req.stream) {
      const results = await Promise.all(streams.map((s) => this.drain(s)));
      json(200, {
        id,
        object: "text_completion",
        created,
        model,
        choices: results.map((r, k) => ({
          index: jobs[k]!.index,
          text: prefix(jobs[k]!) + r.text,
          logprobs:
            req.logprobs >= 0 && r.logprobs
              ? completionLogprobs(this.engine, r.logprobs, top, prefix(jobs[k]!).length)
              : null,
          finish_reason: finishReason(r),
          stop_reason: r.stopReason,
        })),
        usage: usageOf(
          results,
          prompts.map((p) => p.ids.length),
        ),
      });
      return;
    }
    const out = sse();
    const chunk = (choice: Record<string, unknown>) =>
      out.send({
        id,
        object: "text_completion",
        created,
        model,
        choices: [choice],
        ...(req.includeUsage ? { usage: null } : {}),
      });
    const results = await Promise.all(
      streams.map(async (s, k) => {
        const j = jobs[k]!;
        let offset = 0;
        if (req.echo) {
          chunk({ index: j.index, text: j.p.text, logprobs: null, finish_reason: null });
          offset = j.p.text.length;
        }
        const r = await this.pump(s, (d) => {
          if (d.text === "" && !d.logprobs) return;
          chunk({
            index: j.index,
            text: d.text,
            logprobs:
              req.logprobs >= 0 && d.logprobs
                ? completionLogprobs(this.engine, d.logprobs, top, offset)
                : null,
            finish_reason: null,
          });
          offset += d.text.length;
        });
        chunk({
          index: j.index,
          text: "",
          logprobs: null,
          finish_reason: finishReason(r),
          stop_reason: r.stopReason,
        });
        return r;
      }),
    );
    if (req.includeUsage)
      out.send({
        id,
        object: "text_completion",
        created,
        model,
        choices: [],
        usage: usageOf(
          results,
          prompts.map((p) => p.ids.length),
        ),
      });
    out.done();
  }

  /** Waits for a stream's summary, recording its timings. */
  private async drain(s: GenerationStream): Promise<GenerationSummary> {
    return this.pump(s, () => undefined);
  }

  /** Iterates a stream, handing each delta to `onDelta`; returns the summary. */
  private async pump(
    s: GenerationStream,
    onDelta: (d: { text: string; tokenIds: number[]; logprobs?: TokenLogprobs[] }) => void,
  ): Promise<GenerationSummary> {
    let last = performance.now();
    let first = true;
    for await (const e of s) {
      if (e.type === "delta") {
        const now = performance.now();
        if (!first) this.metrics.interToken.observe((now - last) / 1000);
        first = false;
        last = now;
        onDelta(e);
      } else {
        this.metrics.onFinish(e);
        return e;
      }
    }
    return s.result;
  }

  /** POST /tokenize (vLLM): a prompt or chat messages → ids. */
  async tokenize(body: unknown) {
    const o = body as Record<string, unknown>;
    let ids: number[];
    if (o && typeof o === "object" && "messages" in o) {
      const req = parseChatRequest({ ...o }, this.engine.info.vocabSize);
      ids = (await this.prepareChat(req, { features: false })).ids;
    } else {
      const prompt = o?.["prompt"];
      if (typeof prompt !== "string")
        throw badRequest("prompt: expected a string (or give messages)", "prompt");
      const add = o["add_special_tokens"];
      if (add !== undefined && typeof add !== "boolean")
        throw badRequest("add_special_tokens: expected a boolean", "add_special_tokens");
      ids = this.engine.tokenizer.encode(prompt, { addSpecialTokens: add ?? true });
    }
    return { tokens: ids, count: ids.length, max_model_len: this.engine.info.maxModelLen };
  }

  /** POST /detokenize (vLLM): ids → text. */
  detokenize(body: unknown) {
    const t = (body as Record<string, unknown> | null)?.["tokens"];
    const V = this.engine.info.vocabSize;
    if (!Array.isArray(t) || t.some((x) => !Number.isInteger(x) || x < 0 || x >= V))
      throw badRequest(`tokens: expected an array of token ids in [0, ${V})`, "tokens");
    return { prompt: this.engine.tokenizer.decode(t as number[]) };
  }
}
