// Op cases shared by the CPU test (CPU kernel vs the plain TS reference) and the CUDA test (CUDA
// kernel vs the CPU kernel). A case builds host inputs from a seed, runs the op on a device, and
// knows its reference. Sizes are awkward on purpose (1, 19, 99, 989, ragged batches, offsets) so
// remainder paths run (STYLE 8).
import { Tensor, byteSize, ops, type DTypeName } from "../src/index.js";
import * as ref from "./reference.js";
import * as refK from "./reference_kquant.js";
import { randn, rng } from "./helpers.js";

export type FloatDType = "f32" | "bf16";
export type Outputs = (Float32Array | Int32Array)[];

/**
 * Tolerance of one comparison, with its reason (STYLE 9). "elementwise": |a−b| <= atol + rtol·|b|
 * per element; "norm": ‖a−b‖/‖b‖ <= rel.
 */
export type Tol =
  | { kind: "exact"; why: string }
  | { kind: "elementwise"; atol: number; rtol: number; why: string }
  | { kind: "norm"; rel: number; why: string };

export interface Case {
  name: string;
  /** Runs the op on `device`, returns host copies of the outputs. */
  run(device: string): Promise<Outputs>;
  /** The plain TS reference outputs. */
  reference(): Outputs;
  /** Tolerance vs the TS reference (CPU test). */
  refTol: Tol;
  /** Tolerance of CUDA vs CPU (CUDA test). */
  cudaTol: Tol;
}

const roundOf = (d: FloatDType): ref.Round => (d === "bf16" ? ref.roundBf16 : ref.roundF32);
/** Values representable in `d` (what the device will actually hold). */
const inDType = (x: Float32Array, d: FloatDType): Float32Array => Float32Array.from(x, roundOf(d));

// One output rounding in T: kernel and reference differ only when their float32/float64 sums fall
// on opposite sides of a rounding boundary, i.e. by one ulp of T (2^-23 f32, 2^-8 bf16, relative).
const ULP_TOL: Record<FloatDType, Tol> = {
  f32: { kind: "elementwise", atol: 1e-6, rtol: 2e-5, why: "float32 sums in a different order" },
  bf16: {
    kind: "elementwise",
    atol: 1e-5,
    rtol: 2 ** -7,
    why: "one bf16 rounding (2^-8) of the same sum, either side",
  },
};
// Sums over K terms: float32 accumulation error grows ~ sqrt(K)·2^-24 relative to ‖terms‖.
const SUM_TOL: Record<FloatDType, Tol> = {
  f32: { kind: "norm", rel: 1e-5, why: "float32 accumulation over K <= 989 terms" },
  bf16: { kind: "norm", rel: 4e-3, why: "output rounded to bf16 (2^-9 average relative error)" },
};

async function host(t: Tensor): Promise<Float32Array | Int32Array> {
  return t.toArray();
}
const hostAll = (...ts: Tensor[]) => Promise.all(ts.map(host));

/**
 * Where tensors live inside their allocation. "packed": a fresh allocation each (256-byte aligned).
 * "offset": a view 16 bytes plus one element (one block for q8_0/q4_0) into a larger allocation, so
 * kernels see unaligned pointers and their scalar fallbacks run; "offset16" keeps 16-byte alignment
 * (for kernels that require it, such as decode attention).
 */
export type Layout = "packed" | "offset" | "offset16";
let layout: Layout = "packed";
/** Sets the layout used by every case's `run` until changed. */
export function setLayout(l: Layout): void {
  layout = l;
}

function alloc(shape: number[], dtype: DTypeName, device: string, l: Layout = layout): Tensor {
  if (l === "packed") return Tensor.empty(shape, dtype, device);
  const elem = refK.isKQuantName(dtype)
    ? refK.KQ_BLOCK_BYTES[dtype]
    : dtype === "q8_0"
      ? 34
      : dtype === "q4_0" || dtype === "q4_0s"
        ? 18
        : dtype === "q8_0s"
          ? 34
          : dtype === "f32" || dtype === "i32"
            ? 4
            : dtype === "fp8_e4m3"
              ? 1
              : 2;
  const pad = 16 + (l === "offset" ? elem : 0);
  const owner = Tensor.empty([byteSize(shape, dtype) + pad], "fp8_e4m3", device);
  return Tensor.viewAt(owner, pad, shape, dtype);
}

function up(
  values: ArrayLike<number>,
  shape: number[],
  dtype: DTypeName,
  device: string,
  l: Layout = layout,
): Tensor {
  const t = alloc(shape, dtype, device, l);
  t.write(values);
  return t;
}

/**
 * f() on first call, then the same value: a case's inputs are made when it runs, not when the
 * case list is built (collecting every case eagerly took ~40 s a test file).
 */
function lazy<T>(f: () => T): () => T {
  let v: { value: T } | undefined;
  return () => (v ??= { value: f() }).value;
}

/** Disposes tensors made by `up`/`alloc` (their owner when they are views) or by ops. */
function disposeAll(...ts: (Tensor | null | undefined)[]): void {
  for (const t of ts) (t?.base ?? t)?.dispose();
}

// ---------------------------------------------------------------------------------------------
// matmul

type WFormat = "f32" | "bf16" | "q8_0" | "q4_0" | "q4_0s" | "q8_0s" | "fp8_e4m3" | refK.KQuant;
type Split = "q4_0s" | "q8_0s";
const isSplit = (d: string): d is Split => d === "q4_0s" || d === "q8_0s";
/** What the host holds for a weight format (a split layout: its GGUF blocks, see onDevice). */
const storedAs = <D extends string>(d: D) =>
  (d === "q4_0s" ? "q4_0" : d === "q8_0s" ? "q8_0" : d) as Exclude<D, Split>;

/**
 * The weight as `dev` takes it: q4_0s / q8_0s (CUDA only) are repacked on the device from the GGUF
 * blocks `t` holds (into the case's layout, so "offset" gives their GEMV 2-byte-aligned rows); on
 * the CPU they stay q4_0 / q8_0, the reference they must match. Other formats: `t` itself.
 */
function onDevice(t: Tensor, wd: WFormat, dev: string): Tensor {
  if (!isSplit(wd) || dev === "cpu") return t;
  const s = ops.repack(t, wd, alloc([...t.shape], wd, dev));
  disposeAll(t);
  return s;
}

/** A random weight [N, K] in format wd: the bytes a device holds, its decoded values, fp8's scale. */
interface WeightData {
  wBytes?: Uint8Array;
  wVals: Float32Array;
  scale?: Float32Array;
}
function makeWeight(wd: WFormat, N: number, K: number, seed: number): WeightData {
  const wRaw = randn(N * K, seed, 1 / Math.sqrt(K));
  if (wd === "q8_0" || wd === "q8_0s") {
    const wBytes = ref.quantizeQ8_0(wRaw, N, K);
    return { wBytes, wVals: ref.dequantizeQ8_0(wBytes, N, K) };
  } else if (wd === "q4_0" || wd === "q4_0s") {
    const wBytes = ref.quantizeQ4_0(wRaw, N, K);
    return { wBytes, wVals: ref.dequantizeQ4_0(wBytes, N, K) };
  } else if (refK.isKQuantName(wd)) {
    const wBytes = refK.quantizeK(wd, wRaw, N, K);
    return { wBytes, wVals: refK.dequantizeK(wd, wBytes, N, K) };
  } else if (wd === "fp8_e4m3") {
    const q = ref.quantizeFp8e4m3(wRaw, N, K);
    return { wBytes: q.q, wVals: ref.decodeFp8e4m3(q.q), scale: q.scale };
  }
  return { wVals: inDType(wRaw, wd) };
}
/** The weight on `dev` as matmul takes it (split layouts repacked on CUDA) and fp8's scale. */
function uploadWeight(w: WeightData, wd: WFormat, N: number, K: number, dev: string) {
  const stored = storedAs(wd);
  const wt = onDevice(
    w.wBytes ? up(w.wBytes, [N, K], stored, dev) : up(w.wVals, [N, K], stored, dev),
    wd,
    dev,
  );
  return { wt, st: w.scale ? up(w.scale, [N], "f32", dev) : undefined };
}

function matmulCase(
  xd: FloatDType,
  wd: WFormat,
  M: number,
  N: number,
  K: number,
  seed: number,
  xVals?: Float32Array,
): Case {
  const data = lazy(() => ({
    x: inDType(xVals ?? randn(M * K, seed), xd),
    ...makeWeight(wd, N, K, seed + 1),
  }));
  const tol = K > 1 ? SUM_TOL[xd] : ULP_TOL[xd];
  // q8_0 / q4_0 at M <= 8: the q-dot contract (x rounded to int8 blocks, exact integer dots), on
  // both backends unless GEMMA3_QDOT=float.
  const stored = storedAs(wd); // what the host holds (split layouts: see onDevice)
  const qdot = (stored === "q8_0" || stored === "q4_0") && M <= ref.QDOT_MAX_M && ref.qdotEnabled();
  return {
    name: `matmul x=${xd} w=${wd} M=${M} N=${N} K=${K}${xVals ? " (x on rounding ties)" : ""}`,
    async run(dev) {
      const d = data();
      const xt = up(d.x, [M, K], xd, dev);
      const { wt, st } = uploadWeight(d, wd, N, K, dev);
      const y = alloc([M, N], xd, dev);
      y.fillBytes(0xff); // poison: every element must be written
      ops.matmul(xt, wt, { out: y, ...(st ? { scale: st } : {}) });
      const out = [await host(y)];
      disposeAll(xt, wt, st, y);
      return out;
    },
    reference: () => {
      const { x, wBytes, wVals, scale } = data();
      return [
        qdot
          ? ref.matmulQdot(x, wBytes!, stored as "q8_0" | "q4_0", M, N, K, roundOf(xd))
          : ref.matmul(x, wVals, M, N, K, scale ?? null, roundOf(xd)),
      ];
    },
    refTol: tol,
    cudaTol: qdot
      ? xVals && xd === "f32"
        ? QDOT_TIE_CUDA_TOL
        : QDOT_CUDA_TOL[xd]
      : xd === "bf16" && K > 1
        ? {
            kind: "norm",
            rel: 6e-3,
            why: "both sides round to bf16 once; float32 sums in different orders",
          }
        : tol,
  };
}

// q-dot, CUDA vs CPU: the int8 x and every per-block integer dot are bit-identical on both, so
// only the float32 sum of the K/32 block terms differs (CUDA also splits a block's integer sum over
// 2 or 4 lanes before scaling): ~sqrt(K/32)·2^-24 of |y| ~ 1, far under atol. A bf16 output can
// then land one bf16 ulp (<= 2^-7 relative) apart when the two sums straddle a rounding boundary.
const QDOT_CUDA_TOL: Record<FloatDType, Tol> = {
  f32: {
    kind: "elementwise",
    atol: 1e-5,
    rtol: 1e-5,
    why: "q-dot: float32 sums of exact block dots",
  },
  bf16: {
    kind: "elementwise",
    atol: 1e-4,
    rtol: 2 ** -7,
    why: "q-dot: float32 sums of exact block dots, then at most one bf16 ulp apart",
  },
};

// q-dot on the tie inputs below (|x| up to 127, so block scale 1): |y| and the running sums are
// ~50-100, not ~1, so the two float32 sum orders differ by ~sqrt(K/32)·2^-25·|sum| (3.6e-5 seen at
// K = 20480 on an H100). One tie rounded the other way moves y by |w| ~ 1/sqrt(K) >= 7e-3, still
// 20x this atol.
const QDOT_TIE_CUDA_TOL: Tol = {
  kind: "elementwise",
  atol: 3e-4,
  rtol: 1e-5,
  why: "q-dot on ties (|x| <= 127): float32 sums of exact block dots, terms ~100x larger",
};

/**
 * x [M, K] whose every block of 32 holds +-127 and otherwise k + 1/2 (|k| <= 125): the q-dot block
 * scale is exactly 1, so each value sits on a rounding tie (half away from zero vs half even
 * differ on half of them). Exact in bf16.
 */
function tieX(M: number, K: number, seed: number): Float32Array {
  const r = rng(seed);
  const x = new Float32Array(M * K);
  for (let i = 0; i < M * K; i++) {
    const k = Math.floor(r() * 251) - 125;
    x[i] = i % 32 === 7 ? (r() < 0.5 ? -127 : 127) : k + (k < 0 ? -0.5 : 0.5);
  }
  return x;
}

