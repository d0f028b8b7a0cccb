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

// Decode attention in such a chain, as a decode layer runs it: the ops before it write q and the
// new K/V rows (qk_norm_rope's part), the op after it reads its output. With PDL on, the decode
// kernel reads the page table and asks the first K/V stages into L2 before it waits for the kernel
// before it (kernels/cuda/attention_decode.cu); it must still see that kernel's q and K/V rows, and
// its combine (several splits) must still see its partials.
const HQ = 8;
const HKV = 4;
const D = 256;
const PAGE = 16;

interface DecodeBuffers {
  q: Tensor; // [B, HQ, D]
  tmp: Tensor; // [B, HQ, D]
  out: Tensor; // [B, HQ, D]
  w: Tensor; // [D] norm weight
  k: Tensor; // [pages, PAGE, HKV, D]
  v: Tensor; // [pages, PAGE, HKV, D]
  ip: Tensor; // [B + 1] i32
  ix: Tensor; // [pages] i32
  ln: Tensor; // [B] i32
  rows: Tensor; // [2 B] i32: the cache rows of each sequence's last two tokens
  ws: Tensor | null; // split-KV workspace
}

function makeDecodeBuffers(dev: Device, lens: number[], seed: number): DecodeBuffers {
  const B = lens.length;
  const per = lens.map((l) => Math.ceil(l / PAGE));
  const pages = per.reduce((a, b) => a + b, 0);
  // Pages in a scrambled order (a real pool is fragmented).
  const order = Array.from({ length: pages }, (_, i) => (i * 5 + 3) % pages);
  expect(new Set(order).size).toBe(pages);
  const indptr = [0];
  for (const n of per) indptr.push(indptr[indptr.length - 1]! + n);
  const rows: number[] = [];
  lens.forEach((l, b) => {
    for (const t of [l - 2, l - 1])
      rows.push(order[indptr[b]! + Math.floor(t / PAGE)]! * PAGE + (t % PAGE));
  });
  const bf = (data: Float32Array, shape: number[]) => Tensor.from(data, shape, "bf16", dev);
  const cacheN = pages * PAGE * HKV * D;
  const q = bf(randn(B * HQ * D, seed), [B, HQ, D]);
  const wsFloats = ops.attentionDecodeWorkspaceFloats(q, Math.max(...lens));
  return {
    q,
    tmp: Tensor.zeros([B, HQ, D], "bf16", dev),
    out: bf(randn(B * HQ * D, seed + 1), [B, HQ, D]),
    w: bf(randn(D, seed + 2, 0.1), [D]),
    k: bf(randn(cacheN, seed + 3), [pages, PAGE, HKV, D]),
    v: bf(randn(cacheN, seed + 4), [pages, PAGE, HKV, D]),
    ip: Tensor.from(Int32Array.from(indptr), [B + 1], "i32", dev),
    ix: Tensor.from(Int32Array.from(order), [pages], "i32", dev),
    ln: Tensor.from(Int32Array.from(lens), [B], "i32", dev),
    rows: Tensor.from(Int32Array.from(rows), [2 * B], "i32", dev),
    ws: wsFloats > 0 ? Tensor.zeros([wsFloats], "f32", dev) : null,
  };
}

function decodeRound(b: DecodeBuffers, maxKvLen: number, after: () => void): void {
  const [B = 0] = b.q.shape;
  const slots = b.k.shape[0]! * PAGE;
  ops.add(b.out, b.q, b.tmp); // tmp = q + out: RAW on out (the decode before)
  after();
  ops.rmsnorm(b.tmp.view([B * HQ, D]), b.w, EPS, b.q.view([B * HQ, D])); // q: WAR (decode read it)
  after();
  // The new K rows from q, the new V rows from tmp (two token rows of HKV heads per sequence).
  ops.copyRows(b.q.view([2 * B, HKV * D]), b.k.view([slots, HKV * D]), b.rows);
  after();
  ops.copyRows(b.tmp.view([2 * B, HKV * D]), b.v.view([slots, HKV * D]), b.rows);
  after();
  ops.attentionDecode(b.q, b.k, b.v, b.ip, b.ix, b.ln, {
    smScale: 1 / Math.sqrt(D),
    maxKvLen,
    workspace: b.ws,
    out: b.out, // WAR: add read it
  });
  after();
}

async function decodeSnapshot(b: DecodeBuffers): Promise<Float32Array[]> {
  return Promise.all([b.out, b.q].map(async (t) => (await t.toArray()) as Float32Array));
}

function disposeDecode(b: DecodeBuffers): void {
  for (const t of Object.values(b)) t?.dispose();
}

for (const device of ["cpu", "cuda"] as const) {
  describe.skipIf(device === "cuda" && !enabled)(
    `decode attention in the chain (${device})`,
    () => {
      // [37, 140]: one split (no combine); [600]: several splits and the combine.
      for (const lens of [[37, 140], [600]]) {
        it(`lens ${lens.join(",")}: eager and graph equal the op-by-op synchronized chain`, async () => {
          const dev = Device.of(device);
          const maxKv = Math.max(...lens);
          const ref = makeDecodeBuffers(dev, lens, 21);
          for (let i = 0; i < ROUNDS; ++i) {
            const pending: Promise<void>[] = [];
            decodeRound(ref, maxKv, () => {
              pending.push(dev.synchronize());
            });
            await Promise.all(pending);
          }
          const want = await decodeSnapshot(ref);
          disposeDecode(ref);
          expect(want[0]!.every(Number.isFinite)).toBe(true);
          expect(new Set(want[0]!.slice(0, 64)).size).toBeGreaterThan(8);

          const eager = makeDecodeBuffers(dev, lens, 21);
          for (let i = 0; i < ROUNDS; ++i) decodeRound(eager, maxKv, () => {});
          expect(mismatches(await decodeSnapshot(eager), want)).toBe(0);
          disposeDecode(eager);

          const g = makeDecodeBuffers(dev, lens, 21);
          const init = await Promise.all(
            [g.q, g.out, g.k, g.v].map(async (t) => (await t.toArray()) as Float32Array),
          );
          const graph = Graph.capture(dev, () => {
            for (let i = 0; i < ROUNDS; ++i) decodeRound(g, maxKv, () => {});
          });
          try {
            for (let rep = 0; rep < 3; ++rep) {
              [g.q, g.out, g.k, g.v].forEach((t, i) => t.write(init[i]!));
              graph.launch();
              expect(mismatches(await decodeSnapshot(g), want)).toBe(0);
            }
          } finally {
            graph.dispose();
            disposeDecode(g);
          }
        });
      }
    },
  );
}
