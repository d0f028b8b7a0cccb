// The device sampler: picks the next token of several sequences from a [batch, vocab] f32 logits
// tensor on the model's device, bringing only small results to the host (no vocabulary-size copy
// except in the rare fallback below).
//
// On the device, per step (whole batch unless noted):
//   topk(logits, K)          K = min(vocab, 1024) candidates per row: 8 KB per row to the host.
//   embedding(ids, logits)   a row gather: the raw logits of the tokens a processor changes (bias,
//                            penalties, min-tokens), so they join the candidates.
//   lse statistics           (rows asking for logprobs) each row as [vocab / c, c] chunks, c | vocab,
//                            c ≈ √vocab: chunk maxima (topk k=1) and top probabilities 1/Σexp(x − m)
//                            (softmax, topk k=1): 8 bytes per chunk, ≈ 4 KB per row.
//   tail statistics          (rows with neither top-k nor min-p, i.e. whose whole tail may stay in
//                            play) the row copied, candidates set to −inf (copyRows), scaled by 1/T,
//                            and the same chunk statistics: the tail's mass Σ exp(l − lmax).
// On the host: bias, penalties, temperature, min-p, top-k, top-p and the draw, over the candidates,
// with the same code and float64 arithmetic as the reference (state.ts, decide.ts).
// Constrained rows (response_format): a copy of the logits with their disallowed tokens at −inf
// comes first (applyMasks: only id lists go up), and all of the above reads it.
//
// Exactness. The "tail" (tokens not among the candidates) is unmodified and ranks at or below the
// K-th raw logit b, so a candidate whose processed value exceeds f(b) (f: ÷T, monotone) precedes
// every tail token. decide() takes a decision only when the candidates settle it:
//   - greedy, min-p, top-k, and a top-p/draw inside a kept set the candidates close: the same
//     items, order and float64 sums as the reference: the same token, bit for bit.
//   - top-p without a truncating top-k/min-p, and plain temperature sampling: Z includes the
//     tail's mass from the device, with a bound on its float32 error (tailMass); a cut or draw
//     that lies within that bound of a cumulative edge is not taken.
//   - anything else (the draw lands in the tail, the top-k boundary or the argmax may be a tail
//     token, the tail is partly kept): the row comes to the host and the reference runs on it with
//     the same uniform (counted in `fallbacks`; its probability is the tail's share of the draw).
// So the token equals the reference's whenever the device's float32 sums stay within the stated
// bound (c·2⁻²⁴ relative per chunk, the textbook bound for a sum of c positive terms).
// Logprobs: x_token − lse, lse = M + log Σ_j exp(m_j − M)/pmax_j; measured error ≤ 1e-5 (1e-6 typ.)
// at vocab 262144 on the CPU backend; the top-n ids and their order are exact.
import { HostReadback, Tensor, ops, type Device, type DTypeName } from "@gemma3/native";
import { maskCount } from "./constraint/mask.js";
import { decide, sortByValue, type Tail } from "./decide.js";
import { referenceToken, type SampleResult } from "./reference.js";
import type { SamplingState } from "./state.js";

const f32 = Math.fround;

export interface SamplerOptions {
  /** Candidates per row from the device top-k (default and maximum 1024, the kernel's limit). */
  maxCandidates?: number;
}

export interface SamplePick {
  /** Row of the logits tensor. */
  row: number;
  state: SamplingState;
}

/**
 * Chunk length for the logsumexp statistics: the divisor of `vocab` closest to √vocab (at least
 * 256 where one exists), or the whole row when vocab has no divisor in [32, vocab).
 */
export function chunkSize(vocab: number): number {
  const target = Math.max(256, Math.sqrt(vocab));
  let best = vocab;
  for (let d = 1; d * d <= vocab; d++)
    if (vocab % d === 0)
      for (const c of [d, vocab / d])
        if (c >= 32 && Math.abs(Math.log(c / target)) < Math.abs(Math.log(best / target))) best = c;
  return best;
}

