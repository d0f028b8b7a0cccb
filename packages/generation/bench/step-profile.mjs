// Where a decode step's time goes, per batch size: the model alone (graph-replayed forwardBatch +
// a device argmax, 4 bytes back per row) vs the model + the Sampler (greedy, and temperature 1 with
// top-k 64 / top-p 0.95 as Gemma's generation_config asks). Median ms per step of 32 steps after
// warm-up (which also captures the graphs). Prints one JSON line.
//   node packages/generation/bench/step-profile.mjs MODEL_DIR [--device cuda] [--batches 1,8,32,64]
import { parseArgs } from "node:util";
import { loadTextModel } from "@gemma3/model";
import { ops } from "@gemma3/native";
import { Sampler, SamplingState } from "@gemma3/generation";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    device: { type: "string", default: "cuda" },
    batches: { type: "string", default: "1,8,32,64" },
    steps: { type: "string", default: "32" },
  },
});
const model = await loadTextModel(positionals[0], { device: values.device });
const V = model.config.vocabSize;
const STEPS = Number(values.steps);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const out = { device: values.device, steps: STEPS, batches: {} };

for (const B of values.batches.split(",").map(Number)) {
  const P = 16;
  const cache = model.newKVCache({ maxSeqs: B, maxSeqLen: P + 3 * (STEPS + 8) + 8 });
  const seqs = Array.from({ length: B }, () => cache.sequence(P + 3 * (STEPS + 8) + 8));
  const first = model.forwardBatch(
    seqs.map((seq, i) => ({
      seq,
      ids: Array.from({ length: P }, (_, j) => 3 + ((i * 31 + j * 7) % 900)),
    })),
  );
  first.dispose();
  let ids = seqs.map(() => 5);
  const sampler = new Sampler();
  const run = async (mode) => {
    const states = seqs.map(() =>
      mode === "greedy"
        ? new SamplingState({ temperature: 0 }, { vocabSize: V })
        : new SamplingState({ temperature: 1, topK: 64, topP: 0.95, seed: 1 }, { vocabSize: V }),
    );
    const times = [];
    for (let s = 0; s < STEPS + 4; s++) {
      const t = performance.now();
      const logits = model.forwardBatch(
        seqs.map((seq, i) => ({ seq, ids: [ids[i]] })),
        { graph: true },
      );
      if (mode === "model") {
        const am = ops.argmax(logits);
        ids = Array.from(await am.toArray());
        am.dispose();
      } else {
        const r = await sampler.sample(
          logits,
          seqs.map((_, row) => ({ row, state: states[row] })),
        );
        ids = r.map((x) => x.token);
      }
      logits.dispose();
      if (s >= 4) times.push(performance.now() - t);
    }
    return median(times);
  };
  const model_ms = await run("model");
  const greedy_ms = await run("greedy");
  const sample_ms = await run("sample");
  out.batches[B] = {
    model_ms,
    greedy_ms,
    sample_ms,
    model_tok_s: (1000 * B) / model_ms,
    greedy_tok_s: (1000 * B) / greedy_ms,
  };
  sampler.dispose();
  for (const s of seqs) s.dispose();
  cache.dispose();
}
console.log(JSON.stringify(out));
model.dispose();
