// Issue 9's plot: decode tok/s (aggregate) against the batch, ours (`gemma3 bench --batch
// 1,2,…,64 --json`) vs HF transformers (tools/reference/hf_decode_bench.py --batches …), from the
// JSON files one `scripts/gpu-issue9.sh` call writes.
//   node tools/plot/decode-batch-plot.mjs OURS.json HF.json OUT.svg [--title "4B, bf16"]
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const args = process.argv.slice(2);
const at = args.indexOf("--title");
const title = at >= 0 ? args.splice(at, 2)[1] : "4B, bf16";
const [oursFile, hfFile, outFile] = args;
if (!outFile) {
  console.error("usage: decode-batch-plot.mjs OURS.json HF.json OUT.svg [--title T]");
  process.exit(2);
}
const ours = JSON.parse(readFileSync(oursFile, "utf8"));
const hf = existsSync(hfFile) ? JSON.parse(readFileSync(hfFile, "utf8")) : null;
const device = /\((.*)\)/.exec(ours.device ?? "")?.[1] ?? "GPU";

const spec = {
  title: `Decode, ${title}, random weights (${device})`,
  xLabel: "concurrent streams (batch)",
  yLabel: "tok/s, aggregate",
  xLog2: true,
  series: [
    { name: "ours", points: ours.decode.map((d) => [d.batch, d.aggregate_tok_s]) },
    {
      name: "HF transformers",
      points: Object.entries(hf?.batches ?? {}).map(([b, v]) => [Number(b), v.tok_s]),
    },
  ].filter((s) => s.points.length > 0),
};
const specFile = join(tmpdir(), `decode-batch-plot-${process.pid}.json`);
writeFileSync(specFile, JSON.stringify(spec));
const chart = join(dirname(fileURLToPath(import.meta.url)), "svg-chart.mjs");
execFileSync(process.execPath, [chart, specFile, outFile], { stdio: "inherit" });
for (const s of spec.series)
  console.log(`${s.name}: ${s.points.map(([x, y]) => `${x}: ${y.toFixed(1)}`).join(", ")}`);
