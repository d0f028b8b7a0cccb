// Logits processors against hand-computed values (vLLM's formulas and order), the shared decision
// on tiny distributions, parameter validation, generation_config defaults, and the seeded generator.
import { Tensor } from "@gemma3/native";
import { describe, expect, it } from "vitest";
import {
  GenerationError,
  Rng,
  Sampler,
  SamplingState,
  decide,
  generationConfigDefaults,
  referenceToken,
  resolveSampling,
  resolveStopTokenIds,
  sampleReference,
  sortByValue,
} from "../src/index.js";

// Values chosen so every float32 step is exact (halves and quarters).
const X = Float32Array.from([2, -1, 0.5, 3, -2, 1, 0, 0.25]);

function processed(state: SamplingState): number[] {
  return Array.from(X, (x, t) => state.process(t, x));
}

describe("penalties and bias (vLLM's formulas)", () => {
  it("repetition ÷/×, frequency −count·f, presence −p, bias +b, in that order", () => {
    const s = new SamplingState(
      {
        temperature: 0,
        repetitionPenalty: 2,
        frequencyPenalty: 0.5,
        presencePenalty: 0.25,
        logitBias: { 6: 1.5, 4: -0.5 },
      },
      { vocabSize: 8, promptIds: [0, 1] },
    );
    for (const t of [3, 3, 5]) s.record(t);
    expect(processed(s)).toEqual([
      1, // prompt token, positive: 2 / 2
      -2, // prompt token, negative: −1 · 2
      0.5, // unseen
      0.25, // output ×2: 3 / 2 − 0.5·2 − 0.25
      -2.5, // bias only: −2 − 0.5
      -0.25, // output ×1: 1 / 2 − 0.5 − 0.25
      1.5, // bias only: 0 + 1.5
      0.25, // unseen
    ]);
    expect(s.modifiedTokens().sort()).toEqual([0, 1, 3, 4, 5, 6]);
    expect(referenceToken(X, s, 0)).toBe(6);
  });

  it("bias comes before the repetition penalty (the sign is read after the bias)", () => {
    const s = new SamplingState(
      { repetitionPenalty: 2, logitBias: { 0: -3, 1: 3 } },
      { vocabSize: 8, promptIds: [0, 1] },
    );
    expect(s.process(0, 2)).toBe(-2); // (2 − 3) · 2
    expect(s.process(1, -1)).toBe(1); // (−1 + 3) / 2
  });

  it("frequency and presence count output tokens only; repetition counts the prompt too", () => {
    const s = new SamplingState(
      { frequencyPenalty: 1, presencePenalty: 1 },
      { vocabSize: 8, promptIds: [2, 2, 2] },
    );
    expect(s.process(2, 0.5)).toBe(0.5);
    s.record(2);
    expect(s.process(2, 0.5)).toBe(-1.5);
    expect(s.count(2)).toBe(1);
  });

  it("min tokens masks the stop ids until enough tokens are out", () => {
    const s = new SamplingState({ minTokens: 2 }, { vocabSize: 8, stopTokenIds: [1] });
    expect(s.process(1, 5)).toBe(-Infinity);
    s.record(3);
    expect(s.process(1, 5)).toBe(-Infinity);
    s.record(3);
    expect(s.process(1, 5)).toBe(5);
  });

  it("float32 steps as torch: x · fround(1/r), x − fround(f·count)", () => {
    const s = new SamplingState(
      { repetitionPenalty: 1.1, frequencyPenalty: 0.3 },
      { vocabSize: 8, promptIds: [] },
    );
    s.record(4);
    s.record(4);
    const f = Math.fround;
    const rep = f(f(1.7) * f(1 / f(1.1)));
    expect(s.process(4, f(1.7))).toBe(f(rep - f(f(0.3) * 2)));
  });

  it("the device path applies the same processors (greedy over a tail)", async () => {
    // 2000 tokens, 16 candidates: the bias lifts a tail token above every candidate.
    const V = 2000;
    const rng = new Rng(1);
    const row = Float32Array.from({ length: V }, () => rng.next() * 4);
    const s1 = new SamplingState({ temperature: 0, logitBias: { 1234: 10 } }, { vocabSize: V });
    const s2 = new SamplingState({ temperature: 0, logitBias: { 1234: 10 } }, { vocabSize: V });
    const t = Tensor.from(row, [1, V], "f32", "cpu");
    const sampler = new Sampler({ maxCandidates: 16 });
    const [got] = await sampler.sample(t, [{ row: 0, state: s1 }]);
    t.dispose();
    sampler.dispose();
    expect(got!.token).toBe(1234);
    expect(sampleReference(row, s2).token).toBe(1234);
  });
});

