// Device memory actually taken by a HybridKVCache vs the estimator (issue 5), on the GPU machine:
// cudaMemGetInfo before and after allocating the cache for one sequence of N tokens.
//   node packages/kv-cache/bench/memory.mjs CONFIG.json... [--context 32768,131072] [--device cuda]
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { parseConfig } from "@gemma3/model";
import { HybridKVCache, estimateKV } from "@gemma3/kv-cache";
import { Device } from "@gemma3/native";

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1] : def;
};
const contexts = opt("--context", "32768,131072").split(",").map(Number);
const device = Device.of(opt("--device", "cuda"));
const gib = (b) => (b / 2 ** 30).toFixed(3);
console.log(
  `| config | context | estimator hybrid GiB | allocated by estimator GiB | measured GiB | measured / allocated | global-only GiB |`,
);
console.log(`|---|---:|---:|---:|---:|---:|---:|`);
for (const file of args) {
  const cfg = parseConfig(JSON.parse(readFileSync(file, "utf8")), file);
  for (const n of contexts) {
    await device.synchronize();
    const before = device.memoryInfo().free;
    const cache = new HybridKVCache(cfg, { maxSeqLen: n, maxSeqs: 1, dtype: "bf16", device });
    await device.synchronize();
    const used = before - device.memoryInfo().free;
    const e = estimateKV(cfg, { context: n, batch: 1, kvDtype: "bf16" });
    console.log(
      `| ${basename(file)} | ${n} | ${gib(e.hybrid)} | ${gib(e.allocated)} | ${gib(used)} | ${(used / e.allocated).toFixed(4)} | ${gib(e.globalOnly)} |`,
    );
    cache.dispose();
    await device.synchronize();
  }
}
