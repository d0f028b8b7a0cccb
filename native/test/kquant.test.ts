// GGUF K-quants (q4_k, q5_k, q6_k) against llama.cpp itself and against the format's definition:
//  - goldens from llama.cpp's quantize_row_q*_K_ref / dequantize_row_q*_K (a prebuilt
//    libggml-base.so, tools/reference/kquant-goldens.sh) on corner-case blocks: the TS port and the
//    native quantizer must write the same bytes, both dequantizers the same floats;
//  - blocks packed from chosen scales / mins / levels (the layout as ggml-common.h states it):
//    native dequantize must give the formula's values, bit for bit;
//  - llama.cpp's test-quantize-fns bound on the round-trip error (published constant);
//  - shape and dtype errors.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { ShapeError, Tensor, ops } from "../src/index.js";
import { rng } from "./helpers.js";
import { f32ToF16Bits } from "./reference.js";
import {
  KQ_BLOCK_BYTES,
  K_QUANT_TYPES,
  QK_K,
  dequantizeK,
  dequantizeParts,
  packKBlock,
  quantizeK,
  unpackKBlock,
  type KParts,
  type KQuant,
} from "./reference_kquant.js";

const dir = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "kquant");
const f32File = (name: string): Float32Array => {
  const b = readFileSync(join(dir, name));
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
};
const inputs = f32File("inputs.f32");
const NB = inputs.length / QK_K; // corner-case blocks (see kquant_goldens.c)

/** Index of the first differing element, or -1 (Object.is: -0 and NaN count). */
function firstDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return 0;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return i;
  return -1;
}

describe.each(K_QUANT_TYPES)("%s vs llama.cpp (quantize_row_*_ref / dequantize_row_*)", (type) => {
  const gold = new Uint8Array(readFileSync(join(dir, `${type}.bin`)));
  const goldDeq = f32File(`${type}.deq.f32`);

  it("the TS port writes llama.cpp's bytes for every corner-case block", () => {
    expect(gold.length).toBe(NB * KQ_BLOCK_BYTES[type]);
    expect(firstDiff(quantizeK(type, inputs, NB, QK_K), gold)).toBe(-1);
  });

  it("native quantize (cpu, from f32) writes llama.cpp's bytes", async () => {
    const x = Tensor.from(inputs, [NB, QK_K]);
    const { data } = ops.quantize(x, type);
    expect(firstDiff(await data.bytes(), gold)).toBe(-1);
    x.dispose();
    data.dispose();
  });

  it("TS and native dequantize give llama.cpp's floats bit for bit", async () => {
    expect(firstDiff(dequantizeK(type, gold, NB, QK_K), goldDeq)).toBe(-1);
    const q = Tensor.from(gold, [NB, QK_K], type);
    const y = ops.dequantize(q, "f32");
    expect(firstDiff(await y.toArray(), goldDeq)).toBe(-1);
    q.dispose();
    y.dispose();
  });

  it("llama.cpp test-quantize-fns bound: rmse / n <= 0.002 on 0.1 + 2 cos(i)", () => {
    // tests/test-quantize-fns.cpp: generate_data(0, 4096), array_rmse = sqrt(Σ d²) / n, and
    // MAX_QUANTIZATION_TOTAL_ERROR = 0.002 for every 4-bit-and-up type.
    const n = 32 * 128;
    const x = Float32Array.from({ length: n }, (_, i) => Math.fround(0.1 + 2 * Math.cos(i)));
    const y = dequantizeK(type, quantizeK(type, x, 1, n), 1, n);
    let s = 0;
    for (let i = 0; i < n; i++) s += (x[i]! - y[i]!) ** 2;
    expect(Math.sqrt(s) / n).toBeLessThan(0.002);
  });
});