export function matmulCases(): Case[] {
  const cases: Case[] = [];
  let seed = 100;
  /** A matmulCase per [M, N, K, tie] (tie: x on rounding ties, tieX), seeds in order. */
  const pushTieShapes = (
    xd: FloatDType,
    wd: WFormat,
    shapes: readonly (readonly [number, number, number, boolean])[],
  ) => {
    for (const [M, N, K, tie] of shapes) {
      const s = seed++;
      cases.push(matmulCase(xd, wd, M, N, K, s, tie ? tieX(M, K, s) : undefined));
    }
  };
  const shapes: [number, number, number][] = [
    [1, 1, 1],
    [1, 19, 19],
    [3, 99, 989],
    [19, 19, 99],
    [99, 37, 128],
    [130, 129, 64],
  ];
  for (const xd of ["f32", "bf16"] as const)
    for (const wd of ["f32", "bf16"] as const)
      for (const [M, N, K] of shapes) cases.push(matmulCase(xd, wd, M, N, K, seed++));
  const qshapes: [number, number, number][] = [
    [1, 1, 32],
    [1, 19, 96],
    [2, 99, 992],
    [5, 37, 256],
    [19, 99, 64],
    [130, 65, 160],
  ];
  for (const xd of ["f32", "bf16"] as const)
    for (const wd of ["q8_0", "q4_0", "fp8_e4m3"] as const)
      for (const [M, N, K] of qshapes) cases.push(matmulCase(xd, wd, M, N, K, seed++));
  // Dense GEMVs past the small shapes above: rows of a row group split over warps of a CTA (few
  // rows, long K), many CTAs (short K), odd N, every M bucket. M = 1 with bf16 W and K <= 1280 takes the one-shot
  // tiling: one round with idle lanes (3001 x 1152), K split in two to spread a small grid
  // (37 x 1024); long K at M = 1 streams (20000, 12352).
  for (const xd of ["f32", "bf16"] as const)
    for (const wd of ["f32", "bf16", "fp8_e4m3"] as const)
      for (const [M, N, K] of [
        [1, 1001, 2048],
        [3, 3, 65536],
        [8, 5000, 64],
        [2, 777, 4096],
        [1, 3001, 1152],
        [1, 37, 1024],
        [1, 5, 20000],
        [1, 33, 12352],
      ] as [number, number, number][])
        cases.push(matmulCase(xd, wd, M, N, K, seed++));
  // q-dot rounding ties, at the CUDA GEMV's M buckets 1 and 3..4.
  for (const xd of ["f32", "bf16"] as const)
    for (const wd of ["q8_0", "q4_0"] as const)
      for (const [M, N, K] of [
        [1, 19, 96],
        [3, 37, 256],
      ] as const)
        cases.push(matmulCase(xd, wd, M, N, K, seed, tieX(M, K, seed++)));
  // q-dot at the shapes of the direct GEMV tried in commit e77b8d3 (M <= 2, K % 256 == 0,
  // 16-byte aligned rows: W in 16-byte chunks, each holding parts of 2 blocks): one step of 32
  // chunks, several (lanes at the warp's edge, q8_0's d two chunks back), odd N (a partial row
  // group), split K (few rows, long K) and ties; the staged GEMV runs them, the lane kernel the
  // last two (qdot_lane_auto).
  for (const xd of ["f32", "bf16"] as const)
    for (const wd of ["q8_0", "q4_0"] as const) {
      for (const [M, N, K] of [
        [1, 19, 256],
        [1, 37, 2560],
        [2, 21, 1536],
        [1, 5, 10240],
        [2, 3, 4096],
        [2, 7, 8224], // lane kernel (qdot_lane_auto: long K), x in g_qx, an odd block count
        [1, 65537, 64], // lane kernel for q8_0 (a logits-sized N), staged for q4_0
      ] as const)
        cases.push(matmulCase(xd, wd, M, N, K, seed++));
      cases.push(matmulCase(xd, wd, 1, 19, 512, seed, tieX(1, 512, seed++)));
    }
  // q-dot with x rows too long for CUDA's 4 MiB q8 buffer all at once (8 x 425984 int8 + scales):
  // the rows are rounded and multiplied 7 + 1 at a time.
  cases.push(matmulCase("bf16", "q4_0", 8, 3, 425984, seed++));
  // K-quants (K % 256 == 0): the CUDA GEMV at each of its M buckets (1, 2, 3..4, 5..8; N = 19 and
  // 37 leave a partial row group) and the GEMM at M = 9 and 130.
  const kshapes: [number, number, number][] = [
    [1, 1, 256],
    [1, 19, 768],
    [2, 37, 512],
    [3, 5, 1024],
    [8, 19, 256],
    [9, 21, 512],
    [130, 65, 256],
  ];
  for (const xd of ["f32", "bf16"] as const)
    for (const wd of refK.K_QUANT_TYPES)
      for (const [M, N, K] of kshapes) cases.push(matmulCase(xd, wd, M, N, K, seed++));
  // CUDA's fused q-dot GEMV (each CTA rounds x into shared memory when the M K / 32 blocks' 40
  // bytes fit 48 KB and x is 16-byte aligned, i.e. the packed layout) and its two-launch fallback
  // past that budget, at every M bucket (1, 2, 3..4, 5..8): shapes that fit, the largest that fits
  // (M K / 32 = 1228) and the first that does not, ties on both sides. The runs of 8 values a
  // thread rounds: under one pass of 1024, exactly one (2 x 4096), several.
  for (const xd of ["f32", "bf16"] as const)
    for (const wd of ["q8_0", "q4_0"] as const) {
      pushTieShapes(xd, wd, [
        [2, 21, 1536, true], // fused
        [4, 19, 768, false],
        [4, 19, 768, true],
        [6, 7, 4096, false],
        [8, 37, 2560, false],
        [8, 5, 512, true],
        [4, 5, 9824, false], // fused, 49120 bytes
        [4, 5, 9856, false], // two launches from here on
        [1, 3, 40960, false],
        [2, 5, 20480, true],
        [3, 7, 13120, false],
        [8, 3, 5120, true],
      ]);
    }
  // q4_0s / q8_0s (the CUDA split row layouts, repacked on the device; the GGUF blocks on the
  // CPU): the lane GEMV at every M bucket, rows 16-byte (K % 256 == 0), 8-byte (K = 1152, the
  // 1B's) and 2-byte aligned (odd block counts; every row in the "offset" layout), x rounded per
  // CTA and (past K = 4096 or N = 32768, 4 x 9856, 8 rows of 425984 in two rounds) in g_qx, split K
  // (few rows), a partial row group, ties; the GEMM at M > 8.
  for (const wd of ["q4_0s", "q8_0s"] as const)
    for (const xd of ["f32", "bf16"] as const) {
      pushTieShapes(xd, wd, [
        [1, 1, 32, false],
        [1, 19, 96, true],
        [2, 99, 992, false],
        [1, 1001, 1152, false],
        [1, 37, 2560, false],
        [3, 37, 256, true],
        [4, 19, 768, false],
        [5, 37, 256, false],
        [8, 37, 2560, false],
        [1, 5, 10240, false],
        [2, 7, 8224, false],
        [4, 5, 9856, false],
        [1, 3, 40960, true],
        [1, 65537, 64, false],
        [1, 3001, 256, false], // M = 1, R = 4: the last group partial
        [1, 7, 21504, true], // M = 1 with g_qx: few rows, each in K slices
        [1, 1000, 10240, false], // M = 1 with g_qx, the K split held to one wave (4 on an H100)
        [1, 9001, 256, false], // M = 1, x per CTA: R = 5 (one wave; R = 4 spills into a second)
        [19, 99, 64, false],
        [130, 65, 160, false],
      ]);
    }
  cases.push(matmulCase("bf16", "q4_0s", 8, 3, 425984, seed++));
  cases.push(matmulCase("bf16", "q8_0s", 8, 3, 425984, seed++));
  return cases;
}

// ---------------------------------------------------------------------------------------------
// norms, elementwise

export function normCases(): Case[] {
  const cases: Case[] = [];
  let seed = 300;
  const eps = 1e-6;
  for (const d of ["f32", "bf16"] as const)
    for (const [rows, dim] of [
      [1, 1],
      [19, 19],
      [3, 256],
      [2, 989],
      [99, 99],
      [4, 2560],
    ] as [number, number][]) {
      const x = inDType(randn(rows * dim, seed++, 2), d);
      const w = inDType(randn(dim, seed++, 0.5), d);
      const b = inDType(randn(dim, seed++, 0.5), d);
      const res = inDType(randn(rows * dim, seed++, 4), d);
      const round = roundOf(d);
      const shape = [rows, dim];
      cases.push({
        name: `rmsnorm ${d} [${rows}, ${dim}]`,
        async run(dev) {
          const xt = up(x, shape, d, dev);
          const wt = up(w, [dim], d, dev);
          const y = ops.rmsnorm(xt, wt, eps);
          const out = [await host(y)];
          disposeAll(xt, wt, y);
          return out;
        },
        reference: () => [ref.rmsnorm(x, w, rows, dim, eps, round)],
        refTol: ULP_TOL[d],
        cudaTol: ULP_TOL[d],
      });
      cases.push({
        name: `rmsnormAdd ${d} [${rows}, ${dim}]`,
        async run(dev) {
          const xt = up(x, shape, d, dev);
          const wt = up(w, [dim], d, dev);
          const r = up(res, shape, d, dev);
          ops.rmsnormAdd(xt, wt, r, eps);
          const out = [await host(r)];
          disposeAll(xt, wt, r);
          return out;
        },
        reference: () => [ref.rmsnormAdd(x, w, res, rows, dim, eps, round)],
        // The inner rounding of norm(x) to T can flip by one ulp, then the sum rounds again.
        refTol:
          d === "bf16"
            ? {
                kind: "elementwise",
                atol: 2e-2,
                rtol: 2 ** -7,
                why: "inner bf16 rounding of norm(x) may flip (1 ulp of |norm| ≤ 2^-8·8), then the sum rounds",
              }
            : ULP_TOL.f32,
        cudaTol:
          d === "bf16"
            ? { kind: "elementwise", atol: 2e-2, rtol: 2 ** -7, why: "as against the reference" }
            : ULP_TOL.f32,
      });
      cases.push({
        name: `layernorm ${d} [${rows}, ${dim}]`,
        async run(dev) {
          const xt = up(x, shape, d, dev);
          const wt = up(w, [dim], d, dev);
          const bt = up(b, [dim], d, dev);
          const y = ops.layernorm(xt, wt, bt, eps);
          const out = [await host(y)];
          disposeAll(xt, wt, bt, y);
          return out;
        },
        reference: () => [ref.layernorm(x, w, b, rows, dim, eps, round)],
        refTol:
          d === "f32"
            ? {
                kind: "elementwise",
                atol: 1e-5,
                rtol: 1e-5,
                why: "float32 mean/variance vs float64",
              }
            : ULP_TOL.bf16,
        cudaTol:
          d === "f32"
            ? {
                kind: "elementwise",
                atol: 1e-5,
                rtol: 1e-5,
                why: "float32 reductions in different orders",
              }
            : ULP_TOL.bf16,
      });
    }
  return cases;
}

