// Decode step of the fused decoder layer vs the unfused sequence (LoadOptions.fuse), same
// checkpoint, same card, in one process: greedy decode with the captured graph (argmax on the
// device, 4 bytes to the host per sequence, as `gemma3 generate`), `--batch` sequences after a
// `--prompt`-token prefill; median step time over `--steps` steps after 4 warm-up steps (which
// capture the graph), in `--rounds` alternating rounds (fused, unfused, fused, …) so clock drift
// hits both. Also: the captured graph's node count (kernels per step), the greedy ids of both
// (they should agree), and max |Δ| of their prefill logits.
//   node packages/model/bench/fused-decode.mjs MODEL_DIR [--batch 1,8] [--steps 64] [--rounds 3]
//        [--prompt 16] [--device cuda] [--json FILE]
// Run after `npx turbo run build` (imports ../dist).
import { writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { ops } from "@gemma3/native";
import { loadTextModel } from "../dist/load.js";

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1] : def;
};
const batches = opt("--batch", "1").split(",").map(Number);
const steps = Number(opt("--steps", "64"));
const rounds = Number(opt("--rounds", "3"));
const promptLen = Number(opt("--prompt", "16"));
const device = opt("--device", "cuda");
const jsonOut = opt("--json", "");
const dir = args[0];
if (!dir) {
  console.error("usage: fused-decode.mjs MODEL_DIR [--batch 1,8] [--steps 64] [--rounds 3]");
  process.exit(2);
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const models = {
  fused: await loadTextModel(dir, { device }),
  unfused: await loadTextModel(dir, { device, fuse: false }),
};
const out = { device, dir, steps, rounds, prompt: promptLen, batches: {} };

/** One round: prefill, then `steps` + 4 graph decode steps; returns times, ids, prefill logits. */
async function round(model, B) {
  const len = promptLen + steps + 8;
  const cache = model.newKVCache({ maxSeqs: B, maxSeqLen: len });
  const seqs = Array.from({ length: B }, () => cache.sequence(len));
  const prompts = seqs.map((_, i) =>
    Array.from({ length: promptLen }, (_, j) => 3 + ((i * 31 + j * 7) % 900)),
  );
  const first = model.forwardBatch(seqs.map((seq, i) => ({ seq, ids: prompts[i] })));
  const prefill = await first.toArray();
  const am0 = ops.argmax(first);
  let ids = Array.from(await am0.toArray());
  am0.dispose();
  first.dispose();
  const times = [];
  const all = [];
  for (let s = 0; s < steps + 4; s++) {
    const t = performance.now();
    const logits = model.forwardBatch(
      seqs.map((seq, i) => ({ seq, ids: [ids[i]] })),
      { graph: true },
    );
    const am = ops.argmax(logits);
    ids = Array.from(await am.toArray());
    am.dispose();
    logits.dispose();
    if (s >= 4) times.push(performance.now() - t);
    all.push(ids);
  }
  const nodes = model.graphs?.get(B)?.graph.nodes ?? null;
  for (const s of seqs) s.dispose();
  cache.dispose();
  return { times, ids: all, prefill, nodes };
}

for (const B of batches) {
  const res = { fused: [], unfused: [] };
  const last = {};
  for (let r = 0; r < rounds; r++)
    for (const k of ["fused", "unfused"]) {
      const x = await round(models[k], B);
      res[k].push(median(x.times));
      last[k] = x;
    }
  let maxDiff = 0;
  last.fused.prefill.forEach((v, i) => {
    maxDiff = Math.max(maxDiff, Math.abs(v - last.unfused.prefill[i]));
  });
  const sameIds = JSON.stringify(last.fused.ids) === JSON.stringify(last.unfused.ids);
  const ms = { fused: median(res.fused), unfused: median(res.unfused) };
  out.batches[B] = {
    fused_ms: ms.fused,
    unfused_ms: ms.unfused,
    fused_tok_s: (1000 * B) / ms.fused,
    unfused_tok_s: (1000 * B) / ms.unfused,
    rounds_ms: res,
    graph_nodes: { fused: last.fused.nodes, unfused: last.unfused.nodes },
    same_greedy_ids: sameIds,
    prefill_logits_max_abs_diff: maxDiff,
  };
  console.log(JSON.stringify({ batch: B, ...out.batches[B] }));
}
if (jsonOut) writeFileSync(jsonOut, JSON.stringify(out, null, 2));
models.fused.dispose();
models.unfused.dispose();
