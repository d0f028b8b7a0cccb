import { Device } from "./device.js";
import { byteSize, Tensor, type Shape } from "./tensor.js";
import type { DTypeName } from "./dtype.js";
import { OutOfMemoryError } from "./errors.js";

/**
 * A bump allocator over one device allocation: activations and workspaces are reserved once
 * (sized at load) and handed out as views, so the decode path allocates nothing. `reset()` makes
 * the whole arena free again; views handed out before must not be used after it.
 */
export class Arena {
  readonly storage: Tensor;
  private used_ = 0;
  private peak_ = 0;

  constructor(
    bytes: number,
    device: string | Device = "cpu",
    /** Alignment of every allocation (256 keeps 16-byte vector loads and TMA happy). */
    readonly alignment = 256,
  ) {
    this.storage = Tensor.empty(
      [bytes],
      "fp8_e4m3" /* one byte per element: shape = bytes */,
      device,
    );
  }

  get capacity(): number {
    return this.storage.byteLength;
  }
  get used(): number {
    return this.used_;
  }
  /** Highest `used` seen: size the next arena from it. */
  get peak(): number {
    return this.peak_;
  }

  alloc(shape: Shape, dtype: DTypeName): Tensor {
    const bytes = byteSize(shape, dtype);
    const start = Math.ceil(this.used_ / this.alignment) * this.alignment;
    if (start + bytes > this.capacity)
      throw new OutOfMemoryError(
        `Arena on ${this.storage.device}: [${shape.join(", ")}] ${dtype} needs ${bytes} bytes at ${start}, capacity ${this.capacity}`,
        "E_OUT_OF_MEMORY",
      );
    this.used_ = start + bytes;
    this.peak_ = Math.max(this.peak_, this.used_);
    return Tensor.viewAt(this.storage, start, shape, dtype);
  }

  reset(): void {
    this.used_ = 0;
  }

  /** Frees everything allocated after the point where `used` was `mark` (stack discipline). */
  rewindTo(mark: number): void {
    if (mark < 0 || mark > this.used_)
      throw new RangeError(`Arena.rewindTo(${mark}): used is ${this.used_}`);
    this.used_ = mark;
  }

  dispose(): void {
    this.storage.dispose();
  }
}
