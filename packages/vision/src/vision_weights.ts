// Weights of the SigLIP vision tower and the Gemma 3 multimodal projector, read from a
// Gemma3ForConditionalGeneration safetensors checkpoint with @gemma3/model's reader. Stored names
// (hub: vision_tower.vision_model.*, multi_modal_projector.*; transformers ≥ 5:
// model.vision_tower[.vision_model].*, model.multi_modal_projector.*) map to the canonical
// "vision.<suffix>" / "projector.<suffix>" names of @gemma3/model's weights.ts.
import { join } from "node:path";
import { Device, Tensor, type DTypeName } from "@gemma3/native";
import {
  WeightError,
  indexWeights,
  loadConfig,
  loadTensor,
  openCheckpoint,
  type Checkpoint,
  type Gemma3Config,
  type SiglipVisionConfig,
} from "@gemma3/model";

/** LayerNorm parameters: weight and bias, both [hidden]. */
export interface LayerNormWeights {
  w: Tensor;
  b: Tensor;
}

/** A Linear with bias: w [out, in] (torch layout), b [out]. */
export interface LinearWeights {
  w: Tensor;
  b: Tensor;
}

/** One SigLIP encoder layer (HF SiglipEncoderLayer). */
export interface SiglipLayerWeights {
  layerNorm1: LayerNormWeights;
  /** q_proj, k_proj, v_proj stacked at load (one matmul): w [3·hidden, hidden], b [3·hidden] */
  qkv: LinearWeights;
  out: LinearWeights;
  layerNorm2: LayerNormWeights;
  fc1: LinearWeights;
  fc2: LinearWeights;
}

/** The tower (HF SiglipVisionTransformer without a head) and the projector, on one device. */
export interface VisionWeights {
  /** Conv2d(C, hidden, k = s = patch) as a Linear over flattened patches: w [hidden, C·p·p], b [hidden] */
  patchEmbedding: LinearWeights;
  /** [num_patches, hidden] */
  positionEmbedding: Tensor;
  layers: SiglipLayerWeights[];
  postLayernorm: LayerNormWeights;
  /** mm_soft_emb_norm (Gemma RMSNorm, 1 + w): [vision hidden] */
  softEmbNorm: Tensor;
  /**
   * mm_input_projection_weight transposed at load to [text hidden, vision hidden]: the checkpoint
   * stores a plain matrix [vision hidden, text hidden] used as x·W, not a Linear's [out, in].
   */
  projection: Tensor;
}

/** Every canonical vision/projector tensor `cfg` needs, with its stored shape. */
export function expectedVisionWeights(cfg: Gemma3Config): { name: string; shape: number[] }[] {
  const v = requireVision(cfg);
  const h = v.hidden_size;
  const f = v.intermediate_size;
  const p = v.patch_size;
  const patches = (v.image_size / p) ** 2;
  const out = [
    { name: "vision.embeddings.patch_embedding.weight", shape: [h, v.num_channels, p, p] },
    { name: "vision.embeddings.patch_embedding.bias", shape: [h] },
    { name: "vision.embeddings.position_embedding.weight", shape: [patches, h] },
  ];
  for (let i = 0; i < v.num_hidden_layers; i++) {
    const l = `vision.encoder.layers.${i}.`;
    for (const n of ["layer_norm1", "layer_norm2"])
      out.push({ name: `${l}${n}.weight`, shape: [h] }, { name: `${l}${n}.bias`, shape: [h] });
    for (const n of ["q_proj", "k_proj", "v_proj", "out_proj"])
      out.push(
        { name: `${l}self_attn.${n}.weight`, shape: [h, h] },
        { name: `${l}self_attn.${n}.bias`, shape: [h] },
      );
    out.push(
      { name: `${l}mlp.fc1.weight`, shape: [f, h] },
      { name: `${l}mlp.fc1.bias`, shape: [f] },
      { name: `${l}mlp.fc2.weight`, shape: [h, f] },
      { name: `${l}mlp.fc2.bias`, shape: [h] },
    );
  }
  out.push(
    { name: "vision.post_layernorm.weight", shape: [h] },
    { name: "vision.post_layernorm.bias", shape: [h] },
    { name: "projector.mm_soft_emb_norm.weight", shape: [h] },
    { name: "projector.mm_input_projection_weight", shape: [h, cfg.hiddenSize] },
  );
  return out;
}

/** The vision config of a multimodal config (throws for a text-only one). */
export function requireVision(cfg: Gemma3Config): SiglipVisionConfig {
  if (!cfg.vision || cfg.mmTokensPerImage === null)
    throw new WeightError(
      `model_type "${cfg.modelType}" has no vision tower (Gemma 3 1B is text-only)`,
      "vision",
      "config.json",
    );
  return cfg.vision;
}

const same = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((x, i) => x === b[i]);

/** Checks names, shapes and float dtypes of every vision tensor before anything is uploaded. */
export function checkVisionWeights(cfg: Gemma3Config, ckpt: Checkpoint): void {
  const { names } = indexWeights(ckpt);
  const where = ckpt.indexFile ?? join(ckpt.dir, "model.safetensors");
  for (const { name, shape } of expectedVisionWeights(cfg)) {
    const key = names.get(name);
    if (key === undefined)
      throw new WeightError(`${where}: missing vision tensor "${name}"`, name, where);
    const { file, info } = ckpt.tensors.get(key)!;
    if (!same(info.shape, shape))
      throw new WeightError(
        `${file.path}: tensor "${key}" has shape [${info.shape.join(", ")}], config needs [${shape.join(", ")}]`,
        name,
        file.path,
      );
    if (info.dtype !== "F32" && info.dtype !== "BF16" && info.dtype !== "F16")
      throw new WeightError(
        `${file.path}: tensor "${key}" is ${info.dtype}; weights must be BF16, F16 or F32`,
        name,
        file.path,
      );
  }
}