export function elementwiseCases(): Case[] {
  const cases: Case[] = [];
  let seed = 500;
  for (const d of ["f32", "bf16"] as const)
    for (const [rows, cols] of [
      [1, 1],
      [19, 19],
      [7, 989],
      [3, 1024],
    ] as [number, number][]) {
      const round = roundOf(d);
      const g = inDType(randn(rows * cols, seed++, 2), d);
      const u = inDType(randn(rows * cols, seed++, 2), d);
      // gelu_tanh: tanhf vs Math.tanh differ by an ulp or two of float32 before the T rounding.
      const geluTol: Tol =
        d === "f32"
          ? {
              kind: "elementwise",
              atol: 1e-6,
              rtol: 1e-5,
              why: "tanhf vs float64 tanh, then two float32 roundings",
            }
          : ULP_TOL.bf16;
      cases.push({
        name: `geluMul ${d} [${rows}, ${cols}]`,
        async run(dev) {
          const gt = up(g, [rows, cols], d, dev);
          const ut = up(u, [rows, cols], d, dev);
          const y = ops.geluMul(gt, ut);
          const out = [await host(y)];
          disposeAll(gt, ut, y);
          return out;
        },
        reference: () => [ref.geluMul(g, u, rows, cols, cols, cols, round)],
        refTol: geluTol,
        cudaTol: geluTol,
      });
      // Fused [gate | up] rows: the strided path.
      const fused = new Float32Array(rows * 2 * cols);
      for (let r = 0; r < rows; r++) {
        fused.set(g.subarray(r * cols, (r + 1) * cols), r * 2 * cols);
        fused.set(u.subarray(r * cols, (r + 1) * cols), r * 2 * cols + cols);
      }
      cases.push({
        name: `geluMul fused ${d} [${rows}, 2x${cols}]`,
        async run(dev) {
          const ft = up(fused, [rows, 2 * cols], d, dev);
          const y = ops.geluMul(ft, null);
          const out = [await host(y)];
          disposeAll(ft, y);
          return out;
        },
        reference: () => [ref.geluMul(g, u, rows, cols, cols, cols, round)],
        refTol: geluTol,
        cudaTol: geluTol,
      });
      cases.push({
        name: `add+scale ${d} [${rows}, ${cols}]`,
        async run(dev) {
          const a = up(g, [rows, cols], d, dev);
          const b = up(u, [rows, cols], d, dev);
          const s = ops.add(a, b);
          const t = ops.scale(s, 0.37);
          const out = [await host(s), await host(t)];
          disposeAll(a, b, s, t);
          return out;
        },
        reference: () => {
          const s = ref.add(g, u, round);
          return [s, ref.scale(s, Math.fround(0.37), round)];
        },
        refTol: { kind: "exact", why: "one float op and one rounding: both sides are exact" },
        cudaTol: { kind: "exact", why: "one float op and one rounding" },
      });
    }
  return cases;
}

// ---------------------------------------------------------------------------------------------
// casts and quantization (bit-exact: same rules on both sides)

export function quantCases(): Case[] {
  const cases: Case[] = [];
  let seed = 700;
  const exact: Tol = {
    kind: "exact",
    why: "integer rounding rules, reproduced operation for operation",
  };
  for (const [rows, cols] of [
    [1, 32],
    [19, 96],
    [3, 992],
  ] as [number, number][])
    for (const src of ["f32", "bf16"] as const) {
      const x = inDType(randn(rows * cols, seed++, 3), src);
      x[5 % x.length] = 0; // exact zeros and an all-zero block
      if (rows > 1) x.fill(0, cols, cols + 32);
      for (const q of ["q8_0", "q4_0", "fp8_e4m3"] as const) {
        cases.push({
          name: `quantize+dequantize ${src}->${q} [${rows}, ${cols}]`,
          async run(dev) {
            const xt = up(x, [rows, cols], src, dev);
            const { data, scale } = ops.quantize(xt, q);
            const bytes = await data.bytes();
            const back = ops.dequantize(data, "f32", scale ? { scale } : {});
            const out: Outputs = [Int32Array.from(bytes), await host(back)];
            if (scale) out.push(await host(scale));
            disposeAll(xt, data, scale, back);
            return out;
          },
          reference() {
            if (q === "fp8_e4m3") {
              const r = ref.quantizeFp8e4m3(x, rows, cols);
              return [
                Int32Array.from(r.q),
                ref.dequantizeFp8e4m3(r.q, r.scale, rows, cols),
                r.scale,
              ];
            }
            const bytes =
              q === "q8_0" ? ref.quantizeQ8_0(x, rows, cols) : ref.quantizeQ4_0(x, rows, cols);
            const back =
              q === "q8_0"
                ? ref.dequantizeQ8_0(bytes, rows, cols)
                : ref.dequantizeQ4_0(bytes, rows, cols);
            return [Int32Array.from(bytes), back];
          },
          refTol: exact,
          cudaTol: exact,
        });
      }
    }
  // K-quants: llama.cpp's reference quantizers (make_qkx2_quants / make_qx_quants), bit-exact.
  // Blocks: all zero, constant (max == min), all positive (the min clamps to 0), an outlier, tiny.
  for (const [rows, cols] of [
    [1, 256],
    [5, 512],
  ] as [number, number][])
    for (const src of ["f32", "bf16"] as const) {
      const x = inDType(randn(rows * cols, seed++, 0.05), src);
      if (rows > 1) {
        x.fill(0, cols, cols + 256);
        x.fill(0.25, 2 * cols, 2 * cols + 256);
        for (let i = 3 * cols; i < 3 * cols + 256; i++) x[i] = Math.abs(x[i]!) + 0.01;
        x[4 * cols + 7] = 3;
        for (let i = 4 * cols + 256; i < 5 * cols; i++) x[i] = x[i]! * 1e-6;
      }
      const xs = inDType(x, src);
      for (const q of refK.K_QUANT_TYPES) {
        cases.push({
          name: `quantize+dequantize ${src}->${q} [${rows}, ${cols}]`,
          async run(dev) {
            const xt = up(xs, [rows, cols], src, dev);
            const { data } = ops.quantize(xt, q);
            const bytes = await data.bytes();
            const back = ops.dequantize(data, "f32");
            const out: Outputs = [Int32Array.from(bytes), await host(back)];
            disposeAll(xt, data, back);
            return out;
          },
          reference() {
            const bytes = refK.quantizeK(q, xs, rows, cols);
            return [Int32Array.from(bytes), refK.dequantizeK(q, bytes, rows, cols)];
          },
          refTol: exact,
          cudaTol: exact,
        });
      }
    }
  const vals = randn(989, seed++, 100);
  vals[0] = 65504.0; // f16 max
  vals[1] = 1e-7; // f16 subnormal
  vals[2] = -0;
  vals[3] = 70000; // f16 overflow → inf
  for (const [from, to] of [
    ["f32", "bf16"],
    ["bf16", "f32"],
    ["f32", "f16"],
    ["f16", "f32"],
    ["bf16", "f16"],
  ] as [DTypeName, DTypeName][]) {
    const src =
      from === "bf16"
        ? inDType(vals, "bf16")
        : from === "f16"
          ? Float32Array.from(vals, ref.roundF16)
          : vals;
    const roundTo = to === "bf16" ? ref.roundBf16 : to === "f16" ? ref.roundF16 : ref.roundF32;
    cases.push({
      name: `cast ${from}->${to} [989]`,
      async run(dev) {
        const s = up(src, [989], from, dev);
        const d = ops.cast(s, to);
        const f32 = to === "f32" ? d : ops.cast(d, "f32");
        const out = [await host(f32)];
        disposeAll(s, d, to === "f32" ? undefined : f32);
        return out;
      },
      reference: () => [Float32Array.from(src, roundTo)],
      refTol: exact,
      cudaTol: exact,
    });
  }
  // f32|bf16 -> fp8 e4m3 (KV cache writes): round to nearest even, saturating at ±448 (inf too),
  // NaN kept; subnormals (step 2^-9) and ties on both sides of the normal range.
  const f8 = Float32Array.from(randn(989, seed++, 40));
  const specials = [448, 449, 464, 465, 1e6, -1e6, Infinity, -Infinity, NaN, -0, 2 ** -9, 2 ** -10];
  specials.push(3 * 2 ** -10, 2 ** -6, 2 ** -6 - 2 ** -10, 1.0625, 1.1875, -240, 0.3);
  specials.forEach((v, i) => (f8[i * 7] = v));
  for (const from of ["f32", "bf16"] as const) {
    const src = inDType(f8, from);
    for (const n of [989, 16]) {
      cases.push({
        name: `cast ${from}->fp8_e4m3 [${n}]`,
        async run(dev) {
          const s = up(src.subarray(0, n), [n], from, dev);
          const d = ops.cast(s, "fp8_e4m3");
          const out = [await host(d)];
          disposeAll(s, d);
          return out;
        },
        reference: () => [Float32Array.from(src.subarray(0, n), ref.roundFp8e4m3)],
        refTol: exact,
        cudaTol: exact,
      });
    }
  }
  return cases;
}

// ---------------------------------------------------------------------------------------------
// embedding, softmax, argmax, topk, rope, copy_rows