interface RowData {
  /** top-K raw values and ids (descending, ties to lower id) */
  vals: Float32Array;
  ids: Int32Array;
  /** raw logits of the modified tokens, in `mod` order */
  modRaw: Float32Array;
  mod: number[];
}

export class Sampler {
  readonly maxCandidates: number;
  /** Rows that came to the host in full since construction (see the exactness notes). */
  fallbacks = 0;
  /** Rows sampled since construction. */
  rows = 0;
  /** Milliseconds spent deciding on the host (after the device results arrived), fallbacks included. */
  hostMs = 0;
  private readonly bufs = new Map<string, Tensor>();
  private busy = false;
  private device: Device | undefined;
  private negInfBuf: Tensor | undefined;
  /** launchGreedy's host copies: two, so one step's read can be in flight behind the next's */
  private readonly readbacks: (HostReadback | undefined)[] = [undefined, undefined];
  private nextReadback = 0;

  constructor(opts: SamplerOptions = {}) {
    const k = opts.maxCandidates ?? 1024;
    if (!Number.isInteger(k) || k < 1 || k > 1024)
      throw new RangeError(`Sampler: maxCandidates must be in [1, 1024], got ${k}`);
    this.maxCandidates = k;
  }

  /**
   * Samples one token for each pick and records it in the pick's state (as sampleReference does).
   * One call at a time per Sampler (its device buffers are reused).
   * @param logits [batch, vocab] f32 on any device
   */
  async sample(logits: Tensor, picks: readonly SamplePick[]): Promise<SampleResult[]> {
    const [B, V] = checkPicks("Sampler.sample", logits, picks);
    if (picks.length === 0) return [];
    if (this.busy) throw new Error("Sampler.sample: a previous call is still running");
    this.busy = true;
    try {
      return await this.run(logits, picks, B, V);
    } finally {
      this.busy = false;
    }
  }

  /**
   * Whether `state` picks its token by the argmax alone, as `sample`'s plain greedy batch does:
   * greedy, no logprobs, no constraint, no logit processor. `ahead` > 0: for the token sampled
   * that many tokens after the next one (a pipelined step runs before the host has the token in
   * flight): then no processor may be set at all, and min-tokens must be over by then.
   */
  static plainGreedy(state: SamplingState, ahead = 0): boolean {
    const p = state.params;
    if (!p.greedy || p.logprobs >= 0 || state.constraint) return false;
    if (ahead === 0) return state.modifiedTokens().length === 0;
    return (
      p.logitBias.size === 0 &&
      p.repetitionPenalty === 1 &&
      p.frequencyPenalty === 0 &&
      p.presencePenalty === 0 &&
      state.numOutput + ahead >= p.minTokens
    );
  }

  /**
   * `sample`'s plain greedy path split in two, for pipelined decoding: enqueues the argmax of every
   * row of `logits` and its host copy (HostReadback) now and returns at once. `ids` can feed the
   * next step on the device before anything is read; `read()` resolves once the argmax has run
   * (not the ops enqueued after it) and records each pick's token in its state, as `sample` does.
   * Every pick must be Sampler.plainGreedy. Call `read()` once, in launch order; at most two
   * launches may wait unread.
   * @param logits [batch, vocab] f32
   * @returns ids: [batch] i32 on the device, valid for the ops enqueued before the next call
   */
  launchGreedy(
    logits: Tensor,
    picks: readonly SamplePick[],
  ): { ids: Tensor; read: () => Promise<SampleResult[]> } {
    const [B] = checkPicks("Sampler.launchGreedy", logits, picks);
    if (this.busy) throw new Error("Sampler.launchGreedy: a sample call is still running");
    this.useDevice(logits.device);
    this.rows += picks.length;
    const am = ops.argmax(logits, this.buf("argmax", [B], "i32"));
    const k = this.nextReadback;
    this.nextReadback = 1 - k;
    let rb = this.readbacks[k];
    if (!rb || rb.capacity < 4 * B) {
      // Its previous read was awaited before this launch (two in flight at most).
      rb?.dispose();
      rb = new HostReadback(logits.device, 4 * Math.max(B, 64));
      this.readbacks[k] = rb;
    }
    rb.enqueue(am);
    let done = false;
    const read = async (): Promise<SampleResult[]> => {
      if (done) throw new Error("Sampler.launchGreedy: read() called twice");
      done = true;
      const ids = await rb.read();
      const t0 = performance.now();
      const out = picks.map(({ row, state }) => {
        const token = ids[row]!;
        state.record(token);
        return { token };
      });
      this.hostMs += performance.now() - t0;
      return out;
    };
    return { ids: am, read };
  }

