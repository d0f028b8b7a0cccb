// OpenAI's n through Scheduler.submitGroup on the tiny fixtures (CPU, float32): the n choices share
// one prefill (the prompt's KV forked n − 1 times), yet give exactly what n separate submits of the
// same choices give — seeded choices token for token, greedy choices n copies of the one greedy
// output, and every logits row bit for bit (the reference here is the scheduler's unshared path,
// itself checked against HF's greedy ids and `generate` alone in scheduler.test.ts). Cancelling a
// choice leaves the others running, a group is admitted only when the KV of all n fits, n past
// maxSeqs runs as consecutive groups, prefix caching and image prompts share the prefill too, and
// every page is back at the end.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadTextModel, type Gemma3TextModel } from "@gemma3/model";
import { Tensor } from "@gemma3/native";
import { loadVisionEncoder, type Gemma3VisionEncoder } from "@gemma3/vision";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  GenerationError,
  Scheduler,
  type GenerationModel,
  type GenerationRequest,
  type GenerationStream,
  type SamplingParams,
  type SchedulerOptions,
} from "../src/index.js";

const here = dirname(fileURLToPath(import.meta.url));
const fixture = join(here, "../../model/test/fixtures/tiny-1b");
const golden = JSON.parse(readFileSync(join(fixture, "goldens.json"), "utf8")) as {
  prompt_ids: number[];
  greedy_ids: number[];
};
const P = golden.prompt_ids; // 40 tokens: past the fixture's sliding window of 16 (the rings wrap)

/** The server's rule: choice i samples with seed + i. */
const seeds = (n: number, seed: number): SamplingParams[] =>
  Array.from({ length: n }, (_, i) => ({ seed: seed + i }));

/** n separate submits of the same choices: the path every n > 1 request took before groups. */
function separate(s: Scheduler, req: GenerationRequest, choices: SamplingParams[]) {
  return choices.map((c) => s.submit({ ...req, ...c }));
}

const tokens = (streams: GenerationStream[]) =>
  Promise.all(streams.map(async (s) => (await s.result).tokenIds));

async function expectAllFree(s: Scheduler) {
  await s.idle();
  const kv = s.stats().kv;
  expect(kv).toMatchObject({ sequences: 0, reservedPages: 0 });
  // With a prefix cache the registered pages stay (evictable): count those as back too.
  expect(kv.availablePages).toBe(kv.numPages);
}

/**
 * A model that keeps a copy of every step's logits with what each row was: the last token of
 * which KV sequence after which fed ids. Rows of one sequence, in order, are what it sampled from.
 */
function recording(model: Gemma3TextModel) {
  const steps: { rows: { seq: number; ids: number[] }[]; logits: Tensor }[] = [];
  const m: GenerationModel = {
    config: model.config,
    newKVCache: (o) => model.newKVCache(o),
    forwardBatch(s, opts) {
      // Eager steps: the copy below would land inside a captured graph otherwise.
      const l = model.forwardBatch(s, { ...opts, graph: false });
      const copy = Tensor.empty(l.shape, "f32", l.device);
      copy.copyFrom(l);
      steps.push({ rows: s.map((x) => ({ seq: x.seq.id, ids: [...x.ids] })), logits: copy });
      return l;
    },
  };
  /**
   * The rows a choice with output `out` sampled from: the last prefill row of `prompt` (the
   * owner's, for a forked choice), then the decode rows fed out[0], out[1], … of one sequence.
   */
  async function rowsOf(prompt: readonly number[], out: readonly number[]): Promise<Uint8Array[]> {
    const V = model.config.vocabSize;
    const read = async (k: number, r: number) =>
      new Uint8Array(
        ((await steps[k]!.logits.toArray()) as Float32Array).slice(r * V, r * V + V).buffer,
      );
    // Per sequence: its fed ids and where each step's row of it lies.
    const bySeq = new Map<number, { fed: number[]; at: [number, number][] }>();
    steps.forEach((st, k) =>
      st.rows.forEach((row, r) => {
        const e = bySeq.get(row.seq) ?? { fed: [], at: [] };
        e.fed.push(...row.ids);
        e.at.push([k, r]);
        bySeq.set(row.seq, e);
      }),
    );
    const eq = (a: readonly number[], b: readonly number[]) =>
      a.length === b.length && a.every((x, i) => x === b[i]);
    // Where the prompt's last token was fed in a sequence that prefilled it.
    const lastPrefillRow = (e: { at: [number, number][] }) => {
      let fed = 0;
      return e.at.find(([k, r]) => (fed += steps[k]!.rows[r]!.ids.length) === prompt.length);
    };
    const owners = [...bySeq.values()].filter((e) => eq(e.fed.slice(0, prompt.length), prompt));
    // The sequence that decoded this choice: fed prompt + out[..−1], or (a fork) out[..−1] only.
    const want = out.slice(0, -1);
    for (const e of bySeq.values()) {
      const full = eq(e.fed, [...prompt, ...want]);
      if (!full && !eq(e.fed, want)) continue;
      const first = lastPrefillRow(full ? e : owners[0]!);
      if (!first || (!full && owners.length !== 1)) continue;
      const decodes = e.at.slice(e.at.length - want.length);
      return Promise.all([first, ...decodes].map(([k, r]) => read(k, r)));
    }
    throw new Error(`no sequence decoded ${out}`);
  }
  return {
    model: m,
    rowsOf,
    dispose: () => {
      for (const s of steps) s.logits.dispose();
      steps.length = 0;
    },
  };
}

