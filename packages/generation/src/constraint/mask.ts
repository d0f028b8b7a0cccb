// Constrained decoding: the tokens a JSON automaton allows next, as a bitset over the vocabulary.
//
// Per step, the mask walks the automaton over the vocabulary's byte trie (vocab.ts): a node's
// state is its parent's advanced by one byte, and a refused byte drops the node's whole subtree,
// so structural states (after `{`, `,`, `:`) visit a few thousand nodes, not 262144 tokens. Inside
// a free JSON string, where nearly every token is allowed, the plain tokens are taken as a
// precomputed bitset (those of at most maxLength − length code points, when bounded) and only
// the others (quotes, backslashes, control characters, byte tokens) are walked.
//
// What the automaton enforces beyond RFC 8259 syntax and the schema:
//   - whitespace: at most `maxWhitespace` (default 2) consecutive bytes of space/\n/\r/\t wherever
//     JSON allows whitespace, including before the root value; none after it;
//   - object keys in the schema's `properties` order; optional ones may be skipped; no key twice;
//     extra keys only where additionalProperties allows them (absent counts as false when
//     properties are listed, as xgrammar's strict mode), after or between the listed ones;
//   - strings: well-formed UTF-8 (a byte-fallback token may end mid-character; the next token must
//     continue it), no \u escape of a surrogate (D800–DFFF), so length = code points;
//   - bounded numbers (minimum, …) are written without an exponent;
//   - stop tokens are allowed exactly when the root value is complete, and then nothing else once
//     it is closed (vLLM/xgrammar end on EOS the same way).
import { GenerationError } from "../params.js";
import {
  advance,
  initialState,
  isComplete,
  isTerminated,
  plainRun,
  type PState,
} from "./automaton.js";
import type { JsonGrammar } from "./grammar.js";
import type { ByteTrie, TokenVocab } from "./vocab.js";

/**
 * A per-request constraint on the tokens a sequence may sample (stateful).
 * Masks are bitsets over the vocabulary: token t is allowed iff bit (t & 31) of word t >>> 5 is set.
 */
export interface TokenConstraint {
  /** The tokens allowed next (owned by the constraint; valid until the next accept). */
  allowed(): Uint32Array;
  /** Moves past a sampled token; throws if it was not allowed. */
  accept(token: number): void;
  /** The value is complete (a stop token may come now). */
  isComplete(): boolean;
  /** Complete, and only a stop token may follow (or nothing, after one was accepted). */
  isTerminated(): boolean;
}

/** Whether bit t of a mask is set. */
export function maskHas(mask: Uint32Array, t: number): boolean {
  return ((mask[t >>> 5]! >>> (t & 31)) & 1) === 1;
}

/** Number of tokens a mask allows. */
export function maskCount(mask: Uint32Array): number {
  let c = 0;
  for (let i = 0; i < mask.length; i++) {
    let v = mask[i]!;
    v = v - ((v >>> 1) & 0x55555555);
    v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
    c += (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
  }
  return c;
}

export class JsonConstraint implements TokenConstraint {
  private state: PState;
  private mask: Uint32Array | null = null;
  private stopped = false;
  private readonly stopIds: readonly number[];
  /** Milliseconds spent computing masks, and how many (for measurements). */
  maskMs = 0;
  masks = 0;

  constructor(
    readonly grammar: JsonGrammar,
    readonly vocab: TokenVocab,
    stopTokenIds: readonly number[],
  ) {
    this.state = initialState(grammar.root, grammar.maxWhitespace);
    this.stopIds = [...new Set(stopTokenIds)].filter(
      (t) => Number.isInteger(t) && t >= 0 && t < vocab.size,
    );
  }

  allowed(): Uint32Array {
    if (!this.mask) {
      const t0 = performance.now();
      this.mask = this.compute();
      this.maskMs += performance.now() - t0;
      this.masks++;
    }
    return this.mask;
  }

  private compute(): Uint32Array {
    const bits = new Uint32Array(this.vocab.words);
    if (this.stopped) return bits;
    const r = plainRun(this.state);
    if (r > 0) {
      bits.set(this.vocab.plainUpTo(r));
      walk(this.vocab.nonPlain, this.state, bits);
    } else walk(this.vocab.full, this.state, bits);
    // Stop ids: exactly when complete (a stop id that is also text is not text here).
    const done = isComplete(this.state);
    for (const t of this.stopIds)
      if (done) bits[t >>> 5]! |= 1 << (t & 31);
      else bits[t >>> 5]! &= ~(1 << (t & 31));
    return bits;
  }

  accept(token: number): void {
    if (this.stopped) throw new Error("JsonConstraint.accept after a stop token");
    if (this.stopIds.includes(token)) {
      if (!isComplete(this.state))
        throw new GenerationError(
          `stop token ${token} before the JSON value is complete`,
          "E_INVALID",
        );
      this.stopped = true;
      this.mask = null;
      return;
    }
    const s = this.vocab.bytes[token];
    let st: PState | null = s === undefined ? null : this.state;
    for (let i = 0; st && i < s!.length; i++) st = advance(st, s!.charCodeAt(i));
    if (!st)
      throw new GenerationError(
        `token ${token} is not allowed by the response format here`,
        "E_INVALID",
      );
    this.state = st;
    this.mask = null;
  }

  isComplete(): boolean {
    return this.stopped || isComplete(this.state);
  }

  isTerminated(): boolean {
    return this.stopped || isTerminated(this.state);
  }
}

/** Sets the bits of every token in trie `t` that the automaton accepts from `start`. */
function walk(t: ByteTrie, start: PState, bits: Uint32Array): void {
  const states: PState[] = new Array<PState>(t.maxDepth + 1);
  states[0] = start;
  const { n, byte, depth, skip, tokStart, tokEnd, ids } = t;
  let i = 1;
  while (i < n) {
    const d = depth[i]!;
    const s = advance(states[d - 1]!, byte[i]!);
    if (s === null) {
      i = skip[i]!;
      continue;
    }
    states[d] = s;
    for (let k = tokStart[i]!; k < tokEnd[i]!; k++) {
      const id = ids[k]!;
      bits[id >>> 5]! |= 1 << (id & 31);
    }
    i++;
  }
}
