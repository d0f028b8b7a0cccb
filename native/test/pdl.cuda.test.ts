// Programmatic dependent launch (kernels/cuda/pdl.cuh): a kernel launched with it may be scheduled
// while the kernel before it still runs, and must wait in-kernel (griddepcontrol.wait) before it
// touches memory that kernel writes or reads. A chain of small dependent ops — read-after-write and
// write-after-read through the same buffers, as in a decode layer — run back to back (eagerly, and
// replayed from a CUDA graph) must give bit for bit what the same chain gives with the device
// synchronized after every op, where no two kernels can overlap. A kernel that read its input
// before the wait, or wrote a buffer its predecessor still read, would differ here. The CPU runs
// the same chain (graph = recorded task list) as a check of the test itself.
// Skips CUDA without a GPU unless GEMMA3_TEST_CUDA=1.
import { describe, expect, it } from "vitest";
import { Device, Graph, Tensor, ops } from "../src/index.js";
import { cudaTestsEnabled, randn } from "./helpers.js";

const enabled = cudaTestsEnabled();
const EPS = 1e-6;

interface Buffers {
  h: Tensor; // [rows, dim] residual stream
  r: Tensor; // [rows, dim] branch output
  x: Tensor; // [rows, dim] normed input
  y: Tensor; // [rows, dim] activation
  dst: Tensor; // [rows, dim] rows scattered by copyRows
  w: Tensor; // [dim] norm weight
  w2: Tensor; // [dim] next norm weight
  perm: Tensor; // [rows] i32 destination rows (a permutation)
}

function makeBuffers(dev: Device, rows: number, dim: number, seed: number): Buffers {
  const t = (data: Float32Array, shape: number[]) => Tensor.from(data, shape, "bf16", dev);
  const perm = Int32Array.from({ length: rows }, (_, i) => (i * 7 + 3) % rows);
  // rows must be coprime with 7 for `perm` to be a permutation.
  expect(new Set(perm).size).toBe(rows);
  return {
    h: t(randn(rows * dim, seed), [rows, dim]),
    r: t(randn(rows * dim, seed + 1), [rows, dim]),
    x: Tensor.zeros([rows, dim], "bf16", dev),
    y: Tensor.zeros([rows, dim], "bf16", dev),
    dst: Tensor.zeros([rows, dim], "bf16", dev),
    w: t(randn(dim, seed + 2, 0.1), [dim]),
    w2: t(randn(dim, seed + 3, 0.1), [dim]),
    perm: Tensor.from(perm, [rows], "i32", dev),
  };
}

/** One round of the chain; `after` runs after every op (a device sync for the reference). */
function round(b: Buffers, after: () => void): void {
  ops.rmsnormAdd(b.r, b.w, b.h, EPS); // h += norm(r): reads r, h
  after();
  ops.rmsnorm(b.h, b.w2, EPS, b.x); // x = norm(h): RAW on h
  after();
  ops.scale(b.x, 1.01, b.r); // r = 1.01 x: RAW on x, WAR on r (read two ops back)
  after();
  ops.geluMul(b.x, b.r, b.y); // y = gelu(x) · r
  after();
  ops.add(b.y, b.r, b.x); // x = y + r: WAR on x (read by the op before)
  after();
  ops.copyRows(b.x, b.dst, b.perm); // dst[perm[i]] = x[i]
  after();
  ops.rmsnormAddRmsnorm(b.dst, b.w, b.h, b.w2, EPS, b.r); // h += norm(dst); r = norm2(h)
  after();
}

const ROUNDS = 24;

async function snapshot(b: Buffers): Promise<Float32Array[]> {
  return Promise.all([b.h, b.r, b.x].map(async (t) => (await t.toArray()) as Float32Array));
}

function mismatches(a: Float32Array[], b: Float32Array[]): number {
  let bad = 0;
  for (let k = 0; k < a.length; ++k)
    for (let i = 0; i < a[k]!.length; ++i) if (!Object.is(a[k]![i], b[k]![i])) ++bad;
  return bad;
}

function dispose(b: Buffers): void {
  Object.values(b).forEach((t) => t.dispose());
}

for (const device of ["cpu", "cuda"] as const) {
  describe.skipIf(device === "cuda" && !enabled)(
    `dependent kernels back to back (${device})`,
    () => {
      // rows: 1 (one CTA per kernel: the next kernel's CTAs wait beside it), 19 and 97 (several).
      for (const [rows, dim] of [
        [1, 2560],
        [19, 1152],
        [97, 2304],
      ] as const) {
        it(`rows ${rows}, dim ${dim}: eager and graph equal the op-by-op synchronized chain`, async () => {
          const dev = Device.of(device);
          // Reference: the device drained after every op (synchronize is async; the CUDA sync point
          // is the host wait inside it, so each op runs alone).
          const ref = makeBuffers(dev, rows, dim, 11);
          const pending: Promise<void>[] = [];
          for (let i = 0; i < ROUNDS; ++i) {
            round(ref, () => {
              pending.push(dev.synchronize());
            });
            await Promise.all(pending.splice(0));
          }
          const want = await snapshot(ref);
          dispose(ref);
          // The values stay finite and vary (the chain does not collapse to a constant).
          expect(want[0]!.every(Number.isFinite)).toBe(true);
          expect(new Set(want[0]!.slice(0, 64)).size).toBeGreaterThan(8);

          // Back to back, no syncs.
          const eager = makeBuffers(dev, rows, dim, 11);
          for (let i = 0; i < ROUNDS; ++i) round(eager, () => {});
          expect(mismatches(await snapshot(eager), want)).toBe(0);
          dispose(eager);

          // Captured once (all rounds), replayed three times from the initial state.
          const g = makeBuffers(dev, rows, dim, 11);
          const h0 = (await g.h.toArray()) as Float32Array;
          const r0 = (await g.r.toArray()) as Float32Array;
          const graph = Graph.capture(dev, () => {
            for (let i = 0; i < ROUNDS; ++i) round(g, () => {});
          });
          try {
            for (let rep = 0; rep < 3; ++rep) {
              g.h.write(h0);
              g.r.write(r0);
              graph.launch();
              expect(mismatches(await snapshot(g), want)).toBe(0);
            }
          } finally {
            graph.dispose();
            dispose(g);
          }
        });
      }
    },
  );
}