  private useDevice(device: Device): void {
    if (this.device !== device) {
      this.dispose();
      this.device = device;
    }
  }

  private async run(input: Tensor, picks: readonly SamplePick[], B: number, V: number) {
    this.rows += picks.length;
    this.useDevice(input.device);
    // Constrained rows: their logits masked on the device first; everything below (candidates,
    // logprobs, fallbacks) then reads the masked logits, as vLLM's sampler does.
    const masks = picks.map(({ state }) => state.mask());
    const logits = masks.some((m) => m !== null)
      ? this.applyMasks(input, picks, masks, B, V)
      : input;
    // One uniform per non-greedy pick, drawn first: the reference draws the same way.
    const us = picks.map(({ state }) => (state.params.greedy ? 0 : state.rng.next()));
    const mods = picks.map(({ state }) => state.modifiedTokens());

    // Plain greedy batch: the argmax alone (4 bytes per row).
    if (
      picks.every(
        ({ state }, i) => state.params.greedy && state.params.logprobs < 0 && mods[i]!.length === 0,
      )
    ) {
      const am = ops.argmax(logits, this.buf("argmax", [B], "i32"));
      const ids = (await am.toArray()) as Int32Array;
      return picks.map(({ row, state }) => {
        const token = ids[row]!;
        state.record(token);
        return { token };
      });
    }

    // Candidates: enough for every row's decision to settle among them in the common case.
    // (At least the top logprobs asked for: validated <= min(V, 1024).)
    const K = Math.max(
      Math.min(
        V,
        this.maxCandidates,
        Math.max(...picks.map(({ state }, i) => candidatesNeeded(state, mods[i]!.length, V))),
      ),
      ...picks.map(({ state }) => state.params.logprobs),
    );
    // Stream order lets every buffer below be reused across calls: each op reads before the next
    // call's ops write.
    const top = ops.topk(logits, K, {
      values: this.buf("topv", [B, K], "f32"),
      indices: this.buf("topi", [B, K], "i32"),
    });

    // Raw logits of modified tokens: a row gather from logits seen as [B·V, 1].
    const gather: number[] = [];
    picks.forEach(({ row }, i) => {
      for (const t of mods[i]!) gather.push(row * V + t);
    });
    let gathered: Tensor | null = null;
    if (gather.length > 0) {
      const idsT = this.buf("gids", [gather.length], "i32");
      idsT.write(Int32Array.from(gather));
      gathered = ops.embedding(idsT, logits.view([B * V, 1]), 1, {
        out: this.buf("gval", [gather.length, 1], "f32"),
      });
    }

    // Chunk statistics of the whole row at T = 1, for logprobs.
    const c = chunkSize(V);
    const nc = V / c;
    let cmax: Tensor | null = null;
    let pmax: Tensor | null = null;
    if (picks.some(({ state }) => state.params.logprobs >= 0)) {
      const chunks = logits.view([B * nc, c]);
      cmax = this.chunkMax(chunks, "lse");
      const pv = this.buf("probs", [B * nc, c], "f32");
      ops.softmax(chunks, pv);
      pmax = this.chunkMax(pv, "lsep");
    }
    // Tail statistics for rows whose whole tail may stay in play (no top-k, no min-p): the row
    // with its candidates set to −inf, at the row's temperature. Summing the tail alone keeps the
    // float32 error relative to the tail's mass, not the row's.
    const massRows = picks
      .map((p, i) => ({ ...p, i }))
      .filter(
        ({ state: s }) => !s.params.greedy && s.params.topK === 0 && s.params.minP === 0 && K < V,
      );
    let tmax: Tensor | null = null;
    let tpmax: Tensor | null = null;
    if (massRows.length > 0) {
      const R = massRows.length;
      const maxMod = Math.max(...massRows.map(({ i }) => mods[i]!.length));
      const negInf = this.buf("neginf", [Math.max(K, maxMod), 1], "f32");
      negInf.write(new Float32Array(negInf.numel).fill(-Infinity));
      const modIds = massRows.flatMap(({ i }) => mods[i]!);
      const modT = modIds.length > 0 ? this.buf("modids", [modIds.length], "i32") : null;
      modT?.write(Int32Array.from(modIds));
      const tails = this.buf("tails", [R * V], "f32");
      let off = 0;
      massRows.forEach(({ row, state, i }, j) => {
        const t = tails.slice(j * V, j * V + V);
        t.copyFrom(logits.slice(row, row + 1));
        const rows = t.view([V, 1]);
        ops.copyRows(negInf.slice(0, K), rows, top.indices.slice(row, row + 1).view([K]));
        const m = mods[i]!.length;
        if (m > 0) ops.copyRows(negInf.slice(0, m), rows, modT!.slice(off, off + m));
        off += m;
        if (state.params.temperature !== 1) ops.scale(t, 1 / state.params.temperature, t);
      });
      const chunks = tails.view([R * nc, c]);
      tmax = this.chunkMax(chunks, "tail");
      ops.softmax(chunks, chunks);
      tpmax = this.chunkMax(chunks, "tailp");
    }

    const [vals, ids, gvals, cm, pm, tm, tp] = await Promise.all([
      top.values.toArray() as Promise<Float32Array>,
      top.indices.toArray() as Promise<Int32Array>,
      gathered?.toArray() as Promise<Float32Array> | undefined,
      cmax?.toArray() as Promise<Float32Array> | undefined,
      pmax?.toArray() as Promise<Float32Array> | undefined,
      tmax?.toArray() as Promise<Float32Array> | undefined,
      tpmax?.toArray() as Promise<Float32Array> | undefined,
    ]);

    const tHost = performance.now();
    const out: SampleResult[] = [];
    let g = 0;
    for (let i = 0; i < picks.length; i++) {
      const { row, state } = picks[i]!;
      const mod = mods[i]!;
      const data: RowData = {
        vals: vals.subarray(row * K, row * K + K),
        ids: ids.subarray(row * K, row * K + K),
        modRaw: gvals ? gvals.subarray(g, g + mod.length) : new Float32Array(0),
        mod,
      };
      g += mod.length;
      const mr = massRows.findIndex((m) => m.i === i);
      const tailStats =
        mr >= 0
          ? {
              max: tm!.subarray(mr * nc, mr * nc + nc),
              pmax: tp!.subarray(mr * nc, mr * nc + nc),
              c,
            }
          : null;

      let token = decideRow(state, data, K < V, us[i]!, tailStats);
      let fullRow: Float32Array | undefined;
      if (token === null) {
        this.fallbacks++;
        fullRow = (await logits.slice(row, row + 1).toArray()) as Float32Array;
        token = referenceToken(fullRow, state, us[i]!);
      }
      state.record(token);
      const res: SampleResult = { token };
      if (fullRow) res.fullRow = true;
      const n = state.params.logprobs;
      if (n >= 0) {
        const lse = chunkLse(
          cm!.subarray(row * nc, row * nc + nc),
          pm!.subarray(row * nc, row * nc + nc),
        );
        const j = data.ids.indexOf(token);
        const x =
          j >= 0 ? data.vals[j]! : fullRow ? fullRow[token]! : data.modRaw[mod.indexOf(token)]!;
        res.logprob = x - lse;
        res.top = Array.from({ length: n }, (_, j) => ({
          token: data.ids[j]!,
          logprob: data.vals[j]! - lse,
        }));
      }
      out.push(res);
    }
    this.hostMs += performance.now() - tHost;
    return out;
  }

