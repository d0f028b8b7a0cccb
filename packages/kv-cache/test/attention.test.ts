// Attention through the hybrid cache (CPU ops) against a naive full-cache reference: every
// sequence keeps its whole K/V history in plain arrays and each query attends over all of it
// (global layers) or its last `window` positions (sliding layers), in float64. Three sequences
// share one cache through chunked prefill (chunks crossing the window, longer than it, wrapping
// the ring, mixed with 1-token rows), > 100 decode steps, a fork and rollbacks.
// spans.test.ts imports the harness (scenario, reference) for image-block spans.
import { fileURLToPath } from "node:url";
import { describe as vitestDescribe, expect, it } from "vitest";
import { Tensor, bf16ToF32, f32ToBf16, fp8e4m3ToF32 } from "@gemma3/native";
import { HybridKVCache } from "../src/cache.js";
import { cachedAttention } from "../src/attention.js";
import type { AttentionLayout } from "../src/layout.js";
import type { StepRequest } from "../src/planner.js";
import type { StepPlan } from "../src/types.js";

// This file's suites run only when it is the test file, not when spans.test.ts imports it.
const testPath = expect.getState().testPath;
const describe =
  testPath && testPath !== fileURLToPath(import.meta.url)
    ? ((() => undefined) as unknown as typeof vitestDescribe)
    : vitestDescribe;

export const HQ = 4;
export const HKV = 2;
export const D = 8;
export const WINDOW = 5;
export const layout: AttentionLayout = {
  layerTypes: ["sliding", "full", "sliding"],
  numKeyValueHeads: HKV,
  headDim: D,
  slidingWindow: WINDOW,
};
export const SM = 1 / Math.sqrt(D);

export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Every finite non-negative e4m3 value, ascending (bytes 0x00 … 0x7e; 0x7e = 448).
const E4M3 = Array.from({ length: 0x7f }, (_, b) => fp8e4m3ToF32(b));
/** x rounded to e4m3 (nearest, ties to the even byte, saturating at ±448), as the cast rounds. */
function roundE4m3(x: number): number {
  const a = Math.abs(x);
  if (!(a < 448)) return Math.sign(x) * 448;
  let lo = 0;
  let hi = E4M3.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (E4M3[mid]! <= a) lo = mid;
    else hi = mid;
  }
  const dl = a - E4M3[lo]!;
  const dh = E4M3[hi]! - a;
  const r = dl < dh || (dl === dh && lo % 2 === 0) ? E4M3[lo]! : E4M3[hi]!;
  return x < 0 ? -r : r;
}

/** Per sequence and layer: every K and V row written so far, in position order. */
type History = { k: Float32Array[]; v: Float32Array[] }[];

/**
 * Naive attention of one query row at position p over hist[first..last] (window w > 0: first =
 * p − w + 1, else 0; last = p, or b − 1 for a query in an image block [a, b): the block's later
 * keys are visible too, the window still bounds below).
 */
export function reference(
  q: Float32Array,
  h: { k: Float32Array[]; v: Float32Array[] },
  p: number,
  w: number,
  last = p,
): Float64Array {
  const out = new Float64Array(HQ * D);
  const first = w > 0 ? Math.max(0, p - w + 1) : 0;
  const end = Math.max(p, last);
  for (let hq = 0; hq < HQ; hq++) {
    const hk = Math.floor(hq / (HQ / HKV));
    const s: number[] = [];
    for (let j = first; j <= end; j++) {
      let dot = 0;
      for (let d = 0; d < D; d++) dot += q[hq * D + d]! * h.k[j]![hk * D + d]!;
      s.push(dot * SM);
    }
    const m = Math.max(...s);
    const e = s.map((x) => Math.exp(x - m));
    const z = e.reduce((a, b) => a + b, 0);
    for (let j = first; j <= end; j++)
      for (let d = 0; d < D; d++) out[hq * D + d]! += (e[j - first]! / z) * h.v[j]![hk * D + d]!;
  }
  return out;
}

/** fp8 e4m3 storage with these per-tensor scales (else storage in the compute dtype). */
export type Fp8 = { kScale: number; vScale: number } | undefined;

