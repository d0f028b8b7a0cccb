// A simple per-sequence KV cache with the hybrid layout the kv-cache package will generalize:
// sliding layers keep a ring of `window` slots (a token at position p lives in slot p % window),
// global layers keep one slot per position. Each layer's K and V are one "page" in the decode
// kernel's paged NHD layout ([1, slots, num_kv_heads, head_dim]), so the same attention_decode
// call serves both; the per-step plan (slots to write, lengths) is built once and read by every
// layer (plan once, run per layer — STYLE 6).
import { Device, Tensor } from "@gemma3/native";
import type { Gemma3Config } from "./config.js";

/** K/V storage of one layer. k, v: [1, slots, num_kv_heads, head_dim] */
export interface LayerKV {
  readonly k: Tensor;
  readonly v: Tensor;
  readonly slots: number;
  readonly sliding: boolean;
}

/** What every layer of one step reads: built once per step by {@link KVCache.plan}. */
export interface StepPlan {
  /** [n] i32: position of each new token */
  readonly positions: Tensor;
  /** [n] i32: destination slot per new token in ring layers (-1 = not kept: older than the window) */
  readonly ringSlots: Tensor;
  /** [n] i32: destination slot per new token in global layers */
  readonly fullSlots: Tensor;
  /** decode page table: [2] i32 = [0, 1] and [1] i32 = [0] (one page per layer) */
  readonly kvIndptr: Tensor;
  readonly kvIndices: Tensor;
  /** [1] i32: tokens visible in ring layers after this step (min(n, window)) */
  readonly ringLen: Tensor;
  /** [1] i32: tokens in global layers after this step */
  readonly fullLen: Tensor;
  /** [2] i32 = [0, n]: qo/kv indptr of a prefill chunk (one sequence) */
  readonly prefillIndptr: Tensor;
  /** True for a one-token step on a non-empty cache (decode attention); false for a prefill. */
  readonly decode: boolean;
  /** Tokens in the sequence after this step (host copy). */
  readonly length: number;
  dispose(): void;
}

export interface KVCache {
  readonly length: number;
  layer(i: number): LayerKV;
  /** Reserves `count` new positions and returns the plan that writes and reads them. */
  plan(count: number): StepPlan;
  /** Moves the length forward once the step's K/V are written. */
  commit(plan: StepPlan): void;
  /** Nothing to free for plans that view the cache's own buffer; kept for caches that allocate. */
  dispose(): void;
}

export class SimpleKVCache implements KVCache {
  private readonly layers: LayerKV[];
  private readonly planBuf: Tensor;
  private length_ = 0;

  constructor(
    private readonly cfg: Gemma3Config,
    readonly capacity: number,
    private readonly device: Device,
    dtype: "f32" | "bf16",
  ) {
    this.layers = cfg.layerTypes.map((t) => {
      const sliding = t === "sliding";
      const slots = sliding ? Math.min(cfg.slidingWindow, capacity) : capacity;
      const shape = [1, slots, cfg.numKeyValueHeads, cfg.headDim];
      return {
        k: Tensor.zeros(shape, dtype, device),
        v: Tensor.zeros(shape, dtype, device),
        slots,
        sliding,
      };
    });
    this.planBuf = Tensor.empty([3 * capacity + 8], "i32", device);
  }

  get length(): number {
    return this.length_;
  }
  /** Bytes held by all layers' K and V. */
  get bytes(): number {
    return this.layers.reduce((a, l) => a + l.k.byteLength + l.v.byteLength, 0);
  }
  layer(i: number): LayerKV {
    const l = this.layers[i];
    if (!l) throw new RangeError(`KV cache has no layer ${i}`);
    return l;
  }

  plan(count: number): StepPlan {
    const start = this.length_;
    const end = start + count;
    // Prefill attends within its own chunk, so it must start the sequence (chunked prefill over a
    // filled ring is the hybrid kv-cache package's job).
    if (start > 0 && count !== 1)
      throw new RangeError(
        `SimpleKVCache: after the prefill, tokens come one at a time (got ${count})`,
      );
    if (end > this.capacity)
      throw new RangeError(`KV cache full: ${end} tokens requested, capacity ${this.capacity}`);
    const window = Math.min(this.cfg.slidingWindow, this.capacity);
    // One host array, one copy, views into the cache's persistent plan buffer: no allocation per
    // step, and the copy is ordered after the previous step's reads on the device's stream.
    const data = new Int32Array(3 * count + 8);
    for (let i = 0; i < count; i++) {
      const p = start + i;
      data[i] = p; // positions
      data[count + i] = p >= end - window ? p % window : -1; // ring slot; older tokens are not kept
      data[2 * count + i] = p; // full slot
    }
    data.set([0, 1, 0, Math.min(end, window), end, 0, count], 3 * count);
    const buf = this.planBuf.slice(0, data.length);
    buf.write(data);
    const at = (off: number, len: number) => this.planBuf.slice(off, off + len);
    const o = 3 * count;
    return {
      positions: at(0, count),
      ringSlots: at(count, count),
      fullSlots: at(2 * count, count),
      kvIndptr: at(o, 2),
      kvIndices: at(o + 2, 1),
      ringLen: at(o + 3, 1),
      fullLen: at(o + 4, 1),
      prefillIndptr: at(o + 5, 2),
      decode: start > 0,
      length: end,
      dispose: () => undefined,
    };
  }

  commit(plan: StepPlan): void {
    this.length_ = plan.length;
  }

  dispose(): void {
    this.planBuf.dispose();
    for (const l of this.layers) {
      l.k.dispose();
      l.v.dispose();
    }
  }
}