/** What a weight source hands assembleVisionWeights (canonical names, as expectedVisionWeights). */
export interface VisionWeightSource {
  /** A tensor by canonical name. */
  tensor(name: string): Promise<Tensor>;
  /** `${prefix}.weight` and `${prefix}.bias` (Linear or LayerNorm). */
  lin(prefix: string): Promise<LinearWeights>;
  /** The [q; k; v] rows of several Linears as one (weight rows and biases stacked). */
  stacked(prefixes: string[]): Promise<LinearWeights>;
  /** mm_soft_emb_norm's w (Gemma RMSNorm: the layer scales by 1 + w). */
  softEmbNorm(): Promise<Tensor>;
  /** [text hidden, vision hidden]: HF's mm_input_projection_weight transposed. */
  projection(): Promise<Tensor>;
}

/**
 * The tower and projector in the layout the SigLIP code runs (the safetensors and mmproj GGUF
 * loaders share it; each supplies its own reads).
 */
export async function assembleVisionWeights(
  v: SiglipVisionConfig,
  src: VisionWeightSource,
): Promise<VisionWeights> {
  const p = v.patch_size;
  const patch = await src.lin("vision.embeddings.patch_embedding");
  const layers: SiglipLayerWeights[] = [];
  for (let i = 0; i < v.num_hidden_layers; i++) {
    const l = `vision.encoder.layers.${i}.`;
    layers.push({
      layerNorm1: await src.lin(`${l}layer_norm1`),
      qkv: await src.stacked(["q_proj", "k_proj", "v_proj"].map((n) => `${l}self_attn.${n}`)),
      out: await src.lin(`${l}self_attn.out_proj`),
      layerNorm2: await src.lin(`${l}layer_norm2`),
      fc1: await src.lin(`${l}mlp.fc1`),
      fc2: await src.lin(`${l}mlp.fc2`),
    });
  }
  return {
    patchEmbedding: { w: patch.w.view([v.hidden_size, v.num_channels * p * p]), b: patch.b },
    positionEmbedding: await src.tensor("vision.embeddings.position_embedding.weight"),
    layers,
    postLayernorm: await src.lin("vision.post_layernorm"),
    softEmbNorm: await src.softEmbNorm(),
    projection: await src.projection(),
  };
}

/**
 * Uploads the tower and projector weights of an open checkpoint to `device` as `dtype`.
 * @returns the weights and the owners to dispose
 */
export async function loadVisionWeights(
  cfg: Gemma3Config,
  ckpt: Checkpoint,
  device: Device,
  dtype: "f32" | "bf16",
): Promise<{ weights: VisionWeights; owners: Tensor[] }> {
  checkVisionWeights(cfg, ckpt);
  const v = requireVision(cfg);
  const owners: Tensor[] = [];
  const load = async (name: string, as: DTypeName = dtype) => {
    const t = await loadTensor(ckpt, name, device, as);
    owners.push(t);
    return t;
  };
  try {
    const lin = async (p: string): Promise<LinearWeights> => ({
      w: await load(`${p}.weight`),
      b: await load(`${p}.bias`),
    });
    // [q; k; v] rows of one Linear: each output column is the same dot product as before.
    const stacked = async (ps: string[]): Promise<LinearWeights> => {
      const parts: LinearWeights[] = [];
      for (const p of ps) parts.push(await lin(p));
      const rows = parts.reduce((n, x) => n + x.w.shape[0]!, 0);
      const w = Tensor.empty([rows, parts[0]!.w.shape[1]!], dtype, device);
      const b = Tensor.empty([rows], dtype, device);
      owners.push(w, b);
      let at = 0;
      for (const x of parts) {
        const n = x.w.shape[0]!;
        w.slice(at, at + n).copyFrom(x.w);
        b.slice(at, at + n).copyFrom(x.b);
        at += n;
      }
      for (const x of parts) {
        x.w.dispose(); // queued copies keep the memory until they ran
        x.b.dispose();
        owners.splice(owners.indexOf(x.w), 1);
        owners.splice(owners.indexOf(x.b), 1);
      }
      return { w, b };
    };
    const weights = await assembleVisionWeights(v, {
      tensor: (name) => load(name),
      lin,
      stacked,
      softEmbNorm: () => load("projector.mm_soft_emb_norm.weight"),
      projection: async () => {
        const t = await transposed(ckpt, "projector.mm_input_projection_weight", device, dtype);
        owners.push(t);
        return t;
      },
    });
    return { weights, owners };
  } catch (e) {
    for (const t of owners) t.dispose();
    throw e;
  }
}

/** A 2-D tensor transposed on the host (read as f32, rounded once to `dtype` on upload). */
async function transposed(
  ckpt: Checkpoint,
  name: string,
  device: Device,
  dtype: DTypeName,
): Promise<Tensor> {
  const t = await loadTensor(ckpt, name, "cpu", "f32");
  try {
    const [r = 0, c = 0] = t.shape;
    const src = (await t.toArray()) as Float32Array;
    const dst = new Float32Array(r * c);
    for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) dst[j * r + i] = src[i * c + j]!;
    return Tensor.from(dst, [c, r], dtype, device);
  } finally {
    t.dispose();
  }
}

/** Opens `dir`'s config and checkpoint (the caller closes the checkpoint). */
export async function openVisionCheckpoint(
  dir: string,
): Promise<{ config: Gemma3Config; ckpt: Checkpoint }> {
  const config = await loadConfig(join(dir, "config.json"));
  requireVision(config);
  const ckpt = await openCheckpoint(dir);
  return { config, ckpt };
}