  /**
   * A copy of the logits with each constrained row's disallowed tokens at −inf. Per row the
   * smaller side of the mask goes up as flat indices (row·V + id): the allowed ids (row set to
   * −inf, their logits gathered back), or the disallowed ids (scattered to −inf). So a step
   * uploads at most V/2 ids per row: a few hundred in structural JSON states, a few thousand
   * inside strings — never the full-vocabulary f32 mask.
   * @param logits [B, V] f32
   * @returns [B, V] f32 (a reused buffer)
   */
  private applyMasks(
    logits: Tensor,
    picks: readonly SamplePick[],
    masks: readonly (Uint32Array | null)[],
    B: number,
    V: number,
  ): Tensor {
    const out = this.buf("masked", [B, V], "f32");
    out.copyFrom(logits);
    const keep: number[] = [];
    const drop: number[] = [];
    picks.forEach(({ row }, i) => {
      const m = masks[i];
      if (!m) return;
      const base = row * V;
      if (maskCount(m) <= V / 2) {
        out.slice(row, row + 1).copyFrom(this.negInf(V).view([1, V]));
        for (let w = 0; w < m.length; w++) {
          let bits = m[w]!;
          while (bits !== 0) {
            const b = 31 - Math.clz32(bits);
            bits &= ~(1 << b);
            if (w * 32 + b < V) keep.push(base + w * 32 + b);
          }
        }
      } else
        for (let w = 0; w < m.length; w++) {
          let bits = ~m[w]!;
          while (bits !== 0) {
            const b = 31 - Math.clz32(bits);
            bits &= ~(1 << b);
            if (w * 32 + b < V) drop.push(base + w * 32 + b);
          }
        }
    });
    const flat = out.view([B * V, 1]);
    if (keep.length > 0) {
      const ids = this.buf("mkeep", [keep.length], "i32");
      ids.write(Int32Array.from(keep));
      const vals = ops.embedding(ids, logits.view([B * V, 1]), 1, {
        out: this.buf("mkeepv", [keep.length, 1], "f32"),
      });
      ops.copyRows(vals, flat, ids);
    }
    if (drop.length > 0) {
      const ids = this.buf("mdrop", [drop.length], "i32");
      ids.write(Int32Array.from(drop));
      ops.copyRows(this.negInf(drop.length).view([drop.length, 1]), flat, ids);
    }
    return out;
  }

