// GGUF reading (v2/v3, little-endian) with llama.cpp's post-CVE validation (ggml/src/gguf.cpp after
// CVE-2025-53630, CVE-2026-27940, CVE-2026-33298; PRs #18674, #19856): every count, length, size and
// offset is checked in BigInt before it is used, and nothing is allocated from a count the file has
// not proven it can back with bytes. Opening reads the header only (in ≤ 1 MiB chunks); tensor bytes
// come from positioned reads, as for safetensors.
//
// Layout: "GGUF" u32 version, u64 n_tensors, u64 n_kv; n_kv × (string key, u32 type, value);
// n_tensors × (string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset); padding to
// general.alignment (default 32); the data section. ne[0] is the innermost (contiguous) dimension,
// so a torch [out, in] weight has ne = [in, out]. Offsets are relative to the data section and must
// equal the running sum of the previous tensors' sizes, each padded to the alignment.
import { open, type FileHandle } from "node:fs/promises";

/** Metadata value types (gguf.h enum gguf_type). */
export const GGUFValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
export type GGUFValueType = (typeof GGUFValueType)[keyof typeof GGUFValueType];

const VALUE_TYPE_NAMES = Object.fromEntries(
  Object.entries(GGUFValueType).map(([k, v]) => [v, k]),
) as Record<number, string>;
/** Bytes of one fixed-size value (strings and arrays have none). */
const VALUE_SIZE: Record<number, number> = {
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

/**
 * Every ggml tensor type llama.cpp still defines, with its block size (elements) and block bytes
 * (ggml.c type_traits; gguf-py GGML_QUANT_SIZES). Ids 4, 5, 31–33 and 36–38 were removed upstream
 * and are refused like unknown ids.
 */
export const GGML_TYPES = Object.freeze({
  F32: { id: 0, blockSize: 1, typeSize: 4 },
  F16: { id: 1, blockSize: 1, typeSize: 2 },
  Q4_0: { id: 2, blockSize: 32, typeSize: 18 },
  Q4_1: { id: 3, blockSize: 32, typeSize: 20 },
  Q5_0: { id: 6, blockSize: 32, typeSize: 22 },
  Q5_1: { id: 7, blockSize: 32, typeSize: 24 },
  Q8_0: { id: 8, blockSize: 32, typeSize: 34 },
  Q8_1: { id: 9, blockSize: 32, typeSize: 36 },
  Q2_K: { id: 10, blockSize: 256, typeSize: 84 },
  Q3_K: { id: 11, blockSize: 256, typeSize: 110 },
  Q4_K: { id: 12, blockSize: 256, typeSize: 144 },
  Q5_K: { id: 13, blockSize: 256, typeSize: 176 },
  Q6_K: { id: 14, blockSize: 256, typeSize: 210 },
  Q8_K: { id: 15, blockSize: 256, typeSize: 292 },
  IQ2_XXS: { id: 16, blockSize: 256, typeSize: 66 },
  IQ2_XS: { id: 17, blockSize: 256, typeSize: 74 },
  IQ3_XXS: { id: 18, blockSize: 256, typeSize: 98 },
  IQ1_S: { id: 19, blockSize: 256, typeSize: 50 },
  IQ4_NL: { id: 20, blockSize: 32, typeSize: 18 },
  IQ3_S: { id: 21, blockSize: 256, typeSize: 110 },
  IQ2_S: { id: 22, blockSize: 256, typeSize: 82 },
  IQ4_XS: { id: 23, blockSize: 256, typeSize: 136 },
  I8: { id: 24, blockSize: 1, typeSize: 1 },
  I16: { id: 25, blockSize: 1, typeSize: 2 },
  I32: { id: 26, blockSize: 1, typeSize: 4 },
  I64: { id: 27, blockSize: 1, typeSize: 8 },
  F64: { id: 28, blockSize: 1, typeSize: 8 },
  IQ1_M: { id: 29, blockSize: 256, typeSize: 56 },
  BF16: { id: 30, blockSize: 1, typeSize: 2 },
  TQ1_0: { id: 34, blockSize: 256, typeSize: 54 },
  TQ2_0: { id: 35, blockSize: 256, typeSize: 66 },
  MXFP4: { id: 39, blockSize: 32, typeSize: 17 },
  NVFP4: { id: 40, blockSize: 64, typeSize: 36 },
});
export type GGMLTypeName = keyof typeof GGML_TYPES;
const TYPE_BY_ID = new Map(
  Object.entries(GGML_TYPES).map(([name, t]) => [t.id, { name: name as GGMLTypeName, ...t }]),
);

/** The name of a ggml type id, or undefined for an unknown/removed id. */
export function ggmlTypeName(id: number): GGMLTypeName | undefined {
  return TYPE_BY_ID.get(id)?.name;
}

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** ggml's GGML_MAX_DIMS. */
export const GGUF_MAX_DIMS = 4;
/** ggml's GGML_MAX_NAME: tensor names are shorter than this many bytes. */
export const GGUF_MAX_NAME = 64;
/** Longest metadata string accepted (llama.cpp allows 1 GiB; no real key needs a fraction of this). */
export const GGUF_MAX_STRING_BYTES = 256 * 1024 * 1024;
/** Most elements of a metadata array (llama.cpp's GGUF_MAX_ARRAY_ELEMENTS). */
export const GGUF_MAX_ARRAY_ELEMENTS = 1024 * 1024 * 1024;
/** Header bytes read per file access: the largest buffer the header reader allocates by itself. */
export const GGUF_READ_CHUNK = 1024 * 1024;

const I64_MAX = (1n << 63n) - 1n;
const SAFE_MAX = BigInt(Number.MAX_SAFE_INTEGER);

export type GGUFErrorCode =
  | "E_IO" // cannot open or read
  | "E_MAGIC" // not a GGUF file
  | "E_VERSION" // unsupported version or byte order
  | "E_TRUNCATED" // the file ends inside the header or a tensor's data
  | "E_BOUNDS" // a length or count larger than the bytes left in the file
  | "E_OVERFLOW" // a size or element count beyond 2^63 (or beyond 2^53 for shapes)
  | "E_VALUE_TYPE" // an unknown metadata value type, a nested array, a key of the wrong type
  | "E_ALIGNMENT" // general.alignment 0, not a power of two, or not a u32
  | "E_DUPLICATE" // a key or tensor name seen twice
  | "E_NAME" // empty or over-long tensor name
  | "E_DIMS" // n_dims > 4
  | "E_TENSOR_TYPE" // unknown or removed ggml type id
  | "E_BLOCK" // ne[0] not a multiple of the type's block size
  | "E_OFFSET" // a tensor offset not equal to the padded running sum
  | "E_UNSUPPORTED_TYPE" // a known type this runtime cannot load (named tensor)
  | "E_METADATA" // a missing or invalid model key (gemma3.*)
  | "E_TENSOR"; // a missing, unexpected or mis-shaped model tensor

/** A malformed, hostile, truncated or unsupported GGUF file; names the file and what is wrong. */
export class GGUFError extends Error {
  constructor(
    message: string,
    readonly code: GGUFErrorCode,
    readonly file: string,
    /** The tensor concerned, if any. */
    readonly tensor?: string,
    /** The metadata key concerned, if any. */
    readonly key?: string,
  ) {
    super(message);
    this.name = "GGUFError";
  }
}

/** A numeric array is a typed array; bool and string arrays are plain arrays. */
export type GGUFArray =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array
  | BigUint64Array
  | BigInt64Array
  | boolean[]
  | string[];

/** One metadata value. u64/i64 scalars are bigint; everything else is a JS number, bool or string. */
export interface GGUFMetadataValue {
  type: GGUFValueType;
  /** Element type for arrays. */
  elementType?: GGUFValueType;
  value: number | bigint | boolean | string | GGUFArray;
}

/** One tensor of the file. */
export interface GGUFTensorInfo {
  name: string;
  /** ggml type id and name. */
  typeId: number;
  type: GGMLTypeName;
  /** ne as stored: ne[0] innermost. */
  ne: number[];
  /** Row-major shape (ne reversed): [out, in] for a linear weight. */
  shape: number[];
  /** Byte offset in the data section. */
  offset: number;
  /** Bytes of data (unpadded). */
  nbytes: number;
}

/** Header-reader statistics, for tests: the reader never allocates from an unchecked count. */
export interface GGUFReadStats {
  /** Largest single buffer or typed array the reader allocated, in bytes. */
  largestAllocation: number;
}

/** Random access to the file's bytes. */
interface ByteSource {
  readonly size: number;
  /** Reads up to dst.length bytes at `position`; returns the count read (0 at end of file). */
  read(dst: Uint8Array, offset: number, length: number, position: number): Promise<number>;
}

function fileSource(fh: FileHandle, size: number): ByteSource {
  return {
    size,
    read: async (dst, offset, length, position) =>
      (await fh.read(dst, offset, length, position)).bytesRead,
  };
}

function memorySource(bytes: Uint8Array): ByteSource {
  return {
    size: bytes.length,
    read: async (dst, offset, length, position) => {
      const n = Math.max(0, Math.min(length, bytes.length - position));
      dst.set(bytes.subarray(position, position + n), offset);
      return n;
    },
  };
}

// ignoreBOM: a leading U+FEFF is part of the string (Gemma has tokens "\uFEFF//", "\uFEFF#", …).
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true });

