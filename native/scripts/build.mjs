// Builds the addon with cmake-js. CUDA is compiled when nvcc is found (CMake decides), unless
// GEMMA3_CPU_ONLY=1. CMAKE_CUDA_ARCHITECTURES (default 90a) picks the GPU targets; GEMMA3_BENCH=1
// also builds the standalone kernel benchmarks. Nothing is downloaded: napi_versions in
// package.json makes cmake-js use the node-api-headers package instead of fetching Node headers.
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const require = createRequire(import.meta.url);
const cmakeJs = join(dirname(require.resolve("cmake-js/package.json")), "bin", "cmake-js");

const on = (v) => v === "1" || v === "true" || v === "ON";
const args = ["--directory", here, "--parallel", String(cpus().length)];
// Always explicit: a cached CMake value from an earlier build must not decide.
args.push(`--CDGEMMA3_CUDA=${on(process.env.GEMMA3_CPU_ONLY) ? "OFF" : "ON"}`);
args.push(`--CDGEMMA3_BENCH=${on(process.env.GEMMA3_BENCH) ? "ON" : "OFF"}`);
if (process.env.CMAKE_CUDA_ARCHITECTURES)
  args.push(`--CDCMAKE_CUDA_ARCHITECTURES=${process.env.CMAKE_CUDA_ARCHITECTURES}`);
if (process.env.GEMMA3_MARCH) args.push(`--CDGEMMA3_MARCH=${process.env.GEMMA3_MARCH}`);

// Configure every time (cheap) so the options above always apply, then build.
for (const cmd of ["configure", "build"]) {
  const r = spawnSync(process.execPath, [cmakeJs, cmd, ...args], { stdio: "inherit", cwd: here });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
