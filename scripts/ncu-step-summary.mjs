// Sums Nsight Compute's per-kernel times (scripts/gpu-step-profile.sh: --csv, one metric,
// gpu__time_duration.sum) over one decode step. A step starts at an embedding_kernel launch; the
// steps of the most common kernel count are the decode steps (prefill and warm-up differ), and the
// median-time one is printed by kernel name: calls, total µs, mean µs, share.
//   node scripts/ncu-step-summary.mjs ncu.csv
import { readFileSync } from "node:fs";

function parseCsvLine(line) {
  const out = [];
  let cur = "",
    q = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (q) {
      if (c === '"' && line[i + 1] === '"') ((cur += '"'), i++);
      else if (c === '"') q = false;
      else cur += c;
    } else if (c === '"') q = true;
    else if (c === ",") (out.push(cur), (cur = ""));
    else cur += c;
  }
  out.push(cur);
  return out;
}

const lines = readFileSync(process.argv[2], "utf8")
  .split(/\r?\n/)
  .filter((l) => l.startsWith('"'));
const header = parseCsvLine(lines[0]);
const col = (n) => header.indexOf(n);
const [iName, iUnit, iVal, iGrid, iBlock] = [
  "Kernel Name",
  "Metric Unit",
  "Metric Value",
  "Grid Size",
  "Block Size",
].map(col);
const scale = { ns: 1e-3, nsecond: 1e-3, us: 1, usecond: 1, ms: 1e3, msecond: 1e3 };
const kernels = lines
  .slice(1)
  .map(parseCsvLine)
  .filter((r) => r.length === header.length)
  .map((r) => ({
    name: r[iName]
      .replace(/\(.*$/, "")
      .replace(/^void /, "")
      .replace(/[\w:]*(<unnamed>|\(anonymous namespace\))::/g, "")
      .replace(/gemma3::/g, ""),
    full: r[iName],
    us: Number(r[iVal].replace(/,/g, "")) * (scale[r[iUnit]] ?? NaN),
    grid: r[iGrid],
    block: r[iBlock],
  }));
const steps = [];
for (const k of kernels) {
  if (k.name.startsWith("embedding_kernel") || !steps.length) steps.push([]);
  steps.at(-1).push(k);
}
const counts = new Map();
for (const s of steps) counts.set(s.length, (counts.get(s.length) ?? 0) + 1);
const common = [...counts].sort((a, b) => b[1] - a[1])[0][0];
const decode = steps.filter((s) => s.length === common);
const total = (s) => s.reduce((a, k) => a + k.us, 0);
decode.sort((a, b) => total(a) - total(b));
const step = decode[decode.length >> 1];
console.log(
  `${kernels.length} kernels; ${decode.length} steps of ${common} kernels; median step: ${total(step).toFixed(1)} µs of kernel time`,
);
const by = new Map();
for (const k of step) {
  const key = `${k.name} grid ${k.grid} block ${k.block}`;
  const e = by.get(key) ?? { calls: 0, us: 0 };
  (e.calls++, (e.us += k.us), by.set(key, e));
}
const T = total(step);
for (const [key, e] of [...by].sort((a, b) => b[1].us - a[1].us))
  console.log(
    `${e.us.toFixed(1).padStart(9)} µs ${((100 * e.us) / T).toFixed(1).padStart(5)}%  ${String(e.calls).padStart(4)} × ${(e.us / e.calls).toFixed(2).padStart(7)} µs  ${key}`,
  );
