// An independent safetensors verdict, for the differential check against packages/model's reader.
// Written from the format's description (huggingface/safetensors README "Format" and docs
// metadata_parsing: "Duplicate keys are disallowed") and the Rust crate's read_metadata +
// Metadata::validate (safetensors/src/tensor.rs), with serde_json's reading of the header:
//   - u64 LE header length N ≤ 100 000 000, and 8 + N ≤ file size;
//   - the N bytes are UTF-8 and one JSON value (whitespace around it only, no BOM);
//   - serde_json: nesting deeper than 127 containers fails (recursion limit 128), a \uXXXX escape
//     that leaves a lone surrogate fails, a number outside f64's range fails;
//   - the value is an object; duplicate keys at any level are refused (the spec's rule; the crate
//     itself keeps the last tensor entry, which is the parser differential of Trail of Bits'
//     audit finding TOB-SFTN-7);
//   - "__metadata__": null or an object of strings; every other key: an object with
//     dtype (a known dtype name), shape (array of usize) and data_offsets ([usize, usize]);
//     usize = a JSON integer literal without sign, fraction or exponent, ≤ 2^64 − 1 (serde gives
//     a float or a negative for anything else, and usize refuses it);
//   - sorted by (begin, end), each begin equals the previous end (from 0), end ≥ begin; the
//     element count × dtype bits must not overflow u64 and must be a whole number of bytes equal
//     to end − begin; the last end equals the data section's length (no trailing bytes).
// Nothing here is shared with packages/model/src: own JSON parser, own arithmetic (BigInt only).

/** Dtype bit widths of the crate's Dtype enum (tensor.rs Dtype::bitsize), as of 0.6/0.7. */
const DTYPE_BITS: Readonly<Record<string, bigint>> = {
  BOOL: 8n,
  F4: 4n,
  F6_E2M3: 6n,
  F6_E3M2: 6n,
  U8: 8n,
  I8: 8n,
  F8_E5M2: 8n,
  F8_E4M3: 8n,
  F8_E8M0: 8n,
  I16: 16n,
  U16: 16n,
  F16: 16n,
  BF16: 16n,
  I32: 32n,
  U32: 32n,
  F32: 32n,
  C64: 64n,
  F64: 64n,
  I64: 64n,
  U64: 64n,
};

const U64_MAX = (1n << 64n) - 1n;

/** A JSON value as read here: numbers keep their literal text. */
type J =
  | { k: "obj"; entries: [string, J][] }
  | { k: "arr"; items: J[] }
  | { k: "str"; v: string }
  | { k: "num"; text: string }
  | { k: "lit"; v: true | false | null };

class Reject extends Error {}

const MAX_DEPTH = 127;

/** RFC 8259 JSON with serde_json's extra refusals (see the file comment). */
class JsonReader {
  private i = 0;
  constructor(private readonly s: string) {}

  parseDocument(): J {
    this.ws();
    const v = this.value(0);
    this.ws();
    if (this.i !== this.s.length) throw new Reject("trailing characters");
    return v;
  }
  private ws(): void {
    const s = this.s;
    while (this.i < s.length) {
      const c = s.charCodeAt(this.i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) this.i++;
      else break;
    }
  }
  private value(depth: number): J {
    const c = this.s[this.i];
    if (c === "{" || c === "[") {
      if (depth + 1 > MAX_DEPTH) throw new Reject("recursion limit");
      return c === "{" ? this.object(depth + 1) : this.array(depth + 1);
    }
    if (c === '"') return { k: "str", v: this.string() };
    if (c === "-" || (c !== undefined && c >= "0" && c <= "9")) return this.number();
    for (const [word, v] of [
      ["true", true],
      ["false", false],
      ["null", null],
    ] as const)
      if (this.s.startsWith(word, this.i)) {
        this.i += word.length;
        return { k: "lit", v };
      }
    throw new Reject(`unexpected ${c ?? "end"}`);
  }
  private object(depth: number): J {
    this.i++;
    const entries: [string, J][] = [];
    this.ws();
    if (this.s[this.i] === "}") {
      this.i++;
      return { k: "obj", entries };
    }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') throw new Reject("expected a key");
      const key = this.string();
      this.ws();
      if (this.s[this.i++] !== ":") throw new Reject("expected :");
      this.ws();
      entries.push([key, this.value(depth)]);
      this.ws();
      const c = this.s[this.i++];
      if (c === "}") return { k: "obj", entries };
      if (c !== ",") throw new Reject("expected , or }");
    }
  }
  private array(depth: number): J {
    this.i++;
    const items: J[] = [];
    this.ws();
    if (this.s[this.i] === "]") {
      this.i++;
      return { k: "arr", items };
    }
    for (;;) {
      this.ws();
      items.push(this.value(depth));
      this.ws();
      const c = this.s[this.i++];
      if (c === "]") return { k: "arr", items };
      if (c !== ",") throw new Reject("expected , or ]");
    }
  }
  private hex4(): number {
    const h = this.s.slice(this.i, this.i + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(h)) throw new Reject("bad \\u escape");
    this.i += 4;
    return parseInt(h, 16);
  }
  private string(): string {
    this.i++; // opening quote
    let out = "";
    for (;;) {
      if (this.i >= this.s.length) throw new Reject("unterminated string");
      const c = this.s.charCodeAt(this.i++);
      if (c === 0x22) return out;
      if (c < 0x20) throw new Reject("control character in string");
      if (c !== 0x5c) {
        out += String.fromCharCode(c);
        continue;
      }
      const e = this.s[this.i++];
      const simple: Record<string, string> = {
        '"': '"',
        "\\": "\\",
        "/": "/",
        b: "\b",
        f: "\f",
        n: "\n",
        r: "\r",
        t: "\t",
      };
      if (e !== undefined && e in simple) {
        out += simple[e];
        continue;
      }
      if (e !== "u") throw new Reject("bad escape");
      const u = this.hex4();
      if (u >= 0xdc00 && u <= 0xdfff) throw new Reject("lone trailing surrogate");
      if (u >= 0xd800 && u <= 0xdbff) {
        // serde_json: a leading surrogate must be followed by an escaped trailing one.
        if (this.s[this.i] !== "\\" || this.s[this.i + 1] !== "u")
          throw new Reject("lone leading surrogate");
        this.i += 2;
        const lo = this.hex4();
        if (lo < 0xdc00 || lo > 0xdfff) throw new Reject("lone leading surrogate");
        out += String.fromCharCode(u, lo);
        continue;
      }
      out += String.fromCharCode(u);
    }
  }
  private number(): J {
    const m = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(this.s.slice(this.i));
    if (!m) throw new Reject("bad number");
    this.i += m[0].length;
    if (!Number.isFinite(Number(m[0]))) throw new Reject("number out of range");
    return { k: "num", text: m[0] };
  }
}