/** Sequential header reads over a ByteSource through one bounded buffer. */
class Cursor {
  private buf: Uint8Array;
  private view: DataView;
  /** File position of buf[0] and number of valid bytes in buf. */
  private bufPos = 0;
  private bufLen = 0;
  /** Absolute read position. */
  pos = 0;
  /** Byte length of the last string read (names are limited in bytes, not characters). */
  lastStringBytes = 0;

  constructor(
    private readonly src: ByteSource,
    private readonly file: string,
    private readonly stats: GGUFReadStats,
  ) {
    this.buf = this.alloc(Math.max(1, Math.min(GGUF_READ_CHUNK, src.size)));
    this.view = new DataView(this.buf.buffer);
  }

  alloc(n: number): Uint8Array {
    if (n > this.stats.largestAllocation) this.stats.largestAllocation = n;
    return new Uint8Array(n);
  }

  /** Bytes between the read position and the end of the file. */
  get left(): number {
    return this.src.size - this.pos;
  }

  fail(code: GGUFErrorCode, msg: string, tensor?: string, key?: string): never {
    const where =
      tensor !== undefined ? `tensor "${tensor}": ` : key !== undefined ? `key "${key}": ` : "";
    throw new GGUFError(`${this.file}: ${where}${msg}`, code, this.file, tensor, key);
  }

