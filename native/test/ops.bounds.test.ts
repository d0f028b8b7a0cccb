// Bounds regressions (kernels.inc, "Bounds" of attention_prefill / attention_decode / copy_rows):
// hostile index data must never make a kernel touch memory outside its tensors. The CPU reads the
// indices on the host, so it reports bad indptr / dst rows as typed errors at synchronize; CUDA
// cannot report from the device, so it clamps indptr and skips bad pages / rows. Either way the
// process keeps working: each case ends with a normal op that must give the right answer.
import { describe, expect, it } from "vitest";
import {
  Device,
  InvalidArgumentError,
  OutOfRangeError,
  Tensor,
  UnsupportedError,
  ops,
} from "../src/index.js";
import type { FloatDType, Tol } from "./cases.js";
import { expectOutputs } from "./compare.js";
import { cudaTestsEnabled, randn, rng } from "./helpers.js";
import * as ref from "./reference.js";

const DEVICES = ["cpu", ...(cudaTestsEnabled() ? ["cuda"] : [])];
const I32_MAX = 2147483647;
const I32_MIN = -2147483648;

const roundOf = (d: FloatDType): ref.Round => (d === "bf16" ? ref.roundBf16 : ref.roundF32);
const inDType = (x: Float32Array, d: FloatDType): Float32Array => Float32Array.from(x, roundOf(d));

// f32 keeps the CUDA scalar paths (prefill: one warp per row); bf16 with D = 64 takes the prefill
// tensor-core path. Tolerances are those of the op cases (cases.ts) against the TS reference.
const CONFIGS: { d: FloatDType; D: number }[] = [
  { d: "f32", D: 16 },
  { d: "bf16", D: 64 },
];
const TOL: Record<FloatDType, Tol> = {
  f32: { kind: "elementwise", atol: 2e-5, rtol: 1e-4, why: "float32 softmax in a different order" },
  bf16: { kind: "norm", rel: 1e-2, why: "bf16 output; CUDA rounds P to bf16 before P·V" },
};