describe("Scheduler.submitGroup on tiny-1b (CPU): n choices, one prefill", () => {
  let model: Gemma3TextModel;
  beforeAll(async () => {
    model = await loadTextModel(fixture, { device: "cpu", dtype: "f32" });
  });
  afterAll(() => model?.dispose());

  const opts: SchedulerOptions = { maxSeqs: 4, maxSeqLen: 64, pageSize: 8, maxBatchTokens: 12 };
  const sampled: GenerationRequest = {
    prompt: P,
    maxTokens: 10,
    ignoreEos: true,
    temperature: 0.9,
    topP: 0.95,
  };

  for (const prefix of [false, true])
    it(`seeded choices = separate submits token for token; greedy = n copies (prefix cache ${prefix ? "on" : "off"})`, async () => {
      const o = { ...opts, ...(prefix ? { kv: { snapshotBlocks: 16 } } : {}) };
      const ref = new Scheduler(model, o);
      const grp = new Scheduler(model, o);
      try {
        for (const prompt of [P, P.slice(0, 5), P.slice(0, 16), P.slice(3, 28)]) {
          const req = { ...sampled, prompt };
          const want = await tokens(separate(ref, req, seeds(4, 7)));
          // And what each choice gives as a request alone (n = 1, its seed).
          const alone: number[][] = [];
          for (const c of seeds(4, 7))
            alone.push((await ref.submit({ ...req, ...c }).result).tokenIds);
          expect(alone).toEqual(want);
          const steps0 = grp.stats().steps;
          const got = await tokens(grp.submitGroup(req, seeds(4, 7)));
          expect(got).toEqual(want);
          if (prompt === P && !prefix)
            // The 40-token prompt prefilled once: 4 steps of up to 12 tokens (the last one gives
            // the first tokens), then 9 decode steps; 4 separate prefills take 14 steps alone.
            expect(grp.stats().steps - steps0).toBeLessThanOrEqual(13);
          expect(new Set(got.map((t) => t.join())).size).toBeGreaterThan(1); // distinct choices
          // Greedy: n copies of the single greedy output.
          const greedy = { prompt, maxTokens: 8, ignoreEos: true, temperature: 0 };
          const one = (await grp.submit(greedy).result).tokenIds;
          expect(await tokens(grp.submitGroup(greedy, [{}, {}, {}]))).toEqual([one, one, one]);
          if (prompt === P) expect(one).toEqual(golden.greedy_ids.slice(0, 8));
        }
        if (prefix) {
          // Again: the group starts after the cached prefix, the same tokens.
          const r = grp.submitGroup(sampled, seeds(3, 7));
          const sums = await Promise.all(r.map((s) => s.result));
          expect(sums[0]!.usage.cachedTokens).toBeGreaterThan(0);
          for (const s of sums) expect(s.usage.cachedTokens).toBe(sums[0]!.usage.cachedTokens);
          const want = await tokens(separate(ref, sampled, seeds(3, 7)));
          expect(sums.map((s) => s.tokenIds)).toEqual(want);
        }
        await expectAllFree(grp);
        await expectAllFree(ref);
      } finally {
        await ref.close();
        await grp.close();
      }
    });

  it("every logits row a forked choice sampled from equals the unshared run's, bit for bit", async () => {
    const a = recording(model);
    const b = recording(model);
    // One step prefills every prompt, then decode-only steps: the two runs batch their decodes
    // alike (a decode row in a step mixed with prefill takes another attention path, ~1e-6 off).
    const o = { ...opts, maxBatchTokens: 512 };
    const ref = new Scheduler(a.model, o);
    const grp = new Scheduler(b.model, o);
    try {
      const req = { ...sampled, maxTokens: 6 };
      const want = await tokens(separate(ref, req, seeds(3, 11)));
      const got = await tokens(grp.submitGroup(req, seeds(3, 11)));
      expect(got).toEqual(want);
      for (let c = 0; c < 3; c++) {
        const ra = await a.rowsOf(P, want[c]!);
        const rb = await b.rowsOf(P, got[c]!);
        expect(rb.length).toBe(6);
        expect(ra.length).toBe(6);
        for (let k = 0; k < 6; k++) expect(Buffer.compare(rb[k]!, ra[k]!)).toBe(0);
      }
    } finally {
      await ref.close();
      await grp.close();
      a.dispose();
      b.dispose();
    }
  });

  it("cancelling a choice (running, or the owner mid-prefill) leaves the others running", async () => {
    const ref = new Scheduler(model, opts);
    const grp = new Scheduler(model, { ...opts, maxBatchTokens: 4 });
    try {
      const want = await tokens(separate(ref, sampled, seeds(3, 5)));
      // A running choice: cancelled after its second token.
      let s = grp.submitGroup(sampled, seeds(3, 5));
      let k = 0;
      for await (const e of s[1]!) if (e.type === "delta" && ++k === 2) break;
      const r = await Promise.all(s.map((x) => x.result));
      expect(r[1]!.finishReason).toBe("abort");
      expect(r[1]!.tokenIds).toEqual(want[1]!.slice(0, 2));
      expect([r[0]!.tokenIds, r[2]!.tokenIds]).toEqual([want[0], want[2]]);
      await expectAllFree(grp);
      // The owner (choice 0) while the prompt is still prefilling (10 chunks of 4): the next
      // choice takes the prefill over; a pending choice cancelled too.
      const want4 = await tokens(separate(ref, sampled, seeds(4, 5)));
      const base = grp.stats().steps;
      s = grp.submitGroup(sampled, seeds(4, 5));
      while (grp.stats().steps < base + 3) await new Promise((res) => setImmediate(res));
      expect(grp.stats().running).toBe(4);
      s[0]!.cancel();
      s[2]!.cancel();
      expect(grp.stats().running).toBe(2);
      const r2 = await Promise.all(s.map((x) => x.result));
      expect(r2.map((x) => x.finishReason)).toEqual(["abort", "length", "abort", "length"]);
      expect([r2[1]!.tokenIds, r2[3]!.tokenIds]).toEqual([want4[1], want4[3]]);
      await expectAllFree(grp);
      // Before admission, and an AbortSignal for the whole request.
      const ac = new AbortController();
      s = grp.submitGroup({ ...sampled, signal: ac.signal }, seeds(3, 5));
      s[0]!.cancel();
      const r3 = await Promise.all(s.map((x) => x.result));
      expect([r3[1]!.tokenIds, r3[2]!.tokenIds]).toEqual([want[1], want[2]]);
      s = grp.submitGroup({ ...sampled, signal: ac.signal }, seeds(3, 5));
      await new Promise((res) => setImmediate(res));
      ac.abort();
      for (const x of await Promise.all(s.map((y) => y.result)))
        expect(x.finishReason).toBe("abort");
      await expectAllFree(grp);
    } finally {
      await ref.close();
      await grp.close();
    }
  });

  it("admission reserves the KV of all n choices; n past maxSeqs runs as consecutive groups", async () => {
    // 12 pages of 8; a choice of 40 + 8 tokens needs ⌈47 / 8⌉ = 6: a group of 2 fills the cache.
    const sched = new Scheduler(model, { maxSeqs: 4, maxSeqLen: 64, pageSize: 8, numPages: 12 });
    const ref = new Scheduler(model, opts);
    try {
      const req = { ...sampled, maxTokens: 8 };
      // (One scheduler at a time on the model: a step's graph capture must not meet the other's
      // sampler reading logits.)
      const want = await tokens(separate(ref, req, seeds(2, 3)));
      const first = sched.submit({ ...req, prompt: P.slice(1) });
      const group = sched.submitGroup(req, seeds(2, 3));
      await new Promise((r) => setImmediate(r));
      // One running; the group waits whole (its 2 × 6 pages do not fit beside the first's 6).
      expect(sched.stats()).toMatchObject({ running: 1, waiting: 2 });
      await first.result;
      expect(await tokens(group)).toEqual(want);
      await expectAllFree(sched);
      // n = 5 with 12 pages (2 choices at a time): groups of 2, 2, 1, the same tokens.
      const five = await tokens(sched.submitGroup(req, seeds(5, 3)));
      expect(five).toEqual(await tokens(separate(ref, req, seeds(5, 3))));
      // n = 6 past maxSeqs = 4 (pages for all): groups of 4 and 2.
      const wide = new Scheduler(model, { maxSeqs: 4, maxSeqLen: 64, pageSize: 8 });
      const six = await tokens(wide.submitGroup(req, seeds(6, 3)));
      expect(six).toEqual(await tokens(separate(ref, req, seeds(6, 3))));
      await expectAllFree(wide);
      await wide.close();
      await expectAllFree(sched);
      // Refused up front, nothing queued: no choices, a bad choice, a full queue.
      expect(() => sched.submitGroup(req, [])).toThrow(GenerationError);
      expect(() => sched.submitGroup(req, [{}, { topP: 2 }])).toThrow(/topP/);
      const q = new Scheduler(model, { maxSeqs: 1, maxSeqLen: 64, pageSize: 8, maxQueue: 2 });
      expect(() => q.submitGroup(req, seeds(3, 1))).toThrow(/queue full/);
      expect(q.stats()).toMatchObject({ waiting: 0, running: 0 });
      await q.close();
    } finally {
      await sched.close();
      await ref.close();
    }
  });
});

