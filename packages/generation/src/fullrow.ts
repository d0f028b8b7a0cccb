// The reference's decision over a whole row without sorting the row: the same token as
// referenceTokenFull (the spec: every token sorted by l = processed logit ÷ T descending, ties to
// the lower id; min-p → top-k → top-p → the first kept token whose cumulative weight exceeds u·Z;
// float64 sums in that order), found in a few linear passes. The Sampler runs it when its device
// candidates cannot decide (the draw landed in the tail: most rows of a flat distribution).
//
// How. Every l is a float32 (state.scale rounds), so its bits give a monotone uint32 key; buckets
// are the key's top 16 bits (sign, exponent, 7 mantissa bits), monotone in l. Two passes in id
// order form l and sum each bucket's weights W = exp(l − lmax); walking the buckets from the top
// finds the one where a threshold (p·Z for top-p, u·Z for the draw) falls, and only that bucket is
// gathered, sorted and walked with the reference's own W. The reference's sums are sorted-order
// float64 sums we never form, so each decision is checked against a rigorous error bound
// (`margin`); one that the error could flip is not taken (null: the caller runs the full
// reference). That happens when u·Z or p·Z falls within the margin of an edge: at most about
// 2·margin·V/Z ≈ V²·2⁻⁴⁹ of draws, ~1e-4 at V = 262144.
//
// Error bound. A float64 sum of N nonnegative terms in any order (recursive, or bucket sums then
// their sum) is within γ_N·T of its exact value T, γ_N = N·2⁻⁵³/(1 − N·2⁻⁵³) (Higham, Accuracy
// and Stability, §4.2). Ours use weights from fastExp (relative error ≤ EXP_REL) except inside the
// walked bucket, where they are the reference's Math.exp values. A prefix sum of ours vs the
// reference's: ≤ (2γ + δ)·Z apart (δ = EXP_REL, and V·1e-300 for the weights fastExp flushes to
// zero); a threshold c·Z (c = p or u ≤ 1, one more rounding each side): ≤ (2γ + δ + 2·2⁻⁵³)·Z
// apart. `margin` is twice their sum (Z ours, ×1.01 for the exact one).
import type { SamplingState } from "./state.js";

const EPS = 2 ** -53;
/**
 * Bound on fastExp's relative error: the analysis gives ≲ 10·2⁻⁵³ (Taylor remainder r⁴/24 ≤
 * 4e-17 at |r| ≤ ln2/4096, ~5 roundings in Horner and the products, a table entry within an ulp);
 * the test measures < 5 ulp. 2⁻⁴⁰ leaves three orders of magnitude.
 */
export const EXP_REL = 2 ** -40;
/** Below this exponent fastExp returns 0 (e^x ≤ 1e-304: V of them are far below one ulp of Z ≥ 1). */
const EXP_MIN = -700;

const N_EXP = 2048; // table steps per octave
const LN2_N_HI = 6.9314718036912381649e-1 / N_EXP; // fdlibm's ln2_hi (32 bits) ÷ N: k·hi is exact
const LN2_N_LO = 1.9082149292705877e-10 / N_EXP;
const INV_LN2_N = N_EXP / Math.LN2;
const ROUND = 6755399441055744; // 1.5·2⁵²: (x + ROUND) − ROUND rounds x to an integer
const POW2_J = Float64Array.from({ length: N_EXP }, (_, j) => Math.pow(2, j / N_EXP));
const POW2_NEG = new Float64Array(1100); // 2^−m, exact (normal down to 2^−1022)
POW2_NEG[0] = 1;
for (let m = 1; m < POW2_NEG.length; m++) POW2_NEG[m] = POW2_NEG[m - 1]! / 2;

/**
 * e^x for x ≤ 0 within EXP_REL relative (0 below EXP_MIN), about 2.5× as fast as Math.exp:
 * x = k·ln2/N + r, e^x = 2^⌊k/N⌋ · 2^((k mod N)/N) · e^r, e^r by its cubic Taylor polynomial.
 */
export function fastExp(x: number): number {
  if (!(x >= EXP_MIN)) return 0;
  const kd = x * INV_LN2_N + ROUND - ROUND;
  const r = x - kd * LN2_N_HI - kd * LN2_N_LO;
  const k = kd | 0;
  const p = 1 + r * (1 + r * (0.5 + r * (1 / 6)));
  return POW2_NEG[-(k >> 11)]! * POW2_J[k & (N_EXP - 1)]! * p;
}

