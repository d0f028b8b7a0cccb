// Accuracy of the fp8 e4m3 KV cache (issue 5 item 6): the tiny fixtures (packages/model/test/
// fixtures) run with K/V stored in the compute dtype (bf16 by default) and with K/V stored as
// fp8 e4m3 (per-tensor kScale, vScale), on the same device, through a chunked prefill and 24
// greedy steps. The fp8 run is teacher-forced with the reference run's greedy ids, so every
// position compares the same context. Per position: KL(ref ‖ fp8) of the softmaxed logits (nats,
// float64), top-1 agreement and max |Δlogit|. The first prefill chunk never reads the cache (it
// attends to its own K/V unquantized), so it is reported apart and left out of the summary.
//   node packages/kv-cache/bench/fp8-accuracy.mjs [--device cpu|cuda] [--dtype bf16|f32]
//        [--chunk 8] [--steps 24] [--k-scale 1] [--v-scale 1] [--per-position] [fixture...]
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { loadTextModel } from "@gemma3/model";

const here = dirname(fileURLToPath(import.meta.url));
export const FIXTURES = join(here, "..", "..", "model", "test", "fixtures");

function argmax(row) {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/** Reference top-1 minus top-2 logit: a near tie flips under any perturbation. */
function top2Margin(row) {
  let a = -Infinity;
  let b = -Infinity;
  for (const v of row) {
    if (v > a) [a, b] = [v, a];
    else if (v > b) b = v;
  }
  return a - b;
}

/** KL(p ‖ q) of softmax(a), softmax(b) in float64 (nats). */
function kl(a, b) {
  const lse = (x) => {
    let m = -Infinity;
    for (const v of x) m = Math.max(m, v);
    let s = 0;
    for (const v of x) s += Math.exp(v - m);
    return m + Math.log(s);
  };
  const la = lse(a);
  const lb = lse(b);
  let d = 0;
  for (let i = 0; i < a.length; i++) {
    const lp = a[i] - la;
    d += Math.exp(lp) * (lp - (b[i] - lb));
  }
  return Math.max(d, 0);
}

/** max |x| over the K (and V) storage of every layer: what an fp8 scale must cover (448). */
async function storageAmax(cache) {
  const amax = { k: 0, v: 0 };
  for (let i = 0; i < cache.numLayers; i++) {
    const l = cache.layer(i);
    for (const key of ["k", "v"]) {
      const x = await l[key].toArray();
      for (const e of x) amax[key] = Math.max(amax[key], Math.abs(e));
    }
  }
  return amax;
}

/** Prompt ids of a fixture and its model directory. */
async function fixtureMeta(fixture) {
  const { readFileSync } = await import("node:fs");
  const dir = join(FIXTURES, fixture);
  return { dir, prompt: JSON.parse(readFileSync(join(dir, "goldens.json"), "utf8")).prompt_ids };
}

/**
 * Prefill `prompt` in chunks, then `steps` decode steps (greedy, or the `forced` ids).
 * @returns logits rows [position][vocab], the decode ids, and the storage's max |K|, |V|
 */
async function run(model, prompt, { chunk, steps, kv = {}, forced = null }) {
  const vocab = model.config.vocabSize;
  const cache = model.newKVCache({ maxSeqs: 1, maxSeqLen: prompt.length + steps + 1, ...kv });
  const seq = cache.sequence();
  const rows = [];
  try {
    for (let i = 0; i < prompt.length; i += chunk) {
      const ids = prompt.slice(i, i + chunk);
      const l = model.forward(ids, seq, { allLogits: true });
      const x = await l.toArray();
      l.dispose();
      for (let r = 0; r < ids.length; r++) rows.push(x.slice(r * vocab, (r + 1) * vocab));
    }
    const ids = [];
    let next = argmax(rows[rows.length - 1]);
    for (let s = 0; s < steps; s++) {
      const id = forced ? forced[s] : next;
      ids.push(id);
      const l = model.forward([id], seq);
      const x = await l.toArray();
      l.dispose();
      rows.push(x);
      next = argmax(x);
    }
    return { rows, ids, amax: await storageAmax(cache) };
  } finally {
    seq.dispose();
    cache.dispose();
  }
}

/** Per-position comparison of two runs over the same ids, and summaries by phase. */
function compare(ref, test, promptLength, chunk) {
  const rows = ref.rows.map((a, p) => {
    const b = test.rows[p];
    let maxDiff = 0;
    for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
    const phase =
      p < Math.min(chunk, promptLength) ? "first-chunk" : p < promptLength ? "prefill" : "decode";
    return {
      position: p,
      phase,
      kl: kl(a, b),
      agree: argmax(a) === argmax(b),
      margin: top2Margin(a),
      maxDiff,
    };
  });
  const summarize = (sel) => {
    const r = rows.filter(sel);
    const sure = r.filter((x) => x.margin > MARGIN);
    return {
      positions: r.length,
      meanKL: r.reduce((s, x) => s + x.kl, 0) / Math.max(r.length, 1),
      maxKL: Math.max(0, ...r.map((x) => x.kl)),
      top1: r.filter((x) => x.agree).length / Math.max(r.length, 1),
      // Agreement where the reference's top-2 margin exceeds MARGIN (near ties flip under any
      // perturbation; the parity tests count positions the same way).
      sure: sure.length,
      sureAgree: sure.filter((x) => x.agree).length,
      maxDiff: Math.max(0, ...r.map((x) => x.maxDiff)),
    };
  };
  return {
    rows,
    summary: summarize((x) => x.phase !== "first-chunk"),
    prefill: summarize((x) => x.phase === "prefill"),
    decode: summarize((x) => x.phase === "decode"),
    firstChunk: summarize((x) => x.phase === "first-chunk"),
  };
}

/** Reference top-2 margin above which a top-1 flip counts as a real disagreement. */
export const MARGIN = 0.05;

/**
 * One fixture with K/V stored in the compute dtype (reference) and in fp8 e4m3 (teacher-forced
 * with the reference's greedy ids), on one device.
 */
export async function measure({
  fixture,
  device = "cpu",
  dtype = "bf16",
  chunk = 8,
  steps = 24,
  kScale = 1,
  vScale = 1,
}) {
  const { dir, prompt } = await fixtureMeta(fixture);
  const model = await loadTextModel(dir, { device, dtype });
  try {
    const o = { chunk, steps };
    const ref = await run(model, prompt, o);
    const kv = { kvDtype: "fp8_e4m3", kScale, vScale };
    const f8 = await run(model, prompt, { ...o, kv, forced: ref.ids });
    const c = compare(ref, f8, prompt.length, chunk);
    return { fixture, device, dtype, chunk, steps, kScale, vScale, refAmax: ref.amax, ...c };
  } finally {
    model.dispose();
  }
}

/**
 * The noise floor of the same measure: bf16 compute (and KV) against f32 compute (and KV),
 * teacher-forced with the f32 run's ids. What any bf16-sized perturbation does on these fixtures.
 */
export async function baseline({ fixture, device = "cpu", chunk = 8, steps = 24 }) {
  const { dir, prompt } = await fixtureMeta(fixture);
  const runs = [];
  for (const dtype of ["f32", "bf16"]) {
    const model = await loadTextModel(dir, { device, dtype });
    try {
      runs.push(await run(model, prompt, { chunk, steps, forced: runs[0]?.ids ?? null }));
    } finally {
      model.dispose();
    }
  }
  return { fixture, refAmax: runs[0].amax, ...compare(runs[0], runs[1], prompt.length, chunk) };
}

async function main() {
  const args = process.argv.slice(2);
  const opt = (name, def) => {
    const i = args.indexOf(name);
    return i >= 0 ? args.splice(i, 2)[1] : def;
  };
  const flag = (name) => {
    const i = args.indexOf(name);
    return i >= 0 ? (args.splice(i, 1), true) : false;
  };
  const device = opt("--device", "cpu");
  const dtype = opt("--dtype", "bf16");
  const chunk = Number(opt("--chunk", "8"));
  const steps = Number(opt("--steps", "24"));
  const kScale = Number(opt("--k-scale", "1"));
  const vScale = Number(opt("--v-scale", "1"));
  const perPosition = flag("--per-position");
  const withBaseline = flag("--baseline");
  const fixtures = args.length > 0 ? args : ["tiny-1b", "tiny-27b"];
  const e = (x) => x.toExponential(2);
  const pct = (a, b) => `${((100 * a) / Math.max(b, 1)).toFixed(1)}% (${a}/${b})`;
  console.log(
    `fp8 e4m3 KV vs ${dtype} KV on ${device} (compute ${dtype}); prefill in chunks of ${chunk} (the first chunk reads no cache: left out), ${steps} greedy steps teacher-forced; kScale ${kScale}, vScale ${vScale}`,
  );
  console.log(
    `| fixture | compared | ref max abs K | ref max abs V | phase | positions | mean KL | max KL | top-1 agree | top-1 agree, margin > ${MARGIN} | max abs Δlogit |`,
  );
  console.log("|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|");
  const print = (fixture, what, r) => {
    for (const [phase, s] of [
      ["prefill", r.prefill],
      ["decode", r.decode],
      ["both", r.summary],
    ])
      console.log(
        `| ${fixture} | ${what} | ${r.refAmax.k.toFixed(2)} | ${r.refAmax.v.toFixed(2)} | ${phase} | ${s.positions} | ${e(s.meanKL)} | ${e(s.maxKL)} | ${pct(Math.round(s.top1 * s.positions), s.positions)} | ${pct(s.sureAgree, s.sure)} | ${s.maxDiff.toFixed(4)} |`,
      );
    if (perPosition)
      for (const x of r.rows)
        console.log(
          `  ${fixture} ${what} pos ${x.position} ${x.phase}: KL ${e(x.kl)} top-1 ${x.agree ? "=" : "≠"} margin ${x.margin.toFixed(3)} max|Δ| ${x.maxDiff.toFixed(4)}`,
        );
  };
  for (const fixture of fixtures) {
    print(
      fixture,
      `fp8 vs ${dtype} KV`,
      await measure({ fixture, device, dtype, chunk, steps, kScale, vScale }),
    );
    if (withBaseline)
      print(fixture, "bf16 vs f32 compute", await baseline({ fixture, device, chunk, steps }));
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
