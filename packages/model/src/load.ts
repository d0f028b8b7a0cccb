// Loading a model directory (config.json + *.safetensors, single or sharded) onto a device.
import { join } from "node:path";
import { Device } from "@gemma3/native";
import type { LayerWeights } from "./block.js";
import { loadConfig } from "./config.js";
import { openCheckpoint } from "./safetensors.js";
import { Gemma3TextModel, type ComputeDType, type TextWeights } from "./text_model.js";
import { checkTextWeights, expectedTextWeights, loadTensor } from "./weights.js";

export interface LoadOptions {
  /** "cpu" (default), "cuda" or "cuda:N" */
  device?: string | Device;
  /** Compute and weight dtype: "f32" or "bf16" (default: f32 on cpu, bf16 on cuda). */
  dtype?: ComputeDType;
  /** Progress over the text weights: (tensors done, fractional, tensors total). */
  onProgress?: (done: number, total: number) => void;
}

const LAYER_KEYS: Record<keyof LayerWeights, string> = {
  inputLayernorm: "input_layernorm",
  postAttentionLayernorm: "post_attention_layernorm",
  preFeedforwardLayernorm: "pre_feedforward_layernorm",
  postFeedforwardLayernorm: "post_feedforward_layernorm",
  qProj: "self_attn.q_proj",
  kProj: "self_attn.k_proj",
  vProj: "self_attn.v_proj",
  oProj: "self_attn.o_proj",
  qNorm: "self_attn.q_norm",
  kNorm: "self_attn.k_norm",
  gateProj: "mlp.gate_proj",
  upProj: "mlp.up_proj",
  downProj: "mlp.down_proj",
};

/**
 * Loads the text model of a Gemma 3 checkpoint directory (Gemma3ForCausalLM or the text part of
 * Gemma3ForConditionalGeneration). Every tensor is checked against the config first; a missing or
 * mis-shaped one fails before anything is uploaded, with the file and tensor named.
 */
export async function loadTextModel(dir: string, opts: LoadOptions = {}): Promise<Gemma3TextModel> {
  const device = Device.of(opts.device ?? "cpu");
  const dtype: ComputeDType = opts.dtype ?? (device.isCuda ? "bf16" : "f32");
  const config = await loadConfig(join(dir, "config.json"));
  const ckpt = await openCheckpoint(dir);
  const loaded: { dispose(): void }[] = [];
  try {
    checkTextWeights(config, ckpt);
    const names = expectedTextWeights(config).map((w) => w.name);
    let done = 0;
    const total = names.length;
    const load = async (name: string) => {
      const t = await loadTensor(ckpt, name, device, dtype, {
        onProgress: opts.onProgress
          ? (d, all) => opts.onProgress!(done + d / Math.max(all, 1), total)
          : undefined,
      });
      done += 1;
      loaded.push(t);
      return t;
    };
    const embedTokens = await load("embed_tokens");
    const layers: LayerWeights[] = [];
    for (let i = 0; i < config.numHiddenLayers; i++) {
      const w = {} as LayerWeights;
      for (const [field, key] of Object.entries(LAYER_KEYS) as [keyof LayerWeights, string][])
        w[field] = await load(`layers.${i}.${key}`);
      layers.push(w);
    }
    const norm = await load("norm");
    const weights: TextWeights = { embedTokens, norm, layers };
    if (!config.tieWordEmbeddings) weights.lmHead = await load("lm_head");
    return new Gemma3TextModel(config, weights, device, dtype);
  } catch (e) {
    for (const t of loaded) t.dispose();
    throw e;
  } finally {
    await ckpt.close();
  }
}
