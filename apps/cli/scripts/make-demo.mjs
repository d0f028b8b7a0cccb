// Writes the bundled demo checkpoint, deterministically: a tiny Gemma 3 (2 layers, hidden 64) with
// RANDOM weights and the real tokenizer's vocabulary size (262144), in the hub's 1B layout
// (config.json + model.safetensors, bf16). It exists so `gemma3 generate` runs with no download:
// a plumbing demo, not a language model. Skips work when the files are already there.
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const out = join(dirname(dirname(fileURLToPath(import.meta.url))), "demo-model");
const cfg = {
  architectures: ["Gemma3ForCausalLM"],
  model_type: "gemma3_text",
  _comment: "gemma3-node plumbing demo: RANDOM weights (seeded), real Gemma 3 vocabulary size",
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
  eos_token_id: [1, 106],
  bos_token_id: 2,
  pad_token_id: 0,
  torch_dtype: "bfloat16",
};
const cfgText = JSON.stringify(cfg, null, 2) + "\n";
if (existsSync(join(out, "model.safetensors")) && existsSync(join(out, "config.json")))
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
} = cfg;
const tensors = { "model.embed_tokens.weight": tensor([cfg.vocab_size, h], 1 / Math.sqrt(h)) };
for (let i = 0; i < cfg.num_hidden_layers; i++) {
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
writeFileSync(join(out, "config.json"), cfgText);
console.log(`demo checkpoint (random weights) written to ${out}`);
