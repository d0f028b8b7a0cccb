// Continuous batching over one KV cache. Between steps, requests join (admitted when the cache can
// reserve their pages; queued FIFO otherwise) and leave (finished or cancelled: their KV is freed
// at once). Each step runs, in one forwardBatch, the decode token of every sequence past its prompt
// plus prefill chunks of waiting prompts filling the token budget (chunked prefill mixed with
// decode), then samples on the device.
//
// The n choices of one request (OpenAI's n, submitGroup) share one prefill: the first choice (the
// group's owner) prefills the prompt while the others wait attached to it, with their KV reserved
// at admission (n sequences' pages and rings, so the forks below never fail). When the prompt is in,
// the owner's KV is forked once per other choice (global pages shared copy-on-write, sliding rings
// copied; HybridKVCache.fork), every choice samples its first token from the same last-position
// logits row with its own sampling state, and from then on the n sequences decode independently.
//
// Pipelined decoding (asyncDecode: off by default here, on in `serve` and `bench`; vLLM's async
// scheduling). In the steady state (every running sequence decoding and plain greedy, nothing
// admissible waiting, the same batch as the step in flight, room for one more token each) step N+1
// is launched before step N's tokens are read: its ids are step N's argmax on the device
// (ModelStep.idsFrom), and step N's host copy was enqueued right after that argmax
// (Sampler.launchGreedy), so it completes with step N while step N+1 runs. The host then handles
// step N's tokens (stop checks, streaming) during step N+1. A sequence that ends at step N (stop
// token or string, abort) has one extra token computed in step N+1: never reported, and its KV
// position is trimmed before the sequence is freed; its id is never given to the KV cache (step
// N+1's ids come late: provideIds at the next plan), so the prefix index never registers it.
// Anything else (a request to admit, a finish or cancel, a non-greedy row, the last allowed token)
// drains the pipeline: the step in flight is read, no new one is launched, and the next step runs
// as usual, re-entering the pipeline when steady again.
import type {
  HybridKVCache,
  HybridKVCacheOptions,
  KVSequence,
  PlannerStats,
  Span,
} from "@gemma3/kv-cache";
import { imageTokenSpans } from "@gemma3/model";
import { Tensor } from "@gemma3/native";
import {
  createResponseFormatConstraint,
  type GrammarOptions,
  type ResponseFormat,
} from "./constraint/index.js";
import {
  GenerationError,
  resolveStopTokenIds,
  type GenerationConfigDefaults,
  type SamplingParams,
} from "./params.js";
import { Sampler, type SamplerOptions } from "./sampler.js";
import type { SampleResult } from "./reference.js";
import { SamplingState } from "./state.js";
import { StopChecker, type Detokenizer, type FinishReason } from "./stop.js";
import { GenerationStream, type GenerationSummary, type TokenLogprobs } from "./stream.js";

/** What the scheduler needs of a model (Gemma3TextModel has it). */
export interface GenerationModel {
  /** forwardBatch takes `idsFrom` (device-side ids): needed for asyncDecode */
  readonly deviceIdsInput?: boolean;
  readonly config: {
    readonly vocabSize: number;
    readonly eosTokenIds: readonly number[];
    readonly maxPositionEmbeddings: number;
    /** <image_soft_token> id (multimodal checkpoints): prompt positions that take image features */
    readonly imageTokenIndex?: number | null;
  };
  newKVCache(o: Omit<HybridKVCacheOptions, "dtype" | "device">): HybridKVCache;
  /**
   * logits [batch, vocab] f32: each sequence's last new token. `graph`: a decode-only step may
   * replay a captured graph; its logits are then only valid until the next forward.
   */
  forwardBatch(
    steps: readonly {
      seq: KVSequence;
      ids: readonly number[];
      /** one decode token whose id is row `row` of `tensor` ([rows] i32 on the device); ids [] */
      idsFrom?: { tensor: Tensor; row: number };
      spans?: readonly Span[];
      imageFeatures?: Tensor;
    }[],
    opts?: { graph?: boolean },
  ): Tensor;
}

/** What the scheduler needs of a tokenizer (Gemma3Tokenizer has it). */
export interface TokenizerLike {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  detokenizer(opts?: { skipSpecialTokens?: boolean }): Detokenizer;
}

