// Every CUDA kernel against the CPU kernel on the same inputs (skips without a GPU unless
// GEMMA3_TEST_CUDA=1), plus CUDA-only runtime behaviour: out of memory, graphs, async errors.
import { describe, expect, it } from "vitest";
import { Device, Graph, OutOfMemoryError, Tensor, ops } from "../src/index.js";
import { allCases, setLayout, type Layout } from "./cases.js";
import { expectOutputs } from "./compare.js";
import { cudaTestsEnabled } from "./helpers.js";

const enabled = cudaTestsEnabled();

for (const layout of ["packed", "offset"] as Layout[]) {
  describe.skipIf(!enabled)(`CUDA kernels vs CPU kernels (${layout})`, () => {
    for (const c of allCases()) {
      it(c.name, async () => {
        setLayout(layout);
        const cpu = await c.run("cpu");
        const cuda = await c.run("cuda");
        expectOutputs(cuda, cpu, c.cudaTol, c.name);
      });
    }
  });
}

describe.skipIf(!enabled)("CUDA runtime", () => {
  it("asking for more memory than the card has throws, and the device keeps working", async () => {
    const dev = Device.of("cuda");
    const { total } = dev.memoryInfo();
    expect(() => Tensor.empty([total + 2 ** 30], "fp8_e4m3", dev)).toThrow(OutOfMemoryError);
    expect(() => Tensor.empty([total + 2 ** 30], "fp8_e4m3", dev)).toThrow(
      /out of memory on cuda:0/,
    );
    const t = Tensor.from([1, 2, 3], [3], "f32", dev);
    ops.scale(t, 2, t);
    expect(Array.from(await t.toArray())).toEqual([2, 4, 6]);
    t.dispose();
  });

  it("captures a CUDA graph and replays it on new inputs", async () => {
    const dev = Device.of("cuda");
    const x = Tensor.from([1, 2, 3], [3], "f32", dev);
    const y = Tensor.zeros([3], "f32", dev);
    await dev.synchronize();
    const g = Graph.capture(dev, () => {
      ops.scale(x, 2, y);
      ops.add(y, x, y);
    });
    expect(g.nodes).toBeGreaterThanOrEqual(2);
    g.launch();
    expect(Array.from(await y.toArray())).toEqual([3, 6, 9]);
    x.write([10, 20, 30]);
    g.launch();
    expect(Array.from(await y.toArray())).toEqual([30, 60, 90]);
    g.dispose();
  });

  it("a host copy during capture fails the capture cleanly", async () => {
    const dev = Device.of("cuda");
    const x = Tensor.from([1, 2, 3], [3], "f32", dev);
    expect(() => Graph.capture(dev, () => x.write([4, 5, 6]))).toThrow(
      /not allowed during graph capture/,
    );
    ops.scale(x, 2, x); // the stream still works after the failed capture
    expect(Array.from(await x.toArray())).toEqual([2, 4, 6]);
  });

  // matmul_gelu_mul at decode is one GEMV (the gated-MLP epilogue; its bits are checked against
  // the two launches in the cases above). Counted as graph nodes: 1 where the GEMV rounds x itself
  // or reads it as is, 2 where x is first rounded into int8 blocks by a launch of its own; one more
  // each when GEMMA3_GELU_EPILOGUE=0 runs matmul and gelu_mul separately.
  it("geluMul with the projection runs as one GEMV at decode", async () => {
    const dev = Device.of("cuda");
    const twoLaunches = process.env.GEMMA3_GELU_EPILOGUE === "0" ? 1 : 0;
    // [format, M, F, K, launches of the fused op]
    const shapes: ["bf16" | "q4_0s" | "q8_0s", number, number, number, number][] = [
      ["bf16", 1, 1000, 1152, 1],
      ["bf16", 2, 300, 2560, 1],
      ["q4_0s", 1, 1000, 2560, 1],
      ["q8_0s", 1, 600, 2560, 1],
      ["q4_0s", 1, 300, 5120, 2], // K > 4096: x rounded into g_qx first
    ];
    for (const [wd, M, F, K, launches] of shapes) {
      const w16 = Tensor.from(
        Array.from({ length: 2 * F * K }, (_, i) => Math.sin(i) / 32),
        [2 * F, K],
        "bf16",
        dev,
      );
      let w = w16;
      if (wd !== "bf16") {
        const q = ops.quantize(w16, wd === "q4_0s" ? "q4_0" : "q8_0").data;
        w = ops.repack(q, wd);
        q.dispose();
        w16.dispose();
      }
      const x = Tensor.from(
        Array.from({ length: M * K }, (_, i) => Math.cos(i)),
        [M, K],
        "bf16",
        dev,
      );
      const gateUp = Tensor.empty([M, 2 * F], "bf16", dev);
      const act = Tensor.empty([M, F], "bf16", dev);
      await dev.synchronize();
      const g = Graph.capture(dev, () => ops.geluMul(gateUp, null, act, { x, w }));
      expect(g.nodes, `${wd} M=${M} F=${F} K=${K}`).toBe(launches + twoLaunches);
      g.dispose();
      for (const t of [w, x, gateUp, act]) t.dispose();
    }
  });

  it("copies across devices go through the host", async () => {
    const a = Tensor.from([1, 2], [2], "f32", "cuda");
    const b = Tensor.zeros([2], "f32", "cpu");
    expect(() => b.copyFrom(a)).toThrow(/across devices/);
  });
});
