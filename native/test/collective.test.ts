// Collectives (tensor parallelism): the all-reduce against a plain TypeScript sum, and the column
// copy against host slicing. CPU ranks run everywhere; CUDA ranks run where two or more GPUs are
// visible (GEMMA3_TEST_MULTI_GPU=1 turns fewer into a failure), once per backend (NCCL when built,
// and the host fallback).
import { describe, expect, it } from "vitest";
import {
  Communicator,
  Device,
  DeviceError,
  DisposedError,
  DTypeError,
  Graph,
  InvalidArgumentError,
  ShapeError,
  Tensor,
  UnsupportedError,
  bf16ToF32,
  buildInfo,
  copyColumns,
  deviceCount,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  type DTypeName,
} from "../src/index.js";
import { expectClose, randn, rng } from "./helpers.js";

/** Rounds to the dtype's nearest value (round to nearest even), as the tensor stores it. */
function round(x: number, dtype: DTypeName): number {
  if (dtype === "bf16") return bf16ToF32(f32ToBf16(x));
  if (dtype === "f16") return f16ToF32(f32ToF16(x));
  return Math.fround(x);
}

/**
 * The host all-reduce's definition: float32 accumulation in rank order, rounded once to the dtype.
 * @param inputs per rank, values already representable in the dtype
 */
function referenceSum(inputs: Float32Array[], dtype: DTypeName): Float32Array {
  const out = new Float32Array(inputs[0]!.length);
  for (let i = 0; i < out.length; i++) {
    let acc = inputs[0]![i]!;
    for (let r = 1; r < inputs.length; r++) acc = Math.fround(acc + inputs[r]![i]!);
    out[i] = round(acc, dtype);
  }
  return out;
}

/** Random per-rank inputs of `shape`, stored in `dtype` on `devices[r]`. */
function rankInputs(shape: number[], dtype: DTypeName, devices: string[], seed: number) {
  const n = shape.reduce((a, b) => a * b, 1);
  const host = devices.map((_, r) => randn(n, seed + r).map((x) => round(x, dtype)));
  const tensors = devices.map((d, r) => Tensor.from(host[r]!, shape, dtype, d));
  return { host, tensors };
}

describe("all-reduce on CPU ranks (host backend)", () => {
  it("equals the rank-order float32 sum exactly, for N = 2, 3, 4 and random sizes", async () => {
    const r = rng(7);
    for (const n of [2, 3, 4])
      for (const dtype of ["f32", "bf16", "f16"] as const)
        for (let trial = 0; trial < 3; trial++) {
          const rows = 1 + Math.floor(r() * 40);
          const cols = 1 + Math.floor(r() * 300);
          const devices = Array.from({ length: n }, () => "cpu");
          const comm = Communicator.create(devices);
          expect(comm.backend).toBe("host");
          expect(comm.size).toBe(n);
          const { host, tensors } = rankInputs([rows, cols], dtype, devices, 100 * n + trial);
          comm.allReduce(tensors);
          const want = referenceSum(host, dtype);
          for (const t of tensors)
            expect(Array.from(await t.toArray()), `${n} ranks ${dtype} [${rows}, ${cols}]`).toEqual(
              Array.from(want),
            );
          for (const t of tensors) t.dispose();
          comm.dispose();
        }
  });

  it("reduces views in place and leaves the rest of their storage alone", async () => {
    const comm = Communicator.create(["cpu", "cpu"]);
    const a = Tensor.from([1, 2, 3, 4, 5, 6], [3, 2], "f32");
    const b = Tensor.from([10, 20, 30, 40, 50, 60], [3, 2], "f32");
    comm.allReduce([a.slice(1, 2), b.slice(1, 2)]);
    expect(Array.from(await a.toArray())).toEqual([1, 2, 33, 44, 5, 6]);
    expect(Array.from(await b.toArray())).toEqual([10, 20, 33, 44, 50, 60]);
    a.dispose();
    b.dispose();
    comm.dispose();
  });

  it("is recorded by a CPU graph and replays on current data", async () => {
    const comm = Communicator.create(["cpu", "cpu", "cpu"]);
    const ts = [0, 1, 2].map(() => Tensor.zeros([5], "f32"));
    const g = Graph.capture("cpu", () => comm.allReduce(ts));
    ts.forEach((t, r) => t.write([r, r, r, r, r + 1]));
    g.launch();
    for (const t of ts) expect(Array.from(await t.toArray())).toEqual([3, 3, 3, 3, 6]);
    g.dispose();
    for (const t of ts) t.dispose();
    comm.dispose();
  });

  it("refuses mismatched ranks with typed errors", () => {
    const comm = Communicator.create(["cpu", "cpu"]);
    const a = Tensor.zeros([4, 3], "f32");
    const b = Tensor.zeros([4, 3], "f32");
    const c = Tensor.zeros([3, 4], "f32");
    const h = Tensor.zeros([4, 3], "bf16");
    const i = Tensor.zeros([4, 3], "i32");
    expect(() => comm.allReduce([a, c])).toThrow(ShapeError);
    expect(() => comm.allReduce([a, h])).toThrow(DTypeError);
    expect(() => comm.allReduce([i, i.slice(0, 4)])).toThrow(); // overlapping, and i32
    expect(() => comm.allReduce([a, a.slice(0, 4)])).toThrow(InvalidArgumentError);
    expect(() => comm.allReduce([a])).toThrow(InvalidArgumentError);
    expect(() => comm.allReduce([a, b, b])).toThrow(InvalidArgumentError);
    expect(() => Communicator.create(["cpu", "cpu"], { backend: "nccl" })).toThrow(
      UnsupportedError,
    );
    expect(() => Communicator.create([])).toThrow(InvalidArgumentError);
    comm.dispose();
    expect(() => comm.allReduce([a, b])).toThrow(DisposedError);
    for (const t of [a, b, c, h, i]) t.dispose();
  });
});

