// cachedAttention's prologue (ops.attentionDecode with its prologue; kernels.inc
// attention_decode_qkv) through the cache's own decode plans, on the CPU: q, the output and the
// cache storage equal, bit for bit, those of qkNormRope into the rows directKvWrite names followed
// by cachedAttention with `stored: true` (the path the model's decode took before session 10), on
// sliding (ring) and global layers, two sequences, decode steps past the ring's wrap. And the
// guard: a prefill plan refuses a prologue.
import { describe, expect, it } from "vitest";
import { Tensor, ops } from "@gemma3/native";
import { HybridKVCache } from "../src/cache.js";
import { cachedAttention, directKvWrite } from "../src/attention.js";
import type { AttentionLayout } from "../src/layout.js";
import type { StepRequest } from "../src/planner.js";
import { rng } from "./attention.test.js";

const HQ = 4;
const HKV = 2;
const D = 8;
const layout: AttentionLayout = {
  layerTypes: ["sliding", "full"],
  numKeyValueHeads: HKV,
  headDim: D,
  slidingWindow: 5,
};
const SM = 1 / Math.sqrt(D);
const ROPE = { eps: 1e-6, base: 1e4, scale: 1 };
const WIDTH = (HQ + 2 * HKV) * D;

const newCache = () =>
  new HybridKVCache(layout, {
    maxSeqLen: 48,
    maxSeqs: 2,
    pageSize: 4,
    dtype: "f32",
    device: "cpu",
  });

describe("cachedAttention with the prologue (cpu, f32)", () => {
  it("equals qkNormRope into the direct rows then cachedAttention, bit for bit, over 12 decode steps", async () => {
    const rand = rng(77);
    const vals = (n: number, scale = 1) =>
      Float32Array.from({ length: n }, () => Math.fround((rand() * 2 - 1) * scale));
    const qW = Tensor.from(vals(D, 0.5), [D], "f32");
    const kW = Tensor.from(vals(D, 0.5), [D], "f32");
    const [one, two] = [newCache(), newCache()];
    const seqs = [one.add(), one.add()];
    expect([two.add(), two.add()]).toEqual(seqs);

    // Prefill both sequences the same way in both caches (no prologue: a prefill plan).
    const fill: StepRequest[] = [
      { seq: seqs[0]!, count: 7 },
      { seq: seqs[1]!, count: 2 },
    ];
    const k0 = vals(9 * HKV * D);
    const v0 = vals(9 * HKV * D);
    for (const c of [one, two]) {
      const plan = c.plan(fill);
      for (let l = 0; l < layout.layerTypes.length; l++) {
        const q = Tensor.from(vals(9 * HQ * D), [9, HQ, D], "f32");
        const k = Tensor.from(k0, [9, HKV, D], "f32");
        const v = Tensor.from(v0, [9, HKV, D], "f32");
        cachedAttention(c.layer(l), plan, q, k, v, { smScale: SM }).dispose();
        [q, k, v].forEach((t) => t.dispose());
      }
      c.commit(plan);
    }

    let compared = 0;
    for (let step = 0; step < 12; step++) {
      const req = seqs.map((seq) => ({ seq, count: 1 }));
      const [pa, pb] = [one.plan(req), two.plan(req)];
      expect(pa.decode && pb.decode).toBe(true);
      for (let l = 0; l < layout.layerTypes.length; l++) {
        const qkv = Tensor.from(vals(2 * WIDTH, 2), [2, WIDTH], "f32");
        const unused = Tensor.empty([2, HKV, D], "f32");
        // One op: the attention makes q and the new rows itself.
        const qa = Tensor.empty([2, HQ, D], "f32");
        const prologue = { qkv, qW, kW, positions: pa.positions, rope: ROPE };
        const oa = cachedAttention(one.layer(l), pa, qa, unused, unused, {
          smScale: SM,
          stored: true,
          prologue,
        });
        // Two: qkNormRope into the rows the cache names, then the attention over stored rows.
        const direct = directKvWrite(two.layer(l), pb, "f32")!;
        const qb = Tensor.empty([2, HQ, D], "f32");
        const out = { q: qb, k: direct.k, v: direct.v, kvRows: direct.rows };
        ops.qkNormRope(qkv, qW, kW, pb.positions, ROPE, out);
        const ob = cachedAttention(two.layer(l), pb, qb, unused, unused, {
          smScale: SM,
          stored: true,
        });
        const [a, b, qaa, qbb] = await Promise.all([oa, ob, qa, qb].map((t) => t.toArray()));
        expect(Array.from(a!)).toEqual(Array.from(b!));
        expect(Array.from(qaa!)).toEqual(Array.from(qbb!));
        expect(Array.from(a!).every(Number.isFinite)).toBe(true);
        [qkv, unused, qa, qb, oa, ob].forEach((t) => t.dispose());
        compared++;
      }
      one.commit(pa);
      two.commit(pb);
    }
    expect(compared).toBe(24);
    // The storage: every row the two paths wrote is the same.
    for (let l = 0; l < layout.layerTypes.length; l++)
      for (const part of ["k", "v"] as const) {
        const [a, b] = await Promise.all([
          one.layer(l)[part].toArray(),
          two.layer(l)[part].toArray(),
        ]);
        expect(Array.from(a)).toEqual(Array.from(b));
      }
    [qW, kW].forEach((t) => t.dispose());
  });

  it("refuses a prologue on a prefill plan", () => {
    const c = newCache();
    const seq = c.add();
    const plan = c.plan([{ seq, count: 3 }]);
    const t = (shape: number[]) => Tensor.empty(shape, "f32");
    const [qkv, w, q, k] = [t([3, WIDTH]), t([D]), t([3, HQ, D]), t([3, HKV, D])];
    const prologue = { qkv, qW: w, kW: w, positions: plan.positions, rope: ROPE };
    expect(() => cachedAttention(c.layer(0), plan, q, k, k, { smScale: SM, prologue })).toThrow(
      /a prologue needs a decode step with a direct K\/V write/,
    );
    [qkv, w, q, k].forEach((x) => x.dispose());
  });
});
