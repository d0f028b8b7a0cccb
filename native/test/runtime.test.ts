// Runtime: tensors, views, disposal, typed errors, out-of-memory, graphs, arenas (CPU; the CUDA
// variants of OOM and graphs live in cuda.test.ts).
import { describe, expect, it } from "vitest";
import {
  Arena,
  Device,
  DeviceError,
  DisposedError,
  DTypeError,
  Graph,
  OutOfMemoryError,
  OutOfRangeError,
  ShapeError,
  Tensor,
  buildInfo,
  f32ToBf16,
  bf16ToF32,
  ops,
} from "../src/index.js";

describe("tensors", () => {
  it("round-trips f32, i32 and bf16 host data", async () => {
    const a = Tensor.from([1.5, -2, 3.25], [3], "f32");
    expect(Array.from(await a.toArray())).toEqual([1.5, -2, 3.25]);
    const b = Tensor.from([7, -1, 2 ** 30], [3], "i32");
    expect(Array.from(await b.toArray())).toEqual([7, -1, 2 ** 30]);
    // 1/3 is not representable in bf16: the stored value is the nearest bf16.
    const c = Tensor.from([1 / 3, 256.5, -0], [3], "bf16");
    expect(Array.from(await c.toArray())).toEqual([bf16ToF32(f32ToBf16(1 / 3)), 256, -0]);
    for (const t of [a, b, c]) t.dispose();
  });

  it("views and slices share storage, and die with their owner", async () => {
    const t = Tensor.from([0, 1, 2, 3, 4, 5], [3, 2], "f32");
    const row1 = t.slice(1, 2);
    expect(row1.shape).toEqual([1, 2]);
    expect(row1.isView).toBe(true);
    expect(Array.from(await row1.toArray())).toEqual([2, 3]);
    const flat = t.view([6]);
    ops.scale(row1, 10, row1);
    expect(Array.from(await flat.toArray())).toEqual([0, 1, 20, 30, 4, 5]);
    expect(() => t.view([4])).toThrow(ShapeError);
    expect(() => t.slice(2, 4)).toThrow(ShapeError);
    t.dispose();
    expect(row1.disposed).toBe(true);
    expect(() => ops.scale(row1, 2)).toThrow(DisposedError);
  });

  it("rejects bad host data with typed errors", () => {
    expect(() => Tensor.from([1, 2], [3], "f32")).toThrow(ShapeError);
    expect(() => Tensor.from([1], [1, 1.5], "f32")).toThrow(ShapeError);
    expect(() => Tensor.empty([3, 31], "q8_0")).toThrow(/multiple of 32/);
    expect(() => Tensor.from(new Float32Array(32), [32], "q4_0")).toThrow(/raw bytes/);
  });

  it("reports devices it does not have as DeviceError", () => {
    expect(() => Device.of("cuda:99")).toThrow(DeviceError);
    expect(() => Device.of("tpu")).toThrow(DeviceError);
    expect(Device.of("cpu").memoryInfo().total).toBeGreaterThan(0);
    expect(buildInfo().cpuThreads).toBeGreaterThan(0);
  });
});

describe("op validation names the op and the shapes", () => {
  it("shape, dtype and device errors are typed", () => {
    const x = Tensor.zeros([2, 19], "f32");
    const w = Tensor.zeros([7, 20], "f32");
    expect(() => ops.matmul(x, w)).toThrow(ShapeError);
    expect(() => ops.matmul(x, w)).toThrow(/matmul: x \[2, 19\] and w \[7, 20\] disagree on K/);
    const ids = Tensor.zeros([3], "f32");
    expect(() => ops.embedding(ids, w, 1)).toThrow(DTypeError);
    expect(() => ops.rmsnorm(x, Tensor.zeros([18], "f32"), 1e-6)).toThrow(
      /rmsnorm: w \[18\] must have 19 elements/,
    );
    expect(() => ops.topk(x, 0)).toThrow(/k = 0/);
    const q = Tensor.zeros([4, 3, 16], "f32");
    const k = Tensor.zeros([4, 2, 16], "f32");
    const ind = Tensor.from([0, 4], [2], "i32");
    expect(() => ops.attentionPrefill(q, k, k, ind, ind, { smScale: 1 })).toThrow(
      /multiple of num_kv_heads/,
    );
    for (const t of [x, w, ids, q, k, ind]) t.dispose();
  });

  it("a failing queued op rejects synchronize with its error and the stream keeps working", async () => {
    const src = Tensor.from([1, 2, 3, 4], [2, 2], "f32");
    const dst = Tensor.zeros([2, 2], "f32");
    const rows = Tensor.from([0, 5], [2], "i32"); // 5 >= capacity 2: caught when the op runs
    ops.copyRows(src, dst, rows);
    await expect(Device.cpu.synchronize()).rejects.toThrow(OutOfRangeError);
    rows.write([1, 0]);
    ops.copyRows(src, dst, rows);
    expect(Array.from(await dst.toArray())).toEqual([3, 4, 1, 2]);
  });
});