export interface GenerationRequest extends SamplingParams {
  /** Token ids, or text (needs a tokenizer; encoded with addSpecialTokens). */
  prompt: string | readonly number[];
  /** Most tokens to generate; default generation_config's max_new_tokens, else the context left.
   *  Clamped so prompt + output fits the context (finish reason "length"). */
  maxTokens?: number;
  stop?: string | readonly string[];
  /** Extra stop token ids (always honoured, also with ignoreEos). */
  stopTokenIds?: readonly number[];
  /** Do not stop at the eos ids of config.json / generation_config.json. */
  ignoreEos?: boolean;
  includeStopStrInOutput?: boolean;
  /** Drop special tokens from the text (default true, as vLLM). */
  skipSpecialTokens?: boolean;
  /** For a text prompt: let the tokenizer add <bos> (default true). */
  addSpecialTokens?: boolean;
  /**
   * OpenAI's response_format, as sent: {type: "json_object"} or {type: "json_schema",
   * json_schema: {name, schema, strict}} constrain the output to JSON (needs a tokenizer with
   * token texts: Gemma3Tokenizer); {type: "text"} or absent: none. A bad or unsupported schema
   * throws GenerationError E_INVALID, field "response_format", from submit.
   */
  responseFormat?: ResponseFormat | null;
  /**
   * Image features for the prompt's image tokens (config.imageTokenIndex), in prompt order: [k,
   * hidden] or [images, tokens, hidden] rows in the model's dtype on its device (e.g. from
   * @gemma3/vision's encode). Each run of image tokens is one bidirectional block. The scheduler
   * owns the tensor from submit on: it is disposed when the request ends (or submit throws).
   */
  imageFeatures?: Tensor;
  signal?: AbortSignal;
}

export interface SchedulerOptions {
  tokenizer?: TokenizerLike | null;
  /** Sequences decoded together (KV rings; default 8). */
  maxSeqs?: number;
  /** Context per sequence, prompt + output (default min(max_position_embeddings, 8192)). */
  maxSeqLen?: number;
  pageSize?: number;
  /** Global-layer pages shared by all sequences (default: every sequence at maxSeqLen). */
  numPages?: number;
  /**
   * Further KV cache options (prefixCache and snapshotBlocks for prefix reuse across requests,
   * rollback, storage dtype): a request then starts after the longest cached prefix of its prompt.
   */
  kv?: Omit<HybridKVCacheOptions, "dtype" | "device" | "maxSeqs" | "maxSeqLen">;
  /** Tokens per step: the decodes, and a prefill chunk filling the rest (default 512). */
  maxBatchTokens?: number;
  /** Requests waiting for admission beyond this are refused (E_QUEUE_FULL). Default unbounded. */
  maxQueue?: number;
  /** Stop ids of the model (default config.json's eos_token_id). */
  eosTokenIds?: readonly number[];
  /** generation_config.json's defaults (loadGenerationConfig). */
  generationConfig?: GenerationConfigDefaults;
  sampler?: SamplerOptions;
  /** Options of response_format grammars (whitespace bound). */
  responseFormat?: GrammarOptions;
  /**
   * Pipelined decoding (default false here; on in the apps unless GEMMA3_ASYNC_DECODE=0): in the
   * steady state of plain greedy decoding, launch each step before the previous step's tokens are
   * read (see the top of this file). Same tokens, text and usage; needs a model with
   * deviceIdsInput.
   */
  asyncDecode?: boolean;
}

export interface SchedulerStats {
  waiting: number;
  running: number;
  steps: number;
  /** sampled rows that needed their full logits row on the host (see Sampler) */
  fallbacks: number;
  /** steps launched before the previous step's tokens were read (asyncDecode) */
  pipelined: number;
  kv: PlannerStats;
}

interface Seq {
  readonly stream: GenerationStream;
  /** (submitGroup) the choice whose prefill this one waits for, while "pending" */
  owner: Seq | undefined;
  /** (submitGroup) choices waiting for this sequence's prefill, forked from it when it is done */
  children: Seq[];
  /** KV reserved at admission for the children: freed and re-taken by their forks */
  holds: KVSequence[];
  readonly prompt: number[];
  readonly maxTokens: number;
  /** tokens the KV must hold: prompt + maxTokens − 1 (the last token is never fed back) */
  readonly need: number;
  readonly state: SamplingState;
  readonly stopper: StopChecker;
  readonly wantLogprobs: boolean;
  /** pending: a group's choice attached to its owner (in neither list) until the owner's prefill */
  phase: "waiting" | "pending" | "running" | "done";
  kv: KVSequence | undefined;
  fed: number;
  /** prompt tokens taken from the prefix cache */
  cachedTokens: number;
  /** image blocks of the prompt (absolute positions) and their feature rows, consumed in order */
  readonly spans: Span[];
  features: Tensor | undefined;
  featureRow: number;
  readonly tokens: number[];
  /** KV position whose id a device-fed step left for provideIds (asyncDecode), or −1 */
  lateId: number;
  readonly logprobs: TokenLogprobs[];
  readonly t0: number;
  tAdmit: number;
  tFirst: number;
  detach: () => void;
}

