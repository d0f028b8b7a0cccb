// CPU decode at the 1B shape (issue 9's "CPU 1B Q4_0 decode ≥ 50% of the DRAM roofline"): writes a
// random-weight gemma-3-1b-shaped checkpoint (bf16, seeded) once, loads it with the linear weights
// quantized on load, and times batch-1 greedy decode; the roofline is this machine's measured copy
// bandwidth (read + write, the native CPU copy) over the bytes of weights each token reads.
//   node packages/model/bench/cpu-decode.mjs [--quantize q4_0] [--dtype bf16] [--dir /tmp/g3-1b]
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { cpus } from "node:os";
import { Device, Tensor, ops } from "@gemma3/native";
import { loadTextModel } from "@gemma3/model";

const { values } = parseArgs({
  options: {
    quantize: { type: "string", default: "q4_0" },
    dtype: { type: "string", default: "bf16" },
    dir: { type: "string", default: "/tmp/g3-1b-random" },
    steps: { type: "string", default: "32" },
  },
});
const here = dirname(fileURLToPath(import.meta.url));
const cfg = JSON.parse(
  readFileSync(join(here, "../test/fixtures/configs/gemma-3-1b-it.config.json"), "utf8"),
);

async function writeCheckpoint(dir) {
  mkdirSync(dir, { recursive: true });
  const h = cfg.hidden_size,
    f = cfg.intermediate_size,
    d = cfg.head_dim;
  const hq = cfg.num_attention_heads,
    hkv = cfg.num_key_value_heads;
  const shapes = { "model.embed_tokens.weight": [cfg.vocab_size, h], "model.norm.weight": [h] };
  for (let i = 0; i < cfg.num_hidden_layers; i++) {
    const p = `model.layers.${i}.`;
    Object.assign(shapes, {
      [p + "input_layernorm.weight"]: [h],
      [p + "post_attention_layernorm.weight"]: [h],
      [p + "pre_feedforward_layernorm.weight"]: [h],
      [p + "post_feedforward_layernorm.weight"]: [h],
      [p + "self_attn.q_proj.weight"]: [hq * d, h],
      [p + "self_attn.k_proj.weight"]: [hkv * d, h],
      [p + "self_attn.v_proj.weight"]: [hkv * d, h],
      [p + "self_attn.o_proj.weight"]: [h, hq * d],
      [p + "self_attn.q_norm.weight"]: [d],
      [p + "self_attn.k_norm.weight"]: [d],
      [p + "mlp.gate_proj.weight"]: [f, h],
      [p + "mlp.up_proj.weight"]: [f, h],
      [p + "mlp.down_proj.weight"]: [h, f],
    });
  }
  const header = { __metadata__: { format: "pt" } };
  let off = 0;
  for (const [k, s] of Object.entries(shapes)) {
    const n = s.reduce((a, b) => a * b, 1) * 2;
    header[k] = { dtype: "BF16", shape: s, data_offsets: [off, off + n] };
    off += n;
  }
  let json = Buffer.from(JSON.stringify(header));
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const out = createWriteStream(join(dir, "model.safetensors"));
  const write = (b) => new Promise((r) => (out.write(b) ? r() : out.once("drain", r)));
  await write(len);
  await write(json);
  let seed = 12345;
  for (const [, s] of Object.entries(shapes)) {
    const n = s.reduce((a, b) => a * b, 1);
    // bf16 of uniform values with std ~ 1/sqrt(fan_in) (norm weights: uniform in ±0.5)
    const scale = s.length === 1 ? 0.5 : Math.sqrt(3 / s[s.length - 1]);
    for (let i = 0; i < n; i += 1 << 22) {
      const m = Math.min(1 << 22, n - i);
      const a = new Float32Array(m);
      for (let j = 0; j < m; j++) {
        seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
        a[j] = ((seed / 4294967296) * 2 - 1) * scale;
      }
      const u = new Uint32Array(a.buffer);
      const b16 = new Uint16Array(m);
      for (let j = 0; j < m; j++) b16[j] = (u[j] + 0x7fff + ((u[j] >>> 16) & 1)) >>> 16;
      await write(Buffer.from(b16.buffer));
    }
  }
  await new Promise((r) => out.end(r));
  writeFileSync(join(dir, "config.json"), JSON.stringify(cfg, null, 2));
}

const dir = values.dir;
if (!existsSync(join(dir, "model.safetensors"))) {
  const t = performance.now();
  await writeCheckpoint(dir);
  console.error(`wrote ${dir} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// Copy bandwidth: 1 GiB f32 copied 5 times on the CPU device (read + write counted).
const cpu = Device.of("cpu");
const N = 1 << 28;
const a = Tensor.empty([N], "f32", cpu);
const b = Tensor.empty([N], "f32", cpu);
ops.scale(a, 0, a); // touch the pages
ops.scale(b, 0, b);
await cpu.synchronize();
const copies = [];
for (let i = 0; i < 5; i++) {
  const t = performance.now();
  b.copyFrom(a);
  await cpu.synchronize();
  copies.push(performance.now() - t);
}
const copyGBs = (2 * 4 * N) / (median(copies) / 1000) / 1e9;
a.dispose();
b.dispose();

const model = await loadTextModel(dir, {
  device: "cpu",
  dtype: values.dtype,
  ...(values.quantize !== "none" ? { quantize: values.quantize } : {}),
});
let bytes =
  model.weights.embedTokens.byteLength +
  model.weights.norm.byteLength +
  (model.weights.lmHead?.byteLength ?? 0);
// Fused layers hold [q; k; v] and [gate; up] once; the parts are row views of them (fuse.ts).
const views = (l) => [
  ...(l.qkvProj ? ["qProj", "kProj", "vProj"] : []),
  ...(l.gateUpProj ? ["gateProj", "upProj"] : []),
];
for (const l of model.weights.layers)
  for (const [k, t] of Object.entries(l))
    if (!views(l).includes(k)) bytes += t.byteLength ?? t.data?.byteLength ?? 0;
// A token reads every layer's weights and the tied head once; the embedding gather reads one row.
const embedRow = model.weights.embedTokens.byteLength / cfg.vocab_size;
const perToken =
  bytes -
  model.weights.embedTokens.byteLength +
  embedRow +
  (model.weights.lmHead ? 0 : model.weights.embedTokens.byteLength);
const STEPS = Number(values.steps);
const seq = model.newCache(16 + STEPS + 8);
let logits = model.forward(
  Array.from({ length: 16 }, (_, i) => 100 + i),
  seq,
);
const times = [];
for (let s = 0; s < STEPS + 3; s++) {
  const am = ops.argmax(logits);
  const next = (await am.toArray())[0];
  am.dispose();
  logits.dispose();
  const t = performance.now();
  logits = model.forward([next], seq, { graph: true });
  await cpu.synchronize();
  if (s >= 3) times.push(performance.now() - t);
}
logits.dispose();
seq.dispose();
const ms = median(times);
const tokS = 1000 / ms;
const roofline = (copyGBs * 1e9) / perToken;
console.log(
  JSON.stringify({
    machine: `${cpus().length} × ${cpus()[0]?.model}`,
    quantize: values.quantize,
    dtype: values.dtype,
    bytes_per_token: perToken,
    copy_GBs: +copyGBs.toFixed(2),
    ms_per_token: +ms.toFixed(2),
    tok_s: +tokS.toFixed(2),
    effective_GBs: +((perToken * tokS) / 1e9).toFixed(2),
    roofline_tok_s: +roofline.toFixed(2),
    fraction_of_roofline: +(tokS / roofline).toFixed(3),
  }),
);
model.dispose();
