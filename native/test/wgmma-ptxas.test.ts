// The sm_90a kernels' wgmma must issue back to back. ptxas serializes them (a wait after each one,
// no overlap of the MMAs with anything) when it cannot prove the pipeline safe, and says so only as
// an info line (C7510-C7518), not a warning or an error. Session 11's change that removed it took
// the 8K prefill attention row from 645 to 540 µs (docs/kernels.md). Building P(t + 1) in other
// registers while P(t) V(t) runs and copying it over after the wait (session 11's loop) brings it
// back here (checked in session 12). So this compiles attention_prefill_sm90.cu with
// `-Xptxas -v` (where nvcc exists; no GPU needed) and fails on any such line or a spill.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const native = join(dirname(fileURLToPath(import.meta.url)), "..");
const nvcc = process.env.CUDACXX || "nvcc";
const hasNvcc = spawnSync(nvcc, ["--version"]).status === 0;

describe("sm_90a kernels under ptxas", () => {
  it.skipIf(!hasNvcc)(
    "attention_prefill_sm90.cu: no serialized wgmma, no spills",
    () => {
      const dir = mkdtempSync(join(tmpdir(), "wgmma-ptxas-"));
      try {
        const r = spawnSync(
          nvcc,
          [
            `-I${native}`,
            "-O3",
            "-DNDEBUG",
            "-DGEMMA3_HAVE_SM90A=1",
            "--generate-code=arch=compute_90a,code=sm_90a",
            "--expt-relaxed-constexpr",
            "-std=c++17",
            "-Xptxas",
            "-v",
            "-c",
            join(native, "kernels/cuda/attention_prefill_sm90.cu"),
            "-o",
            join(dir, "out.o"),
          ],
          { encoding: "utf8" },
        );
        const log = `${r.stdout}${r.stderr}`;
        expect(r.status, log).toBe(0);
        const entries = (kernel: string) =>
          log.match(new RegExp(`Compiling entry function '[^']*${kernel}[^']*'`, "g")) ?? [];
        expect(entries("prefill_wgmma_kernel").length, log).toBe(2); // (D, key tile) 128/128, 256/64
        expect(log.match(/\(C75\d\d\)[^\n]*/g) ?? []).toEqual([]);
        const spills = [...log.matchAll(/(\d+) bytes spill stores/g)].map((m) => Number(m[1]));
        expect(spills.length).toBeGreaterThanOrEqual(2);
        expect(
          spills.every((n) => n === 0),
          log,
        ).toBe(true);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
    180_000,
  );
});
