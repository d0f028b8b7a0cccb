// Issue 9's table from the files one device call writes (scripts/gpu-issue9.sh): `gemma3 bench`
// JSON (ours-NAME.json), HF transformers JSON (hf-NAME.json), bench_kernels JSON (bench.json;
// decode32k-graph.json and gemv-graph.json: the 32K decode attention rows and issue 8's GEMV rows
// graph-timed, as decode replays them) and torch_peers.py JSON (torch.json). Prints markdown: each
// target, ours, the peer, and met / not met with the share of the target. A file that is missing
// leaves its row's cells as "not run".
//   node tools/bench/issue9-table.mjs DIR [--cpu CPU.json]
// --cpu: the CPU row's JSON (the line packages/model/bench/cpu-decode.mjs prints), measured
// elsewhere (the GPU machine is not the 2-core machine the row names).
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";

const { values, positionals } = parseArgs({
  options: { cpu: { type: "string" } },
  allowPositionals: true,
});
const dir = positionals[0];
if (!dir) {
  console.error("usage: issue9-table.mjs DIR [--cpu CPU.json]");
  process.exit(2);
}
/** The JSON at `path`, or null (missing, or a run cut short that wrote a partial line). */
const read = (path) => {
  if (!existsSync(path)) return null;
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch {
    return null;
  }
};
const files = new Map();
const at = (name) => {
  if (!files.has(name)) files.set(name, read(join(dir, name)));
  return files.get(name);
};

const ours = (n) => at(`ours-${n}.json`);
const hf = (n) => at(`hf-${n}.json`);
const bench = at("bench.json");
const graph32k = at("decode32k-graph.json");
// Issue 8's GEMV rows graph-timed (gpu-check.sh), else bench.json's.
const gemvGraph = at("gemv-graph.json");
const gemvRows = gemvGraph ?? bench;
const torch = at("torch.json");
const cpu = values.cpu ? read(resolve(values.cpu)) : null;

const fmt = (v, d = 1) =>
  v == null || !Number.isFinite(v)
    ? "not run"
    : v.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
const pct = (v) => `${Math.round(v * 100)}%`;
const status = (value, target) =>
  value == null || target == null
    ? "not run"
    : value >= target
      ? `**met** (${pct(value / target)})`
      : `not met (${pct(value / target)})`;

// The card's copy bandwidth (bench_kernels' memcpy_d2d row), the roofline every % here uses.
const peakGbs = (bench ?? gemvGraph)?.peak_gbs ?? 2990;
/** "GB/s (% of the copy roofline)" of `bytes` moved in `us`. */
const bandwidth = (bytes, us) => {
  const gbs = bytes / (us * 1e3);
  return `${fmt(gbs, 0)} GB/s (${pct(gbs / peakGbs)})`;
};

const decodeAt = (r, batch) => r?.decode?.find((d) => d.batch === batch) ?? null;
const hfAt = (r, batch) => r?.batches?.[String(batch)] ?? null;

const rows = [];
const row = (what, peer, mine, target, st) => rows.push([what, peer, mine, target, st]);

