// The random-sampling decision shared by the host reference and the device sampler, so both do the
// same float64 arithmetic over the same sorted items:
//   min-p → top-k → top-p → one uniform u: the first kept token whose cumulative mass exceeds u·Z.
// (vLLM V1's order: min-p is an argmax-invariant processor applied before top-k/top-p; top-k and
// min-p commute, top-p normalizes over what min-p kept.)
// The reference passes every token (`tail` null). The device sampler passes the candidates that
// rank before every other token, and a description of the rest (the "tail": a bound on its values
// and its mass with an error bound); whenever the answer could depend on a tail token or on the
// mass's error, decide returns null and the caller falls back to the full row.
import type { ResolvedSampling } from "./params.js";

/** What is known of the tokens outside the candidate list. */
export interface Tail {
  /** Every tail token t has l_t <= bound (so a candidate with l > bound precedes all of them). */
  readonly bound: number;
  /**
   * Σ over tail tokens of exp(l_t − lmax) and a bound on its error, or undefined when unknown.
   * A decision that the error could flip is not taken (null: the caller uses the full row).
   */
  mass(lmax: number): { mass: number; err: number } | undefined;
}

/**
 * Picks a token from items sorted by l descending, ties to the lower id (l: processed logit ÷ T).
 * @param tok [n] token ids in that order; l [n] their values
 * @param u uniform in [0, 1)
 * @returns the token, or null when the candidates cannot decide (only possible with a tail)
 */
export function decide(
  tok: ArrayLike<number>,
  l: Float64Array,
  n: number,
  p: ResolvedSampling,
  u: number,
  tail: Tail | null,
): number | null {
  if (n === 0) return null;
  const lmax = l[0]!;
  if (tail && !(lmax > tail.bound)) return null; // a tail token may be the most likely
  if (!(lmax > -Infinity)) return tail ? null : tok[0]!; // every logit masked: nothing to weigh
  // Weights relative to the top token, computed once (the reference has a vocabulary of them).
  const W = new Float64Array(n);
  for (let i = 0; i < n; i++) W[i] = Math.exp(l[i]! - lmax);
  const w = (i: number) => W[i]!;
  // What the tail holds after each filter: all of it, none of it, or an unknown part.
  let tailState: "all" | "none" | "partial" = tail ? "all" : "none";
  const safe = (i: number) => tail === null || l[i]! > tail.bound;
  let kept = n;

  // min-p: drop p_i < minP · p_max (probabilities relative to the top one: exp(l_i − lmax)).
  if (p.minP > 0) {
    let i = 0;
    while (i < kept && !(w(i) < p.minP)) i++;
    kept = i;
    if (tail) tailState = Math.exp(tail.bound - lmax) < p.minP ? "none" : "partial";
  }

  // top-k: keep values >= the k-th largest (ties at the threshold kept, as vLLM's mask).
  if (p.topK > 0) {
    if (tailState === "none") {
      if (kept > p.topK) kept = extendTies(l, p.topK, kept);
    } else {
      // The first k in full order are known iff the k-th candidate precedes every tail token.
      if (kept < p.topK || !safe(p.topK - 1)) return null;
      kept = extendTies(l, p.topK, kept);
      tailState = "none";
    }
  }

  /** Mass Z of the kept set and its error bound (0 without a tail: then the reference's sums). */
  const total = (): { z: number; err: number } | undefined => {
    let z = 0;
    for (let i = 0; i < kept; i++) z += w(i);
    if (tailState === "none") return { z, err: 0 };
    if (tailState === "partial") return undefined;
    const m = tail!.mass(lmax);
    return m === undefined ? undefined : { z: z + m.mass, err: m.err };
  };

  // top-p: drop a token when the mass ranked before it is >= p·Z (vLLM: ascending cumsum <= 1 − p);
  // the top token is always kept.
  if (p.topP < 1) {
    const t = total();
    if (t === undefined) return null;
    const hi = p.topP * (t.z + t.err);
    const lo = p.topP * (t.z - t.err);
    let before = 0;
    let i = 0;
    for (; i < kept; i++) {
      if (i > 0 && before >= hi) break;
      if (i > 0 && before >= lo) return null; // the cut depends on Z's last digits
      if (tailState === "all" && !safe(i)) return null; // the next item may be a tail token
      before += w(i);
    }
    if (i < kept) {
      kept = i; // cut inside the (safe) candidates: every tail token ranks after the cut
      tailState = "none";
    } else if (tailState === "all") {
      if (!(before >= hi)) return null; // tail tokens are (or may be) kept: their order is unknown
      tailState = "none"; // the cut falls right after the candidates
    }
  }

  // The draw: the first kept token whose cumulative mass exceeds u·Z.
  const t = total();
  if (t === undefined) return null;
  const hi = u * (t.z + t.err);
  const lo = u * (t.z - t.err);
  let cum = 0;
  for (let i = 0; i < kept; i++) {
    if (tailState === "all" && !safe(i)) return null;
    cum += w(i);
    if (cum > lo) return cum > hi ? tok[i]! : null; // null: u·Z is within Z's error of this edge
  }
  return tailState === "all" ? null : tok[kept - 1]!; // u·Z at the very top (rounding)
}

