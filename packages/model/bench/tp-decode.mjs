// Decode step time at tensor-parallel 1 vs N on the GPUs of one host, and the all-reduce share:
// greedy decode (argmax on the device, 4 bytes to the host per sequence, as `gemma3 generate`)
// of `--batch` sequences (a list: one run each) after a `--prompt`-token prefill; median step
// time over `--steps` steps after 4 warm-up steps. Every TP size runs with its captured graphs
// (TP 1: one CUDA graph; TP N: one per rank device, the NCCL all-reduces captured) and eagerly.
// All-reduce share of a TP N step: the graph step timed again with the all-reduces left out
// (the communicator's allReduce replaced by a no-op before capture: wrong numbers, same kernels
// otherwise), share = 1 − without / with; and the step's 2·layers + 1 all-reduces alone, eager,
// back to back, synchronized.
// Correctness, per TP N against TP 1 (same prompts): max |Δ| of the prefill logits, argmax
// agreement where TP 1's top-2 margin > 0.05, sequences whose greedy ids equal TP 1's; and graph
// vs eager logits of the same model at decode step 2.
//   node packages/model/bench/tp-decode.mjs MODEL [--tp 1,2] [--batch 1,64] [--steps 32]
//        [--prompt 16] [--dtype bf16] [--collective auto|nccl|host] [--json FILE] [--device cuda]
//   MODEL: a checkpoint directory (the loaders), or `random:CONFIG.json`: random bf16 weights
//   generated on the devices at that config's shape (no checkpoint; the 27B's 54 GB would take
//   minutes to write and read; the loaders are covered by the tests).
// (--device cpu: N CPU ranks, a smoke test of the script, not a benchmark).
// Run after `npx turbo run build` (imports ../dist).
import { writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { Device, Tensor, ops } from "@gemma3/native";
import { loadTextModel } from "../dist/load.js";
import { randomTensorParallelModel, randomTextModel } from "../dist/random.js";
import { loadTensorParallelModel, tensorParallelDevices } from "../dist/tp/load.js";

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1] : def;
};
const tps = opt("--tp", "1,2").split(",").map(Number);
const batches = opt("--batch", "1").split(",").map(Number);
const steps = Number(opt("--steps", "32"));
const promptLen = Number(opt("--prompt", "16"));
const device = opt("--device", "cuda");
const dtype = opt("--dtype", device === "cpu" ? "f32" : "bf16");
const collective = opt("--collective", "auto");
const jsonOut = opt("--json", "");
const path = args[0];
if (!path) {
  console.error("usage: tp-decode.mjs MODEL|random:CONFIG [--tp 1,2] [--batch 1,64] …");
  process.exit(2);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
let seed = 1;
const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;

// Random weights on the devices: packages/model/src/random.ts (each TP rank's shards are slices of
// the one-device model's tensors, fused and placed as the loaders place them).
async function randomModel(configPath, tp) {
  const devs = tensorParallelDevices(tp, device);
  if (tp === 1) return randomTextModel(configPath, { device: devs[0], dtype });
  return randomTensorParallelModel(configPath, { devices: devs, dtype, collective });
}
async function openModel(tp) {
  if (path.startsWith("random:")) return randomModel(path.slice(7), tp);
  return tp === 1
    ? loadTextModel(path, { device: tensorParallelDevices(1, device)[0], dtype })
    : loadTensorParallelModel(path, {
        devices: tensorParallelDevices(tp, device),
        dtype,
        collective,
      });
}

// ---- measurements ---------------------------------------------------------------------------------
/**
 * Greedy decode of `batch` sequences: median step ms, every step's ids, the prefill logits and
 * the logits of decode step 2 (the first replay of a freshly captured graph is step 1).
 */
async function decode(model, batch, graph) {
  seed = 1; // the same prompts in every run
  const V = model.config.vocabSize;
  const cache = model.newKVCache({ maxSeqs: batch, maxSeqLen: promptLen + steps + 8 });
  const seqs = Array.from({ length: batch }, () => cache.sequence());
  const prompts = seqs.map(() => [
    2,
    ...Array.from({ length: promptLen - 1 }, () => 3 + Math.floor(rand() * Math.min(999, V - 3))),
  ]);
  const pre = model.forwardBatch(seqs.map((seq, i) => ({ seq, ids: prompts[i] })));
  const prefill = await pre.toArray();
  let next = Array.from(await ops.argmax(pre).toArray());
  pre.dispose();
  const times = [];
  const ids = [next];
  let probe = null;
  for (let s = 0; s < steps + 4; s++) {
    const t0 = performance.now();
    const logits = model.forwardBatch(
      seqs.map((seq, i) => ({ seq, ids: [next[i] % V] })),
      { graph },
    );
    const am = ops.argmax(logits);
    next = Array.from(await am.toArray());
    am.dispose();
    if (s >= 4) times.push(performance.now() - t0);
    if (s === 2) probe = await logits.toArray();
    logits.dispose();
    ids.push(next);
  }
  for (const s of seqs) s.dispose();
  cache.dispose();
  return { ms: median(times), ids, prefill, probe };
}

/** Median ms of one step's all-reduces (2·layers + 1 of [batch, hidden]) on `model.comm`, eager. */
async function allReduceAlone(model, batch) {
  const { hiddenSize, numHiddenLayers } = model.config;
  const count = 2 * numHiddenLayers + 1;
  const ts = model.devices.map((d) => Tensor.zeros([batch, hiddenSize], model.dtype, d));
  const sync = () => Promise.all(model.devices.map((d) => d.synchronize()));
  const times = [];
  for (let rep = 0; rep < 24; rep++) {
    await sync();
    const t0 = performance.now();
    for (let i = 0; i < count; i++) model.comm.allReduce(ts);
    await sync();
    if (rep >= 4) times.push(performance.now() - t0);
  }
  for (const t of ts) t.dispose();
  return { count, ms: median(times) };
}

const maxAbsDiff = (a, b) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};
/** Rows of `got` whose argmax equals `ref`'s, among rows where ref's top-2 margin > 0.05. */
function argmaxAgreement(ref, got, V) {
  let counted = 0;
  let agree = 0;
  for (let r = 0; r < ref.length / V; r++) {
    const row = ref.subarray(r * V, (r + 1) * V);
    let a = 0;
    for (let i = 1; i < V; i++) if (row[i] > row[a]) a = i;
    let b = a === 0 ? 1 : 0;
    for (let i = 0; i < V; i++) if (i !== a && row[i] > row[b]) b = i;
    if (row[a] - row[b] <= 0.05) continue;
    counted++;
    const g = got.subarray(r * V, (r + 1) * V);
    let ga = 0;
    for (let i = 1; i < V; i++) if (g[i] > g[ga]) ga = i;
    if (ga === a) agree++;
  }
  return `${agree}/${counted}`;
}