  /** Makes `n` (≤ buffer size) bytes at pos available in the buffer. */
  async need(n: number, what: string): Promise<void> {
    if (this.pos + n > this.src.size)
      this.fail(
        "E_TRUNCATED",
        `file ends at byte ${this.src.size} while reading ${what} (${n} bytes at ${this.pos}): truncated`,
      );
    if (this.pos >= this.bufPos && this.pos + n <= this.bufPos + this.bufLen) return;
    const len = Math.min(this.buf.length, this.src.size - this.pos);
    let got = 0;
    while (got < len) {
      let r: number;
      try {
        r = await this.src.read(this.buf, got, len - got, this.pos + got);
      } catch (e) {
        this.fail("E_IO", `read failed: ${(e as Error).message}`);
      }
      if (r === 0) break;
      got += r;
    }
    this.bufPos = this.pos;
    this.bufLen = got;
    if (got < n)
      this.fail("E_TRUNCATED", `unexpected end of file at byte ${this.pos + got} (file changed?)`);
  }

  private at(n: number): number {
    const o = this.pos - this.bufPos;
    this.pos += n;
    return o;
  }
  async u32(what: string): Promise<number> {
    await this.need(4, what);
    return this.view.getUint32(this.at(4), true);
  }
  async u64(what: string): Promise<bigint> {
    await this.need(8, what);
    return this.view.getBigUint64(this.at(8), true);
  }