export interface FullRowOptions {
  /**
   * Multiplies the error margin (default 1). Tests raise it to force the give-up path; below 1
   * the exactness argument no longer holds.
   */
  marginScale?: number;
}

/** Rows decided here and rows given up (left to the full reference), since process start. */
export const fullRowStats = { fast: 0, gaveUp: 0 };

const NB = 65536; // buckets: the key's top 16 bits

/** Reused per-row buffers (one row at a time: JS is single-threaded and nothing here awaits). */
class Scratch {
  l = new Float32Array(0);
  bits = new Uint32Array(0);
  /** `bits` as int32: ibits[i] >> 16 is the float's top half as a small signed int */
  ibits = new Int32Array(0);
  readonly cnt = new Uint32Array(NB);
  readonly mass = new Float64Array(NB);
  /** nonempty buckets, from the top; pre[q]: the mass of the buckets before order[q] */
  readonly order = new Int32Array(NB);
  readonly ocnt = new Uint32Array(NB);
  /** cnt/mass hold a previous row's values (zeroed while its buckets are listed) */
  dirty = false;
  readonly pre = new Float64Array(NB + 1);
  packed = new Float64Array(0);
  ids = new Int32Array(0);
  w = new Float64Array(0);

  row(V: number): void {
    if (this.l.length < V) {
      this.l = new Float32Array(V);
      this.bits = new Uint32Array(this.l.buffer);
      this.ibits = new Int32Array(this.l.buffer);
    }
  }
  bucket(n: number): void {
    if (this.packed.length < n) {
      const cap = Math.max(n, 2 * this.packed.length, 1024);
      this.packed = new Float64Array(cap);
      this.ids = new Int32Array(cap);
      this.w = new Float64Array(cap);
    }
  }
}
const S = new Scratch();

/**
 * The monotone uint32 key of float32 bits: ascending key ↔ ascending value (−0 never stored).
 * Branch-free (negative: all bits flipped; positive: the sign bit set): the signs of a row's
 * values come in random order, and a mispredicted branch per token doubled the pass.
 */
function keyOf(bits: number): number {
  return (bits ^ ((bits >> 31) | 0x80000000)) >>> 0;
}

/**
 * The reference's token for one row (see referenceTokenFull), or null when this path leaves it
 * to the full reference: a decision within the error margin, a top value of +∞, or Math.exp not
 * monotone at the min-p threshold.
 * @param logits [vocab] the model's logits for this sequence (masked here by its constraint)
 * @param u uniform in [0, 1) (ignored when greedy)
 */