export class Scheduler {
  readonly cache: HybridKVCache;
  readonly sampler: Sampler;
  readonly maxSeqLen: number;
  private readonly tokenizer: TokenizerLike | null;
  private readonly maxBatchTokens: number;
  private readonly maxQueue: number;
  private readonly pageSize: number;
  private readonly numPages: number;
  private readonly maxSeqs: number;
  private readonly stopIdsBase: readonly number[];
  private readonly waiting: Seq[] = [];
  private readonly running: Seq[] = [];
  private loopDone: Promise<void> | undefined;
  private nextId = 0;
  private steps = 0;
  private closed = false;
  private readonly asyncDecode: boolean;
  /** asyncDecode: the decode step launched whose tokens are not read yet */
  private inflight: InFlight | null = null;
  private pipelined = 0;

  constructor(
    readonly model: GenerationModel,
    private readonly o: SchedulerOptions = {},
  ) {
    const c = model.config;
    this.tokenizer = o.tokenizer ?? null;
    this.maxSeqLen = o.maxSeqLen ?? Math.min(c.maxPositionEmbeddings, 8192);
    this.maxBatchTokens = o.maxBatchTokens ?? 512;
    if (!Number.isInteger(this.maxBatchTokens) || this.maxBatchTokens < 1)
      throw new RangeError(`Scheduler: maxBatchTokens must be a positive integer`);
    this.maxQueue = o.maxQueue ?? Infinity;
    this.maxSeqs = o.maxSeqs ?? 8;
    this.cache = model.newKVCache({
      ...(o.kv ?? {}),
      maxSeqs: this.maxSeqs,
      maxSeqLen: this.maxSeqLen,
      ...(o.pageSize !== undefined ? { pageSize: o.pageSize } : {}),
      ...(o.numPages !== undefined ? { numPages: o.numPages } : {}),
    });
    this.pageSize = this.cache.planner.pageSize;
    this.numPages = this.cache.planner.numPages;
    this.stopIdsBase = o.eosTokenIds ?? c.eosTokenIds;
    this.sampler = new Sampler(o.sampler);
    this.asyncDecode = (o.asyncDecode ?? false) && model.deviceIdsInput === true;
  }

  stats(): SchedulerStats {
    return {
      waiting: this.queued(),
      running: this.running.reduce((n, s) => n + 1 + s.children.length, 0),
      steps: this.steps,
      fallbacks: this.sampler.fallbacks,
      pipelined: this.pipelined,
      kv: this.cache.stats(),
    };
  }

  /**
   * Queues a request. Throws GenerationError at once for a request that can never run (bad
   * parameter, prompt past the context, queue full); everything later arrives on the stream.
   */
  submit(req: GenerationRequest): GenerationStream {
    try {
      return this.enqueue(req, [{}])[0]!;
    } catch (e) {
      req.imageFeatures?.dispose();
      throw e;
    }
  }

  /**
   * Queues the n = `choices.length` choices of one request (OpenAI's `n`): one stream per choice,
   * in order. Choice i is `req` with the sampling fields that `choices[i]` defines put over it (the
   * server gives choice i the seed `seed + i`); every choice has its own sampling state, stop
   * checker and constraint, and is cancelled, stopped and freed on its own (an AbortSignal in `req`
   * cancels them all).
   *
   * The choices share one prefill: the prompt (and its image features) runs once, then its KV is
   * forked for the other choices, and each samples its first token from that one logits row. The
   * tokens are those of n separate submits of the same choices (on CPU bit for bit: the forked KV
   * is a copy of the bytes a separate prefill writes). A group is admitted whole: KV is reserved
   * for all its choices at once. A group that could never be admitted whole (n > maxSeqs, or n
   * sequences' pages over the cache) runs as consecutive groups of as many choices as fit, each
   * with its own prefill, queued as separate requests would be; so does a prompt shorter than one
   * KV page (nothing to share). Throws as submit does, before anything is queued.
   */
  submitGroup(req: GenerationRequest, choices: readonly SamplingParams[]): GenerationStream[] {
    try {
      return this.enqueue(req, choices);
    } catch (e) {
      req.imageFeatures?.dispose();
      throw e;
    }
  }

  /** Choices waiting for admission (a waiting group counts each of its choices). */
  private queued(): number {
    return this.waiting.reduce((n, s) => n + 1 + s.children.length, 0);
  }

