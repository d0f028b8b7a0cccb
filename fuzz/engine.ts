// A small mutational fuzzer for the TypeScript parsers (Jazzer.js, the maintained JS fuzzer, ships
// libFuzzer builds that need glibc ≥ 2.38 and cannot load on this Debian 12 machine; its older
// releases download their binaries at install time). Design after libFuzzer/AFL:
//  1. coverage phase: each input runs under V8 block coverage (inspector Profiler precise
//     coverage, counters reset on every take); an input that reaches a new (block, hit-count
//     bucket) of the target's own files joins the corpus. ~0.3 ms an input, so it is kept short.
//  2. bulk phase: the same mutators without coverage at parser speed, guided by the outcome (which
//     check rejected the input, normalised), so each distinct rejection path stays in the corpus.
// Every run is deterministic for a given seed, corpus and input count.
import { Session } from "node:inspector";
import { performance } from "node:perf_hooks";

/** xoshiro128**: small, fast and seedable (Blackman & Vigna). */
export class Rng {
  private s = new Uint32Array(4);
  constructor(seed: number) {
    // splitmix32 expands the seed into the four state words.
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }
  u32(): number {
    const s = this.s;
    const r = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = s[1]! << 9;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return r;
  }
  /** Uniform integer in [0, n). */
  int(n: number): number {
    return n <= 1 ? 0 : Math.floor((this.u32() / 4294967296) * n);
  }
  chance(p: number): boolean {
    return this.u32() / 4294967296 < p;
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
}
function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** Integer values at the edges of every field width: the classic AFL "interesting" values. */
export const INTERESTING_U64: readonly bigint[] = [
  0n,
  1n,
  2n,
  7n,
  8n,
  31n,
  32n,
  63n,
  64n,
  127n,
  128n,
  255n,
  256n,
  4095n,
  4096n,
  65535n,
  65536n,
  0x7fffffffn,
  0x80000000n,
  0xffffffffn,
  0x100000000n,
  (1n << 53n) - 1n,
  1n << 53n,
  (1n << 53n) + 1n,
  (1n << 63n) - 1n,
  1n << 63n,
  (1n << 64n) - 1n,
];

/** Generic byte-level mutations (libFuzzer's MutationDispatcher, abridged). */
export function havoc(rng: Rng, input: Uint8Array, dict: readonly Uint8Array[] = []): Uint8Array {
  let b: Uint8Array = Uint8Array.from(input);
  const ops = 1 + rng.int(6);
  for (let k = 0; k < ops; k++) {
    const n = b.length;
    switch (rng.int(12)) {
      case 0: // flip a bit
        if (n) b[rng.int(n)]! ^= 1 << rng.int(8);
        break;
      case 1: // random byte
        if (n) b[rng.int(n)] = rng.int(256);
        break;
      case 2: {
        // delete a run
        if (n < 2) break;
        const at = rng.int(n);
        const len = 1 + rng.int(Math.min(n - at, rng.chance(0.8) ? 8 : 256));
        b = concat(b.subarray(0, at), b.subarray(at + len));
        break;
      }
      case 3: {
        // insert random bytes
        const at = rng.int(n + 1);
        const ins = new Uint8Array(1 + rng.int(rng.chance(0.8) ? 8 : 128));
        for (let i = 0; i < ins.length; i++) ins[i] = rng.int(256);
        b = concat(b.subarray(0, at), ins, b.subarray(at));
        break;
      }
      case 4: {
        // duplicate a run
        if (!n) break;
        const at = rng.int(n);
        const len = 1 + rng.int(Math.min(n - at, 64));
        const to = rng.int(n + 1);
        b = concat(b.subarray(0, to), b.slice(at, at + len), b.subarray(to));
        break;
      }
      case 5: // interesting integer of width 1/2/4/8, little- or big-endian
      case 6: {
        const w = rng.pick([1, 2, 4, 8]);
        if (n < w) break;
        const at = rng.int(n - w + 1);
        writeInt(b, at, w, rng.pick(INTERESTING_U64), rng.chance(0.85));
        break;
      }
      case 7: {
        // add or subtract a small delta to an integer field
        const w = rng.pick([1, 2, 4, 8]);
        if (n < w) break;
        const at = rng.int(n - w + 1);
        const v = readInt(b, at, w) + BigInt(rng.int(33) - 16);
        writeInt(b, at, w, v, true);
        break;
      }
      case 8: {
        // overwrite with a dictionary token
        if (!dict.length || !n) break;
        const t = rng.pick(dict);
        const at = rng.int(n);
        b = concat(b.subarray(0, at), t, b.subarray(Math.min(n, at + t.length)));
        break;
      }
      case 9: {
        // insert a dictionary token
        if (!dict.length) break;
        const at = rng.int(n + 1);
        b = concat(b.subarray(0, at), rng.pick(dict), b.subarray(at));
        break;
      }
      case 10: // truncate
        if (n) b = b.slice(0, rng.int(n));
        break;
      default: {
        // copy a run over another place
        if (n < 2) break;
        const from = rng.int(n);
        const to = rng.int(n);
        const len = 1 + rng.int(Math.min(n - from, n - to, 32));
        b.copyWithin(to, from, from + len);
      }
    }
  }
  return b;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function writeInt(b: Uint8Array, at: number, w: number, v: bigint, le: boolean): void {
  v = BigInt.asUintN(w * 8, v);
  for (let i = 0; i < w; i++) {
    b[le ? at + i : at + w - 1 - i] = Number(v & 0xffn);
    v >>= 8n;
  }
}
function readInt(b: Uint8Array, at: number, w: number): bigint {
  let v = 0n;
  for (let i = w - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[at + i]!);
  return v;
}

/** What one input did: `feature` names the path (e.g. the error code and normalised message). */
export interface Outcome {
  feature: string;
  /** Largest buffer the parser allocated for this input, where the parser reports it. */
  allocated?: number;
}

/** An invariant broken by an input (a crash, a verdict mismatch, an unbounded allocation). */
export class Finding extends Error {
  override name = "Finding";
}

export interface Target {
  name: string;
  /** Valid files to start from. */
  seeds(): Promise<Uint8Array[]> | Uint8Array[];
  /** A fresh structured input (valid or subtly broken). */
  generate(rng: Rng): Uint8Array;
  /** A structure-aware mutation of `input`. */
  mutate(rng: Rng, input: Uint8Array): Uint8Array;
  /**
   * Runs one input. Must return normally for every input the parser handles as designed (typed
   * errors included) and throw for anything else: that input is a finding.
   */
  run(input: Uint8Array): Promise<Outcome> | Outcome;
  /** Byte tokens for the generic mutator. */
  dictionary?: readonly Uint8Array[];
  /** Files (URL suffixes) whose block coverage guides the coverage phase. */
  coverageFiles: readonly string[];
  /** Inputs larger than this are cut before they run (keeps the corpus small). */
  maxInputBytes: number;
  /** An input slower than this twice in a row is a finding (a hang). */
  hangMs: number;
}

export interface FuzzOptions {
  seed: number;
  /** Inputs in the bulk phase. */
  inputs: number;
  /** Inputs in the coverage phase (0: none). */
  coverageInputs: number;
  /** Extra starting inputs (a saved corpus). */
  corpus?: Uint8Array[];
  /** Stop after this many findings. */
  maxFindings?: number;
  /** Called every `progressEvery` inputs. */
  onProgress?: (s: FuzzStats) => void;
  progressEvery?: number;
}

export interface FindingRecord {
  input: Uint8Array;
  /** The input after minimisation (same error name and first message line). */
  minimized: Uint8Array;
  error: string;
}

export interface FuzzStats {
  target: string;
  inputs: number;
  coverageInputs: number;
  /** Distinct outcomes seen. */
  features: number;
  /** Distinct coverage features (blocks × hit-count buckets) seen in the coverage phase. */
  coverageFeatures: number;
  corpusSize: number;
  findings: FindingRecord[];
  /** Slowest single input, in ms, its size, and the input itself. */
  maxMs: number;
  maxMsBytes: number;
  slowest?: Uint8Array;
  /** Largest input run, in bytes. */
  maxInputBytes: number;
  /** Largest allocation reported by the parser, and the input size it came with. */
  maxAllocated: number;
  maxAllocatedInputBytes: number;
  /** Largest ratio allocation / input bytes reported (bounded-allocation invariant). */
  maxAllocatedRatio: number;
  /** Process memory high-water marks (sampled), in bytes. */
  peakRss: number;
  peakHeapUsed: number;
  peakArrayBuffers: number;
  /** RSS after the seeds ran, before fuzzing: the growth is peakRss − baseRss. */
  baseRss: number;
  elapsedMs: number;
  /** Outcome → count, for the report. */
  outcomes: Map<string, number>;
}

const CORPUS_CAP = 4096;

/** Coverage-phase helper: V8 block coverage of the target's own files, reset after every take. */
class Coverage {
  private session = new Session();
  private seen = new Set<string>();
  constructor(private readonly files: readonly string[]) {
    this.session.connect();
    this.post("Profiler.enable");
    this.post("Profiler.startPreciseCoverage", { callCount: true, detailed: true });
    this.take(); // discard what ran before
  }
  private post(method: string, params?: object): unknown {
    // The in-process inspector session answers synchronously.
    let out: unknown;
    let err: unknown;
    this.session.post(method, params, (e, r) => {
      err = e;
      out = r;
    });
    if (err) throw err;
    return out;
  }
  get size(): number {
    return this.seen.size;
  }
  /** Every block range ever reported, per script (V8 reports a block only where its count
   *  differs from the enclosing one, so a block's count is that of the innermost reported range
   *  containing it). */
  private blocks = new Map<string, [number, number][]>();
  /** Number of new (block, hit-count bucket) features since the last call. */
  take(): number {
    type Range = { startOffset: number; endOffset: number; count: number };
    const r = this.post("Profiler.takePreciseCoverage") as {
      result: { url: string; functions: { ranges: Range[] }[] }[];
    };
    let fresh = 0;
    for (const s of r.result) {
      if (!this.files.some((f) => s.url.endsWith(f))) continue;
      const ranges = s.functions.flatMap((f) => f.ranges);
      let known = this.blocks.get(s.url);
      if (!known) this.blocks.set(s.url, (known = []));
      for (const rg of ranges)
        if (!known.some(([a, b]) => a === rg.startOffset && b === rg.endOffset))
          known.push([rg.startOffset, rg.endOffset]);
      for (const [a, b] of known) {
        let count = 0;
        let span = Infinity;
        for (const rg of ranges)
          if (rg.startOffset <= a && rg.endOffset >= b && rg.endOffset - rg.startOffset < span) {
            span = rg.endOffset - rg.startOffset;
            count = rg.count;
          }
        if (count === 0) continue;
        const key = `${s.url}:${a}:${b}:${bucket(count)}`;
        if (!this.seen.has(key)) {
          this.seen.add(key);
          fresh++;
        }
      }
    }
    return fresh;
  }
  close(): void {
    this.post("Profiler.stopPreciseCoverage");
    this.session.disconnect();
  }
}

/** AFL's hit-count buckets. */
function bucket(n: number): number {
  return n <= 3 ? n : n <= 7 ? 4 : n <= 15 ? 8 : n <= 31 ? 16 : n <= 127 ? 32 : 128;
}

/** Runs one input under the target's invariants; returns the outcome or the finding's text. */
async function runOne(
  t: Target,
  input: Uint8Array,
): Promise<{ outcome?: Outcome; error?: string; ms: number }> {
  const t0 = performance.now();
  try {
    const outcome = await t.run(input);
    return { outcome, ms: performance.now() - t0 };
  } catch (e) {
    const err = e as Error;
    const text = `${err?.name ?? typeof e}: ${err?.message ?? String(e)}\n${err?.stack ?? ""}`;
    return { error: text, ms: performance.now() - t0 };
  }
}

function sameError(a: string, b: string): boolean {
  return a.split("\n")[0]!.replace(/\d+/g, "#") === b.split("\n")[0]!.replace(/\d+/g, "#");
}

/** Shrinks a failing input by deleting chunks (ddmin-like) while it fails the same way. */
export async function minimize(t: Target, input: Uint8Array, error: string): Promise<Uint8Array> {
  let cur = input;
  for (let chunk = Math.max(1, cur.length >> 1); chunk >= 1; chunk >>= 1) {
    for (let at = 0; at < cur.length;) {
      const cand = concat(cur.subarray(0, at), cur.subarray(at + chunk));
      const r = await runOne(t, cand);
      if (r.error && sameError(r.error, error)) cur = cand;
      else at += chunk;
    }
  }
  return cur;
}

/** Fuzzes one target; never throws for a finding (they are returned in the stats). */
export async function fuzz(t: Target, o: FuzzOptions): Promise<FuzzStats> {
  const rng = new Rng(o.seed);
  const start = performance.now();
  const stats: FuzzStats = {
    target: t.name,
    inputs: 0,
    coverageInputs: 0,
    features: 0,
    coverageFeatures: 0,
    corpusSize: 0,
    findings: [],
    maxMs: 0,
    maxMsBytes: 0,
    maxInputBytes: 0,
    maxAllocated: 0,
    maxAllocatedInputBytes: 0,
    maxAllocatedRatio: 0,
    peakRss: 0,
    peakHeapUsed: 0,
    peakArrayBuffers: 0,
    baseRss: 0,
    elapsedMs: 0,
    outcomes: new Map(),
  };
  const corpus: Uint8Array[] = [];
  const maxFindings = o.maxFindings ?? 5;
  const sample = () => {
    const m = process.memoryUsage();
    stats.peakRss = Math.max(stats.peakRss, m.rss);
    stats.peakHeapUsed = Math.max(stats.peakHeapUsed, m.heapUsed);
    stats.peakArrayBuffers = Math.max(stats.peakArrayBuffers, m.arrayBuffers);
  };

  /** Runs, records, and keeps the input if it found something new. */
  const exec = async (input: Uint8Array, coverage?: Coverage): Promise<void> => {
    if (input.length > t.maxInputBytes) input = input.subarray(0, t.maxInputBytes);
    const r = await runOne(t, input);
    const fresh = coverage ? coverage.take() : 0;
    if (r.ms > stats.maxMs) {
      stats.maxMs = r.ms;
      stats.maxMsBytes = input.length;
      stats.slowest = Uint8Array.from(input);
    }
    if (r.error === undefined && r.ms > t.hangMs) {
      // Timing on a shared machine is noisy: a hang must repeat.
      const again = await runOne(t, input);
      if (again.ms > t.hangMs)
        r.error = `Finding: hang: ${Math.round(r.ms)} ms then ${Math.round(again.ms)} ms (budget ${t.hangMs} ms)`;
    }
    stats.maxInputBytes = Math.max(stats.maxInputBytes, input.length);
    if (r.error !== undefined) {
      if (stats.findings.length < maxFindings) {
        const minimized = await minimize(t, input, r.error);
        stats.findings.push({ input: Uint8Array.from(input), minimized, error: r.error });
      }
      return;
    }
    const out = r.outcome!;
    if (out.allocated !== undefined && out.allocated > stats.maxAllocated) {
      stats.maxAllocated = out.allocated;
      stats.maxAllocatedInputBytes = input.length;
    }
    if (out.allocated !== undefined && input.length > 0)
      stats.maxAllocatedRatio = Math.max(stats.maxAllocatedRatio, out.allocated / input.length);
    const n = stats.outcomes.get(out.feature);
    stats.outcomes.set(out.feature, (n ?? 0) + 1);
    if ((n === undefined || fresh > 0) && corpus.length < CORPUS_CAP)
      corpus.push(Uint8Array.from(input));
  };

  const next = (): Uint8Array => {
    const c = rng.int(10);
    if (c === 0 || corpus.length === 0) return t.generate(rng);
    const base = corpus[rng.int(corpus.length)]!;
    if (c <= 4) return t.mutate(rng, base);
    if (c <= 8) return havoc(rng, base, t.dictionary);
    // splice: head of one, tail of another
    const other = corpus[rng.int(corpus.length)]!;
    return concat(
      base.subarray(0, rng.int(base.length + 1)),
      other.subarray(rng.int(other.length + 1)),
    );
  };

  // Block counters exist only in code compiled after coverage starts: start before any input.
  const cov = o.coverageInputs > 0 ? new Coverage(t.coverageFiles) : undefined;
  for (const s of [...(await t.seeds()), ...(o.corpus ?? [])]) await exec(s, cov);
  sample();
  stats.baseRss = stats.peakRss;

  if (cov) {
    for (let i = 0; i < o.coverageInputs && stats.findings.length < maxFindings; i++) {
      await exec(next(), cov);
      stats.coverageInputs++;
      if ((i & 1023) === 0) sample();
    }
    stats.coverageFeatures = cov.size;
    cov.close();
  }

  const every = o.progressEvery ?? 100_000;
  for (let i = 0; i < o.inputs && stats.findings.length < maxFindings; i++) {
    await exec(next());
    stats.inputs++;
    if ((i & 4095) === 0) sample();
    if (o.onProgress && (i + 1) % every === 0) {
      stats.elapsedMs = performance.now() - start;
      stats.features = stats.outcomes.size;
      stats.corpusSize = corpus.length;
      o.onProgress(stats);
    }
  }
  sample();
  stats.features = stats.outcomes.size;
  stats.corpusSize = corpus.length;
  stats.elapsedMs = performance.now() - start;
  (stats as FuzzStats & { corpus: Uint8Array[] }).corpus = corpus;
  return stats;
}

/** The corpus a run ended with (inputs that found a new outcome or new coverage). */
export function corpusOf(s: FuzzStats): Uint8Array[] {
  return (s as FuzzStats & { corpus?: Uint8Array[] }).corpus ?? [];
}

/** "E_BOUNDS tensor count # cannot fit …": digits and quoted names folded so paths group. */
export function normalise(msg: string): string {
  return msg
    .replace(/"(?:[^"\\]|\\.)*"/g, '"…"')
    .replace(/0x[0-9a-f]+/gi, "0x#")
    .replace(/-?\d+(\.\d+)?(e[+-]?\d+)?/gi, "#")
    .slice(0, 160);
}