  /**
   * The next string when it lies whole in the buffer and its length is plausible, without an
   * await (vocabularies hold 262k of them); else undefined, and `string()` reads (or refuses) it.
   */
  bufferedString(): string | undefined {
    const o = this.pos - this.bufPos;
    if (o < 0 || o + 8 > this.bufLen) return undefined;
    const n = this.view.getBigUint64(o, true);
    if (n > BigInt(this.bufLen - o - 8)) return undefined;
    const len = Number(n);
    this.pos += 8 + len;
    this.lastStringBytes = len;
    return utf8.decode(this.buf.subarray(o + 8, o + 8 + len));
  }

  /** A length-prefixed UTF-8 string; the length is checked against the bytes left first. */
  async string(what: string, key?: string, tensor?: string): Promise<string> {
    const n = await this.u64(`${what} length`);
    if (n > BigInt(this.left))
      this.fail(
        "E_BOUNDS",
        `${what} claims ${n} bytes but only ${this.left} remain in the file`,
        tensor,
        key,
      );
    if (n > BigInt(GGUF_MAX_STRING_BYTES))
      this.fail(
        "E_BOUNDS",
        `${what} of ${n} bytes exceeds the ${GGUF_MAX_STRING_BYTES}-byte limit`,
        tensor,
        key,
      );
    const len = Number(n);
    this.lastStringBytes = len;
    if (len <= this.buf.length) {
      await this.need(len, what);
      const o = this.at(len);
      return utf8.decode(this.buf.subarray(o, o + len));
    }
    // Longer than the buffer: proven to exist in the file above, so read it whole.
    const out = this.alloc(len);
    await this.readDirect(out, what);
    return utf8.decode(out);
  }

  private async readDirect(dst: Uint8Array, what: string): Promise<void> {
    let got = 0;
    while (got < dst.length) {
      let r: number;
      try {
        r = await this.src.read(dst, got, dst.length - got, this.pos + got);
      } catch (e) {
        this.fail("E_IO", `read failed: ${(e as Error).message}`);
      }
      if (r === 0) this.fail("E_TRUNCATED", `unexpected end of file in ${what}`);
      got += r;
    }
    this.pos += dst.length;
  }

  /** One scalar of a fixed-size type (buffer already holds it). */
  private scalar(type: number): number | bigint | boolean {
    const v = this.view;
    switch (type) {
      case 0:
        return v.getUint8(this.at(1));
      case 1:
        return v.getInt8(this.at(1));
      case 2:
        return v.getUint16(this.at(2), true);
      case 3:
        return v.getInt16(this.at(2), true);
      case 4:
        return v.getUint32(this.at(4), true);
      case 5:
        return v.getInt32(this.at(4), true);
      case 6:
        return v.getFloat32(this.at(4), true);
      case 7:
        return v.getUint8(this.at(1)) !== 0;
      case 10:
        return v.getBigUint64(this.at(8), true);
      case 11:
        return v.getBigInt64(this.at(8), true);
      default:
        return v.getFloat64(this.at(8), true);
    }
  }

  async value(type: number, key: string): Promise<GGUFMetadataValue> {
    if (type === GGUFValueType.STRING)
      return { type, value: await this.string("string value", key) };
    if (type === GGUFValueType.ARRAY) return this.array(key);
    const size = VALUE_SIZE[type];
    if (size === undefined) this.fail("E_VALUE_TYPE", `unknown value type ${type}`, undefined, key);
    await this.need(size, "value");
    return { type: type as GGUFValueType, value: this.scalar(type) };
  }

