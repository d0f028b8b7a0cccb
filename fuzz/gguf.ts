// Fuzz target: packages/model's GGUF header reader (parseGGUF on in-memory files: magic, version,
// counts, metadata KVs of every type, tensor infos, alignment, data-section bounds), then, for an
// accepted header, what loading does with it before any tensor byte is read: ggufTextConfig,
// ggufTokenizerInfo and checkGGUFTextWeights.
// Acceptable errors: GGUFError only (E_* codes). Invariants: the reader's largest allocation is at
// most the input's size (GGUFReadStats, which every buffer the header reader makes goes through);
// an accepted header's tensors lie inside the file at their padded running offsets.
import {
  checkGGUFTextWeights,
  GGML_TYPES,
  GGUFError,
  ggufTextConfig,
  ggufTokenizerInfo,
  parseGGUF,
  type GGUFReadStats,
} from "@gemma3/model";
import {
  concat,
  Finding,
  INTERESTING_U64,
  normalise,
  type Outcome,
  type Rng,
  type Target,
} from "./engine.js";

const enc = new TextEncoder();
/** The reader's one-byte buffer for an empty file: the "small constant" of the bound. */
const ALLOC_SLACK = 64;
type VT = number; // gguf_type id
const TYPES = Object.entries(GGML_TYPES).map(([name, t]) => ({ name, ...t }));

