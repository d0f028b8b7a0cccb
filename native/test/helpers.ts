// Test helpers: seeded random data, poisoned outputs, and error metrics with stated tolerances.
import { expect } from "vitest";
import { cudaAvailable } from "../src/index.js";

/** Mulberry32: small, seedable, good enough for test data. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n values ~ N(0, std²) (Box–Muller). */
export function randn(n: number, seed: number, std = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(r(), 1e-12);
    out[i] = std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * r());
  }
  return out;
}

/** ‖a − b‖ / ‖b‖ (NaN anywhere → Infinity, so NaN never passes). */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (Number.isNaN(x) || Number.isNaN(y)) return Infinity;
    num += (x - y) ** 2;
    den += y * y;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** Elementwise |a − b| <= atol + rtol·|b| (llm.c style); reports the worst element. */
export function expectClose(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  atol: number,
  rtol: number,
  what = "",
): void {
  expect(a.length, `${what} length`).toBe(b.length);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    const excess = Math.abs(x - y) - (atol + rtol * Math.abs(y));
    if (Number.isNaN(x) !== Number.isNaN(y) || excess > worstExcess) {
      worst = i;
      worstExcess = Number.isNaN(excess) ? Infinity : excess;
      if (Number.isNaN(x) !== Number.isNaN(y)) break;
    }
  }
  if (worst >= 0) {
    expect.fail(
      `${what}: element ${worst} is ${a[worst]} vs reference ${b[worst]} (atol ${atol}, rtol ${rtol})`,
    );
  }
}

/** Whether CUDA tests run here; GEMMA3_TEST_CUDA=1 turns a missing GPU into a failure. */
export function cudaTestsEnabled(): boolean {
  const have = cudaAvailable();
  if (!have && process.env.GEMMA3_TEST_CUDA === "1")
    throw new Error("GEMMA3_TEST_CUDA=1 but no CUDA device is available to this build");
  return have;
}

/** Awkward sizes that make remainder paths run (STYLE 8). */
export const AWKWARD = [1, 19, 99, 989] as const;
