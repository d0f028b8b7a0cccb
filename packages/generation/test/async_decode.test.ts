// Pipelined decoding (Scheduler asyncDecode) on the tiny-1b fixture (float32, CPU; CUDA too with
// GEMMA3_TEST_CUDA=1): with the mode on, every request's token ids, text deltas, finish reason,
// stop reason and usage equal the mode off (the reference: the plain scheduler, itself checked
// against HF's greedy ids), for requests ending at max tokens, at a stop id, at a stop string,
// finishing at different steps, joining mid-decode, cancelled, mixed with a sampled request, and
// with prefix caching (same cache contents after each request: the extra token of a finished
// sequence never reaches the index). A model wrapper counts decode steps launched before the
// previous step's token reached the consumer, so a mode that silently never engages fails.
import { loadTextModel, type Gemma3TextModel } from "@gemma3/model";
import { cudaAvailable } from "@gemma3/native";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  Scheduler,
  type GenerationEvent,
  type GenerationModel,
  type GenerationRequest,
  type GenerationStream,
  type SchedulerOptions,
  type TokenizerLike,
} from "../src/index.js";
import { fixture, golden, prompts } from "./tiny.js";

const P = golden.prompt_ids;

/** Token i reads "[i]": stop strings and text deltas without a real vocabulary. */
const tokenizer: TokenizerLike = {
  encode: () => {
    throw new Error("prompts are ids here");
  },
  detokenizer: () => ({ push: (id: number) => `[${id}]`, flush: () => "" }),
};

/** Everything a client sees of one request (timings aside). */
interface Outcome {
  deltas: { text: string; tokenIds: number[] }[];
  tokenIds: number[];
  text: string;
  finishReason: string;
  stopReason: number | string | null;
  usage: { promptTokens: number; completionTokens: number; cachedTokens: number };
}

/** Consumes a stream; `onDelta(n)` runs after the n-th delta (1-based), e.g. to cancel. */
async function consume(
  s: GenerationStream,
  onDelta?: (n: number) => void | "break",
): Promise<Outcome> {
  const deltas: Outcome["deltas"] = [];
  for await (const e of s as AsyncIterable<GenerationEvent>) {
    if (e.type !== "delta") continue;
    deltas.push({ text: e.text, tokenIds: e.tokenIds });
    if (onDelta?.(deltas.length) === "break") break;
  }
  const r = await s.result;
  return {
    deltas,
    tokenIds: r.tokenIds,
    text: r.text,
    finishReason: r.finishReason,
    stopReason: r.stopReason,
    usage: r.usage,
  };
}

/**
 * The model, watched: counts decode forwards (one token per sequence) launched while some
 * sequence of the step had fewer tokens delivered to its consumer than it has fed so far, i.e.
 * before the previous step's token was read: impossible without pipelining.
 */
function watch(model: Gemma3TextModel) {
  const w = { early: 0, decodes: 0, delivered: new Map<number, number>() };
  const m: GenerationModel = {
    deviceIdsInput: model.deviceIdsInput,
    config: model.config,
    newKVCache: (o) => model.newKVCache(o),
    forwardBatch: (steps, opts) => {
      if (steps.every((st) => st.ids.length + (st.idsFrom ? 1 : 0) === 1)) {
        w.decodes++;
        // A decode step feeds output token k (k = KV length − prompt): tokens 0…k must be out.
        if (steps.some((st) => st.idsFrom)) w.early++;
      }
      return model.forwardBatch(steps as Parameters<Gemma3TextModel["forwardBatch"]>[0], opts);
    },
  };
  return { m, w };
}

// CUDA (GEMMA3_TEST_CUDA=1): the same with CUDA graphs, pinned readbacks and events.
const devices = [
  "cpu",
  ...(process.env.GEMMA3_TEST_CUDA === "1" && cudaAvailable() ? ["cuda"] : []),
];

