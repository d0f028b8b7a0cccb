// Issue 9's plot: prefill attention TFLOP/s against the sequence length (h8 kv4 d256 causal, the
// 4B's global layers), ours vs torch SDPA's cuDNN and flash backends, from the JSON files one
// `scripts/gpu-check.sh` call writes (bench_kernels --json, torch_peers.py --json).
//   node tools/plot/attention-plot.mjs BENCH.json TORCH.json OUT.svg [--shape "h8 kv4 d256"]
//     [--label "ours"] [--extra "LABEL=OTHER_BENCH.json" ...]  (e.g. the same rows with a switch off)
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const args = process.argv.slice(2);
const at = args.indexOf("--shape");
const heads = at >= 0 ? args.splice(at, 2)[1] : "h8 kv4 d256";
const lat = args.indexOf("--label");
const label = lat >= 0 ? args.splice(lat, 2)[1] : "ours";
const extras = [];
for (let i = args.indexOf("--extra"); i >= 0; i = args.indexOf("--extra")) {
  const [name, file] = args.splice(i, 2)[1].split("=");
  extras.push({ name, rows: JSON.parse(readFileSync(file, "utf8")).rows });
}
const [benchFile, torchFile, outFile] = args;
if (!outFile) {
  console.error("usage: attention-plot.mjs BENCH.json TORCH.json OUT.svg [--shape 'h8 kv4 d256']");
  process.exit(2);
}

/** "b1 h8 kv4 d256 s8192 causal" → 8192 when it is a causal prefill of `heads`. */
function seqOf(shape) {
  const m = new RegExp(`^b1 ${heads} s(\\d+) causal$`).exec(shape);
  return m ? Number(m[1]) : null;
}
/** TFLOP/s of every prefill row of `impl` (rows carry flops and median µs). */
function series(rows, impl) {
  const pts = [];
  for (const r of rows) {
    if (r.name !== "attention_prefill" || (impl && r.impl !== impl) || r.error) continue;
    const s = seqOf(r.shape);
    if (s === null || !(r.median_us > 0)) continue;
    pts.push([s, r.flops / (r.median_us * 1e-6) / 1e12]);
  }
  return pts.sort((a, b) => a[0] - b[0]);
}

const bench = JSON.parse(readFileSync(benchFile, "utf8"));
const torch = JSON.parse(readFileSync(torchFile, "utf8"));
const flops = new Map(
  bench.rows.filter((r) => r.name === "attention_prefill").map((r) => [r.shape, r.flops]),
);
// torch rows have the same shapes; their flops are ours for the same shape when not given.
const torchRows = torch.rows.map((r) => ({ ...r, flops: r.flops || flops.get(r.shape) }));
const spec = {
  title: `Prefill attention, ${heads}, causal, bf16 (${bench.device?.name ?? "GPU"})`,
  xLabel: "sequence length",
  yLabel: "TFLOP/s",
  xLog2: true,
  series: [
    { name: label, points: series(bench.rows, null) },
    ...extras.map((e) => ({ name: e.name, points: series(e.rows, null) })),
    { name: "torch cuDNN", points: series(torchRows, "torch_sdpa_cudnn") },
    { name: "torch flash", points: series(torchRows, "torch_sdpa_flash") },
  ].filter((s) => s.points.length > 0),
};
const specFile = join(tmpdir(), `attention-plot-${process.pid}.json`);
writeFileSync(specFile, JSON.stringify(spec));
const chart = join(dirname(fileURLToPath(import.meta.url)), "svg-chart.mjs");
execFileSync(process.execPath, [chart, specFile, outFile], { stdio: "inherit" });
for (const s of spec.series)
  console.log(`${s.name}: ${s.points.map(([x, y]) => `${x}: ${y.toFixed(1)}`).join(", ")}`);
