// Host cost of one full-row sampling decision (the Sampler's fallback when the draw lands outside
// its device candidates): referenceToken (fullRowToken, falling back to the full reference when it
// cannot prove a decision) vs referenceTokenFull (the spec: sort the whole row) on a flat row
// (Gaussian logits, σ = 1: the random-weight demo checkpoint's shape). Both run on the same row and
// u, interleaved, and must agree. Median ms per row after warm-up. Prints one JSON line.
//   node packages/generation/bench/fallback-row.mjs [--vocab 262144] [--rows 40]
import { parseArgs } from "node:util";
import { execSync } from "node:child_process";
import { cpus } from "node:os";
import { SamplingState, referenceToken, referenceTokenFull } from "../dist/index.js";
import { fullRowStats } from "../dist/fullrow.js";

const { values } = parseArgs({
  options: {
    vocab: { type: "string", default: "262144" },
    rows: { type: "string", default: "40" },
  },
});
const V = Number(values.vocab);
const ROWS = Number(values.rows);
const WARM = 5;
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
  ["T=1", { temperature: 1 }],
  ["T=1 top-p 0.9", { temperature: 1, topP: 0.9 }],
  ["T=0.7 top-p 0.9", { temperature: 0.7, topP: 0.9 }],
  ["T=0.7 min-p 0.05", { temperature: 0.7, minP: 0.05 }],
];
let commit = "";
try {
  commit = execSync("git rev-parse --short HEAD", { encoding: "utf8" }).trim();
} catch {}
const out = { vocab: V, rows: ROWS, node: process.version, cpu: cpus()[0]?.model, commit, ms: {} };
for (const [name, params] of cases) {
  const state = new SamplingState(params, { vocabSize: V });
  const fast = [];
  const full = [];
  const gaveUp0 = fullRowStats.gaveUp;
  for (let k = 0; k < ROWS + WARM; k++) {
    const row = rows[k % rows.length];
    const u = uni();
    const t0 = performance.now();
    const a = referenceToken(row, state, u);
    const t1 = performance.now();
    const b = referenceTokenFull(row, state, u);
    const t2 = performance.now();
    if (a !== b) throw new Error(`${name}: row ${k} u ${u}: ${a} != ${b}`);
    if (k >= WARM) (fast.push(t1 - t0), full.push(t2 - t1));
  }
  out.ms[name] = {
    full: Number(median(full).toFixed(2)),
    fast: Number(median(fast).toFixed(2)),
    gaveUp: fullRowStats.gaveUp - gaveUp0,
  };
}
console.log(JSON.stringify(out));