  private enqueue(req: GenerationRequest, choices: readonly SamplingParams[]): GenerationStream[] {
    if (this.closed) throw new GenerationError("Scheduler is closed", "E_CLOSED");
    const n = choices.length;
    if (n < 1) throw new GenerationError("a request needs at least one choice", "E_INVALID", "n");
    const V = this.model.config.vocabSize;
    const prompt = this.promptIds(req, V);
    const spans = this.imageSpans(prompt, req.imageFeatures);
    const room = this.maxSeqLen - prompt.length;
    if (room < 1)
      throw new GenerationError(
        `prompt of ${prompt.length} tokens leaves no room in the context of ${this.maxSeqLen} tokens`,
        "E_TOO_LONG",
        "prompt",
      );
    const gc = this.o.generationConfig;
    const asked = req.maxTokens ?? gc?.maxTokens ?? room;
    if (!Number.isInteger(asked) || asked < 1)
      throw new GenerationError(
        `maxTokens: must be a positive integer, got ${asked}`,
        "E_INVALID",
        "maxTokens",
      );
    const maxTokens = Math.min(asked, room);
    const need = prompt.length + maxTokens - 1;
    if (Math.ceil(need / this.pageSize) > this.numPages)
      throw new GenerationError(
        `a sequence of ${prompt.length} prompt + ${maxTokens} output tokens needs ${Math.ceil(need / this.pageSize)} KV pages; the cache has ${this.numPages}`,
        "E_TOO_LONG",
        "maxTokens",
      );
    // Requests submitted earlier in this tick may fit now: only those that do not count as queued.
    this.admit();
    if (this.queued() + n > this.maxQueue)
      throw new GenerationError(`queue full (${this.maxQueue} requests waiting)`, "E_QUEUE_FULL");
    const stopTokenIds = resolveStopTokenIds({
      eosTokenIds: this.stopIdsBase,
      generationConfigEos: gc?.eosTokenIds ?? [],
      stopTokenIds: req.stopTokenIds ?? [],
      ignoreEos: req.ignoreEos ?? false,
    });
    const stop = typeof req.stop === "string" ? [req.stop] : [...(req.stop ?? [])];
    if (stop.length > 0 && !this.tokenizer)
      throw new GenerationError("stop strings need a tokenizer", "E_INVALID", "stop");
    // Every choice's state first (a bad parameter throws before anything is queued).
    const made = choices.map((over) => {
      const sampling: SamplingParams = { ...(gc?.sampling ?? {}) };
      for (const k of SAMPLING_KEYS) {
        const v = over[k] ?? req[k];
        if (v !== undefined) (sampling as Record<string, unknown>)[k] = v;
      }
      const constraint = req.responseFormat
        ? createResponseFormatConstraint(req.responseFormat, this.tokenizer, {
            ...(this.o.responseFormat ?? {}),
            vocabSize: V,
            stopTokenIds,
          })
        : null;
      const state = new SamplingState(sampling, {
        vocabSize: V,
        promptIds: prompt,
        stopTokenIds,
        constraint,
      });
      if (state.params.minTokens > maxTokens)
        throw new GenerationError(
          `minTokens ${state.params.minTokens} exceeds maxTokens ${maxTokens}`,
          "E_INVALID",
          "minTokens",
        );
      const detok =
        this.tokenizer?.detokenizer({ skipSpecialTokens: req.skipSpecialTokens ?? true }) ?? null;
      const stopper = new StopChecker(detok, {
        stopTokenIds,
        stop,
        includeStopStrInOutput: req.includeStopStrInOutput ?? false,
        maxTokens,
        minTokens: state.params.minTokens,
      });
      return { state, stopper };
    });
    // Choices per shared prefill: a group is admitted whole, so at most maxSeqs rings and the
    // pages of the whole cache (each choice counted at its full length: ≥ what the forks reserve).
    const perGroup =
      prompt.length < this.pageSize
        ? 1
        : Math.max(
            1,
            Math.min(this.maxSeqs, Math.floor(this.numPages / Math.ceil(need / this.pageSize))),
          );

    const t0 = performance.now();
    const seqs = made.map(({ state, stopper }) => {
      const id = this.nextId++;
      let seq: Seq | undefined;
      const stream = new GenerationStream(id, () => seq && this.cancel(seq));
      seq = {
        stream,
        owner: undefined,
        children: [],
        holds: [],
        prompt,
        maxTokens,
        need,
        state,
        stopper,
        wantLogprobs: state.params.logprobs >= 0,
        phase: "waiting",
        kv: undefined,
        fed: 0,
        cachedTokens: 0,
        spans,
        features: undefined,
        featureRow: 0,
        tokens: [],
        lateId: -1,
        logprobs: [],
        t0,
        tAdmit: NaN,
        tFirst: NaN,
        detach: () => undefined,
      };
      return seq;
    });
    // Each group's owner prefills, so it owns the features (the first the caller's, the others a
    // copy); a pending choice needs none.
    const f = req.imageFeatures;
    seqs.forEach((s, i) => {
      if (i % perGroup !== 0 || !f) return;
      if (i === 0) s.features = f;
      else {
        s.features = Tensor.empty(f.shape, f.dtypeName, f.device);
        s.features.copyFrom(f);
      }
    });
    if (req.signal?.aborted) {
      for (const s of seqs) this.complete(s, "abort", null);
      return seqs.map((s) => s.stream);
    }
    seqs.forEach((s, i) => {
      if (i % perGroup === 0) this.waiting.push(s);
      else {
        const owner = seqs[i - (i % perGroup)]!;
        s.owner = owner;
        s.phase = "pending";
        owner.children.push(s);
      }
      if (req.signal) {
        const onAbort = () => this.cancel(s);
        req.signal.addEventListener("abort", onAbort, { once: true });
        s.detach = () => req.signal!.removeEventListener("abort", onAbort);
      }
    });
    this.kick();
    return seqs.map((s) => s.stream);
  }

