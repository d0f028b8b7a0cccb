// Reads a tools/trace/cupti_trace.cc CSV (or .csv.gz) and prints the timeline of the last graph replay with at
// least --min kernels (a decode step): its span, and per kernel name the count, the summed
// duration and the summed critical-path share (how far each kernel's end moves the latest end so
// far: overlapped work counts once). --layer N also lists kernels [N, N + 14) in order.
//   node tools/trace/step-timeline.mjs trace.csv [--min 100] [--layer 40]
import { readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import { parseArgs } from "node:util";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { min: { type: "string", default: "100" }, layer: { type: "string" } },
});
const raw = readFileSync(positionals[0]);
const text = (positionals[0].endsWith(".gz") ? gunzipSync(raw) : raw).toString("utf8");
const lines = text.trim().split("\n").slice(1);
const groups = new Map();
for (const l of lines) {
  const [corr, node, start, end, grid, block, regs, ...rest] = l.split(",");
  const k = { node, start: Number(start), end: Number(end), grid, block, regs };
  k.name = rest.join(",");
  if (!groups.has(corr)) groups.set(corr, []);
  groups.get(corr).push(k);
}
const steps = [...groups.values()].filter((g) => g.length >= Number(values.min));
if (steps.length === 0) throw new Error("no launch with that many kernels");
const ks = steps.at(-1).sort((a, b) => a.start - b.start);
// "void gemma3::kernels::foo<...>(...)" -> "foo"
const short = (n) =>
  n
    .replace(/^void /, "")
    .replace(/\(anonymous namespace\)::/g, "")
    .replace(/\(.*$/, "")
    .replace(/<.*$/, "")
    .replace(/^.*::/, "");
const t0 = ks[0].start;
let latest = t0;
const by = new Map();
ks.forEach((k) => {
  k.crit = Math.max(0, k.end - latest);
  k.gap = k.start - latest;
  latest = Math.max(latest, k.end);
  const s = `${short(k.name)} (grid ${k.grid})`;
  const e = by.get(s) ?? { n: 0, dur: 0, crit: 0 };
  (e.n++, (e.dur += k.end - k.start), (e.crit += k.crit));
  by.set(s, e);
});
const span = latest - t0;
console.log(
  `${steps.length} launches of >= ${values.min} kernels; the last: ${ks.length} kernels, ${(span / 1000).toFixed(1)} µs`,
);
console.log(
  "| kernel | count | µs each (duration) | µs each (critical) | critical total µs | share |",
);
console.log("|---|---:|---:|---:|---:|---:|");
for (const [s, e] of [...by.entries()].sort((a, b) => b[1].crit - a[1].crit))
  console.log(
    `| ${s} | ${e.n} | ${(e.dur / e.n / 1000).toFixed(2)} | ${(e.crit / e.n / 1000).toFixed(2)} | ${(e.crit / 1000).toFixed(1)} | ${((100 * e.crit) / span).toFixed(1)}% |`,
  );
if (values.layer !== undefined) {
  const a = Number(values.layer);
  console.log(
    "\n| # | kernel | grid × block | start µs | duration | critical |\n|---|---|---|---:|---:|---:|",
  );
  ks.slice(a, a + 14).forEach((k, i) =>
    console.log(
      `| ${a + i} | ${short(k.name)} | ${k.grid} × ${k.block} | ${((k.start - t0) / 1000).toFixed(2)} | ${((k.end - k.start) / 1000).toFixed(2)} | ${(k.crit / 1000).toFixed(2)} |`,
    ),
  );
}
