// A live server on localhost driven by the real `openai` npm client (and plain fetch where the
// client would hide the wire format): replies match a plain greedy loop over the model, streams
// match non-streamed replies, OpenAI's error contract holds for bad input.
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Engine, RunningServer } from "../src/index.js";
import { demoEngine, greedyReference, readSse, serve } from "./helpers.js";

let engine: Engine;
let srv: RunningServer;
let client: OpenAI;
let modelId: string;

beforeAll(async () => {
  engine = await demoEngine();
  srv = await serve({ engine });
  client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: "unused", maxRetries: 0 });
  modelId = engine.info.id;
});
afterAll(async () => {
  await srv?.close();
});

const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${srv.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });

const messages = [{ role: "user" as const, content: "Why is the sky blue?" }];

describe("chat completions", () => {
  it("greedy reply equals a plain greedy loop over the model", async () => {
    const ids = engine.tokenizer.encodeChat(messages, { addGenerationPrompt: true }).ids;
    const ref = await greedyReference(engine.model, ids, 12);
    const r = await client.chat.completions.create({
      model: modelId,
      messages,
      max_tokens: 12,
      temperature: 0,
      // Random weights may pick an eos id: compare the raw ids, not stop behaviour.
      ...({ ignore_eos: true } as object),
    });
    expect(r.object).toBe("chat.completion");
    expect(r.choices).toHaveLength(1);
    expect(r.choices[0]!.message.role).toBe("assistant");
    expect(r.choices[0]!.message.content).toBe(
      engine.tokenizer.decode(ref, { skipSpecialTokens: true }),
    );
    expect(r.choices[0]!.finish_reason).toBe("length");
    expect(r.usage).toMatchObject({
      prompt_tokens: ids.length,
      completion_tokens: 12,
      total_tokens: ids.length + 12,
    });
  });

  it("streamed deltas add up to the non-streamed reply; usage comes last when asked", async () => {
    const base = { model: modelId, messages, max_tokens: 10, temperature: 0.8, seed: 1234 };
    const whole = await client.chat.completions.create(base);
    const stream = await client.chat.completions.create({
      ...base,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let finish: string | null = null;
    let usage: unknown = null;
    let first = true;
    for await (const c of stream) {
      expect(c.object).toBe("chat.completion.chunk");
      if (c.usage) usage = c.usage;
      for (const ch of c.choices) {
        if (first) expect(ch.delta.role).toBe("assistant");
        first = false;
        text += ch.delta.content ?? "";
        if (ch.finish_reason) finish = ch.finish_reason;
      }
    }
    expect(text).toBe(whole.choices[0]!.message.content);
    expect(finish).toBe(whole.choices[0]!.finish_reason);
    expect(usage).toEqual(whole.usage);
  });

  it("ends the SSE stream with data: [DONE]", async () => {
    const r = await post("/v1/chat/completions", { messages, max_tokens: 3, stream: true });
    expect(r.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const ev = await readSse(r);
    expect(ev[ev.length - 1]).toBe("[DONE]");
    expect(
      ev.slice(0, -1).every((e) => (e as { object: string }).object === "chat.completion.chunk"),
    ).toBe(true);
  });

  it("n choices are reproducible with a seed; logprobs are consistent with greedy picks", async () => {
    const a = await client.chat.completions.create({
      model: modelId,
      messages,
      max_tokens: 6,
      n: 3,
      seed: 7,
    });
    const b = await client.chat.completions.create({
      model: modelId,
      messages,
      max_tokens: 6,
      n: 3,
      seed: 7,
    });
    expect(a.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    expect(a.choices.map((c) => c.message.content)).toEqual(
      b.choices.map((c) => c.message.content),
    );
    // Three independent samples of a flat random model are (overwhelmingly) not all equal.
    expect(new Set(a.choices.map((c) => c.message.content)).size).toBeGreaterThan(1);

    const g = await client.chat.completions.create({
      model: modelId,
      messages,
      max_tokens: 5,
      temperature: 0,
      logprobs: true,
      top_logprobs: 3,
    });
    const content = g.choices[0]!.logprobs!.content!;
    expect(content.length).toBe(g.usage!.completion_tokens);
    for (const t of content) {
      expect(t.top_logprobs).toHaveLength(3);
      // greedy: the chosen token is the most likely one
      expect(t.token).toBe(t.top_logprobs[0]!.token);
      expect(t.logprob).toBeCloseTo(t.top_logprobs[0]!.logprob, 6);
      expect(t.top_logprobs[0]!.logprob).toBeGreaterThanOrEqual(t.top_logprobs[1]!.logprob);
      expect(t.logprob).toBeLessThanOrEqual(0);
      expect(Buffer.from(t.bytes!).toString("utf8")).toBe(t.token);
    }
    expect(content.map((t) => t.token).join("")).toBe(g.choices[0]!.message.content);
  });

  it("a stop string cuts the reply before it and reports finish_reason stop", async () => {
    const full = await client.chat.completions.create({
      model: modelId,
      messages,
      max_tokens: 12,
      temperature: 0,
    });
    const text = full.choices[0]!.message.content!;
    const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 2);
    expect(stop.length).toBe(2);
    const r = await client.chat.completions.create({
      model: modelId,
      messages,
      max_tokens: 12,
      temperature: 0,
      stop: [stop],
    });
    expect(r.choices[0]!.finish_reason).toBe("stop");
    expect(r.choices[0]!.message.content).toBe(text.slice(0, text.indexOf(stop)));
  });
});

describe("completions, models, tokenize", () => {
  it("completes a text prompt and token-id prompts, echo and logprobs", async () => {
    const ids = engine.tokenizer.encode("The capital of France is");
    const ref = await greedyReference(engine.model, ids, 6);
    const r = await client.completions.create({
      model: modelId,
      prompt: "The capital of France is",
      max_tokens: 6,
      temperature: 0,
      logprobs: 2,
      echo: true,
      ...({ ignore_eos: true } as object),
    });
    const refText = engine.tokenizer.decode(ref, { skipSpecialTokens: true });
    expect(r.choices[0]!.text).toBe("The capital of France is" + refText);
    expect(r.choices[0]!.logprobs!.tokens).toHaveLength(6);
    const byIds = await client.completions.create({
      model: modelId,
      prompt: [ids, ids],
      max_tokens: 6,
      temperature: 0,
      ...({ ignore_eos: true } as object),
    });
    expect(byIds.choices.map((c) => c.text)).toEqual([refText, refText]);
    expect(byIds.usage!.prompt_tokens).toBe(2 * ids.length);
  });

  it("lists the model with its context and modalities", async () => {
    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toEqual([modelId]);
    expect((list.data[0] as unknown as { max_model_len: number }).max_model_len).toBe(256);
    expect((list.data[0] as unknown as { modalities: string[] }).modalities).toContain("text");
  });

  it("tokenize and detokenize agree with the tokenizer", async () => {
    const t = (await (await post("/tokenize", { prompt: "Hello world" })).json()) as {
      tokens: number[];
      count: number;
    };
    expect(t.tokens).toEqual(engine.tokenizer.encode("Hello world"));
    expect(t.count).toBe(t.tokens.length);
    const chat = (await (await post("/tokenize", { messages })).json()) as { tokens: number[] };
    expect(chat.tokens).toEqual(
      engine.tokenizer.encodeChat(messages, { addGenerationPrompt: true }).ids,
    );
    const d = (await (await post("/detokenize", { tokens: t.tokens })).json()) as {
      prompt: string;
    };
    expect(d.prompt).toBe(engine.tokenizer.decode(t.tokens));
  });

  it("metrics count requests and tokens in Prometheus text format", async () => {
    const text = await (await fetch(`${srv.url}/metrics`)).text();
    expect(text).toMatch(/# TYPE gemma3_http_requests_total counter/);
    expect(text).toMatch(
      /gemma3_http_requests_total\{endpoint="\/v1\/chat\/completions",status="200"\} \d+/,
    );
    const gen = Number(/^gemma3_generation_tokens_total (\d+)$/m.exec(text)![1]);
    expect(gen).toBeGreaterThan(0);
    expect(text).toMatch(/gemma3_time_to_first_token_seconds_bucket\{le="\+Inf"\} [1-9]/);
    expect(text).toMatch(/^gemma3_num_requests_running 0$/m);
  });
});

describe("errors follow OpenAI's contract", () => {
  const bad = async (body: unknown, param?: string, status = 400) => {
    const r = await post("/v1/chat/completions", body);
    expect(r.status).toBe(status);
    const j = (await r.json()) as {
      error: { message: string; type: string; param: string | null };
    };
    expect(typeof j.error.message).toBe("string");
    expect(j.error.type).toBe(status === 404 ? "not_found_error" : "invalid_request_error");
    if (param !== undefined) expect(j.error.param).toBe(param);
    return j.error;
  };

  it("rejects malformed JSON, wrong types and out-of-range values with 400", async () => {
    await bad("{not json");
    await bad("[1,2]");
    await bad({ messages: "hi" }, "messages");
    await bad({ messages: [{ role: "robot", content: "x" }] }, "messages[0].role");
    await bad({ messages, temperature: "hot" }, "temperature");
    await bad({ messages, temperature: 3 }, "temperature");
    await bad({ messages, n: 0 }, "n");
    await bad({ messages, n: 17 }, "n");
    await bad({ messages, logprobs: true, top_logprobs: 21 }, "top_logprobs");
    await bad({ messages, top_logprobs: 2 }, "top_logprobs");
    await bad({ messages, max_tokens: -1 }, "max_tokens");
    await bad({ messages, max_tokens: 1.5 }, "max_tokens");
    await bad({ messages, logit_bias: { abc: 1 } }, "logit_bias");
    await bad({ messages, logit_bias: { "5": 101 } }, "logit_bias.5");
    await bad({ messages, stop: [1, 2] }, "stop");
    await bad({ messages, seed: 1e300 }, "seed");
    await bad({ messages, stream_options: { include_usage: true } }, "stream_options");
  });

  it("the openai client sees BadRequestError / NotFoundError", async () => {
    await expect(
      client.chat.completions.create({
        model: modelId,
        messages,
        top_logprobs: 50,
        logprobs: true,
      }),
    ).rejects.toMatchObject({ status: 400, param: "top_logprobs" });
    await expect(
      client.chat.completions.create({ model: "gpt-4o", messages }),
    ).rejects.toMatchObject({
      status: 404,
      code: "model_not_found",
    });
  });

  it("a prompt longer than the context is a 400 carrying both counts", async () => {
    const long = "word ".repeat(400);
    const e = await bad({ messages: [{ role: "user", content: long }] }, "messages");
    const n = engine.tokenizer.encodeChat([{ role: "user", content: long }], {
      addGenerationPrompt: true,
    }).ids.length;
    expect(e.message).toContain(String(n));
    expect(e.message).toContain("256");
    const e2 = await bad({ messages, max_tokens: 1000 }, "max_tokens");
    expect(e2.message).toMatch(/256/);
    expect(e2.message).toMatch(/1000 in the completion/);
  });

  it("unknown routes are 404, wrong methods 405, oversized bodies 413", async () => {
    expect((await fetch(`${srv.url}/v1/nope`)).status).toBe(404);
    expect((await fetch(`${srv.url}/v1/chat/completions`)).status).toBe(405);
    const small = await serve({ engine, maxBodyBytes: 1024 });
    try {
      const r = await fetch(`${small.url}/v1/chat/completions`, {
        method: "POST",
        body: JSON.stringify({ messages: [{ role: "user", content: "x".repeat(5000) }] }),
      });
      expect(r.status).toBe(413);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe("body_too_large");
    } finally {
      small.server.close();
    }
  });
});

describe("API key and loading state", () => {
  it("requires the bearer key on /v1 but keeps /health public", async () => {
    const keyed = await serve({ engine, apiKey: "s3cret" });
    try {
      expect((await fetch(`${keyed.url}/health`)).status).toBe(200);
      expect((await fetch(`${keyed.url}/v1/models`)).status).toBe(401);
      const wrong = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: "nope", maxRetries: 0 });
      await expect(wrong.models.list()).rejects.toMatchObject({
        status: 401,
        code: "invalid_api_key",
      });
      const right = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: "s3cret", maxRetries: 0 });
      expect((await right.models.list()).data).toHaveLength(1);
    } finally {
      keyed.server.close();
    }
  });

  it("answers 503 with Retry-After while the model loads, then 200", async () => {
    let resolve!: (e: Engine) => void;
    const pending = serve({ engine: new Promise<Engine>((r) => (resolve = r)) });
    const s = await pending;
    try {
      const h = await fetch(`${s.url}/health`);
      expect(h.status).toBe(503);
      expect(h.headers.get("retry-after")).toBe("5");
      const c = await fetch(`${s.url}/v1/chat/completions`, {
        method: "POST",
        body: JSON.stringify({ messages }),
      });
      expect(c.status).toBe(503);
      resolve(engine);
      await s.ready();
      expect((await fetch(`${s.url}/health`)).status).toBe(200);
    } finally {
      s.server.close();
    }
  });
});