  /** n × −inf on the device (a buffer written once and grown when needed). */
  private negInf(n: number): Tensor {
    if (!this.negInfBuf || this.negInfBuf.numel < n) {
      this.negInfBuf?.dispose();
      const cap = Math.max(n, 2 * (this.negInfBuf?.numel ?? 0));
      this.negInfBuf = Tensor.empty([cap], "f32", this.device!);
      this.negInfBuf.write(new Float32Array(cap).fill(-Infinity));
    }
    return this.negInfBuf.slice(0, n);
  }

  /** Row maxima of [rows, c] (top-k with k = 1) into a named buffer. */
  private chunkMax(x: Tensor, name: string): Tensor {
    const rows = x.shape[0]!;
    return ops.topk(x, 1, {
      values: this.buf(name + "v", [rows, 1], "f32"),
      indices: this.buf(name + "i", [rows, 1], "i32"),
    }).values;
  }

  /** A reusable device buffer of at least `shape`'s size, as a view of that shape. */
  private buf(name: string, shape: number[], dtype: DTypeName): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    let t = this.bufs.get(name);
    if (!t || t.numel < n || t.dtypeName !== dtype) {
      const cap = Math.max(n, 2 * (t?.numel ?? 0));
      t?.dispose(); // freed after the queued work that reads it
      t = Tensor.empty([cap], dtype, this.device!);
      this.bufs.set(name, t);
    }
    return t.slice(0, n).view(shape);
  }

  dispose(): void {
    for (const t of this.bufs.values()) t.dispose();
    this.bufs.clear();
    for (const rb of this.readbacks) rb?.dispose();
    this.readbacks.fill(undefined);
    this.negInfBuf?.dispose();
    this.negInfBuf = undefined;
  }
}

