// The device sampler against the host reference on random logits (CPU backend): the same tokens
// for the same seed, logprobs within 1e-5, for every option alone and combined. Vocabularies with
// and without a tail (K < V), a prime vocabulary (one chunk per row), few candidates (so the
// fallback to the full row runs), and bf16-like ties.
import { Tensor, cudaAvailable } from "@gemma3/native";
import { describe, expect, it } from "vitest";
import {
  Rng,
  Sampler,
  SamplingState,
  chunkSize,
  logSumExp,
  sampleReference,
  type SamplingParams,
} from "../src/index.js";

// Logprob tolerance: the device lse sums ≤ c ≈ √V float32 terms per chunk (relative error
// ≲ c·2⁻²⁴ ≈ 3e-5 worst case, ~1e-6 typical) and combines chunks in float64; the reference is
// float64 throughout. 1e-5 is the bound.
const LOGPROB_TOL = 1e-5;

function gaussian(rng: Rng): number {
  const u = Math.max(rng.next(), 1e-300);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
}

function randomLogits(rng: Rng, n: number, scale: number, tieStep = 0): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const v = gaussian(rng) * scale;
    x[i] = tieStep > 0 ? Math.round(v / tieStep) * tieStep : v;
  }
  return x;
}

const CASES: [string, SamplingParams][] = [
  ["greedy", { temperature: 0 }],
  ["greedy + logprobs", { temperature: 0, logprobs: 5 }],
  ["temperature 0.7", { temperature: 0.7, logprobs: 2 }],
  ["temperature 1 (whole distribution)", { temperature: 1 }],
  ["temperature 1.5 (whole distribution, T != 1)", { temperature: 1.5 }],
  ["top-k 10", { temperature: 0.8, topK: 10 }],
  ["top-p 0.9 at T = 1.3", { temperature: 1.3, topP: 0.9 }],
  ["top-p 0.5 at T = 1", { topP: 0.5, logprobs: 0 }],
  ["min-p 0.1", { minP: 0.1 }],
  ["min-p 0.01 at T = 2", { minP: 0.01, temperature: 2 }],
  ["top-k + top-p + min-p", { temperature: 0.9, topK: 20, topP: 0.8, minP: 0.05 }],
  ["repetition penalty", { temperature: 0.8, topK: 50, repetitionPenalty: 1.3 }],
  ["frequency + presence", { frequencyPenalty: 0.5, presencePenalty: 0.3, topP: 0.95 }],
  ["negative frequency", { frequencyPenalty: -1.5, temperature: 0.6 }],
  ["logit bias", { temperature: 0.5, logitBias: { 5: 8, 7: -100, 11: 3, 2999: 6 } }],
  ["greedy + penalties + bias", { temperature: 0, repetitionPenalty: 2, logitBias: { 3: 4 } }],
  ["min tokens", { minTokens: 6, temperature: 0.7, logitBias: { 1: 50 } }],
];

interface Setup {
  V: number;
  K: number;
  ties?: number;
  scale?: number;
  device?: string;
}

async function compare(params: SamplingParams, setup: Setup, seed: number) {
  const { V, K } = setup;
  const B = 3;
  const steps = 16;
  const rng = new Rng(seed);
  const prompt = Array.from({ length: 40 }, () => Math.floor(rng.next() * V));
  // Bias ids past a small vocabulary wrap around.
  const bias = params.logitBias as Record<string, number> | undefined;
  const logitBias = bias
    ? Object.fromEntries(Object.entries(bias).map(([t, b]) => [Number(t) % V, b]))
    : undefined;
  const mk = (i: number) =>
    new SamplingState(
      { ...params, ...(logitBias ? { logitBias } : {}), seed: seed * 10 + i },
      { vocabSize: V, promptIds: prompt, stopTokenIds: [1, 2] },
    );
  const dev = [0, 1, 2].map(mk);
  const ref = [0, 1, 2].map(mk);
  const sampler = new Sampler({ maxCandidates: K });
  let maxErr = 0;
  for (let s = 0; s < steps; s++) {
    const rows = Array.from({ length: B }, () =>
      randomLogits(rng, V, setup.scale ?? 2, setup.ties ?? 0),
    );
    const all = new Float32Array(B * V);
    rows.forEach((r, i) => all.set(r, i * V));
    const t = Tensor.from(all, [B, V], "f32", setup.device ?? "cpu");
    // Rows out of order: the picks name their rows.
    const got = await sampler.sample(t, [
      { row: 2, state: dev[2]! },
      { row: 0, state: dev[0]! },
      { row: 1, state: dev[1]! },
    ]);
    t.dispose();
    const want = [2, 0, 1].map((i) => sampleReference(rows[i]!, ref[i]!));
    for (let j = 0; j < B; j++) {
      expect(got[j]!.token, `step ${s} pick ${j}`).toBe(want[j]!.token);
      if (want[j]!.logprob !== undefined) {
        maxErr = Math.max(maxErr, Math.abs(got[j]!.logprob! - want[j]!.logprob!));
        expect(got[j]!.top!.map((e) => e.token)).toEqual(want[j]!.top!.map((e) => e.token));
        for (let k = 0; k < want[j]!.top!.length; k++)
          maxErr = Math.max(maxErr, Math.abs(got[j]!.top![k]!.logprob - want[j]!.top![k]!.logprob));
      } else expect(got[j]!.logprob).toBeUndefined();
    }
  }
  expect(maxErr).toBeLessThan(LOGPROB_TOL);
  sampler.dispose();
  return { fallbacks: sampler.fallbacks, rows: sampler.rows };
}

