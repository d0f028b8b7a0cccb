// A tiny safetensors writer for tests: well-formed by default, with hooks to corrupt every part
// (length prefix, header text, entries, data) so each reader check can be hit on purpose.
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SAFETENSORS_DTYPE_BITS } from "../src/safetensors.js";

export interface TensorSpec {
  dtype: string;
  shape: number[];
  /** Raw bytes; default: (i * 7 + seed) & 0xff patterned bytes of the right length. */
  data?: Uint8Array;
}

// Element sizes: the reader's table (the spec's dtypes); unknown dtypes get 8 bits so tests can
// write them on purpose.
const BITS: Record<string, number> = SAFETENSORS_DTYPE_BITS;

export function patterned(n: number, seed = 0): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 7 + seed) & 0xff;
  return out;
}

export interface BuildOptions {
  metadata?: Record<string, unknown> | null;
  /** Edit the header object after offsets are assigned (to make it lie). */
  editHeader?: (h: Record<string, unknown>) => void;
  /** Replace the header text entirely (bytes after the length prefix). */
  rawHeader?: Uint8Array | string;
  /** Override the 8-byte length prefix. */
  headerLength?: bigint;
  /** Bytes appended after the data section. */
  extra?: Uint8Array;
  /** Bytes cut from the end of the file. */
  truncate?: number;
}

/** Serializes tensors in insertion order (offsets contiguous from 0), header padded to 8 bytes. */
export function buildSafetensors(
  tensors: Record<string, TensorSpec>,
  opts: BuildOptions = {},
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (opts.metadata !== undefined) header.__metadata__ = opts.metadata;
  const chunks: Uint8Array[] = [];
  let off = 0;
  let seed = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const bits = t.shape.reduce((a, b) => a * b, 1) * (BITS[t.dtype] ?? 8);
    const data = t.data ?? patterned(Math.ceil(bits / 8), seed++);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + data.length] };
    chunks.push(data);
    off += data.length;
  }
  opts.editHeader?.(header);
  let headerBytes: Uint8Array;
  if (opts.rawHeader !== undefined) {
    headerBytes =
      typeof opts.rawHeader === "string"
        ? new TextEncoder().encode(opts.rawHeader)
        : opts.rawHeader;
  } else {
    let text = JSON.stringify(header);
    text += " ".repeat((8 - (text.length % 8)) % 8);
    headerBytes = new TextEncoder().encode(text);
  }
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, opts.headerLength ?? BigInt(headerBytes.length), true);
  const extra = opts.extra ?? new Uint8Array(0);
  const total = 8 + headerBytes.length + off + extra.length;
  const out = new Uint8Array(total);
  out.set(len, 0);
  out.set(headerBytes, 8);
  let p = 8 + headerBytes.length;
  for (const c of chunks) {
    out.set(c, p);
    p += c.length;
  }
  out.set(extra, p);
  return opts.truncate ? out.slice(0, total - opts.truncate) : out;
}

const made: string[] = [];

/** A fresh temporary directory for one test (removed by removeTempDirs). */
export function tempDir(tag = "st"): string {
  const dir = mkdtempSync(join(tmpdir(), `gemma3-model-${tag}-`));
  made.push(dir);
  return dir;
}

/** Removes every directory tempDir made (call from afterAll). */
export function removeTempDirs(): void {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** Writes a safetensors file and returns its path. */
export function writeSafetensors(
  path: string,
  tensors: Record<string, TensorSpec>,
  opts: BuildOptions = {},
): string {
  writeFileSync(path, buildSafetensors(tensors, opts));
  return path;
}

/** Writes a sharded checkpoint: shards[file] = tensors, plus model.safetensors.index.json. */
export function writeSharded(
  dir: string,
  shards: Record<string, Record<string, TensorSpec>>,
  editIndex?: (index: {
    metadata: Record<string, unknown>;
    weight_map: Record<string, string>;
  }) => void,
): void {
  mkdirSync(dir, { recursive: true });
  const index = { metadata: { total_size: 0 }, weight_map: {} as Record<string, string> };
  for (const [file, tensors] of Object.entries(shards)) {
    const bytes = buildSafetensors(tensors, { metadata: { format: "pt" } });
    writeFileSync(join(dir, file), bytes);
    for (const name of Object.keys(tensors)) index.weight_map[name] = file;
  }
  editIndex?.(index);
  writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify(index, null, 2));
}