/**
 * log Σ_i exp(x_i) of one row from its chunk statistics: m_j the chunk maxima and
 * pmax_j = 1 / Σ_{i∈j} exp(x_i − m_j) (the chunk softmax's top value), combined in float64.
 */
export function chunkLse(chunkMax: ArrayLike<number>, pmax: ArrayLike<number>): number {
  let M = -Infinity;
  for (let j = 0; j < chunkMax.length; j++) if (chunkMax[j]! > M) M = chunkMax[j]!;
  if (!(M > -Infinity)) return M;
  let s = 0;
  for (let j = 0; j < chunkMax.length; j++)
    if (chunkMax[j]! > -Infinity) s += Math.exp(chunkMax[j]! - M) / pmax[j]!;
  return M + Math.log(s);
}

/**
 * Σ_tail exp(l − lmax) from the tail's chunk statistics (maxima m_j and top probabilities pmax_j
 * of the masked, temperature-scaled row), with an error bound: each chunk is a float32 sum of c
 * terms (≤ (c − 1)·2⁻²⁴ relative, plus expf's few ulp), and at T ≠ 1 the device scaled by
 * fround(1/T) where the host divides by T (≤ 1.5 ulp of l per logit: |l|·2⁻²² relative in exp;
 * terms 40 below the chunk max are negligible). Doubled for margin.
 */
export function tailMass(
  st: { max: ArrayLike<number>; pmax: ArrayLike<number>; c: number },
  lmax: number,
  temperature: number,
): { mass: number; err: number } {
  let mass = 0;
  let big = 0;
  for (let j = 0; j < st.max.length; j++) {
    const m = st.max[j]!;
    if (!(m > -Infinity)) continue; // a chunk of candidates only
    mass += Math.exp(m - lmax) / st.pmax[j]!;
    big = Math.max(big, Math.abs(m) + 40);
  }
  const rel = (st.c + 8) * 2 ** -24 + (temperature === 1 ? 0 : big * 2 ** -22);
  return { mass, err: 2 * rel * mass };
}

/** Candidates a row needs for its decision to settle among them (usually). */
function candidatesNeeded(state: SamplingState, modified: number, V: number): number {
  const p = state.params;
  const lp = Math.max(p.logprobs, 1);
  // Greedy: one unmodified top token beats every tail token.
  if (p.greedy) return Math.max(lp, modified > 0 ? modified + 2 : 1);
  // top-k: k of them above the K-th value, with room for ties at the k-th (bf16 logits tie often).
  if (p.topK > 0) return Math.max(lp, Math.max(2 * p.topK, p.topK + 32) + modified);
  return V; // min-p, top-p, plain temperature: as many as allowed
}

/**
 * The token decided among the candidates, or null when the tail could change it.
 * Candidates: the top K raw logits (sorted: value descending, ties to the lower id) and the
 * modified tokens with their raw logits. Every tail token is unmodified with raw logit <= b (the
 * K-th value), so its processed value is <= f(b).
 */