describe("out of memory", () => {
  it("an allocation larger than host memory throws and nothing else breaks", async () => {
    const total = Device.cpu.memoryInfo().total;
    expect(() => Tensor.empty([total * 2], "fp8_e4m3")).toThrow(OutOfMemoryError);
    const t = Tensor.from([1, 2], [2], "f32");
    expect(Array.from(await t.toArray())).toEqual([1, 2]);
  });

  it("an arena refuses what does not fit", () => {
    const arena = new Arena(1024, "cpu");
    const a = arena.alloc([10], "f32");
    const b = arena.alloc([10], "f32");
    expect(b.byteOffset - a.byteOffset).toBe(256); // aligned
    expect(() => arena.alloc([1000], "f32")).toThrow(OutOfMemoryError);
    arena.reset();
    expect(arena.alloc([256], "f32").byteOffset).toBe(0);
    expect(arena.peak).toBe(1024);
    arena.dispose();
  });
});

describe("graphs (CPU task lists)", () => {
  it("records ops without running them, then replays them reading current inputs", async () => {
    const x = Tensor.from([1, 2, 3], [3], "f32");
    const y = Tensor.zeros([3], "f32");
    const g = Graph.capture("cpu", () => {
      ops.scale(x, 2, y);
      ops.add(y, x, y);
    });
    expect(g.nodes).toBe(2);
    expect(Array.from(await y.toArray())).toEqual([0, 0, 0]); // nothing ran during capture
    g.launch();
    expect(Array.from(await y.toArray())).toEqual([3, 6, 9]);
    x.write([10, 20, 30]); // a replay reads what the buffers hold now
    g.launch();
    expect(Array.from(await y.toArray())).toEqual([30, 60, 90]);
    g.dispose();
    expect(() => g.launch()).toThrow(DisposedError);
  });

  it("refuses host copies during a capture (a replay would read stale or freed host memory)", async () => {
    const x = Tensor.from([1, 2, 3], [3], "f32");
    expect(() => Graph.capture("cpu", () => x.write([4, 5, 6]))).toThrow(
      /not allowed during graph capture/,
    );
    ops.scale(x, 2, x); // the stream still works after the failed capture
    expect(Array.from(await x.toArray())).toEqual([2, 4, 6]);
  });

  it("a host read started by another flow waits out a capture: not recorded, not refused", async () => {
    // Host reads (toArray, synchronize) run on libuv's worker threads. Keep them busy behind slow
    // queued work so that one more read reaches the device while the main thread holds a capture
    // open: before the capture gate that read was refused ("not allowed during graph capture") or,
    // a moment later, recorded into the graph and never run.
    const a = Tensor.from(
      Float32Array.from({ length: 1024 * 1024 }, (_, i) => ((i * 7919) % 1000) / 1000),
      [1024, 1024],
    );
    const busy = Tensor.empty([1024, 1024], "f32");
    const t0 = performance.now();
    for (let i = 0; i < 6; i++) ops.matmul(a, a, { out: busy });
    const syncs = Array.from({ length: 8 }, () => Device.cpu.synchronize());
    const x = Tensor.from([1, 2, 3], [3], "f32");
    const read = x.toArray();
    const y = Tensor.zeros([3], "f32");
    const g = Graph.capture("cpu", () => {
      while (performance.now() - t0 < 1500); // hold the capture open past the queued work
      ops.scale(x, 2, y);
    });
    expect(Array.from(await read)).toEqual([1, 2, 3]);
    await Promise.all(syncs);
    expect(g.nodes).toBe(1); // the read was not recorded
    g.launch();
    expect(Array.from(await y.toArray())).toEqual([2, 4, 6]);
    for (const t of [a, busy, x, y]) t.dispose();
    g.dispose();
  }, 30_000);

  it("ends the capture when the recorded function throws", () => {
    expect(() =>
      Graph.capture("cpu", () => {
        throw new Error("boom");
      }),
    ).toThrow("boom");
    const g = Graph.capture("cpu", () => undefined); // a new capture can start
    expect(g.nodes).toBe(0);
  });
});
