// Fuzz target: packages/model's safetensors reader (parseSafetensors: the length prefix, header
// JSON and Metadata::validate rules of SafetensorsFile.open) on in-memory files, with every verdict
// checked against the independent reading in safetensors_spec.ts.
// Acceptable errors: SafetensorsError only. Anything else thrown is a finding, and so is a verdict
// that differs from the spec's.
import { parseSafetensors, SafetensorsError } from "@gemma3/model";
import { concat, Finding, normalise, type Outcome, type Rng, type Target } from "./engine.js";
import { specVerdict } from "./safetensors_spec.js";

const enc = new TextEncoder();
const DTYPES: readonly [string, number][] = [
  ["BOOL", 8],
  ["U8", 8],
  ["I8", 8],
  ["F8_E5M2", 8],
  ["F8_E4M3", 8],
  ["F8_E8M0", 8],
  ["F4", 4],
  ["F6_E2M3", 6],
  ["F6_E3M2", 6],
  ["I16", 16],
  ["U16", 16],
  ["F16", 16],
  ["BF16", 16],
  ["I32", 32],
  ["U32", 32],
  ["F32", 32],
  ["C64", 64],
  ["F64", 64],
  ["I64", 64],
  ["U64", 64],
];
const BAD_DTYPES = [
  "F128",
  "f32",
  "",
  "Q4_0",
  "bf16",
  "F32 ",
  "F3\\u0032",
  "__proto__",
  "BOOL\\u0000",
];

/** A JSON string literal for `s`, sometimes with \u escapes (which decode to the same key). */
function jstr(rng: Rng, s: string): string {
  if (!rng.chance(0.05) || s.length === 0) return JSON.stringify(s);
  const i = rng.int(s.length);
  const u = "\\u" + s.charCodeAt(i).toString(16).padStart(4, "0");
  return JSON.stringify(s.slice(0, i)).slice(0, -1) + u + JSON.stringify(s.slice(i + 1)).slice(1);
}

/** The text of an integer, sometimes in a form serde does not read as usize. */
function num(rng: Rng, n: bigint): string {
  if (!rng.chance(0.04)) return n.toString();
  switch (rng.int(8)) {
    case 0:
      return `${n}.0`;
    case 1:
      return `${n}e0`;
    case 2:
      return n === 0n ? "-0" : `-${n}`;
    case 3:
      return (n + (1n << 64n)).toString(); // past u64, same double for n < 2048
    case 4:
      return "1e400";
    case 5:
      return `"${n}"`;
    case 6:
      return n > 0n ? `${n - 1n}.99999999999999999999` : "0.0";
    default:
      return `${Number(n) / 10}e1`;
  }
}

/** Shape dimensions: mostly small, sometimes the edges of u64 / 2^53. */
function dim(rng: Rng): bigint {
  if (rng.chance(0.9)) return BigInt(rng.int(9));
  return rng.pick([
    0n,
    1n << 32n,
    (1n << 53n) + 1n,
    1n << 63n,
    (1n << 64n) - 1n,
    1n << 64n,
    (1n << 61n) + 1n,
  ]);
}

interface TSpec {
  name: string;
  dtype: string;
  bits: number;
  shape: bigint[];
  begin: bigint;
  end: bigint;
  extra?: string;
}

