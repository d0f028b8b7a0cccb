// Typed access to GGUF metadata: every getter checks the stored value type and range, and errors
// are GGUFError E_METADATA naming the file and key.
import { GGUFError, GGUFValueType, type GGUFMetadataValue } from "./gguf.js";

const VALUE_TYPE_NAMES = Object.fromEntries(
  Object.entries(GGUFValueType).map(([k, v]) => [v, k]),
) as Record<number, string>;
const SAFE_MAX = BigInt(Number.MAX_SAFE_INTEGER);

const INT_TYPES: ReadonlySet<number> = new Set([0, 1, 2, 3, 4, 5, 10, 11]);

/** Typed getters over a header's metadata; errors are E_METADATA naming the file and key. */
export class GGUFMetadata {
  constructor(
    readonly metadata: Map<string, GGUFMetadataValue>,
    readonly file: string,
  ) {}

  fail(key: string, msg: string): never {
    throw new GGUFError(
      `${this.file}: key "${key}": ${msg}`,
      "E_METADATA",
      this.file,
      undefined,
      key,
    );
  }
  has(key: string): boolean {
    return this.metadata.has(key);
  }
  private typeName(v: GGUFMetadataValue): string {
    return v.type === GGUFValueType.ARRAY
      ? `ARRAY of ${VALUE_TYPE_NAMES[v.elementType!]}`
      : VALUE_TYPE_NAMES[v.type]!;
  }
  /** A non-negative integer (any integer type) that fits in a JS number. */
  uint(key: string, def?: number): number {
    const v = this.metadata.get(key);
    if (v === undefined) return def !== undefined ? def : this.fail(key, "missing");
    if (!INT_TYPES.has(v.type)) this.fail(key, `must be an integer, got ${this.typeName(v)}`);
    const n = typeof v.value === "bigint" ? v.value : BigInt(v.value as number);
    if (n < 0n || n > SAFE_MAX) this.fail(key, `${n} is out of range`);
    return Number(n);
  }
  /** A number (float or integer type). */
  num(key: string, def?: number): number {
    const v = this.metadata.get(key);
    if (v === undefined) return def !== undefined ? def : this.fail(key, "missing");
    if (v.type === GGUFValueType.FLOAT32 || v.type === GGUFValueType.FLOAT64)
      return v.value as number;
    return this.uint(key);
  }
  str(key: string, def?: string): string {
    const v = this.metadata.get(key);
    if (v === undefined) return def !== undefined ? def : this.fail(key, "missing");
    if (v.type !== GGUFValueType.STRING)
      this.fail(key, `must be a STRING, got ${this.typeName(v)}`);
    return v.value as string;
  }
  bool(key: string, def?: boolean): boolean {
    const v = this.metadata.get(key);
    if (v === undefined) return def !== undefined ? def : this.fail(key, "missing");
    if (v.type !== GGUFValueType.BOOL) this.fail(key, `must be a BOOL, got ${this.typeName(v)}`);
    return v.value as boolean;
  }
  /** An integer per layer: a scalar, or an array of n integers (llama.cpp's get_key_or_arr). */
  uintPerLayer(key: string, n: number, def?: number): number[] {
    const v = this.metadata.get(key);
    if (v === undefined || v.type !== GGUFValueType.ARRAY) {
      const x = this.uint(key, def);
      return Array.from({ length: n }, () => x);
    }
    if (!INT_TYPES.has(v.elementType!)) this.fail(key, `must be integers, got ${this.typeName(v)}`);
    const a = Array.from(v.value as ArrayLike<number | bigint>, Number);
    if (a.length !== n) this.fail(key, `has ${a.length} entries, block_count is ${n}`);
    if (a.some((x) => !Number.isSafeInteger(x) || x < 0))
      this.fail(key, "has out-of-range entries");
    return a;
  }
  /** A string array (e.g. tokenizer.ggml.tokens), or undefined. */
  strings(key: string): string[] | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type !== GGUFValueType.ARRAY || v.elementType !== GGUFValueType.STRING)
      this.fail(key, `must be an ARRAY of STRING, got ${this.typeName(v)}`);
    return v.value as string[];
  }
  /** A numeric array as float64 values, or undefined. */
  numbers(key: string): Float64Array | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (
      v.type !== GGUFValueType.ARRAY ||
      v.elementType === GGUFValueType.STRING ||
      v.elementType === GGUFValueType.BOOL
    )
      this.fail(key, `must be a numeric ARRAY, got ${this.typeName(v)}`);
    return Float64Array.from(v.value as ArrayLike<number | bigint>, Number);
  }
}