  /** Resolves once nothing is queued or running. */
  async idle(): Promise<void> {
    while (this.loopDone) await this.loopDone;
  }

  /** Cancels every request, waits for the step in flight, frees the cache. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // One at a time: cancelling a group's owner hands its place to the next choice.
    while (this.running.length + this.waiting.length > 0)
      this.cancel((this.running[0] ?? this.waiting[0])!);
    await this.idle();
    this.sampler.dispose();
    this.cache.dispose();
  }

  // ---- internals ----------------------------------------------------------------------------

  /** The prompt's image blocks, checked against the features given for them. */
  private imageSpans(prompt: readonly number[], features: Tensor | undefined): Span[] {
    const image = this.model.config.imageTokenIndex ?? null;
    if (image === null) {
      if (features)
        throw new GenerationError("this model takes no images", "E_INVALID", "imageFeatures");
      return [];
    }
    const spans = imageTokenSpans(prompt, image);
    const count = spans.reduce((n, sp) => n + sp.end - sp.start, 0);
    const rows = features ? features.numel / features.shape[features.shape.length - 1]! : 0;
    if (rows !== count)
      throw new GenerationError(
        `the prompt has ${count} image tokens (id ${image}) but ${rows} image feature rows were given`,
        "E_INVALID",
        "imageFeatures",
      );
    return spans;
  }

  private promptIds(req: GenerationRequest, V: number): number[] {
    let ids: number[];
    if (typeof req.prompt === "string") {
      if (!this.tokenizer)
        throw new GenerationError("a text prompt needs a tokenizer", "E_INVALID", "prompt");
      ids = this.tokenizer.encode(req.prompt, { addSpecialTokens: req.addSpecialTokens ?? true });
    } else ids = [...req.prompt];
    if (ids.length === 0) throw new GenerationError("prompt is empty", "E_INVALID", "prompt");
    // The image token may lie past the vocabulary (HF embeds it as row 0 before the merge).
    const image = req.imageFeatures ? (this.model.config.imageTokenIndex ?? -1) : -1;
    for (const t of ids)
      if (!Number.isInteger(t) || t < 0 || (t >= V && t !== image))
        throw new GenerationError(`prompt: token id ${t} outside [0, ${V})`, "E_INVALID", "prompt");
    return ids;
  }

  private kick(): void {
    if (this.loopDone) return;
    this.loopDone = this.loop().finally(() => {
      this.loopDone = undefined;
      // A request may have arrived as the loop wound down.
      if (!this.closed && this.waiting.length > 0) this.kick();
    });
  }

  private async loop(): Promise<void> {
    // Start after the current tick: requests submitted together (n choices, a burst of clients)
    // then share the first step's prefill.
    await Promise.resolve();
    // A step still in flight is read even when every sequence has left (its host copy pending).
    while (this.waiting.length > 0 || this.running.length > 0 || this.inflight) {
      try {
        await this.iterate();
      } catch (e) {
        // A bug or a device error outside a step: fail what is running, keep serving the queue.
        for (const s of [...this.running]) this.fail(s, e);
      }
    }
  }

  /** One step: admit, run, sample, report. */
  private async iterate(): Promise<void> {
    if (this.inflight) {
      // Pipelined: launch the next step from this one's ids on the device, or drain.
      await this.advance();
      this.steps++;
      await new Promise<void>((r) => setImmediate(r));
      return;
    }
    this.admit();
    if (this.running.length === 0) {
      // Nothing running and the head still does not fit: it never will (submit checks this).
      const s = this.waiting[0]!;
      this.fail(s, new GenerationError(`KV cache cannot admit ${s.need} tokens`, "E_TOO_LONG"));
      return;
    }
    // Steady greedy decoding enters the pipeline: launched now, read in the next iteration.
    if (this.steady(null)) this.inflight = this.launch(null);
    else await this.step();
    this.steps++;
    // Let submits and aborts that arrived during the step land before the next one.
    await new Promise<void>((r) => setImmediate(r));
  }