/** A structured file: a valid layout by default, then a few targeted breakages. */
export function generateSafetensors(rng: Rng): Uint8Array {
  const nt = rng.int(6);
  const tensors: TSpec[] = [];
  let off = 0n;
  for (let i = 0; i < nt; i++) {
    const [dtype, bits] = rng.pick(DTYPES);
    const shape = Array.from({ length: rng.int(4) }, () => BigInt(rng.int(6)));
    let count = shape.reduce((a, b) => a * b, 1n);
    if ((count * BigInt(bits)) % 8n !== 0n) {
      // sub-byte dtypes need an even count; fix it most of the time
      if (rng.chance(0.9)) {
        shape.push(2n);
        count *= 2n;
      }
    }
    const bytes = (count * BigInt(bits)) / 8n;
    tensors.push({
      name: rng.chance(0.1) ? rng.pick(["", "__metadata", "a.b", "é", "\u0000", "w"]) : `t${i}`,
      dtype,
      bits,
      shape,
      begin: off,
      end: off + bytes,
    });
    off += bytes;
  }
  let dataLen = off;
  // Targeted breakages (each rare, so valid files stay common).
  if (tensors.length && rng.chance(0.3)) {
    const t = rng.pick(tensors);
    switch (rng.int(9)) {
      case 0:
        t.begin += 1n; // gap or overlap
        break;
      case 1:
        t.end += BigInt(rng.int(3)) + 1n; // span ≠ shape × dtype
        break;
      case 2:
        [t.begin, t.end] = [t.end, t.begin];
        break;
      case 3:
        t.shape = [...t.shape, dim(rng), dim(rng)]; // huge or overflowing dims
        break;
      case 4:
        t.shape = [0n, dim(rng), dim(rng)]; // a zero dim with huge others: overflow still counts
        if (t.end !== t.begin && rng.chance(0.7)) {
          const d = t.end - t.begin;
          for (const u of tensors) if (u.begin >= t.end) ((u.begin -= d), (u.end -= d));
          dataLen -= d;
          t.end = t.begin;
        }
        break;
      case 5:
        t.dtype = rng.pick(BAD_DTYPES);
        break;
      case 6:
        t.extra = rng.pick([
          '"x":1e400',
          '"x":"\\ud800"',
          '"x":"\\udc00\\ud800"',
          `"x":${"[".repeat(130)}${"]".repeat(130)}`,
          `"x":${"[".repeat(124)}${"]".repeat(124)}`,
          `"x":${'{"a":'.repeat(126)}1${"}".repeat(126)}`,
          '"dtype":"F32"',
          '"shape":[]',
          '"x":{"a":1,"a":2}',
          '"x":-0',
          '"x":12345678901234567890123',
        ]);
        break;
      case 7:
        t.name = rng.pick(tensors).name; // duplicate tensor name
        break;
      default:
        t.begin = rng.pick([1n << 53n, (1n << 64n) - 1n, 1n << 64n, 1n << 63n]);
    }
  }
  const entries: string[] = [];
  const meta = rng.int(8);
  if (meta === 0) entries.push('"__metadata__":null');
  else if (meta === 1) entries.push('"__metadata__":{"format":"pt"}');
  else if (meta === 2)
    entries.push(
      rng.pick([
        '"__metadata__":{"format":1}',
        '"__metadata__":[]',
        '"__metadata__":"pt"',
        '"__metadata__":{"a":"1","a":"2"}',
        '"__metadata__":{"a":null}',
        '"__metadata__":{}',
      ]),
    );
  for (const t of tensors) {
    const fields = [
      `"dtype":${t.dtype.includes("\\") ? `"${t.dtype}"` : jstr(rng, t.dtype)}`,
      `"shape":[${t.shape.map((d) => num(rng, d)).join(",")}]`,
      `"data_offsets":[${num(rng, t.begin)},${num(rng, t.end)}]`,
    ];
    if (t.extra) fields.splice(rng.int(fields.length + 1), 0, t.extra);
    if (rng.chance(0.02)) fields.splice(rng.int(fields.length), 1);
    for (let i = fields.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [fields[i], fields[j]] = [fields[j]!, fields[i]!];
    }
    entries.push(`${jstr(rng, t.name)}:{${fields.join(",")}}`);
  }
  if (meta === 3 && entries.length) entries.push('"__metadata__":{"x":"y"}', '"__metadata__":null');
  for (let i = entries.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [entries[i], entries[j]] = [entries[j]!, entries[i]!];
  }
  let text = `{${entries.join(",")}}`;
  if (rng.chance(0.05))
    text = rng.pick(["[]", '"x"', "null", "1", "{}", "", "{", "\ufeff{}", "{}x", "{} {}"]);
  if (rng.chance(0.1)) text = " \n\t".slice(0, rng.int(4)) + text + " ".repeat(rng.int(9));
  const header = enc.encode(text);
  let data = new Uint8Array(Number(dataLen < 0n ? 0n : dataLen > 4096n ? 4096n : dataLen));
  if (rng.chance(0.05)) data = new Uint8Array(data.length + 1 + rng.int(16)); // trailing bytes
  if (rng.chance(0.05) && data.length) data = data.subarray(0, rng.int(data.length));
  let n = BigInt(header.length);
  if (rng.chance(0.05))
    n = rng.pick([
      n + 1n,
      n - 1n,
      100_000_000n,
      100_000_001n,
      (1n << 64n) - 1n,
      1n << 63n,
      BigInt(header.length + data.length),
    ]);
  return concat(prefix(n), header, data);
}

