// Reads a tools/trace/cupti_trace.cc CSV (or .csv.gz) and prints the timeline of the last launch
// with at least --min kernels (a replayed decode step): its span, and per kernel name and grid the
// count, the duration and the critical-path share (timeline.mjs: how far each kernel's end moves
// the latest end so far; overlapped work counts once). --layer N also lists kernels [N, N + 14).
//   node tools/trace/step-timeline.mjs trace.csv [--min 100] [--layer 40]
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { gunzipSync } from "node:zlib";
import { criticalPath, parseTrace, shortName } from "./timeline.mjs";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { min: { type: "string", default: "100" }, layer: { type: "string" } },
});
const raw = readFileSync(positionals[0]);
const text = (positionals[0].endsWith(".gz") ? gunzipSync(raw) : raw).toString("utf8");
const steps = [...parseTrace(text).values()].filter((g) => g.length >= Number(values.min));
if (steps.length === 0) throw new Error("no launch with that many kernels");
const { kernels: ks, span, byKey } = criticalPath(steps.at(-1));
const us = (ns) => (ns / 1000).toFixed(2);
console.log(
  `${steps.length} launches of >= ${values.min} kernels; the last: ${ks.length} kernels, ${(span / 1000).toFixed(1)} µs`,
);
console.log(
  "| kernel | count | µs each (duration) | µs each (critical) | critical total µs | share |",
);
console.log("|---|---:|---:|---:|---:|---:|");
for (const [key, e] of [...byKey.entries()].sort((a, b) => b[1].crit - a[1].crit))
  console.log(
    `| ${key} | ${e.n} | ${us(e.dur / e.n)} | ${us(e.crit / e.n)} | ${(e.crit / 1000).toFixed(1)} | ${((100 * e.crit) / span).toFixed(1)}% |`,
  );
if (values.layer !== undefined) {
  const a = Number(values.layer);
  console.log(
    "\n| # | kernel | grid × block | start µs | duration | critical |\n|---|---|---|---:|---:|---:|",
  );
  const t0 = ks[0].start;
  ks.slice(a, a + 14).forEach((k, i) =>
    console.log(
      `| ${a + i} | ${shortName(k.name)} | ${k.grid} × ${k.block} | ${us(k.start - t0)} | ${us(k.end - k.start)} | ${us(k.crit)} |`,
    ),
  );
}