export function fullRowToken(
  logits: Float32Array,
  state: SamplingState,
  u: number,
  opts: FullRowOptions = {},
): number | null {
  const V = logits.length;
  const p = state.params;
  const mask = state.mask();
  const mods = state.modifiedTokens();
  S.row(V);
  const l = S.l;
  // (Each pass is its own function: V8 then optimizes it whole, with the feedback of every line,
  // instead of on-stack-replacing one loop of a long function and deoptimizing after it.)
  if (p.greedy) return fast(greedyToken(logits, state, mask, mods, l));

  // l = fround(x ÷ T) as state.scale, masked, modified tokens processed; lmax its maximum. Then
  // the weights and bucket masses (and the min-p and top-k thresholds). (Fusing the two passes
  // measured slower: the float store and its reload as bits stall.)
  const temp = Math.fround(p.temperature);
  const { cnt, mass } = S;
  if (S.dirty) {
    cnt.fill(0);
    mass.fill(0);
  }
  S.dirty = true;
  let loKey = 0;
  let lmax = scaleRow(logits, temp, l, V);
  if (mask) {
    applyMask(l, mask, V);
    lmax = maxOf(l, V);
  }
  if (mods.length > 0) {
    let rescan = false;
    for (const t of mods) {
      const raw = mask && !bit(mask, t) ? -Infinity : logits[t]!;
      const old = l[t]!;
      const lt = state.scale(state.process(t, raw)) + 0;
      l[t] = lt;
      if (old === lmax && lt < old) rescan = true;
      if (lt > lmax) lmax = lt;
    }
    if (rescan) lmax = maxOf(l, V);
  }
  // Every token masked (or NaN): the reference's sorted order is by id; decide takes the first.
  if (lmax === -Infinity) return fast(0);
  if (!(lmax < Infinity)) return giveUp(); // +∞: NaN weights; the full reference defines that

  // top-k: the kept set is {l ≥ the k-th largest l} (ties at the threshold kept). It commutes
  // with min-p's prefix (see decide), so both are key thresholds.
  if (p.topK > 0) loKey = kthLargestKey(S.bits, V, p.topK);
  if (p.minP === 0 && loKey === 0) bucketMasses(S.ibits, l, lmax, V, cnt, mass);
  else {
    const minKept = bucketMassesFiltered(S.bits, l, lmax, V, p.minP, loKey, cnt, mass);
    if (minKept < 0) return giveUp(); // exp not monotone at the min-p threshold (never seen)
    loKey = minKept;
  }

  // The kept buckets from the top, with the mass before each.
  const { order, ocnt, pre } = S;
  let nb = 0;
  let n = 0;
  pre[0] = 0;
  for (let b = keyOf(bitsOfF32(lmax)) >>> 16; b >= 0; b--)
    if (cnt[b]! > 0) {
      order[nb] = b;
      ocnt[nb] = cnt[b]!;
      pre[nb + 1] = pre[nb]! + mass[b]!;
      n += cnt[b]!;
      nb++;
      cnt[b] = 0; // leave them zero for the next row (no 768 KB fill per row)
      mass[b] = 0;
    }
  S.dirty = false;
  const Z = pre[nb]!;
  const gamma = (n * EPS) / (1 - n * EPS);
  const margin =
    (opts.marginScale ?? 1) *
    (2 * (4 * gamma * (1 + EXP_REL) + 2 * EXP_REL + 3 * EPS) * 1.01 * Z + V * 1e-300);

  const walk = new Walk(l, S.bits, lmax, loKey, order, pre, margin, V);
  // top-p: the cut is the first position whose prefix sum reaches p·Z (the top token always kept).
  let limQ = nb - 1;
  let limJ = -1; // −1: the bucket's last element
  let z2 = Z;
  if (p.topP < 1) {
    if (!walk.locate(p.topP * Z, limQ, limJ)) return giveUp();
    [limQ, limJ, z2] = [walk.q, walk.j, walk.at];
  }
  // The draw: the first kept position whose prefix sum exceeds u·Z.
  if (!walk.locate(u * z2, limQ, limJ)) return giveUp();
  return fast(walk.token());
}

/** Greedy: the first maximum of the processed logits (no temperature; NaN never wins). */
function greedyToken(
  logits: Float32Array,
  state: SamplingState,
  mask: Uint32Array | null,
  mods: readonly number[],
  l: Float32Array,
): number {
  const V = logits.length;
  l.set(logits);
  if (mask) applyMask(l, mask, V);
  for (const t of mods) l[t] = state.process(t, l[t]!);
  let best = 0;
  let bv = -Infinity;
  for (let i = 0; i < V; i++)
    if (l[i]! > bv) {
      best = i;
      bv = l[i]!;
    }
  return best;
}

/**
 * l = fround(x ÷ T), NaN as −∞, −0 as +0 (one key, the same weight); returns max l. fround(x ÷ T)
 * is monotone in x, so the maximum comes from the raw one.
 * @param logits [V]; l [≥ V] out
 */
function scaleRow(logits: Float32Array, temp: number, l: Float32Array, V: number): number {
  let xmax = -Infinity;
  let nan = false;
  for (let i = 0; i < V; i++) {
    const x = logits[i]!;
    l[i] = x / temp + 0; // the store rounds to float32
    if (x > xmax) xmax = x;
    else if (x !== x) nan = true;
  }
  if (nan) for (let i = 0; i < V; i++) if (l[i]! !== l[i]!) l[i] = -Infinity;
  return Math.fround(xmax / temp) + 0;
}

function maxOf(l: Float32Array, V: number): number {
  let m = -Infinity;
  for (let i = 0; i < V; i++) if (l[i]! > m) m = l[i]!;
  return m;
}