describe("decide: min-p → top-k → top-p → draw", () => {
  const p = (o: Parameters<typeof resolveSampling>[0]) => resolveSampling(o, 100);
  // Probabilities 0.5, 0.25, 0.125, 0.125 (l = log p).
  const tok = [7, 3, 9, 1];
  const l = Float64Array.from([0.5, 0.25, 0.125, 0.125], Math.log);

  it("draws by cumulative mass in sorted order", () => {
    expect(decide(tok, l, 4, p({}), 0.49, null)).toBe(7);
    expect(decide(tok, l, 4, p({}), 0.51, null)).toBe(3);
    expect(decide(tok, l, 4, p({}), 0.8, null)).toBe(9);
    expect(decide(tok, l, 4, p({}), 0.99, null)).toBe(1);
  });

  it("top-k keeps ties at the k-th value (vLLM's mask)", () => {
    // top-k 3: the k-th value 0.125 ties with the 4th: both kept, mass 1.
    expect(decide(tok, l, 4, p({ topK: 3 }), 0.99, null)).toBe(1);
    // top-k 2: mass 0.75; u = 0.7 → 0.525 of it: past 0.5 → token 3.
    expect(decide(tok, l, 4, p({ topK: 2 }), 0.7, null)).toBe(3);
    expect(decide(tok, l, 4, p({ topK: 1 }), 0.99, null)).toBe(7);
  });

  it("top-p drops a token once the mass before it reaches p", () => {
    // p = 0.5: token 3 has 0.5 before it → dropped; only 7 is left.
    expect(decide(tok, l, 4, p({ topP: 0.5 }), 0.99, null)).toBe(7);
    // p = 0.6: 7 and 3 kept (mass 0.75); u = 0.9 → 0.675 → token 3.
    expect(decide(tok, l, 4, p({ topP: 0.6 }), 0.9, null)).toBe(3);
  });

  it("min-p drops p < minP · p_max; top-p then renormalizes over what is left", () => {
    // min-p 0.3: threshold 0.15 → 7, 3 kept. top-p 0.6 over {2/3, 1/3}: 3 has 2/3 before it → dropped.
    expect(decide(tok, l, 4, p({ minP: 0.3, topP: 0.6 }), 0.99, null)).toBe(7);
    // Without min-p, top-p 0.6 keeps 7 and 3.
    expect(decide(tok, l, 4, p({ topP: 0.6 }), 0.99, null)).toBe(3);
  });

  it("with a tail it decides only what the candidates settle", () => {
    const tail = (bound: number, mass?: number) => ({
      bound,
      mass: () => (mass === undefined ? undefined : { mass, err: 0 }),
    });
    // Two candidates of weight 1 and 0.5 (relative to the top); tails of weight 0.5 or 0.25.
    const t2 = [7, 3];
    const l2 = Float64Array.from([0.5, 0.25], Math.log);
    const b = Math.log(0.2);
    expect(decide(t2, l2, 2, p({}), 0.6, tail(b, 0.5))).toBe(3);
    expect(decide(t2, l2, 2, p({}), 0.9, tail(b, 0.5))).toBeNull(); // lands in the tail
    expect(decide(t2, l2, 2, p({ topK: 2 }), 0.9, tail(b))).toBe(3); // top-k settles it
    expect(decide(t2, l2, 2, p({ topK: 3 }), 0.1, tail(b))).toBeNull(); // the 3rd is in the tail
    expect(decide(t2, l2, 2, p({ minP: 0.5 }), 0.9, tail(b))).toBe(3); // tail below min-p
    expect(decide(t2, l2, 2, p({ topP: 0.7 }), 0.9, tail(b, 0.25))).toBe(3); // cut after 3
    expect(decide(t2, l2, 2, p({}), 0.6, tail(Math.log(0.6), 0.5))).toBeNull(); // tail may lead
  });

  it("a decision within the tail mass's error is not taken", () => {
    const t2 = [7, 3];
    const l2 = Float64Array.from([0.5, 0.25], Math.log);
    const tail = (err: number) => ({ bound: Math.log(0.2), mass: () => ({ mass: 0.5, err }) });
    // Weights (relative to the top) 1, 0.5 and a tail of 0.5: Z = 2, and u = 0.5 puts u·Z exactly
    // on the first edge: decided (the next token) only without error.
    expect(decide(t2, l2, 2, p({}), 0.5, tail(0))).toBe(3);
    expect(decide(t2, l2, 2, p({}), 0.5, tail(1e-9))).toBeNull();
    expect(decide(t2, l2, 2, p({}), 0.4, tail(1e-9))).toBe(7);
  });
});