  /**
   * Admits waiting requests in order while the cache can reserve their pages; a group whole (its
   * owner's sequence plus one reservation per pending choice, which its fork takes over).
   */
  private admit(): void {
    while (this.waiting.length > 0) {
      const s = this.waiting[0]!;
      if (this.cache.admission(s.need, s.prompt) !== null) return;
      // With a prefix cache the sequence may start with a cached prefix of its prompt.
      const kv = this.cache.sequence(s.need, s.prompt);
      const holds: KVSequence[] = [];
      while (holds.length < s.children.length && this.cache.admission(s.need) === null)
        holds.push(this.cache.sequence(s.need));
      if (holds.length < s.children.length) {
        for (const h of holds) h.dispose();
        kv.dispose();
        return;
      }
      this.waiting.shift();
      s.kv = kv;
      s.holds = holds;
      s.fed = s.cachedTokens = s.kv.length;
      s.phase = "running";
      s.tAdmit = performance.now();
      this.running.push(s);
    }
  }

  private async step(): Promise<void> {
    // A closed JSON value with no stop token allowed (none given, or min-tokens): ends here.
    for (const s of [...this.running])
      if (s.tokens.length > 0 && s.state.constraintStuck()) {
        const text = s.stopper.finish();
        if (text) s.stream.push({ type: "delta", text, tokenIds: [] });
        this.complete(s, "stop", null);
      }
    if (this.running.length === 0) return;
    if (this.asyncDecode) this.provideIds();
    const decodes = this.running.filter((s) => s.fed === s.prompt.length);
    const steps: Parameters<GenerationModel["forwardBatch"]>[0][number][] = decodes.map((s) => ({
      seq: s.kv!,
      ids: [s.tokens[s.tokens.length - 1]!],
    }));
    // Prefill chunks fill the token budget the decodes leave, sequence after sequence in arrival
    // order (vLLM's chunked prefill): many short prompts join in one step instead of one per step.
    const prefills: { s: Seq; chunk: number[]; features: number }[] = [];
    let budget = Math.max(1, this.maxBatchTokens - decodes.length);
    for (const p of this.running) {
      if (budget <= 0) break;
      if (p.fed === p.prompt.length) continue;
      const end = chunkEnd(p.spans, p.fed, p.fed + budget, p.prompt.length);
      const chunk = p.prompt.slice(p.fed, end);
      budget -= chunk.length;
      const step: (typeof steps)[number] = { seq: p.kv!, ids: chunk };
      let features = 0;
      if (p.spans.length > 0) {
        // The whole prompt's blocks: the model refuses a chunk that would split one.
        step.spans = p.spans;
        const image = this.model.config.imageTokenIndex!;
        features = chunk.reduce((n, t) => n + (t === image ? 1 : 0), 0);
        if (features > 0) {
          const f = p.features!;
          const width = f.shape[f.shape.length - 1]!;
          const rows = f.view([f.numel / width, width]);
          step.imageFeatures = rows.slice(p.featureRow, p.featureRow + features);
        }
      }
      steps.push(step);
      prefills.push({ s: p, chunk, features });
    }
    const inStep = [...decodes, ...prefills.map((p) => p.s)];
    let logits: Tensor;
    try {
      // Decode-only steps replay a captured graph per batch size (one launch instead of hundreds).
      logits = this.model.forwardBatch(steps, { graph: prefills.length === 0 });
    } catch (e) {
      for (const s of inStep) this.fail(s, e);
      return;
    }
    try {
      const rows = decodes.map((s, row) => ({ row, s }));
      prefills.forEach((p, i) => {
        p.s.fed += p.chunk.length;
        p.s.featureRow += p.features;
        // A prompt's last chunk yields its first token.
        // A prompt's last chunk yields its first token; its group's other choices take theirs
        // from the same row.
        if (p.s.fed === p.s.prompt.length) {
          rows.push({ row: decodes.length + i, s: p.s });
          for (const c of this.forkChildren(p.s)) {
            rows.push({ row: decodes.length + i, s: c });
            inStep.push(c);
          }
        }
      });
      // Choices sharing a row get a copy each: a constrained row is masked in place (Sampler).
      let picked = logits;
      if (new Set(rows.map((r) => r.row)).size < rows.length) {
        const V = logits.shape[1]!;
        picked = Tensor.empty([rows.length, V], "f32", logits.device);
        rows.forEach(({ row }, k) => picked.slice(k, k + 1).copyFrom(logits.slice(row, row + 1)));
      }
      let results: SampleResult[];
      try {
        results = await this.sampler.sample(
          picked,
          rows.map(({ row, s }, k) => ({ row: picked === logits ? row : k, state: s.state })),
        );
      } catch (e) {
        for (const s of inStep) this.fail(s, e);
        return;
      } finally {
        if (picked !== logits) picked.dispose();
      }
      rows.forEach(({ s }, k) => {
        if (s.phase === "running") this.onToken(s, results[k]!);
      });
    } finally {
      logits.dispose();
    }
  }

  // ---- pipelined decoding (asyncDecode) ---------------------------------------------------