export function scenario(dtype: "f32" | "bf16", rollback: number, fp8?: Fp8) {
  // bf16: inputs are rounded to bf16 first (the reference sees the same values); the output
  // rounds once to bf16 (8 mantissa bits): |err| ≤ 2^-8·|out|, and |out| ≤ max |v| < 1.
  // fp8: the reference holds what the cache holds, e4m3(round(x · (1/s))) · s (exact in bf16 for
  // these scales), so the tolerances stay those of the compute dtype (|v| ≤ 1.5 with vScale 1.5).
  const tol = (dtype === "f32" ? 2e-6 : 2 ** -8) * (fp8 ? 1.5 : 1);
  const round = dtype === "bf16" ? (x: number) => bf16ToF32(f32ToBf16(x)) : Math.fround;
  const rand = rng(dtype === "f32" ? 1 : 2);
  const cache = new HybridKVCache(layout, {
    maxSeqLen: 160,
    maxSeqs: 3,
    pageSize: 4,
    rollback,
    dtype,
    device: "cpu",
    ...(fp8 ? { kvDtype: "fp8_e4m3" as const, ...fp8 } : {}),
  });
  /** A row as the cache stores it (fp8: scaled in the compute dtype, cast, read back scaled). */
  const stored = (x: Float32Array, s: number) =>
    fp8 ? x.map((e) => Math.fround(roundE4m3(round(e * Math.fround(1 / s))) * s)) : x;
  const hist = new Map<number, History>();
  const fresh = (): History => layout.layerTypes.map(() => ({ k: [], v: [] }));
  let worst = 0;
  let decodeSteps = 0;
  let wraps = 0;

  /** Runs one step through every layer, checks it against the reference; returns its plan. */
  async function step(req: StepRequest[]): Promise<StepPlan> {
    const plan = cache.plan(req);
    const n = plan.numTokens;
    for (let l = 0; l < layout.layerTypes.length; l++) {
      const vals = (rows: number, heads: number) =>
        Float32Array.from({ length: rows * heads * D }, () => round(rand() * 2 - 1));
      const q = vals(n, HQ);
      const k = vals(n, HKV);
      const v = vals(n, HKV);
      const qt = Tensor.from(q, [n, HQ, D], dtype);
      const kt = Tensor.from(k, [n, HKV, D], dtype);
      const vt = Tensor.from(v, [n, HKV, D], dtype);
      const out = cachedAttention(cache.layer(l), plan, qt, kt, vt, { smScale: SM });
      const got = (await out.toArray()) as Float32Array;
      [qt, kt, vt, out].forEach((t) => t.dispose());
      const w = layout.layerTypes[l] === "sliding" ? WINDOW : 0;
      let row = 0;
      for (const { seq, start, count } of plan.seqs) {
        const h = hist.get(seq)![l]!;
        h.k.length = start; // rolled back rows are gone
        h.v.length = start;
        const own: { k: Float32Array[]; v: Float32Array[] } = { k: [], v: [] };
        for (let i = 0; i < count; i++, row++) {
          const kr = k.subarray(row * HKV * D, (row + 1) * HKV * D);
          const vr = v.subarray(row * HKV * D, (row + 1) * HKV * D);
          h.k.push(stored(kr, fp8?.kScale ?? 1));
          h.v.push(stored(vr, fp8?.vScale ?? 1));
          own.k.push(kr);
          own.v.push(vr);
        }
        // A prefill attends to its own chunk's K/V as computed (unquantized); decode reads the new
        // token back from the cache like every other.
        const seen = plan.decode
          ? h
          : { k: [...h.k.slice(0, start), ...own.k], v: [...h.v.slice(0, start), ...own.v] };
        const spans = req.find((st) => st.seq === seq)?.spans ?? [];
        for (let i = 0; i < count; i++) {
          const r = row - count + i;
          const p = start + i;
          const last = (spans.find((x) => x.start <= p && p < x.end)?.end ?? p + 1) - 1;
          const ref = reference(q.subarray(r * HQ * D, (r + 1) * HQ * D), seen, p, w, last);
          for (let x = 0; x < HQ * D; x++) {
            const err = Math.abs(got[r * HQ * D + x]! - ref[x]!);
            worst = Math.max(worst, err);
            if (!(err <= tol))
              throw new Error(
                `seq ${seq} layer ${l} position ${start + i} (${plan.decode ? "decode" : "prefill"}): |${got[r * HQ * D + x]} - ${ref[x]}| > ${tol}`,
              );
          }
        }
      }
    }
    if (plan.decode) decodeSteps++;
    // A step wraps a ring when it writes slot 0 again (a position p > 0 with p % S == 0).
    const S = cache.planner.ringSlots;
    for (const s of plan.seqs)
      if (
        Math.floor((s.start + s.count - 1) / S) > Math.floor((s.start - 1) / S) &&
        s.start + s.count > S
      )
        wraps++;
    cache.commit(plan);
    return plan;
  }

  const add = (maxTokens?: number) => {
    const id = cache.add(maxTokens);
    hist.set(id, fresh());
    return id;
  };
  const fork = (parent: number) => {
    const id = cache.fork(parent);
    hist.set(
      id,
      hist.get(parent)!.map((h) => ({ k: [...h.k], v: [...h.v] })),
    );
    return id;
  };

  return {
    cache,
    add,
    fork,
    step,
    stats: () => ({ worst, decodeSteps, wraps }),
  };
}

