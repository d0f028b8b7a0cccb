// A live server on localhost driven by the real `openai` npm client (and plain fetch where the
// client would hide the wire format): replies match a plain greedy loop over the model, streams
// match non-streamed replies, OpenAI's error contract holds for bad input.
import OpenAI from "openai";
import sharp from "sharp";
import { decode, preprocess } from "@gemma3/vision";
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

async function png(width: number, height: number): Promise<Buffer> {
  // A gradient, so the crops of a wide image differ.
  const px = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++)
      px.set([(x * 255) / width, (y * 255) / height, 128], (y * width + x) * 3);
  return sharp(px, { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
}
const dataUrl = (b: Buffer) => `data:image/png;base64,${b.toString("base64")}`;

describe("images and structured output", () => {
  it("an image_url part: the reply equals greedy decoding over the image's features", async () => {
    const img = await png(64, 48);
    const msgs = [
      {
        role: "user" as const,
        content: [
          { type: "image_url" as const, image_url: { url: dataUrl(img) } },
          { type: "text" as const, text: "Describe the image." },
        ],
      },
    ];
    const r = await client.chat.completions.create({
      model: modelId,
      messages: msgs,
      max_tokens: 6,
      temperature: 0,
      ...({ ignore_eos: true } as object),
    });
    // The reference: the same prompt and features, straight through model.forward.
    const v = engine.vision!;
    const ids = engine.tokenizer.encodeChat(
      [
        {
          role: "user",
          content: [{ type: "image" }, { type: "text", text: "Describe the image." }],
        },
      ],
      { addGenerationPrompt: true, imageTokens: v.imageTokens, numCrops: [0] },
    ).ids;
    expect(r.usage!.prompt_tokens).toBe(ids.length);
    expect(ids.filter((t) => t === engine.model.config.imageTokenIndex)).toHaveLength(
      v.encoder.tokensPerImage,
    );
    const features = v.encoder.encode(preprocess(await decode(img), v.preprocess).pixelValues);
    const seq = engine.model.newCache(ids.length + 6);
    const ref: number[] = [];
    try {
      let logits = engine.model.forward(ids, seq, { imageFeatures: features });
      for (let i = 0; i < 6; i++) {
        const row = (await logits.toArray()) as Float32Array;
        logits.dispose();
        let best = 0;
        for (let j = 1; j < row.length; j++) if (row[j]! > row[best]!) best = j;
        ref.push(best);
        if (i < 5) logits = engine.model.forward([best], seq);
      }
    } finally {
      seq.dispose();
      features.dispose();
    }
    expect(r.choices[0]!.message.content).toBe(
      engine.tokenizer.decode(ref, { skipSpecialTokens: true }),
    );
    // The image changes the answer (its features reach the model).
    const textOnly = await client.chat.completions.create({
      model: modelId,
      messages: [{ role: "user", content: "Describe the image." }],
      max_tokens: 6,
      temperature: 0,
    });
    expect(textOnly.usage!.prompt_tokens).toBeLessThan(r.usage!.prompt_tokens);
  });

  it("Pan & Scan adds crops for a wide image (as /tokenize reports), n > 1 choices each get the image", async () => {
    const wide = dataUrl(await png(1600, 300));
    const messages = [
      {
        role: "user",
        content: [
          { type: "image_url", image_url: { url: wide } },
          { type: "text", text: "What is this?" },
        ],
      },
    ];
    const off = (await (
      await post("/v1/chat/completions", { messages, max_tokens: 2 })
    ).json()) as { usage: { prompt_tokens: number } };
    const on = (await (
      await post("/v1/chat/completions", { messages, max_tokens: 2, n: 2, pan_and_scan: true })
    ).json()) as {
      usage: { prompt_tokens: number };
      choices: unknown[];
    };
    const tok = (await (await post("/tokenize", { messages, pan_and_scan: true })).json()) as {
      count: number;
    };
    expect(on.choices).toHaveLength(2);
    expect(on.usage.prompt_tokens).toBe(tok.count);
    // HF's rule for 1600×300 with the defaults gives 4 crops: four more image blocks (16 soft
    // tokens each, plus boi/eoi and the "Here is the original image…" wording).
    expect(on.usage.prompt_tokens - off.usage.prompt_tokens).toBeGreaterThan(4 * 16);
  });

  it("bad images are 400s naming the image", async () => {
    const msg = (url: string) => [
      { role: "user", content: [{ type: "image_url", image_url: { url } }] },
    ];
    for (const [url, code] of [
      ["data:image/png;base64,@@@not-base64", "invalid_image"],
      [`data:image/png;base64,${Buffer.from("not a png").toString("base64")}`, "invalid_image"],
      ["http://127.0.0.1:1/x.png", "image_url_not_allowed"],
      ["file:///etc/passwd", "invalid_image_url"],
    ] as const) {
      const r = await post("/v1/chat/completions", { messages: msg(url), max_tokens: 2 });
      expect(r.status).toBe(400);
      const e = ((await r.json()) as { error: { code: string; message: string } }).error;
      expect(e.code).toBe(code);
      expect(e.message).toMatch(/^image 1: /);
    }
  });

  it("response_format json_schema: the reply parses and matches the schema", async () => {
    const schema = {
      type: "object",
      properties: {
        color: { enum: ["red", "green", "blue"] },
        count: { type: "integer", minimum: 0, maximum: 9 },
        ok: { type: "boolean" },
      },
      required: ["color", "count", "ok"],
      additionalProperties: false,
    };
    for (const temperature of [0, 1]) {
      const r = await client.chat.completions.create({
        model: modelId,
        messages: [{ role: "user", content: "Pick a color." }],
        // A random-weight model spends tokens on (bounded) whitespace; the value still closes.
        max_tokens: 120,
        temperature,
        seed: 3,
        response_format: {
          type: "json_schema",
          json_schema: { name: "pick", schema, strict: true },
        },
      });
      expect(r.choices[0]!.finish_reason).toBe("stop");
      const v = JSON.parse(r.choices[0]!.message.content!) as {
        color: string;
        count: number;
        ok: boolean;
      };
      expect(Object.keys(v)).toEqual(["color", "count", "ok"]);
      expect(["red", "green", "blue"]).toContain(v.color);
      expect(Number.isInteger(v.count) && v.count >= 0 && v.count <= 9).toBe(true);
      expect(typeof v.ok).toBe("boolean");
    }
    const bad = await post("/v1/chat/completions", {
      messages,
      response_format: {
        type: "json_schema",
        json_schema: { name: "x", schema: { type: "string", pattern: "^a+$" } },
      },
    });
    expect(bad.status).toBe(400);
    const e = ((await bad.json()) as { error: { param: string; message: string } }).error;
    expect(e.param).toBe("response_format");
    expect(e.message).toMatch(/pattern/);
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

describe("image work stays off the event loop", () => {
  it("/health answers promptly while a 24 M-pixel image is decoded and resized", async () => {
    const big = await sharp({
      create: { width: 6000, height: 4000, channels: 3, background: { r: 90, g: 160, b: 40 } },
    })
      .jpeg({ quality: 50 })
      .toBuffer();
    const t0 = performance.now();
    const req = post("/v1/chat/completions", {
      messages: [
        {
          role: "user",
          content: [
            {
              type: "image_url",
              image_url: { url: `data:image/jpeg;base64,${big.toString("base64")}` },
            },
          ],
        },
      ],
      max_tokens: 1,
    });
    let done = false;
    const waits: number[] = [];
    void req.then(() => (done = true));
    while (!done) {
      const t = performance.now();
      expect((await fetch(`${srv.url}/health`)).status).toBe(200);
      waits.push(performance.now() - t);
      await new Promise((r) => setTimeout(r, 20));
    }
    const total = performance.now() - t0;
    expect((await req).status).toBe(200);
    // The resize of 24 M pixels takes a good fraction of a second or more; health checks in the
    // meantime must not wait for it (on the main thread they would take about as long).
    expect(waits.length).toBeGreaterThan(2);
    expect(Math.max(...waits)).toBeLessThan(Math.max(100, total / 3));
  });
});
