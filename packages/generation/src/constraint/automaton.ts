// A byte-level pushdown automaton for JSON values that match a compiled schema (grammar.ts's
// nodes). The text is read as UTF-8 bytes, so a byte-fallback token (<0xE2>) that ends mid-way
// through a character is a step like any other: strings accept only well-formed UTF-8, outside
// strings only JSON's ASCII. States are immutable (a linked stack of frames), so the token-mask
// walk (mask.ts) branches from one state into many without copying.
//
// Grammar: RFC 8259 (json.org) — value, object, array, string (escapes \" \\ \/ \b \f \n \r \t
// \uXXXX; raw bytes >= 0x20), number -?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?, true/false/null.
// Our restrictions on top (documented in mask.ts's header): whitespace runs are bounded, \u
// escapes of surrogates (D800–DFFF) are refused, keys come in the schema's order.

/** A compiled schema node (see grammar.ts). Nodes may form cycles ($ref recursion). */
export type Node =
  UnionNode | ObjectNode | ArrayNode | StringNode | NumberNode | LiteralNode | RefNode;

export interface UnionNode {
  readonly k: "union";
  readonly id: number;
  readonly alts: readonly Node[];
}
export interface ObjectProp {
  readonly name: string;
  /** The key as it must appear between the quotes (JSON.stringify's escaping), bytes as latin1. */
  readonly key: string;
  readonly node: Node;
  readonly required: boolean;
}
export interface ObjectNode {
  readonly k: "object";
  readonly id: number;
  /** Emitted in this order; optional ones may be skipped. */
  readonly props: readonly ObjectProp[];
  /** Schema of keys not in props (any string but those names), or null: none allowed. */
  readonly extra: Node | null;
}
export interface ArrayNode {
  readonly k: "array";
  readonly id: number;
  /** Schemas of the first items (prefixItems). */
  readonly prefix: readonly Node[];
  /** Schema of the items after the prefix, or null: none. */
  readonly items: Node | null;
  readonly minItems: number;
  readonly maxItems: number;
}
export interface StringNode {
  readonly k: "string";
  readonly id: number;
  /** Length bounds in code points of the decoded string (an escape counts one). */
  readonly minLength: number;
  readonly maxLength: number;
}
export interface NumberNode {
  readonly k: "number";
  readonly id: number;
  readonly integer: boolean;
  /** Bounds (±Infinity: none); a bounded number is written without an exponent. */
  readonly min: number;
  readonly max: number;
  readonly exclusiveMin: boolean;
  readonly exclusiveMax: boolean;
}
export interface LiteralNode {
  readonly k: "literal";
  readonly id: number;
  /**
   * The accepted texts exactly (JSON.stringify of enum/const values; "true", "null"), UTF-8 bytes
   * as latin1, sorted (code unit order = byte order) and distinct.
   */
  readonly texts: readonly string[];
}
export interface RefNode {
  readonly k: "ref";
  readonly id: number;
  target: Node | undefined;
}

// ---- states ---------------------------------------------------------------------------------

/** One frame of the stack: what is being parsed. Immutable. */
export abstract class Frame {
  /** Consumes byte b with this frame on top of `st`; null if b cannot come next. */
  abstract step(st: Stack, b: number): PState | null;
  /** A child value below this frame is complete: this frame's state after it. */
  resume(_st: Stack): PState | null {
    return null;
  }
  /** The value of this frame may end here without a closing byte (numbers, some literals). */
  canEndImplicitly(): boolean {
    return false;
  }
  /**
   * Plain string text this frame accepts as is — the most code points of text without `"`, `\`
   * and control characters that keep it in the same lexical state — or -1 when none / unknown.
   * (The mask's fast path: see mask.ts.)
   */
  plainRun(): number {
    return -1;
  }
  /** Identity of the frame's state (to merge equal alternatives of a union). */
  abstract key(): string;
}