export function miscCases(): Case[] {
  const cases: Case[] = [];
  let seed = 900;
  for (const td of ["f32", "bf16", "q8_0", "q4_0", "q4_0s", "q8_0s"] as const)
    for (const outD of ["f32", "bf16"] as const) {
      const V = 37;
      const stored = storedAs(td); // split layouts: repacked on CUDA (onDevice)
      const D = stored === "q8_0" || stored === "q4_0" ? 96 : 19;
      const raw = randn(V * D, seed++);
      const bytes =
        stored === "q8_0"
          ? ref.quantizeQ8_0(raw, V, D)
          : stored === "q4_0"
            ? ref.quantizeQ4_0(raw, V, D)
            : undefined;
      const vals =
        stored === "q8_0"
          ? ref.dequantizeQ8_0(bytes!, V, D)
          : stored === "q4_0"
            ? ref.dequantizeQ4_0(bytes!, V, D)
            : inDType(raw, stored);
      const ids = [0, 36, 5, 5, -1, 37, 12]; // repeats and two out-of-range ids (NaN rows)
      const s = Math.fround(ref.roundBf16(Math.sqrt(2560)));
      cases.push({
        name: `embedding table=${td} out=${outD}`,
        async run(dev) {
          const it = up(ids, [ids.length], "i32", dev);
          const tt = onDevice(
            bytes ? up(bytes, [V, D], stored, dev) : up(vals, [V, D], stored, dev),
            td,
            dev,
          );
          const y = ops.embedding(it, tt, s, { dtype: outD });
          const out = [await host(y)];
          disposeAll(it, tt, y);
          return out;
        },
        reference: () => [ref.embedding(ids, vals, ids.length, D, V, s, roundOf(outD))],
        refTol: ULP_TOL[outD],
        cudaTol: ULP_TOL[outD],
      });
    }
  for (const td of refK.K_QUANT_TYPES)
    for (const outD of ["f32", "bf16"] as const) {
      const V = 11;
      const D = 512;
      const bytes = refK.quantizeK(td, randn(V * D, seed++), V, D);
      const vals = refK.dequantizeK(td, bytes, V, D);
      const ids = [0, 10, 5, 5, -1, 11, 3]; // repeats and two out-of-range ids (NaN rows)
      const s = Math.fround(ref.roundBf16(Math.sqrt(2560)));
      cases.push({
        name: `embedding table=${td} out=${outD}`,
        async run(dev) {
          const it = up(ids, [ids.length], "i32", dev);
          const tt = up(bytes, [V, D], td, dev);
          const y = ops.embedding(it, tt, s, { dtype: outD });
          const out = [await host(y)];
          disposeAll(it, tt, y);
          return out;
        },
        reference: () => [ref.embedding(ids, vals, ids.length, D, V, s, roundOf(outD))],
        refTol: ULP_TOL[outD],
        cudaTol: ULP_TOL[outD],
      });
    }
  // fp8 e4m3 tables with a per-tensor scale: the dequantizing row gather of an fp8 KV cache.
  // D = 40 runs CUDA's 8-byte vector path (packed layout), D = 19 its scalar path.
  for (const D of [40, 19])
    for (const outD of ["f32", "bf16"] as const) {
      const V = 37;
      const bytes = ref.encodeFp8e4m3(randn(V * D, seed++, 30));
      bytes[3 * D + 5] = 0x7f; // a NaN element in row 3 stays NaN
      const vals = ref.decodeFp8e4m3(bytes);
      const ids = [0, 36, 3, 5, 5, -1, 37, 12];
      const s = 0.0371;
      cases.push({
        name: `embedding table=fp8_e4m3 [${V}, ${D}] s=${s} out=${outD}`,
        async run(dev) {
          const it = up(ids, [ids.length], "i32", dev);
          const tt = up(bytes, [V, D], "fp8_e4m3", dev);
          const y = ops.embedding(it, tt, s, { dtype: outD });
          const out = [await host(y)];
          disposeAll(it, tt, y);
          return out;
        },
        reference: () => [ref.embedding(ids, vals, ids.length, D, V, s, roundOf(outD))],
        refTol: ULP_TOL[outD],
        cudaTol: { kind: "exact", why: "e4m3 -> f32 is exact; one float32 product, one rounding" },
      });
    }
  for (const d of ["f32", "bf16"] as const)
    for (const [rows, cols] of [
      [1, 1],
      [3, 19],
      [2, 989],
      [2, 40000],
    ] as [number, number][]) {
      const x = inDType(randn(rows * cols, seed++, 3), d);
      if (cols > 10) {
        x[3] = x[7] = 50; // ties at the max: the lower index wins
        x[cols + 1] = 50;
      }
      const k = Math.min(cols, cols > 100 ? 64 : 5);
      cases.push({
        name: `softmax/argmax/topk ${d} [${rows}, ${cols}] k=${k}`,
        async run(dev) {
          const xt = up(x, [rows, cols], d, dev);
          const sm = ops.softmax(xt);
          const am = ops.argmax(xt);
          const tk = ops.topk(xt, k);
          const out = [
            await host(sm),
            await host(am),
            await host(tk.values),
            await host(tk.indices),
          ];
          disposeAll(xt, sm, am, tk.values, tk.indices);
          return out;
        },
        reference() {
          const t = ref.topk(x, rows, cols, k);
          return [
            ref.softmax(x, rows, cols, roundOf(d)),
            ref.argmax(x, rows, cols),
            t.values,
            t.indices,
          ];
        },
        refTol:
          d === "f32"
            ? {
                kind: "elementwise",
                atol: 1e-7,
                rtol: 2e-5,
                why: "expf vs exp and a float32 sum over up to 40000 terms",
              }
            : ULP_TOL.bf16,
        cudaTol:
          d === "f32"
            ? {
                kind: "elementwise",
                atol: 1e-7,
                rtol: 2e-5,
                why: "expf and sums in different orders",
              }
            : ULP_TOL.bf16,
      });
    }
  // argmax over few long rows runs as a cluster of CTAs, each over a slice of the row
  // (sampling.cu): ties across slices, NaN, -inf, an all-NaN row, rows at odd offsets (odd cols),
  // and the row-count boundary of that path (32 rows; 33 takes the one-CTA-per-row kernel).
  for (const d of ["f32", "bf16"] as const)
    for (const [rows, cols] of [
      [3, 262208],
      [5, 40001],
      [32, 16384],
      [33, 16385],
    ] as [number, number][]) {
      const x = inDType(randn(rows * cols, seed++, 3), d);
      const at = (r: number, c: number, v: number) => (x[r * cols + c] = v);
      (at(0, cols - 2, 90), at(0, Math.floor(cols / 3), 90)); // same max in two slices: lower index
      (at(1, 5, NaN), at(1, cols - 1, 70)); // NaN never wins; the max is the last element
      for (let c = 0; c < cols; c++) at(2, c, c % 7 === 0 ? NaN : -Infinity); // -inf beats NaN
      if (rows > 3) for (let c = 0; c < cols; c++) at(3, c, NaN); // all NaN -> 0
      cases.push({
        name: `argmax ${d} [${rows}, ${cols}] ties across slices, NaN, -inf`,
        async run(dev) {
          const xt = up(x, [rows, cols], d, dev);
          const am = ops.argmax(xt);
          const out = [await host(am)];
          disposeAll(xt, am);
          return out;
        },
        reference: () => [ref.argmax(x, rows, cols)],
        refTol: { kind: "exact", why: "an index" },
        cudaTol: { kind: "exact", why: "an index; the order (value, then index) is total" },
      });
    }
  for (const d of ["f32", "bf16"] as const)
    for (const [tokens, heads, hd, base, sc] of [
      [1, 1, 16, 1e4, 1],
      [19, 3, 128, 1e6, 8],
      [5, 4, 256, 1e4, 1],
    ] as [number, number, number, number, number][]) {
      const x = inDType(randn(tokens * heads * hd, seed++), d);
      const r = rng(seed++);
      const pos = Array.from({ length: tokens }, (_, i) =>
        i === 0 ? 0 : Math.floor(r() * 100000),
      );
      // cos/sin of angles up to ~1e5 rad: float32 angle, float64 cos vs cosf — same angle, so only
      // the final rounding differs; bf16 rounds cos/sin and each product (several roundings).
      const tol: Tol =
        d === "f32"
          ? {
              kind: "elementwise",
              atol: 2e-6,
              rtol: 2e-5,
              why: "cosf/sinf vs float64 of the same float32 angle, 3 float32 roundings",
            }
          : {
              kind: "elementwise",
              atol: 1e-2,
              rtol: 2 ** -7,
              why: "bf16 cos/sin and each product rounded; one flip propagates",
            };
      cases.push({
        name: `rope ${d} tokens=${tokens} heads=${heads} head_dim=${hd} base=${base} scale=${sc}`,
        async run(dev) {
          const xt = up(x, [tokens, heads, hd], d, dev);
          const pt = up(pos, [tokens], "i32", dev);
          ops.rope(xt, pt, base, sc);
          const out = [await host(xt)];
          disposeAll(xt, pt);
          return out;
        },
        reference: () => [ref.rope(x, pos, tokens, heads, hd, heads * hd, base, sc, roundOf(d))],
        refTol: tol,
        cudaTol: tol,
      });
    }
  {
    const src = randn(5 * 3 * 8, seed++);
    const dst0 = randn(9 * 3 * 8, seed++);
    const rows = [4, -1, 0, 8, 2];
    cases.push({
      name: "copyRows f32 [5, 3, 8] into [9, 3, 8]",
      async run(dev) {
        const s = up(src, [5, 3, 8], "f32", dev);
        const dt = up(dst0, [9, 3, 8], "f32", dev);
        const r = up(rows, [5], "i32", dev);
        ops.copyRows(s, dt, r);
        const out = [await host(dt)];
        disposeAll(s, dt, r);
        return out;
      },
      reference() {
        const out = new Uint8Array(Float32Array.from(dst0).buffer);
        ref.copyRows(new Uint8Array(src.buffer), out, rows, 5, 3 * 8 * 4, 3 * 8 * 4);
        return [new Float32Array(out.buffer)];
      },
      refTol: { kind: "exact", why: "a byte copy" },
      cudaTol: { kind: "exact", why: "a byte copy" },
    });
  }
  // GGUF -> split -> GGUF: the repacked bytes (against the layout as reference.ts writes it) and
  // the round trip; an odd block count per row (K = 96) and a 1B-sized row (K = 1152).
  for (const split of ["q4_0s", "q8_0s"] as const)
    for (const [rows, cols] of [
      [5, 96],
      [3, 1152],
    ] as const) {
      const gguf = storedAs(split);
      const q = gguf === "q4_0" ? 16 : 32;
      const bytes = (gguf === "q4_0" ? ref.quantizeQ4_0 : ref.quantizeQ8_0)(
        randn(rows * cols, seed++),
        rows,
        cols,
      );
      const asF32 = (u: Uint8Array) => Float32Array.from(u);
      cases.push({
        name: `repack ${gguf} -> ${split} -> ${gguf} [${rows}, ${cols}]`,
        async run(dev) {
          const g = up(bytes, [rows, cols], gguf, dev);
          const s = ops.repack(g, split, alloc([rows, cols], split, dev));
          const back = ops.repack(s, gguf);
          const out = [asF32(await s.bytes()), asF32(await back.bytes())];
          disposeAll(g, s, back);
          return out;
        },
        reference: () => [asF32(ref.repackSplit(bytes, rows, cols, q)), asF32(bytes)],
        refTol: { kind: "exact", why: "a byte permutation" },
        cudaTol: { kind: "exact", why: "a byte permutation" },
      });
    }
  return cases;
}

// ---------------------------------------------------------------------------------------------
// attention

interface Seq {
  q: number;
  kv: number;
}

type PrefillOpts = { window?: number; causal?: boolean; spans?: boolean };

/** "q/kv,q/kv" → the sequences of a ragged batch. */
function parseSeqs(text: string): Seq[] {
  return text.split(",").map((s) => {
    const [q, kv] = s.split("/").map(Number);
    return { q: q!, kv: kv! };
  });
}

function prefillCase(
  d: FloatDType,
  seqs: Seq[],
  Hq: number,
  Hkv: number,
  D: number,
  opts: PrefillOpts,
  seed: number,
): Case {
  const totalQ = seqs.reduce((a, s) => a + s.q, 0);
  const totalKv = seqs.reduce((a, s) => a + s.kv, 0);
  const data = lazy(() => ({
    q: inDType(randn(totalQ * Hq * D, seed), d),
    k: inDType(randn(totalKv * Hkv * D, seed + 1), d),
    v: inDType(randn(totalKv * Hkv * D, seed + 2), d),
  }));
  const qoIndptr = [0];
  const kvIndptr = [0];
  for (const s of seqs) {
    qoIndptr.push(qoIndptr[qoIndptr.length - 1]! + s.q);
    kvIndptr.push(kvIndptr[kvIndptr.length - 1]! + s.kv);
  }
  // Bidirectional spans: a block of 5 positions in each sequence long enough (like an image).
  let kvLast: number[] | null = null;
  if (opts.spans) {
    kvLast = new Array<number>(totalQ).fill(-1);
    seqs.forEach((s, b) => {
      const start = 3;
      const end = 8; // keys [3, 8) form a block
      for (let i = 0; i < s.q; i++) {
        const p = s.kv - s.q + i;
        if (p >= start && p < end && end <= s.kv) kvLast![qoIndptr[b]! + i] = end - 1;
      }
    });
  }
  const window = opts.window ?? 0;
  const causal = opts.causal ?? true;
  const smScale = 1 / Math.sqrt(D);
  const maxQ = Math.max(...seqs.map((s) => s.q));
  return {
    name: `attentionPrefill ${d} seqs=${seqs.map((s) => `${s.q}/${s.kv}`).join(",")} Hq=${Hq} Hkv=${Hkv} D=${D} window=${window}${causal ? "" : " non-causal"}${opts.spans ? " spans" : ""}`,
    async run(dev) {
      const { q, k, v } = data();
      const qt = up(q, [totalQ, Hq, D], d, dev);
      const kt = up(k, [totalKv, Hkv, D], d, dev);
      const vt = up(v, [totalKv, Hkv, D], d, dev);
      const qi = up(qoIndptr, [seqs.length + 1], "i32", dev);
      const ki = up(kvIndptr, [seqs.length + 1], "i32", dev);
      const kl = kvLast ? up(kvLast, [totalQ], "i32", dev) : null;
      const out = alloc([totalQ, Hq, D], d, dev);
      out.fillBytes(0xff);
      ops.attentionPrefill(qt, kt, vt, qi, ki, {
        smScale,
        window,
        causal,
        kvLast: kl,
        maxQLen: maxQ,
        out,
      });
      const res = [await host(out)];
      disposeAll(qt, kt, vt, qi, ki, kl, out);
      return res;
    },
    reference: () => [
      ref.attentionPrefill({
        ...data(),
        qoIndptr,
        kvIndptr,
        kvLast,
        batch: seqs.length,
        numQoHeads: Hq,
        numKvHeads: Hkv,
        headDim: D,
        ldQ: Hq * D,
        ldK: Hkv * D,
        ldV: Hkv * D,
        smScale,
        window,
        causal,
        round: roundOf(d),
      }),
    ],
    refTol:
      d === "f32"
        ? {
            kind: "elementwise",
            atol: 2e-5,
            rtol: 1e-4,
            why: "expf and float32 online softmax over <= 300 keys",
          }
        : {
            kind: "elementwise",
            atol: 1e-2,
            rtol: 2 ** -7,
            why: "output rounded to bf16 once (values ~N(0,1/n))",
          },
    cudaTol:
      d === "f32"
        ? {
            kind: "elementwise",
            atol: 2e-5,
            rtol: 1e-4,
            why: "float32 softmax in different orders",
          }
        : {
            kind: "norm",
            rel: 1e-2,
            why: "tensor-core path rounds P to bf16 before P·V (as FlashAttention), ~2^-9 per weight",
          },
  };
}

/**
 * A page table for sequences of `pagesPer` pages each, with two unused pages, handed out in a
 * scrambled order (a real pool is fragmented).
 */
function scrambledPages(
  pagesPer: number[],
  seed: number,
): { numPages: number; kvIndptr: number[]; kvIndices: number[] } {
  const numPages = pagesPer.reduce((a, b) => a + b, 0) + 2;
  const order = Array.from({ length: numPages }, (_, i) => i);
  const r = rng(seed);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const kvIndptr = [0];
  const kvIndices: number[] = [];
  pagesPer.forEach((n) => {
    for (let i = 0; i < n; i++) kvIndices.push(order[kvIndices.length]!);
    kvIndptr.push(kvIndices.length);
  });
  return { numPages, kvIndptr, kvIndices };
}