/** Length of the kept prefix for top-k: the first k, plus any later item equal to the k-th. */
function extendTies(l: Float64Array, k: number, kept: number): number {
  const th = l[k - 1]!;
  let i = k;
  while (i < kept && l[i]! >= th) i++;
  return i;
}

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/**
 * Sorts ids (integers in [0, 2²¹)) by value descending, ties to the lower id; NaN ranks as −∞.
 * In place; returns ids. `val` maps an id to its value (a function, or an array indexed by id).
 * Values are float32 numbers (logits, processed logits), so each (value, id) packs exactly into
 * one double and a native numeric sort does the work (262144 ids: ~20 ms).
 */
export function sortByValue(
  ids: Int32Array,
  val: ((id: number) => number) | ArrayLike<number>,
): Int32Array {
  const get = typeof val === "function" ? val : (id: number) => val[id]!;
  const n = ids.length;
  const keys = new Uint32Array(n); // descending value ↔ ascending key
  let ascending = true;
  for (let i = 0; i < n; i++) {
    const id = ids[i]!;
    let v = get(id);
    if (v !== v) v = -Infinity;
    if (Math.fround(v) !== v || id < 0 || id >= 2 ** 21) return sortByValueSlow(ids, get);
    f32buf[0] = v === 0 ? 0 : v; // −0 ranks with +0
    const bits = u32buf[0]!;
    const ordered = bits & 0x80000000 ? ~bits >>> 0 : (bits | 0x80000000) >>> 0; // ascending in v
    keys[i] = 0xffffffff - ordered;
    if (i > 0 && id < ids[i - 1]!) ascending = false;
  }
  // Ids in ascending order (a whole vocabulary): a stable radix sort on the key keeps ties by id.
  if (ascending && n > 4096) return radixSort(keys, ids);
  const packed = new Float64Array(n);
  for (let i = 0; i < n; i++) packed[i] = keys[i]! * 2 ** 21 + ids[i]!;
  packed.sort();
  for (let i = 0; i < n; i++) ids[i] = packed[i]! % 2 ** 21;
  return ids;
}

/** Stable LSD radix sort of ids by uint32 keys (three 11-bit digits). Writes ids in place. */
function radixSort(keys: Uint32Array, ids: Int32Array): Int32Array {
  const n = keys.length;
  let k1: Uint32Array = keys;
  let i1: Int32Array = ids;
  let k2: Uint32Array = new Uint32Array(n);
  let i2: Int32Array = new Int32Array(n);
  const count = new Uint32Array(2049);
  for (let shift = 0; shift < 32; shift += 11) {
    count.fill(0);
    for (let i = 0; i < n; i++) count[((k1[i]! >>> shift) & 2047) + 1]!++;
    for (let d = 0; d < 2048; d++) count[d + 1]! += count[d]!;
    for (let i = 0; i < n; i++) {
      const pos = count[(k1[i]! >>> shift) & 2047]!++;
      k2[pos] = k1[i]!;
      i2[pos] = i1[i]!;
    }
    [k1, k2] = [k2, k1];
    [i1, i2] = [i2, i1];
  }
  if (i1 !== ids) ids.set(i1);
  return ids;
}

function sortByValueSlow(ids: Int32Array, val: (id: number) => number): Int32Array {
  const key = (id: number) => {
    const v = val(id);
    return v === v ? v : -Infinity;
  };
  const sorted = Array.from(ids).sort((a, b) => {
    const ka = key(a);
    const kb = key(b);
    return ka > kb ? -1 : ka < kb ? 1 : a - b;
  });
  ids.set(sorted);
  return ids;
}