export class Stack {
  private key_: string | undefined;
  constructor(
    readonly f: Frame,
    readonly up: Stack | null,
  ) {}
  key(): string {
    return (this.key_ ??= this.f.key() + "|" + (this.up ? this.up.key() : ""));
  }
}

/** Several parses alive at once (anyOf alternatives that accept the same text so far). */
export class Multi {
  constructor(readonly alts: readonly Stack[]) {}
}

export type PState = Stack | Multi;

/** The state after byte b, or null when b cannot come next. */
export function advance(s: PState, b: number): PState | null {
  if (s instanceof Stack) return s.f.step(s, b);
  const out: Stack[] = [];
  for (const a of s.alts) collect(out, a.f.step(a, b));
  return merge(out);
}

function collect(out: Stack[], r: PState | null): void {
  if (r === null) return;
  if (r instanceof Stack) out.push(r);
  else for (const a of r.alts) out.push(a);
}

/** One state from alternatives: equal stacks (by key) merged. */
function merge(out: Stack[]): PState | null {
  if (out.length === 0) return null;
  if (out.length === 1) return out[0]!;
  const seen = new Map<string, Stack>();
  for (const a of out) if (!seen.has(a.key())) seen.set(a.key(), a);
  return seen.size === 1 ? out[0]! : new Multi([...seen.values()]);
}

/** The frame below `st` resumes after st's value completed. */
function pop(st: Stack): PState | null {
  return st.up ? st.up.f.resume(st.up) : null;
}

/** Whether the document may end here (the root value complete). */
export function isComplete(s: PState): boolean {
  if (s instanceof Multi) return s.alts.some(stackComplete);
  return stackComplete(s);
}
function stackComplete(st: Stack): boolean {
  if (st.f instanceof RootFrame) return st.f.done;
  if (!st.f.canEndImplicitly()) return false;
  const p = pop(st);
  return p !== null && isComplete(p);
}

/** Whether nothing but the end can follow (the root value closed). */
export function isTerminated(s: PState): boolean {
  if (s instanceof Multi) return s.alts.every((a) => a.f instanceof RootFrame && a.f.done);
  return s.f instanceof RootFrame && s.f.done;
}

/** Plain text (code points) the state accepts as is (see Frame.plainRun), or -1. */
export function plainRun(s: PState): number {
  return s instanceof Stack ? s.f.plainRun() : -1;
}

/** The state before any byte: a root value of `node`, after at most `maxWs` whitespace bytes. */
export function initialState(node: Node, maxWs: number): PState {
  return new Stack(new RootFrame(node, maxWs, false, 0), null);
}

// ---- lexing helpers -------------------------------------------------------------------------

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

export function isWs(b: number): boolean {
  return b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
}
function isDigit(b: number): boolean {
  return b >= 0x30 && b <= 0x39;
}
function isHex(b: number): boolean {
  return isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
}

/** lexStep results besides a new lexical state */
const LEX_BAD = -1;
const LEX_CLOSE = -2;

/**
 * String-content lexer: state 0 plain; 1 after `\`; 2 \u first hex digit; 3/4 second digit
 * (4: after D, only 0–7: no surrogates); 5, 6 third, fourth digit; UTF-8 continuation states
 * 7 (one more 80–BF), 8 (two), 9 (three), 10 (after E0: A0–BF), 11 (after ED: 80–9F),
 * 12 (after F0: 90–BF), 13 (after F4: 80–8F) — the Unicode well-formedness table (Table 3-7).
 * Returns the next state, LEX_CLOSE for the closing quote, LEX_BAD otherwise.
 */
