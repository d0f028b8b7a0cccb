// safetensors reading with the reference crate's validation (huggingface/safetensors,
// safetensors/src/tensor.rs: read_metadata + Metadata::validate), file by file or across the
// shards of model.safetensors.index.json. Opening reads only the header; tensor bytes come from
// positioned reads in bounded chunks, so a 50 GB checkpoint never sits in host memory at once.
//
// Layout: [u64 LE N][N bytes of UTF-8 JSON header][data section]. Header: optional
// "__metadata__" (string → string) and, per tensor, {dtype, shape, data_offsets: [begin, end]}
// with offsets relative to the data section. Sorted by offset, the tensors must tile the data
// section exactly: contiguous from 0, no gap, no overlap, ending at its last byte.
import { open, stat, readFile, type FileHandle } from "node:fs/promises";
import { isAbsolute, join, relative, resolve } from "node:path";
import { headerJsonProblem } from "./safetensors_json.js";

/** Largest header the reference accepts (MAX_HEADER_SIZE). */
export const MAX_HEADER_SIZE = 100_000_000;
const U64_MAX = (1n << 64n) - 1n;
/** Largest single read: bounds the transient host memory of a load. */
export const READ_CHUNK_BYTES = 64 * 1024 * 1024;

/** Element width in bits of every dtype the reference knows (Dtype::bitsize). */
export const SAFETENSORS_DTYPE_BITS = Object.freeze({
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  F64: 64,
  I64: 64,
  U64: 64,
});
export type SafetensorsDType = keyof typeof SAFETENSORS_DTYPE_BITS;

/** One tensor of a file. begin/end are byte offsets into the data section (end exclusive). */
export interface TensorInfo {
  dtype: SafetensorsDType;
  shape: number[];
  begin: number;
  end: number;
}

/** A malformed, truncated or missing safetensors file or shard; names the file and tensor. */
export class SafetensorsError extends Error {
  constructor(
    message: string,
    readonly file: string,
    readonly tensor?: string,
  ) {
    super(message);
    this.name = "SafetensorsError";
  }
}

export type ProgressCallback = (bytesDone: number, bytesTotal: number) => void;

