// Quality (and size, decode speed) of quantized weights against the unquantized model, on one
// prompt: mean / max KL(P_ref ‖ P_quant) over its positions and top-1 agreement (compareLogits).
//   node packages/model/bench/quant-quality.mjs MODEL [--device cuda] [--dtype bf16]
//        [--tokens 128] [--seed 1] [--formats q8_0,q4_0,fp8_e4m3] [--gguf A.gguf,B.gguf]
//        [--decode-steps 16]
// MODEL is a safetensors directory or a gemma3 .gguf (the reference loads it unquantized). The
// prompt is <bos> + pseudo-random ids (a random-weight model has no better prompt). fp8_e4m3 runs
// the real path when DecoderLayer applies weight scales, else fake-quant weights (dequant(quant(w))
// in the compute dtype), and says so. --formats also takes q4_k, q5_k, q6_k (GGUF K-quants, rows of
// whole 256-blocks), and --gguf a llama.cpp Q4_K_M file. Run after `npx turbo run build` (imports
// ../dist).
import { performance } from "node:perf_hooks";
import { Device, ops } from "@gemma3/native";
import { loadTextModel } from "../dist/load.js";
import { compareLogits, quantizeWeight } from "../dist/quantize.js";

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1] : def;
};
const device = Device.of(opt("--device", "cuda"));
const dtype = opt("--dtype", device.isCuda ? "bf16" : "f32");
const nTokens = Number(opt("--tokens", "128"));
const seed = Number(opt("--seed", "1"));
const formats = opt("--formats", "q8_0,q4_0,fp8_e4m3").split(",").filter(Boolean);
const ggufs = opt("--gguf", "").split(",").filter(Boolean);
const decodeSteps = Number(opt("--decode-steps", "16"));
const model = args[0];
if (!model) {
  console.error("usage: quant-quality.mjs MODEL [--device cuda] [--dtype bf16] [--tokens 128] …");
  process.exit(2);
}

const LINEAR = ["qProj", "kProj", "vProj", "oProj", "gateProj", "upProj", "downProj"];

/** <bos> + seeded ids in [3, min(vocab, 262144)). */
function promptIds(vocab) {
  let s = seed >>> 0;
  const hi = Math.min(vocab, 262144);
  const ids = [2];
  while (ids.length < nTokens) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    ids.push(3 + (s % (hi - 3)));
  }
  return ids;
}

/** Bytes of the linear weights (with fp8 scales) of a loaded model. */
function linearBytes(m) {
  let b = 0;
  for (const l of m.weights.layers)
    for (const f of LINEAR) b += l[f].byteLength + (l[f].scale ? l[f].scale.byteLength : 0);
  return b;
}

/** Prompt logits [T, vocab] f32, and the median decode step time in ms. */
async function run(m, ids) {
  const cache = m.newCache(ids.length + decodeSteps + 1);
  const l = m.forward(ids, cache, { allLogits: true });
  const logits = await l.toArray();
  l.dispose();
  const times = [];
  for (let i = 0; i < decodeSteps; i++) {
    const t0 = performance.now();
    const s = m.forward([ids[(i * 7) % ids.length]], cache);
    await s.toArray();
    s.dispose();
    times.push(performance.now() - t0);
  }
  cache.dispose();
  times.sort((a, b) => a - b);
  return { logits, decodeMs: times.length ? times[times.length >> 1] : NaN };
}

async function timedLoad(path, o) {
  const t0 = performance.now();
  const m = await loadTextModel(path, { device, dtype, ...o });
  if (device.isCuda) await device.synchronize();
  return { m, loadS: (performance.now() - t0) / 1000 };
}

const rows = [];
const { m: refModel, loadS: refLoad } = await timedLoad(model, {});
const refConfig = refModel.config;
const vocab = refConfig.vocabSize;
const ids = promptIds(vocab);
const ref = await run(refModel, ids);
const refBytes = linearBytes(refModel);
rows.push({
  what: `${dtype} (reference)`,
  loadS: refLoad,
  bytes: refBytes,
  cmp: null,
  ms: ref.decodeMs,
});
refModel.dispose();

for (const q of formats) {
  let label = `${q} (quantize on load)`;
  let loaded;
  try {
    loaded = await timedLoad(model, { quantize: q });
  } catch (e) {
    if (q !== "fp8_e4m3" || e?.code !== "E_UNSUPPORTED") throw e;
    // fp8 matmuls need the per-row scale, which DecoderLayer does not pass yet: fake-quant.
    loaded = await timedLoad(model, {});
    for (const l of loaded.m.weights.layers)
      for (const f of LINEAR) {
        const w = quantizeWeight(l[f], "fp8_e4m3");
        ops.dequantize(w, dtype, { scale: w.scale, out: l[f] });
        w.dispose();
      }
    label = `fp8_e4m3 (fake-quant in ${dtype})`;
  }
  const r = await run(loaded.m, ids);
  const bytes = label.includes("fake")
    ? refBytes * (1 / (dtype === "f32" ? 4 : 2))
    : linearBytes(loaded.m);
  rows.push({
    what: label,
    loadS: loaded.loadS,
    bytes,
    cmp: compareLogits(ref.logits, r.logits, vocab),
    ms: r.decodeMs,
  });
  loaded.m.dispose();
}

for (const g of ggufs) {
  const { m, loadS } = await timedLoad(g, {});
  const same = ["vocabSize", "hiddenSize", "numHiddenLayers", "intermediateSize"].every(
    (k) => m.config[k] === refConfig[k],
  );
  if (!same)
    console.error(`${g}: not the reference model's shape (vocab, hidden, layers, ffn): skipped`);
  else {
    const r = await run(m, ids);
    rows.push({
      what: `GGUF ${g.split("/").pop()}`,
      loadS,
      bytes: linearBytes(m),
      cmp: compareLogits(ref.logits, r.logits, vocab),
      ms: r.decodeMs,
    });
  }
  m.dispose();
}

const info = device.isCuda ? device.info().name : "cpu";
console.log(
  `${model}: ${nTokens} prompt tokens (seed ${seed}), vocab ${vocab}, ${device} (${info}), compute ${dtype}`,
);
console.log(
  "| weights | load s | linear weights MiB | mean KL | max KL | top-1 agree | max abs Δlogit | decode ms/token (median) |",
);
console.log("|---|---:|---:|---:|---:|---:|---:|---:|");
for (const r of rows) {
  const c = r.cmp;
  console.log(
    `| ${r.what} | ${r.loadS.toFixed(1)} | ${(r.bytes / 2 ** 20).toFixed(1)} | ${c ? c.meanKL.toExponential(3) : "—"} | ` +
      `${c ? c.maxKL.toExponential(3) : "—"} | ${c ? c.top1Agreement.toFixed(4) : "—"} | ` +
      `${c ? c.maxAbsDiff.toFixed(4) : "—"} | ${r.ms.toFixed(2)} |`,
  );
}