  /**
   * Whether the next decode step may be pipelined: every running sequence decodes a plain greedy
   * token (Sampler.plainGreedy, for the token after the one in flight when `cur` is), none is one
   * token from its limit counting the step in flight, nothing waiting could be admitted, and
   * (with `cur`) the batch is the one `cur` runs.
   */
  private steady(cur: InFlight | null): boolean {
    if (!this.asyncDecode || this.running.length === 0) return false;
    if (cur && !sameSeqs(cur.seqs, this.running)) return false;
    const ahead = cur ? 1 : 0;
    for (const s of this.running)
      if (
        s.fed !== s.prompt.length ||
        s.tokens.length === 0 ||
        s.children.length > 0 ||
        s.tokens.length + 2 > s.maxTokens ||
        !Sampler.plainGreedy(s.state, ahead)
      )
        return false;
    const head = this.waiting[0];
    return !head || this.cache.admission(head.need, head.prompt) !== null;
  }

  /**
   * Launches a decode step of every running sequence and its argmax, and enqueues the argmax's
   * host copy, without waiting for anything: ids from the host (the last token of each), or with
   * `cur` from `cur`'s argmax on the device, row for row. Returns null when the step failed.
   */
  private launch(cur: InFlight | null): InFlight | null {
    const seqs = [...this.running];
    this.provideIds();
    let logits: Tensor;
    try {
      logits = this.model.forwardBatch(
        seqs.map((s, row) =>
          cur
            ? { seq: s.kv!, ids: [], idsFrom: { tensor: cur.ids, row } }
            : { seq: s.kv!, ids: [s.tokens[s.tokens.length - 1]!] },
        ),
        { graph: true },
      );
    } catch (e) {
      for (const s of seqs) this.fail(s, e);
      return null;
    }
    try {
      // The token fed from the device sits at the sequence's last KV position.
      if (cur) for (const s of seqs) s.lateId = s.kv!.length - 1;
      const { ids, read } = this.sampler.launchGreedy(
        logits,
        seqs.map((s, row) => ({ row, state: s.state })),
      );
      if (cur) this.pipelined++;
      return { seqs, ids, read };
    } catch (e) {
      for (const s of seqs) this.fail(s, e);
      return null;
    } finally {
      logits.dispose(); // after the argmax that reads it (stream order)
    }
  }

  /** Reads the step in flight, launching the next one first while the pipeline holds. */
  private async advance(): Promise<void> {
    const cur = this.inflight!;
    this.inflight = null;
    if (this.steady(cur)) this.inflight = this.launch(cur);
    let results: SampleResult[];
    try {
      results = await cur.read();
    } catch (e) {
      for (const s of cur.seqs) this.fail(s, e);
      return;
    }
    // Sequences that left meanwhile (finished, cancelled) drop their token: their extra one.
    cur.seqs.forEach((s, k) => {
      if (s.phase === "running") this.onToken(s, results[k]!);
    });
  }

  /** Gives the KV cache the ids that device-fed steps left out (known once read). */
  private provideIds(): void {
    for (const s of this.running) {
      if (s.lateId < 0) continue;
      const token = s.tokens[s.lateId - s.prompt.length];
      if (token === undefined) continue; // not read yet: still in flight
      s.kv!.provideIds(s.lateId, [token]);
      s.lateId = -1;
    }
  }

  /**
   * The owner's prompt is in: each pending choice becomes a fork of its KV (sharing the prompt's
   * full pages, a copy of the rings), taking over one reservation made at admission, and runs
   * right after the owner.
   */
  private forkChildren(p: Seq): Seq[] {
    // Freed first so the forks can reserve those pages again (they need no more: see admit).
    for (const h of p.holds.splice(0)) h.dispose();
    const out: Seq[] = [];
    for (const c of p.children.splice(0)) {
      c.owner = undefined;
      c.phase = "running";
      try {
        c.kv = p.kv!.fork(p.need);
      } catch (e) {
        this.fail(c, e);
        continue;
      }
      c.fed = p.fed;
      c.cachedTokens = p.cachedTokens;
      c.featureRow = p.featureRow;
      c.tAdmit = p.tAdmit;
      out.push(c);
    }
    this.running.splice(this.running.indexOf(p) + 1, 0, ...out);
    return out;
  }

  private onToken(s: Seq, r: SampleResult): void {
    s.tokens.push(r.token);
    if (s.tokens.length === 1) s.tFirst = performance.now();
    let lp: TokenLogprobs | undefined;
    if (s.wantLogprobs) {
      lp = { token: r.token, logprob: r.logprob!, top: r.top! };
      s.logprobs.push(lp);
    }
    const st = s.stopper.push(r.token);
    s.stream.push({
      type: "delta",
      text: st.text,
      tokenIds: [r.token],
      ...(lp ? { logprobs: [lp] } : {}),
    });
    if (st.finish) this.complete(s, st.finish.reason, st.finish.stopReason);
  }

