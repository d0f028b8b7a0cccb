// Sampling parameters: what a request may ask for (vLLM's SamplingParams names, camelCased), their
// validation (vLLM's ranges), and the defaults a checkpoint's generation_config.json supplies.
import { readFile } from "node:fs/promises";
import { join } from "node:path";

/** A request the runtime refuses; `field` names the offending parameter (for a 400 reply). */
export class GenerationError extends Error {
  constructor(
    message: string,
    /** E_INVALID (a bad parameter), E_TOO_LONG (prompt does not fit the context), E_QUEUE_FULL, E_CLOSED */
    readonly code: "E_INVALID" | "E_TOO_LONG" | "E_QUEUE_FULL" | "E_CLOSED",
    readonly field?: string,
  ) {
    super(message);
    this.name = "GenerationError";
  }
}

export interface SamplingParams {
  /** Softmax temperature; below 1e-5 (vLLM's _SAMPLING_EPS) means greedy. Default 1. */
  temperature?: number;
  /** Keep the k most likely tokens (ties at the k-th value kept, as vLLM); 0 or -1 = off. */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose mass reaches p; (0, 1], 1 = off. */
  topP?: number;
  /** Drop tokens whose probability is below minP × the top probability; [0, 1], 0 = off. */
  minP?: number;
  /** > 0; tokens seen in prompt or output: positive logits ÷ r, negative × r. 1 = off. */
  repetitionPenalty?: number;
  /** [-2, 2]; logit −= f × (count of the token in the output). */
  frequencyPenalty?: number;
  /** [-2, 2]; logit −= p for every token present in the output. */
  presencePenalty?: number;
  /** Token id → bias added to its logit (clamped to [-100, 100], as vLLM). */
  logitBias?: Readonly<Record<number | string, number>> | ReadonlyMap<number, number>;
  /** Seeds this request's own generator: same seed + same request → same tokens. */
  seed?: number | bigint;
  /**
   * Log-probabilities of the model's distribution (masked by a response_format constraint, as
   * vLLM's): the sampled token's and the top n (n ≥ 0).
   */
  logprobs?: number;
  /** Stop tokens are masked (−inf) and stop strings ignored until this many tokens are out. */
  minTokens?: number;
}

/** SamplingParams checked and filled in (what the sampler reads). */
export interface ResolvedSampling {
  readonly temperature: number;
  /** temperature < 1e-5 */
  readonly greedy: boolean;
  /** 0 = off (also when k >= vocab) */
  readonly topK: number;
  readonly topP: number;
  readonly minP: number;
  readonly repetitionPenalty: number;
  readonly frequencyPenalty: number;
  readonly presencePenalty: number;
  readonly logitBias: ReadonlyMap<number, number>;
  readonly seed: bigint | undefined;
  /** -1 = no logprobs */
  readonly logprobs: number;
  readonly minTokens: number;
}

/** vLLM's _SAMPLING_EPS: a temperature below it samples greedily. */
export const SAMPLING_EPS = 1e-5;
/** Most top logprobs a request may ask for (the sampler's device top-k is at most 1024 wide). */
export const MAX_LOGPROBS = 1024;

function bad(field: string, msg: string): never {
  throw new GenerationError(`${field}: ${msg}`, "E_INVALID", field);
}
function num(v: unknown, field: string, def: number): number {
  if (v === undefined || v === null) return def;
  if (typeof v !== "number" || !Number.isFinite(v))
    bad(field, `must be a finite number, got ${String(v)}`);
  return v;
}
function int(v: unknown, field: string, def: number): number {
  const n = num(v, field, def);
  if (!Number.isInteger(n)) bad(field, `must be an integer, got ${n}`);
  return n;
}

