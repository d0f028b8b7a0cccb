import { addon } from "./addon.js";
import { DeviceError, native, nativeAsync } from "./errors.js";

/** A device: the CPU or one CUDA GPU. Each has one in-order stream that every op enqueues on. */
export class Device {
  private constructor(
    /** -1 for the CPU, else the CUDA ordinal. */
    readonly index: number,
  ) {}

  static readonly cpu = new Device(-1);
  private static cuda_: Device[] = [];

  /** Parses "cpu", "cuda", "cuda:N" (or passes a Device through). */
  static of(spec: string | Device): Device {
    if (spec instanceof Device) return spec;
    if (spec === "cpu") return Device.cpu;
    const m = /^cuda(?::(\d+))?$/.exec(spec);
    if (!m)
      throw new DeviceError(`Unknown device "${spec}" (expected cpu, cuda or cuda:N)`, "E_DEVICE");
    const i = Number(m[1] ?? 0);
    const n = deviceCount();
    if (i >= n) {
      const why = addon().buildInfo().cuda
        ? `${n} CUDA device(s) visible`
        : "this build has no CUDA backend";
      throw new DeviceError(`No such device cuda:${i} (${why})`, "E_DEVICE");
    }
    return (Device.cuda_[i] ??= new Device(i));
  }

  get isCuda(): boolean {
    return this.index >= 0;
  }
  toString(): string {
    return this.index < 0 ? "cpu" : `cuda:${this.index}`;
  }

  /** Name, memory, SM count, compute capability. */
  info(): ReturnType<ReturnType<typeof addon>["deviceInfo"]> {
    return native(() => addon().deviceInfo(this.index));
  }
  /** Free and total bytes of the device's memory. */
  memoryInfo(): { free: number; total: number } {
    return native(() => addon().memoryInfo(this.index));
  }
  /** Resolves when every op enqueued on this device has run; rejects with the first deferred error. */
  synchronize(): Promise<void> {
    return nativeAsync(() => addon().synchronize(this.index));
  }
}

/** CUDA devices visible to this build (0 without the CUDA backend or a GPU). */
export function deviceCount(): number {
  return native(() => addon().deviceCount());
}

/** What the addon was built with. */
export function buildInfo(): {
  cuda: boolean;
  cublas: boolean;
  nccl: boolean;
  cpuThreads: number;
} {
  return native(() => addon().buildInfo());
}

/** True when a CUDA device can run ops here. */
export function cudaAvailable(): boolean {
  return deviceCount() > 0;
}