  private cancel(s: Seq): void {
    if (s.phase === "done") return;
    if (s.children.length > 0) this.handOff(s);
    if (!s.stopper.finished) s.stopper.finish();
    this.complete(s, "abort", null);
  }

  /**
   * A group's owner leaves before its prefill is done: the next choice takes over its place, its
   * KV, prefill progress and features, so the other choices keep running.
   */
  private handOff(p: Seq): void {
    const [c, ...rest] = p.children;
    const list = p.phase === "waiting" ? this.waiting : this.running;
    c!.owner = undefined;
    c!.phase = p.phase;
    c!.kv = p.kv;
    c!.fed = p.fed;
    c!.cachedTokens = p.cachedTokens;
    c!.features = p.features;
    c!.featureRow = p.featureRow;
    c!.tAdmit = p.tAdmit;
    c!.children = rest;
    c!.holds = p.holds;
    for (const r of rest) r.owner = c;
    // c no longer needs the reservation kept for its fork.
    if (c!.holds.length > rest.length) c!.holds.pop()!.dispose();
    list[list.indexOf(p)] = c!;
    p.kv = undefined;
    p.features = undefined;
    p.children = [];
    p.holds = [];
  }

  /** Leaves the batch: frees the KV now, then reports. */
  private release(s: Seq): void {
    if (s.phase === "pending") {
      const o = s.owner!;
      o.children.splice(o.children.indexOf(s), 1);
      // An admitted owner holds one reservation per pending choice.
      if (o.holds.length > o.children.length) o.holds.pop()!.dispose();
      s.owner = undefined;
    } else {
      const list = s.phase === "waiting" ? this.waiting : this.running;
      const i = list.indexOf(s);
      if (i >= 0) list.splice(i, 1);
    }
    s.phase = "done";
    for (const h of s.holds.splice(0)) h.dispose();
    // A pipelined step may have fed a token past the last one reported (asyncDecode): roll that
    // position back, as if it had never run (its id never reached the prefix index).
    const keep = s.prompt.length + s.tokens.length - 1;
    if (this.asyncDecode && s.kv && s.tokens.length > 0 && s.kv.length > keep) {
      try {
        s.kv.trim(keep);
      } catch {
        // E_KV_ROLLBACK cannot happen for one position (rollback ≥ 1); freed below either way.
      }
    }
    s.kv?.dispose();
    s.kv = undefined;
    s.features?.dispose();
    s.detach();
  }

  private complete(s: Seq, reason: FinishReason, stopReason: number | string | null): void {
    if (s.phase === "done") return;
    this.release(s);
    const now = performance.now();
    const summary: GenerationSummary = {
      type: "finish",
      text: s.stopper.text,
      tokenIds: s.tokens,
      finishReason: reason,
      stopReason,
      usage: {
        promptTokens: s.prompt.length,
        completionTokens: s.tokens.length,
        cachedTokens: s.cachedTokens,
      },
      ...(s.wantLogprobs ? { logprobs: s.logprobs } : {}),
      timings: {
        queueMs: (Number.isNaN(s.tAdmit) ? now : s.tAdmit) - s.t0,
        ttftMs: s.tFirst - s.t0,
        totalMs: now - s.t0,
      },
    };
    s.stream.finish(summary);
  }

  private fail(s: Seq, e: unknown): void {
    if (s.phase === "done") return;
    // Choices waiting for this prefill cannot get it.
    for (const c of [...s.children]) this.fail(c, e);
    this.release(s);
    s.stream.fail(e);
  }
}

/** A pipelined decode step in flight (asyncDecode). */
interface InFlight {
  /** the step's sequences, row order */
  readonly seqs: readonly Seq[];
  /** [seqs.length] i32 on the device: the step's argmax, the next step's ids */
  readonly ids: Tensor;
  /** its tokens, once the step has run (Sampler.launchGreedy) */
  readonly read: () => Promise<SampleResult[]>;
}

function sameSeqs(a: readonly Seq[], b: readonly Seq[]): boolean {
  return a.length === b.length && a.every((s, i) => s === b[i]);
}

const SAMPLING_KEYS = [
  "temperature",
  "topK",
  "topP",
  "minP",
  "repetitionPenalty",
  "frequencyPenalty",
  "presencePenalty",
  "logitBias",
  "seed",
  "logprobs",
  "minTokens",
] as const satisfies readonly (keyof SamplingParams)[];

/**
 * Where a prefill chunk of [fed, want) should end so that no image block is split: before a block
 * the chunk would cut into, or (a chunk starting at a block) after the whole block.
 */
export function chunkEnd(spans: readonly Span[], fed: number, want: number, len: number): number {
  let end = Math.min(want, len);
  for (const sp of spans) {
    if (sp.start < end && end < sp.end) {
      end = sp.start > fed ? sp.start : sp.end;
      break;
    }
  }
  return end;
}