function decideRow(
  state: SamplingState,
  d: RowData,
  hasTail: boolean,
  u: number,
  tailStats: { max: Float32Array; pmax: Float32Array; c: number } | null,
): number | null {
  const p = state.params;
  const { vals, ids, mod, modRaw } = d;
  const K = vals.length;
  const b = vals[K - 1]!;
  const modSet = mod.length > 0 ? new Set(mod) : null;
  const modProc = mod.map((t, j) => state.process(t, modRaw[j]!));

  if (p.greedy) {
    // The first unmodified top-K token precedes every tail token (top-k's order and tie rule).
    let best = -1;
    let bv = -Infinity;
    let modified = false;
    for (let j = 0; j < K; j++)
      if (!modSet?.has(ids[j]!)) {
        best = ids[j]!;
        bv = vals[j]! === vals[j]! ? vals[j]! : -Infinity;
        break;
      }
    mod.forEach((t, j) => {
      const v = modProc[j]! === modProc[j]! ? modProc[j]! : -Infinity;
      if (best < 0 || v > bv || (v === bv && t < best)) [best, bv, modified] = [t, v, true];
    });
    return !hasTail || (!modified && best >= 0) || bv > b ? best : null;
  }

  // Sampling: list the candidates above the bound f(b), sorted; the others join the tail.
  const bound = hasTail ? state.scale(b) : -Infinity;
  const belowBound: number[] = []; // l of candidates that rank with the tail
  const uTok: number[] = [];
  const uL: number[] = [];
  let sorted = true;
  for (let j = 0; j < K; j++) {
    const t = ids[j]!;
    if (modSet?.has(t)) continue;
    const l = state.scale(vals[j]!);
    if (hasTail && !(l > bound)) {
      belowBound.push(l); // top-K is sorted, f monotone: the rest are below too
      for (let r = j + 1; r < K; r++)
        if (!modSet?.has(ids[r]!)) belowBound.push(state.scale(vals[r]!));
      break;
    }
    const n = uL.length;
    // f can round two values to one: then the lower id must come first.
    if (n > 0 && uL[n - 1] === l && uTok[n - 1]! > t) sorted = false;
    uTok.push(t);
    uL.push(l);
  }
  const mTok: number[] = [];
  const mL: number[] = [];
  mod.forEach((t, j) => {
    const l = state.scale(modProc[j]!);
    if (hasTail && !(l > bound)) belowBound.push(l);
    else {
      mTok.push(t);
      mL.push(l);
    }
  });
  if (!sorted) {
    // Rare: re-sort everything.
    const lOf = new Map<number, number>();
    uTok.forEach((t, k) => lOf.set(t, uL[k]!));
    mTok.forEach((t, k) => lOf.set(t, mL[k]!));
    const tok = sortByValue(Int32Array.from([...uTok, ...mTok]), (t) => lOf.get(t)!);
    return decide(
      tok,
      Float64Array.from(tok, (t) => lOf.get(t)!),
      tok.length,
      p,
      u,
      tailOf(),
    );
  }
  if (mTok.length > 0) {
    // Merge the (few) modified candidates into the sorted unmodified ones.
    const order = sortByValue(
      Int32Array.from(mTok, (_, k) => k),
      (k) => mL[k]!,
    );
    const n = uTok.length + mTok.length;
    const tok = new Int32Array(n);
    const ls = new Float64Array(n);
    let a = 0;
    let c = 0;
    for (let k = 0; k < n; k++) {
      const mk = c < order.length ? order[c]! : -1;
      const takeM =
        mk >= 0 &&
        (a >= uTok.length || mL[mk]! > uL[a]! || (mL[mk] === uL[a] && mTok[mk]! < uTok[a]!));
      if (takeM) {
        tok[k] = mTok[mk]!;
        ls[k] = mL[mk]!;
        c++;
      } else {
        tok[k] = uTok[a]!;
        ls[k] = uL[a]!;
        a++;
      }
    }
    return decide(tok, ls, n, p, u, tailOf());
  }
  return decide(uTok, Float64Array.from(uL), uTok.length, p, u, tailOf());

  function tailOf(): Tail | null {
    if (!hasTail) return null;
    return {
      bound,
      mass: (lmax) => {
        if (!tailStats) return undefined;
        const m = tailMass(tailStats, lmax, p.temperature);
        for (const l of belowBound) m.mass += Math.exp(l - lmax);
        return m;
      },
    };
  }
}

/** [batch, vocab] of f32 `logits`, after checking each pick's row and vocabulary against them. */
function checkPicks(fn: string, logits: Tensor, picks: readonly SamplePick[]): [number, number] {
  if (logits.dtypeName !== "f32" || logits.shape.length !== 2)
    throw new TypeError(`${fn}: logits must be [batch, vocab] f32, got ${logits}`);
  const [B = 0, V = 0] = logits.shape;
  for (const { row, state } of picks) {
    if (!Number.isInteger(row) || row < 0 || row >= B)
      throw new RangeError(`${fn}: row ${row} outside [0, ${B})`);
    if (state.vocabSize !== V)
      throw new RangeError(`${fn}: state for vocab ${state.vocabSize}, logits have ${V}`);
  }
  return [B, V];
}