// Storage in the compute dtype, and fp8 e4m3 with scales 1 and with scales that are not powers
// of two (0.75: K's values go subnormal in e4m3 below 2^-6 · 0.75).
const storages: [string, Fp8][] = [
  ["", undefined],
  [", fp8 kScale 1 vScale 1", { kScale: 1, vScale: 1 }],
  [", fp8 kScale 0.75 vScale 1.5", { kScale: 0.75, vScale: 1.5 }],
];
for (const dtype of ["f32", "bf16"] as const)
  for (const rollback of [1, 3])
    for (const [label, fp8] of storages)
      describe(`cachedAttention vs a naive full-cache reference (cpu, ${dtype}, rollback ${rollback}${label})`, () => {
        it("chunked prefill, ring wrap, 3 ragged sequences, fork, rollback, 110+ decode steps", async () => {
          const s = scenario(dtype, rollback, fp8);
          const a = s.add();
          const b = s.add(100); // grows past its reservation later: unreserved pages serve it
          await s.step([{ seq: a, count: 3 }]);
          await s.step([
            { seq: a, count: 7 }, // crosses the window, wraps the ring, over cached context
            { seq: b, count: 12 }, // longer than the window on an empty sequence
          ]);
          await s.step([
            { seq: a, count: 1 }, // a 1-token row inside a prefill step
            { seq: b, count: 6 },
          ]);
          await s.step([{ seq: a, count: 12 }]); // longer than the window, over context, wraps
          for (let i = 0; i < 60; i++)
            await s.step([
              { seq: a, count: 1 },
              { seq: b, count: 1 },
            ]);
          const c = s.fork(b); // shares b's pages; b's last page (78 % 4 = 2 tokens) is copied on write
          await s.step([
            { seq: b, count: 9 },
            { seq: c, count: 2 },
          ]);
          for (let i = 0; i < 25; i++)
            await s.step([
              { seq: a, count: 1 },
              { seq: b, count: 1 },
              { seq: c, count: 1 },
            ]);
          // Roll back as far as the ring allows (the reference drops the same rows), then go on.
          s.cache.trim(a, s.cache.length(a) - rollback);
          s.cache.trim(c, s.cache.length(c) - 1);
          expect(() => s.cache.trim(b, s.cache.length(b) - rollback - 1)).toThrow(
            /cannot roll back/,
          );
          for (let i = 0; i < 25; i++)
            await s.step([
              { seq: a, count: 1 },
              { seq: b, count: 1 },
              { seq: c, count: 1 },
            ]);
          await s.step([{ seq: c, count: 7 }]); // a chunk after decoding
          s.cache.free(b);
          await s.step([
            { seq: a, count: 1 },
            { seq: c, count: 1 },
          ]);
          const st = s.stats();
          if (process.env.GEMMA3_KV_VERBOSE) console.log(dtype, rollback, st);
          expect(st.decodeSteps).toBeGreaterThanOrEqual(110);
          expect(st.wraps).toBeGreaterThan(20);
          expect(s.cache.length(a)).toBeGreaterThan(100);
          s.cache.free(a);
          s.cache.free(c);
          expect(s.cache.stats()).toMatchObject({
            freePages: s.cache.planner.numPages,
            sequences: 0,
          });
          s.cache.dispose();
        });
      });