function decodeCase(
  d: FloatDType,
  lens: number[],
  Hq: number,
  Hkv: number,
  D: number,
  pageSize: number,
  window: number,
  withWorkspace: boolean,
  seed: number,
  /** An fp8 e4m3 cache with these per-tensor scales (else a cache of dtype d). */
  fp8?: { kScale: number; vScale: number },
  /** Plan the splits for this many keys (a cache's capacity) rather than the longest sequence. */
  capacity = 0,
): Case {
  const batch = lens.length;
  const { numPages, kvIndptr, kvIndices } = scrambledPages(
    lens.map((l) => Math.max(1, Math.ceil(l / pageSize))),
    seed,
  );
  const cacheN = numPages * pageSize * Hkv * D;
  // fp8: the cache holds e4m3(x / scale); its values are e4m3 · scale (float32), as the kernel reads
  // them. V is drawn 20x wider than K, as un-normalized values are, with a scale to match.
  const enc = (x: Float32Array, s: number) => ref.encodeFp8e4m3(x.map((e) => e / s));
  const dec = (b: Uint8Array, s: number) => ref.decodeFp8e4m3(b).map((e) => Math.fround(e * s));
  const data = lazy(() => {
    const q = inDType(randn(batch * Hq * D, seed + 1), d);
    const kRaw = randn(cacheN, seed + 2);
    const vRaw = randn(cacheN, seed + 3, fp8 ? 20 : 1);
    const kBytes = fp8 ? enc(kRaw, fp8.kScale) : null;
    const vBytes = fp8 ? enc(vRaw, fp8.vScale) : null;
    const kc = fp8 && kBytes ? dec(kBytes, fp8.kScale) : inDType(kRaw, d);
    const vc = fp8 && vBytes ? dec(vBytes, fp8.vScale) : inDType(vRaw, d);
    return { q, kBytes, vBytes, kc, vc };
  });
  const kvDtype: DTypeName = fp8 ? "fp8_e4m3" : d;
  const smScale = 1 / Math.sqrt(D);
  const maxKv = Math.max(capacity, ...lens);
  const fp8Name = fp8 ? ` kv=fp8_e4m3 kScale=${fp8.kScale} vScale=${fp8.vScale}` : "";
  return {
    name: `attentionDecode ${d}${fp8Name} lens=${lens.join(",")} Hq=${Hq} Hkv=${Hkv} D=${D} page=${pageSize} window=${window}${withWorkspace ? " split" : ""}${capacity > 0 ? ` planned for ${capacity}` : ""}`,
    async run(dev) {
      const { q, kBytes, vBytes, kc, vc } = data();
      // Decode requires 16-byte-aligned q/k/v (16-byte vector loads): offset them by 16 only.
      const l16: Layout = layout === "packed" ? "packed" : "offset16";
      const qt = up(q, [batch, Hq, D], d, dev, l16);
      const kt = up(kBytes ?? kc, [numPages, pageSize, Hkv, D], kvDtype, dev, l16);
      const vt = up(vBytes ?? vc, [numPages, pageSize, Hkv, D], kvDtype, dev, l16);
      const ip = up(kvIndptr, [batch + 1], "i32", dev);
      const ix = up(kvIndices, [kvIndices.length], "i32", dev);
      const ln = up(lens, [batch], "i32", dev);
      const wsFloats = withWorkspace ? ops.attentionDecodeWorkspaceFloats(qt, maxKv) : 0;
      // The layout's offset (20 bytes in "offset") also tests a workspace that is not 16-byte
      // aligned; NaN-filled so a partial read before it is written shows.
      const ws = wsFloats > 0 ? alloc([wsFloats], "f32", dev) : null;
      ws?.fillBytes(0xff);
      const out = alloc([batch, Hq, D], d, dev, l16);
      out.fillBytes(0xff);
      ops.attentionDecode(qt, kt, vt, ip, ix, ln, {
        smScale,
        window,
        maxKvLen: maxKv,
        workspace: ws,
        out,
        ...(fp8 ?? {}),
      });
      const res = [await host(out)];
      disposeAll(qt, kt, vt, ip, ix, ln, ws, out);
      return res;
    },
    reference: () => {
      const { q, kc, vc } = data();
      return [
        ref.attentionDecode({
          q,
          kCache: kc,
          vCache: vc,
          kvIndptr,
          kvIndices,
          kvLen: lens,
          batch,
          numQoHeads: Hq,
          numKvHeads: Hkv,
          headDim: D,
          pageSize,
          smScale,
          window,
          round: roundOf(d),
        }),
      ];
    },
    // fp8 caches: the reference attends over the same dequantized values (e4m3 · scale in
    // float32), so only the float32 arithmetic differs; V 20x wider scales the absolute error.
    refTol:
      d === "f32"
        ? {
            kind: "elementwise",
            atol: fp8 ? 4e-4 : 2e-5,
            rtol: 1e-4,
            why: "expf and float32 softmax",
          }
        : {
            kind: "elementwise",
            atol: fp8 ? 0.2 : 1e-2,
            rtol: 2 ** -7,
            why: "output rounded to bf16 once",
          },
    cudaTol:
      d === "f32"
        ? {
            kind: "elementwise",
            atol: fp8 ? 4e-4 : 2e-5,
            rtol: 1e-4,
            why: "float32 softmax in different orders / splits (fp8: k_scale folded into q)",
          }
        : { kind: "norm", rel: 1e-2, why: "bf16 output, split partials combined in float32" },
  };
}

export function attentionCases(): Case[] {
  const cases: Case[] = [];
  let seed = 2000;
  let shortSeed = 2500; // the short-context decode cases (added later: the others keep their seeds)
  const ragged: Seq[] = [
    { q: 19, kv: 19 },
    { q: 1, kv: 99 },
    { q: 7, kv: 30 },
  ];
  for (const d of ["f32", "bf16"] as const) {
    for (const D of [16, 64, 128, 256]) {
      cases.push(prefillCase(d, ragged, 4, 2, D, {}, seed++));
      cases.push(prefillCase(d, [{ q: 130, kv: 150 }], 2, 1, D, { window: 40 }, seed++));
    }
    cases.push(prefillCase(d, ragged, 8, 1, 32, { window: 8 }, seed++));
    cases.push(
      prefillCase(
        d,
        [
          { q: 12, kv: 12 },
          { q: 9, kv: 20 },
        ],
        2,
        2,
        64,
        { spans: true },
        seed++,
      ),
    );
    cases.push(
      prefillCase(
        d,
        [
          { q: 70, kv: 70 },
          { q: 5, kv: 5 },
        ],
        4,
        4,
        128,
        { causal: false },
        seed++,
      ),
    );
    cases.push(prefillCase(d, [{ q: 1, kv: 1 }], 1, 1, 256, {}, seed++));
    if (d === "bf16") {
      // The sm_90a wgmma kernel's shapes (D 128 / 256; 128 query rows a CTA in two warpgroups of
      // 64, key tiles of 64): several q tiles and a partial last one, key ranges past a q tile
      // (chunked prefill), a window that starts and ends mid-tile, a bidirectional span, a
      // warpgroup with no visible key in a tile, non-causal, GQA groups 1 / 2 / 4; key ranges
      // split over CTAs (attention_prefill_sm90.cu, choose_splits).
      const wg: [string, number, number, number, PrefillOpts][] = [
        ["300/300,77/200", 8, 4, 256, {}],
        ["257/257", 4, 1, 256, { window: 100 }],
        ["200/200,1/50", 4, 2, 128, {}],
        ["150/150", 2, 2, 256, { spans: true }],
        ["130/130", 2, 1, 128, { causal: false }],
        ["64/1000,65/65", 2, 1, 256, {}],
        // Grids small enough for the CUDA kernel to split the key range (a 512-token chunk's
        // shape, shrunk): whole splits, a window, spans, two sequences of unequal length.
        ["100/2100", 4, 2, 256, {}],
        ["200/1600,30/700", 2, 1, 128, { window: 900 }],
        ["129/1200", 2, 2, 256, { spans: true }],
      ];
      wg.forEach(([seqs, hq, hkv, dim, opts], i) =>
        cases.push(prefillCase(d, parseSeqs(seqs), hq, hkv, dim, opts, 2800 + i)),
      );
    }
    for (const D of [32, 128, 256]) {
      cases.push(decodeCase(d, [1, 19, 99], 4, 2, D, 16, 0, false, seed++));
      cases.push(decodeCase(d, [300, 7], 8, 2, D, 16, 0, true, seed++));
    }
    cases.push(decodeCase(d, [250, 40], 2, 1, 64, 16, 32, true, seed++)); // sliding window
    cases.push(decodeCase(d, [24, 24], 4, 4, 128, 24, 0, false, seed++)); // ring: one page of W slots
    // fp8 e4m3 caches (16 elements per lane per 16-byte load): scales 1 and non-trivial ones, GQA
    // groups 1, 2, 4 and 8 (8: two CTAs of 4 heads), split-KV, window and ring.
    const unit = { kScale: 1, vScale: 1 };
    const scaled = { kScale: 0.02, vScale: 0.375 };
    for (const D of [16, 32, 128, 256]) {
      cases.push(decodeCase(d, [1, 19, 99], 4, 2, D, 16, 0, false, seed++, unit));
      cases.push(decodeCase(d, [300, 7], 8, 2, D, 16, 0, true, seed++, scaled));
      cases.push(decodeCase(d, [77], 8, 1, D, 16, 0, false, seed++, scaled));
    }
    cases.push(decodeCase(d, [250, 40], 2, 1, 64, 16, 32, true, seed++, scaled));
    cases.push(decodeCase(d, [24, 24], 4, 4, 128, 24, 0, false, seed++, unit));
    // Long contexts (the split planner's range: ~100 splits at batch 1; stages of 16-512 keys;
    // splits past a short sequence's end; a chunk that is not a whole number of stages) and the
    // wide combine, GQA groups 1/2/4/8.
    cases.push(decodeCase(d, [5000], 8, 4, 256, 16, 0, true, seed++)); // 4B-like heads
    cases.push(decodeCase(d, [4100, 3, 1500], 8, 2, 128, 16, 0, true, seed++)); // ragged batch
    cases.push(decodeCase(d, [3001], 8, 1, 64, 8, 0, true, seed++)); // group 8 (8 heads a CTA)
    cases.push(decodeCase(d, [2999, 2500], 4, 2, 32, 16, 1000, true, seed++)); // window, long
    cases.push(decodeCase(d, [4097], 2, 2, 256, 16, 0, true, seed++)); // group 1
    cases.push(decodeCase(d, [3000], 4, 1, 16, 16, 0, true, seed++, scaled)); // fp8, 512 keys/stage
    cases.push(decodeCase(d, [2600, 90], 8, 2, 256, 16, 0, true, seed++, scaled)); // fp8 D 256
    cases.push(decodeCase(d, [3000], 8, 1, 128, 16, 0, false, seed++)); // long, no workspace
    // 1B-like (one KV head): over 128 splits, merged in 32-dim slices (attention_decode.cu)
    cases.push(decodeCase(d, [20000], 4, 1, 256, 16, 0, true, seed++));
    cases.push(decodeCase(d, [9000, 7000], 2, 1, 128, 16, 0, true, seed++)); // the same, batch 2
    // Splits planned for a long-context cache, sequences shorter than it: the chunk shrinks to
    // the keys there are, the splits past them exit, the combine merges the rest.
    cases.push(decodeCase(d, [700, 5], 4, 1, 256, 16, 0, true, seed++, undefined, 32768));
    cases.push(decodeCase(d, [3000, 1], 8, 4, 256, 16, 0, true, seed++, undefined, 32768));
    cases.push(decodeCase(d, [2000, 600], 4, 2, 128, 16, 512, true, seed++, undefined, 16384));
    // Short contexts (the planner's one-split range: a CTA that streams at most 4 ring stages by
    // default takes the whole range even with a workspace, and writes the output without a
    // combine). Stages are 16 keys at D 256 in bf16 (8 in f32), so 64/65 keys sit on either side
    // of the edge in bf16 (32/33 in f32, past kMinChunk's 64 only from 65); 96/97 and 192/193 were
    // the edges at 12 stages (GEMMA3_DECODE_ONE_SPLIT_STAGES=12); 193 ends in a 1-key split.
    for (const len of [33, 64, 65, 96, 97, 140, 192, 193]) {
      cases.push(decodeCase(d, [len], 8, 4, 256, 16, 0, true, shortSeed++)); // 4B-like heads, batch 1
    }
    cases.push(decodeCase(d, [16, 17, 32, 33, 1], 4, 1, 256, 16, 0, true, shortSeed++)); // page edges, batch 5
    cases.push(decodeCase(d, [150, 60], 4, 2, 128, 16, 100, true, shortSeed++)); // window, short
    cases.push(decodeCase(d, [100, 33], 8, 4, 256, 16, 0, true, shortSeed++, scaled)); // fp8, short
    // Ranges that stay split under the one-split rule in both dtypes (the long cases above with
    // small D fall under it in bf16 / fp8): a window over a split range, and fp8 at D 16.
    cases.push(decodeCase(d, [3000, 2000], 8, 4, 256, 16, 1000, true, shortSeed++)); // window, split
    cases.push(decodeCase(d, [8000], 4, 1, 16, 16, 0, true, shortSeed++, scaled)); // fp8 D 16, split
  }
  return cases;
}

