// Turns one gpu-serve-bench.sh run (hf.json, profile.json, http.json, direct.json, gpu.txt in DIR)
// into the markdown table of docs/benchmarks.md and the plot's spec (DIR/plot.json; render it with
// tools/plot/svg-chart.mjs).
//   node apps/server/bench/report.mjs DIR
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const dir = process.argv[2];
const last = (f) =>
  JSON.parse(
    readFileSync(join(dir, f), "utf8")
      .trim()
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .pop(),
  );
const hf = last("hf.json");
const prof = last("profile.json");
const http = last("http.json");
const direct = last("direct.json");
const gpu = readFileSync(join(dir, "gpu.txt"), "utf8").trim();
const f = (v) =>
  v === undefined ? "—" : v >= 100 ? Math.round(v).toLocaleString("en-US") : v.toFixed(1);
const rows = [
  [
    "decode, batch 1 (tok/s)",
    hf.batches[1]?.tok_s,
    http.b1.tok_s,
    direct.b1.tok_s,
    prof.batches[1]?.greedy_tok_s,
  ],
  ...[8, 32, 64].map((n) => [
    `${n} concurrent streams, aggregate (tok/s)`,
    hf.batches[n]?.tok_s,
    http.streams[n]?.aggregate_tok_s,
    direct.streams[n]?.aggregate_tok_s,
    prof.batches[n]?.greedy_tok_s,
  ]),
];
const lines = [
  `Card: ${gpu}. HF transformers ${hf.transformers} (torch ${hf.torch}), bf16, greedy, static batch of`,
  `the same size, ${hf.tokens} new tokens after a ${hf.prompt}-token prompt. Ours: ${http.tokens} tokens per stream,`,
  `greedy, ignore_eos; median of 3 runs after a warm-up run.`,
  "",
  "| | HF generate | ours, HTTP server | ours, scheduler (no HTTP) | ours, decode step alone |",
  "|---|---:|---:|---:|---:|",
  ...rows.map((r) => `| ${r[0]} | ${r.slice(1).map(f).join(" | ")} |`),
  `| TTFT, 2048-token prompt (ms) | ${f(hf.ttft?.ms)} | ${f(http.ttft?.ms)} | — | — |`,
];
console.log(lines.join("\n"));
const pts = (get) => [1, 8, 32, 64].map((n) => [n, get(n)]).filter((p) => p[1] !== undefined);
writeFileSync(
  join(dir, "plot.json"),
  JSON.stringify({
    title: "Gemma 3 4B (random bf16 weights), H100: decode throughput",
    xLabel: "concurrent streams (batch)",
    yLabel: "tokens / s (aggregate)",
    xLog2: true,
    series: [
      { name: "decode step alone", points: pts((n) => prof.batches[n]?.greedy_tok_s) },
      {
        name: "scheduler",
        points: pts((n) => (n === 1 ? direct.b1.tok_s : direct.streams[n]?.aggregate_tok_s)),
      },
      {
        name: "HTTP server",
        points: pts((n) => (n === 1 ? http.b1.tok_s : http.streams[n]?.aggregate_tok_s)),
      },
      { name: "HF generate", points: pts((n) => hf.batches[n]?.tok_s) },
    ],
  }),
);