/** Validates `p` against vLLM's ranges and fills the defaults. */
export function resolveSampling(p: SamplingParams, vocabSize: number): ResolvedSampling {
  const temperature = num(p.temperature, "temperature", 1);
  if (temperature < 0) bad("temperature", `must be >= 0, got ${temperature}`);
  let topK = int(p.topK, "topK", 0);
  if (topK < -1) bad("topK", `must be -1, 0 (off) or >= 1, got ${topK}`);
  if (topK === -1 || topK >= vocabSize) topK = 0;
  const topP = num(p.topP, "topP", 1);
  if (!(topP > 0 && topP <= 1)) bad("topP", `must be in (0, 1], got ${topP}`);
  const minP = num(p.minP, "minP", 0);
  if (!(minP >= 0 && minP <= 1)) bad("minP", `must be in [0, 1], got ${minP}`);
  const repetitionPenalty = num(p.repetitionPenalty, "repetitionPenalty", 1);
  if (!(repetitionPenalty > 0)) bad("repetitionPenalty", `must be > 0, got ${repetitionPenalty}`);
  const frequencyPenalty = num(p.frequencyPenalty, "frequencyPenalty", 0);
  if (Math.abs(frequencyPenalty) > 2)
    bad("frequencyPenalty", `must be in [-2, 2], got ${frequencyPenalty}`);
  const presencePenalty = num(p.presencePenalty, "presencePenalty", 0);
  if (Math.abs(presencePenalty) > 2)
    bad("presencePenalty", `must be in [-2, 2], got ${presencePenalty}`);
  const logprobs =
    p.logprobs === undefined || p.logprobs === null ? -1 : int(p.logprobs, "logprobs", 0);
  if (logprobs < -1 || logprobs > Math.min(MAX_LOGPROBS, vocabSize))
    bad("logprobs", `must be in [0, ${Math.min(MAX_LOGPROBS, vocabSize)}], got ${logprobs}`);
  const minTokens = int(p.minTokens, "minTokens", 0);
  if (minTokens < 0) bad("minTokens", `must be >= 0, got ${minTokens}`);
  const logitBias = new Map<number, number>();
  const entries =
    p.logitBias instanceof Map ? [...p.logitBias.entries()] : Object.entries(p.logitBias ?? {});
  for (const [k, v] of entries) {
    const id = Number(k);
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize)
      bad("logitBias", `token id ${String(k)} is outside [0, ${vocabSize})`);
    const b = num(v, `logitBias[${id}]`, 0);
    if (b !== 0) logitBias.set(id, Math.min(100, Math.max(-100, b)));
  }
  let seed: bigint | undefined;
  if (p.seed !== undefined && p.seed !== null) {
    if (typeof p.seed === "bigint") seed = p.seed;
    else if (Number.isSafeInteger(p.seed)) seed = BigInt(p.seed);
    else bad("seed", `must be an integer, got ${String(p.seed)}`);
  }
  return {
    temperature,
    greedy: temperature < SAMPLING_EPS,
    topK,
    topP,
    minP,
    repetitionPenalty,
    frequencyPenalty,
    presencePenalty,
    logitBias,
    seed,
    logprobs,
    minTokens,
  };
}

/** What a checkpoint's generation_config.json contributes (vLLM's `--generation-config auto`). */
export interface GenerationConfigDefaults {
  /** eos_token_id (an id or a list), as stop tokens. */
  eosTokenIds: number[];
  /** temperature, top_k, top_p, min_p, repetition_penalty: defaults for requests that omit them. */
  sampling: SamplingParams;
  /** max_new_tokens, when given. */
  maxTokens?: number;
}

/**
 * Reads the defaults of a parsed generation_config.json. vLLM takes exactly these keys as request
 * defaults (get_diff_sampling_param) and adds eos_token_id to the stop tokens
 * (update_from_generation_config). Gemma 3 IT: top_k 64, top_p 0.95, eos [1, 106].
 */
export function generationConfigDefaults(json: unknown): GenerationConfigDefaults {
  const o = (typeof json === "object" && json !== null ? json : {}) as Record<string, unknown>;
  const eos = o["eos_token_id"];
  const eosTokenIds = (
    Array.isArray(eos) ? eos : eos === undefined || eos === null ? [] : [eos]
  ).filter((v): v is number => Number.isInteger(v) && (v as number) >= 0);
  const sampling: SamplingParams = {};
  const take = (key: string): number | undefined =>
    typeof o[key] === "number" && Number.isFinite(o[key]) ? (o[key] as number) : undefined;
  const t = take("temperature");
  if (t !== undefined) sampling.temperature = t;
  const k = take("top_k");
  if (k !== undefined) sampling.topK = k;
  const tp = take("top_p");
  if (tp !== undefined) sampling.topP = tp;
  const mp = take("min_p");
  if (mp !== undefined) sampling.minP = mp;
  const rp = take("repetition_penalty");
  if (rp !== undefined) sampling.repetitionPenalty = rp;
  const mt = take("max_new_tokens");
  return { eosTokenIds, sampling, ...(mt !== undefined ? { maxTokens: mt } : {}) };
}

/** generation_config.json of a model directory, or empty defaults when the file is absent. */
export async function loadGenerationConfig(dir: string): Promise<GenerationConfigDefaults> {
  let text: string;
  try {
    text = await readFile(join(dir, "generation_config.json"), "utf8");
  } catch (e) {
    if ((e as { code?: string }).code === "ENOENT") return generationConfigDefaults({});
    throw e;
  }
  return generationConfigDefaults(JSON.parse(text));
}

/**
 * Stop token ids as vLLM merges them: the model's eos ids (config.json) and generation_config.json's
 * eos_token_id stop generation unless `ignoreEos`; the request's own stopTokenIds always do.
 */
export function resolveStopTokenIds(o: {
  eosTokenIds: readonly number[];
  generationConfigEos?: readonly number[];
  stopTokenIds?: readonly number[];
  ignoreEos?: boolean;
}): number[] {
  const ids = o.ignoreEos ? [] : [...o.eosTokenIds, ...(o.generationConfigEos ?? [])];
  return [...new Set([...ids, ...(o.stopTokenIds ?? [])])];
}
