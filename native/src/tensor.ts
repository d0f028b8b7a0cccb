import { addon, type NativeBuffer, type TensorArg } from "./addon.js";
import { Device } from "./device.js";
import { blockSize, dtypeCode, isBlock, rowBytes, type DTypeName } from "./dtype.js";
import { DisposedError, ShapeError, native, nativeAsync } from "./errors.js";
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, fp8e4m3ToF32 } from "./numeric.js";

export type Shape = readonly number[];

/** Host data accepted by Tensor.from: numbers or a typed array matching the dtype's storage. */
export type HostData = ArrayLike<number> | Float32Array | Uint16Array | Uint8Array | Int32Array;

function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Bytes a contiguous tensor of this shape and dtype occupies. */
export function byteSize(shape: Shape, dtype: DTypeName): number {
  const last = shape.length ? shape[shape.length - 1]! : 1;
  if (last % blockSize(dtype) !== 0)
    throw new ShapeError(
      `${dtype} tensor [${shape.join(", ")}]: last dim must be a multiple of ${blockSize(dtype)}`,
      "E_SHAPE",
    );
  return last === 0 ? 0 : (numel(shape) / last) * rowBytes(dtype, last);
}

function checkShape(shape: Shape): void {
  for (const d of shape)
    if (!Number.isInteger(d) || d < 0)
      throw new ShapeError(
        `Invalid shape [${shape.join(", ")}]: dims must be integers >= 0`,
        "E_SHAPE",
      );
}

/**
 * A contiguous row-major tensor on a device. An owner (`Tensor.empty`, `Tensor.from`) holds its
 * allocation and frees it on `dispose()`; a view (`view`, `slice`, `Arena.alloc`) borrows a range
 * of another tensor's storage and dies with it. Block dtypes (q8_0, q4_0, q4_k…) count elements, not
 * blocks, in `shape`.
 */
export class Tensor implements TensorArg {
  private disposed_ = false;
  /** Numeric dtype code (what the addon reads; a plain field: every op reads it). */
  readonly dtype: number;

  protected constructor(
    private readonly storage_: NativeBuffer,
    readonly byteOffset: number,
    readonly shape: Shape,
    readonly dtypeName: DTypeName,
    readonly device: Device,
    /** The owner this view borrows from; undefined for owners. */
    readonly base: Tensor | undefined,
  ) {
    this.dtype = dtypeCode(dtypeName);
  }

  /**
   * The allocation. Read by the addon on every op, so the check is cheap: a disposed owner has
   * freed its buffer, which the addon itself refuses (E_DISPOSED); here only this tensor's own flag.
   */
  get storage(): NativeBuffer {
    if (this.disposed_)
      throw new DisposedError(`Tensor [${this.shape.join(", ")}] was disposed`, "E_DISPOSED");
    return this.storage_;
  }
  get isView(): boolean {
    return this.base !== undefined;
  }
  get disposed(): boolean {
    return this.disposed_ || (this.base?.disposed ?? false) || this.storage_.freed;
  }
  get numel(): number {
    return numel(this.shape);
  }
  get byteLength(): number {
    return byteSize(this.shape, this.dtypeName);
  }
  toString(): string {
    return `Tensor([${this.shape.join(", ")}], ${this.dtypeName}, ${this.device})`;
  }

  /** Uninitialized tensor (contents are whatever the allocator returns). */
  static empty(shape: Shape, dtype: DTypeName, device: string | Device = "cpu"): Tensor {
    checkShape(shape);
    const dev = Device.of(device);
    const bytes = byteSize(shape, dtype);
    const buf = native(() => addon().alloc(dev.index, bytes));
    return new Tensor(buf, 0, [...shape], dtype, dev, undefined);
  }

  /** Tensor filled with zero bytes (0.0 for float dtypes). */
  static zeros(shape: Shape, dtype: DTypeName, device: string | Device = "cpu"): Tensor {
    const t = Tensor.empty(shape, dtype, device);
    t.fillBytes(0);
    return t;
  }

  /**
   * Copies host data to a new tensor. Numbers are encoded to the dtype (f32, bf16, f16 round to
   * nearest even; i32 truncates); a Uint16Array for bf16/f16 or a Uint8Array for fp8 and the block dtypes is
   * taken as raw storage bytes.
   */
  static from(
    data: HostData,
    shape: Shape,
    dtype: DTypeName = "f32",
    device: string | Device = "cpu",
  ): Tensor {
    const t = Tensor.empty(shape, dtype, device);
    try {
      t.write(data);
    } catch (e) {
      t.dispose();
      throw e;
    }
    return t;
  }

  /** Overwrites the whole tensor from host data (same rules as `from`). Enqueued in stream order. */
  write(data: HostData): void {
    const bytes = encodeHost(data, this.numel, this.byteLength, this.dtypeName);
    native(() => addon().copyFromHost(this.storage, this.byteOffset, bytes));
  }

  /** Sets every byte (poisoning outputs in tests: 0xff makes f32/bf16 NaN). */
  fillBytes(value: number): void {
    native(() => addon().fill(this.storage, this.byteOffset, this.byteLength, value));
  }

