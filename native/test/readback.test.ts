// HostReadback: a host copy enqueued in stream order and awaited on its own (CPU backend here;
// gpu-check.sh runs the same file with GEMMA3_TEST_CUDA=1 on a GPU).
import { describe, expect, it } from "vitest";
import {
  DeviceError,
  DisposedError,
  DTypeError,
  Graph,
  HostReadback,
  InvalidArgumentError,
  OutOfRangeError,
  Tensor,
  ops,
} from "../src/index.js";
import { cudaAvailable } from "../src/index.js";

const devices = [
  "cpu",
  ...(process.env.GEMMA3_TEST_CUDA === "1" && cudaAvailable() ? ["cuda:0"] : []),
];

describe.each(devices)("HostReadback on %s", (dev) => {
  it("reads the values at its place in the stream: after the ops before it, before those after", async () => {
    const x = Tensor.from([1, 2, 3, 4], [4], "f32", dev);
    const rb = new HostReadback(dev, 64);
    ops.scale(x, 2, x); // before: seen
    rb.enqueue(x);
    ops.scale(x, 10, x); // after: not seen
    expect(Array.from(await rb.read())).toEqual([2, 4, 6, 8]);
    expect(Array.from(await x.toArray())).toEqual([20, 40, 60, 80]);
    // i32, and reuse after a read
    const ids = Tensor.from([7, -1, 262143], [3], "i32", dev);
    rb.enqueue(ids);
    const got = await rb.read();
    expect(got).toBeInstanceOf(Int32Array);
    expect(Array.from(got)).toEqual([7, -1, 262143]);
    rb.dispose();
  });

  it("does not wait for the work queued after it", async () => {
    // 40 matmuls queued behind the read: many times one read on either device (2048³ f32 on a GPU).
    const n = dev === "cpu" ? 512 : 2048;
    const a = Tensor.from(
      Float32Array.from({ length: n * n }, (_, i) => ((i * 7919) % 1000) / 1000),
      [n, n],
      "f32",
      dev,
    );
    const out = Tensor.empty([n, n], "f32", dev);
    const x = Tensor.from([5], [1], "i32", dev);
    const rb = new HostReadback(dev, 4);
    const t0 = performance.now();
    rb.enqueue(x);
    for (let i = 0; i < 40; i++) ops.matmul(a, a, { out });
    const got = await rb.read();
    const tRead = performance.now() - t0;
    await out.toArray();
    const tAll = performance.now() - t0;
    expect(Array.from(got)).toEqual([5]);
    // The read is done when the queue reaches it (first), not when the 40 matmuls are.
    expect(tRead).toBeLessThan(tAll / 4);
    rb.dispose();
  });

  it("refuses misuse with typed errors", async () => {
    const x = Tensor.from([1, 2], [2], "i32", dev);
    const rb = new HostReadback(dev, 8);
    await expect(rb.read()).rejects.toThrow(InvalidArgumentError); // nothing enqueued
    expect(() => rb.enqueue(Tensor.from([1, 2, 3], [3], "i32", dev))).toThrow(OutOfRangeError);
    expect(() => rb.enqueue(Tensor.from([1], [1], "bf16", dev))).toThrow(DTypeError);
    rb.enqueue(x);
    expect(() => rb.enqueue(x)).toThrow(/previous read was not waited/); // one in flight
    expect(Array.from(await rb.read())).toEqual([1, 2]);
    expect(() => Graph.capture(dev, () => rb.enqueue(x))).toThrow(
      /not allowed during graph capture/,
    );
    if (dev !== "cpu") expect(() => rb.enqueue(Tensor.from([1], [1], "i32"))).toThrow(DeviceError);
    else expect(() => new HostReadback("cpu", -1)).toThrow(InvalidArgumentError);
    rb.dispose();
    expect(() => rb.enqueue(x)).toThrow(DisposedError);
    await expect(rb.read()).rejects.toThrow(DisposedError);
  });
});