describe("sortByValue", () => {
  it("packs (value, id) exactly: same order as a comparator sort", () => {
    const rng = new Rng(3);
    const vals = Float32Array.from({ length: 5000 }, (_, i) =>
      i % 7 === 0
        ? [NaN, -Infinity, Infinity, -0, 0][i % 5]!
        : Math.round((rng.next() - 0.5) * 64) / 8,
    );
    const key = (v: number) => (v === v ? v : -Infinity);
    const want = Array.from({ length: 5000 }, (_, i) => i).sort(
      (a, b) => key(vals[b]!) - key(vals[a]!) || a - b,
    );
    // Ids in any order (packed doubles, native sort) and ascending (stable radix sort).
    const shuffled = Int32Array.from({ length: 5000 }, (_, i) => (i * 2749) % 5000);
    expect(Array.from(sortByValue(shuffled, (i) => vals[i]!))).toEqual(want);
    expect(Array.from(sortByValue(Int32Array.from(want).sort(), vals))).toEqual(want);
    // Values that are not float32 take the comparator path: same order.
    const d = [0.1, 0.3, 0.2, 0.3];
    expect(Array.from(sortByValue(Int32Array.from([0, 1, 2, 3]), (i) => d[i]!))).toEqual([
      1, 3, 2, 0,
    ]);
  });
});

describe("parameters", () => {
  it("validates vLLM's ranges", () => {
    const bad = (o: Parameters<typeof resolveSampling>[0]) => () => resolveSampling(o, 100);
    for (const o of [
      { temperature: -1 },
      { topP: 0 },
      { topP: 1.5 },
      { minP: 2 },
      { topK: -2 },
      { topK: 1.5 },
      { repetitionPenalty: 0 },
      { frequencyPenalty: 3 },
      { presencePenalty: -2.5 },
      { logitBias: { 100: 1 } },
      { logprobs: 101 },
      { seed: 1.5 },
    ])
      expect(bad(o), JSON.stringify(o)).toThrow(GenerationError);
    const r = resolveSampling({ temperature: 1e-6, topK: -1, logitBias: { 3: 500 } }, 100);
    expect(r.greedy).toBe(true);
    expect(r.topK).toBe(0);
    expect(r.logitBias.get(3)).toBe(100); // clamped as vLLM
    expect(resolveSampling({ topK: 100 }, 100).topK).toBe(0); // k >= vocab is off
  });

  it("reads generation_config.json like vLLM's --generation-config auto", () => {
    const g = generationConfigDefaults({
      bos_token_id: 2,
      do_sample: true,
      eos_token_id: [1, 106],
      top_k: 64,
      top_p: 0.95,
    });
    expect(g).toEqual({ eosTokenIds: [1, 106], sampling: { topK: 64, topP: 0.95 } });
    expect(generationConfigDefaults({ eos_token_id: 1, max_new_tokens: 9 }).maxTokens).toBe(9);
  });

  it("merges stop ids: eos of config + generation_config unless ignoreEos; the request's always", () => {
    expect(resolveStopTokenIds({ eosTokenIds: [1], generationConfigEos: [1, 106] })).toEqual([
      1, 106,
    ]);
    expect(
      resolveStopTokenIds({
        eosTokenIds: [1],
        generationConfigEos: [106],
        stopTokenIds: [5],
        ignoreEos: true,
      }),
    ).toEqual([5]);
  });
});

describe("seeded generator", () => {
  it("same seed → same stream; different seeds differ; uniform in [0, 1)", () => {
    const a = new Rng(42);
    const b = new Rng(42n);
    const c = new Rng(43);
    const xs = Array.from({ length: 1000 }, () => a.next());
    expect(Array.from({ length: 1000 }, () => b.next())).toEqual(xs);
    expect(c.next()).not.toBe(xs[0]);
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.05); // 1000 draws: σ ≈ 0.009
  });

  it("seeded sampling is reproducible; unseeded states differ", () => {
    const V = 50;
    const rng = new Rng(9);
    const rows = Array.from({ length: 30 }, () =>
      Float32Array.from({ length: V }, () => rng.next() * 2),
    );
    const run = (seed?: number) => {
      const s = new SamplingState(
        { temperature: 1, ...(seed !== undefined ? { seed } : {}) },
        { vocabSize: V },
      );
      return rows.map((r) => sampleReference(r, s).token);
    };
    expect(run(5)).toEqual(run(5));
    expect(run(5)).not.toEqual(run(6));
    expect(run()).not.toEqual(run());
  });
});