export function allCases(): Case[] {
  return [
    ...matmulCases(),
    ...normCases(),
    ...elementwiseCases(),
    ...quantCases(),
    ...miscCases(),
    ...attentionCases(),
    ...visionCases(),
    ...fusedCases(),
    ...decodePrologueCases(),
  ];
}

// ---------------------------------------------------------------------------------------------
// vision encoder: bias epilogue, patches, pooling, head_dim 72 attention (SigLIP-So400m)

export function visionCases(): Case[] {
  const cases: Case[] = [];
  let seed = 3000;
  for (const d of ["f32", "bf16"] as const) {
    const round = roundOf(d);
    for (const [rows, cols] of [
      [1, 1],
      [19, 99],
      [7, 1152],
      [3, 989],
    ] as [number, number][])
      for (const mode of ["plain", "gelu", "residual", "gelu+residual"] as const) {
        const gelu = mode.startsWith("gelu");
        const withRes = mode.endsWith("residual");
        const x = inDType(randn(rows * cols, seed++, 2), d);
        const b = inDType(randn(cols, seed++, 1), d);
        const res = inDType(randn(rows * cols, seed++, 3), d);
        // One extra T rounding per step on both sides; gelu's tanhf vs Math.tanh can move the
        // inner rounding by one ulp, which the following residual rounding carries.
        const tol: Tol =
          d === "f32"
            ? { kind: "elementwise", atol: 1e-6, rtol: 1e-5, why: "tanhf vs float64 tanh" }
            : {
                kind: "elementwise",
                atol: 2e-2,
                rtol: 2 ** -7,
                why: "an inner bf16 rounding may flip by one ulp, then the sum rounds",
              };
        cases.push({
          name: `biasAdd ${mode} ${d} [${rows}, ${cols}]`,
          async run(dev) {
            const xt = up(x, [rows, cols], d, dev);
            const bt = up(b, [cols], d, dev);
            const rt = withRes ? up(res, [rows, cols], d, dev) : undefined;
            // In place into the residual (the encoder's h += ...), else into x.
            const y = ops.biasAdd(xt, bt, {
              gelu,
              ...(rt ? { residual: rt, out: rt } : { out: xt }),
            });
            const out = [await host(y)];
            disposeAll(xt, bt, rt);
            return out;
          },
          reference: () => [ref.biasAdd(x, b, withRes ? res : null, rows, cols, gelu, round)],
          refTol: tol,
          cudaTol: tol,
        });
      }
    for (const [n, C, H, W, p] of [
      [1, 1, 1, 1, 1],
      [2, 3, 28, 28, 14],
      [1, 3, 21, 35, 7],
      [3, 2, 12, 12, 4],
    ] as [number, number, number, number, number][]) {
      const px = randn(n * C * H * W, seed++, 1);
      const rows = (H / p) * (W / p);
      cases.push({
        name: `patchify f32->${d} n=${n} C=${C} ${H}x${W} p=${p}`,
        async run(dev) {
          const pt = up(px, [n, C, H, W], "f32", dev);
          const y = alloc([n, rows, C * p * p], d, dev);
          y.fillBytes(0xff);
          ops.patchify(pt, p, { out: y });
          const out = [await host(y)];
          disposeAll(pt, y);
          return out;
        },
        reference: () => [ref.patchify(px, n, C, H, W, p, round)],
        refTol: { kind: "exact", why: "a copy with one rounding to T" },
        cudaTol: { kind: "exact", why: "a copy with one rounding to T" },
      });
    }
    for (const [n, side, C, k] of [
      [1, 1, 1, 1],
      [2, 8, 19, 4],
      [1, 12, 99, 3],
      [3, 4, 7, 2],
      [1, 64, 32, 4],
    ] as [number, number, number, number][]) {
      const x = inDType(randn(n * side * side * C, seed++, 2), d);
      const os = side / k;
      cases.push({
        name: `avgPool2d ${d} n=${n} side=${side} C=${C} k=${k}`,
        async run(dev) {
          const xt = up(x, [n, side * side, C], d, dev);
          const y = alloc([n, os * os, C], d, dev);
          y.fillBytes(0xff);
          ops.avgPool2d(xt, k, y);
          const out = [await host(y)];
          disposeAll(xt, y);
          return out;
        },
        reference: () => [ref.avgPool2d(x, n, side, C, k, round)],
        refTol: ULP_TOL[d],
        cudaTol: ULP_TOL[d],
      });
    }
    // head_dim 72: batched images (non-causal, ragged), and causal with a window and spans.
    cases.push(
      prefillCase(
        d,
        [
          { q: 99, kv: 99 },
          { q: 64, kv: 64 },
          { q: 19, kv: 19 },
        ],
        2,
        2,
        72,
        { causal: false },
        seed++,
      ),
    );
    cases.push(prefillCase(d, [{ q: 130, kv: 150 }], 4, 2, 72, { window: 40 }, seed++));
    // One fused [q | k | v] projection per token (SigLIP's QKV matmul): strided q/k/v reads.
    for (const [Hq, Hkv, D] of [
      [2, 2, 72],
      [4, 2, 64],
      [2, 1, 16],
    ] as [number, number, number][])
      cases.push(qkvCase(d, [99, 64, 19], Hq, Hkv, D, seed++));
    cases.push(
      prefillCase(
        d,
        [
          { q: 12, kv: 12 },
          { q: 9, kv: 20 },
        ],
        2,
        1,
        72,
        { spans: true },
        seed++,
      ),
    );
  }
  return cases;
}

function qkvCase(
  d: FloatDType,
  lens: number[],
  Hq: number,
  Hkv: number,
  D: number,
  seed: number,
): Case {
  const total = lens.reduce((a, b) => a + b, 0);
  const width = (Hq + 2 * Hkv) * D;
  const qkv = inDType(randn(total * width, seed), d);
  const indptr = [0];
  for (const n of lens) indptr.push(indptr[indptr.length - 1]! + n);
  const smScale = 1 / Math.sqrt(D);
  const tol: Tol =
    d === "f32"
      ? { kind: "elementwise", atol: 2e-5, rtol: 1e-4, why: "float32 softmax in different orders" }
      : { kind: "norm", rel: 1e-2, why: "bf16 output; the tensor-core path rounds P to bf16" };
  return {
    name: `attentionPrefillQkv ${d} seqs=${lens.join(",")} Hq=${Hq} Hkv=${Hkv} D=${D} non-causal`,
    async run(dev) {
      const t = up(qkv, [total, width], d, dev);
      const qi = up(indptr, [lens.length + 1], "i32", dev);
      const ki = up(indptr, [lens.length + 1], "i32", dev);
      const out = alloc([total, Hq, D], d, dev);
      out.fillBytes(0xff);
      ops.attentionPrefillQkv(t, Hq, Hkv, qi, ki, {
        smScale,
        causal: false,
        maxQLen: Math.max(...lens),
        out,
      });
      const res = [await host(out)];
      disposeAll(t, qi, ki, out);
      return res;
    },
    reference: () => [
      ref.attentionPrefill({
        q: qkv,
        k: qkv.subarray(Hq * D),
        v: qkv.subarray((Hq + Hkv) * D),
        qoIndptr: indptr,
        kvIndptr: indptr,
        kvLast: null,
        batch: lens.length,
        numQoHeads: Hq,
        numKvHeads: Hkv,
        headDim: D,
        ldQ: width,
        ldK: width,
        ldV: width,
        smScale,
        window: 0,
        causal: false,
        round: roundOf(d),
      }),
    ],
    refTol:
      d === "f32"
        ? { kind: "elementwise", atol: 2e-5, rtol: 1e-4, why: "expf and float32 online softmax" }
        : { kind: "elementwise", atol: 1e-2, rtol: 2 ** -7, why: "output rounded to bf16 once" },
    cudaTol: tol,
  };
}

// ---------------------------------------------------------------------------------------------
// decoder-layer fusions: qk_norm_rope (q/k RMSNorm + RoPE over fused [q | k | v] rows, or in place
// on separate q and k), rmsnorm_add_rmsnorm (residual add + the next pre-norm)

/** Largest |a − b| over the pairs of arrays (0 when equal; NaN anywhere gives NaN). */
function maxAbsDiff(a: Outputs, b: Outputs): number {
  let m = 0;
  a.forEach((x, i) => x.forEach((v, j) => (m = Math.max(m, Math.abs(v - b[i]![j]!)))));
  return m;
}