export function lexStep(ls: number, b: number): number {
  switch (ls) {
    case 0:
      if (b === QUOTE) return LEX_CLOSE;
      if (b === BACKSLASH) return 1;
      if (b < 0x20) return LEX_BAD;
      if (b < 0x80) return 0;
      if (b >= 0xc2 && b <= 0xdf) return 7;
      if (b === 0xe0) return 10;
      if (b === 0xed) return 11;
      if (b >= 0xe1 && b <= 0xef) return 8;
      if (b === 0xf0) return 12;
      if (b === 0xf4) return 13;
      if (b >= 0xf1 && b <= 0xf3) return 9;
      return LEX_BAD;
    case 1:
      if (b === 0x75) return 2; // u
      return b === QUOTE ||
        b === BACKSLASH ||
        b === 0x2f ||
        b === 0x62 ||
        b === 0x66 ||
        b === 0x6e ||
        b === 0x72 ||
        b === 0x74
        ? 0
        : LEX_BAD;
    case 2:
      if (b === 0x44 || b === 0x64) return 4;
      return isHex(b) ? 3 : LEX_BAD;
    case 3:
      return isHex(b) ? 5 : LEX_BAD;
    case 4:
      return b >= 0x30 && b <= 0x37 ? 5 : LEX_BAD;
    case 5:
      return isHex(b) ? 6 : LEX_BAD;
    case 6:
      return isHex(b) ? 0 : LEX_BAD;
    case 7:
      return b >= 0x80 && b <= 0xbf ? 0 : LEX_BAD;
    case 8:
      return b >= 0x80 && b <= 0xbf ? 7 : LEX_BAD;
    case 9:
      return b >= 0x80 && b <= 0xbf ? 8 : LEX_BAD;
    case 10:
      return b >= 0xa0 && b <= 0xbf ? 7 : LEX_BAD;
    case 11:
      return b >= 0x80 && b <= 0x9f ? 7 : LEX_BAD;
    case 12:
      return b >= 0x90 && b <= 0xbf ? 8 : LEX_BAD;
    case 13:
      return b >= 0x80 && b <= 0x8f ? 8 : LEX_BAD;
  }
  return LEX_BAD;
}

// ---- values ---------------------------------------------------------------------------------

function deref(n: Node): Node {
  let guard = 0;
  while (n.k === "ref") {
    if (n.target === undefined || ++guard > 64) throw new Error("unresolved $ref");
    n = n.target;
  }
  return n;
}

/**
 * Starts a value of `node` with its first byte b, above `up` (the frame waiting for it); maxWs is
 * the whitespace bound containers carry on.
 */
function startValue(node: Node, b: number, up: Stack, maxWs: number): PState | null {
  const n = deref(node);
  switch (n.k) {
    case "union": {
      const out: Stack[] = [];
      for (const a of n.alts) collect(out, startValue(a, b, up, maxWs));
      return merge(out);
    }
    case "object":
      return b === 0x7b ? new Stack(new ObjectFrame(n, maxWs, OP.Open, 0, 0, "", 0, -1), up) : null;
    case "array":
      return b === 0x5b ? new Stack(new ArrayFrame(n, maxWs, AP.Open, 0, 0), up) : null;
    case "string":
      return b === QUOTE ? new Stack(new StringFrame(n, 0, 0), up) : null;
    case "number":
      return b === 0x2d || isDigit(b) ? NumberFrame.start(n).step(null, b, up) : null;
    case "literal":
      return LiteralFrame.start(n).stepFrom(b, null, up);
  }
  return null;
}

/** The frame at the bottom: one value, then nothing. */
class RootFrame extends Frame {
  constructor(
    readonly node: Node,
    readonly maxWs: number,
    readonly done: boolean,
    readonly ws: number,
  ) {
    super();
  }
  step(st: Stack, b: number): PState | null {
    if (this.done) return null;
    if (isWs(b))
      return this.ws < this.maxWs
        ? new Stack(new RootFrame(this.node, this.maxWs, false, this.ws + 1), null)
        : null;
    return startValue(this.node, b, st, this.maxWs);
  }
  override resume(): PState {
    return new Stack(new RootFrame(this.node, this.maxWs, true, 0), null);
  }
  key(): string {
    return `R${this.done ? 1 : 0},${this.ws}`;
  }
}

