// CUDA memory and device faults (issue #10): buffers are allocated and freed in stream order
// (runtime/device.cc), so releasing one never waits for queued GPU work and memory reused while
// earlier ops still read it stays correct; a genuine sticky fault (fault kind "trap": a kernel
// storing to address 0) becomes E_CUDA_STICKY on every later call instead of aborting the process.
// Skips without a GPU unless GEMMA3_TEST_CUDA=1.
import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { Device, Tensor, UnsupportedError, ops, testing } from "../src/index.js";
import { cudaTestsEnabled } from "./helpers.js";

const enabled = cudaTestsEnabled();

/** Enqueues `reps` f32 GEMMs of 4096³ on `dev` (~10 ms or more each: no cuBLAS for f32). */
function busy(dev: Device, reps: number): Tensor[] {
  const a = Tensor.zeros([4096, 4096], "f32", dev);
  const y = Tensor.empty([4096, 4096], "f32", dev);
  for (let i = 0; i < reps; ++i) ops.matmul(a, a, { out: y });
  return [a, y];
}

describe("fault kind trap", () => {
  it("is refused for the CPU (it needs a real CUDA device)", () => {
    expect(() => testing.injectFault("trap", "cpu", 0)).toThrow(UnsupportedError);
  });
});

describe.skipIf(!enabled)("CUDA stream-ordered allocation", () => {
  it("releasing a buffer does not wait for the GPU work queued before it", async () => {
    const dev = Device.of("cuda");
    await dev.synchronize();
    const t0 = performance.now();
    const keep = busy(dev, 20);
    const queued = performance.now();
    const x = Tensor.empty([1 << 22], "f32", dev);
    x.dispose();
    const released = performance.now();
    await dev.synchronize();
    const done = performance.now();
    keep.forEach((t) => t.dispose());
    // With cudaFree the dispose waited for the whole queue (released ≈ done).
    expect(done - queued).toBeGreaterThan(50);
    expect(released - queued).toBeLessThan((done - t0) / 4);
  });

  it("memory released and reused while queued ops still read it keeps their results", async () => {
    const dev = Device.of("cuda");
    const n = 1 << 20;
    const keep = busy(dev, 4);
    const results: Tensor[] = [];
    const expected: Float32Array[] = [];
    for (let round = 0; round < 8; ++round) {
      const data = Float32Array.from({ length: n }, (_, i) => (i % 977) - round);
      const src = Tensor.from(data, [n], "f32", dev);
      results.push(ops.scale(src, 2, Tensor.empty([n], "f32", dev)));
      expected.push(data.map((v) => 2 * v));
      src.dispose(); // the next round's allocation may get this memory while scale is queued
    }
    for (let r = 0; r < results.length; ++r) {
      expect(await results[r]!.toArray()).toEqual(expected[r]);
      results[r]!.dispose();
    }
    keep.forEach((t) => t.dispose());
    // Freed memory stays in the pool and counts as free.
    const { free, total } = dev.memoryInfo();
    expect(free).toBeGreaterThan(0);
    expect(free).toBeLessThanOrEqual(total);
  });
});

describe.skipIf(!enabled)("a real sticky CUDA fault", () => {
  it("becomes E_CUDA_STICKY on the next call and every later one; the process lives on", () => {
    // In a child process: the fault ruins this process's CUDA context for good.
    const dist = join(dirname(fileURLToPath(import.meta.url)), "..", "dist", "index.js");
    const script = `
      const { Device, Tensor, ops, testing, isStickyDeviceError } = await import(${JSON.stringify(pathToFileURL(dist).href)});
      const dev = Device.of("cuda");
      const t = Tensor.from([1, 2, 3], [3], "f32", dev);
      testing.injectFault("trap", dev, 0);
      const seen = [];
      const attempt = async (f) => { try { await f(); seen.push("ok"); } catch (e) { seen.push({ code: e.code, sticky: isStickyDeviceError(e), message: e.message }); } };
      await attempt(async () => { ops.scale(t, 2, t); await dev.synchronize(); });
      await attempt(async () => { ops.scale(t, 2, t); await t.toArray(); });
      await attempt(async () => Tensor.from([1], [1], "f32", dev).toArray());
      console.log(JSON.stringify(seen));
    `;
    const out = execFileSync(process.execPath, ["--input-type=module", "-e", script], {
      env: { ...process.env, GEMMA3_FAULT_INJECTION: "1" },
      encoding: "utf8",
    });
    const seen = JSON.parse(out.trim().split("\n").at(-1)!) as Array<{
      code: string;
      sticky: boolean;
      message: string;
    }>;
    expect(seen).toHaveLength(3);
    for (const s of seen) {
      expect(s.code).toBe("E_CUDA_STICKY");
      expect(s.sticky).toBe(true);
    }
    expect(seen[0]!.message).toMatch(/cudaErrorIllegalAddress/);
  });
});
