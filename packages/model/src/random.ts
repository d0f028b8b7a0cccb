// A model with random weights at a real config's shape, made on the device: for benchmarks at the
// published sizes (the 27B's 54 GB of bf16 would take minutes to write as a checkpoint and read
// back; the loaders themselves are covered by the tests). Values are uniform(−0.03, 0.03) (about
// HF's init std 0.02), drawn once into a 16 M-value pool per device and tiled into every tensor
// from a per-name offset, so a tensor's values depend only on its name.
import { Device, Tensor, f32ToBf16 } from "@gemma3/native";
import { loadConfig, type Gemma3Config } from "./config.js";
import { isLinearWeight } from "./gguf_load.js";
import { assemble, type LoadOptions } from "./load.js";
import { canQuantize, quantizeWeight } from "./quantize.js";
import type { ComputeDType, Gemma3TextModel } from "./text_model.js";
import { expectedTextWeights } from "./weights.js";

const POOL = 1 << 24;

/** FNV-1a of the name, into [0, POOL). */
function offsetOf(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619) >>> 0;
  return h % POOL;
}

/** The random pool on `device`: POOL values uniform(−0.03, 0.03), in `dtype` (caller disposes). */
export function randomPool(device: Device, dtype: ComputeDType): Tensor {
  const v = new Float32Array(POOL);
  let s = 12345;
  for (let i = 0; i < POOL; i++) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    v[i] = (s / 2 ** 31 - 0.5) * 0.06;
  }
  const t = Tensor.empty([POOL], dtype, device);
  t.write(dtype === "bf16" ? Uint16Array.from(v, (x) => f32ToBf16(x)) : v);
  return t;
}

/**
 * Rows [r0, r0 + shape[0]) of the random tensor `name` whose rows have shape[1] columns (the whole
 * tensor for r0 = 0): element k of the whole, row-major, is pool[(offsetOf(name) + k) mod POOL].
 * Tensor-parallel benchmarks cut each rank's shard of the same tensors with r0.
 * @param pool [POOL] from randomPool, in the tensor's dtype, on its device
 */
export function randomRows(
  name: string,
  shape: readonly number[],
  r0: number,
  pool: Tensor,
): Tensor {
  const t = Tensor.empty([...shape], pool.dtypeName, pool.device);
  const flat = t.view([t.numel]);
  const cols = shape.length > 1 ? shape[1]! : shape[0]!;
  let at = 0;
  let from = (offsetOf(name) + r0 * cols) % POOL;
  while (at < t.numel) {
    const len = Math.min(t.numel - at, POOL - from);
    flat.slice(at, at + len).copyFrom(pool.slice(from, from + len));
    at += len;
    from = 0;
  }
  return t;
}

/**
 * A Gemma3TextModel with random weights at `config`'s shape (a config.json path or a parsed
 * config), built on the device like a loaded checkpoint: the same fusing and, with
 * `opts.quantize`, the same on-device quantization of the linear weights. The head is tied.
 */
export async function randomTextModel(
  config: string | Gemma3Config,
  opts: LoadOptions = {},
): Promise<Gemma3TextModel> {
  const parsed = typeof config === "string" ? await loadConfig(config) : config;
  const cfg: Gemma3Config = { ...parsed, tieWordEmbeddings: true };
  const device = Device.of(opts.device ?? "cpu");
  const dtype: ComputeDType = opts.dtype ?? (device.isCuda ? "bf16" : "f32");
  const shapes = new Map(expectedTextWeights(cfg).map((w) => [w.name, w.shape]));
  const pool = randomPool(device, dtype);
  try {
    return await assemble(cfg, device, dtype, opts, async (name) => {
      const t = randomRows(name, shapes.get(name)!, 0, pool);
      const q = opts.quantize;
      if (!q || !isLinearWeight(name) || !canQuantize(t.shape, q)) return t;
      try {
        return quantizeWeight(t, q);
      } finally {
        t.dispose();
      }
    });
  } finally {
    pool.dispose();
  }
}