  private async array(key: string): Promise<GGUFMetadataValue> {
    const et = await this.u32("array element type");
    if (et === GGUFValueType.ARRAY)
      this.fail(
        "E_VALUE_TYPE",
        "nested arrays are not supported (llama.cpp refuses them)",
        undefined,
        key,
      );
    const minSize = et === GGUFValueType.STRING ? 8 : VALUE_SIZE[et];
    if (minSize === undefined)
      this.fail("E_VALUE_TYPE", `unknown array element type ${et}`, undefined, key);
    const n = await this.u64("array length");
    // Every element takes at least minSize bytes: a count the file cannot back is refused here,
    // before anything is sized from it.
    if (n * BigInt(minSize) > BigInt(this.left))
      this.fail(
        "E_BOUNDS",
        `array of ${n} ${VALUE_TYPE_NAMES[et]} needs at least ${n * BigInt(minSize)} bytes but only ` +
          `${this.left} remain in the file`,
        undefined,
        key,
      );
    if (n > BigInt(GGUF_MAX_ARRAY_ELEMENTS))
      this.fail(
        "E_BOUNDS",
        `array of ${n} elements exceeds the ${GGUF_MAX_ARRAY_ELEMENTS} limit`,
        undefined,
        key,
      );
    const count = Number(n);
    const elementType = et as GGUFValueType;
    if (et === GGUFValueType.STRING) {
      const out: string[] = [];
      for (let i = 0; i < count; i++)
        out.push(this.bufferedString() ?? (await this.string(`string ${i}`, key)));
      return { type: GGUFValueType.ARRAY, elementType, value: out };
    }
    if (et === GGUFValueType.BOOL) {
      const out: boolean[] = [];
      for (let i = 0; i < count; i++) {
        await this.need(1, "bool");
        out.push(this.scalar(7) as boolean);
      }
      return { type: GGUFValueType.ARRAY, elementType, value: out };
    }
    const bytes = this.alloc(count * minSize);
    await this.readInto(bytes, "array data");
    const b = bytes.buffer;
    const typed: Record<number, () => GGUFArray> = {
      0: () => bytes,
      1: () => new Int8Array(b),
      2: () => new Uint16Array(b),
      3: () => new Int16Array(b),
      4: () => new Uint32Array(b),
      5: () => new Int32Array(b),
      6: () => new Float32Array(b),
      10: () => new BigUint64Array(b),
      11: () => new BigInt64Array(b),
      12: () => new Float64Array(b),
    };
    return { type: GGUFValueType.ARRAY, elementType, value: typed[et]!() };
  }

  /** Copies the next dst.length bytes (through the buffer, chunk by chunk). */
  private async readInto(dst: Uint8Array, what: string): Promise<void> {
    let done = 0;
    while (done < dst.length) {
      const n = Math.min(this.buf.length, dst.length - done);
      await this.need(n, what);
      const o = this.at(n);
      dst.set(this.buf.subarray(o, o + n), done);
      done += n;
    }
  }
}

const pad = (x: bigint, a: bigint) => ((x + a - 1n) / a) * a;

export interface GGUFHeader {
  version: number;
  metadata: Map<string, GGUFMetadataValue>;
  tensors: Map<string, GGUFTensorInfo>;
  alignment: number;
  /** Absolute file offset of the data section. */
  dataOffset: number;
}

