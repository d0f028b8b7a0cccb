// A model with random weights at a real config's shape, made on the device: for benchmarks at the
// published sizes (the 27B's 54 GB of bf16 would take minutes to write as a checkpoint and read
// back; the loaders themselves are covered by the tests). Values are uniform(−0.03, 0.03) (about
// HF's init std 0.02), drawn once into a 16 M-value pool per device and tiled into every tensor
// from a per-name offset, so a tensor's values depend only on its name.
import { Communicator, Device, Tensor, copyColumns, f32ToBf16 } from "@gemma3/native";
import type { LayerWeights, StoredLayerWeight } from "./block.js";
import { loadConfig, type Gemma3Config } from "./config.js";
import { fuseProjections } from "./fuse.js";
import { repackSplitWeights, splitFormats } from "./layout.js";
import {
  LAYER_KEYS,
  assemble,
  checkQuantize,
  checkQuantizeHead,
  quantizationOf,
  type LoadOptions,
} from "./load.js";
import {
  canQuantize,
  quantizeWeight,
  type HeadQuantization,
  type WeightQuantization,
} from "./quantize.js";
import type { ComputeDType, Gemma3TextModel, TextWeights } from "./text_model.js";
import { tensorParallelLayout } from "./tp/layout.js";
import { TensorParallelTextModel } from "./tp/model.js";
import { layerShard, type ShardSpec } from "./tp/shard.js";
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

/** `t` quantized to `q` when q is set and t's rows fit its blocks (then t is disposed), else t. */
function quantizeTo(t: Tensor, q: WeightQuantization | undefined): Tensor {
  if (!q || !canQuantize(t.shape, q)) return t;
  try {
    return quantizeWeight(t, q);
  } finally {
    t.dispose();
  }
}

/**
 * A Gemma3TextModel with random weights at `config`'s shape (a config.json path or a parsed
 * config), built on the device like a loaded checkpoint: the same fusing and, with
 * `opts.quantize` / `opts.quantizeHead`, the same on-device quantization of the linear weights and
 * of the embedding. The head is tied.
 */
export async function randomTextModel(
  config: string | Gemma3Config,
  opts: LoadOptions = {},
): Promise<Gemma3TextModel> {
  const parsed = typeof config === "string" ? await loadConfig(config) : config;
  const cfg: Gemma3Config = { ...parsed, tieWordEmbeddings: true };
  const device = Device.of(opts.device ?? "cpu");
  const dtype: ComputeDType = opts.dtype ?? (device.isCuda ? "bf16" : "f32");
  checkQuantize(opts.quantize);
  checkQuantizeHead(opts.quantizeHead);
  const shapes = new Map(expectedTextWeights(cfg).map((w) => [w.name, w.shape]));
  const pool = randomPool(device, dtype);
  try {
    return await assemble(cfg, device, dtype, opts, async (name) =>
      quantizeTo(randomRows(name, shapes.get(name)!, 0, pool), quantizationOf(name, opts)),
    );
  } finally {
    pool.dispose();
  }
}

/**
 * Rank shard `spec` (rows or columns, tp/shard.ts) of the random tensor `name` of `shape`: row
 * ranges are read from the pool directly; column ranges are cut from the whole tensor.
 * @param pool [POOL] from randomPool
 */
function randomShard(
  name: string,
  shape: readonly number[],
  spec: ShardSpec | undefined,
  pool: Tensor,
): Tensor {
  const [rows, cols = 1] = shape as [number, number?];
  if (spec?.rows) {
    const [r0, r1] = spec.rows;
    return randomRows(name, shape.length > 1 ? [r1 - r0, cols] : [r1 - r0], r0, pool);
  }
  const whole = randomRows(name, shape, 0, pool);
  if (!spec?.cols) return whole;
  const [c0, c1] = spec.cols;
  const t = Tensor.empty([rows, c1 - c0], pool.dtypeName, pool.device);
  copyColumns(whole, c0, t, 0, c1 - c0);
  whole.dispose();
  return t;
}

/**
 * randomTextModel split over `devices` (tensor parallel, tp/layout.ts): each rank holds its shard
 * of the same random tensors (the rule above, by canonical name), so TP N computes what the one
 * device model computes up to the all-reduce's summation order. Quantized and fused per rank as
 * the tensor-parallel loader does. The head is tied.
 */
export async function randomTensorParallelModel(
  config: string | Gemma3Config,
  opts: {
    devices: readonly Device[];
    dtype?: ComputeDType;
    quantize?: WeightQuantization;
    quantizeHead?: HeadQuantization;
    collective?: "auto" | "nccl" | "host";
    fuse?: boolean;
  },
): Promise<TensorParallelTextModel> {
  const parsed = typeof config === "string" ? await loadConfig(config) : config;
  const cfg: Gemma3Config = { ...parsed, tieWordEmbeddings: true };
  const devices = opts.devices;
  const dtype: ComputeDType = opts.dtype ?? (devices[0]?.isCuda ? "bf16" : "f32");
  const layout = tensorParallelLayout(cfg, devices.length); // refuses splits that do not divide
  checkQuantize(opts.quantize);
  checkQuantizeHead(opts.quantizeHead);
  const shapes = new Map(expectedTextWeights(cfg).map((w) => [w.name, w.shape]));
  const h = cfg.hiddenSize;
  const owned: Tensor[] = [];
  const comm = Communicator.create(devices, { backend: opts.collective ?? "auto" });
  try {
    const parts = devices.map((device, r) => {
      const shard = layout.ranks[r]!;
      const pool = randomPool(device, dtype);
      try {
        /** The rank's part of weight `name`, as the tensor-parallel loader takes it. */
        const part = (name: string, spec: ShardSpec | undefined) => {
          const t = quantizeTo(
            randomShard(name, shapes.get(name)!, spec, pool),
            quantizationOf(name, opts),
          );
          owned.push(t);
          return t;
        };
        // The rank's vocabulary rows, zero padding, then the zero row other ranks' ids gather
        // (quantized per row with the rest: zero rows stay zero).
        const [v0, v1] = shard.vocab;
        const table = Tensor.zeros([layout.vocabPerRank + 1, h], dtype, device);
        owned.push(table);
        if (v1 > v0) {
          const rows = randomShard("embed_tokens", [cfg.vocabSize, h], { rows: [v0, v1] }, pool);
          table.slice(0, v1 - v0).copyFrom(rows);
          rows.dispose();
        }
        const embedTokens = quantizeTo(table, quantizationOf("embed_tokens", opts));
        if (embedTokens !== table) owned.push(embedTokens);
        const layers: LayerWeights[] = [];
        for (let i = 0; i < cfg.numHiddenLayers; i++) {
          const w = {} as LayerWeights;
          for (const [field, key] of Object.entries(LAYER_KEYS) as [StoredLayerWeight, string][])
            w[field] = part(`layers.${i}.${key}`, layerShard(key, shard, cfg.headDim));
          if (opts.fuse ?? true) owned.push(...fuseProjections(w));
          layers.push(w);
        }
        const weights = { embedTokens, norm: part("norm", undefined), layers } as TextWeights;
        return { device, weights };
      } finally {
        pool.dispose();
      }
    });
    // CUDA ranks take q4_0 / q8_0 in the GPU row layouts, as the tensor-parallel loader does.
    for (const p of parts) repackSplitWeights(p.weights, splitFormats(p.device), owned);
    return new TensorParallelTextModel(cfg, layout, parts, dtype, comm);
  } catch (e) {
    for (const t of owned) t.dispose();
    comm.dispose();
    throw e;
  }
}