/**
 * Every token kept: cnt[b] and mass[b] = Σ fastExp(l − lmax) per bucket b (keyOf's top half,
 * from the signed top half of each float: no uint32 values past 2³¹, which V8 keeps as doubles).
 * @param ibits [V] int32 view of l's bits; l [V]
 */
function bucketMasses(
  ibits: Int32Array,
  l: Float32Array,
  lmax: number,
  V: number,
  cnt: Uint32Array,
  mass: Float64Array,
): void {
  for (let i = 0; i < V; i++) {
    const h = ibits[i]! >> 16;
    const b = (h ^ ((h >> 31) | 0x8000)) & 0xffff; // keyOf's top half, branch-free
    cnt[b]!++;
    mass[b]! += fastExp(l[i]! - lmax);
  }
}

/**
 * As bucketMasses over the tokens min-p keeps (W ≥ minP, W = Math.exp(l − lmax) as the reference)
 * with key ≥ loKey. Returns the kept set's lowest key (kept ⇔ key ≥ it), or −1 when min-p's kept
 * set is not a prefix of the sorted order (exp not monotone there).
 * @param bits [V] uint32 view of l; l [V]
 */
function bucketMassesFiltered(
  bits: Uint32Array,
  l: Float32Array,
  lmax: number,
  V: number,
  minP: number,
  loKey: number,
  cnt: Uint32Array,
  mass: Float64Array,
): number {
  let maxDrop = -1; // largest key min-p dropped, smallest it kept
  let minKept = 0x100000000;
  for (let i = 0; i < V; i++) {
    const key = keyOf(bits[i]!);
    const x = l[i]! - lmax;
    let w = fastExp(x);
    if (minP > 0) {
      // The reference drops W < minP with W = Math.exp: take it whenever fastExp is too close.
      if (Math.abs(w - minP) <= 4 * EXP_REL * minP) w = Math.exp(x);
      if (w < minP) {
        if (key > maxDrop) maxDrop = key;
        continue;
      }
      if (key < minKept) minKept = key;
    }
    if (key < loKey) continue;
    cnt[key >>> 16]!++;
    mass[key >>> 16]! += w;
  }
  if (minP === 0) return loKey;
  // min-p keeps a prefix of the sorted order iff exp is monotone here (checked, not assumed).
  if (maxDrop >= minKept) return -1;
  return Math.max(minKept, loKey);
}

function fast(token: number): number {
  fullRowStats.fast++;
  return token;
}

function giveUp(): null {
  fullRowStats.gaveUp++;
  return null;
}

function bit(mask: Uint32Array, t: number): boolean {
  return (((mask[t >>> 5] ?? 0) >>> (t & 31)) & 1) !== 0;
}

/** Tokens outside `mask` to −∞ (as maskedRow). @param l [V] */
function applyMask(l: Float32Array, mask: Uint32Array, V: number): void {
  for (let w = 0; w * 32 < V; w++) {
    const m = mask[w] ?? 0;
    if (m === -1 || m === 0xffffffff) continue;
    const end = Math.min(V, w * 32 + 32);
    for (let t = w * 32; t < end; t++) if (((m >>> (t & 31)) & 1) === 0) l[t] = -Infinity;
  }
}

const f32one = new Float32Array(1);
const u32one = new Uint32Array(f32one.buffer);
function bitsOfF32(x: number): number {
  f32one[0] = x;
  return u32one[0]!;
}

/** The key of the k-th largest l (1 ≤ k < V): a 16-bit histogram, then that bucket's keys sorted. */
function kthLargestKey(bits: Uint32Array, V: number, k: number): number {
  const cnt = S.cnt;
  cnt.fill(0);
  for (let i = 0; i < V; i++) cnt[keyOf(bits[i]!) >>> 16]!++;
  let b = NB - 1;
  let before = 0;
  while (before + cnt[b]! < k) before += cnt[b--]!;
  const m = cnt[b]!;
  S.bucket(m);
  const keys = new Uint32Array(S.packed.buffer, 0, m);
  let j = 0;
  for (let i = 0; i < V; i++) {
    const key = keyOf(bits[i]!);
    if (key >>> 16 === b) keys[j++] = key;
  }
  keys.sort();
  cnt.fill(0); // for the masses' pass
  return keys[m - (k - before)]!;
}

