// The host reference sampler: one row of logits as a Float32Array, every step written out plainly
// over the whole vocabulary. The device sampler must give the same tokens (tests hold it to that)
// and falls back to this when its candidates cannot decide.
import { decide, sortByValue } from "./decide.js";
import { fullRowToken } from "./fullrow.js";
import type { SamplingState } from "./state.js";

export interface TokenLogprob {
  token: number;
  /**
   * log-softmax of the model's logits (before any processor; after a response_format mask, which
   * vLLM applies to the logits before its sampler), float64
   */
  logprob: number;
}

export interface SampleResult {
  token: number;
  /** The sampled token's logprob (when the request asked for logprobs). */
  logprob?: number;
  /** The `logprobs` most likely tokens of the model's distribution, most likely first. */
  top?: TokenLogprob[];
  /** The device sampler copied this row to the host (its candidates could not decide). */
  fullRow?: boolean;
}

/** log Σ exp(x) in float64 (NaN entries skipped). */
export function logSumExp(x: ArrayLike<number>): number {
  let m = -Infinity;
  for (let i = 0; i < x.length; i++) if (x[i]! > m) m = x[i]!;
  if (!(m > -Infinity)) return m;
  let s = 0;
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    if (v === v) s += Math.exp(v - m);
  }
  return m + Math.log(s);
}

/**
 * The token the reference picks for one row, given the step's uniform `u` (drawn by the caller:
 * one draw per non-greedy step): referenceTokenFull's token, found without sorting the row
 * (fullRowToken) except in the rare rows whose decision that path cannot prove.
 * @param logits [vocab] the model's logits for this sequence (masked here by its constraint)
 */
export function referenceToken(logits: Float32Array, state: SamplingState, u: number): number {
  return fullRowToken(logits, state, u) ?? referenceTokenFull(logits, state, u);
}

/**
 * The reference's definition, written out plainly over the whole vocabulary (the spec the faster
 * paths are held to). Greedy: the first maximum of the processed logits. Otherwise temperature,
 * then decide() over every token sorted by value.
 * @param logits [vocab] the model's logits for this sequence (masked here by its constraint)
 */
export function referenceTokenFull(logits: Float32Array, state: SamplingState, u: number): number {
  const V = logits.length;
  const row = maskedRow(logits, state.mask());
  const v = Float64Array.from(row);
  for (const t of state.modifiedTokens()) v[t] = state.process(t, row[t]!);
  if (state.params.greedy) {
    let best = 0;
    let bv = -Infinity;
    for (let i = 0; i < V; i++) if (v[i]! > bv) [best, bv] = [i, v[i]!];
    return best;
  }
  for (let i = 0; i < V; i++) v[i] = state.scale(v[i]!);
  const order = sortByValue(iota(V), v);
  const ls = new Float64Array(V);
  for (let i = 0; i < V; i++) ls[i] = v[order[i]!]!;
  return decide(order, ls, V, state.params, u, null)!;
}

function iota(n: number): Int32Array {
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = i;
  return a;
}

/** The model's top-n tokens and their logprobs (raw logits: value descending, ties to lower id). */
export function referenceTopLogprobs(logits: Float32Array, n: number): TokenLogprob[] {
  const lse = logSumExp(logits);
  const order = sortByValue(iota(logits.length), logits);
  return Array.from(order.subarray(0, n), (t) => ({ token: t, logprob: logits[t]! - lse }));
}

/**
 * The row with the tokens outside `mask` at −inf (the row itself without a mask): the logits the
 * sampler and the logprobs see, as vLLM's grammar bitmask leaves them.
 * @param logits [vocab]
 * @param mask bitset over the vocabulary (TokenConstraint.allowed), or null
 */
export function maskedRow(logits: Float32Array, mask: Uint32Array | null): Float32Array {
  if (!mask) return logits;
  const out = new Float32Array(logits.length).fill(-Infinity);
  for (let w = 0; w < mask.length; w++) {
    let bits = mask[w]!;
    while (bits !== 0) {
      const b = 31 - Math.clz32(bits);
      bits &= ~(1 << b);
      const t = w * 32 + b;
      if (t < out.length) out[t] = logits[t]!;
    }
  }
  return out;
}

/** Samples one token from one row on the host (the plain full reference) and records it in `state`. */
export function sampleReference(row: Float32Array, state: SamplingState): SampleResult {
  const logits = maskedRow(row, state.mask());
  const u = state.params.greedy ? 0 : state.rng.next();
  const token = referenceTokenFull(logits, state, u); // the spec itself: tests hold samplers to it
  state.record(token);
  const n = state.params.logprobs;
  if (n < 0) return { token };
  return {
    token,
    logprob: logits[token]! - logSumExp(logits),
    top: referenceTopLogprobs(logits, n),
  };
}