/** Runs `launch` on `dev`, waits for the device (rejecting with its deferred error), reads `out`. */
async function runOn(
  dev: string,
  out: Tensor,
  owned: Tensor[],
  launch: () => void,
): Promise<Float32Array> {
  try {
    launch();
    await Device.of(dev).synchronize();
    return (await out.toArray()) as Float32Array;
  } finally {
    for (const t of owned) t.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// attention_prefill: q/out [6, 2, D], k/v [8, 1, D]; valid batch qo [0, 3, 6], kv [0, 4, 8].

const TOTAL_Q = 6;
const TOTAL_KV = 8;
const HQ = 2;
const HKV = 1;
const QO_OK = [0, 3, 6];
const KV_OK = [0, 4, 8];

function prefillFixture(d: FloatDType, D: number, seed: number) {
  return {
    d,
    D,
    q: inDType(randn(TOTAL_Q * HQ * D, seed), d),
    k: inDType(randn(TOTAL_KV * HKV * D, seed + 1), d),
    v: inDType(randn(TOTAL_KV * HKV * D, seed + 2), d),
  };
}
type PrefillFixture = ReturnType<typeof prefillFixture>;

function prefillOn(
  dev: string,
  f: PrefillFixture,
  qo: number[],
  kv: number[],
  kvLast?: number[],
): Promise<Float32Array> {
  const batch = qo.length - 1;
  const q = Tensor.from(f.q, [TOTAL_Q, HQ, f.D], f.d, dev);
  const k = Tensor.from(f.k, [TOTAL_KV, HKV, f.D], f.d, dev);
  const v = Tensor.from(f.v, [TOTAL_KV, HKV, f.D], f.d, dev);
  const qi = Tensor.from(qo, [batch + 1], "i32", dev);
  const ki = Tensor.from(kv, [batch + 1], "i32", dev);
  const kl = kvLast ? Tensor.from(kvLast, [TOTAL_Q], "i32", dev) : null;
  const out = Tensor.empty([TOTAL_Q, HQ, f.D], f.d, dev);
  out.fillBytes(0xff); // NaN: rows no sequence owns must stay untouched
  const owned = [q, k, v, qi, ki, out, ...(kl ? [kl] : [])];
  return runOn(dev, out, owned, () =>
    ops.attentionPrefill(q, k, v, qi, ki, { smScale: 1 / Math.sqrt(f.D), kvLast: kl, out }),
  );
}

/** The reference over a well-formed batch; rows outside [qo[0], qo[batch]) stay NaN. */
function prefillRef(
  f: PrefillFixture,
  qo: number[],
  kv: number[],
  kvLast?: number[],
): Float32Array {
  const rows = ref.attentionPrefill({
    q: f.q,
    k: f.k,
    v: f.v,
    qoIndptr: qo,
    kvIndptr: kv,
    kvLast: kvLast ?? null,
    batch: qo.length - 1,
    numQoHeads: HQ,
    numKvHeads: HKV,
    headDim: f.D,
    ldQ: HQ * f.D,
    ldK: HKV * f.D,
    ldV: HKV * f.D,
    smScale: 1 / Math.sqrt(f.D),
    window: 0,
    causal: true,
    round: roundOf(f.d),
  });
  const out = new Float32Array(TOTAL_Q * HQ * f.D).fill(NaN);
  out.set(rows, qo[0]! * HQ * f.D);
  return out;
}

/** A well-formed prefill after a hostile one: the device still computes the right answer. */
async function expectPrefillWorks(dev: string, f: PrefillFixture): Promise<void> {
  expectOutputs(
    [await prefillOn(dev, f, QO_OK, KV_OK)],
    [prefillRef(f, QO_OK, KV_OK)],
    TOL[f.d],
    `${dev} prefill after hostile input`,
  );
}

// Hostile indptr: what the CPU must reject, and what CUDA's clamped batch is equivalent to.
const PREFILL_HOSTILE: {
  name: string;
  qo: number[];
  kv: number[];
  cpuError: RegExp;
  cuda: { qo: number[]; kv: number[] };
}[] = [
  {
    name: "qo_indptr past total_q",
    qo: [0, 3, 100],
    kv: KV_OK,
    cpuError: /qo_indptr\[2\] = 100 exceeds total_q=6/,
    cuda: { qo: QO_OK, kv: KV_OK },
  },
  {
    name: "qo_indptr at INT32_MAX",
    qo: [0, 3, I32_MAX],
    kv: KV_OK,
    cpuError: /exceeds total_q/,
    cuda: { qo: QO_OK, kv: KV_OK },
  },
  {
    name: "kv_indptr past total_kv",
    qo: QO_OK,
    kv: [0, 4, 1000],
    cpuError: /kv_indptr\[2\] = 1000 exceeds total_kv=8/,
    cuda: { qo: QO_OK, kv: KV_OK },
  },
  {
    name: "negative indptr entries",
    qo: [-5, 3, 6],
    kv: [I32_MIN, 4, 8],
    cpuError: /qo_indptr\[0\] = -5 < 0/,
    cuda: { qo: QO_OK, kv: KV_OK },
  },
  // Sequence 1's queries [5, 2) are inverted: it contributes nothing, so row 5 stays NaN.
  {
    name: "decreasing qo_indptr",
    qo: [0, 5, 2],
    kv: KV_OK,
    cpuError: /qo_indptr decreases at b=1/,
    cuda: { qo: [0, 5], kv: [0, 4] },
  },
  // Sequence 1's keys [8, 4) are inverted: its queries see no key and get zeros.
  {
    name: "decreasing kv_indptr",
    qo: QO_OK,
    kv: [0, 8, 4],
    cpuError: /kv_indptr decreases at b=1/,
    cuda: { qo: QO_OK, kv: [0, 8, 8] },
  },
];

// ---------------------------------------------------------------------------------------------
// attention_decode: caches [12 pages, 16, 1, D]; seq 0 has 7 pages (100 tokens), seq 1 has 3 (37);
// pages handed out scrambled. The cache capacity (192) is the default max_kv_len, so CUDA splits KV.

const PAGE = 16;
const NUM_PAGES = 12;
const LENS_OK = [100, 37];
const INDPTR_OK = [0, 7, 10];

function decodeFixture(d: FloatDType, D: number, seed: number) {
  const order = Array.from({ length: NUM_PAGES }, (_, i) => i);
  const r = rng(seed);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const cacheElems = NUM_PAGES * PAGE * HKV * D;
  return {
    d,
    D,
    indices: order.slice(0, 10),
    q: inDType(randn(2 * HQ * D, seed + 1), d),
    kc: inDType(randn(cacheElems, seed + 2), d),
    vc: inDType(randn(cacheElems, seed + 3), d),
  };
}
type DecodeFixture = ReturnType<typeof decodeFixture>;

function decodeOn(
  dev: string,
  f: DecodeFixture,
  indptr: number[],
  indices: number[],
  lens: number[],
): Promise<Float32Array> {
  const q = Tensor.from(f.q, [2, HQ, f.D], f.d, dev);
  const kc = Tensor.from(f.kc, [NUM_PAGES, PAGE, HKV, f.D], f.d, dev);
  const vc = Tensor.from(f.vc, [NUM_PAGES, PAGE, HKV, f.D], f.d, dev);
  const ip = Tensor.from(indptr, [3], "i32", dev);
  const ix = Tensor.from(indices, [indices.length], "i32", dev);
  const ln = Tensor.from(lens, [2], "i32", dev);
  const wsFloats = ops.attentionDecodeWorkspaceFloats(q, NUM_PAGES * PAGE);
  const ws = wsFloats > 0 ? Tensor.empty([wsFloats], "f32", dev) : null;
  const out = Tensor.empty([2, HQ, f.D], f.d, dev);
  out.fillBytes(0xff);
  const owned = [q, kc, vc, ip, ix, ln, out, ...(ws ? [ws] : [])];
  return runOn(dev, out, owned, () =>
    ops.attentionDecode(q, kc, vc, ip, ix, ln, { smScale: 1 / Math.sqrt(f.D), workspace: ws, out }),
  );
}

/** The reference over the well-formed page table with these lengths (0 gives zeros). */
function decodeRef(f: DecodeFixture, lens: number[]): Float32Array {
  return ref.attentionDecode({
    q: f.q,
    kCache: f.kc,
    vCache: f.vc,
    kvIndptr: INDPTR_OK,
    kvIndices: f.indices,
    kvLen: lens,
    batch: 2,
    numQoHeads: HQ,
    numKvHeads: HKV,
    headDim: f.D,
    pageSize: PAGE,
    smScale: 1 / Math.sqrt(f.D),
    window: 0,
    round: roundOf(f.d),
  });
}

async function expectDecodeWorks(dev: string, f: DecodeFixture): Promise<void> {
  expectOutputs(
    [await decodeOn(dev, f, INDPTR_OK, f.indices, LENS_OK)],
    [decodeRef(f, LENS_OK)],
    TOL[f.d],
    `${dev} decode after hostile input`,
  );
}

/** The page table with the last page of each sequence replaced (a masked page drops its slots). */
function withLastPages(f: DecodeFixture, seq0: number, seq1: number): number[] {
  const ix = f.indices.slice();
  ix[6] = seq0;
  ix[9] = seq1;
  return ix;
}

// ---------------------------------------------------------------------------------------------

for (const dev of DEVICES) {
  const cpu = dev === "cpu";

  describe(`bounds of attention_prefill on ${dev}`, () => {
    for (const { d, D } of CONFIGS) {
      const f = prefillFixture(d, D, 7000 + D);
      for (const h of PREFILL_HOSTILE) {
        it(`${d} D=${D}: ${h.name} ${cpu ? "is rejected" : "is clamped"}`, async () => {
          if (cpu) {
            const err: unknown = await prefillOn(dev, f, h.qo, h.kv).catch((e: unknown) => e);
            expect(err).toBeInstanceOf(InvalidArgumentError);
            expect((err as Error).message).toMatch(h.cpuError);
          } else {
            const got = await prefillOn(dev, f, h.qo, h.kv);
            expectOutputs(
              [got],
              [prefillRef(f, h.cuda.qo, h.cuda.kv)],
              TOL[d],
              `${dev} prefill ${h.name}`,
            );
          }
          await expectPrefillWorks(dev, f);
        });
      }

      it(`${d} D=${D}: kv_last far outside the sequence only widens the visible prefix`, async () => {
        const kvLast = [I32_MAX, I32_MIN, 1_000_000, -1, I32_MAX, 5];
        const got = await prefillOn(dev, f, QO_OK, KV_OK, kvLast);
        expectOutputs(
          [got],
          [prefillRef(f, QO_OK, KV_OK, kvLast)],
          TOL[d],
          `${dev} prefill kv_last`,
        );
        await expectPrefillWorks(dev, f);
      });
    }
  });

  describe(`bounds of attention_decode on ${dev}`, () => {
    for (const { d, D } of CONFIGS) {
      const f = decodeFixture(d, D, 8000 + D);

      // Masked last pages leave seq 0 with 6 full pages (96 tokens) and seq 1 with 2 (32).
      for (const [name, p0, p1] of [
        ["page indices >= num_pages", NUM_PAGES, I32_MAX],
        ["negative page indices", -1, I32_MIN],
      ] as const) {
        it(`${d} D=${D}: ${name} are masked`, async () => {
          const got = await decodeOn(dev, f, INDPTR_OK, withLastPages(f, p0, p1), LENS_OK);
          expectOutputs([got], [decodeRef(f, [96, 32])], TOL[d], `${dev} decode ${name}`);
          await expectDecodeWorks(dev, f);
        });
      }

      // What the CPU must reject, and the lengths CUDA's clamped page table is equivalent to.
      for (const h of [
        {
          name: "kv_indptr past kv_indices",
          indptr: [0, 7, 50],
          cpuError: /kv_indptr\[2\] = 50 exceeds num_indices=10/,
          lens: LENS_OK,
        },
        {
          name: "kv_indptr at INT32_MAX",
          indptr: [0, 7, I32_MAX],
          cpuError: /exceeds num_indices/,
          lens: LENS_OK,
        },
        {
          name: "negative kv_indptr",
          indptr: [-3, 7, 10],
          cpuError: /kv_indptr\[0\] = -3 < 0/,
          lens: LENS_OK,
        },
        // Seq 0 keeps its 7 pages (of 9); seq 1's range [9, 7) is inverted: it sees no key.
        {
          name: "decreasing kv_indptr",
          indptr: [0, 9, 7],
          cpuError: /kv_indptr decreases at b=1/,
          lens: [100, 0],
        },
      ]) {
        it(`${d} D=${D}: ${h.name} ${cpu ? "is rejected" : "is clamped"}`, async () => {
          if (cpu) {
            const err: unknown = await decodeOn(dev, f, h.indptr, f.indices, LENS_OK).catch(
              (e: unknown) => e,
            );
            expect(err).toBeInstanceOf(InvalidArgumentError);
            expect((err as Error).message).toMatch(h.cpuError);
          } else {
            const got = await decodeOn(dev, f, h.indptr, f.indices, LENS_OK);
            expectOutputs([got], [decodeRef(f, h.lens)], TOL[d], `${dev} decode ${h.name}`);
          }
          await expectDecodeWorks(dev, f);
        });
      }

      it(`${d} D=${D}: kv_len outside [0, pages * page_size] is clamped`, async () => {
        const got = await decodeOn(dev, f, INDPTR_OK, f.indices, [I32_MAX, -5]);
        expectOutputs([got], [decodeRef(f, [7 * PAGE, 0])], TOL[d], `${dev} decode kv_len`);
        await expectDecodeWorks(dev, f);
      });
    }
  });

  describe(`bounds of qk_norm_rope kv_rows on ${dev}`, () => {
    // head_dim 16: with the projection, CUDA's one-launch GEMV (whose epilogue writes the rows).
    const [T, Hq, Hkv, D, K] = [3, 2, 1, 16, 40];
    const width = (Hq + 2 * Hkv) * D;
    const qkv = randn(T * width, 9101);
    const cache0 = randn(5 * Hkv * D, 9102);
    const row = (a: Float32Array, r: number) => Array.from(a.subarray(r * D, r * D + D));
    const p = { eps: 1e-6, base: 1e4 };

    for (const proj of [false, true])
      for (const bad of [5, I32_MAX]) {
        const how = proj ? " (with the projection)" : "";
        it(`kv_rows ${bad} >= capacity 5 ${cpu ? "is rejected" : "is skipped"}${how}`, async () => {
          // With the projection, qkv = xin · wp inside the op (x is then its output).
          const xin = Tensor.from(randn(T * K, 9104), [T, K], "f32", dev);
          const wp = Tensor.from(randn(width * K, 9105, 0.2), [width, K], "f32", dev);
          const pj = proj ? { x: xin, w: wp } : undefined;
          const x = Tensor.from(qkv, [T, width], "f32", dev);
          const w = Tensor.from(randn(D, 9103, 0.5), [D], "f32", dev);
          const pos = Tensor.from([0, 7, 9], [T], "i32", dev);
          const q = Tensor.empty([T, Hq, D], "f32", dev);
          const kc = Tensor.from(cache0, [5, Hkv, D], "f32", dev);
          const vc = Tensor.from(cache0, [5, Hkv, D], "f32", dev);
          const rows = Tensor.from([1, bad, 3], [T], "i32", dev);
          ops.qkNormRope(x, w, w, pos, p, { q, k: kc, v: vc, kvRows: rows }, pj);
          if (cpu) {
            await expect(Device.cpu.synchronize()).rejects.toThrow(OutOfRangeError);
            // Every index is checked before anything is written.
            expect(Array.from(await kc.toArray())).toEqual(Array.from(cache0));
            expect(Array.from(await vc.toArray())).toEqual(Array.from(cache0));
          } else {
            // The op's own k/v rows, from the form without kv_rows.
            const k = Tensor.empty([T, Hkv, D], "f32", dev);
            const v = Tensor.empty([T, Hkv, D], "f32", dev);
            const q2 = Tensor.empty([T, Hq, D], "f32", dev);
            ops.qkNormRope(x, w, w, pos, p, { q: q2, k, v }, pj);
            const [gk, gv, wk, wv] = (await Promise.all(
              [kc, vc, k, v].map((t) => t.toArray()),
            )) as Float32Array[];
            for (const [got, want] of [
              [gk!, wk!],
              [gv!, wv!],
            ] as const) {
              expect(row(got, 1)).toEqual(row(want, 0));
              expect(row(got, 3)).toEqual(row(want, 2));
              for (const r of [0, 2, 4]) expect(row(got, r)).toEqual(row(cache0, r));
            }
            for (const t of [k, v, q2]) t.dispose();
          }
          for (const t of [x, w, pos, q, kc, vc, rows, xin, wp]) t.dispose();
        });
      }

    it("a projection of the wrong shape is refused before anything runs", () => {
      const x = Tensor.from(qkv, [T, width], "f32", dev);
      const w = Tensor.from(randn(D, 9103, 0.5), [D], "f32", dev);
      const pos = Tensor.from([0, 7, 9], [T], "i32", dev);
      const q = Tensor.empty([T, Hq, D], "f32", dev);
      const k = Tensor.empty([T, Hkv, D], "f32", dev);
      const xin = Tensor.from(randn(T * K, 9104), [T, K], "f32", dev);
      const wBad = Tensor.empty([width + 1, K], "f32", dev);
      expect(() => ops.qkNormRope(x, w, w, pos, p, { q, k }, { x: xin, w: wBad })).toThrow(
        /qk_norm_rope: .*must be \[3, K\] and \[64, K\]/,
      );
      for (const t of [x, w, pos, q, k, xin, wBad]) t.dispose();
    });
  });

  describe(`bounds of gelu_mul's projection on ${dev}`, () => {
    // x [2, 64], w [2F = 10, 64]: gate [2, 10] (matmul's output), out [2, 5].
    const make = () => ({
      x: Tensor.from(randn(2 * 64, 9301), [2, 64], "f32", dev),
      w: Tensor.from(randn(10 * 64, 9302, 0.1), [10, 64], "f32", dev),
      gate: Tensor.empty([2, 10], "f32", dev),
      out: Tensor.from(new Float32Array(10).fill(7), [2, 5], "f32", dev),
    });
    const refused: [string, (t: ReturnType<typeof make>) => void, RegExp][] = [
      [
        "a projection with separate gate and up",
        (t) => ops.geluMul(t.gate.view([2, 10]), t.gate, t.out, { x: t.x, w: t.w }),
        /gelu_mul: the projection needs x, w and the fused form/,
      ],
      [
        "w rows that are not gate's 2F",
        (t) => ops.geluMul(t.gate, null, t.out, { x: t.x, w: t.w.view([5, 128]) }),
        /gelu_mul: .*disagree on K|gelu_mul: .*must be x's leading dims/,
      ],
      [
        "out overlapping gate",
        (t) => ops.geluMul(t.gate, null, t.gate.view([4, 5]).slice(1, 3), { x: t.x, w: t.w }),
        /gelu_mul: x, gate \(matmul's output\) and out must not overlap/,
      ],
      [
        "out overlapping x",
        (t) => ops.geluMul(t.gate, null, Tensor.viewAt(t.x, 0, [2, 5], "f32"), { x: t.x, w: t.w }),
        /gelu_mul: x, gate \(matmul's output\) and out must not overlap/,
      ],
      [
        "fp8 weights without a scale",
        (t) => {
          const w8 = ops.quantize(t.w, "fp8_e4m3");
          try {
            ops.geluMul(t.gate, null, t.out, { x: t.x, w: w8.data });
          } finally {
            w8.data.dispose();
            w8.scale?.dispose();
          }
        },
        /gelu_mul: fp8_e4m3 weights need a scale/,
      ],
    ];
    for (const [what, call, msg] of refused)
      it(`${what} is refused and nothing is written`, async () => {
        const t = make();
        expect(() => call(t)).toThrow(msg);
        expect(Array.from(await t.out.toArray())).toEqual(new Array(10).fill(7));
        for (const u of Object.values(t)) u.dispose();
      });
  });

  describe(`bounds of attention_decode's prologue on ${dev}`, () => {
    // batch 2, Hq 2, Hkv 1, D 16, 3 pages of 4 slots: qkv [2, 64], caches [3, 4, 1, 16].
    const [B, Hq, Hkv, D, P, S] = [2, 2, 1, 16, 3, 4];
    const width = (Hq + 2 * Hkv) * D;
    const cache0 = randn(P * S * Hkv * D, 9401);
    const make = (kvDtype: "f32" | "fp8_e4m3" = "f32") => ({
      qkv: Tensor.from(randn(B * width, 9402), [B, width], "f32", dev),
      w: Tensor.from(randn(D, 9403, 0.5), [D], "f32", dev),
      pos: Tensor.from([2, 5], [B], "i32", dev),
      rows: Tensor.from([2, 9], [B], "i32", dev),
      q: Tensor.empty([B, Hq, D], "f32", dev),
      kc:
        kvDtype === "f32"
          ? Tensor.from(cache0, [P, S, Hkv, D], "f32", dev)
          : Tensor.empty([P, S, Hkv, D], kvDtype, dev),
      vc:
        kvDtype === "f32"
          ? Tensor.from(cache0, [P, S, Hkv, D], "f32", dev)
          : Tensor.empty([P, S, Hkv, D], kvDtype, dev),
      ip: Tensor.from([0, 1, 3], [B + 1], "i32", dev),
      ix: Tensor.from([0, 1, 2], [3], "i32", dev),
      ln: Tensor.from([3, 6], [B], "i32", dev),
      out: Tensor.from(new Float32Array(B * Hq * D).fill(7), [B, Hq, D], "f32", dev),
    });
    type T = ReturnType<typeof make>;
    const run = (t: T, over: Partial<T> = {}) => {
      const u = { ...t, ...over };
      const rope = { eps: 1e-6, base: 1e4 };
      const prologue = { qkv: u.qkv, qW: u.w, kW: u.w, positions: u.pos, kvRows: u.rows, rope };
      ops.attentionDecode(u.q, u.kc, u.vc, u.ip, u.ix, u.ln, {
        smScale: 0.25,
        out: u.out,
        prologue,
      });
    };
    const refused: [string, (t: T) => void, RegExp, ("f32" | "fp8_e4m3")?][] = [
      [
        "fp8 caches",
        (t) => run(t),
        /attention_decode_qkv: .*k_cache \(the prologue writes it\)/,
        "fp8_e4m3",
      ],
      [
        "qkv of the wrong width",
        (t) => run(t, { qkv: t.qkv.view([4, width / 2]) }),
        /attention_decode_qkv: qkv .*must be \[2, 64\]/,
      ],
      [
        "kv_rows of the wrong length",
        (t) => run(t, { rows: t.ln.view([2]).slice(0, 1) }),
        /attention_decode_qkv: kv_rows .*one entry per token/,
      ],
      [
        "out overlapping q",
        (t) => run(t, { out: t.q }),
        /attention_decode_qkv: out must not overlap q, qkv or the caches/,
      ],
      [
        "q overlapping qkv",
        (t) => run(t, { q: Tensor.viewAt(t.qkv, 0, [B, Hq, D], "f32") }),
        /attention_decode_qkv: the outputs q, k, v must not overlap qkv or each other/,
      ],
    ];
    for (const [what, call, msg, kvDtype] of refused)
      it(`${what} is refused and nothing is written`, async () => {
        const t = make(kvDtype);
        expect(() => call(t)).toThrow(msg);
        expect(Array.from(await t.out.toArray())).toEqual(new Array(B * Hq * D).fill(7));
        if (!kvDtype) expect(Array.from(await t.kc.toArray())).toEqual(Array.from(cache0));
        for (const u of Object.values(t)) u.dispose();
      });

    if (cpu) {
      it("a page table the attention refuses writes neither q nor the cache rows", async () => {
        const t = make();
        t.q.write(new Float32Array(B * Hq * D).fill(3));
        run(t, { ip: Tensor.from([0, 2, 1], [B + 1], "i32", dev) }); // decreasing kv_indptr
        await expect(Device.cpu.synchronize()).rejects.toThrow(InvalidArgumentError);
        expect(Array.from(await t.kc.toArray())).toEqual(Array.from(cache0));
        expect(Array.from(await t.q.toArray())).toEqual(new Array(B * Hq * D).fill(3));
        for (const u of Object.values(t)) u.dispose();
      });
    } else {
      it("a head_dim the attention kernel lacks (512) writes neither q nor the cache rows", async () => {
        const D2 = 512;
        const kc = Tensor.from(randn(2 * D2, 9404), [2, 1, 1, D2], "f32", dev);
        const vc = Tensor.from(randn(2 * D2, 9407), [2, 1, 1, D2], "f32", dev);
        const q = Tensor.from(new Float32Array(D2).fill(3), [1, 1, D2], "f32", dev);
        const w = Tensor.from(randn(D2, 9405, 0.5), [D2], "f32", dev);
        const args = {
          qkv: Tensor.from(randn(3 * D2, 9406), [1, 3 * D2], "f32", dev),
          pos: Tensor.from([1], [1], "i32", dev),
          rows: Tensor.from([1], [1], "i32", dev),
          ip: Tensor.from([0, 2], [2], "i32", dev),
          ix: Tensor.from([0, 1], [2], "i32", dev),
          ln: Tensor.from([2], [1], "i32", dev),
          out: Tensor.empty([1, 1, D2], "f32", dev),
        };
        const before = [Array.from(await kc.toArray()), Array.from(await vc.toArray())];
        const prologue = {
          qkv: args.qkv,
          qW: w,
          kW: w,
          positions: args.pos,
          kvRows: args.rows,
          rope: { eps: 1e-6, base: 1e4 },
        };
        expect(() =>
          ops.attentionDecode(q, kc, vc, args.ip, args.ix, args.ln, {
            smScale: 0.05,
            out: args.out,
            prologue,
          }),
        ).toThrow(UnsupportedError);
        expect([Array.from(await kc.toArray()), Array.from(await vc.toArray())]).toEqual(before);
        expect(Array.from(await q.toArray())).toEqual(new Array(D2).fill(3));
        for (const u of [kc, vc, q, w, ...Object.values(args)]) u.dispose();
      });
    }

    it(`kv_rows past the caches ${cpu ? "are rejected" : "are skipped"}, as qk_norm_rope's`, async () => {
      const t = make();
      run(t, { rows: Tensor.from([2, P * S], [B], "i32", dev) });
      if (cpu) {
        await expect(Device.cpu.synchronize()).rejects.toThrow(OutOfRangeError);
        expect(Array.from(await t.kc.toArray())).toEqual(Array.from(cache0));
      } else {
        const k = Array.from(await t.kc.toArray());
        // Row 2 (sequence 0's new key) was written; every other row kept what it held.
        expect(k.slice(2 * D, 3 * D)).not.toEqual(Array.from(cache0.subarray(2 * D, 3 * D)));
        for (let r = 0; r < P * S; r++)
          if (r !== 2)
            expect(k.slice(r * D, r * D + D)).toEqual(
              Array.from(cache0.subarray(r * D, r * D + D)),
            );
      }
      for (const u of Object.values(t)) u.dispose();
    });
  });

  describe(`bounds of copy_rows on ${dev}`, () => {
    const src = randn(3 * 2 * 4, 9001);
    const dst0 = randn(5 * 2 * 4, 9002);
    const row = (a: Float32Array, r: number) => Array.from(a.subarray(r * 8, r * 8 + 8));

    for (const bad of [5, I32_MAX]) {
      it(`dst_rows ${bad} >= capacity 5 ${cpu ? "is rejected" : "is skipped"}`, async () => {
        const s = Tensor.from(src, [3, 2, 4], "f32", dev);
        const dst = Tensor.from(dst0, [5, 2, 4], "f32", dev);
        const rows = Tensor.from([1, bad, 3], [3], "i32", dev);
        ops.copyRows(s, dst, rows);
        if (cpu) {
          await expect(Device.cpu.synchronize()).rejects.toThrow(OutOfRangeError);
          // The op checks every index before copying, so nothing was written.
          expect(Array.from(await dst.toArray())).toEqual(Array.from(dst0));
        } else {
          await Device.of(dev).synchronize();
          const got = (await dst.toArray()) as Float32Array;
          expect(row(got, 0)).toEqual(row(dst0, 0));
          expect(row(got, 1)).toEqual(row(src, 0));
          expect(row(got, 2)).toEqual(row(dst0, 2));
          expect(row(got, 3)).toEqual(row(src, 2));
          expect(row(got, 4)).toEqual(row(dst0, 4));
        }
        // A well-formed scatter afterwards: rows 4 and 0 written, -1 skipped.
        rows.write([4, 0, -1]);
        dst.write(dst0);
        ops.copyRows(s, dst, rows);
        const got = (await dst.toArray()) as Float32Array;
        expect(row(got, 4)).toEqual(row(src, 0));
        expect(row(got, 0)).toEqual(row(src, 1));
        for (const r of [1, 2, 3]) expect(row(got, r)).toEqual(row(dst0, r));
        for (const t of [s, dst, rows]) t.dispose();
      });
    }
  });
}

// The split row layouts (q4_0s / q8_0s) are CUDA-only weight formats: the CPU refuses them by name,
// repack refuses pairs that are not a format and its split layout, and neither touches memory.
describe("split weight layouts outside CUDA", () => {
  it("matmul and embedding with q4_0s / q8_0s on the CPU are refused; repack checks its pair", async () => {
    const bytes = ref.quantizeQ4_0(randn(4 * 64, 7), 4, 64);
    const w = Tensor.from(bytes, [4, 64], "q4_0", "cpu");
    const s = ops.repack(w, "q4_0s");
    const x = Tensor.from(randn(64, 8), [1, 64], "f32", "cpu");
    expect(() => ops.matmul(x, s)).toThrow(UnsupportedError);
    expect(() => ops.matmul(x, s)).toThrow(/q4_0s \/ q8_0s are CUDA row layouts/);
    const ids = Tensor.from([0, 3], [2], "i32", "cpu");
    expect(() => ops.embedding(ids, s, 1)).toThrow(/CUDA row layouts/);
    expect(() => ops.repack(w, "q8_0s")).toThrow(/converts q4_0 <-> q4_0s or q8_0 <-> q8_0s/);
    expect(() => ops.repack(s, "q4_0s")).toThrow(/converts/);
    expect(() => ops.dequantize(s)).toThrow(/split layout: ops.repack it to its GGUF blocks/);
    // The round trip still holds after the refusals.
    const back = ops.repack(s, "q4_0");
    expect(Array.from(await back.bytes())).toEqual(Array.from(bytes));
    for (const t of [w, s, x, ids, back]) t.dispose();
  });
});