/** Little-endian writer that records where each integer field lies (for field mutations). */
class W {
  parts: number[] = [];
  u8(v: number) {
    this.parts.push(v & 0xff);
  }
  int(w: number, v: bigint | number) {
    let x = BigInt.asUintN(w * 8, BigInt(v));
    for (let i = 0; i < w; i++) {
      this.parts.push(Number(x & 0xffn));
      x >>= 8n;
    }
  }
  f(w: 4 | 8, v: number) {
    const b = new Uint8Array(w);
    const dv = new DataView(b.buffer);
    if (w === 4) dv.setFloat32(0, v, true);
    else dv.setFloat64(0, v, true);
    this.bytes(b);
  }
  bytes(b: Uint8Array) {
    for (const x of b) this.parts.push(x);
  }
  str(s: string | Uint8Array, lengthOverride?: bigint) {
    const b = typeof s === "string" ? enc.encode(s) : s;
    this.int(8, lengthOverride ?? BigInt(b.length));
    this.bytes(b);
  }
  get length() {
    return this.parts.length;
  }
  done(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

const SIZES: Record<number, number> = {
  0: 1,
  1: 1,
  2: 2,
  3: 2,
  4: 4,
  5: 4,
  6: 4,
  7: 1,
  10: 8,
  11: 8,
  12: 8,
};

function scalar(w: W, t: VT, rng: Rng): void {
  if (t === 6) return w.f(4, rng.pick([0, 1e-6, 10000, NaN, Infinity, -1]));
  if (t === 12) return w.f(8, rng.pick([0, 1e-6, 1e6, NaN, -Infinity]));
  if (t === 8)
    return w.str(rng.pick(["gemma3", "", "llama", "none", "linear", "\u00ff", "a".repeat(70)]));
  const size = SIZES[t] ?? 4;
  w.int(size, rng.chance(0.6) ? BigInt(rng.int(64)) : rng.pick(INTERESTING_U64));
}

interface KVSpec {
  key: string;
  type: VT;
  write: (w: W) => void;
}

/** Keys the loader reads, with plausible types (so config/tokenizer paths are reached). */
function gemmaKVs(rng: Rng, layers: number, hidden: number): KVSpec[] {
  const u32 = (key: string, v: number): KVSpec => ({ key, type: 4, write: (w) => w.int(4, v) });
  const f32 = (key: string, v: number): KVSpec => ({ key, type: 6, write: (w) => w.f(4, v) });
  const str = (key: string, v: string): KVSpec => ({ key, type: 8, write: (w) => w.str(v) });
  const kvs: KVSpec[] = [
    str("general.architecture", rng.chance(0.9) ? "gemma3" : "llama"),
    u32("gemma3.block_count", layers),
    u32("gemma3.embedding_length", hidden),
    u32("gemma3.feed_forward_length", hidden * 2),
    u32("gemma3.context_length", 128),
    u32("gemma3.attention.head_count", rng.pick([1, 2, 0])),
    u32("gemma3.attention.head_count_kv", 1),
    u32("gemma3.attention.key_length", rng.pick([hidden, 128, 256])),
    u32("gemma3.attention.value_length", rng.pick([hidden, 128, 256])),
    f32("gemma3.attention.layer_norm_rms_epsilon", 1e-6),
    u32("gemma3.attention.sliding_window", rng.pick([0, 4, 512])),
    f32("gemma3.rope.freq_base", 1e6),
    str("tokenizer.ggml.model", "llama"),
    {
      key: "tokenizer.ggml.tokens",
      type: 9,
      write: (w) => {
        w.int(4, 8);
        const n = rng.int(6);
        w.int(8, n);
        for (let i = 0; i < n; i++) w.str(`t${i}`);
      },
    },
    {
      key: "tokenizer.ggml.scores",
      type: 9,
      write: (w) => {
        w.int(4, 6);
        const n = rng.int(6);
        w.int(8, n);
        for (let i = 0; i < n; i++) w.f(4, -i);
      },
    },
    {
      key: "gemma3.attention.sliding_window_pattern",
      type: 9,
      write: (w) => {
        w.int(4, 7);
        w.int(8, layers);
        for (let i = 0; i < layers; i++) w.u8(rng.int(2));
      },
    },
    u32("tokenizer.ggml.eos_token_id", 1),
  ];
  return kvs.filter(() => rng.chance(0.9));
}

function randomKV(rng: Rng, i: number): KVSpec {
  const type = rng.chance(0.05) ? rng.pick([13, 255, 0x7fffffff]) : rng.int(13);
  const key = rng.chance(0.1) ? rng.pick(["general.alignment", "", "k", "\u0000"]) : `k${i}`;
  if (type === 9) {
    const et = rng.chance(0.1) ? rng.pick([9, 13]) : rng.int(13);
    const n = rng.int(5);
    return {
      key,
      type,
      write: (w) => {
        w.int(4, et);
        w.int(8, rng.chance(0.05) ? rng.pick(INTERESTING_U64) : BigInt(n));
        for (let j = 0; j < n; j++) if (et !== 9 && et < 13) scalar(w, et, rng);
      },
    };
  }
  return { key, type, write: (w) => (type < 13 ? scalar(w, type, rng) : w.int(4, 0)) };
}

/** A structured GGUF: llama.cpp's layout, with rare targeted breakages. */
export function generateGGUF(rng: Rng): Uint8Array {
  const w = new W();
  const layers = 1 + rng.int(2);
  const hidden = rng.pick([32, 64, 256]);
  const gemma = rng.chance(0.5);
  const kvs = gemma ? gemmaKVs(rng, layers, hidden) : [];
  for (let i = rng.int(5); i > 0; i--) kvs.push(randomKV(rng, kvs.length));
  let alignment = 32;
  if (rng.chance(0.15)) {
    const a = rng.pick([1, 8, 16, 64, 0, 3, 48, 2 ** 31]);
    const t = rng.chance(0.85) ? 4 : rng.pick([0, 5, 10]);
    kvs.push({ key: "general.alignment", type: t, write: (x) => x.int(SIZES[t]!, a) });
    if (t === 4 && a > 0 && (a & (a - 1)) === 0) alignment = a;
  }
  // Tensors: the gemma3 names when generating a gemma file, else random ones.
  const tensors: { name: string; ne: bigint[]; type: (typeof TYPES)[number] }[] = [];
  if (gemma) {
    const f32 = TYPES.find((t) => t.name === "F32")!;
    tensors.push({ name: "token_embd.weight", ne: [BigInt(hidden), 4n], type: f32 });
    tensors.push({ name: "output_norm.weight", ne: [BigInt(hidden)], type: f32 });
    if (rng.chance(0.5))
      tensors.push({ name: "blk.0.attn_q.weight", ne: [BigInt(hidden), 64n], type: f32 });
  }
  for (let i = rng.int(4); i > 0; i--) {
    const type = rng.pick(TYPES);
    const ne = Array.from({ length: 1 + rng.int(3) }, () => BigInt(1 + rng.int(3)));
    ne[0] = BigInt(type.blockSize * (1 + rng.int(2)));
    tensors.push({ name: `t${tensors.length}`, ne, type });
  }
  const version = rng.chance(0.95) ? rng.pick([2, 3]) : rng.pick([0, 1, 4, 0x03000000, 0x00030000]);
  w.int(4, rng.chance(0.98) ? 0x46554747 : rng.pick([0x47475546, 0, 0x46554746]));
  w.int(4, version);
  w.int(8, rng.chance(0.97) ? tensors.length : rng.pick(INTERESTING_U64));
  w.int(8, rng.chance(0.97) ? kvs.length : rng.pick(INTERESTING_U64));
  for (const kv of kvs) {
    w.str(kv.key, rng.chance(0.01) ? rng.pick(INTERESTING_U64) : undefined);
    w.int(4, kv.type);
    kv.write(w);
  }
  let offset = 0n;
  const sizes: bigint[] = [];
  for (const t of tensors) {
    const nel = t.ne.reduce((a, b) => a * b, 1n);
    const bytes = (nel / BigInt(t.type.blockSize)) * BigInt(t.type.typeSize);
    let ne = t.ne;
    let id = t.type.id;
    let off = offset;
    if (rng.chance(0.04))
      ne = [...ne, ...Array.from({ length: 1 + rng.int(3) }, () => rng.pick(INTERESTING_U64))];
    if (rng.chance(0.03)) id = rng.pick([4, 5, 31, 39, 40, 1000, 0xffffffff]);
    if (rng.chance(0.03)) off = rng.chance(0.5) ? offset + 1n : rng.pick(INTERESTING_U64);
    if (rng.chance(0.02)) ne = ne.map(() => (1n << 21n) + 1n);
    w.str(rng.chance(0.02) ? rng.pick(["", "x".repeat(64), tensors[0]!.name]) : t.name);
    w.int(4, rng.chance(0.02) ? rng.pick([5, 0xffffffff]) : ne.length);
    for (const d of ne) w.int(8, d);
    w.int(4, id);
    w.int(8, off);
    sizes.push(bytes);
    offset += ((bytes + BigInt(alignment) - 1n) / BigInt(alignment)) * BigInt(alignment);
  }
  // (A 2^31 alignment is padded to 4096 only: the reader must refuse the data offset it implies.)
  while (w.length % Math.min(alignment, 4096)) w.u8(0);
  // Data: exact, short (truncated), or longer.
  let data = Number(offset > 8192n ? 8192n : offset);
  if (rng.chance(0.08)) data = rng.int(data + 1);
  else if (rng.chance(0.05)) data += rng.int(64);
  return concat(w.done(), new Uint8Array(data));
}

/**
 * Walks a (possibly broken) GGUF as the format says, recording each integer field it passes
 * (offset, width), until the bytes stop making sense: the places a field mutation should hit.
 */
export function ggufFields(b: Uint8Array): [number, number][] {
  const out: [number, number][] = [];
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  let p = 0;
  const need = (n: number) => p + n <= b.length;
  const u32 = () => (need(4) ? (out.push([p, 4]), (p += 4), dv.getUint32(p - 4, true)) : undefined);
  const u64 = () =>
    need(8) ? (out.push([p, 8]), (p += 8), dv.getBigUint64(p - 8, true)) : undefined;
  const str = () => {
    const n = u64();
    if (n === undefined || n > BigInt(b.length - p)) return false;
    p += Number(n);
    return true;
  };
  const value = (t: number): boolean => {
    if (t === 8) return str();
    const s = SIZES[t];
    if (s === undefined) return false;
    if (!need(s)) return false;
    out.push([p, s]);
    p += s;
    return true;
  };
  if (u32() === undefined || u32() === undefined) return out;
  const nt = u64();
  const nkv = u64();
  if (nt === undefined || nkv === undefined) return out;
  for (let i = 0n; i < nkv && i < 4096n; i++) {
    if (!str()) return out;
    const t = u32();
    if (t === undefined) return out;
    if (t === 9) {
      const et = u32();
      const n = u64();
      if (et === undefined || n === undefined || n > 4096n) return out;
      for (let j = 0n; j < n; j++) if (!value(et)) return out;
    } else if (!value(t)) return out;
  }
  for (let i = 0n; i < nt && i < 4096n; i++) {
    if (!str()) return out;
    const nd = u32();
    if (nd === undefined || nd > 8) return out;
    for (let d = 0; d < nd; d++) if (u64() === undefined) return out;
    if (u32() === undefined || u64() === undefined) return out;
  }
  return out;
}

/** Boundary values into a known integer field (count, length, type, dim, offset, scalar). */
export function mutateGGUF(rng: Rng, input: Uint8Array): Uint8Array {
  const fields = ggufFields(input);
  const b = Uint8Array.from(input);
  if (!fields.length) return b;
  const [at, w] = rng.pick(fields);
  const dv = new DataView(b.buffer);
  const v = rng.chance(0.7)
    ? rng.pick(INTERESTING_U64)
    : BigInt(rng.int(64)) + (rng.chance(0.5) ? 0n : -BigInt(rng.int(4)));
  const x = BigInt.asUintN(w * 8, v);
  if (w === 8) dv.setBigUint64(at, x, true);
  else if (w === 4) dv.setUint32(at, Number(x), true);
  else if (w === 2) dv.setUint16(at, Number(x), true);
  else b[at] = Number(x & 0xffn);
  if (rng.chance(0.1)) return b.subarray(0, rng.int(b.length + 1)); // and truncate
  return b;
}

const DICT = ["GGUF", "general.alignment", "gemma3.", "tokenizer.ggml.tokens", "blk.0.", ".weight"]
  .map((s) => enc.encode(s))
  .concat([new Uint8Array([9, 0, 0, 0, 8, 0, 0, 0]), new Uint8Array(8).fill(0xff)]);

/** The error's message with the file, tensor and key names (arbitrary bytes) folded away. */
function message(e: GGUFError): string {
  let m = e.message.replace(/^<memory>: /, "");
  for (const name of [e.tensor, e.key]) if (name !== undefined) m = m.split(`"${name}"`).join("…");
  return normalise(m);
}

export async function runGGUF(input: Uint8Array): Promise<Outcome> {
  const stats: GGUFReadStats = { largestAllocation: 0 };
  let feature: string;
  try {
    const h = await parseGGUF(input, { stats });
    feature = "accept";
    // Accepted: every tensor lies inside the file at its padded running offset.
    let expected = 0;
    for (const t of h.tensors.values()) {
      if (t.offset !== expected)
        throw new Finding(`accepted tensor "${t.name}" at ${t.offset} ≠ ${expected}`);
      if (h.dataOffset + t.offset + t.nbytes > input.length)
        throw new Finding(`accepted tensor "${t.name}" runs past the end of the file`);
      expected += Math.ceil(t.nbytes / h.alignment) * h.alignment;
    }
    // What the loader does next (no tensor bytes): config, tokenizer, expected weights.
    const src = { path: "<memory>", metadata: h.metadata, tensors: h.tensors };
    try {
      ggufTokenizerInfo(src);
      const cfg = ggufTextConfig(src);
      checkGGUFTextWeights(cfg, src);
      feature += " + loadable";
    } catch (e) {
      if (!(e instanceof GGUFError)) throw e;
      feature += ` + ${e.code} ${message(e)}`;
    }
  } catch (e) {
    if (e instanceof Finding || !(e instanceof GGUFError)) throw e;
    feature = `${e.code} ${message(e)}`;
  }
  // The reader sizes nothing from an unchecked count: its buffers never outgrow the file.
  if (stats.largestAllocation > input.length + ALLOC_SLACK)
    throw new Finding(`allocated ${stats.largestAllocation} bytes for a ${input.length}-byte file`);
  return { feature, allocated: stats.largestAllocation };
}

/** Valid seeds: a gemma3-like header, every value type, alignments 1/32/64. */
function seeds(): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let s = 1; s <= 24; s++) {
    // Rng-free determinism: seeds come from the generator with fixed seeds, kept if accepted
    // by construction (no breakage drawn); the engine runs them all anyway.
    out.push(generateGGUF(new SeedRng(s) as unknown as Rng));
  }
  return out;
}

/** A Rng that never draws the rare breakages (chance(p) is false for p < 0.5). */
class SeedRng {
  private x: number;
  constructor(seed: number) {
    this.x = seed * 2654435761;
  }
  u32(): number {
    this.x = (Math.imul(this.x, 1103515245) + 12345) >>> 0;
    return this.x;
  }
  int(n: number): number {
    return n <= 1 ? 0 : (this.u32() >>> 8) % n;
  }
  chance(p: number): boolean {
    return p >= 0.5 && (p >= 0.9 || (this.u32() & 1) === 0);
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
}

export const ggufTarget: Target = {
  name: "gguf",
  seeds,
  generate: generateGGUF,
  mutate: mutateGGUF,
  run: runGGUF,
  dictionary: DICT,
  coverageFiles: [
    "/packages/model/dist/gguf.js",
    "/packages/model/dist/gguf_metadata.js",
    "/packages/model/dist/gguf_load.js",
  ],
  maxInputBytes: 64 * 1024,
  hangMs: 1000,
};
