// Collectives over a group of ranks of one process, one device per rank (tensor parallelism):
// an in-place all-reduce and a column copy across devices (native/ops/collective.h). NCCL when the
// addon was built with it and every rank is a CUDA device; the host otherwise (CPU ranks, or CUDA
// ranks without NCCL: correct, blocking and slow).
import { addon, type NativeCommunicator } from "./addon.js";
import { Device } from "./device.js";
import { DisposedError, native } from "./errors.js";
import type { Tensor } from "./tensor.js";

export type CollectiveBackend = "nccl" | "host";

export class Communicator {
  private constructor(
    private comm: NativeCommunicator | null,
    /** Rank r's device. */
    readonly devices: readonly Device[],
    readonly backend: CollectiveBackend,
  ) {}

  /**
   * A communicator whose rank r lives on devices[r]: all "cpu" (any number of ranks sharing the
   * CPU stream) or distinct CUDA devices. NCCL initialises here (collective, seconds).
   * @param opts.backend "auto" (default: NCCL when built, all ranks CUDA and env GEMMA3_NCCL is
   *   not "0"), "nccl" (UnsupportedError without it) or "host"
   */
  static create(
    devices: readonly (string | Device)[],
    opts: { backend?: "auto" | CollectiveBackend } = {},
  ): Communicator {
    const devs = devices.map((d) => Device.of(d));
    const c = native(() =>
      addon().communicatorCreate(
        devs.map((d) => d.index),
        opts.backend ?? "auto",
      ),
    );
    return new Communicator(c, devs, c.backend as CollectiveBackend);
  }

  get size(): number {
    return this.devices.length;
  }

  /**
   * Whether allReduce may be recorded into graphs (Graph.capture running on every rank's device):
   * NCCL, and CPU ranks (one recorded CPU task list). The host fallback of CUDA ranks may not.
   */
  get graphCapturable(): boolean {
    return this.comm?.graphCapturable ?? false;
  }

  /**
   * Blocks until every rank's device has run the work queued on it. NCCL runs with graph mixing
   * support off (one thread drives every rank; see native/ops/collective.cc), so an eager
   * allReduce must not be issued while a replayed graph holding one may still run: wait here
   * when switching between graph replays and eager collectives.
   */
  waitIdle(): void {
    const c = this.comm;
    if (!c) throw new DisposedError("Communicator was disposed", "E_DISPOSED");
    native(() => c.waitIdle());
  }

  /**
   * In place, on every rank: tensors[r] ← Σ_q tensors[q] (enqueued in stream order on each
   * rank's device). Host backend: float32 accumulation in rank order, rounded once; NCCL: its ring
   * order. Every rank ends with the same values.
   * @param tensors one per rank, tensors[r] on devices[r], one shape and dtype (f32|bf16|f16)
   */
  allReduce(tensors: readonly Tensor[]): void {
    const c = this.comm;
    if (!c) throw new DisposedError("Communicator was disposed", "E_DISPOSED");
    native(() => c.allReduce(tensors));
  }

  /** Releases the ranks' resources (NCCL communicators) after the work queued on them. */
  dispose(): void {
    this.comm?.dispose();
    this.comm = null;
  }
}

/**
 * dst[:, dstCol : dstCol + width] = src[:, srcCol : srcCol + width] over the last dim (leading
 * dims flattened to rows), also across devices (CPU ↔ CPU, CUDA ↔ CUDA: ordered after the work
 * queued on src's device; later work there waits for the copy).
 * @param src [rows, Cs] any non-block dtype
 * @param dst [rows, Cd] src's dtype
 * @returns dst
 */
export function copyColumns(
  src: Tensor,
  srcCol: number,
  dst: Tensor,
  dstCol: number,
  width: number,
): Tensor {
  native(() => addon().copyColumns(src, srcCol, dst, dstCol, width));
  return dst;
}
