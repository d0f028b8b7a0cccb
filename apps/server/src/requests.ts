// Request bodies of the OpenAI API, checked field by field: a wrong type, a value out of range or an
// unsupported option is a 400 naming the field (OpenAI's `param`), before any work starts. The
// ranges are OpenAI's where it states them (temperature [0, 2], top_logprobs [0, 20], penalties
// [-2, 2], logit_bias [-100, 100]) and vLLM's for its extensions (top_k, min_p, repetition_penalty).
import type { ChatContentPart, ChatMessage } from "@gemma3/tokenizer";
import type { SamplingParams } from "@gemma3/generation";
import { badRequest } from "./errors.js";

/** Sampling and stop settings common to both endpoints, in the runtime's words. */
export interface CommonParams {
  model: string | undefined;
  stream: boolean;
  includeUsage: boolean;
  n: number;
  maxTokens: number | undefined;
  sampling: SamplingParams;
  stop: string[];
  stopTokenIds: number[];
  ignoreEos: boolean;
  skipSpecialTokens: boolean;
  /** top alternatives per token; -1 = no logprobs */
  logprobs: number;
  responseFormat: ResponseFormat;
}

export type ResponseFormat =
  | { type: "text" }
  | { type: "json_object" }
  | { type: "json_schema"; name: string; schema: Record<string, unknown>; strict: boolean };

export interface ChatRequest extends CommonParams {
  messages: ChatMessage[];
  /** One URL per image part, in order (data: URLs, or http(s) when allowed). */
  images: string[];
  panAndScan: boolean;
}

export interface CompletionRequest extends CommonParams {
  /** One prompt per entry (a string, or token ids). */
  prompts: (string | number[])[];
  echo: boolean;
}

/** Most choices per request (`n`). */
export const MAX_N = 16;
/** OpenAI's limit on top_logprobs (chat). */
export const MAX_TOP_LOGPROBS = 20;
/** OpenAI's limit on `logprobs` (completions). */
export const MAX_COMPLETION_LOGPROBS = 5;
const MAX_STOP = 16;

type Json = Record<string, unknown>;

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  return typeof v;
}

/** Typed reads of one JSON object's fields; every failure is a 400 naming the field. */
class Fields {
  constructor(
    private readonly o: Json,
    private readonly prefix = "",
  ) {}
  private name(k: string): string {
    return this.prefix + k;
  }
  has(k: string): boolean {
    return this.o[k] !== undefined && this.o[k] !== null;
  }
  raw(k: string): unknown {
    return this.o[k];
  }
  bool(k: string, def: boolean): boolean {
    const v = this.o[k];
    if (v === undefined || v === null) return def;
    if (typeof v !== "boolean")
      throw badRequest(`${this.name(k)}: expected a boolean, got ${typeName(v)}`, this.name(k));
    return v;
  }
  num(k: string, lo: number, hi: number): number | undefined {
    const v = this.o[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "number" || !Number.isFinite(v))
      throw badRequest(
        `${this.name(k)}: expected a finite number, got ${typeName(v)}`,
        this.name(k),
      );
    if (v < lo || v > hi)
      throw badRequest(`${this.name(k)}: ${v} is outside [${lo}, ${hi}]`, this.name(k));
    return v;
  }
  int(k: string, lo: number, hi: number): number | undefined {
    const v = this.num(k, lo, hi);
    if (v !== undefined && !Number.isInteger(v))
      throw badRequest(`${this.name(k)}: expected an integer, got ${v}`, this.name(k));
    return v;
  }
  str(k: string): string | undefined {
    const v = this.o[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "string")
      throw badRequest(`${this.name(k)}: expected a string, got ${typeName(v)}`, this.name(k));
    return v;
  }
  obj(k: string): Fields | undefined {
    const v = this.o[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "object" || Array.isArray(v))
      throw badRequest(`${this.name(k)}: expected an object, got ${typeName(v)}`, this.name(k));
    return new Fields(v as Json, `${this.name(k)}.`);
  }
}

/** The parsed body must be a JSON object. */
export function asObject(body: unknown): Json {
  if (typeof body !== "object" || body === null || Array.isArray(body))
    throw badRequest(`the request body must be a JSON object, got ${typeName(body)}`);
  return body as Json;
}