function prefix(n: bigint): Uint8Array {
  const p = new Uint8Array(8);
  new DataView(p.buffer).setBigUint64(0, BigInt.asUintN(64, n), true);
  return p;
}

/** JSON-level edits of a parseable file; byte edits of the header text otherwise. */
export function mutateSafetensors(rng: Rng, input: Uint8Array): Uint8Array {
  if (input.length < 8) return concat(input, new Uint8Array(rng.int(16)));
  const n = Number(new DataView(input.buffer, input.byteOffset, 8).getBigUint64(0, true));
  const hl = Math.min(n, input.length - 8);
  const text = new TextDecoder().decode(input.subarray(8, 8 + hl));
  let data = input.subarray(8 + hl);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  let out: string;
  if (json && typeof json === "object" && !Array.isArray(json)) {
    const h = json as Record<string, Record<string, unknown>>;
    const names = Object.keys(h).filter((k) => k !== "__metadata__");
    const picked = names.length ? h[rng.pick(names)] : undefined;
    const t =
      typeof picked === "object" && picked !== null && !Array.isArray(picked) ? picked : undefined;
    switch (rng.int(10)) {
      case 0:
        if (t && Array.isArray(t.data_offsets)) {
          const o = t.data_offsets as number[];
          const i = rng.int(2);
          o[i] = Number(o[i]) + rng.int(9) - 4;
        }
        break;
      case 1:
        if (t && Array.isArray(t.shape)) {
          const s = t.shape as number[];
          if (s.length && rng.chance(0.5))
            s[rng.int(s.length)] = rng.pick([0, 1, 2, 3, 2 ** 32, 2 ** 53 + 2]);
          else s.push(rng.int(4));
        }
        break;
      case 2:
        if (t) t.dtype = rng.pick(DTYPES)[0];
        break;
      case 3:
        if (t) delete t[rng.pick(["dtype", "shape", "data_offsets"])];
        break;
      case 4:
        h[`n${rng.int(100)}`] = {
          dtype: "U8",
          shape: [rng.int(4)],
          data_offsets: [rng.int(8), rng.int(8)],
        };
        break;
      case 5:
        h.__metadata__ = rng.pick([{ format: "pt" }, null, { a: 1 }, []] as never[]);
        break;
      case 6:
        data = rng.chance(0.5)
          ? data.subarray(0, Math.max(0, data.length - 1 - rng.int(4)))
          : concat(data, new Uint8Array(1 + rng.int(4)));
        break;
      case 7:
        if (t) t.data_offsets = [rng.int(64), rng.int(64)];
        break;
      case 8:
        if (t) t.shape = rng.pick([[], [1], "x", [-1], [1.5], null] as never[]);
        break;
      default:
        if (names.length) delete h[rng.pick(names)];
    }
    out = JSON.stringify(h);
    if (rng.chance(0.2)) {
      // duplicate a member textually (JSON.stringify cannot)
      const m = /"[^"]*":\{[^{}]*\}/.exec(out);
      if (m) out = out.replace(m[0], `${m[0]},${m[0]}`);
    }
  } else {
    const b = enc.encode(text);
    if (b.length) b[rng.int(b.length)] = rng.pick([0x22, 0x2c, 0x3a, 0x5b, 0x5d, 0x7b, 0x7d, 0x30]);
    out = new TextDecoder().decode(b);
  }
  const header = enc.encode(out);
  const keepPrefix = rng.chance(0.05);
  return concat(keepPrefix ? input.subarray(0, 8) : prefix(BigInt(header.length)), header, data);
}