describe.each(devices)(
  "Scheduler asyncDecode on tiny-1b (%s): same outputs as the mode off",
  (device) => {
    let model: Gemma3TextModel;
    beforeAll(async () => {
      model = await loadTextModel(fixture, { device, dtype: "f32" });
    });
    afterAll(() => model.dispose());

    /** Runs `scenario` with the mode off and on; returns both outcomes and the on run's counts. */
    async function both<T>(
      opts: SchedulerOptions,
      scenario: (s: Scheduler) => Promise<T>,
    ): Promise<{ off: T; on: T; pipelined: number; early: number; offPipelined: number }> {
      const runs: { out: T; pipelined: number; early: number }[] = [];
      for (const asyncDecode of [false, true]) {
        const { m, w } = watch(model);
        const sched = new Scheduler(m, { tokenizer, ...opts, asyncDecode });
        const out = await scenario(sched);
        await sched.idle();
        expect(sched.stats().kv).toMatchObject({ sequences: 0, reservedPages: 0 });
        runs.push({ out, pipelined: sched.stats().pipelined, early: w.early });
        await sched.close();
      }
      return {
        off: runs[0]!.out,
        on: runs[1]!.out,
        pipelined: runs[1]!.pipelined,
        early: runs[1]!.early,
        offPipelined: runs[0]!.pipelined + runs[0]!.early,
      };
    }

    const greedy = (
      prompt: number[],
      maxTokens: number,
      more: Partial<GenerationRequest> = {},
    ) => ({
      prompt,
      maxTokens,
      temperature: 0,
      ignoreEos: true,
      ...more,
    });

    it("one greedy request to max_tokens: HF's greedy ids, pipelined", async () => {
      let early = 0;
      const r = await both({ maxSeqLen: 64, pageSize: 8 }, async (s) => {
        const st = s.submit(greedy(P, golden.greedy_ids.length));
        // Black-box check: a decode step launched before the consumer saw the previous token.
        let seen = 0;
        const m = s.model;
        const orig = m.forwardBatch.bind(m);
        (m as { forwardBatch: GenerationModel["forwardBatch"] }).forwardBatch = (steps, o) => {
          const fed = steps[0]!.seq.length - P.length; // output tokens already in the KV
          if (steps.length === 1 && fed >= 0 && seen <= fed) early++;
          return orig(steps, o);
        };
        return consume(st, (n) => {
          seen = n;
        });
      });
      expect(r.on).toEqual(r.off);
      expect(r.off.tokenIds).toEqual(golden.greedy_ids);
      expect(r.off.finishReason).toBe("length");
      expect(r.off.deltas.map((d) => d.text).join("")).toBe(r.off.text);
      expect(r.offPipelined).toBe(0);
      // 24 tokens: the prefill's, one launched from host ids entering the pipeline, then 22 steps
      // launched from the device (the step that would feed past max_tokens is never launched).
      expect(r.pipelined).toBe(golden.greedy_ids.length - 2);
      expect(r.early).toBe(r.pipelined);
      // Decode steps that ran before the consumer had the token they extend: only with the mode on.
      expect(early).toBe(r.pipelined);
    });

    it("stops at an eos id and at a stop string: the extra token is never reported", async () => {
      // Greedy from P: 362, 8, 362, 362, 362, 362, 362, 367, 112, 112, 112, ...
      const r = await both({ maxSeqLen: 64, pageSize: 8, eosTokenIds: [367] }, async (s) => {
        const eos = consume(s.submit({ prompt: P, maxTokens: 20, temperature: 0 }));
        const str = consume(s.submit(greedy(P, 20, { stop: ["[112][112]"] })));
        const kept = consume(
          s.submit(greedy(P, 20, { stop: "[112][112]", includeStopStrInOutput: true })),
        );
        return Promise.all([eos, str, kept]);
      });
      expect(r.on).toEqual(r.off);
      const [eos, str, kept] = r.off;
      expect(eos!.tokenIds).toEqual(golden.greedy_ids.slice(0, 8));
      expect(eos).toMatchObject({ finishReason: "stop", stopReason: 367 });
      expect(eos!.usage.completionTokens).toBe(8);
      expect(str!.tokenIds).toEqual(golden.greedy_ids.slice(0, 10));
      expect(str).toMatchObject({ finishReason: "stop", stopReason: "[112][112]" });
      expect(str!.text).toBe(
        golden.greedy_ids
          .slice(0, 8)
          .map((t) => `[${t}]`)
          .join(""),
      );
      expect(kept!.text).toBe(
        golden.greedy_ids
          .slice(0, 10)
          .map((t) => `[${t}]`)
          .join(""),
      );
      expect(r.pipelined).toBeGreaterThan(0);
    });

    it("concurrent requests finishing at different steps", async () => {
      const lengths = [12, 4, 20, 9, 2, 15];
      const r = await both({ maxSeqs: 6, maxSeqLen: 64, pageSize: 8 }, (s) =>
        Promise.all(
          prompts.map((p, i) =>
            consume(s.submit(greedy(p, lengths[i]!, i === 5 ? { stopTokenIds: [23] } : {}))),
          ),
        ),
      );
      expect(r.on).toEqual(r.off);
      expect(r.off.map((o) => o.tokenIds.length)).toEqual([
        12,
        4,
        20,
        9,
        2,
        r.off[5]!.tokenIds.length,
      ]);
      expect(r.pipelined).toBeGreaterThan(0);
    });

    it("a request submitted mid-decode: the pipeline drains and re-enters", async () => {
      const r = await both({ maxSeqs: 4, maxSeqLen: 64, pageSize: 8 }, async (s) => {
        const later: Promise<Outcome>[] = [];
        const first = consume(s.submit(greedy(prompts[2]!, 20)), (n) => {
          if (n === 6) later.push(consume(s.submit(greedy(prompts[0]!, 10))));
          if (n === 9) later.push(consume(s.submit(greedy(prompts[4]!, 5))));
        });
        const a = await first;
        return [a, ...(await Promise.all(later))];
      });
      expect(r.on).toEqual(r.off);
      expect(r.off.map((o) => o.tokenIds.length)).toEqual([20, 10, 5]);
      // Pipelined before the first join, between the joins and after the last one finished.
      expect(r.pipelined).toBeGreaterThan(6);
    });

    it("cancellation mid-decode (abort signal, leaving the loop): same tokens, KV freed", async () => {
      const r = await both({ maxSeqs: 3, maxSeqLen: 64, pageSize: 8 }, async (s) => {
        const ac = new AbortController();
        const a = consume(s.submit(greedy(prompts[1]!, 20, { signal: ac.signal })), (n) => {
          if (n === 5) ac.abort();
        });
        const b = consume(s.submit(greedy(prompts[2]!, 20)), (n) =>
          n === 8 ? "break" : undefined,
        );
        const c = consume(s.submit(greedy(prompts[4]!, 20)));
        const out = await Promise.all([a, b, c]);
        expect(s.stats().kv.freePages).toBe(s.stats().kv.numPages);
        return out;
      });
      expect(r.on).toEqual(r.off);
      expect(r.off.map((o) => [o.tokenIds.length, o.finishReason])).toEqual([
        [5, "abort"],
        [8, "abort"],
        [20, "length"],
      ]);
      expect(r.pipelined).toBeGreaterThan(0);
    });

    it("a sampled request in the batch: no pipelining while it runs, same outputs", async () => {
      const r = await both({ maxSeqs: 2, maxSeqLen: 64, pageSize: 8 }, (s) =>
        Promise.all([
          consume(s.submit(greedy(prompts[1]!, 8))),
          consume(
            s.submit({
              prompt: prompts[2]!,
              maxTokens: 20,
              ignoreEos: true,
              temperature: 0.9,
              seed: 7,
            }),
          ),
          // Greedy but with a processor (the argmax alone would not do): not pipelined either.
          consume(s.submit(greedy(prompts[3]!, 4, { repetitionPenalty: 1.3 }))),
        ]),
      );
      expect(r.on).toEqual(r.off);
      expect(r.pipelined).toBe(0);
      expect(r.early).toBe(0);
    });

    it("prefix caching: same cached tokens and cache contents after every request", async () => {
      const kvAfter: unknown[][] = [];
      const r = await both(
        { maxSeqs: 2, maxSeqLen: 128, pageSize: 8, kv: { prefixCache: true, snapshotBlocks: 24 } },
        async (s) => {
          const seen: unknown[] = [];
          kvAfter.push(seen);
          // Stops at 367 = output 7, fed (by the pipelined extra step only) at position 47: the
          // last of block 5. Were its id registered, block 5 would be cached.
          const a = await consume(s.submit(greedy(P, 20, { stopTokenIds: [367] })));
          seen.push(s.stats().kv);
          // The next turn: its prompt is P + a's output; decodes past several block boundaries.
          const b = await consume(s.submit(greedy([...P, ...a.tokenIds, 5, 9], 30)));
          seen.push(s.stats().kv);
          const c = await consume(
            s.submit(greedy([...P, ...a.tokenIds, 5, 9, ...b.tokenIds, 7], 6)),
          );
          seen.push(s.stats().kv);
          return [a, b, c];
        },
      );
      expect(r.on).toEqual(r.off);
      expect(kvAfter[1]).toEqual(kvAfter[0]);
      const [a, b, c] = r.off;
      expect(a!.tokenIds).toEqual(golden.greedy_ids.slice(0, 8));
      expect(b!.usage.cachedTokens).toBeGreaterThan(0);
      // c reuses blocks b's decode steps filled: registered through provideIds with the mode on.
      expect(c!.usage.cachedTokens).toBeGreaterThan(P.length + 8 + 2);
      expect(r.pipelined).toBeGreaterThan(20);
    });
  },
);