/** Where an object is. */
const enum OP {
  /** after `{` */
  Open,
  /** inside a key */
  Key,
  /** after a key, before `:` */
  Colon,
  /** after `:`, before the value */
  Value,
  /** after a value: `,` or `}` */
  After,
  /** after `,`: a key */
  Comma,
}

class ObjectFrame extends Frame {
  constructor(
    readonly node: ObjectNode,
    readonly maxWs: number,
    readonly phase: OP,
    readonly ws: number,
    /** index of the next property that may come (earlier ones were written or skipped) */
    readonly next: number,
    /** the key so far (its raw bytes, latin1), while phase is Key */
    readonly kb: string,
    /** lexical state of the key (lexStep) */
    readonly ls: number,
    /** the value being parsed: a property index, or -1 for an extra key */
    readonly cur: number,
  ) {
    super();
  }

  private with(phase: OP, ws: number, next = this.next, kb = "", ls = 0, cur = this.cur) {
    return new ObjectFrame(this.node, this.maxWs, phase, ws, next, kb, ls, cur);
  }

  /** No required property left from `next` on: `}` may come. */
  private canClose(): boolean {
    const p = this.node.props;
    for (let i = this.next; i < p.length; i++) if (p[i]!.required) return false;
    return true;
  }

  /** Properties that may come next: next … the first required one (inclusive). */
  private eligibleEnd(): number {
    const p = this.node.props;
    let i = this.next;
    while (i < p.length && !p[i]!.required) i++;
    return Math.min(i + 1, p.length);
  }

  /** Some key may start (a property is left, or extra keys are allowed). */
  private canKey(): boolean {
    return this.next < this.node.props.length || this.node.extra !== null;
  }

  step(st: Stack, b: number): PState | null {
    const up = st.up!;
    switch (this.phase) {
      case OP.Open:
      case OP.Comma:
      case OP.Colon:
      case OP.After:
        if (isWs(b))
          return this.ws < this.maxWs ? new Stack(this.with(this.phase, this.ws + 1), up) : null;
        if (this.phase === OP.Colon)
          return b === 0x3a ? new Stack(this.with(OP.Value, 0), up) : null;
        if (this.phase === OP.After) {
          if (b === 0x2c) return this.canKey() ? new Stack(this.with(OP.Comma, 0), up) : null;
          if (b === 0x7d) return this.canClose() ? pop(st) : null;
          return null;
        }
        if (b === 0x7d && this.phase === OP.Open) return this.canClose() ? pop(st) : null;
        if (b === QUOTE && this.canKey())
          return new Stack(this.with(OP.Key, 0, this.next, "", 0), up);
        return null;
      case OP.Key:
        return this.keyStep(st, b);
      case OP.Value: {
        if (isWs(b))
          return this.ws < this.maxWs ? new Stack(this.with(OP.Value, this.ws + 1), up) : null;
        const node = this.cur >= 0 ? this.node.props[this.cur]!.node : this.node.extra!;
        return startValue(node, b, st, this.maxWs);
      }
    }
  }

  private keyStep(st: Stack, b: number): PState | null {
    const r = lexStep(this.ls, b);
    if (r === LEX_BAD) return null;
    const props = this.node.props;
    if (r === LEX_CLOSE) {
      // A listed property that may come now, or an extra key that is no listed name.
      const end = this.eligibleEnd();
      for (let i = this.next; i < end; i++)
        if (props[i]!.key === this.kb)
          return new Stack(this.with(OP.Colon, 0, i + 1, "", 0, i), st.up);
      if (this.node.extra === null) return null;
      for (const p of props) if (p.key === this.kb) return null;
      return new Stack(this.with(OP.Colon, 0, this.next, "", 0, -1), st.up);
    }
    if (props.length === 0) {
      // Free keys: nothing to match (and no key bytes to keep).
      return r === this.ls ? st : new Stack(this.with(OP.Key, 0, this.next, "", r), st.up);
    }
    const kb = this.kb + String.fromCharCode(b);
    if (this.node.extra === null) {
      const end = this.eligibleEnd();
      let ok = false;
      for (let i = this.next; i < end && !ok; i++) ok = props[i]!.key.startsWith(kb);
      if (!ok) return null;
    }
    return new Stack(this.with(OP.Key, 0, this.next, kb, r), st.up);
  }