  /** Copies `src` (same dtype, same number of bytes, same device) into this tensor. */
  copyFrom(src: Tensor): void {
    if (src.dtypeName !== this.dtypeName || src.byteLength !== this.byteLength)
      throw new ShapeError(`copyFrom: ${src} into ${this} (dtype and size must match)`, "E_SHAPE");
    native(() =>
      addon().copyBuffer(
        this.storage,
        this.byteOffset,
        src.storage,
        src.byteOffset,
        this.byteLength,
      ),
    );
  }

  /** Raw storage bytes on the host (waits for queued work on the device). */
  async bytes(): Promise<Uint8Array> {
    const out = new Uint8Array(this.byteLength);
    await nativeAsync(() => addon().copyToHost(this.storage, this.byteOffset, out));
    return out;
  }

  /** Values decoded to float32 (f32, bf16, f16, fp8 e4m3) or int32 (i32). Block formats: use dequantize. */
  async toArray(): Promise<Float32Array | Int32Array> {
    const raw = await this.bytes();
    const n = this.numel;
    switch (this.dtypeName) {
      case "f32":
        return new Float32Array(raw.buffer, raw.byteOffset, n);
      case "i32":
        return new Int32Array(raw.buffer, raw.byteOffset, n);
      case "bf16":
      case "f16": {
        const u = new Uint16Array(raw.buffer, raw.byteOffset, n);
        const out = new Float32Array(n);
        const dec = this.dtypeName === "bf16" ? bf16ToF32 : f16ToF32;
        for (let i = 0; i < n; i++) out[i] = dec(u[i]!);
        return out;
      }
      case "fp8_e4m3": {
        const out = new Float32Array(n);
        for (let i = 0; i < n; i++) out[i] = fp8e4m3ToF32(raw[i]!);
        return out;
      }
      default:
        throw new ShapeError(`toArray: ${this} is block-quantized; dequantize it first`, "E_DTYPE");
    }
  }

  /** Same bytes, another shape with the same element count (a view). */
  view(shape: Shape): Tensor {
    checkShape(shape);
    if (numel(shape) !== this.numel || byteSize(shape, this.dtypeName) !== this.byteLength)
      throw new ShapeError(`view: cannot view ${this} as [${shape.join(", ")}]`, "E_SHAPE");
    return new Tensor(
      this.storage,
      this.byteOffset,
      [...shape],
      this.dtypeName,
      this.device,
      this.base ?? this,
    );
  }

  /** Rows [start, end) of the first dimension (a view). */
  slice(start: number, end: number = this.shape[0] ?? 0): Tensor {
    const rows = this.shape[0];
    if (
      rows === undefined ||
      !Number.isInteger(start) ||
      !Number.isInteger(end) ||
      start < 0 ||
      end < start ||
      end > rows
    )
      throw new ShapeError(`slice(${start}, ${end}) out of range for ${this}`, "E_SHAPE");
    const rowLen = rows === 0 ? 0 : this.byteLength / rows;
    const shape = [end - start, ...this.shape.slice(1)];
    return new Tensor(
      this.storage,
      this.byteOffset + start * rowLen,
      shape,
      this.dtypeName,
      this.device,
      this.base ?? this,
    );
  }

  /** Frees an owner's memory (after queued work that uses it); a view only stops being usable. */
  dispose(): void {
    if (this.disposed_) return;
    this.disposed_ = true;
    if (!this.base) this.storage_.free();
  }

  /** @internal used by Arena: a view at a byte offset of this owner. */
  static viewAt(owner: Tensor, byteOffset: number, shape: Shape, dtype: DTypeName): Tensor {
    return new Tensor(
      owner.storage,
      owner.byteOffset + byteOffset,
      [...shape],
      dtype,
      owner.device,
      owner,
    );
  }
}

function encodeHost(data: HostData, n: number, bytes: number, dtype: DTypeName): ArrayBufferView {
  const raw = (expect: number): ArrayBufferView => {
    if ((data as ArrayBufferView).byteLength !== expect)
      throw new ShapeError(
        `Tensor data: ${(data as ArrayBufferView).byteLength} bytes given, ${expect} expected`,
        "E_SHAPE",
      );
    return data as ArrayBufferView;
  };
  if ((dtype === "bf16" || dtype === "f16") && data instanceof Uint16Array) return raw(bytes);
  if ((dtype === "fp8_e4m3" || isBlock(dtype)) && data instanceof Uint8Array) return raw(bytes);
  if (isBlock(dtype) || dtype === "fp8_e4m3")
    throw new ShapeError(
      `Tensor data for ${dtype} must be raw bytes (Uint8Array); use quantize() for floats`,
      "E_DTYPE",
    );
  if (data.length !== n)
    throw new ShapeError(`Tensor data has ${data.length} elements, shape needs ${n}`, "E_SHAPE");
  switch (dtype) {
    case "f32":
      return data instanceof Float32Array ? data : Float32Array.from(data);
    case "i32":
      return data instanceof Int32Array ? data : Int32Array.from(data);
    case "bf16":
    case "f16": {
      const enc = dtype === "bf16" ? f32ToBf16 : f32ToF16;
      const u = new Uint16Array(n);
      for (let i = 0; i < n; i++) u[i] = enc(data[i]!);
      return u;
    }
    default:
      throw new ShapeError(`Tensor data for ${dtype} must be raw bytes (Uint8Array)`, "E_DTYPE");
  }
}
