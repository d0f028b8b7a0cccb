// Writes the bundled demo checkpoint, deterministically: a tiny Gemma 3 with RANDOM weights — text
// decoder of 2 layers, hidden 64, the real tokenizer's vocabulary size (262144), plus a 1-layer
// SigLIP (224² images, 16 soft tokens each) — as a Gemma3ForConditionalGeneration in the hub's
// layout (config.json, preprocessor_config.json, model.safetensors, bf16). It exists so `gemma3`
// runs with no download, images included: a plumbing demo, not a language model. Skips work when
// the files are already there with this config.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const out = join(dirname(dirname(fileURLToPath(import.meta.url))), "demo-model");
const text = {
  model_type: "gemma3_text",
  vocab_size: 262144,
  hidden_size: 64,
  intermediate_size: 256,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  head_dim: 32,
  query_pre_attn_scalar: 32,
  sliding_window: 32,
  sliding_window_pattern: 2,
  max_position_embeddings: 4096,
  rope_theta: 1000000,
  rope_local_base_freq: 10000,
};
// A small SigLIP: 224² images in 14² patches (16×16), avg-pooled 4×4 into 16 soft tokens per image.
const vision = {
  model_type: "siglip_vision_model",
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  image_size: 224,
  patch_size: 14,
  vision_use_head: false,
};
const cfg = {
  architectures: ["Gemma3ForConditionalGeneration"],
  model_type: "gemma3",
  _comment: "gemma3-node plumbing demo: RANDOM weights (seeded), real Gemma 3 vocabulary size",
  text_config: text,
  vision_config: vision,
  mm_tokens_per_image: 16,
  eos_token_id: [1, 106],
  bos_token_id: 2,
  pad_token_id: 0,
  torch_dtype: "bfloat16",
};
const cfgText = JSON.stringify(cfg, null, 2) + "\n";
const preprocessor = {
  image_processor_type: "Gemma3ImageProcessor",
  do_convert_rgb: null,
  do_normalize: true,
  do_pan_and_scan: null,
  do_rescale: true,
  do_resize: true,
  image_mean: [0.5, 0.5, 0.5],
  image_std: [0.5, 0.5, 0.5],
  image_seq_length: 16,
  pan_and_scan_max_num_crops: null,
  pan_and_scan_min_crop_size: null,
  pan_and_scan_min_ratio_to_activate: null,
  processor_class: "Gemma3Processor",
  resample: 2,
  rescale_factor: 1 / 255,
  size: { height: 224, width: 224 },
};
// Up to date when the config matches (an older demo was text-only: rewrite it).
if (
  existsSync(join(out, "model.safetensors")) &&
  existsSync(join(out, "config.json")) &&
  readFileSync(join(out, "config.json"), "utf8") === cfgText
)
  process.exit(0);