/** usize as serde reads it from a JSON literal, else undefined. */
function usize(v: J): bigint | undefined {
  if (v.k !== "num" || !/^(0|[1-9][0-9]*)$/.test(v.text)) return undefined;
  const n = BigInt(v.text);
  return n <= U64_MAX ? n : undefined;
}

export interface SpecVerdict {
  ok: boolean;
  /** Which rule refused the file (for reports and the negative tests). */
  rule?: string;
}

/** The reference verdict for a whole safetensors file held in memory. */
export function specVerdict(file: Uint8Array): SpecVerdict {
  const no = (rule: string): SpecVerdict => ({ ok: false, rule });
  if (file.length < 8) return no("HeaderTooSmall");
  let n = 0n;
  for (let i = 7; i >= 0; i--) n = (n << 8n) | BigInt(file[i]!);
  if (n > 100_000_000n) return no("HeaderTooLarge");
  if (8n + n > BigInt(file.length)) return no("InvalidHeaderLength");
  const headerEnd = 8 + Number(n);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(
      file.subarray(8, headerEnd),
    );
  } catch {
    return no("InvalidHeader (UTF-8)");
  }
  let root: J;
  try {
    root = new JsonReader(text).parseDocument();
  } catch (e) {
    if (e instanceof Reject) return no(`InvalidHeaderDeserialization (${e.message})`);
    throw e;
  }
  if (root.k !== "obj") return no("header is not an object");
  // Duplicate keys anywhere.
  const dup = (v: J): boolean => {
    if (v.k === "arr") return v.items.some(dup);
    if (v.k !== "obj") return false;
    const keys = new Set<string>();
    for (const [k, x] of v.entries) {
      if (keys.has(k)) return true;
      keys.add(k);
      if (dup(x)) return true;
    }
    return false;
  };
  if (dup(root)) return no("duplicate key");

  const spans: { begin: bigint; end: bigint; bytes: bigint | "overflow" | "fraction" }[] = [];
  for (const [name, v] of root.entries) {
    if (name === "__metadata__") {
      if (v.k === "lit" && v.v === null) continue;
      if (v.k !== "obj") return no("__metadata__ not an object");
      if (v.entries.some(([, s]) => s.k !== "str")) return no("__metadata__ value not a string");
      continue;
    }
    if (v.k !== "obj") return no("tensor entry not an object");
    const field = (f: string) => v.entries.find(([k]) => k === f)?.[1];
    const dtype = field("dtype");
    const shape = field("shape");
    const offsets = field("data_offsets");
    if (!dtype || dtype.k !== "str" || !Object.hasOwn(DTYPE_BITS, dtype.v))
      return no("unknown dtype");
    if (!shape || shape.k !== "arr") return no("shape not an array");
    const dims = shape.items.map(usize);
    if (dims.some((d) => d === undefined)) return no("shape entry not a usize");
    if (!offsets || offsets.k !== "arr" || offsets.items.length !== 2)
      return no("data_offsets not a pair");
    const [begin, end] = offsets.items.map(usize);
    if (begin === undefined || end === undefined) return no("data_offsets entry not a usize");
    // checked_mul over usize, then × bits: any intermediate past u64 is ValidationOverflow.
    let count: bigint | "overflow" = 1n;
    for (const d of dims as bigint[]) {
      count = count * d;
      if (count > U64_MAX) {
        count = "overflow";
        break;
      }
    }
    let bytes: bigint | "overflow" | "fraction" = "overflow";
    if (count !== "overflow") {
      const bits = count * DTYPE_BITS[dtype.v]!;
      bytes = bits > U64_MAX ? "overflow" : bits % 8n !== 0n ? "fraction" : bits / 8n;
    }
    spans.push({ begin, end, bytes });
  }
  spans.sort((a, b) =>
    a.begin !== b.begin ? (a.begin < b.begin ? -1 : 1) : a.end < b.end ? -1 : a.end > b.end ? 1 : 0,
  );
  let at = 0n;
  for (const s of spans) {
    if (s.begin !== at) return no(s.begin < at ? "overlap" : "gap");
    if (s.end < s.begin) return no("end before begin");
    if (s.bytes === "overflow") return no("ValidationOverflow");
    if (s.bytes === "fraction") return no("not a whole number of bytes");
    if (s.bytes !== s.end - s.begin) return no("TensorInvalidInfo (span ≠ shape × dtype)");
    at = s.end;
  }
  const dataLength = BigInt(file.length - headerEnd);
  if (at !== dataLength)
    return no(at < dataLength ? "MetadataIncompleteBuffer (trailing bytes)" : "data past the end");
  return { ok: true };
}
