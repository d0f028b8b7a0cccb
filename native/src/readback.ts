import { addon, type NativeReadback } from "./addon.js";
import { Device } from "./device.js";
import { DTypeError, DisposedError, native, nativeAsync } from "./errors.js";
import type { Tensor } from "./tensor.js";

/**
 * A small device-to-host copy enqueued now, in stream order, and awaited later: `read()` waits for
 * the ops enqueued before `enqueue()` only, not for those enqueued after it (Tensor.toArray waits
 * for the whole stream). So the host can read step N's tokens while step N+1 already runs (vLLM's
 * async scheduling). CUDA: pinned staging memory and an event; CPU: a task of the worker thread.
 * One read in flight: enqueue, read, enqueue again (use two for overlapping reads).
 */
export class HostReadback {
  readonly device: Device;
  private rb: NativeReadback | null;
  private dtype: "i32" | "f32" | null = null;
  private numel = 0;

  /** @param capacity most bytes one read copies */
  constructor(
    device: string | Device,
    readonly capacity: number,
  ) {
    const dev = Device.of(device);
    this.device = dev;
    this.rb = native(() => addon().readbackCreate(dev.index, capacity));
  }

  /**
   * Enqueues the copy of `src` (i32 or f32, on this readback's device, ≤ capacity bytes). Not
   * during a graph capture.
   * @param src [n] i32 or f32
   */
  enqueue(src: Tensor): void {
    const rb = this.live();
    if (src.dtypeName !== "i32" && src.dtypeName !== "f32")
      throw new DTypeError(`HostReadback: ${src} must be i32 or f32`, "E_DTYPE");
    native(() => rb.enqueue(src.storage, src.byteOffset, src.byteLength));
    this.dtype = src.dtypeName;
    this.numel = src.numel;
  }

  /** The values of the last enqueue, once the ops before it have run. */
  async read(): Promise<Int32Array | Float32Array> {
    const rb = this.live();
    const out = this.dtype === "f32" ? new Float32Array(this.numel) : new Int32Array(this.numel);
    await nativeAsync(() => rb.wait(out));
    return out;
  }

  private live(): NativeReadback {
    if (!this.rb) throw new DisposedError("HostReadback was disposed", "E_DISPOSED");
    return this.rb;
  }

  dispose(): void {
    this.rb?.dispose();
    this.rb = null;
  }
}