describe("HybridKVCache storage", () => {
  it("allocates what hybridCacheBytes says, rings and pages per layer kind", async () => {
    const { hybridCacheBytes } = await import("../src/estimate.js");
    const cache = new HybridKVCache(layout, {
      maxSeqLen: 40,
      maxSeqs: 2,
      pageSize: 8,
      dtype: "bf16",
    });
    expect(cache.layer(0).rows).toBe(2 * WINDOW);
    expect(cache.layer(1).rows).toBe(2 * 5 * 8);
    expect(cache.bytes).toBe(
      hybridCacheBytes(layout, {
        maxSeqs: 2,
        maxSeqLen: 40,
        pageSize: 8,
        numPages: 10,
        dtype: "bf16",
      }),
    );
    cache.dispose();
  });

  it("snapshot blocks: every sliding layer captures its K/V; a prefix hit restores the ring", async () => {
    const { hybridCacheBytes } = await import("../src/estimate.js");
    // window 5, rollback 1: S = 5; pages of 4; 8 snapshot blocks.
    const o = { maxSeqLen: 40, maxSeqs: 2, pageSize: 4, snapshotBlocks: 8 } as const;
    const cache = new HybridKVCache(layout, { ...o, dtype: "f32", device: "cpu" });
    expect(cache.layer(0).snapshot!.k.shape).toEqual([32, HKV, D]);
    expect(cache.layer(1).snapshot).toBeNull(); // global layers share pages instead
    expect(cache.bytes).toBe(hybridCacheBytes(layout, { ...o, numPages: 20, dtype: "f32" }));
    const rand = rng(7);
    const ids = Array.from({ length: 10 }, (_, i) => 100 + i);
    const a = cache.add();
    const plan = cache.plan([{ seq: a, count: 10, ids }]);
    const rowsOf = (n: number, heads: number) =>
      Float32Array.from({ length: n * heads * D }, () => rand() * 2 - 1);
    const written: Float32Array[] = [];
    for (let l = 0; l < 3; l++) {
      const k = rowsOf(10, HKV);
      written.push(k);
      const t = [Tensor.from(rowsOf(10, HQ), [10, HQ, D]), Tensor.from(k, [10, HKV, D])];
      const out = cachedAttention(cache.layer(l), plan, t[0]!, t[1]!, t[1]!, { smScale: SM });
      [...t, out].forEach((x) => x.dispose());
    }
    cache.commit(plan);
    cache.free(a);
    const b = cache.add(undefined, [...ids, 7]);
    expect(cache.length(b)).toBe(8);
    // Ring rows of positions 3…7 (as many of the last S = 5 as the snapshots hold).
    const ring = cache.planner.ringOf(b) * 5;
    for (const l of [0, 2]) {
      const got = (await cache.layer(l).k.toArray()) as Float32Array;
      const row = HKV * D;
      for (let p = 3; p < 8; p++)
        expect(got.subarray((ring + (p % 5)) * row, (ring + (p % 5) + 1) * row)).toEqual(
          written[l]!.subarray(p * row, (p + 1) * row),
        );
    }
    cache.free(b);
    cache.clearPrefixCache();
    expect(cache.stats()).toMatchObject({ freePages: 20, freeSnapshotBlocks: 8 });
    cache.dispose();
  });

  it("fp8_e4m3 storage: half of bf16's bytes, checked options, scratch it takes", async () => {
    const { hybridCacheBytes } = await import("../src/estimate.js");
    const o = { maxSeqLen: 40, maxSeqs: 2, pageSize: 8 } as const;
    const cache = new HybridKVCache(layout, { ...o, dtype: "bf16", kvDtype: "fp8_e4m3" });
    expect(cache.layer(0).k.dtypeName).toBe("fp8_e4m3");
    expect(cache.bytes).toBe(hybridCacheBytes(layout, { ...o, numPages: 10, dtype: "fp8" }));
    expect(cache.bytes * 2).toBe(hybridCacheBytes(layout, { ...o, numPages: 10, dtype: "bf16" }));
    // One e4m3 buffer of the new tokens' K (then V): 19 · Hkv · D = 304 bytes, arena-aligned.
    expect(cache.attentionScratchBytes(19)).toBe(512);
    cache.dispose();
    const scaled = new HybridKVCache(layout, {
      ...o,
      dtype: "bf16",
      kvDtype: "fp8_e4m3",
      vScale: 3,
    });
    expect(scaled.attentionScratchBytes(19)).toBe(512 + 768); // + the bf16 copy scaled by 1/3
    scaled.dispose();
    const plain = new HybridKVCache(layout, { ...o, dtype: "bf16" });
    expect(plain.attentionScratchBytes(19)).toBe(0);
    plain.dispose();
    expect(() => new HybridKVCache(layout, { ...o, dtype: "bf16", kvDtype: "f32" })).toThrow(
      /kvDtype/,
    );
    expect(() => new HybridKVCache(layout, { ...o, dtype: "bf16", kScale: 2 })).toThrow(
      /fp8_e4m3 storage only/,
    );
    expect(
      () => new HybridKVCache(layout, { ...o, dtype: "f32", kvDtype: "fp8_e4m3", vScale: 0 }),
    ).toThrow(/vScale/);
  });

  it("fp8_e4m3 snapshot blocks: a prefix hit restores the ring's e4m3 bytes unchanged", async () => {
    const o = { maxSeqLen: 40, maxSeqs: 2, pageSize: 4, snapshotBlocks: 8 } as const;
    const kScale = 0.5;
    const cache = new HybridKVCache(layout, {
      ...o,
      dtype: "f32",
      kvDtype: "fp8_e4m3",
      kScale,
      device: "cpu",
    });
    const rand = rng(8);
    const ids = Array.from({ length: 10 }, (_, i) => 200 + i);
    const a = cache.add();
    const plan = cache.plan([{ seq: a, count: 10, ids }]);
    const rowsOf = (n: number, heads: number) =>
      Float32Array.from({ length: n * heads * D }, () => rand() * 2 - 1);
    const written: Float32Array[] = [];
    for (let l = 0; l < 3; l++) {
      const k = rowsOf(10, HKV);
      written.push(k.map((x) => roundE4m3(Math.fround(x * (1 / kScale))))); // the stored e4m3
      const t = [Tensor.from(rowsOf(10, HQ), [10, HQ, D]), Tensor.from(k, [10, HKV, D])];
      const out = cachedAttention(cache.layer(l), plan, t[0]!, t[1]!, t[1]!, { smScale: SM });
      [...t, out].forEach((x) => x.dispose());
    }
    cache.commit(plan);
    cache.free(a);
    const b = cache.add(undefined, [...ids, 7]);
    expect(cache.length(b)).toBe(8);
    const ring = cache.planner.ringOf(b) * 5;
    for (const l of [0, 2]) {
      const got = (await cache.layer(l).k.toArray()) as Float32Array; // e4m3 values, unscaled
      const row = HKV * D;
      for (let p = 3; p < 8; p++)
        expect(got.subarray((ring + (p % 5)) * row, (ring + (p % 5) + 1) * row)).toEqual(
          written[l]!.subarray(p * row, (p + 1) * row),
        );
    }
    cache.free(b);
    cache.dispose();
  });

  it("decode plans view the same device rows every step (graph-replayable)", () => {
    const cache = new HybridKVCache(layout, { maxSeqLen: 40, maxSeqs: 2, dtype: "f32" });
    const a = cache.add();
    cache.commit(cache.plan([{ seq: a, count: 9 }]));
    const at = (t: Tensor) => [t.byteOffset, t.numel];
    const p1 = cache.plan([{ seq: a, count: 1 }]);
    const v1 = [
      p1.positions,
      p1.ring.writeRows,
      p1.global.decode!.kvIndices,
      p1.global.decode!.kvLen,
    ].map(at);
    cache.commit(p1);
    const p2 = cache.plan([{ seq: a, count: 1 }]);
    expect(
      [p2.positions, p2.ring.writeRows, p2.global.decode!.kvIndices, p2.global.decode!.kvLen].map(
        at,
      ),
    ).toEqual(v1);
    cache.dispose();
  });
});
