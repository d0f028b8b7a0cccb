// Runs the standalone kernel benchmark built by `GEMMA3_BENCH=1 node scripts/build.mjs`,
// forwarding arguments (e.g. --filter gemv --md out.md).
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const build = join(dirname(dirname(fileURLToPath(import.meta.url))), "build");
const find = (dir) => {
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) {
      const r = find(p);
      if (r) return r;
    } else if (e === "bench_kernels") return p;
  }
  return undefined;
};
const exe = find(build);
if (!exe) {
  console.error("bench_kernels was not built: it needs the CUDA backend (nvcc) and GEMMA3_BENCH=1");
  process.exit(1);
}
process.exit(spawnSync(exe, process.argv.slice(2), { stdio: "inherit" }).status ?? 1);
