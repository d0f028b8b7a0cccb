// The scheduler on the tiny-1b fixture (CPU, float32): concurrent requests of different lengths
// give exactly the tokens each gives alone (greedy, and seeded sampling), requests join mid-flight,
// prefill is chunked and mixed with decode, cancellation frees KV at once, a full cache queues
// requests instead of failing, and bad requests are refused up front.
import { loadTextModel, type Gemma3TextModel } from "@gemma3/model";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  GenerationError,
  Scheduler,
  generate,
  type GenerationEvent,
  type GenerationRequest,
  type GenerationStream,
  type GenerationSummary,
} from "../src/index.js";
import { fixture, golden, prompts } from "./tiny.js";

const P = golden.prompt_ids;
const lengths = [12, 4, 20, 9, 1, 15];

async function drain(
  s: GenerationStream,
): Promise<{ events: GenerationEvent[]; sum: GenerationSummary }> {
  const events: GenerationEvent[] = [];
  for await (const e of s) events.push(e);
  const sum = events[events.length - 1] as GenerationSummary;
  expect(sum.type).toBe("finish");
  expect(await s.result).toBe(sum);
  return { events, sum };
}

describe("Scheduler on tiny-1b (CPU)", () => {
  let model: Gemma3TextModel;
  const alone: number[][] = [];
  const aloneSampled: number[][] = [];
  const sampled = (i: number): GenerationRequest => ({
    prompt: prompts[i]!,
    maxTokens: lengths[i]!,
    ignoreEos: true,
    temperature: 0.9,
    topP: 0.95,
    seed: 100 + i,
  });

  beforeAll(async () => {
    model = await loadTextModel(fixture, { device: "cpu", dtype: "f32" });
    for (let i = 0; i < prompts.length; i++) {
      const g = await drain(
        generate(model, null, {
          prompt: prompts[i]!,
          maxTokens: lengths[i]!,
          ignoreEos: true,
          temperature: 0,
        }),
      );
      alone.push(g.sum.tokenIds);
      aloneSampled.push((await drain(generate(model, null, sampled(i)))).sum.tokenIds);
    }
  });
  afterAll(() => model.dispose());

  it("generate alone reproduces HF's greedy ids", async () => {
    const { events, sum } = await drain(
      generate(model, null, { prompt: P, maxTokens: golden.greedy_ids.length, temperature: 0 }),
    );
    expect(sum.tokenIds).toEqual(golden.greedy_ids);
    expect(sum.finishReason).toBe("length");
    expect(events.filter((e) => e.type === "delta").flatMap((e) => e.tokenIds)).toEqual(
      golden.greedy_ids,
    );
    expect(sum.usage).toEqual({
      promptTokens: P.length,
      completionTokens: golden.greedy_ids.length,
      cachedTokens: 0,
    });
    expect(alone.map((t) => t.length)).toEqual(lengths);
  });

  it("6 concurrent requests (4 slots, chunked prefill) = each alone: greedy and seeded", async () => {
    const sched = new Scheduler(model, {
      maxSeqs: 4,
      maxSeqLen: 64,
      pageSize: 8,
      maxBatchTokens: 12,
    });
    const greedy = prompts.map((p, i) =>
      sched.submit({ prompt: p, maxTokens: lengths[i]!, ignoreEos: true, temperature: 0 }),
    );
    const seeded = prompts.map((_, i) => sched.submit(sampled(i)));
    const g = await Promise.all(greedy.map(drain));
    const s = await Promise.all(seeded.map(drain));
    expect(g.map((r) => r.sum.tokenIds)).toEqual(alone);
    expect(s.map((r) => r.sum.tokenIds)).toEqual(aloneSampled);
    // 40-token prompts through a 12-token budget: several prefill chunks, each beside decodes.
    expect(sched.stats().steps).toBeGreaterThan(30);
    await sched.idle();
    expect(sched.stats().kv.freePages).toBe(sched.stats().kv.numPages);
    expect(sched.stats().kv.sequences).toBe(0);
    await sched.close();
  });

  it("several prompts prefill in one step when the token budget allows (same tokens)", async () => {
    const sched = new Scheduler(model, {
      maxSeqs: 4,
      maxSeqLen: 64,
      pageSize: 8,
      maxBatchTokens: 256,
    });
    const short = prompts.slice(0, 4).map((p) => p.slice(0, 9));
    const ref: number[][] = [];
    for (const p of short)
      ref.push(
        (
          await drain(
            generate(model, null, { prompt: p, maxTokens: 3, ignoreEos: true, temperature: 0 }),
          )
        ).sum.tokenIds,
      );
    const out = await Promise.all(
      short.map((p) =>
        drain(sched.submit({ prompt: p, maxTokens: 3, ignoreEos: true, temperature: 0 })),
      ),
    );
    expect(out.map((r) => r.sum.tokenIds)).toEqual(ref);
    // One step prefills all four prompts (and yields their first tokens), two more decode.
    expect(sched.stats().steps).toBe(3);
    await sched.close();
  });

  it("requests join mid-flight and leave between steps", async () => {
    const sched = new Scheduler(model, { maxSeqs: 4, maxSeqLen: 64, pageSize: 8 });
    const first = sched.submit({
      prompt: prompts[2]!,
      maxTokens: lengths[2]!,
      ignoreEos: true,
      temperature: 0,
    });
    const it = first[Symbol.asyncIterator]();
    const got: number[] = [];
    for (let k = 0; k < 5; k++) {
      const e = (await it.next()).value as GenerationEvent;
      if (e.type === "delta") got.push(...e.tokenIds);
    }
    expect(sched.stats().running).toBe(1);
    const later = [0, 3, 5].map((i) =>
      sched.submit({
        prompt: prompts[i]!,
        maxTokens: lengths[i]!,
        ignoreEos: true,
        temperature: 0,
      }),
    );
    for (;;) {
      const r = await it.next();
      if (r.done) break;
      if (r.value.type === "delta") got.push(...r.value.tokenIds);
    }
    expect(got).toEqual(alone[2]);
    const res = await Promise.all(later.map(drain));
    expect(res.map((r) => r.sum.tokenIds)).toEqual([alone[0], alone[3], alone[5]]);
    await sched.close();
  });

  it("cancellation (AbortSignal, cancel(), leaving the loop) frees the KV at once", async () => {
    const sched = new Scheduler(model, { maxSeqs: 3, maxSeqLen: 64, pageSize: 8 });
    const { numPages } = sched.stats().kv;
    const ac = new AbortController();
    const a = sched.submit({
      prompt: prompts[1]!,
      maxTokens: 20,
      ignoreEos: true,
      signal: ac.signal,
    });
    const b = sched.submit({ prompt: prompts[2]!, maxTokens: 20, ignoreEos: true });
    const c = sched.submit({ prompt: prompts[4]!, maxTokens: 20, ignoreEos: true, temperature: 0 });
    let n = 0;
    for await (const e of a) {
      if (e.type === "delta" && ++n === 3) {
        ac.abort();
        // Freed synchronously: only b and c hold pages now.
        expect(sched.stats().kv.sequences).toBe(2);
      }
    }
    expect((await a.result).finishReason).toBe("abort");
    expect((await a.result).tokenIds.length).toBe(3);
    let m = 0;
    for await (const e of b) if (e.type === "delta" && ++m === 2) break; // leaving the loop cancels
    expect((await b.result).finishReason).toBe("abort");
    c.cancel();
    expect((await c.result).finishReason).toBe("abort");
    await sched.idle();
    expect(sched.stats().kv).toMatchObject({ sequences: 0, freePages: numPages, reservedPages: 0 });
    // Aborted before it was admitted: never takes KV.
    const ac2 = new AbortController();
    ac2.abort();
    const d = sched.submit({ prompt: prompts[0]!, maxTokens: 3, signal: ac2.signal });
    expect((await d.result).finishReason).toBe("abort");
    expect((await d.result).tokenIds).toEqual([]);
    await sched.close();
  });

  it("a full cache queues requests (never fails them) and admits them as others finish", async () => {
    // 6 pages of 8 tokens; each request needs ⌈(40 + 8 − 1) / 8⌉ = 6: one at a time.
    const sched = new Scheduler(model, { maxSeqs: 4, maxSeqLen: 64, pageSize: 8, numPages: 6 });
    const reqs = [0, 1, 2].map(() =>
      sched.submit({ prompt: prompts[1]!, maxTokens: 8, ignoreEos: true, temperature: 0 }),
    );
    await new Promise((r) => setImmediate(r));
    expect(sched.stats()).toMatchObject({ running: 1, waiting: 2 });
    const res = await Promise.all(reqs.map(drain));
    for (const r of res) {
      expect(r.sum.tokenIds.slice(0, 4)).toEqual(alone[1]); // alone[1]: the first 4 greedy tokens
      expect(r.sum.tokenIds).toEqual(res[0]!.sum.tokenIds);
    }
    expect(res[2]!.sum.timings.queueMs).toBeGreaterThan(res[0]!.sum.timings.queueMs);
    // A request that could never fit (⌈63 / 8⌉ = 8 pages > 6) is refused at submit, not queued.
    expect(() => sched.submit({ prompt: prompts[1]!, maxTokens: 24 })).toThrow(/KV pages/);
    // So is a full queue.
    const small = new Scheduler(model, { maxSeqs: 1, maxSeqLen: 64, pageSize: 8, maxQueue: 1 });
    const x = small.submit({ prompt: prompts[0]!, maxTokens: 2 });
    const y = small.submit({ prompt: prompts[0]!, maxTokens: 2 });
    expect(() => small.submit({ prompt: prompts[0]!, maxTokens: 2 })).toThrow(/queue full/);
    await Promise.all([drain(x), drain(y)]);
    await small.close();
    await sched.close();
  });

  it("stops at eos ids (config + generation_config) unless ignoreEos", async () => {
    // Make token 106 (<end_of_turn>) the stop id the model reaches first: bias it up at step 3.
    const sched = new Scheduler(model, {
      maxSeqLen: 64,
      generationConfig: { eosTokenIds: [106], sampling: {} },
      eosTokenIds: [],
    });
    const r = await drain(
      sched.submit({
        prompt: P,
        maxTokens: 10,
        temperature: 0,
        logitBias: { 106: 100 },
        minTokens: 3,
      }),
    );
    expect(r.sum.tokenIds).toEqual([...golden.greedy_ids.slice(0, 3), 106]);
    expect(r.sum).toMatchObject({ finishReason: "stop", stopReason: 106 });
    const r2 = await drain(
      sched.submit({
        prompt: P,
        maxTokens: 5,
        temperature: 0,
        logitBias: { 106: 100 },
        ignoreEos: true,
      }),
    );
    expect(r2.sum.tokenIds).toEqual([106, 106, 106, 106, 106]);
    expect(r2.sum.finishReason).toBe("length");
    await sched.close();
  });

  it("logprobs come with every delta and match the final summary", async () => {
    const { events, sum } = await drain(
      generate(model, null, { prompt: P, maxTokens: 4, temperature: 0, logprobs: 3 }),
    );
    const lps = events.flatMap((e) => (e.type === "delta" ? e.logprobs! : []));
    expect(lps).toEqual(sum.logprobs);
    for (const lp of lps) {
      expect(lp.top).toHaveLength(3);
      expect(lp.top[0]!.token).toBe(lp.token); // greedy: the sampled token is the most likely
      expect(lp.logprob).toBeCloseTo(lp.top[0]!.logprob, 12);
      expect(lp.logprob).toBeLessThan(0);
    }
    expect(sum.tokenIds).toEqual(golden.greedy_ids.slice(0, 4));
  });

  it("prefix reuse: a request sharing a cached prompt prefix starts after it, same tokens", async () => {
    const sched = new Scheduler(model, {
      maxSeqs: 2,
      maxSeqLen: 64,
      pageSize: 8,
      kv: { snapshotBlocks: 16 },
    });
    const req = { prompt: P, maxTokens: 6, ignoreEos: true, temperature: 0 };
    const other = [...P.slice(0, 20), ...prompts[2]!];
    const r1 = await drain(sched.submit(req));
    const r2 = await drain(sched.submit(req));
    const r3 = await drain(sched.submit({ ...req, prompt: other }));
    expect(r1.sum.usage.cachedTokens).toBe(0);
    expect(r2.sum.usage.cachedTokens).toBe(32); // whole pages, at most prompt − 1 tokens
    expect(r3.sum.usage.cachedTokens).toBe(16);
    expect(r1.sum.tokenIds).toEqual(golden.greedy_ids.slice(0, 6));
    expect(r2.sum.tokenIds).toEqual(r1.sum.tokenIds);
    const alone3 = await drain(generate(model, null, { ...req, prompt: other }));
    expect(r3.sum.tokenIds).toEqual(alone3.sum.tokenIds);
    await sched.close();
  });

  it("refuses bad requests up front", () => {
    const sched = new Scheduler(model, { maxSeqLen: 32 });
    const bad = (r: GenerationRequest, code: string) => {
      try {
        sched.submit(r);
        throw new Error("accepted");
      } catch (e) {
        expect(e).toBeInstanceOf(GenerationError);
        expect((e as GenerationError).code).toBe(code);
      }
    };
    bad({ prompt: P }, "E_TOO_LONG"); // 40 tokens > 32
    bad({ prompt: [] }, "E_INVALID");
    bad({ prompt: [1, 99999] }, "E_INVALID");
    bad({ prompt: "text" }, "E_INVALID"); // no tokenizer
    bad({ prompt: [2], stop: ["x"] }, "E_INVALID");
    bad({ prompt: [2], topP: 0 }, "E_INVALID");
    bad({ prompt: [2], maxTokens: 0 }, "E_INVALID");
    bad({ prompt: [2], maxTokens: 2, minTokens: 3 }, "E_INVALID");
    expect(sched.stats().kv.sequences).toBe(0);
    return sched.close();
  });

  it("a failing step fails its requests; the scheduler keeps serving", async () => {
    let fail = false;
    const flaky = new Proxy(model, {
      get(target, key, recv) {
        if (key === "forwardBatch")
          return (...args: Parameters<Gemma3TextModel["forwardBatch"]>) => {
            if (fail) {
              fail = false;
              throw new Error("device lost (test)");
            }
            return target.forwardBatch(...args);
          };
        return Reflect.get(target, key, recv);
      },
    });
    const sched = new Scheduler(flaky, { maxSeqLen: 64 });
    const a = sched.submit({ prompt: prompts[0]!, maxTokens: 10, ignoreEos: true, temperature: 0 });
    let n = 0;
    await expect(
      (async () => {
        for await (const e of a) if (e.type === "delta" && ++n === 2) fail = true;
      })(),
    ).rejects.toThrow(/device lost/);
    await expect(a.result).rejects.toThrow(/device lost/);
    expect(sched.stats().kv.sequences).toBe(0);
    const b = await drain(
      sched.submit({ prompt: prompts[0]!, maxTokens: 12, ignoreEos: true, temperature: 0 }),
    );
    expect(b.sum.tokenIds).toEqual(alone[0]);
    await sched.close();
  });
});