function stopList(f: Fields): string[] {
  const v = f.raw("stop");
  if (v === undefined || v === null) return [];
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list) || list.some((s) => typeof s !== "string"))
    throw badRequest("stop: expected a string or an array of strings", "stop");
  if (list.length > MAX_STOP) throw badRequest(`stop: at most ${MAX_STOP} strings`, "stop");
  return (list as string[]).filter((s) => s.length > 0);
}

function idList(v: unknown, field: string, vocab: number): number[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw badRequest(`${field}: expected an array of token ids`, field);
  for (const t of v)
    if (!Number.isInteger(t) || (t as number) < 0 || (t as number) >= vocab)
      throw badRequest(`${field}: token id ${JSON.stringify(t)} is outside [0, ${vocab})`, field);
  return v as number[];
}

function logitBias(f: Fields, vocab: number): Record<number, number> | undefined {
  const b = f.obj("logit_bias");
  if (!b) return undefined;
  const raw = f.raw("logit_bias") as Json;
  const out: Record<number, number> = {};
  for (const k of Object.keys(raw)) {
    if (!/^\d+$/.test(k) || Number(k) >= vocab)
      throw badRequest(`logit_bias: key "${k}" is not a token id in [0, ${vocab})`, "logit_bias");
    const v = b.num(k, -100, 100)!;
    out[Number(k)] = v;
  }
  return out;
}

function responseFormat(f: Fields): ResponseFormat {
  const r = f.obj("response_format");
  if (!r) return { type: "text" };
  const type = r.str("type");
  if (type === undefined || type === "text") return { type: "text" };
  if (type === "json_object") return { type: "json_object" };
  if (type === "json_schema") {
    const js = r.obj("json_schema");
    if (!js)
      throw badRequest("response_format.json_schema: required", "response_format.json_schema");
    const schema = js.obj("schema") ? ((js.raw("schema") as Json) ?? {}) : {};
    return {
      type: "json_schema",
      name: js.str("name") ?? "response",
      schema,
      strict: js.bool("strict", false),
    };
  }
  throw badRequest(
    `response_format.type: "${type}" is not one of text, json_object, json_schema`,
    "response_format.type",
  );
}

function common(
  o: Json,
  vocab: number,
  maxLogprobs: number,
  logprobsKey: "chat" | "completion",
): CommonParams {
  const f = new Fields(o);
  const streamOptions = f.obj("stream_options");
  const stream = f.bool("stream", false);
  if (streamOptions && !stream)
    throw badRequest("stream_options: only allowed when stream is true", "stream_options");
  const maxTokens = f.int("max_completion_tokens", 1, 2 ** 31) ?? f.int("max_tokens", 1, 2 ** 31);
  let logprobs = -1;
  if (logprobsKey === "chat") {
    const want = f.bool("logprobs", false);
    const top = f.int("top_logprobs", 0, maxLogprobs);
    if (top !== undefined && !want)
      throw badRequest("top_logprobs: requires logprobs to be true", "top_logprobs");
    if (want) logprobs = top ?? 0;
  } else {
    logprobs = f.int("logprobs", 0, maxLogprobs) ?? -1;
  }
  const sampling: SamplingParams = {};
  const put = <K extends keyof SamplingParams>(k: K, v: SamplingParams[K] | undefined) => {
    if (v !== undefined) sampling[k] = v;
  };
  put("temperature", f.num("temperature", 0, 2));
  put("topP", f.num("top_p", Number.MIN_VALUE, 1));
  put("topK", f.int("top_k", -1, 2 ** 31));
  put("minP", f.num("min_p", 0, 1));
  put("repetitionPenalty", f.num("repetition_penalty", Number.MIN_VALUE, 100));
  put("frequencyPenalty", f.num("frequency_penalty", -2, 2));
  put("presencePenalty", f.num("presence_penalty", -2, 2));
  put("minTokens", f.int("min_tokens", 0, 2 ** 31));
  put("seed", f.int("seed", Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER));
  put("logitBias", logitBias(f, vocab));
  if (logprobs >= 0) sampling.logprobs = logprobs;
  return {
    model: f.str("model"),
    stream,
    includeUsage: streamOptions?.bool("include_usage", false) ?? false,
    n: f.int("n", 1, MAX_N) ?? 1,
    maxTokens,
    sampling,
    stop: stopList(f),
    stopTokenIds: idList(o["stop_token_ids"], "stop_token_ids", vocab),
    ignoreEos: f.bool("ignore_eos", false),
    skipSpecialTokens: f.bool("skip_special_tokens", true),
    logprobs,
    responseFormat: responseFormat(f),
  };
}

