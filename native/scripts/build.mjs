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
const args = [cmakeJs, "compile", "--directory", here, "--parallel", String(cpus().length)];
if (on(process.env.GEMMA3_CPU_ONLY)) args.push("--CDGEMMA3_CUDA=OFF");
if (on(process.env.GEMMA3_BENCH)) args.push("--CDGEMMA3_BENCH=ON");
if (process.env.CMAKE_CUDA_ARCHITECTURES)
  args.push(`--CDCMAKE_CUDA_ARCHITECTURES=${process.env.CMAKE_CUDA_ARCHITECTURES}`);
if (process.env.GEMMA3_MARCH) args.push(`--CDGEMMA3_MARCH=${process.env.GEMMA3_MARCH}`);

const r = spawnSync(process.execPath, args, { stdio: "inherit", cwd: here });
process.exit(r.status ?? 1);