// Seeded PRNG (mulberry32) and bf16 rounding.
let seed = 0x6e6d6133;
const rand = () => {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const bf16 = (x) => {
  f32[0] = x;
  const u = u32[0];
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
};
const tensor = (shape, std, offset = 0) => {
  const n = shape.reduce((a, b) => a * b, 1);
  const a = new Uint16Array(n);
  for (let i = 0; i < n; i++) a[i] = bf16(offset + (rand() * 2 - 1) * std * Math.sqrt(3));
  return { shape, data: a };
};

const {
  hidden_size: h,
  intermediate_size: f,
  num_attention_heads: hq,
  num_key_value_heads: hkv,
  head_dim: d,
} = text;
// Text weights first, in the same order as the earlier text-only demo (same random values), under
// the hub's 4B+ names (language_model.model.*); then the vision tower and projector.
const tensors = { "model.embed_tokens.weight": tensor([text.vocab_size, h], 1 / Math.sqrt(h)) };
for (let i = 0; i < text.num_hidden_layers; i++) {
  const p = `model.layers.${i}.`;
  Object.assign(tensors, {
    [p + "input_layernorm.weight"]: tensor([h], 0.5),
    [p + "post_attention_layernorm.weight"]: tensor([h], 0.5),
    [p + "pre_feedforward_layernorm.weight"]: tensor([h], 0.5),
    [p + "post_feedforward_layernorm.weight"]: tensor([h], 0.5),
    [p + "self_attn.q_proj.weight"]: tensor([hq * d, h], 1 / Math.sqrt(h)),
    [p + "self_attn.k_proj.weight"]: tensor([hkv * d, h], 1 / Math.sqrt(h)),
    [p + "self_attn.v_proj.weight"]: tensor([hkv * d, h], 1 / Math.sqrt(h)),
    [p + "self_attn.o_proj.weight"]: tensor([h, hq * d], 1 / Math.sqrt(hq * d)),
    [p + "self_attn.q_norm.weight"]: tensor([d], 0.5),
    [p + "self_attn.k_norm.weight"]: tensor([d], 0.5),
    [p + "mlp.gate_proj.weight"]: tensor([f, h], 1 / Math.sqrt(h)),
    [p + "mlp.up_proj.weight"]: tensor([f, h], 1 / Math.sqrt(h)),
    [p + "mlp.down_proj.weight"]: tensor([h, f], 1 / Math.sqrt(f)),
  });
}
tensors["model.norm.weight"] = tensor([h], 0.5);
for (const k of Object.keys(tensors)) {
  tensors[`language_model.${k}`] = tensors[k];
  delete tensors[k];
}
{
  const { hidden_size: vh, intermediate_size: vf, patch_size: p, image_size: s } = vision;
  const v = "vision_tower.vision_model.";
  Object.assign(tensors, {
    [v + "embeddings.patch_embedding.weight"]: tensor([vh, 3, p, p], 1 / Math.sqrt(3 * p * p)),
    [v + "embeddings.patch_embedding.bias"]: tensor([vh], 0.1),
    [v + "embeddings.position_embedding.weight"]: tensor([(s / p) ** 2, vh], 0.5),
  });
  for (let i = 0; i < vision.num_hidden_layers; i++) {
    const l = `${v}encoder.layers.${i}.`;
    for (const n of ["layer_norm1", "layer_norm2"])
      Object.assign(tensors, {
        [l + n + ".weight"]: tensor([vh], 0.2, 1),
        [l + n + ".bias"]: tensor([vh], 0.1),
      });
    for (const n of ["q_proj", "k_proj", "v_proj", "out_proj"])
      Object.assign(tensors, {
        [l + "self_attn." + n + ".weight"]: tensor([vh, vh], 1 / Math.sqrt(vh)),
        [l + "self_attn." + n + ".bias"]: tensor([vh], 0.1),
      });
    Object.assign(tensors, {
      [l + "mlp.fc1.weight"]: tensor([vf, vh], 1 / Math.sqrt(vh)),
      [l + "mlp.fc1.bias"]: tensor([vf], 0.1),
      [l + "mlp.fc2.weight"]: tensor([vh, vf], 1 / Math.sqrt(vf)),
      [l + "mlp.fc2.bias"]: tensor([vh], 0.1),
    });
  }
  Object.assign(tensors, {
    [v + "post_layernorm.weight"]: tensor([vh], 0.2, 1),
    [v + "post_layernorm.bias"]: tensor([vh], 0.1),
    "multi_modal_projector.mm_soft_emb_norm.weight": tensor([vh], 0.5),
    "multi_modal_projector.mm_input_projection_weight": tensor([vh, h], 1 / Math.sqrt(vh)),
  });
}

// safetensors: 8-byte little-endian header length, JSON header, then the data, offsets contiguous.
const header = { __metadata__: { format: "pt", note: "gemma3-node demo, random weights" } };
let offset = 0;
for (const [name, t] of Object.entries(tensors)) {
  header[name] = {
    dtype: "BF16",
    shape: t.shape,
    data_offsets: [offset, offset + t.data.byteLength],
  };
  offset += t.data.byteLength;
}
let json = Buffer.from(JSON.stringify(header));
json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]); // pad with spaces
const len = Buffer.alloc(8);
len.writeBigUInt64LE(BigInt(json.length));
mkdirSync(out, { recursive: true });
writeFileSync(
  join(out, "model.safetensors"),
  Buffer.concat([len, json, ...Object.values(tensors).map((t) => Buffer.from(t.data.buffer))]),
);
writeFileSync(join(out, "preprocessor_config.json"), JSON.stringify(preprocessor, null, 2) + "\n");
writeFileSync(join(out, "config.json"), cfgText);
console.log(`demo checkpoint (random weights) written to ${out}`);
