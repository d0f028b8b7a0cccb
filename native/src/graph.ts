import { addon, type NativeGraph } from "./addon.js";
import { Device } from "./device.js";
import { DisposedError, native } from "./errors.js";

/**
 * A recorded sequence of ops replayed with one call: a CUDA graph on GPUs, a recorded task list on
 * the CPU. Ops read their inputs (positions, page tables, ids) from device memory, so a replay
 * sees whatever those buffers hold at replay time; the buffers themselves must stay alive.
 */
export class Graph {
  private constructor(
    private graph: NativeGraph | null,
    readonly device: Device,
  ) {}

  /** Records the ops that `fn` enqueues on `device` (they do not run during capture). */
  static capture(device: string | Device, fn: () => void): Graph {
    const dev = Device.of(device);
    native(() => addon().graphBegin(dev.index));
    let failure: unknown;
    try {
      fn();
    } catch (e) {
      failure = e;
    }
    // Always end the capture, even on failure; the failure of `fn` is the one to report (ending
    // a capture that an op invalidated fails too, with a less telling error).
    let g: NativeGraph;
    try {
      g = native(() => addon().graphEnd(dev.index));
    } catch (e) {
      throw failure ?? e;
    }
    if (failure !== undefined) {
      g.dispose();
      throw failure;
    }
    return new Graph(g, dev);
  }

  /** Ops (CPU) or graph nodes (CUDA) recorded. */
  get nodes(): number {
    return this.graph?.nodes ?? 0;
  }

  /** Enqueues one replay on the device's stream. */
  launch(): void {
    const g = this.graph;
    if (!g) throw new DisposedError("Graph was disposed", "E_DISPOSED");
    native(() => g.launch());
  }

  dispose(): void {
    this.graph?.dispose();
    this.graph = null;
  }
}