const ROLES = new Set(["system", "developer", "user", "assistant"]);

function contentParts(v: unknown, at: string, images: string[]): string | ChatContentPart[] {
  if (typeof v === "string") return v;
  if (!Array.isArray(v))
    throw badRequest(`${at}: expected a string or an array of content parts`, at);
  return v.map((p: unknown, j): ChatContentPart => {
    const pat = `${at}[${j}]`;
    if (typeof p !== "object" || p === null || Array.isArray(p))
      throw badRequest(`${pat}: expected a content part object`, pat);
    const part = new Fields(p as Json, `${pat}.`);
    const type = part.str("type");
    if (type === "text") {
      const text = part.str("text");
      if (text === undefined) throw badRequest(`${pat}.text: required`, `${pat}.text`);
      return { type: "text", text };
    }
    if (type === "image_url") {
      const raw = (p as Json)["image_url"];
      const url = typeof raw === "string" ? raw : (part.obj("image_url")?.str("url") ?? undefined);
      if (url === undefined)
        throw badRequest(`${pat}.image_url.url: required`, `${pat}.image_url.url`);
      images.push(url);
      return { type: "image" };
    }
    throw badRequest(`${pat}.type: "${String(type)}" is not one of text, image_url`, `${pat}.type`);
  });
}

export function parseChatRequest(body: unknown, vocab: number): ChatRequest {
  const o = asObject(body);
  const base = common(o, vocab, MAX_TOP_LOGPROBS, "chat");
  const msgs = o["messages"];
  if (!Array.isArray(msgs) || msgs.length === 0)
    throw badRequest("messages: expected a non-empty array of messages", "messages");
  const images: string[] = [];
  const messages = msgs.map((m: unknown, i): ChatMessage => {
    const at = `messages[${i}]`;
    if (typeof m !== "object" || m === null || Array.isArray(m))
      throw badRequest(`${at}: expected a message object`, at);
    const f = new Fields(m as Json, `${at}.`);
    const role = f.str("role");
    if (role === undefined || !ROLES.has(role))
      throw badRequest(
        `${at}.role: expected one of ${[...ROLES].join(", ")}, got ${JSON.stringify(role)}`,
        `${at}.role`,
      );
    const content = (m as Json)["content"];
    if (content === undefined || content === null)
      throw badRequest(`${at}.content: required`, `${at}.content`);
    // OpenAI's "developer" is the newer name of "system".
    return {
      role: role === "developer" ? "system" : role,
      content: contentParts(content, `${at}.content`, images),
    };
  });
  const f = new Fields(o);
  const mm = f.obj("mm_processor_kwargs");
  const panAndScan = f.bool("pan_and_scan", mm?.bool("do_pan_and_scan", false) ?? false);
  return { ...base, messages, images, panAndScan };
}

export function parseCompletionRequest(body: unknown, vocab: number): CompletionRequest {
  const o = asObject(body);
  const base = common(o, vocab, MAX_COMPLETION_LOGPROBS, "completion");
  const f = new Fields(o);
  if (f.has("suffix")) throw badRequest("suffix: not supported by this model", "suffix");
  const bestOf = f.int("best_of", 1, MAX_N);
  if (bestOf !== undefined && bestOf !== base.n)
    throw badRequest("best_of: only best_of == n is supported", "best_of");
  const p = o["prompt"];
  let prompts: (string | number[])[];
  if (typeof p === "string") prompts = [p];
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === "string"))
    prompts = p as string[];
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === "number"))
    prompts = [idList(p, "prompt", vocab)];
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => Array.isArray(x)))
    prompts = p.map((x, i) => idList(x, `prompt[${i}]`, vocab));
  else
    throw badRequest(
      "prompt: expected a string, an array of strings, an array of token ids or an array of such arrays",
      "prompt",
    );
  if (prompts.some((x) => x.length === 0)) throw badRequest("prompt: empty prompt", "prompt");
  if (prompts.length * base.n > MAX_N * 4)
    throw badRequest(`prompt: at most ${MAX_N * 4} prompts × n per request`, "prompt");
  return { ...base, prompts, echo: f.bool("echo", false) };
}
