// Host cost of one full-row sampling decision (the Sampler's fallback when the draw lands outside
// its device candidates): referenceToken (fast path) vs referenceTokenFull (the sort-everything
// spec) on a flat row (Gaussian logits, σ = 1: the random-weight demo checkpoint's shape).
// Median ms per row over --rows rows after warm-up. Prints one JSON line.
//   node packages/generation/bench/fallback-row.mjs [--vocab 262144] [--rows 40]
import { parseArgs } from "node:util";
import * as gen from "../dist/index.js";
import { fullRowStats } from "../dist/fullrow.js";

const { values } = parseArgs({
  options: {
    vocab: { type: "string", default: "262144" },
    rows: { type: "string", default: "40" },
  },
});
const V = Number(values.vocab);
const ROWS = Number(values.rows);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// Deterministic Gaussian rows (Box–Muller over a 32-bit LCG).
let seed = 12345;
const uni = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) + 0.5) / 2 ** 32;
const rows = Array.from({ length: 4 }, () => {
  const r = new Float32Array(V);
  for (let i = 0; i < V; i++)
    r[i] = Math.sqrt(-2 * Math.log(uni())) * Math.cos(2 * Math.PI * uni());
  return r;
});

const cases = [
  { name: "T=1", params: { temperature: 1 } },
  { name: "T=1 top-p 0.9", params: { temperature: 1, topP: 0.9 } },
  { name: "T=0.7 top-p 0.9", params: { temperature: 0.7, topP: 0.9 } },
  { name: "T=0.7 min-p 0.05", params: { temperature: 0.7, minP: 0.05 } },
];
const fns = { fast: gen.referenceToken };
if (gen.referenceTokenFull) fns.full = gen.referenceTokenFull;
const out = { vocab: V, rows: ROWS, node: process.version, msPerRow: {} };
for (const c of cases) {
  const state = new gen.SamplingState(c.params, { vocabSize: V });
  for (const [fname, fn] of Object.entries(fns)) {
    const times = [];
    let check = 0;
    for (let k = 0; k < ROWS + 5; k++) {
      const u = uni();
      const t = performance.now();
      check += fn(rows[k % rows.length], state, u);
      if (k >= 5) times.push(performance.now() - t);
    }
    out.msPerRow[`${c.name} ${fname}`] = Number(median(times).toFixed(3));
    out.msPerRow[`${c.name} ${fname} check`] = check;
  }
}
console.log(JSON.stringify(out));
