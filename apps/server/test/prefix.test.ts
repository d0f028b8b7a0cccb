// Prefix caching in the server (`gemma3 serve --enable-prefix-caching`): a repeated prompt and a
// conversation's next turn start after their cached prefix (usage.prompt_tokens_details.
// cached_tokens, in whole KV pages), give the same greedy tokens as a plain greedy loop over the
// model, and the Prometheus counters add up to the usage the client saw.
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Engine, RunningServer } from "../src/index.js";
import { demoEngine, greedyReference, serve } from "./helpers.js";

const PAGE = 16; // the engine's KV page: the prefix cache reuses whole pages

let engine: Engine;
let srv: RunningServer;
let client: OpenAI;

beforeAll(async () => {
  engine = await demoEngine({ prefixCaching: true });
  srv = await serve({ engine });
  client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: "unused", maxRetries: 0 });
});
afterAll(async () => {
  await srv?.close();
});

const system =
  "You are a careful assistant. Answer in one short paragraph, cite no sources, and say so " +
  "when you do not know. Keep units metric and numbers exact.";

type Msg = { role: "system" | "user" | "assistant"; content: string };

/** Greedy, ignore_eos (random weights may pick an eos id): the ids are the comparison. */
async function chat(messages: Msg[], maxTokens: number) {
  const r = await client.chat.completions.create({
    model: engine.info.id,
    messages,
    max_tokens: maxTokens,
    temperature: 0,
    ...({ ignore_eos: true } as object),
  });
  return { text: r.choices[0]!.message.content ?? "", usage: r.usage! };
}

const commonPrefix = (a: readonly number[], b: readonly number[]) => {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
};

async function scrape(): Promise<{ queries: number; hits: number }> {
  const text = await (await fetch(`${srv.url}/metrics`)).text();
  const v = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]);
  return {
    queries: v("gemma3_prefix_cache_queries_total"),
    hits: v("gemma3_prefix_cache_hits_total"),
  };
}

describe("prefix caching", () => {
  const turn1: Msg[] = [
    { role: "system", content: system },
    { role: "user", content: "Why is the sky blue?" },
  ];

  it("the engine reports its snapshot pool: maxSeqs × ⌈(W − 1)/page⌉ blocks", () => {
    const w = engine.model.config.slidingWindow;
    expect(engine.info.prefixCache?.snapshotBlocks).toBe(8 * Math.ceil((w - 1) / PAGE));
    expect(engine.info.prefixCache?.snapshotBytes).toBeGreaterThan(0);
  });

  it("a repeated conversation reuses its prompt's whole pages and gives the same greedy reply", async () => {
    const before = await scrape();
    const ids = engine.tokenizer.encodeChat(turn1, { addGenerationPrompt: true }).ids;
    expect(ids.length).toBeGreaterThan(2 * PAGE); // several pages to reuse
    const ref = await greedyReference(engine.model, ids, 8);
    const want = engine.tokenizer.decode(ref, { skipSpecialTokens: true });
    const a = await chat(turn1, 8);
    const b = await chat(turn1, 8);
    expect(a.text).toBe(want);
    expect(b.text).toBe(want);
    expect(a.usage.prompt_tokens_details?.cached_tokens).toBe(0);
    // Whole pages, leaving at least the last prompt token to compute (its logits start the reply).
    expect(b.usage.prompt_tokens_details?.cached_tokens).toBe(
      PAGE * Math.floor((ids.length - 1) / PAGE),
    );
    const after = await scrape();
    expect(after.queries - before.queries).toBe(2 * ids.length);
    expect(after.hits - before.hits).toBe(b.usage.prompt_tokens_details!.cached_tokens);
  });

  it("a conversation's next turn reuses the previous turn's prompt and reply", async () => {
    const ids1 = engine.tokenizer.encodeChat(turn1, { addGenerationPrompt: true }).ids;
    const gen = await greedyReference(engine.model, ids1, 24);
    const first = await chat(turn1, 24);
    expect(first.text).toBe(engine.tokenizer.decode(gen, { skipSpecialTokens: true }));
    const turn2: Msg[] = [
      ...turn1,
      { role: "assistant", content: first.text },
      { role: "user", content: "And why are sunsets red?" },
    ];
    const ids2 = engine.tokenizer.encodeChat(turn2, { addGenerationPrompt: true }).ids;
    // The cache holds turn 1's prompt and its reply but the last token (never fed back); the
    // next turn's prompt shares a prefix of them (the re-tokenized reply may differ at its end).
    const held = [...ids1, ...gen.slice(0, -1)];
    const lcp = commonPrefix(held, ids2);
    expect(lcp).toBeGreaterThanOrEqual(ids1.length);
    const ref2 = await greedyReference(engine.model, ids2, 8);
    const second = await chat(turn2, 8);
    expect(second.usage.prompt_tokens_details?.cached_tokens).toBe(
      PAGE * Math.floor(Math.min(lcp, ids2.length - 1) / PAGE),
    );
    expect(second.text).toBe(engine.tokenizer.decode(ref2, { skipSpecialTokens: true }));
  });

  it("a streamed reply reports its cached tokens in the final usage chunk", async () => {
    const ids = engine.tokenizer.encodeChat(turn1, { addGenerationPrompt: true }).ids;
    const stream = await client.chat.completions.create({
      model: engine.info.id,
      messages: turn1,
      max_tokens: 4,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const c of stream) if (c.usage) usage = c.usage;
    expect(usage?.prompt_tokens).toBe(ids.length);
    expect(usage?.prompt_tokens_details?.cached_tokens).toBe(
      PAGE * Math.floor((ids.length - 1) / PAGE),
    );
  });
});

describe("without prefix caching", () => {
  it("nothing is cached and the counters stay at zero", async () => {
    const plain = await demoEngine();
    const s = await serve({ engine: plain });
    try {
      expect(plain.info.prefixCache).toBeNull();
      const c = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
      const messages = [{ role: "user" as const, content: "Why is the sky blue?" }];
      for (let i = 0; i < 2; i++) {
        const r = await c.chat.completions.create({
          model: plain.info.id,
          messages,
          max_tokens: 2,
        });
        expect(r.usage?.prompt_tokens_details?.cached_tokens).toBe(0);
      }
      const text = await (await fetch(`${s.url}/metrics`)).text();
      expect(text).toMatch(/^gemma3_prefix_cache_queries_total 0$/m);
      expect(text).toMatch(/^gemma3_prefix_cache_hits_total 0$/m);
    } finally {
      await s.close();
    }
  });
});