for (const [name, label, target] of [
  ["4b", "4B decode, batch 1", 350],
  ["1b", "1B decode, batch 1", 1200],
  ["27b", "27B decode, batch 1", 50],
]) {
  const d = decodeAt(ours(name), 1);
  const h = hfAt(hf(name), 1);
  row(
    label,
    h ? `${fmt(h.per_stream_tok_s)} tok/s` : "not run",
    d ? `**${fmt(d.per_request_tok_s)} tok/s** (${fmt(d.aggregate_tok_s)} aggregate)` : "not run",
    `≥ ${target} tok/s`,
    status(d?.per_request_tok_s, target),
  );
}
{
  const d = decodeAt(ours("4b"), 64);
  const h = hfAt(hf("4b"), 64);
  row(
    "4B decode, 64 streams aggregate",
    h ? `${fmt(h.tok_s, 0)} tok/s` : "not run",
    d ? `**${fmt(d.aggregate_tok_s, 0)} tok/s**` : "not run",
    "≥ 8000 tok/s",
    status(d?.aggregate_tok_s, 8000),
  );
  const p = ours("4b")?.prefill;
  const t = hf("4b")?.ttft;
  row(
    "4B prefill, 2048 tokens",
    t ? `${fmt(t.ms)} ms TTFT (${fmt((t.prompt / t.ms) * 1000, 0)} tok/s)` : "not run",
    p ? `**${fmt(p.ttft_ms)} ms TTFT (${fmt(p.tok_s, 0)} tok/s)**` : "not run",
    "≥ 60,000 tok/s",
    status(p?.tok_s, 60000),
  );
}
{
  const shape = "b1 h8 kv4 d256 s8192 causal";
  const mine = bench?.rows.find((r) => r.name === "attention_prefill" && r.shape === shape);
  const tflops = (r) => (r && r.median_us > 0 ? (mine?.flops ?? 0) / (r.median_us * 1e6) : null);
  const peer = (impl) =>
    torch?.rows.find((r) => r.name === "attention_prefill" && r.shape === shape && r.impl === impl);
  const cudnn = tflops(peer("torch_sdpa_cudnn"));
  const flash = tflops(peer("torch_sdpa_flash"));
  const t = tflops(mine);
  row(
    "prefill attention h8/d256/s8192 causal",
    `cuDNN ${fmt(cudnn)} TFLOP/s, flash ${fmt(flash)}`,
    `**${fmt(t)} TFLOP/s**`,
    "≥ cuDNN",
    t != null && cudnn != null
      ? `${t >= cudnn ? "**met**" : "not met"} (${fmt(t / cudnn, 2)}×)`
      : "not run",
  );
}
{
  // Graph-timed where that file came back (decode replays graphs), else the event-timed rows.
  const src = graph32k ?? bench;
  const rs = (src?.rows ?? []).filter(
    (r) => r.name === "attention_decode" && r.shape.includes("kv_len32768") && !r.error,
  );
  const gbs = (r) => r.bytes / (r.median_us * 1e3);
  const parts = rs.map((r) => `${r.shape.split(" kv_len")[0]}: ${bandwidth(r.bytes, r.median_us)}`);
  const worst = rs.length ? Math.min(...rs.map(gbs)) : null;
  row(
    "decode attention at 32K context",
    "—",
    rs.length ? `${parts.join("; ")}${graph32k ? " (graph-timed)" : " (event-timed)"}` : "not run",
    `≥ 80% of ${fmt(peakGbs, 0)} GB/s`,
    worst == null
      ? "not run"
      : `${worst >= 0.8 * peakGbs ? "**met**" : "not met"} (lowest row ${pct(worst / peakGbs)})`,
  );
}
{
  const r = ours("4b-q4_0");
  const d = decodeAt(r, 1);
  const roof = r?.weight_bytes_per_step ? (peakGbs * 1e9) / r.weight_bytes_per_step : null;
  row(
    "4B Q4_0 decode, batch 1",
    "—",
    d
      ? `**${fmt(d.per_request_tok_s)} tok/s** (roofline ${fmt(roof, 0)} at ${fmt(r.weight_bytes_per_step / 1e9, 2)} GB a step)`
      : "not run",
    "≥ 80% of its roofline",
    d && roof ? status(d.per_request_tok_s, 0.8 * roof) : "not run",
  );
}
row(
  "CPU (2 cores) 1B Q4_0 decode",
  "—",
  cpu
    ? `**${fmt(cpu.fraction_of_roofline * 100)}%** of the copy roofline (${fmt(cpu.tok_s)} tok/s; ${fmt(cpu.ms_per_token)} ms a token, copy ${fmt(cpu.copy_GBs)} GB/s)`
    : "not run",
  "≥ 50% of DRAM roofline",
  status(cpu?.fraction_of_roofline, 0.5),
);

const gpu = bench?.device?.name ?? ours("4b")?.device ?? "GPU";
console.log(
  `Issue 9's table (${gpu}; copy roofline ${fmt(peakGbs, 0)} GB/s${bench?.commit ? `; commit ${bench.commit}` : ""})\n`,
);
console.log("| what | HF transformers / torch (same call) | ours | target | status |");
console.log("|---|---:|---:|---|---|");
for (const r of rows) console.log(`| ${r.join(" | ")} |`);

// Issue 8's GEMV rows (effective bandwidth of the bytes each format moves) with torch's bf16 GEMV.
const shapes = [
  ["4B MLP up", "gemv", "M1 K2560 N10240"],
  ["4B gate/up + GELU", "gate_up_gelu", "M1 K2560 N20480"],
  ["4B down", "gemv", "M1 K10240 N2560"],
  ["27B MLP up", "gemv", "M1 K5376 N21504"],
  ["27B gate/up + GELU", "gate_up_gelu", "M1 K5376 N43008"],
  ["27B down", "gemv", "M1 K21504 N5376"],
  ["4B logits", "gemv", "M1 K2560 N262208"],
];
const formats = ["bf16", "fp8e4m3", "q8_0s", "q4_0s", "q8_0", "q4_0"];
const gemv = (name, shape, dtype) =>
  gemvRows?.rows.find((r) => r.name === name && r.shape === shape && r.dtype === dtype && !r.error);
const tgemv = (shape) =>
  torch?.rows.find((r) => r.name === "gemv" && r.shape === shape && !r.error);
// bench_kernels' pure read of the same bytes (stream_read): the size-matched floor.
const readOf = (shape, dtype) => gemv("stream_read", shape, dtype);
if (gemvRows) {
  console.log(
    `\nGEMV, M = 1, ${gemvGraph ? "graph-timed" : "bench.json's timing"}: effective GB/s of the` +
      " bytes each format moves (% of the copy roofline; read: a pure read of the same bytes," +
      " stream_read, as a share of our time)\n",
  );
  console.log(`| shape | torch bf16 | ${formats.join(" | ")} |`);
  console.log(`|---|${"---:|".repeat(formats.length + 1)}`);
  for (const [label, name, shape] of shapes) {
    // torch's rows are plain GEMVs ("gemv"); bytes are the weights', as ours.
    const cell = (r, floor) => {
      if (!r) return "—";
      const bw = bandwidth(r.bytes, r.median_us).replace(" GB/s", "");
      return floor ? bw.replace(")", `; read ${pct(floor.median_us / r.median_us)})`) : bw;
    };
    const t = name === "gemv" ? tgemv(shape) : null;
    const ourCells = formats.map((f) => cell(gemv(name, shape, f), readOf(shape, f)));
    console.log(`| ${label} ${shape} | ${cell(t)} | ${ourCells.join(" | ")} |`);
  }
}
