// Can this machine record tensor-parallel decode steps into CUDA graphs (NCCL all-reduces
// captured), and do replays equal eager steps? One JSON line: the NCCL/capture settings in force,
// the batch sizes captured, the reason decode fell back to eager (null if it did not), and the max
// |Δ| of replayed vs eager decode logits (tiny-1b fixture, float32, 3 sequences, 6 steps).
// scripts/gpu-tp-check.sh runs it under several settings and keeps the first that captures.
//   node packages/model/bench/tp-graph-probe.mjs [--devices cuda:0,cuda:1] [--collective nccl]
// Run after `npx turbo run build` (imports ../dist).
import { fileURLToPath } from "node:url";
import { loadTensorParallelModel } from "../dist/tp/load.js";

const args = process.argv.slice(2);
const i = args.indexOf("--devices");
const devices = (i >= 0 ? args[i + 1] : "cuda:0,cuda:1").split(",");
const c = args.indexOf("--collective");
const collective = c >= 0 ? args[c + 1] : "nccl";
const dir = fileURLToPath(new URL("../test/fixtures/tiny-1b", import.meta.url));

/** Every decode step's logits of 3 greedy sequences (graph replay or eager). */
async function decode(model, graph) {
  const P = [2, 651, 6037, 9529, 17, 1098, 140, 7, 1234, 99, 5, 42];
  const V = model.config.vocabSize;
  const cache = model.newKVCache({ maxSeqs: 3, maxSeqLen: 32 });
  const seqs = [0, 1, 2].map(() => cache.sequence());
  const first = model.forwardBatch(seqs.map((seq, k) => ({ seq, ids: P.map((t) => (t + k) % V) })));
  let rows = await first.toArray();
  first.dispose();
  const out = [];
  for (let t = 0; t < 6; t++) {
    const next = seqs.map((_, k) => {
      let a = 0;
      for (let j = 1; j < V; j++) if (rows[k * V + j] > rows[k * V + a]) a = j;
      return a;
    });
    const l = model.forwardBatch(
      seqs.map((seq, k) => ({ seq, ids: [next[k]] })),
      { graph },
    );
    rows = Float32Array.from(await l.toArray());
    l.dispose();
    out.push(rows);
  }
  for (const s of seqs) s.dispose();
  cache.dispose();
  return out;
}

const env = Object.fromEntries(
  Object.entries(process.env).filter(
    ([k]) => k.startsWith("NCCL_") || k.startsWith("GEMMA3_CAPTURE") || k.startsWith("GEMMA3_CUDA"),
  ),
);
const r = { env, devices };
try {
  const model = await loadTensorParallelModel(dir, { devices, dtype: "f32", collective });
  const eager = await decode(model, false);
  const graphed = await decode(model, true);
  r.captured = model.capturedBatches;
  r.fallback = model.graphFallback;
  let d = 0;
  graphed.forEach((row, t) => row.forEach((v, j) => (d = Math.max(d, Math.abs(v - eager[t][j])))));
  r.maxDiff = d;
  r.ok = r.captured.length > 0 && r.fallback === null && d < 1e-4;
  model.dispose();
} catch (e) {
  r.ok = false;
  r.error = String(e?.message ?? e);
}
console.log(JSON.stringify(r));
process.exit(r.ok ? 0 : 1);