describe("copyColumns", () => {
  it("copies a column block between row-major matrices (CPU)", async () => {
    const r = rng(3);
    for (let trial = 0; trial < 8; trial++) {
      const rows = 1 + Math.floor(r() * 9);
      const cs = 1 + Math.floor(r() * 40);
      const cd = 1 + Math.floor(r() * 40);
      const width = Math.floor(r() * (Math.min(cs, cd) + 1));
      const sc = Math.floor(r() * (cs - width + 1));
      const dc = Math.floor(r() * (cd - width + 1));
      const sv = randn(rows * cs, trial);
      const dv = randn(rows * cd, 50 + trial);
      const src = Tensor.from(sv, [rows, cs], "f32");
      const dst = Tensor.from(dv, [rows, cd], "f32");
      copyColumns(src, sc, dst, dc, width);
      const want = Float32Array.from(dv);
      for (let i = 0; i < rows; i++)
        for (let j = 0; j < width; j++) want[i * cd + dc + j] = sv[i * cs + sc + j]!;
      expect(Array.from(await dst.toArray())).toEqual(Array.from(want));
      src.dispose();
      dst.dispose();
    }
  });

  it("refuses columns out of range, other row counts and block dtypes", () => {
    const a = Tensor.zeros([3, 8], "f32");
    const b = Tensor.zeros([3, 4], "f32");
    const c = Tensor.zeros([2, 4], "f32");
    const q = Tensor.zeros([3, 32], "q8_0");
    expect(() => copyColumns(a, 6, b, 0, 3)).toThrow(ShapeError);
    expect(() => copyColumns(a, 0, b, 2, 3)).toThrow(ShapeError);
    expect(() => copyColumns(a, 0, c, 0, 2)).toThrow(ShapeError);
    expect(() => copyColumns(q, 0, q, 0, 32)).toThrow(DTypeError);
    for (const t of [a, b, c, q]) t.dispose();
  });
});

const gpus = deviceCount();
if (process.env.GEMMA3_TEST_MULTI_GPU === "1" && gpus < 2)
  throw new Error(`GEMMA3_TEST_MULTI_GPU=1 but ${gpus} CUDA device(s) are visible`);

