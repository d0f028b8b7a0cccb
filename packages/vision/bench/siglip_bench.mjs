// Our SigLIP-So400m tower + projector on one 896×896 image, bf16 on CUDA, timed the way
// tools/peers/siglip_bench.py times HF's (median of N after warm-up, pixels already on the
// device, until the features are computed), on the checkpoint and pixels that script wrote; the
// features are compared with HF's. Prints one JSON line.
//   node packages/vision/bench/siglip_bench.mjs DIR [runs]
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Device, Tensor, ops } from "@gemma3/native";
import { loadVisionEncoder } from "@gemma3/vision";

const dir = process.argv[2];
const runs = Number(process.argv[3] ?? 20);
const dev = Device.of("cuda");
const t0 = performance.now();
const enc = await loadVisionEncoder(dir, { device: "cuda", dtype: "bf16" });
const loadMs = performance.now() - t0;
const f32 = (f) => {
  const b = readFileSync(join(dir, f));
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
};
const pixels = Tensor.from(f32("pixel_values.f32"), [1, 3, 896, 896], "f32", dev);
await dev.synchronize();

const once = async () => {
  const out = enc.encode(pixels);
  await dev.synchronize();
  return out;
};
for (let i = 0; i < 3; i++) (await once()).dispose();
const ts = [];
for (let i = 0; i < runs; i++) {
  const a = performance.now();
  const out = await once();
  ts.push(performance.now() - a);
  out.dispose();
}
ts.sort((a, b) => a - b);

// The attention share: 27 layers of bidirectional attention over 4096 tokens, 16 heads, d 72.
const qkv = Tensor.from(
  Float32Array.from({ length: 4096 * 3456 }, (_, i) => Math.sin(i * 0.37)),
  [4096, 3456],
  "bf16",
  dev,
);
const ind = Tensor.from([0, 4096], [2], "i32", dev);
const ind2 = Tensor.from([0, 4096], [2], "i32", dev);
const ao = Tensor.empty([4096, 16, 72], "bf16", dev);
const attn = async () => {
  for (let l = 0; l < 27; l++)
    ops.attentionPrefillQkv(qkv, 16, 16, ind, ind2, {
      smScale: 72 ** -0.5,
      causal: false,
      maxQLen: 4096,
      out: ao,
    });
  await dev.synchronize();
};
for (let i = 0; i < 3; i++) await attn();
const ta = [];
for (let i = 0; i < runs; i++) {
  const a = performance.now();
  await attn();
  ta.push(performance.now() - a);
}
ta.sort((a, b) => a - b);
const out = await once();
const ours = await out.toArray();
const hf = f32("hf_features.f32");
let num = 0;
let den = 0;
for (let i = 0; i < hf.length; i++) {
  num += (ours[i] - hf[i]) ** 2;
  den += hf[i] ** 2;
}
console.log(
  JSON.stringify({
    device: dev.info().name,
    median_ms: ts[Math.floor(ts.length / 2)],
    min_ms: ts[0],
    attention_27_layers_median_ms: ta[Math.floor(ta.length / 2)],
    runs,
    load_ms: loadMs,
    rel_l2_vs_hf: Math.sqrt(num / den),
  }),
);