  override resume(st: Stack): PState {
    return new Stack(this.with(OP.After, 0), st.up);
  }

  override plainRun(): number {
    // Free keys (no listed properties) take any plain text.
    return this.phase === OP.Key && this.ls === 0 && this.node.props.length === 0 ? Infinity : -1;
  }

  key(): string {
    return `O${this.node.id},${this.phase},${this.ws},${this.next},${this.ls},${this.cur},${this.kb}`;
  }
}

const enum AP {
  /** after `[` */
  Open,
  /** after an item */
  After,
  /** after `,` */
  Comma,
}

class ArrayFrame extends Frame {
  constructor(
    readonly node: ArrayNode,
    readonly maxWs: number,
    readonly phase: AP,
    readonly ws: number,
    /** items completed (or being parsed, while a child frame is above) */
    readonly count: number,
  ) {
    super();
  }
  /** Schema of item i, or null when there may be no such item. */
  private itemNode(i: number): Node | null {
    if (i >= this.node.maxItems) return null;
    return this.node.prefix[i] ?? this.node.items;
  }
  step(st: Stack, b: number): PState | null {
    const maxWs = this.maxWs;
    if (isWs(b))
      return this.ws < maxWs
        ? new Stack(new ArrayFrame(this.node, maxWs, this.phase, this.ws + 1, this.count), st.up)
        : null;
    if (this.phase !== AP.Comma && b === 0x5d)
      return this.count >= this.node.minItems ? pop(st) : null;
    if (this.phase === AP.After)
      return b === 0x2c && this.itemNode(this.count)
        ? new Stack(new ArrayFrame(this.node, maxWs, AP.Comma, 0, this.count), st.up)
        : null;
    const item = this.itemNode(this.count);
    if (!item) return null;
    // The frame below the item: already "after" it (resume only moves the count on).
    const self = new Stack(new ArrayFrame(this.node, maxWs, AP.Comma, 0, this.count), st.up);
    return startValue(item, b, self, maxWs);
  }
  override resume(st: Stack): PState {
    return new Stack(new ArrayFrame(this.node, this.maxWs, AP.After, 0, this.count + 1), st.up);
  }
  key(): string {
    return `A${this.node.id},${this.phase},${this.ws},${this.count}`;
  }
}

class StringFrame extends Frame {
  constructor(
    readonly node: StringNode,
    /** lexical state (lexStep) */
    readonly ls: number,
    /** code points so far */
    readonly count: number,
  ) {
    super();
  }
  step(st: Stack, b: number): PState | null {
    const r = lexStep(this.ls, b);
    if (r === LEX_CLOSE) return this.count >= this.node.minLength ? pop(st) : null;
    if (r === LEX_BAD) return null;
    const starts = this.ls === 0; // a character (or escape) begins with b
    const count = starts ? this.count + 1 : this.count;
    if (count > this.node.maxLength) return null;
    const counted = this.node.minLength > 0 || this.node.maxLength !== Infinity;
    if (r === this.ls && !counted) return st;
    return new Stack(new StringFrame(this.node, r, counted ? count : 0), st.up);
  }
  override plainRun(): number {
    return this.ls === 0 ? this.node.maxLength - this.count : -1;
  }
  key(): string {
    return `S${this.node.id},${this.ls},${this.count}`;
  }
}