export function fusedCases(): Case[] {
  const cases: Case[] = [];
  let seed = 4000;
  const eps = 1e-6;
  // Through rmsnorm then rope: a one-ulp flip of a normed value (|x| < 8 here) carries through
  // the rotation, so the bound is rope's plus one ulp of the normed input.
  const tol: Record<FloatDType, Tol> = {
    f32: {
      kind: "elementwise",
      atol: 1e-5,
      rtol: 2e-5,
      why: "float32 norm sum order, then cosf/sinf vs float64 of the same angle",
    },
    bf16: {
      kind: "elementwise",
      atol: 2 ** -5,
      rtol: 2 ** -7,
      why: "one bf16 flip of a normed value (2^-6 at |x| < 8) carried through bf16 RoPE",
    },
  };
  // [tokens, q heads, kv heads, head_dim, base, scale]: 4B decode and prefill shapes (global base
  // 1e6, factor 8), 1B's single kv head, head_dim 128, odd small dims (scalar paths), 512.
  const shapes: [number, number, number, number, number, number][] = [
    [1, 8, 4, 256, 1e6, 8],
    [19, 8, 4, 256, 1e4, 1],
    [3, 4, 1, 256, 1e4, 1],
    [5, 2, 2, 128, 1e6, 1],
    [7, 3, 1, 6, 1e4, 1],
    [2, 1, 1, 10, 1e4, 2],
    [2, 2, 1, 8, 1e4, 1],
    [1, 1, 1, 512, 1e6, 1],
  ];
  for (const d of ["f32", "bf16"] as const)
    for (const [tokens, hq, hkv, hd, base, sc] of shapes) {
      const width = (hq + 2 * hkv) * hd;
      const qkv = inDType(randn(tokens * width, seed++, 2), d);
      const qW = inDType(randn(hd, seed++, 0.5), d);
      const kW = inDType(randn(hd, seed++, 0.5), d);
      const r = rng(seed++);
      const pos = Array.from({ length: tokens }, (_, i) =>
        i === 0 ? 0 : Math.floor(r() * 100000),
      );
      const p = { eps, base, scale: sc };
      const what = `${d} tokens=${tokens} heads=${hq}/${hkv} head_dim=${hd} base=${base} scale=${sc}`;
      const reference = () =>
        ref.qkNormRope(qkv, qW, kW, pos, tokens, hq, hkv, hd, eps, base, sc, roundOf(d));
      cases.push({
        name: `qkNormRope fused ${what}`,
        async run(dev) {
          const x = up(qkv, [tokens, width], d, dev);
          const wq = up(qW, [hd], d, dev);
          const wk = up(kW, [hd], d, dev);
          const pt = up(pos, [tokens], "i32", dev);
          const q = alloc([tokens, hq, hd], d, dev);
          const k = alloc([tokens, hkv, hd], d, dev);
          const v = alloc([tokens, hkv, hd], d, dev);
          ops.qkNormRope(x, wq, wk, pt, p, { q, k, v });
          const out = [await host(q), await host(k), await host(v)];
          disposeAll(x, wq, wk, pt, q, k, v);
          return out;
        },
        reference,
        refTol: tol[d],
        cudaTol: tol[d],
      });
      // The separate form in place, and both forms against rmsnorm then rope on the same device:
      // bit for bit, which is what keeps a fused model's logits equal to the unfused one's. One
      // exception, CUDA only: rmsnorm moves to one CTA per row (another sum order) for rows of more
      // than 128 scalars, which only unaligned tensors reach (the "offset" layout, head_dim > 128);
      // there the two-op result is held to the reference's tolerance only.
      cases.push({
        name: `qkNormRope in place and fused == rmsnorm then rope, bit for bit (${what})`,
        async run(dev) {
          const excused = dev !== "cpu" && layout !== "packed" && hd > 128;
          const [qRef, kRef, vRef] = reference();
          const wq = up(qW, [hd], d, dev);
          const wk = up(kW, [hd], d, dev);
          const pt = up(pos, [tokens], "i32", dev);
          const part = (h0: number, h: number) =>
            Float32Array.from({ length: tokens * h * hd }, (_, i) => {
              const t = Math.floor(i / (h * hd));
              return qkv[t * width + h0 * hd + (i - t * h * hd)]!;
            });
          // Two ops on the device, as the unfused layer runs them.
          const q2 = up(part(0, hq), [tokens, hq, hd], d, dev);
          const k2 = up(part(hq, hkv), [tokens, hkv, hd], d, dev);
          ops.rope(ops.rmsnorm(q2, wq, eps, q2), pt, base, sc);
          ops.rope(ops.rmsnorm(k2, wk, eps, k2), pt, base, sc);
          // In place on separate q and k.
          const q1 = up(part(0, hq), [tokens, hq, hd], d, dev);
          const k1 = up(part(hq, hkv), [tokens, hkv, hd], d, dev);
          ops.qkNormRope({ q: q1, k: k1 }, wq, wk, pt, p);
          // Fused rows.
          const x = up(qkv, [tokens, width], d, dev);
          const q = alloc([tokens, hq, hd], d, dev);
          const k = alloc([tokens, hkv, hd], d, dev);
          const v = alloc([tokens, hkv, hd], d, dev);
          ops.qkNormRope(x, wq, wk, pt, p, { q, k, v });
          const two = [await host(q2), await host(k2), vRef!];
          const inPlace = [await host(q1), await host(k1), vRef!];
          const fused = [await host(q), await host(k), await host(v)];
          disposeAll(wq, wk, pt, q2, k2, q1, k1, x, q, k, v);
          // Sanity: the two-op result is the reference's (so a broken pair of ops cannot pass).
          const t = tol[d];
          const sane =
            t.kind === "elementwise" &&
            [qRef!, kRef!].every((a, i) =>
              a.every((b, j) => Math.abs(two[i]![j]! - b) <= t.atol + t.rtol * Math.abs(b)),
            );
          const vsTwo = excused ? 0 : maxAbsDiff(fused, two);
          return [Float32Array.of(maxAbsDiff(inPlace, fused), vsTwo, sane ? 1 : 0)];
        },
        reference: () => [Float32Array.of(0, 0, 1)],
        refTol: { kind: "exact", why: "the same kernels' arithmetic on the same device" },
        cudaTol: { kind: "exact", why: "both backends equal their own rmsnorm then rope" },
      });
      // Straight into KV storage rows (kvRows; one row -1 = a masked slot, skipped): the storage
      // equals the fused op's k/v written by copyRows, bit for bit, and rows not addressed keep
      // what they held.
      const cap = 2 * tokens + 3;
      const kvRows = Array.from({ length: tokens }, (_, t) => (t === 1 ? -1 : (t * 5 + 2) % cap));
      const old = inDType(randn(cap * hkv * hd * 2, seed++), d);
      cases.push({
        name: `qkNormRope into KV rows == fused then copyRows, bit for bit (${what})`,
        async run(dev) {
          const wq = up(qW, [hd], d, dev);
          const wk = up(kW, [hd], d, dev);
          const pt = up(pos, [tokens], "i32", dev);
          const rows = up(kvRows, [tokens], "i32", dev);
          const x = up(qkv, [tokens, width], d, dev);
          const half = cap * hkv * hd;
          const store = () => [
            up(old.subarray(0, half), [cap, hkv, hd], d, dev),
            up(old.subarray(half), [cap, hkv, hd], d, dev),
          ];
          // Direct.
          const [kc, vc] = store();
          const q1 = alloc([tokens, hq, hd], d, dev);
          ops.qkNormRope(x, wq, wk, pt, p, { q: q1, k: kc!, v: vc!, kvRows: rows });
          // Fused, then the cache's own copies.
          const [kc2, vc2] = store();
          const q = alloc([tokens, hq, hd], d, dev);
          const k = alloc([tokens, hkv, hd], d, dev);
          const v = alloc([tokens, hkv, hd], d, dev);
          ops.qkNormRope(x, wq, wk, pt, p, { q, k, v });
          ops.copyRows(k, kc2!, rows);
          ops.copyRows(v, vc2!, rows);
          const direct = [await host(q1), await host(kc!), await host(vc!)];
          const copied = [await host(q), await host(kc2!), await host(vc2!)];
          disposeAll(wq, wk, pt, rows, x, kc!, vc!, q1, kc2!, vc2!, q, k, v);
          // Sanity: the copies changed the storage (a no-op op on both sides cannot pass).
          const changed = maxAbsDiff([copied[1]!], [old.subarray(0, half)]) > 0 ? 1 : 0;
          return [Float32Array.of(maxAbsDiff(direct, copied), changed)];
        },
        reference: () => [Float32Array.of(0, 1)],
        refTol: { kind: "exact", why: "the same kernel's rows, written directly or copied" },
        cudaTol: { kind: "exact", why: "the same kernel's rows, written directly or copied" },
      });
    }

  // With the projection (proj: qkv = matmul(x, w) inside the op): equal, bit for bit, to matmul
  // then qkNormRope on the same device. On CUDA that compares the one-launch GEMV whose CTAs norm
  // and rotate the heads they finish with the two launches, where it applies: M <= 2 bf16 / 8 f32,
  // head_dim >= 16, aligned ("packed"); the other shapes and layouts check the two-launch fallback.
  // [M, K, q heads, kv heads, head_dim, KV rows?, weight format]
  const projShapes: [number, number, number, number, number, boolean, "dense" | "q8_0"][] = [
    [1, 2560, 8, 4, 256, true, "dense"], // 4B decode, into the KV rows
    [2, 1152, 4, 1, 256, true, "dense"], // 1B, two sequences
    [1, 200, 2, 1, 128, false, "dense"],
    [3, 96, 2, 2, 16, true, "dense"], // f32: fused at M = 3; bf16: two launches
    [8, 40, 1, 1, 32, false, "dense"],
    [1, 48, 2, 1, 8, false, "dense"], // head_dim 8: two launches
    [1, 256, 2, 1, 64, true, "q8_0"], // a quantized projection: matmul, then the kernel
  ];
  for (const d of ["f32", "bf16"] as const)
    for (const [M, K, hq, hkv, hd, direct, wf] of projShapes) {
      const N = (hq + 2 * hkv) * hd;
      const xv = inDType(randn(M * K, seed++), d);
      const wRaw = randn(N * K, seed++, 1 / Math.sqrt(K));
      const wq8 = wf === "q8_0" ? ref.quantizeQ8_0(wRaw, N, K) : null;
      const wv = inDType(wRaw, d);
      const qW = inDType(randn(hd, seed++, 0.5), d);
      const kW = inDType(randn(hd, seed++, 0.5), d);
      const pos = Array.from({ length: M }, (_, i) => 17 * i + 3);
      const cap = 2 * M + 3;
      const kvRows = Array.from({ length: M }, (_, t) =>
        M > 1 && t === 1 ? -1 : (t * 5 + 2) % cap,
      );
      const old = inDType(randn(cap * hkv * hd * 2, seed++), d);
      const p = { eps, base: 1e6, scale: 8 };
      cases.push({
        name: `qkNormRope with the projection == matmul then qkNormRope, bit for bit (${d} M=${M} K=${K} heads=${hq}/${hkv} head_dim=${hd}${direct ? " into KV rows" : ""}${wf === "q8_0" ? " w=q8_0" : ""})`,
        async run(dev) {
          const x = up(xv, [M, K], d, dev);
          const w = wq8 ? up(wq8, [N, K], "q8_0", dev) : up(wv, [N, K], d, dev);
          const wq = up(qW, [hd], d, dev);
          const wk = up(kW, [hd], d, dev);
          const pt = up(pos, [M], "i32", dev);
          const rows = up(kvRows, [M], "i32", dev);
          const half = cap * hkv * hd;
          // Outputs poisoned with NaN: an output the op leaves unwritten fails the comparison.
          const outs = () => {
            const q = alloc([M, hq, hd], d, dev);
            const qkv = alloc([M, N], d, dev);
            q.fillBytes(0xff);
            qkv.fillBytes(0xff);
            const [k, v] = direct
              ? [
                  up(old.subarray(0, half), [cap, hkv, hd], d, dev),
                  up(old.subarray(half), [cap, hkv, hd], d, dev),
                ]
              : [alloc([M, hkv, hd], d, dev), alloc([M, hkv, hd], d, dev)];
            if (!direct) (k.fillBytes(0xff), v.fillBytes(0xff));
            return { q, k, v, qkv, ...(direct ? { kvRows: rows } : {}) };
          };
          const a = outs();
          ops.qkNormRope(a.qkv, wq, wk, pt, p, a, { x, w });
          const b = outs();
          ops.matmul(x, w, { out: b.qkv });
          ops.qkNormRope(b.qkv, wq, wk, pt, p, b);
          const get = (o: typeof a) => hostAll(o.q, o.k, o.v, o.qkv);
          const [one, two] = [await get(a), await get(b)];
          disposeAll(x, w, wq, wk, pt, rows, a.q, a.k, a.v, a.qkv, b.q, b.k, b.v, b.qkv);
          return [Float32Array.of(maxAbsDiff(one, two))];
        },
        reference: () => [Float32Array.of(0)],
        refTol: { kind: "exact", why: "the same kernels' arithmetic, in one op or two" },
        cudaTol: { kind: "exact", why: "the fused GEMV's epilogue runs qk_norm_rope's head code" },
      });
    }

  // geluMul with the projection (gate = matmul(x, w) inside the op, w = [gate; up] rows [2F, K]):
  // equal, bit for bit, to matmul then geluMul on the same device. On CUDA that compares the GEMV
  // whose row groups read gate and up rows in pairs and write gelu_mul's output (matmul_gelu_mul)
  // with the two launches where it applies (M <= 8, bf16 weights M <= 2, dense rows 16-byte
  // aligned, q4_0s / q8_0s); the other shapes and formats check the two-launch fallback.
  // [M, F, K, weight formats]
  const dense = ["f32", "bf16", "fp8_e4m3"] as const;
  const split = ["q4_0s", "q8_0s"] as const;
  const geluShapes: [number, number, number, readonly WFormat[]][] = [
    [1, 1000, 1152, dense], // as the 1B gate/up: bf16 one-shot (rows of one round)
    [1, 37, 1024, dense], // small grid: K split over the warps of a CTA
    [2, 100, 2560, dense], // M = 2, streamed
    [3, 19, 256, dense], // f32 / fp8: GEMV at M = 3; bf16: cuBLAS / GEMM, two launches
    [8, 5, 64, dense],
    [1, 1, 16, ["f32", "bf16"]], // F = 1
    [1, 9, 36, ["bf16"]], // K % 8 != 0: no 16-byte rows, two launches
    [1, 1000, 2560, split], // as the 4B gate/up: x rounded by each CTA, R = 4, U = 3 (q4_0s)
    [1, 37, 320, split], // odd F: the last group's second pair past the end
    [2, 40, 5376, split], // x rounded once (g_qx), R = 2
    [5, 21, 96, split], // M bucket 8, 2-byte-aligned rows
    [1, 16500, 64, split], // N = 33000 > 32768: g_qx at short K
    [1, 2999, 1024, split], // M = 1, R = 4, U = 3: the last group's second pair past the end
    [1, 40, 10240, split], // M = 1 with g_qx (as the 27B gate/up, K > 4096)
    [1, 4501, 256, split], // GEMMA3_Q4S_R5=all: q4_0s R = 5, gate and up in warp pairs (H100)
    [1, 4501, 4096, split], // ... with K in 2 slices; the last pair past the end
    [1, 40, 256, ["q4_0", "q8_0", "q6_k"]], // GGUF blocks, K-quants: two launches
  ];
  for (const xd of ["f32", "bf16"] as const)
    for (const [M, F, K, formats] of geluShapes)
      for (const wd of formats) {
        const data = lazy(() => ({
          x: inDType(randn(M * K, seed), xd),
          ...makeWeight(wd, 2 * F, K, seed + 1),
        }));
        seed += 2;
        cases.push({
          name: `geluMul with the projection == matmul then geluMul, bit for bit (x=${xd} w=${wd} M=${M} F=${F} K=${K})`,
          async run(dev) {
            const d = data();
            const x = up(d.x, [M, K], xd, dev);
            const { wt, st } = uploadWeight(d, wd, 2 * F, K, dev);
            // Outputs poisoned with NaN: an output the op leaves unwritten fails the comparison.
            const outs = () => {
              const gateUp = alloc([M, 2 * F], xd, dev);
              const act = alloc([M, F], xd, dev);
              act.fillBytes(0xff);
              return { gateUp, act };
            };
            const a = outs();
            ops.geluMul(a.gateUp, null, a.act, { x, w: wt, ...(st ? { scale: st } : {}) });
            const b = outs();
            ops.matmul(x, wt, { out: b.gateUp, ...(st ? { scale: st } : {}) });
            ops.geluMul(b.gateUp, null, b.act);
            const [one, two] = [await host(a.act), await host(b.act)];
            disposeAll(x, wt, st, a.gateUp, a.act, b.gateUp, b.act);
            return [Float32Array.of(maxAbsDiff([one], [two]))];
          },
          reference: () => [Float32Array.of(0)],
          refTol: { kind: "exact", why: "the same kernels' arithmetic, in one op or two" },
          cudaTol: {
            kind: "exact",
            why: "the GEMV's epilogue runs gelu_mul's arithmetic on its sums",
          },
        });
      }

  for (const d of ["f32", "bf16"] as const)
    for (const [rows, dim] of [
      [1, 1],
      [3, 19],
      [2, 256],
      [5, 989],
      [1, 2560],
      [7, 2560],
      [2, 5376],
    ] as [number, number][]) {
      const x = inDType(randn(rows * dim, seed++, 2), d);
      const w = inDType(randn(dim, seed++, 0.5), d);
      const wNext = inDType(randn(dim, seed++, 0.5), d);
      const res = inDType(randn(rows * dim, seed++, 4), d);
      const round = roundOf(d);
      const shape = [rows, dim];
      const what = `${d} [${rows}, ${dim}]`;
      // As rmsnormAdd's bound (an inner flip of norm(x), then the sum rounds), for both outputs:
      // the second norm reads the residual, so a flip there moves it by 1 ulp of |h|/rms(h).
      const t: Tol =
        d === "bf16"
          ? {
              kind: "elementwise",
              atol: 2e-2,
              rtol: 2 ** -6,
              why: "rmsnormAdd's inner bf16 flip, then one more bf16 norm of the residual",
            }
          : { kind: "elementwise", atol: 2e-6, rtol: 4e-5, why: "float32 sums of two norms" };
      cases.push({
        name: `rmsnormAddRmsnorm ${what}`,
        async run(dev) {
          const xt = up(x, shape, d, dev);
          const wt = up(w, [dim], d, dev);
          const wn = up(wNext, [dim], d, dev);
          const rt = up(res, shape, d, dev);
          const y = ops.rmsnormAddRmsnorm(xt, wt, rt, wn, eps, alloc(shape, d, dev));
          const out = [await host(rt), await host(y)];
          disposeAll(xt, wt, wn, rt, y);
          return out;
        },
        reference: () => ref.rmsnormAddRmsnorm(x, w, res, wNext, rows, dim, eps, round),
        refTol: t,
        cudaTol: t,
      });
      cases.push({
        name: `rmsnormAddRmsnorm == rmsnormAdd then rmsnorm, bit for bit (${what})`,
        async run(dev) {
          const xt = up(x, shape, d, dev);
          const wt = up(w, [dim], d, dev);
          const wn = up(wNext, [dim], d, dev);
          const r1 = up(res, shape, d, dev);
          const r2 = up(res, shape, d, dev);
          const y1 = ops.rmsnormAddRmsnorm(xt, wt, r1, wn, eps, alloc(shape, d, dev));
          ops.rmsnormAdd(xt, wt, r2, eps);
          const y2 = ops.rmsnorm(r2, wn, eps, alloc(shape, d, dev));
          const diff = maxAbsDiff(
            [await host(r1), await host(y1)],
            [await host(r2), await host(y2)],
          );
          disposeAll(xt, wt, wn, r1, r2, y1, y2);
          return [Float32Array.of(diff)];
        },
        reference: () => [Float32Array.of(0)],
        refTol: { kind: "exact", why: "the same kernels' arithmetic on the same device" },
        cudaTol: { kind: "exact", why: "both backends equal their own two-kernel sequence" },
      });
    }
  return cases;
}