const DICT = [
  '"dtype"',
  '"shape"',
  '"data_offsets"',
  '"__metadata__"',
  '"F32"',
  '"BF16"',
  '"F4"',
  "null",
  "-0",
  "1e400",
  "18446744073709551616",
  "18446744073709551615",
  "\\ud800",
  "\\u0000",
  "[0,0]",
  "{}",
  "[]",
  ",",
  ":",
  "\ufeff",
].map((s) => enc.encode(s));

/** One input through the reader and the spec; throws a Finding on any disagreement. */
export function runSafetensors(input: Uint8Array, verdict = specVerdict): Outcome {
  const spec = verdict(input);
  let feature: string;
  let ok: boolean;
  try {
    const r = parseSafetensors(input);
    ok = true;
    feature = "accept";
    // An accepted file's tensors tile its data section exactly.
    let total = 0;
    for (const t of r.tensors.values()) {
      if (!(t.begin >= 0 && t.end >= t.begin && t.end <= input.length - r.dataOffset))
        throw new Finding(`accepted tensor [${t.begin}, ${t.end}) outside the data section`);
      total += t.end - t.begin;
    }
    if (total !== input.length - r.dataOffset)
      throw new Finding(`accepted tensors cover ${total} of ${input.length - r.dataOffset} bytes`);
  } catch (e) {
    if (e instanceof Finding) throw e;
    if (!(e instanceof SafetensorsError)) throw e;
    ok = false;
    // JSON.parse's message quotes the text around the error: keep its first words only.
    feature = normalise(
      e.message
        .replace(/^<memory>: /, "")
        .replace(/not valid JSON \((\w+ \w+).*$/s, "not valid JSON: $1"),
    );
  }
  if (ok !== spec.ok)
    throw new Finding(
      `differential: the reader ${ok ? "accepts" : `rejects (${feature})`} but the spec ` +
        `${spec.ok ? "accepts" : `rejects (${spec.rule})`}`,
    );
  return { feature: `${feature} | ${spec.rule ?? "ok"}` };
}

export const safetensorsTarget: Target = {
  name: "safetensors",
  seeds: () => seedFiles(),
  generate: generateSafetensors,
  mutate: mutateSafetensors,
  run: (b) => runSafetensors(b),
  dictionary: DICT,
  coverageFiles: [
    "/packages/model/dist/safetensors.js",
    "/packages/model/dist/safetensors_json.js",
  ],
  maxInputBytes: 64 * 1024,
  hangMs: 1000,
};

/** Valid files as the tests' writer (and the crate) lays them out. */
export function seedFiles(): Uint8Array[] {
  const file = (header: object, data: number) => {
    let text = JSON.stringify(header);
    text += " ".repeat((8 - (text.length % 8)) % 8);
    const h = enc.encode(text);
    return concat(prefix(BigInt(h.length)), h, new Uint8Array(data));
  };
  return [
    file({}, 0),
    file({ __metadata__: { format: "pt" } }, 0),
    file({ w: { dtype: "F32", shape: [2, 3], data_offsets: [0, 24] } }, 24),
    file(
      {
        __metadata__: { format: "pt" },
        "model.embed_tokens.weight": { dtype: "BF16", shape: [4, 2], data_offsets: [0, 16] },
        "model.norm.weight": { dtype: "BF16", shape: [2], data_offsets: [16, 20] },
        scalar: { dtype: "I64", shape: [], data_offsets: [20, 28] },
        empty: { dtype: "U8", shape: [0, 5], data_offsets: [28, 28] },
      },
      28,
    ),
    file({ a: { dtype: "F4", shape: [2, 3], data_offsets: [0, 3] } }, 3),
    file({ b: { dtype: "F6_E2M3", shape: [4], data_offsets: [0, 3] } }, 3),
  ];
}
