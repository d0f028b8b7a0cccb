// Decode step time at tensor-parallel 1 vs N on the GPUs of one host, and the all-reduce share:
// greedy decode (argmax on the device, 4 bytes to the host per sequence, as `gemma3 generate`)
// of `--batch` sequences after a `--prompt`-token prefill; median step time over `--steps` steps
// after 4 warm-up steps. TP 1 runs eagerly and with its captured CUDA graph; TP N runs eagerly
// (per-op launches on N devices). The all-reduce alone: the step's 2·layers + 1 all-reduces of
// [batch, hidden] back to back, synchronized, median of 20.
//   node packages/model/bench/tp-decode.mjs MODEL [--tp 1,2] [--batch 1] [--steps 32]
//        [--prompt 16] [--dtype bf16] [--collective auto|nccl|host] [--json FILE] [--device cuda]
// (--device cpu: N CPU ranks, a smoke test of the script, not a benchmark).
// Run after `npx turbo run build` (imports ../dist).
import { writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { Device, Tensor, ops } from "@gemma3/native";
import { loadTextModel } from "../dist/load.js";
import { loadTensorParallelModel, tensorParallelDevices } from "../dist/tp/load.js";

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1] : def;
};
const tps = opt("--tp", "1,2").split(",").map(Number);
const batch = Number(opt("--batch", "1"));
const steps = Number(opt("--steps", "32"));
const promptLen = Number(opt("--prompt", "16"));
const device = opt("--device", "cuda");
const dtype = opt("--dtype", device === "cpu" ? "f32" : "bf16");
const collective = opt("--collective", "auto");
const jsonOut = opt("--json", "");
const path = args[0];
if (!path) {
  console.error("usage: tp-decode.mjs MODEL [--tp 1,2] [--batch 1] [--steps 32] …");
  process.exit(2);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
let seed = 1;
const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;

/** Median decode step (ms) of `model` over `steps` steps, graph or eager. */
async function decode(model, graph) {
  const V = model.config.vocabSize;
  const cache = model.newKVCache({ maxSeqs: batch, maxSeqLen: promptLen + steps + 8 });
  const seqs = Array.from({ length: batch }, () => cache.sequence());
  const prompts = seqs.map(() => [
    2,
    ...Array.from({ length: promptLen - 1 }, () => 3 + Math.floor(rand() * Math.min(999, V - 3))),
  ]);
  const pre = model.forwardBatch(seqs.map((seq, i) => ({ seq, ids: prompts[i] })));
  let next = Array.from(await ops.argmax(pre).toArray());
  pre.dispose();
  const times = [];
  for (let s = 0; s < steps + 4; s++) {
    const t0 = performance.now();
    const logits = model.forwardBatch(
      seqs.map((seq, i) => ({ seq, ids: [next[i] % V] })),
      { graph },
    );
    const am = ops.argmax(logits);
    next = Array.from(await am.toArray());
    am.dispose();
    if (!graph) logits.dispose();
    if (s >= 4) times.push(performance.now() - t0);
  }
  for (const s of seqs) s.dispose();
  cache.dispose();
  return median(times);
}

/** Median ms of one step's all-reduces (2·layers + 1 of [batch, hidden]) on `model.comm`. */
async function allReduceAlone(model) {
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

const results = [];
for (const tp of tps) {
  const t0 = performance.now();
  const model =
    tp === 1
      ? await loadTextModel(path, { device: tensorParallelDevices(1, device)[0], dtype })
      : await loadTensorParallelModel(path, {
          devices: tensorParallelDevices(tp, device),
          dtype,
          collective,
        });
  const loadS = (performance.now() - t0) / 1000;
  const r = { tp, batch, dtype, loadS: +loadS.toFixed(1) };
  if (tp === 1) {
    r.graphMs = await decode(model, true);
    r.eagerMs = await decode(model, false);
  } else {
    r.backend = model.comm.backend;
    r.eagerMs = await decode(model, false);
    const ar = await allReduceAlone(model);
    r.allReduces = ar.count;
    r.allReduceMs = ar.ms;
    r.allReduceShare = +(ar.ms / r.eagerMs).toFixed(3);
  }
  for (const k of ["graphMs", "eagerMs", "allReduceMs"])
    if (r[k] !== undefined) r[k] = +r[k].toFixed(3);
  r.tokS = +((1000 * batch) / (r.graphMs ?? r.eagerMs)).toFixed(1);
  r.device = Device.of(device).info().name;
  console.log(JSON.stringify(r));
  results.push(r);
  model.dispose();
}
if (jsonOut) writeFileSync(jsonOut, JSON.stringify(results, null, 2));