describe.skipIf(gpus < 2)("collectives on CUDA ranks", () => {
  const backends: ("host" | "nccl")[] = ["host", ...(buildInfo().nccl ? (["nccl"] as const) : [])];
  for (const backend of backends)
    it(`${backend}: all-reduce matches the float32 sum (N = 2${gpus >= 4 ? ", 4" : ""})`, async () => {
      const r = rng(11);
      for (const n of gpus >= 4 ? [2, 4] : [2]) {
        const devices = Array.from({ length: n }, (_, i) => `cuda:${i}`);
        const comm = Communicator.create(devices, { backend });
        expect(comm.backend).toBe(backend);
        for (const dtype of ["f32", "bf16"] as const)
          for (const size of [1, 19, 989, 1 + Math.floor(r() * 100000)]) {
            const { host, tensors } = rankInputs([size], dtype, devices, size + n);
            comm.allReduce(tensors);
            const want = referenceSum(host, dtype);
            // NCCL sums in its own order (bf16: rounding each partial sum): a few units in the
            // last place of the dtype; for two ranks it is one rounded addition, as the host's.
            const ulp = dtype === "bf16" ? 2 ** -7 : 2 ** -22;
            const got = await Promise.all(tensors.map((t) => t.toArray()));
            for (const g of got) expectClose(g, want, ulp * 2 * n, ulp * n, `${backend} ${n}`);
            for (const g of got.slice(1)) expect(Array.from(g)).toEqual(Array.from(got[0]!));
            for (const t of tensors) t.dispose();
          }
        comm.dispose();
      }
    });

  it("graphs: NCCL all-reduces recorded into per-device graphs replay on current data; the host fallback refuses capture", async () => {
    const devices = ["cuda:0", "cuda:1"];
    const host = Communicator.create(devices, { backend: "host" });
    expect(host.graphCapturable).toBe(false);
    const h = devices.map((d) => Tensor.zeros([5], "f32", d));
    expect(() => Graph.capture("cuda:0", () => host.allReduce(h))).toThrow(InvalidArgumentError);
    for (const t of h) t.dispose();
    host.dispose();
    if (!buildInfo().nccl) return;
    const comm = Communicator.create(devices, { backend: "nccl" });
    expect(comm.graphCapturable).toBe(true);
    const ts = devices.map((d) => Tensor.zeros([3, 1000], "f32", d));
    comm.allReduce(ts); // eager first: NCCL connects its peers outside any capture
    await Promise.all(devices.map((d) => Device.of(d).synchronize()));
    // One rank's device capturing alone is refused (captured or not is a collective property).
    expect(() => Graph.capture("cuda:0", () => comm.allReduce(ts))).toThrow(/all of them or none/);
    // Both devices capture at once, as TensorParallelTextModel does: one graph each.
    let g1: Graph | undefined;
    const g0 = Graph.capture("cuda:0", () => {
      g1 = Graph.capture("cuda:1", () => {
        comm.allReduce(ts);
        comm.allReduce(ts);
      });
    });
    for (const round of [1, 2]) {
      const vals = ts.map((_, r) =>
        Float32Array.from({ length: 3000 }, (_, i) => (i % 7) + r * round),
      );
      ts.forEach((t, r) => t.write(vals[r]!));
      g0.launch();
      g1!.launch();
      // Two all-reduces: (a + b) then 2·(a + b).
      const want = vals[0]!.map((v, i) => 2 * (v + vals[1]![i]!));
      for (const t of ts) expect(Array.from(await t.toArray())).toEqual(Array.from(want));
    }
    comm.waitIdle();
    g0.dispose();
    g1!.dispose();
    for (const t of ts) t.dispose();
    comm.dispose();
  });

  it("copyColumns gathers shards from another GPU in stream order", async () => {
    const rows = 7;
    const src = Tensor.from(randn(rows * 300, 1), [rows, 300], "f32", "cuda:1");
    const dst = Tensor.zeros([rows, 600], "f32", "cuda:0");
    copyColumns(src, 0, dst, 300, 300);
    const s = await src.toArray();
    const d = await dst.toArray();
    for (let i = 0; i < rows; i++)
      for (let j = 0; j < 300; j++) {
        expect(d[i * 600 + j]).toBe(0);
        expect(d[i * 600 + 300 + j]).toBe(s[i * 300 + j]);
      }
    const cpu = Tensor.zeros([rows, 300], "f32", "cpu");
    expect(() => copyColumns(src, 0, cpu, 0, 300)).toThrow(DeviceError);
    for (const t of [src, dst, cpu]) t.dispose();
  });
});