function fail(file: string, msg: string, tensor?: string): never {
  const where = tensor === undefined ? file : `${file}: tensor "${tensor}"`;
  throw new SafetensorsError(`${where}: ${msg}`, file, tensor);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isIndex(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0;
}

/**
 * Validates a header (the N bytes after the length) against a file of `fileSize` bytes.
 * Exported for tests and tools; `SafetensorsFile.open` calls it.
 */
export function parseHeader(
  file: string,
  headerBytes: Uint8Array,
  fileSize: number,
): { tensors: Map<string, TensorInfo>; metadata: Record<string, string> | null } {
  let text: string;
  try {
    // ignoreBOM keeps a BOM in the text so JSON.parse rejects it, as serde_json does.
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    fail(file, "header is not valid UTF-8");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(file, `header is not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(json)) fail(file, "header is not a JSON object");

  let metadata: Record<string, string> | null = null;
  const entries: [string, TensorInfo][] = [];
  for (const [name, v] of Object.entries(json)) {
    if (name === "__metadata__") {
      if (v === null) continue;
      if (!isObject(v)) fail(file, "__metadata__ must be an object of strings");
      for (const [k, s] of Object.entries(v))
        if (typeof s !== "string") fail(file, `__metadata__["${k}"] must be a string`);
      metadata = v as Record<string, string>;
      continue;
    }
    if (!isObject(v)) fail(file, "entry is not an object {dtype, shape, data_offsets}", name);
    const { dtype, shape, data_offsets: off } = v;
    if (typeof dtype !== "string") fail(file, "missing or non-string dtype", name);
    if (!Object.hasOwn(SAFETENSORS_DTYPE_BITS, dtype)) fail(file, `unknown dtype "${dtype}"`, name);
    if (!Array.isArray(shape) || !shape.every(isIndex))
      fail(file, `shape must be a list of integers >= 0, got ${JSON.stringify(shape)}`, name);
    if (!Array.isArray(off) || off.length !== 2 || !off.every(isIndex))
      fail(
        file,
        `data_offsets must be [begin, end] integers >= 0, got ${JSON.stringify(off)}`,
        name,
      );
    const [begin, end] = off as [number, number];
    entries.push([name, { dtype: dtype as SafetensorsDType, shape, begin, end }]);
  }

  // After the entry checks (their messages are more specific): what JSON.parse let through.
  const problem = headerJsonProblem(text);
  if (problem)
    fail(file, `${problem.message} (the format and serde_json refuse it)`, problem.tensor);

  // Metadata::validate: sorted by (begin, end), each tensor starts where the previous ended.
  entries.sort(([, a], [, b]) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  let prev: string | undefined;
  for (const [name, t] of entries) {
    if (t.begin !== pos) {
      const what =
        t.begin < pos
          ? `overlaps tensor "${prev}" (it ends at ${pos})`
          : `leaves a gap of ${t.begin - pos} bytes after ${prev === undefined ? "the data start" : `tensor "${prev}"`}`;
      fail(file, `data_offsets [${t.begin}, ${t.end}] ${what}`, name);
    }
    if (t.end < t.begin) fail(file, `data_offsets [${t.begin}, ${t.end}]: end < begin`, name);
    // BigInt: a lying shape must not overflow into a matching span. As the reference's checked_mul
    // (ValidationOverflow), a product past u64 fails even when a later dimension is 0.
    let count = 1n;
    for (const d of t.shape)
      if ((count *= BigInt(d)) > U64_MAX)
        fail(file, `shape [${t.shape.join(", ")}] overflows u64 (ValidationOverflow)`, name);
    const bits = count * BigInt(SAFETENSORS_DTYPE_BITS[t.dtype]);
    if (bits > U64_MAX)
      fail(file, `${t.dtype} × shape [${t.shape.join(", ")}] overflows u64 bits`, name);
    if (bits % 8n !== 0n)
      fail(file, `${t.dtype} × shape [${t.shape.join(", ")}] is not a whole number of bytes`, name);
    if (bits / 8n !== BigInt(t.end - t.begin))
      fail(
        file,
        `${t.dtype} × shape [${t.shape.join(", ")}] needs ${bits / 8n} bytes but data_offsets ` +
          `[${t.begin}, ${t.end}] span ${t.end - t.begin}`,
        name,
      );
    pos = t.end;
    prev = name;
  }
  const dataBytes = fileSize - 8 - headerBytes.length;
  if (pos !== dataBytes) {
    if (pos > dataBytes)
      fail(
        file,
        `data_offsets end at ${pos} but the data section has only ${dataBytes} bytes (truncated file?)`,
        prev,
      );
    fail(
      file,
      `tensors cover ${pos} bytes but the data section has ${dataBytes} (${dataBytes - pos} trailing bytes)`,
    );
  }
  return { tensors: new Map(entries), metadata };
}

/**
 * The header length from the 8-byte prefix of a `fileSize`-byte file, checked as read_metadata
 * does (HeaderTooSmall, HeaderTooLarge, InvalidHeaderLength). `open` and `parseSafetensors` share it.
 */
function headerLength(file: string, prefix: Uint8Array, fileSize: number): number {
  if (fileSize < 8)
    fail(file, `file is ${fileSize} bytes, shorter than the 8-byte header length (truncated)`);
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_SIZE))
    fail(file, `header length ${n} exceeds the ${MAX_HEADER_SIZE}-byte limit (corrupt length?)`);
  const headerLen = Number(n);
  if (8 + headerLen > fileSize)
    fail(
      file,
      `header length ${headerLen} runs past the end of the ${fileSize}-byte file (truncated or lying length)`,
    );
  return headerLen;
}

/**
 * Validates a whole safetensors file held in memory, with exactly the checks of
 * `SafetensorsFile.open` (for fuzzing and tools that already hold the bytes).
 * @returns the tensors, the metadata and the data section's offset in `bytes`
 * @throws SafetensorsError
 */
export function parseSafetensors(
  bytes: Uint8Array,
  file = "<memory>",
): {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string> | null;
  dataOffset: number;
} {
  const headerLen = headerLength(file, bytes, bytes.length);
  const { tensors, metadata } = parseHeader(file, bytes.subarray(8, 8 + headerLen), bytes.length);
  return { tensors, metadata, dataOffset: 8 + headerLen };
}

/** Reads exactly `length` bytes at `position` into `dst[offset…]`, or fails naming the tensor. */
async function readExactly(
  fh: FileHandle,
  file: string,
  tensor: string | undefined,
  dst: Uint8Array,
  offset: number,
  length: number,
  position: number,
): Promise<void> {
  while (length > 0) {
    let n: number;
    try {
      ({ bytesRead: n } = await fh.read(dst, offset, length, position));
    } catch (e) {
      fail(file, `read failed: ${(e as Error).message}`, tensor);
    }
    if (n === 0)
      fail(file, `unexpected end of file at byte ${position} (file changed since open?)`, tensor);
    offset += n;
    position += n;
    length -= n;
  }
}

/** One open .safetensors file: header parsed and validated, data read on demand. */
export class SafetensorsFile {
  private closed = false;

  private constructor(
    /** The path as given to open(). */
    readonly path: string,
    private readonly fh: FileHandle,
    /** File size in bytes. */
    readonly fileSize: number,
    /** Absolute file offset of the data section (8 + header length). */
    readonly dataOffset: number,
    /** Tensors by name. */
    readonly tensors: Map<string, TensorInfo>,
    /** The header's __metadata__ (e.g. {format: "pt"}), or null. */
    readonly metadata: Record<string, string> | null,
  ) {}

  /** Opens `path` and validates its header; reads nothing else. */
  static async open(path: string): Promise<SafetensorsFile> {
    let fh: FileHandle;
    try {
      fh = await open(path, "r");
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      fail(path, code === "ENOENT" ? "file not found" : `cannot open: ${(e as Error).message}`);
    }
    try {
      const size = (await fh.stat()).size;
      const lenBytes = new Uint8Array(8);
      if (size >= 8) await readExactly(fh, path, undefined, lenBytes, 0, 8, 0);
      const headerLen = headerLength(path, lenBytes, size);
      const header = new Uint8Array(headerLen);
      await readExactly(fh, path, undefined, header, 0, headerLen, 8);
      const { tensors, metadata } = parseHeader(path, header, size);
      return new SafetensorsFile(path, fh, size, 8 + headerLen, tensors, metadata);
    } catch (e) {
      await fh.close().catch(() => {});
      throw e;
    }
  }

  /** The tensor's entry, or a SafetensorsError naming the file and tensor. */
  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) fail(this.path, "no such tensor in this file", name);
    return t;
  }

  /**
   * Reads a whole tensor's bytes (little-endian, as stored).
   * @param onProgress called after each chunk with (bytesDone, bytesTotal)
   * @param chunkBytes largest single read (default 64 MB)
   */
  async read(
    name: string,
    onProgress?: ProgressCallback,
    chunkBytes = READ_CHUNK_BYTES,
  ): Promise<Uint8Array> {
    const t = this.info(name);
    const out = new Uint8Array(t.end - t.begin);
    await this.readInto(name, 0, out, onProgress, chunkBytes);
    return out;
  }

  /**
   * Reads bytes [start, start + dst.length) of a tensor's data into `dst`.
   * @param onProgress called after each chunk with (bytes of dst filled, dst.length)
   * @param chunkBytes largest single read (default 64 MB)
   */
  async readInto(
    name: string,
    start: number,
    dst: Uint8Array,
    onProgress?: ProgressCallback,
    chunkBytes = READ_CHUNK_BYTES,
  ): Promise<void> {
    const t = this.info(name);
    if (this.closed) fail(this.path, "read after close()", name);
    const len = dst.length;
    if (!Number.isInteger(start) || start < 0 || start + len > t.end - t.begin)
      fail(
        this.path,
        `byte range [${start}, ${start + len}) is outside the tensor's ${t.end - t.begin} bytes`,
        name,
      );
    const base = this.dataOffset + t.begin + start;
    let done = 0;
    do {
      const n = Math.min(Math.max(1, chunkBytes), len - done);
      await readExactly(this.fh, this.path, name, dst, done, n, base + done);
      done += n;
      onProgress?.(done, len);
    } while (done < len);
  }

  /** Closes the file; later reads fail. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}

/** Where one tensor of a checkpoint lives. */
export interface CheckpointEntry {
  file: SafetensorsFile;
  info: TensorInfo;
}

/** A checkpoint directory: one model.safetensors or the shards of model.safetensors.index.json. */
export class Checkpoint {
  constructor(
    readonly dir: string,
    /** Every open file (one, or each shard once). */
    readonly files: SafetensorsFile[],
    /** Tensor name (as stored, e.g. "model.norm.weight") → its file and entry. */
    readonly tensors: Map<string, CheckpointEntry>,
    /** The index file for sharded checkpoints, else null. */
    readonly indexFile: string | null,
  ) {}

  get sharded(): boolean {
    return this.indexFile !== null;
  }

  /** The tensor's file and entry, or a SafetensorsError naming the checkpoint. */
  entry(name: string): CheckpointEntry {
    const e = this.tensors.get(name);
    if (!e)
      fail(this.indexFile ?? join(this.dir, SINGLE_FILE), "no such tensor in the checkpoint", name);
    return e;
  }

  /** Reads a whole tensor's bytes (see SafetensorsFile.read). */
  read(
    name: string,
    onProgress?: ProgressCallback,
    chunkBytes = READ_CHUNK_BYTES,
  ): Promise<Uint8Array> {
    return this.entry(name).file.read(name, onProgress, chunkBytes);
  }

  async close(): Promise<void> {
    await Promise.all(this.files.map((f) => f.close()));
  }
}

export const SINGLE_FILE = "model.safetensors";
export const INDEX_FILE = "model.safetensors.index.json";

async function exists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/**
 * Opens a checkpoint directory. As transformers does, a single model.safetensors wins over an
 * index. For an index, every shard it names is opened once; each mapped tensor must exist in its
 * shard and no tensor may appear in two shards. Tensors a shard holds beyond the weight_map are
 * kept (transformers loads whole shards).
 */
export async function openCheckpoint(dir: string): Promise<Checkpoint> {
  const single = join(dir, SINGLE_FILE);
  if (await exists(single)) {
    const f = await SafetensorsFile.open(single);
    const tensors = new Map([...f.tensors].map(([name, info]) => [name, { file: f, info }]));
    return new Checkpoint(dir, [f], tensors, null);
  }
  const indexPath = join(dir, INDEX_FILE);
  if (!(await exists(indexPath))) fail(dir, `no ${SINGLE_FILE} or ${INDEX_FILE} in this directory`);

  let index: unknown;
  try {
    index = JSON.parse(await readFile(indexPath, "utf8"));
  } catch (e) {
    fail(indexPath, `cannot read the index: ${(e as Error).message}`);
  }
  if (!isObject(index) || !isObject(index.weight_map))
    fail(indexPath, 'index has no "weight_map" object');
  const weightMap = index.weight_map;

  // Shard names are paths relative to dir; refuse ones that escape it.
  const shardOf = new Map<string, string>();
  const firstTensor = new Map<string, string>();
  for (const [name, shard] of Object.entries(weightMap)) {
    if (typeof shard !== "string" || shard === "")
      fail(indexPath, `weight_map entry is not a file name: ${JSON.stringify(shard)}`, name);
    const rel = relative(resolve(dir), resolve(dir, shard));
    if (isAbsolute(shard) || rel.startsWith("..") || isAbsolute(rel))
      fail(indexPath, `shard "${shard}" is outside the checkpoint directory`, name);
    shardOf.set(name, shard);
    if (!firstTensor.has(shard)) firstTensor.set(shard, name);
  }

  const files = new Map<string, SafetensorsFile>();
  try {
    for (const [shard, someTensor] of firstTensor) {
      const path = join(dir, shard);
      if (!(await exists(path)))
        fail(indexPath, `missing shard "${shard}" (mapped for this tensor and others)`, someTensor);
      files.set(shard, await SafetensorsFile.open(path));
    }
    const tensors = new Map<string, CheckpointEntry>();
    for (const f of files.values())
      for (const [name, info] of f.tensors) {
        const seen = tensors.get(name);
        if (seen) fail(f.path, `duplicate tensor: also in ${seen.file.path}`, name);
        tensors.set(name, { file: f, info });
      }
    for (const [name, shard] of shardOf) {
      const f = files.get(shard)!;
      if (!f.tensors.has(name))
        fail(f.path, `the index maps this tensor to "${shard}", which does not contain it`, name);
    }
    return new Checkpoint(dir, [...files.values()], tensors, indexPath);
  } catch (e) {
    await Promise.all([...files.values()].map((f) => f.close().catch(() => {})));
    throw e;
  }
}