describe("K-quant layouts (ggml-common.h) vs the native decoder", () => {
  /** Random stored numbers of a block: every scale, min and level in its full range. */
  function randomParts(type: KQuant, seed: number): KParts {
    const r = rng(seed);
    const int = (lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
    const dBits = f32ToF16Bits(0.001 + r() * 0.01);
    if (type === "q6_k")
      return {
        dBits,
        dminBits: 0,
        sc: Array.from({ length: 16 }, () => int(-128, 127)),
        m: [],
        q: Array.from({ length: QK_K }, () => int(0, 63)),
      };
    return {
      dBits,
      dminBits: f32ToF16Bits(r() * 0.01),
      sc: Array.from({ length: 8 }, () => int(0, 63)),
      m: Array.from({ length: 8 }, () => int(0, 63)),
      q: Array.from({ length: QK_K }, () => int(0, type === "q5_k" ? 31 : 15)),
    };
  }

  for (const type of K_QUANT_TYPES)
    it(`${type}: pack(parts) round-trips, and native dequantize gives (d·sc)·q − dmin·m exactly`, async () => {
      const rows = 3;
      const cols = 2 * QK_K;
      const parts = Array.from({ length: (rows * cols) / QK_K }, (_, i) =>
        randomParts(type, 40 + i),
      );
      // Extremes: scale/min 63 (the 2 high bits live in other bytes), q6_k scale −128.
      parts[0]!.sc[7] = type === "q6_k" ? -128 : 63;
      if (type !== "q6_k") parts[0]!.m[5] = 63;
      const bytes = new Uint8Array(parts.length * KQ_BLOCK_BYTES[type]);
      parts.forEach((p, i) => bytes.set(packKBlock(type, p), i * KQ_BLOCK_BYTES[type]));
      parts.forEach((p, i) =>
        expect(unpackKBlock(type, bytes, i * KQ_BLOCK_BYTES[type])).toEqual(p),
      );
      const expected = new Float32Array(rows * cols);
      parts.forEach((p, i) => expected.set(dequantizeParts(type, p), i * QK_K));
      expect(firstDiff(dequantizeK(type, bytes, rows, cols), expected)).toBe(-1);
      const q = Tensor.from(bytes, [rows, cols], type);
      for (const out of ["f32", "bf16"] as const) {
        const y = await ops.dequantize(q, out).toArray();
        const want = out === "f32" ? expected : Float32Array.from(expected, bf16Round);
        expect(firstDiff(y, want)).toBe(-1);
      }
      q.dispose();
    });
});

/** float32 → bf16 round to nearest even, as a float. */
function bf16Round(x: number): number {
  const b = new Float32Array([x]);
  const u = new Uint32Array(b.buffer);
  u[0] = (u[0]! + 0x7fff + ((u[0]! >> 16) & 1)) & 0xffff0000;
  return b[0]!;
}

describe("K-quant argument checks", () => {
  it("a row that is not whole 256-blocks is a ShapeError naming the block size", () => {
    expect(() => Tensor.empty([2, 128], "q4_k")).toThrow(ShapeError);
    expect(() => Tensor.empty([2, 128], "q6_k")).toThrow(/multiple of 256/);
    const x = Tensor.from(new Float32Array(2 * 96), [2, 96]);
    expect(() => ops.quantize(x, "q5_k")).toThrow(/multiple of 256/);
    x.dispose();
  });

  it("matmul and embedding reject mismatched K-quant shapes with typed errors", () => {
    const w = Tensor.zeros([4, 256], "q4_k");
    const x = Tensor.zeros([2, 512], "f32");
    expect(() => ops.matmul(x, w)).toThrow(/disagree on K/);
    const ids = Tensor.from([0, 1], [2], "i32");
    const out = Tensor.empty([2, 128], "f32");
    expect(() => ops.embedding(ids, w, 1, { out })).toThrow(/must be \[2, 256\]/);
    for (const t of [w, x, ids, out]) t.dispose();
  });

  it("host data for a K-quant tensor must be raw bytes", () => {
    expect(() => Tensor.from(new Float32Array(256), [256], "q6_k")).toThrow(/raw bytes/);
    expect(() => Tensor.from(new Uint8Array(100), [256], "q6_k")).toThrow(/210 expected/);
  });
});
