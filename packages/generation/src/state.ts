// One sequence's sampling state: its resolved parameters, its own generator, and what the logits
// processors read (prompt tokens, output token counts). Both samplers (host reference and device)
// process a logit through `process` and `scale` here, so they compute the very same numbers.
import type { TokenConstraint } from "./constraint/mask.js";
import { resolveSampling, type ResolvedSampling, type SamplingParams } from "./params.js";
import { Rng } from "./rng.js";

const f32 = Math.fround;

export interface SamplingStateOptions {
  vocabSize: number;
  /** Prompt ids (the repetition penalty counts them as seen). */
  promptIds?: readonly number[];
  /** Stop ids masked while fewer than minTokens tokens are out (vLLM's MinTokensLogitsProcessor). */
  stopTokenIds?: readonly number[];
  /**
   * Tokens outside its mask get −inf before anything else (vLLM applies the grammar bitmask to
   * the logits before its sampler, so logprobs are of the masked distribution too); each sampled
   * token is accepted by it.
   */
  constraint?: TokenConstraint | null;
}

export class SamplingState {
  readonly params: ResolvedSampling;
  readonly rng: Rng;
  readonly vocabSize: number;
  readonly constraint: TokenConstraint | null;
  private readonly prompt: ReadonlySet<number>;
  private readonly counts = new Map<number, number>();
  private readonly minStop: readonly number[];
  private numOutput_ = 0;
  // float32 constants as vLLM's tensors hold them
  private readonly temp: number;
  private readonly rep: number;
  private readonly repInv: number;
  private readonly freq: number;
  private readonly pres: number;

  constructor(params: SamplingParams, o: SamplingStateOptions) {
    this.vocabSize = o.vocabSize;
    this.constraint = o.constraint ?? null;
    this.params = resolveSampling(params, o.vocabSize);
    this.rng = new Rng(this.params.seed);
    const inVocab = (t: number) => Number.isInteger(t) && t >= 0 && t < o.vocabSize;
    this.prompt =
      this.params.repetitionPenalty !== 1
        ? new Set((o.promptIds ?? []).filter(inVocab))
        : new Set<number>();
    this.minStop =
      this.params.minTokens > 0 ? [...new Set(o.stopTokenIds ?? [])].filter(inVocab) : [];
    this.temp = f32(this.params.temperature);
    this.rep = f32(this.params.repetitionPenalty);
    this.repInv = f32(1 / this.rep);
    this.freq = f32(this.params.frequencyPenalty);
    this.pres = f32(this.params.presencePenalty);
  }

  /** Tokens sampled so far. */
  get numOutput(): number {
    return this.numOutput_;
  }
  /** How often `token` was sampled. */
  count(token: number): number {
    return this.counts.get(token) ?? 0;
  }

  /** Token ids whose logit `process` changes at this step (every other logit passes unchanged). */
  modifiedTokens(): number[] {
    const p = this.params;
    const s = new Set<number>(p.logitBias.keys());
    if (this.numOutput_ < p.minTokens) for (const t of this.minStop) s.add(t);
    if (p.repetitionPenalty !== 1) for (const t of this.prompt) s.add(t);
    if (p.repetitionPenalty !== 1 || p.frequencyPenalty !== 0 || p.presencePenalty !== 0)
      for (const t of this.counts.keys()) s.add(t);
    return [...s];
  }

  /**
   * The logit of `token` after vLLM's processors, in its order and float32 steps: logit bias and
   * min-tokens mask, then repetition (× 1/r if > 0, else × r; for tokens of prompt or output),
   * frequency (−= f·count) and presence (−= p if count > 0). Temperature comes after (`scale`).
   */
  process(token: number, x: number): number {
    const p = this.params;
    let v = x;
    const b = p.logitBias.get(token);
    if (b !== undefined) v = f32(v + f32(b));
    if (this.numOutput_ < p.minTokens && this.minStop.includes(token)) v = -Infinity;
    const c = this.counts.get(token) ?? 0;
    if (p.repetitionPenalty !== 1 && (c > 0 || this.prompt.has(token)))
      v = v > 0 ? f32(v * this.repInv) : f32(v * this.rep);
    if (c > 0) {
      if (this.freq !== 0) v = f32(v - f32(this.freq * c));
      if (this.pres !== 0) v = f32(v - this.pres);
    }
    return v;
  }

  /** Temperature (vLLM: logits.div_(temp)); NaN ranks last, as −∞. Not used when greedy. */
  scale(v: number): number {
    const l = f32(v / this.temp);
    return l === l ? l : -Infinity;
  }

  /** The constraint's mask for this step (bit t set: token t allowed), or null without one. */
  mask(): Uint32Array | null {
    return this.constraint ? this.constraint.allowed() : null;
  }

  /**
   * The constraint leaves nothing to sample: its value is closed and no stop token may come (none
   * given, or min-tokens still masks them). The sequence has to end without another token.
   */
  constraintStuck(): boolean {
    const c = this.constraint;
    if (!c || !c.isTerminated()) return false;
    const m = c.allowed();
    for (let w = 0; w < m.length; w++) {
      let bits = m[w]!;
      while (bits !== 0) {
        const t = w * 32 + (31 - Math.clz32(bits));
        bits &= ~(1 << (t & 31));
        if (!(this.numOutput_ < this.params.minTokens && this.minStop.includes(t))) return false;
      }
    }
    return true;
  }

  /** Counts a sampled token (the samplers call it once per token they return). */
  record(token: number): void {
    this.constraint?.accept(token);
    this.counts.set(token, (this.counts.get(token) ?? 0) + 1);
    this.numOutput_++;
  }
}
