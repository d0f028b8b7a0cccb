// OpenAI's n through the Scheduler: time to completion of one request with n choices, as n separate
// submits (each choice prefills the prompt) vs Scheduler.submitGroup (one prefill, the KV forked),
// seeded (choice i: seed + i, the server's rule), on the same scheduler settings. Checks that every
// grouped choice gives the tokens of its request run alone (n = 1, seed + i), and counts the
// separate-submit choices that do not: those decode in steps mixed with the other choices' prefill
// chunks, another attention path, and a flat random model's sampling can flip on that ~1e-6.
// Runs alternate; prints the median ms of each as one JSON line.
//   node packages/generation/bench/n-choices.mjs MODEL_DIR [--device cpu] [--n 8] [--prompt 1500]
//        [--tokens 16] [--runs 3]
import { parseArgs } from "node:util";
import { loadTextModel } from "@gemma3/model";
import { Scheduler } from "@gemma3/generation";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    device: { type: "string", default: "cpu" },
    dtype: { type: "string", default: "f32" },
    n: { type: "string", default: "8" },
    prompt: { type: "string", default: "1500" },
    tokens: { type: "string", default: "16" },
    runs: { type: "string", default: "3" },
  },
});
const [N, L, T, R] = [values.n, values.prompt, values.tokens, values.runs].map(Number);
const model = await loadTextModel(positionals[0], { device: values.device, dtype: values.dtype });
const sched = new Scheduler(model, { maxSeqs: N, maxSeqLen: L + T + 16 });
// A fixed pseudo-random prompt (ids away from the special tokens), <bos> first.
const prompt = [2, ...Array.from({ length: L - 1 }, (_, i) => 300 + ((i * 7919) % 20000))];
const req = { prompt, maxTokens: T, ignoreEos: true, temperature: 1 };
const choices = Array.from({ length: N }, (_, i) => ({ seed: 1234 + i }));

async function time(grouped) {
  const t0 = performance.now();
  const streams = grouped
    ? sched.submitGroup(req, choices)
    : choices.map((c) => sched.submit({ ...req, ...c }));
  const out = await Promise.all(streams.map(async (s) => (await s.result).tokenIds));
  return { ms: performance.now() - t0, out };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const alone = [];
for (const c of choices) alone.push((await sched.submit({ ...req, ...c }).result).tokenIds);
const sep = [];
const grp = [];
let separateDiffer = 0;
for (let r = 0; r < R; r++) {
  const a = await time(false);
  const b = await time(true);
  b.out.forEach((t, i) => {
    if (!same(t, alone[i])) throw new Error(`grouped choice ${i}: not the tokens it gives alone`);
  });
  separateDiffer = a.out.filter((t, i) => !same(t, alone[i])).length;
  sep.push(a.ms);
  grp.push(b.ms);
}
await sched.close();
model.dispose();
const res = {
  device: values.device,
  n: N,
  promptTokens: L,
  outputTokens: T,
  separateMs: Math.round(median(sep)),
  groupMs: Math.round(median(grp)),
  speedup: +(median(sep) / median(grp)).toFixed(2),
  separateDiffer,
};
console.log(JSON.stringify(res));