describe("device sampler = host reference (CPU backend, random logits)", () => {
  const setups: [string, Setup][] = [
    ["V 40, no tail", { V: 40, K: 1024 }],
    ["V 3000, K 1024", { V: 3000, K: 1024 }],
    ["V 5003 (prime: one chunk), K 1024", { V: 5003, K: 1024, scale: 3 }],
    ["V 3000, K 16 (fallbacks)", { V: 3000, K: 16 }],
    ["V 3000, K 64, bf16-like ties", { V: 3000, K: 64, ties: 1 / 8 }],
  ];
  for (const [sname, setup] of setups)
    describe(sname, () => {
      for (const [name, params] of CASES)
        it(name, async () => {
          const r = await compare(params, setup, 7 + name.length);
          expect(r.rows).toBe(48);
        });
    });

  it("few candidates exercise the full-row fallback; 1024 candidates rarely need it", async () => {
    const few = await compare({ temperature: 1 }, { V: 3000, K: 16 }, 3);
    expect(few.fallbacks).toBeGreaterThan(0);
    const topk = await compare({ temperature: 1, topK: 40 }, { V: 3000, K: 1024 }, 3);
    expect(topk.fallbacks).toBe(0);
    // Peaked logits (scale 6): the 1024 candidates carry nearly all the mass.
    const peaked = await compare({ temperature: 0.7 }, { V: 3000, K: 1024, scale: 6 }, 3);
    expect(peaked.fallbacks).toBeLessThan(3);
  });

  it("Gemma-size vocabulary (262144): logprobs within 1e-5, same tokens", async () => {
    const V = 262144;
    expect(chunkSize(V)).toBe(512);
    const rng = new Rng(11);
    const row = randomLogits(rng, V, 3);
    const params: SamplingParams = { temperature: 0.9, topP: 0.95, logprobs: 20, seed: 5 };
    const dev = new SamplingState(params, { vocabSize: V });
    const ref = new SamplingState(params, { vocabSize: V });
    const sampler = new Sampler();
    const t = Tensor.from(row, [1, V], "f32", "cpu");
    for (let i = 0; i < 3; i++) {
      const [got] = await sampler.sample(t, [{ row: 0, state: dev }]);
      const want = sampleReference(row, ref);
      expect(got!.token).toBe(want.token);
      expect(Math.abs(got!.logprob! - want.logprob!)).toBeLessThan(LOGPROB_TOL);
      expect(got!.top!.map((e) => e.token)).toEqual(want.top!.map((e) => e.token));
    }
    t.dispose();
    sampler.dispose();
  });

  it("a plain greedy batch uses the device argmax", async () => {
    const V = 777;
    const rng = new Rng(2);
    const rows = [randomLogits(rng, V, 2), randomLogits(rng, V, 2)];
    const t = Tensor.from(Float32Array.from([...rows[0]!, ...rows[1]!]), [2, V], "f32", "cpu");
    const sampler = new Sampler();
    const states = [0, 1].map(() => new SamplingState({ temperature: 0 }, { vocabSize: V }));
    const got = await sampler.sample(t, [
      { row: 0, state: states[0]! },
      { row: 1, state: states[1]! },
    ]);
    t.dispose();
    sampler.dispose();
    const argmax = (x: Float32Array) => x.indexOf(Math.max(...x));
    expect(got.map((g) => g.token)).toEqual(rows.map(argmax));
    expect(states[0]!.numOutput).toBe(1);
  });
});

describe("chunked logsumexp", () => {
  it("chunk sizes divide the vocabulary", () => {
    for (const V of [512, 262144, 262208, 256000, 5003, 40, 1000]) expect(V % chunkSize(V)).toBe(0);
    expect(chunkSize(5003)).toBe(5003);
    expect(chunkSize(262208)).toBe(482);
  });

  it("logSumExp is stable for large values", () => {
    expect(logSumExp([1000, 1000])).toBeCloseTo(1000 + Math.log(2), 12);
    expect(logSumExp([-Infinity, -Infinity])).toBe(-Infinity);
  });
});

// The same comparison with the logits on the GPU (CUDA kernels for top-k, softmax, gather,
// copyRows, scale); skipped without CUDA unless GEMMA3_TEST_CUDA=1 demands it.
const gpu = cudaAvailable() || process.env.GEMMA3_TEST_CUDA === "1";
describe.skipIf(!gpu)("device sampler on CUDA = host reference", () => {
  const setups: [string, Setup][] = [
    ["V 3000, K 1024", { V: 3000, K: 1024, device: "cuda" }],
    ["V 262208 (Gemma 4B+), K 1024", { V: 262208, K: 1024, scale: 3, device: "cuda" }],
    ["V 3000, K 64, bf16-like ties", { V: 3000, K: 64, ties: 1 / 8, device: "cuda" }],
  ];
  for (const [sname, setup] of setups)
    describe(sname, () => {
      for (const [name, params] of CASES)
        it(name, async () => {
          await compare(params, setup, 7 + name.length);
        });
    });
});
