// tools/trace/cupti_trace.cc builds as a shared library against this machine's CUPTI (CUDA 13 ships
// it; the GPU machine builds it the same way in scripts/gpu-trace.sh) and exports the injection
// entry point CUDA looks for. Skipped where no cupti.h is found.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(__dirname, "..", "..");
const cudaRoots = [process.env.CUDA_PATH, "/usr/local/cuda", "/usr/local/cuda-13.0"].filter(
  (p): p is string => !!p,
);
const include = cudaRoots
  .map((r) => join(r, "include"))
  .find((d) => existsSync(join(d, "cupti.h")));
const lib = include
  ? [join(dirname(include), "lib64"), join(dirname(include), "lib")].find((d) =>
      existsSync(join(d, "libcupti.so")),
    )
  : undefined;

describe("cupti_trace.cc", () => {
  it.skipIf(!include || !lib)("builds and exports InitializeInjection", () => {
    const out = join(mkdtempSync(join(tmpdir(), "g3trace-")), "libg3trace.so");
    const cc = spawnSync(
      "g++",
      ["-O2", "-shared", "-fPIC", `-I${include}`, join(root, "tools/trace/cupti_trace.cc")].concat([
        "-o",
        out,
        `-L${lib}`,
        "-lcupti",
      ]),
      { encoding: "utf8" },
    );
    expect(cc.stderr).toBe("");
    expect(cc.status).toBe(0);
    const nm = spawnSync("nm", ["-D", "--defined-only", out], { encoding: "utf8" });
    expect(nm.stdout).toMatch(/ T InitializeInjection$/m);
  });
});