/** Parses and validates the header of a GGUF held by `src`. */
async function parseHeader(
  src: ByteSource,
  file: string,
  stats: GGUFReadStats,
): Promise<GGUFHeader> {
  const c: Cursor = new Cursor(src, file, stats);
  if (src.size < 4) c.fail("E_MAGIC", `file is ${src.size} bytes: not a GGUF file`);
  const magic = await c.u32("magic");
  if (magic !== GGUF_MAGIC)
    c.fail("E_MAGIC", `bad magic 0x${magic.toString(16).padStart(8, "0")} (expected "GGUF")`);
  const version = await c.u32("version");
  if (version === 1) c.fail("E_VERSION", "GGUF v1 is not supported (llama.cpp dropped it too)");
  if ((version & 0xffff) === 0 && version !== 0)
    c.fail(
      "E_VERSION",
      `version 0x${version.toString(16)}: big-endian GGUF files are not supported`,
    );
  if (version !== 2 && version !== 3) c.fail("E_VERSION", `unsupported GGUF version ${version}`);

  const nTensors = await c.u64("tensor count");
  const nKv = await c.u64("metadata count");
  // Minimum record sizes: a kv is key length (8) + type (4) + a 1-byte value; a tensor info is
  // name length (8) + n_dims (4) + type (4) + offset (8).
  if (nKv * 13n > BigInt(c.left))
    c.fail("E_BOUNDS", `metadata count ${nKv} cannot fit in the ${c.left} bytes left`);
  if (nTensors * 24n > BigInt(c.left))
    c.fail("E_BOUNDS", `tensor count ${nTensors} cannot fit in the ${c.left} bytes left`);

  const metadata = new Map<string, GGUFMetadataValue>();
  for (let i = 0n; i < nKv; i++) {
    const key = await c.string(`key ${i}`);
    if (metadata.has(key)) c.fail("E_DUPLICATE", "duplicate metadata key", undefined, key);
    const type = await c.u32("value type");
    metadata.set(key, await c.value(type, key));
  }

  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const al = metadata.get("general.alignment");
  if (al !== undefined) {
    if (al.type !== GGUFValueType.UINT32)
      c.fail(
        "E_ALIGNMENT",
        `must be a UINT32, got ${VALUE_TYPE_NAMES[al.type]}`,
        undefined,
        "general.alignment",
      );
    alignment = al.value as number;
    if (alignment === 0 || (alignment & (alignment - 1)) !== 0)
      c.fail("E_ALIGNMENT", `${alignment} is not a power of two`, undefined, "general.alignment");
  }
  const align = BigInt(alignment);

  const tensors = new Map<string, GGUFTensorInfo>();
  let expected = 0n; // the padded running sum every offset must equal
  const spans: { name: string; begin: bigint; nbytes: bigint }[] = [];
  for (let i = 0n; i < nTensors; i++) {
    const name = await c.string(`tensor ${i} name`);
    const nameBytes = c.lastStringBytes;
    if (nameBytes === 0 || nameBytes >= GGUF_MAX_NAME)
      c.fail(
        "E_NAME",
        `tensor ${i} name is ${nameBytes} bytes (must be 1..${GGUF_MAX_NAME - 1})`,
        name,
      );
    if (tensors.has(name)) c.fail("E_DUPLICATE", "duplicate tensor name", name);
    const nDims = await c.u32("n_dims");
    if (nDims > GGUF_MAX_DIMS) c.fail("E_DIMS", `n_dims ${nDims} > ${GGUF_MAX_DIMS}`, name);
    const ne: bigint[] = [];
    for (let d = 0; d < nDims; d++) ne.push(await c.u64("dimension"));
    const typeId = await c.u32("tensor type");
    const offset = await c.u64("tensor offset");

    const t = TYPE_BY_ID.get(typeId);
    if (!t) c.fail("E_TENSOR_TYPE", `unknown or removed ggml type ${typeId}`, name);
    let nel = 1n;
    for (const d of ne) {
      if (d > I64_MAX) c.fail("E_OVERFLOW", `dimension ${d} exceeds INT64_MAX`, name);
      nel *= d;
      if (nel > I64_MAX)
        c.fail("E_OVERFLOW", `element count of [${ne.join(", ")}] exceeds INT64_MAX`, name);
    }
    const ne0 = ne[0] ?? 1n;
    if (ne0 % BigInt(t.blockSize) !== 0n)
      c.fail(
        "E_BLOCK",
        `ne[0] = ${ne0} is not a multiple of ${t.name}'s block size ${t.blockSize}`,
        name,
      );
    const nbytes = (nel / BigInt(t.blockSize)) * BigInt(t.typeSize);
    if (offset !== expected)
      c.fail(
        "E_OFFSET",
        `data offset ${offset} is not the padded running sum ${expected} of the tensors before it`,
        name,
      );
    expected += pad(nbytes, align);
    // Shapes become JS numbers: beyond 2^53 they would round, so refuse them here.
    if (nel > SAFE_MAX || expected > SAFE_MAX)
      c.fail("E_OVERFLOW", `shape [${ne.join(", ")}] or data size beyond 2^53`, name);
    const neN = ne.map(Number);
    tensors.set(name, {
      name,
      typeId,
      type: t.name,
      ne: neN,
      shape: [...neN].reverse(),
      offset: Number(offset),
      nbytes: Number(nbytes),
    });
    spans.push({ name, begin: offset, nbytes });
  }

  const dataOffset = pad(BigInt(c.pos), align);
  // Every tensor's bytes must lie inside the file (llama_model_loader: "tensor data is not within
  // the file bounds"); the last tensor's trailing padding may be absent.
  for (const s of spans)
    if (dataOffset + s.begin + s.nbytes > BigInt(src.size))
      c.fail(
        "E_TRUNCATED",
        `data [${dataOffset + s.begin}, ${dataOffset + s.begin + s.nbytes}) runs past the end of the ` +
          `${src.size}-byte file (truncated?)`,
        s.name,
      );
  return { version, metadata, tensors, alignment, dataOffset: Number(dataOffset) };
}

