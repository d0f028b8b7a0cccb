// OpenAI's n over a live server (demo checkpoint, CPU): a request's n choices share one prefill
// (Scheduler.submitGroup), and choice i is exactly the request with n = 1 and seed + i sent alone
// (the server's rule for distinct, reproducible choices); greedy n gives n copies of the greedy
// loop over the model; n past maxSeqs, several completion prompts, an image prompt and prefix
// caching keep that; the KV cache is all free afterwards.
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Engine, RunningServer } from "../src/index.js";
import { demoEngine, greedyReference, serve } from "./helpers.js";

interface Reply {
  choices: { index: number; message?: { content: string }; text?: string }[];
  usage: { prompt_tokens: number; completion_tokens: number };
}

const messages = [{ role: "user", content: "Why is the sky blue? Tell me everything." }];

for (const prefixCaching of [false, true])
  describe(`n choices share one prefill (prefix caching ${prefixCaching ? "on" : "off"})`, () => {
    let engine: Engine;
    let srv: RunningServer;
    beforeAll(async () => {
      engine = await demoEngine({ maxSeqs: 4, prefixCaching });
      srv = await serve({ engine });
    });
    afterAll(async () => {
      await srv?.close();
    });
    const post = async (path: string, body: unknown): Promise<Reply> => {
      const r = await fetch(`${srv.url}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      expect(r.status).toBe(200);
      return (await r.json()) as Reply;
    };
    const content = (r: Reply) => r.choices.map((c) => c.message?.content ?? c.text);
    async function expectFree() {
      await engine.scheduler.idle();
      expect(engine.stats().kv).toMatchObject({ sequences: 0, reservedPages: 0 });
      expect(engine.stats().kv.availablePages).toBe(engine.stats().kv.numPages);
    }

    it("chat: choice i = the request alone with seed + i; n past maxSeqs (4) too", async () => {
      const base = { messages, max_tokens: 6, ignore_eos: true, temperature: 1 };
      for (const n of [3, 6]) {
        const steps = engine.stats().steps;
        const r = await post("/v1/chat/completions", { ...base, n, seed: 40 });
        const groupSteps = engine.stats().steps - steps;
        expect(r.choices.map((c) => c.index)).toEqual([...Array(n).keys()]);
        const alone: string[] = [];
        for (let i = 0; i < n; i++)
          alone.push(content(await post("/v1/chat/completions", { ...base, seed: 40 + i }))[0]!);
        expect(content(r)).toEqual(alone);
        expect(new Set(alone).size).toBeGreaterThan(1);
        expect(r.usage.completion_tokens).toBe(6 * n);
        // One prefill step and 5 decode steps per group of at most maxSeqs choices.
        expect(groupSteps).toBe(6 * Math.ceil(n / 4));
      }
      await expectFree();
    });

    it("response_format: each choice has its own constraint, masked on its own row copy", async () => {
      const base = {
        messages,
        max_tokens: 12,
        temperature: 1,
        response_format: {
          type: "json_schema",
          json_schema: {
            name: "o",
            schema: {
              type: "object",
              properties: { item: { enum: ["apple", "pear", "fig"] }, n: { type: "integer" } },
              required: ["item", "n"],
            },
          },
        },
      };
      const r = await post("/v1/chat/completions", { ...base, n: 3, seed: 21 });
      const alone: string[] = [];
      for (let i = 0; i < 3; i++)
        alone.push(content(await post("/v1/chat/completions", { ...base, seed: 21 + i }))[0]!);
      expect(content(r)).toEqual(alone);
      // The grammar holds: JSON whitespace, then the one required key first.
      for (const c of alone) expect(c).toMatch(/^\s*\{\s*"item"\s*:/);
      await expectFree();
    });

    it("greedy n: n copies of the greedy loop over the model; completions per prompt", async () => {
      const ids = engine.tokenizer.encodeChat(messages as never, { addGenerationPrompt: true }).ids;
      const ref = engine.tokenizer.decode(await greedyReference(engine.model, ids, 8), {
        skipSpecialTokens: true,
      });
      const r = await post("/v1/chat/completions", {
        messages,
        max_tokens: 8,
        ignore_eos: true,
        temperature: 0,
        n: 5,
      });
      expect(content(r)).toEqual(Array(5).fill(ref));
      // Two prompts × n = 3: indices prompt-major, each prompt's choices as alone with seed + i.
      const prompts = ["The quick brown fox", "Once upon a time"];
      const c = await post("/v1/completions", {
        prompt: prompts,
        n: 3,
        seed: 9,
        max_tokens: 5,
        ignore_eos: true,
      });
      expect(c.choices.map((x) => x.index)).toEqual([0, 1, 2, 3, 4, 5]);
      const alone: string[] = [];
      for (const p of prompts)
        for (let i = 0; i < 3; i++)
          alone.push(
            content(
              await post("/v1/completions", {
                prompt: p,
                seed: 9 + i,
                max_tokens: 5,
                ignore_eos: true,
              }),
            )[0]!,
          );
      expect(content(c)).toEqual(alone);
      await expectFree();
    });

    it("an image prompt: its features feed the one prefill; choices as alone", async () => {
      const px = Buffer.alloc(40 * 30 * 3);
      for (let i = 0; i < px.length; i++) px[i] = (i * 37) % 256;
      const png = await sharp(px, { raw: { width: 40, height: 30, channels: 3 } })
        .png()
        .toBuffer();
      const msgs = [
        {
          role: "user",
          content: [
            {
              type: "image_url",
              image_url: { url: `data:image/png;base64,${png.toString("base64")}` },
            },
            { type: "text", text: "What is this?" },
          ],
        },
      ];
      const base = { messages: msgs, max_tokens: 5, ignore_eos: true };
      const r = await post("/v1/chat/completions", { ...base, n: 3, seed: 3 });
      const alone: string[] = [];
      for (let i = 0; i < 3; i++)
        alone.push(content(await post("/v1/chat/completions", { ...base, seed: 3 + i }))[0]!);
      expect(content(r)).toEqual(alone);
      const g = await post("/v1/chat/completions", { ...base, n: 2, temperature: 0 });
      const g1 = await post("/v1/chat/completions", { ...base, temperature: 0 });
      expect(content(g)).toEqual([content(g1)[0], content(g1)[0]]);
      await expectFree();
    });
  });
