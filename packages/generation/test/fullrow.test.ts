// fullRowToken (bucketed, no full sort) against referenceTokenFull (the spec: sort everything, sum
// in sorted order) on many random rows: flat and peaked, bf16 ties, −∞/NaN, masks, penalties and
// bias, every filter, u anywhere including exactly on the reference's cumulative edges. The fast
// path must return the very same token or give up (null); referenceToken must always agree.
import { describe, expect, it } from "vitest";
import {
  Rng,
  SamplingState,
  referenceToken,
  referenceTokenFull,
  sortByValue,
  type SamplingParams,
  type TokenConstraint,
} from "../src/index.js";
import { EXP_REL, fastExp, fullRowStats, fullRowToken } from "../src/fullrow.js";

function gaussian(rng: Rng): number {
  const u = Math.max(rng.next(), 1e-300);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
/** x rounded to bf16 (round to nearest even), as a float32: bf16 logits tie a lot. */
function bf16(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  u32[0] = ((b + 0x7fff + ((b >>> 16) & 1)) & 0xffff0000) >>> 0;
  return f32[0]!;
}

type Shape = "flat" | "peaked" | "bf16" | "special" | "ties";
function row(rng: Rng, V: number, shape: Shape): Float32Array {
  const x = new Float32Array(V);
  for (let i = 0; i < V; i++) {
    const g = gaussian(rng);
    x[i] =
      shape === "peaked"
        ? g * 4
        : shape === "bf16"
          ? bf16(g * 3)
          : shape === "ties"
            ? Math.round(g * 2) / 4
            : g;
  }
  if (shape === "peaked") for (let k = 0; k < 3; k++) x[Math.floor(rng.next() * V)] = 20 + k;
  if (shape === "special")
    for (let k = 0; k < Math.max(1, V >> 6); k++) {
      const r = rng.next();
      x[Math.floor(rng.next() * V)] = r < 0.4 ? -Infinity : r < 0.7 ? NaN : r < 0.8 ? -0 : 0;
    }
  return x;
}

/** A fixed random mask (a constraint's allowed set at one step). */
function maskConstraint(rng: Rng, V: number, density: number): TokenConstraint {
  const m = new Uint32Array(Math.ceil(V / 32));
  for (let t = 0; t < V; t++) if (rng.next() < density) m[t >>> 5]! |= 1 << (t & 31);
  m[0]! |= 1; // at least one token allowed
  return {
    allowed: () => m,
    accept: () => {},
    isComplete: () => false,
    isTerminated: () => false,
  };
}

const TEMPS = [0.3, 0.7, 1, 1.7];
const FILTERS: SamplingParams[] = [
  {},
  { topP: 0.1 },
  { topP: 0.9 },
  { topP: 0.999 },
  { minP: 0.05 },
  { minP: 0.3, topP: 0.9 },
  { topK: 7 },
  { topK: 300, topP: 0.9 },
  { topK: 40, minP: 0.02, topP: 0.8 },
];

function us(rng: Rng): number[] {
  return [rng.next(), rng.next(), 0, 1e-12, 0.5, 1 - 1e-9, 1 - 2 ** -53];
}

/** Asserts fast = full for one row and u; returns whether the fast path gave up. */
function check(x: Float32Array, state: SamplingState, u: number, what: string): boolean {
  const want = referenceTokenFull(x, state, u);
  const fast = fullRowToken(x, state, u);
  if (fast !== null) expect(fast, what).toBe(want);
  expect(referenceToken(x, state, u), what).toBe(want);
  return fast === null;
}

/** A state with penalties, bias and a record of sampled tokens (so `modifiedTokens` is long). */
function penalized(rng: Rng, V: number, params: SamplingParams): SamplingState {
  const bias: Record<number, number> = {};
  for (let k = 0; k < 6; k++)
    bias[Math.floor(rng.next() * V)] = [8, -100, 0.37, -2.5, 30, 1e-3][k]!;
  const s = new SamplingState(
    {
      ...params,
      repetitionPenalty: 1.3,
      frequencyPenalty: 0.4,
      presencePenalty: -0.7,
      logitBias: bias,
    },
    {
      vocabSize: V,
      promptIds: Array.from({ length: 20 }, () => Math.floor(rng.next() * V)),
      stopTokenIds: [0, Math.min(1, V - 1)],
    },
  );
  for (let k = 0; k < 12; k++) s.record(Math.floor(rng.next() * V));
  return s;
}

describe("fullRowToken = referenceTokenFull", () => {
  it("awkward sizes × shapes × temperatures × filters × u (incl. masks and penalties)", () => {
    const rng = new Rng(1);
    let rows = 0;
    let gaveUp = 0;
    for (const V of [1, 19, 989, 4099])
      for (const shape of ["flat", "peaked", "bf16", "special", "ties"] as Shape[])
        for (const T of TEMPS)
          for (const [fi, f] of FILTERS.entries()) {
            const x = row(rng, V, shape);
            const variant = (rows + fi) % 3;
            const params = { temperature: T, ...f };
            const state =
              variant === 0
                ? new SamplingState(params, { vocabSize: V })
                : variant === 1
                  ? penalized(rng, V, params)
                  : new SamplingState(params, {
                      vocabSize: V,
                      constraint: maskConstraint(rng, V, rng.next() < 0.5 ? 0.05 : 0.7),
                    });
            for (const [k, u] of us(rng).entries()) {
              const what = `V ${V} ${shape} T ${T} ${JSON.stringify(f)} v${variant} u ${u}`;
              if (check(x, state, u, what) && k < 2) gaveUp++;
              rows++;
            }
          }
    expect(rows).toBeGreaterThan(5000);
    // At random u (the first two of each row's list) an edge within the margin is rare: the fast
    // path decides nearly every row. (u ≈ 1 in a peaked row lands where weights are below the
    // margin: those give up, legitimately.)
    expect(gaveUp).toBeLessThan((rows * 2) / 7 / 100);
  });

  it("greedy rows (masks, penalties, −∞/NaN), never given up", () => {
    const rng = new Rng(2);
    for (const V of [1, 19, 989, 4099])
      for (const shape of ["flat", "peaked", "special", "ties"] as Shape[])
        for (let k = 0; k < 3; k++) {
          const x = row(rng, V, shape);
          const params = { temperature: 0 };
          const state =
            k === 0
              ? new SamplingState(params, { vocabSize: V })
              : k === 1
                ? penalized(rng, V, params)
                : new SamplingState(params, {
                    vocabSize: V,
                    constraint: maskConstraint(rng, V, 0.1),
                  });
          const fast = fullRowToken(x, state, 0);
          expect(fast).toBe(referenceTokenFull(x, state, 0));
        }
  });

  it("vocabulary 262144: flat and bf16 rows, T 0.7/1/1.7, top-p, min-p, top-k 2000", () => {
    const rng = new Rng(3);
    const V = 262144;
    const cases: SamplingParams[] = [
      { temperature: 1 },
      { temperature: 0.7, topP: 0.9 },
      { temperature: 1.7, topP: 0.999 },
      { temperature: 1, minP: 0.05 },
      { temperature: 0.7, topK: 2000 },
    ];
    let n = 0;
    for (const shape of ["flat", "bf16"] as Shape[]) {
      const x = row(rng, V, shape);
      for (const params of cases) {
        const state = new SamplingState(params, { vocabSize: V });
        for (const u of [rng.next(), rng.next(), 1 - 1e-9]) {
          check(x, state, u, `${shape} ${JSON.stringify(params)} u ${u}`);
          n++;
        }
      }
    }
    expect(n).toBe(30);
  });

  it("u and p placed exactly on the reference's cumulative edges (bucket edges too)", () => {
    const rng = new Rng(4);
    let rows = 0;
    let gaveUp = 0;
    let wrongWithoutMargin = 0;
    let near = 0;
    let decidedNear = 0;
    for (const V of [989, 4099, 20000])
      for (const shape of ["flat", "bf16", "ties"] as Shape[])
        for (const T of [0.7, 1]) {
          const x = row(rng, V, shape);
          const state = new SamplingState({ temperature: T }, { vocabSize: V });
          const { S, keys } = referencePrefix(x, state);
          const z = S[V - 1]!;
          // Positions: where the bucket (the key's top 16 bits) changes, and random ones.
          const at: number[] = [];
          for (let m = 0; m + 1 < V && at.length < 12; m++)
            if (keys[m]! >>> 16 !== keys[m + 1]! >>> 16 && S[m]! < z) at.push(m);
          for (let k = 0; k < 12; k++) at.push(Math.floor(rng.next() * (V - 1)));
          for (const m of at)
            for (const u of around(S[m]! / z)) {
              if (!(u >= 0 && u < 1)) continue;
              if (check(x, state, u, `V ${V} ${shape} T ${T} m ${m} u ${u}`)) gaveUp++;
              // Without the margin the bucketed sums decide these alone, and some come out wrong.
              const bare = fullRowToken(x, state, u, { marginScale: 0 });
              if (bare !== null && bare !== referenceTokenFull(x, state, u)) wrongWithoutMargin++;
              rows++;
            }
          // Just outside the margin (≈ 8·V·2⁻⁵³·Z): decided by the fast path, and right.
          for (const m of at)
            for (const d of [-400, -40, 40, 400]) {
              const u = (S[m]! + d * V * 2 ** -53 * z) / z;
              if (!(u >= 0 && u < 1)) continue;
              if (!check(x, state, u, `near V ${V} ${shape} T ${T} m ${m} d ${d}`)) decidedNear++;
              near++;
            }
          // top-p with p on an edge: the cut itself is the close call.
          for (const m of at.slice(0, 6))
            for (const p of around(S[m]! / z)) {
              if (!(p > 0 && p < 1)) continue;
              const st = new SamplingState({ temperature: T, topP: p }, { vocabSize: V });
              if (check(x, st, rng.next(), `top-p V ${V} ${shape} m ${m} p ${p}`)) gaveUp++;
              rows++;
            }
        }
    expect(rows).toBeGreaterThan(1000);
    // Most of these are within any error bound of an edge: the give-up path ran, and was right.
    expect(gaveUp).toBeGreaterThan(rows / 4);
    // The edges are real: a zero margin would have returned wrong tokens.
    expect(wrongWithoutMargin).toBeGreaterThan(0);
    // Outside the margin the fast path takes the decision (ties in bf16/tie rows aside: an edge
    // between equal weights is the same edge for every token of the tie).
    expect(decidedNear).toBeGreaterThan(near / 2);
  });

  it("gives up (and referenceToken still agrees) when the margin is forced wide", () => {
    const rng = new Rng(5);
    const V = 4099;
    const x = row(rng, V, "flat");
    const state = new SamplingState({ temperature: 1, topP: 0.9 }, { vocabSize: V });
    const before = fullRowStats.gaveUp;
    for (let k = 0; k < 20; k++) {
      const u = 0.05 + 0.9 * rng.next();
      expect(fullRowToken(x, state, u, { marginScale: 1e12 })).toBeNull();
      expect(fullRowToken(x, state, u)).toBe(referenceTokenFull(x, state, u));
    }
    expect(fullRowStats.gaveUp - before).toBeGreaterThanOrEqual(20);
  });

  it("+∞ is left to the full reference; every token masked gives token 0 as the reference", () => {
    const V = 64;
    const x = new Float32Array(V).fill(1);
    x[5] = Infinity;
    const s = new SamplingState({ temperature: 1 }, { vocabSize: V });
    expect(fullRowToken(x, s, 0.3)).toBeNull();
    expect(referenceToken(x, s, 0.3)).toBe(referenceTokenFull(x, s, 0.3));
    const none = new Float32Array(V).fill(-Infinity);
    none[3] = NaN;
    expect(fullRowToken(none, s, 0.3)).toBe(0);
    expect(referenceToken(none, s, 0.3)).toBe(referenceTokenFull(none, s, 0.3));
  });
});

describe("fastExp", () => {
  it("is within EXP_REL of Math.exp over [−700, 0] (measured < 2⁻⁴⁸)", () => {
    const rng = new Rng(6);
    let worst = 0;
    for (let k = 0; k < 200000; k++) {
      const x = k % 2 ? -700 * rng.next() : -8 * rng.next();
      const e = Math.exp(x);
      worst = Math.max(worst, Math.abs(fastExp(x) - e) / e);
    }
    expect(worst).toBeLessThan(2 ** -48);
    expect(worst).toBeLessThan(EXP_REL);
    expect(fastExp(0)).toBe(1);
    expect(fastExp(-Infinity)).toBe(0);
    expect(fastExp(-701)).toBe(0);
  });
});

/**
 * The reference's sorted order and its float64 prefix sums S (no filters), recomputed here the way
 * referenceTokenFull forms them, to place u on its edges.
 */
function referencePrefix(x: Float32Array, state: SamplingState) {
  const V = x.length;
  const l = Float64Array.from(x, (v) => state.scale(v));
  const order = sortByValue(
    Int32Array.from({ length: V }, (_, i) => i),
    l,
  );
  const lmax = l[order[0]!]!;
  const S = new Float64Array(V);
  const keys = new Uint32Array(V);
  let s = 0;
  for (let m = 0; m < V; m++) {
    s += Math.exp(l[order[m]!]! - lmax);
    S[m] = s;
    f32[0] = l[order[m]!]! + 0;
    const b = u32[0]!;
    keys[m] = b >= 0x80000000 ? ~b >>> 0 : (b | 0x80000000) >>> 0;
  }
  return { S, keys };
}

/** v and its float64 neighbours (±2 ulp): one of them makes fl(v·z) land on the edge. */
function around(v: number): number[] {
  const out = [v];
  let up = v;
  let down = v;
  for (let k = 0; k < 2; k++) {
    up = next(up, 1);
    down = next(down, -1);
    out.push(up, down);
  }
  return out;
}

const f64 = new Float64Array(1);
const i64 = new BigInt64Array(f64.buffer);
function next(v: number, dir: 1 | -1): number {
  f64[0] = v;
  i64[0]! += BigInt(dir);
  return f64[0]!;
}