/** Parses an in-memory GGUF (header only is needed; tensor data is checked for presence). */
export async function parseGGUF(
  bytes: Uint8Array,
  opts: { file?: string; stats?: GGUFReadStats } = {},
): Promise<GGUFHeader> {
  return parseHeader(
    memorySource(bytes),
    opts.file ?? "<memory>",
    opts.stats ?? { largestAllocation: 0 },
  );
}

/** One open .gguf file: header parsed and validated, tensor data read on demand. */
export class GGUFFile implements GGUFHeader {
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    readonly fileSize: number,
    readonly version: number,
    readonly metadata: Map<string, GGUFMetadataValue>,
    readonly tensors: Map<string, GGUFTensorInfo>,
    readonly alignment: number,
    readonly dataOffset: number,
  ) {}

  /**
   * Opens `path` and validates its header; reads nothing else.
   * @param opts.stats filled with the reader's largest allocation (tests)
   * @throws GGUFError
   */
  static async open(path: string, opts: { stats?: GGUFReadStats } = {}): Promise<GGUFFile> {
    let fh: FileHandle;
    try {
      fh = await open(path, "r");
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new GGUFError(
        `${path}: ${code === "ENOENT" ? "file not found" : `cannot open: ${(e as Error).message}`}`,
        "E_IO",
        path,
      );
    }
    try {
      const size = (await fh.stat()).size;
      const h = await parseHeader(
        fileSource(fh, size),
        path,
        opts.stats ?? { largestAllocation: 0 },
      );
      return new GGUFFile(
        path,
        fh,
        size,
        h.version,
        h.metadata,
        h.tensors,
        h.alignment,
        h.dataOffset,
      );
    } catch (e) {
      await fh.close().catch(() => {});
      throw e;
    }
  }

  private fail(code: GGUFErrorCode, msg: string, tensor?: string, key?: string): never {
    const where =
      tensor !== undefined ? `tensor "${tensor}": ` : key !== undefined ? `key "${key}": ` : "";
    throw new GGUFError(`${this.path}: ${where}${msg}`, code, this.path, tensor, key);
  }

  /** The tensor's info, or a GGUFError naming the file and tensor. */
  info(name: string): GGUFTensorInfo {
    const t = this.tensors.get(name);
    if (!t) this.fail("E_TENSOR", "no such tensor in this file", name);
    return t;
  }

  /** A metadata value, or undefined. */
  get(key: string): GGUFMetadataValue | undefined {
    return this.metadata.get(key);
  }

  /**
   * Reads bytes [start, start + dst.length) of a tensor's data into `dst`.
   * @throws GGUFError for a range outside the tensor, a read error or a file that shrank
   */
  async readInto(name: string, start: number, dst: Uint8Array): Promise<void> {
    const t = this.info(name);
    if (this.closed) this.fail("E_IO", "read after close()", name);
    if (!Number.isInteger(start) || start < 0 || start + dst.length > t.nbytes)
      this.fail(
        "E_BOUNDS",
        `byte range [${start}, ${start + dst.length}) is outside its ${t.nbytes} bytes`,
        name,
      );
    let done = 0;
    const base = this.dataOffset + t.offset + start;
    while (done < dst.length) {
      let n: number;
      try {
        ({ bytesRead: n } = await this.fh.read(dst, done, dst.length - done, base + done));
      } catch (e) {
        this.fail("E_IO", `read failed: ${(e as Error).message}`, name);
      }
      if (n === 0) this.fail("E_TRUNCATED", `unexpected end of file at byte ${base + done}`, name);
      done += n;
    }
  }

  /** Reads a whole tensor's bytes. */
  async read(name: string): Promise<Uint8Array> {
    const out = new Uint8Array(this.info(name).nbytes);
    await this.readInto(name, 0, out);
    return out;
  }

  /** Closes the file; later reads fail. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}