const enum NP {
  Start,
  Minus,
  Zero,
  Int,
  Dot,
  Frac,
  E,
  ESign,
  Exp,
}

class NumberFrame extends Frame {
  constructor(
    readonly node: NumberNode,
    readonly phase: NP,
    /** the text so far (only kept when the node has bounds) */
    readonly text: string,
  ) {
    super();
  }
  static start(n: NumberNode): NumberFrame {
    return new NumberFrame(n, NP.Start, "");
  }
  private get bounded(): boolean {
    return this.node.min !== -Infinity || this.node.max !== Infinity;
  }
  /** The phase after byte b, or -1. */
  private next(b: number): NP | -1 {
    const int = this.node.integer;
    const noExp = int || this.bounded;
    switch (this.phase) {
      case NP.Start:
        return b === 0x2d ? NP.Minus : b === 0x30 ? NP.Zero : isDigit(b) ? NP.Int : -1;
      case NP.Minus:
        return b === 0x30 ? NP.Zero : isDigit(b) ? NP.Int : -1;
      case NP.Zero:
      case NP.Int:
        if (this.phase === NP.Int && isDigit(b)) return NP.Int;
        if (b === 0x2e && !int) return NP.Dot;
        if ((b === 0x65 || b === 0x45) && !noExp) return NP.E;
        return -1;
      case NP.Dot:
        return isDigit(b) ? NP.Frac : -1;
      case NP.Frac:
        if (isDigit(b)) return NP.Frac;
        return (b === 0x65 || b === 0x45) && !noExp ? NP.E : -1;
      case NP.E:
        return b === 0x2b || b === 0x2d ? NP.ESign : isDigit(b) ? NP.Exp : -1;
      case NP.ESign:
      case NP.Exp:
        return isDigit(b) ? NP.Exp : -1;
    }
  }
  /** Used both on a stack (step) and to start (no stack yet: `up` given). */
  step(st: Stack | null, b: number, up: Stack | null = st?.up ?? null): PState | null {
    const ph = this.next(b);
    if (ph === -1) {
      // b ends the number (if it may end here) and goes to the frame below.
      if (!this.canEndImplicitly() || st === null) return null;
      const p = pop(st);
      return p === null ? null : advance(p, b);
    }
    const text = this.bounded ? this.text + String.fromCharCode(b) : "";
    if (this.bounded && !feasible(this.node, text, ph)) return null;
    return new Stack(new NumberFrame(this.node, ph, text), up);
  }
  override canEndImplicitly(): boolean {
    const ph = this.phase;
    if (!(ph === NP.Zero || ph === NP.Int || ph === NP.Frac || ph === NP.Exp)) return false;
    return !this.bounded || inBounds(this.node, Number(this.text));
  }
  key(): string {
    return `N${this.node.id},${this.phase},${this.text}`;
  }
}

function inBounds(n: NumberNode, v: number): boolean {
  return (n.exclusiveMin ? v > n.min : v >= n.min) && (n.exclusiveMax ? v < n.max : v <= n.max);
}

/**
 * Whether a number that starts with `text` (no exponent: bounded numbers have none) can still
 * end inside the bounds. Reachable magnitudes from digits v: [v·10^d, (v+1)·10^d) for d ≥ 0
 * (more digits), or [v, v+1) with a fraction; after "v.f" (k digits): [v.f, v.f + 10^-k).
 */