/**
 * The kept tokens of one bucket, in id order, packed as (0xffff − key's low half)·2³² + id: an
 * ascending sort of these is l descending, ties to the lower id.
 * @param ibits [V] int32 view of the row's float bits; bits [V] their uint32 view
 * @param hs the bucket's top 16 float bits as a signed int (ibits >> 16)
 * @returns how many were written to packed
 */
function gatherBucket(
  ibits: Int32Array,
  bits: Uint32Array,
  hs: number,
  loKey: number,
  V: number,
  packed: Float64Array,
): number {
  let n = 0;
  for (let i = 0; i < V; i++) {
    if (ibits[i]! >> 16 !== hs) continue;
    const key = keyOf(bits[i]!);
    if (key < loKey) continue;
    packed[n++] = (0xffff - (key & 0xffff)) * 2 ** 32 + i;
  }
  return n;
}

/**
 * Positions in the reference's sorted order, reached bucket by bucket: locate() finds the first
 * position whose prefix sum exceeds a threshold and proves it with the margin.
 */
class Walk {
  /** the last located position: index into order, index in the sorted bucket, prefix sum there */
  q = 0;
  j = 0;
  at = 0;
  private cached = -1; // bucket (index into order) held sorted in S.ids / S.w
  private size = 0;

  constructor(
    private readonly l: Float32Array,
    private readonly bits: Uint32Array,
    private readonly lmax: number,
    private readonly loKey: number,
    private readonly order: Int32Array,
    private readonly pre: Float64Array,
    private readonly margin: number,
    private readonly V: number,
  ) {}

  /**
   * The first position (at or before the limit) whose prefix sum exceeds theta, or the limit when
   * none does. False when the margin cannot prove it: the reference's sums could put it elsewhere.
   * @param limJ index in bucket limQ (−1: its last element)
   */
  locate(theta: number, limQ: number, limJ: number): boolean {
    const { pre, margin } = this;
    let q = 0;
    while (q < limQ && !(pre[q + 1]! > theta)) q++;
    this.sortBucket(q);
    const last = q === limQ ? (limJ < 0 ? this.size - 1 : limJ) : this.size - 1;
    let s = pre[q]!;
    let before = s;
    let j = 0;
    for (; j <= last; j++) {
      before = s;
      s += S.w[j]!;
      if (s > theta) break;
    }
    const isLimit = q === limQ && j >= last;
    if (j > last) {
      if (!isLimit) return false; // the bucket sums disagree with the walk: too close to call
      j = last;
    }
    // The reference's sum before this position is below theta, and at it above (unless it is the
    // limit, taken either way); position 0 has nothing before it.
    if ((q > 0 || j > 0) && !(before + margin < theta)) return false;
    if (!isLimit && !(s - margin > theta)) return false;
    [this.q, this.j, this.at] = [q, j, s];
    return true;
  }

  token(): number {
    return S.ids[this.j]!;
  }

  /** Bucket order[q]'s kept tokens sorted (l descending, ties to the lower id) with their W. */
  private sortBucket(q: number): void {
    if (this.cached === q) return;
    const b = this.order[q]!;
    const { l, bits, lmax, loKey, V } = this;
    // the bucket's floats' top 16 bits (the key's top half, undone), signed as ibits >> 16
    const hs = b >= 0x8000 ? b - 0x8000 : -1 - b;
    S.bucket(S.ocnt[q]!); // the pass that counted it kept the same tokens
    const packed = S.packed;
    const n = gatherBucket(S.ibits, bits, hs, loKey, V, packed);
    // Sort by (key low half descending, id): all keys equal leaves them in id order already.
    const k0 = Math.floor(packed[0]! / 2 ** 32);
    let same = true;
    for (let j = 1; j < n && same; j++) same = Math.floor(packed[j]! / 2 ** 32) === k0;
    if (!same) packed.subarray(0, n).sort();
    for (let j = 0; j < n; j++) {
      const id = packed[j]! % 2 ** 32;
      S.ids[j] = id;
      S.w[j] = Math.exp(l[id]! - lmax); // the reference's weight, bit for bit
    }
    this.cached = q;
    this.size = n;
  }
}
