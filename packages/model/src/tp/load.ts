// Loading a tensor-parallel model: every rank reads its own shard of each tensor straight from the
// safetensors checkpoint onto its device (tensor by tensor, rank after rank, so a column-sliced
// tensor's file pages are read once into the page cache and reused by the other ranks). Nothing is
// assembled whole on any device.
import { join } from "node:path";
import { Communicator, Device, UnsupportedError, type Tensor } from "@gemma3/native";
import type { LayerWeights, StoredLayerWeight } from "../block.js";
import { loadConfig } from "../config.js";
import { fuseProjections } from "../fuse.js";
import { repackSplitWeights, splitFormats } from "../layout.js";
import {
  LAYER_KEYS,
  checkQuantize,
  checkQuantizeHead,
  loadTextModel,
  quantizationOf,
  resolveModelPath,
  type LoadOptions,
} from "../load.js";
import { canQuantize, quantizeWeight, type WeightQuantization } from "../quantize.js";
import { openCheckpoint, type Checkpoint } from "../safetensors.js";
import type { ComputeDType, TextModel, TextWeights } from "../text_model.js";
import { checkTextWeights, indexWeights, loadTensor } from "../weights.js";
import { tensorParallelLayout, type Range, type RankShard } from "./layout.js";
import { TensorParallelTextModel, type RankWeights } from "./model.js";
import { layerShard, loadShard, type ShardSpec } from "./shard.js";

export interface TensorParallelLoadOptions extends Omit<LoadOptions, "device"> {
  /**
   * Rank r's device: distinct CUDA devices ("cuda:0", "cuda:1", …), or any number of "cpu" ranks
   * (the same arithmetic on one device: what CI tests).
   */
  devices: readonly (string | Device)[];
  /** All-reduce backend (default "auto": NCCL when built and every rank is CUDA; else the host). */
  collective?: "auto" | "nccl" | "host";
}

/**
 * Loads the text model of a safetensors Gemma 3 checkpoint split over `opts.devices` (N ranks:
 * heads, KV heads and intermediate units must divide, see tensorParallelLayout). Every tensor is
 * checked against the config before anything is uploaded.
 * @throws UnsupportedError for shapes that do not split, or a GGUF checkpoint (not sharded yet)
 */
export async function loadTensorParallelModel(
  path: string,
  opts: TensorParallelLoadOptions,
): Promise<TensorParallelTextModel> {
  const devices = opts.devices.map((d) => Device.of(d));
  if (devices.length < 1) throw new RangeError("tensor parallel: no devices");
  const dtype: ComputeDType = opts.dtype ?? (devices[0]!.isCuda ? "bf16" : "f32");
  const q = opts.quantize;
  checkQuantize(q);
  checkQuantizeHead(opts.quantizeHead);
  const src = await resolveModelPath(path);
  if (src.format === "gguf")
    throw new UnsupportedError(
      `tensor parallel: ${src.file}: GGUF checkpoints are not sharded yet (use a safetensors checkpoint)`,
      "E_UNSUPPORTED",
    );
  const config = await loadConfig(join(src.dir, "config.json"));
  const layout = tensorParallelLayout(config, devices.length); // refuses before reading weights
  const ckpt = await openCheckpoint(src.dir);
  const parts: RankWeights[] = devices.map((device) => ({
    device,
    weights: { layers: [] } as unknown as TextWeights,
  }));
  const loaded: Tensor[] = [];
  let comm: Communicator | undefined;
  try {
    checkTextWeights(config, ckpt);
    comm = Communicator.create(devices, { backend: opts.collective ?? "auto" });
    const names = 2 + (config.tieWordEmbeddings ? 0 : 1) + config.numHiddenLayers * 13;
    const total = names * devices.length;
    let done = 0;
    /** Every rank's shard of one tensor, quantized as `opts` asks for it (quantizationOf). */
    const each = async (
      name: string,
      shard: (s: RankShard) => ShardSpec | undefined,
    ): Promise<Tensor[]> => {
      const quantize = quantizationOf(name, opts);
      const out: Tensor[] = [];
      for (const [r, s] of layout.ranks.entries()) {
        const t = await loadPart(ckpt, name, devices[r]!, dtype, shard(s), quantize);
        loaded.push(t);
        out.push(t);
        opts.onProgress?.(++done, total);
      }
      return out;
    };
    const vr = layout.vocabPerRank;
    // Embedding: the rank's vocabulary rows, zero-padded to vocabPerRank, plus the zero row
    // (with quantizeHead, quantized per row: the zero rows stay zero).
    (await each("embed_tokens", (s) => ({ rows: s.vocab, padRows: vr + 1 }))).forEach(
      (t, r) => (parts[r]!.weights.embedTokens = t),
    );
    for (let i = 0; i < config.numHiddenLayers; i++) {
      const ws = parts.map(() => ({}) as LayerWeights);
      for (const [field, key] of Object.entries(LAYER_KEYS) as [StoredLayerWeight, string][]) {
        const ts = await each(`layers.${i}.${key}`, (s) => layerShard(key, s, config.headDim));
        ts.forEach((t, r) => (ws[r]![field] = t));
      }
      // Each rank's [q; k; v] and [gate; up] shards fuse like a one-device layer's (fuse.ts):
      // rank-local heads and MLP units, one matmul each.
      if (opts.fuse ?? true) for (const w of ws) loaded.push(...fuseProjections(w));
      ws.forEach((w, r) => parts[r]!.weights.layers.push(w));
    }
    (await each("norm", () => undefined)).forEach((t, r) => (parts[r]!.weights.norm = t));
    if (!config.tieWordEmbeddings)
      (await each("lm_head", (s) => ({ rows: s.vocab, padRows: vr }))).forEach(
        (t, r) => (parts[r]!.weights.lmHead = t),
      );
    // CUDA ranks take q4_0 / q8_0 weights in the GPU row layouts (layout.ts), as one device does.
    for (const p of parts) repackSplitWeights(p.weights, splitFormats(p.device), loaded);
    return new TensorParallelTextModel(config, layout, parts, dtype, comm);
  } catch (e) {
    for (const t of loaded) t.dispose();
    comm?.dispose();
    throw e;
  } finally {
    await ckpt.close();
  }
}