const mm = join(here, "..", "..", "vision", "test", "fixtures", "mm", "tiny-mm");
describe.skipIf(!existsSync(join(mm, "goldens.json")))(
  "Scheduler.submitGroup with images (tiny-mm, CPU)",
  () => {
    const g = JSON.parse(readFileSync(join(mm, "goldens.json"), "utf8")) as {
      prompt_ids: number[];
      greedy_ids: number[];
    };
    let model: Gemma3TextModel;
    let enc: Gemma3VisionEncoder;
    let pixels: Float32Array;
    beforeAll(async () => {
      model = await loadTextModel(mm, { device: "cpu", dtype: "f32" });
      enc = await loadVisionEncoder(mm, { device: "cpu", dtype: "f32" });
      const b = readFileSync(join(mm, "pixel_values.f32"));
      pixels = new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
    });
    afterAll(() => {
      model?.dispose();
      enc?.dispose();
    });

    it("the features belong to the one prefill: greedy = HF's ids n times, seeded = separate", async () => {
      const o = { maxSeqs: 4, maxSeqLen: 64, pageSize: 8, maxBatchTokens: 5 };
      const grp = new Scheduler(model, o);
      const ref = new Scheduler(model, o);
      try {
        const req = (f: Tensor) => ({
          prompt: g.prompt_ids,
          imageFeatures: f,
          maxTokens: g.greedy_ids.length,
          ignoreEos: true,
        });
        const f1 = enc.encode(pixels);
        const greedy = await tokens(grp.submitGroup({ ...req(f1), temperature: 0 }, [{}, {}, {}]));
        expect(greedy).toEqual([g.greedy_ids, g.greedy_ids, g.greedy_ids]);
        expect(f1.disposed).toBe(true);
        const f2 = enc.encode(pixels);
        const got = await tokens(grp.submitGroup({ ...req(f2), temperature: 1 }, seeds(3, 9)));
        expect(f2.disposed).toBe(true);
        const want = await tokens(
          seeds(3, 9).map((c) => ref.submit({ ...req(enc.encode(pixels)), temperature: 1, ...c })),
        );
        expect(got).toEqual(want);
        // n past maxSeqs: every group's owner prefills with its own copy of the features.
        const f3 = enc.encode(pixels);
        const six = await tokens(grp.submitGroup({ ...req(f3), temperature: 0 }, seeds(6, 1)));
        expect(six).toEqual(Array.from({ length: 6 }, () => g.greedy_ids));
        expect(f3.disposed).toBe(true);
        await expectAllFree(grp);
      } finally {
        await grp.close();
        await ref.close();
      }
    });
  },
);