function feasible(n: NumberNode, text: string, ph: NP): boolean {
  const neg = text.startsWith("-");
  const body = neg ? text.slice(1) : text;
  // Bounds on the magnitude m (value = ±m).
  let lo: number, hi: number, loX: boolean, hiX: boolean;
  if (neg) [lo, hi, loX, hiX] = [-n.max, -n.min, n.exclusiveMax, n.exclusiveMin];
  else [lo, hi, loX, hiX] = [n.min, n.max, n.exclusiveMin, n.exclusiveMax];
  if (n.integer) {
    // Integers in [ilo, ihi].
    const ilo = Math.max(0, loX ? Math.floor(lo) + 1 : Math.ceil(lo));
    const ihi = hiX ? Math.ceil(hi) - 1 : Math.floor(hi);
    if (ilo > ihi) return false;
    if (ph === NP.Minus) return true; // any magnitude ≥ 0 still reachable
    const v = Number(body);
    if (ph === NP.Zero) return ilo <= 0;
    for (let s = 1; v * s <= ihi && s <= 1e300; s *= 10) if ((v + 1) * s - 1 >= ilo) return true;
    return false;
  }
  // Reachable magnitudes are dense in [a, b) (every decimal there extends the prefix), so they
  // meet the bounds iff [a, b) does: a proper overlap, or the single point hi = max(a, lo) < b.
  const meets = (a: number, b: number) => {
    const L = Math.max(a, lo);
    const U = Math.min(b, hi);
    if (L < U) return true;
    return L === U && hi < b && !hiX && !(L === lo && loX);
  };
  if (ph === NP.Minus) return meets(0, Infinity);
  const dot = body.indexOf(".");
  if (dot < 0) {
    const v = Number(body);
    if (ph === NP.Zero) return meets(0, 1);
    for (let s = 1; v * s <= Math.max(hi, 0) + 1 && s <= 1e300; s *= 10)
      if (meets(v * s, (v + 1) * s)) return true;
    return false;
  }
  const frac = body.slice(dot + 1);
  const base = Number(body.slice(0, dot) + "." + (frac || "0"));
  return meets(base, base + 10 ** -frac.length);
}

/**
 * Inside one of a literal node's texts. The texts are sorted, so those that begin with the bytes
 * read so far are a range [lo, hi); a byte narrows it by binary search on the next position.
 */
class LiteralFrame extends Frame {
  constructor(
    readonly node: LiteralNode,
    /** bytes read */
    readonly pos: number,
    readonly lo: number,
    readonly hi: number,
  ) {
    super();
  }
  /** The state before any byte (the whole range). */
  static start(n: LiteralNode): LiteralFrame {
    return new LiteralFrame(n, 0, 0, n.texts.length);
  }
  /** The range of texts in [lo, hi) whose byte at pos is b (empty: lo === hi). */
  private narrow(b: number): [number, number] {
    const t = this.node.texts;
    const at = (i: number) => (t[i]!.length > this.pos ? t[i]!.charCodeAt(this.pos) : -1);
    let a = this.lo;
    let z = this.hi;
    while (a < z) {
      const m = (a + z) >>> 1;
      if (at(m) < b) a = m + 1;
      else z = m;
    }
    let e = a;
    z = this.hi;
    while (e < z) {
      const m = (e + z) >>> 1;
      if (at(m) <= b) e = m + 1;
      else z = m;
    }
    return [a, e];
  }
  /** Consumes b; `up` is the frame waiting for the value. */
  stepFrom(b: number, st: Stack | null, up: Stack): PState | null {
    const [lo, hi] = this.narrow(b);
    if (lo < hi) {
      const pos = this.pos + 1;
      // Complete and nothing longer: done at once (the exact text sorts first in its range).
      if (hi - lo === 1 && this.node.texts[lo]!.length === pos) return up.f.resume(up);
      return new Stack(new LiteralFrame(this.node, pos, lo, hi), up);
    }
    if (st === null || !this.canEndImplicitly()) return null;
    const p = pop(st);
    return p === null ? null : advance(p, b);
  }
  step(st: Stack, b: number): PState | null {
    return this.stepFrom(b, st, st.up!);
  }
  override canEndImplicitly(): boolean {
    return this.pos > 0 && this.node.texts[this.lo]!.length === this.pos;
  }
  key(): string {
    return `L${this.node.id},${this.pos},${this.lo},${this.hi}`;
  }
}