const results = [];
const tp1 = new Map(); // batch → TP 1's graph run
for (const tp of tps) {
  const t0 = performance.now();
  const model = await openModel(tp);
  await Promise.all((model.devices ?? [model.device]).map((d) => d.synchronize()));
  const loadS = (performance.now() - t0) / 1000;
  for (const batch of batches) {
    const r = { tp, batch, dtype, weights: path.startsWith("random:") ? "random" : "checkpoint" };
    r.loadS = +loadS.toFixed(1);
    const g = await decode(model, batch, true);
    const e = await decode(model, batch, false);
    r.graphMs = g.ms;
    r.eagerMs = e.ms;
    r.graphVsEagerMaxDiff = +maxAbsDiff(g.probe, e.probe).toExponential(2);
    if (tp === 1) tp1.set(batch, g);
    else {
      r.backend = model.comm.backend;
      r.captured = model.capturedBatches.includes(batch);
      if (model.graphFallback) r.graphFallback = model.graphFallback;
      // The step without its all-reduces (wrong numbers): an own no-op shadows the method.
      model.comm.allReduce = () => {};
      try {
        r.noAllReduceGraphMs = (await decode(model, batch, true)).ms;
      } finally {
        delete model.comm.allReduce;
      }
      r.allReduceShare = +(1 - r.noAllReduceGraphMs / r.graphMs).toFixed(3);
      const ar = await allReduceAlone(model, batch);
      r.allReduces = ar.count;
      r.allReduceAloneMs = ar.ms;
      const ref = tp1.get(batch);
      if (ref) {
        const V = model.config.vocabSize;
        r.prefillMaxDiffVsTp1 = +maxAbsDiff(g.prefill, ref.prefill).toExponential(2);
        r.firstTokenArgmaxVsTp1 = argmaxAgreement(ref.prefill, g.prefill, V);
        let same = 0;
        for (let i = 0; i < batch; i++)
          if (g.ids.every((step, t) => step[i] === ref.ids[t][i])) same++;
        r.greedySeqsEqualTp1 = `${same}/${batch}`;
      }
    }
    for (const k of ["graphMs", "eagerMs", "noAllReduceGraphMs", "allReduceAloneMs"])
      if (r[k] !== undefined) r[k] = +r[k].toFixed(3);
    r.tokS = +((1000 * batch) / r.graphMs).toFixed(1);
    r.device = Device.of(tensorParallelDevices(1, device)[0]).info().name;
    console.log(JSON.stringify(r));
    results.push(r);
  }
  model.dispose();
}
if (jsonOut) writeFileSync(jsonOut, JSON.stringify(results, null, 2));