/** One rank's part of a tensor: a shard (or the whole), quantized from its stored precision. */
async function loadPart(
  ckpt: Checkpoint,
  name: string,
  device: Device,
  dtype: ComputeDType,
  spec: ShardSpec | undefined,
  quantize: WeightQuantization | undefined,
): Promise<Tensor> {
  const stored = ckpt.tensors.get(indexWeights(ckpt).names.get(name) ?? "")?.info;
  // Quantize from the stored precision: bf16 as bf16, anything else through f32 (as load.ts).
  const from: ComputeDType =
    quantize && stored?.dtype === "BF16" ? "bf16" : quantize ? "f32" : dtype;
  const t = spec
    ? await loadShard(ckpt, name, device, from, spec)
    : await loadTensor(ckpt, name, device, from);
  if (!quantize || !canQuantize(t.shape, quantize)) {
    if (from === dtype) return t;
    // Not quantizable (a row of partial blocks): keep it in the compute dtype, as load.ts does.
    t.dispose();
    return spec
      ? loadShard(ckpt, name, device, dtype, spec)
      : loadTensor(ckpt, name, device, dtype);
  }
  try {
    return quantizeWeight(t, quantize);
  } finally {
    t.dispose();
  }
}

/**
 * The devices of `n` tensor-parallel ranks for a device option: "cpu" gives n CPU ranks; "cuda"
 * (the default) gives cuda:0 … cuda:n−1; "cuda:K" gives cuda:K … cuda:K+n−1.
 */
export function tensorParallelDevices(n: number, device: string | Device = "cuda"): Device[] {
  if (!Number.isInteger(n) || n < 1)
    throw new RangeError(`tensor parallel: ${n} ranks (an integer >= 1)`);
  const first = Device.of(device);
  return Array.from({ length: n }, (_, r) =>
    first.isCuda ? Device.of(`cuda:${first.index + r}`) : Device.cpu,
  );
}

/**
 * loadTextModel, or loadTensorParallelModel over tensorParallelDevices(tensorParallel, device)
 * when `tensorParallel` > 1 (the apps' one entry point).
 */
export async function loadModel(
  path: string,
  opts: LoadOptions & { tensorParallel?: number } = {},
): Promise<TextModel> {
  const { tensorParallel: n = 1, device, ...rest } = opts;
  if (n === 1) return loadTextModel(path, opts);
  return loadTensorParallelModel(path, { ...rest, devices: tensorParallelDevices(n, device) });
}