// ---------------------------------------------------------------------------------------------
// decode attention with its prologue (kernels.inc attention_decode_qkv)

/**
 * attentionDecode with the prologue == qkNormRope (into the caches at kvRows) then attentionDecode,
 * bit for bit, on the same device: q, out and both caches. On CUDA that compares the one kernel
 * (q normed and rotated in every CTA, the new row taken from shared memory, split 0 writing q and
 * the rows) with the two launches, under the same split plan; group > 8 checks the fallback.
 * `ring`: each sequence is one page of pageSize slots (a sliding layer's ring, kv_len =
 * min(n, slots)) and its new row is slot position % slots, anywhere in the page; else pages in a
 * scrambled order and the new row is the sequence's last key. kvRows of a sequence listed in
 * `skip` is -1 (no write: both read the row the cache held).
 */
function decodePrologueCase(
  d: FloatDType,
  lens: number[],
  Hq: number,
  Hkv: number,
  D: number,
  pageSize: number,
  o: { ring?: boolean; window?: number; split?: boolean; skip?: number[] },
  seed: number,
): Case {
  const batch = lens.length;
  const { numPages, kvIndptr, kvIndices } = scrambledPages(
    lens.map((l) => (o.ring ? 1 : Math.max(1, Math.ceil(l / pageSize)))),
    seed,
  );
  // A ring sequence of n tokens shows min(n, slots); its new token (position n - 1) is at slot
  // (n - 1) % slots. A paged one shows n, the new token last.
  const kvLen = lens.map((n) => (o.ring ? Math.min(n, pageSize) : n));
  const positions = lens.map((n) => n - 1);
  const kvRows = lens.map((n, b) => {
    if (o.skip?.includes(b)) return -1;
    const page = kvIndices[kvIndptr[b]! + (o.ring ? 0 : Math.floor((n - 1) / pageSize))]!;
    return page * pageSize + ((n - 1) % pageSize);
  });
  const rows = numPages * pageSize;
  const width = (Hq + 2 * Hkv) * D;
  const data = lazy(() => ({
    qkv: inDType(randn(batch * width, seed + 1, 2), d),
    qW: inDType(randn(D, seed + 2, 0.5), d),
    kW: inDType(randn(D, seed + 3, 0.5), d),
    kc: inDType(randn(rows * Hkv * D, seed + 4), d),
    vc: inDType(randn(rows * Hkv * D, seed + 5), d),
  }));
  const rope = { eps: 1e-6, base: 1e6, scale: 8 };
  const smScale = 1 / Math.sqrt(D);
  const maxKv = Math.max(...kvLen);
  const window = o.window ?? 0;
  const what = `${d} lens=${lens.join(",")} Hq=${Hq} Hkv=${Hkv} D=${D} page=${pageSize}${o.ring ? " ring" : ""}${window ? ` window=${window}` : ""}${o.split ? " split" : ""}${o.skip ? " skip" : ""}`;
  return {
    name: `attentionDecode with the prologue == qkNormRope then attentionDecode, bit for bit (${what})`,
    async run(dev) {
      const { qkv, qW, kW, kc, vc } = data();
      const l16: Layout = layout === "packed" ? "packed" : "offset16";
      const x = up(qkv, [batch, width], d, dev, l16);
      const wq = up(qW, [D], d, dev, l16);
      const wk = up(kW, [D], d, dev, l16);
      const pos = up(positions, [batch], "i32", dev);
      const kr = up(kvRows, [batch], "i32", dev);
      const ip = up(kvIndptr, [batch + 1], "i32", dev);
      const ix = up(kvIndices, [kvIndices.length], "i32", dev);
      const ln = up(kvLen, [batch], "i32", dev);
      const paged = [numPages, pageSize, Hkv, D];
      const side = () => {
        const q = alloc([batch, Hq, D], d, dev, l16);
        const out = alloc([batch, Hq, D], d, dev, l16);
        q.fillBytes(0xff); // NaN: an output left unwritten fails the comparison
        out.fillBytes(0xff);
        const floats = o.split ? ops.attentionDecodeWorkspaceFloats(q, maxKv) : 0;
        const ws = floats > 0 ? alloc([floats], "f32", dev) : null;
        ws?.fillBytes(0xff);
        return {
          q,
          out,
          ws,
          k: up(kc, paged, d, dev, l16),
          v: up(vc, paged, d, dev, l16),
        };
      };
      const opts = (a: ReturnType<typeof side>) => ({
        smScale,
        window,
        maxKvLen: maxKv,
        workspace: a.ws,
        out: a.out,
      });
      const a = side();
      ops.attentionDecode(a.q, a.k, a.v, ip, ix, ln, {
        ...opts(a),
        prologue: { qkv: x, qW: wq, kW: wk, positions: pos, kvRows: kr, rope },
      });
      const b = side();
      const asRows = (t: Tensor) => t.view([rows, Hkv, D]);
      ops.qkNormRope(x, wq, wk, pos, rope, { q: b.q, k: asRows(b.k), v: asRows(b.v), kvRows: kr });
      ops.attentionDecode(b.q, b.k, b.v, ip, ix, ln, opts(b));
      const get = (t: typeof a) => hostAll(t.q, t.out, t.k, t.v);
      const [one, two] = [await get(a), await get(b)];
      disposeAll(x, wq, wk, pos, kr, ip, ix, ln, a.q, a.out, a.ws, a.k, a.v);
      disposeAll(b.q, b.out, b.ws, b.k, b.v);
      // Sanity: the rows were written (a no-op prologue on both sides cannot pass).
      const changed = maxAbsDiff([two[2]!], [kc]) > 0 ? 1 : 0;
      return [Float32Array.of(maxAbsDiff(one, two), changed)];
    },
    reference: () => [Float32Array.of(0, kvRows.some((x) => x >= 0) ? 1 : 0)],
    refTol: { kind: "exact", why: "the composition itself on the CPU" },
    cudaTol: { kind: "exact", why: "one kernel runs qk_norm_rope's head code and the same plan" },
  };
}

export function decodePrologueCases(): Case[] {
  const cases: Case[] = [];
  let seed = 6000;
  for (const d of ["f32", "bf16"] as const) {
    const push = (
      lens: number[],
      hq: number,
      hkv: number,
      D: number,
      page: number,
      o: Parameters<typeof decodePrologueCase>[6] = {},
    ) => cases.push(decodePrologueCase(d, lens, hq, hkv, D, page, o, (seed += 10)));
    push([1], 4, 1, 256, 16, { split: true }); // 1B, the first token
    push([37, 300], 4, 1, 256, 16, { split: true }); // 1B, one split and several
    push([600, 100, 512], 4, 1, 256, 512, { ring: true, split: true }); // 1B sliding ring
    push([1000], 8, 4, 256, 16, { split: true }); // 4B, many splits
    push([70, 5, 129], 8, 4, 256, 16, { skip: [1] }); // no workspace; one row not written
    push([260, 3], 32, 16, 128, 16, { split: true }); // 27B's heads
    push([90, 17], 8, 1, 64, 8, { window: 50, split: true, skip: [0] }); // group 8, window
    push([40], 16, 1, 32, 4, { split: true }); // group 16: the two launches
    push([33, 64], 2, 2, 16, 1, { split: true }); // page size 1 (a ring with rollback slots)
  }
  return cases;
}
