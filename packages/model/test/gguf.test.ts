// The GGUF reader: round trips of every value type, an independent parser (@huggingface/gguf)
// agreeing on the fixture GGUFs, and every published llama.cpp exploit shape (CVE-2025-53630,
// CVE-2026-27940, CVE-2026-33298; llama.cpp #18674's 2^42+1 token_embd) refused with a typed
// GGUFError in < 50 ms without a large allocation.
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gguf as hfGGUF } from "@huggingface/gguf";
import { afterAll, describe, expect, it } from "vitest";
import {
  GGUFError,
  GGUFFile,
  GGUFValueType,
  GGUF_READ_CHUNK,
  parseGGUF,
  type GGUFErrorCode,
  type GGUFReadStats,
} from "../src/gguf.js";
import {
  arr,
  buildGGUF,
  gemma3GGUF,
  str,
  u32,
  writeGemma3GGUF,
  type GGUFBuildOptions,
  type GGUFTensorSpec,
  type KV,
} from "./gguf_writer.js";
import { removeTempDirs, tempDir } from "./safetensors_writer.js";

const fixtures = join(dirname(fileURLToPath(import.meta.url)), "fixtures");
afterAll(removeTempDirs);

describe("GGUF reader: well-formed files", () => {
  it("reads every metadata value type back", async () => {
    const meta: [string, KV][] = [
      ["general.architecture", str("gemma3")],
      ["t.u8", { type: "u8", value: 250 }],
      ["t.i8", { type: "i8", value: -7 }],
      ["t.u16", { type: "u16", value: 65000 }],
      ["t.i16", { type: "i16", value: -30000 }],
      ["t.u32", u32(4_000_000_000)],
      ["t.i32", { type: "i32", value: -2_000_000_000 }],
      ["t.f32", { type: "f32", value: 0.5 }],
      ["t.bool", { type: "bool", value: true }],
      ["t.u64", { type: "u64", value: (1n << 63n) + 5n }],
      ["t.i64", { type: "i64", value: -(1n << 62n) }],
      ["t.f64", { type: "f64", value: Math.PI }],
      ["t.utf8", str("héllo ✓ 🙂")],
      ["t.strings", arr("string", ["a", "", "ccc"])],
      ["t.f32s", arr("f32", [1.5, -2, 3])],
      ["t.i32s", arr("i32", [-1, 2, 3])],
      ["t.bools", arr("bool", [true, false])],
      ["t.u64s", arr("u64", [1n, 2n ** 60n])],
      ["t.empty", arr("u8", [])],
    ];
    const tensors: GGUFTensorSpec[] = [
      { name: "a", type: "F32", ne: [3, 2] },
      { name: "b", type: "Q8_0", ne: [64] },
      { name: "c", type: "BF16", ne: [5] },
    ];
    const h = await parseGGUF(buildGGUF(meta, tensors));
    const v = (k: string) => h.metadata.get(k)!.value;
    expect(h.version).toBe(3);
    expect(v("t.u8")).toBe(250);
    expect(v("t.i8")).toBe(-7);
    expect(v("t.u16")).toBe(65000);
    expect(v("t.i16")).toBe(-30000);
    expect(v("t.u32")).toBe(4_000_000_000);
    expect(v("t.i32")).toBe(-2_000_000_000);
    expect(v("t.f32")).toBe(0.5);
    expect(v("t.bool")).toBe(true);
    expect(v("t.u64")).toBe((1n << 63n) + 5n);
    expect(v("t.i64")).toBe(-(1n << 62n));
    expect(v("t.f64")).toBe(Math.PI);
    expect(v("t.utf8")).toBe("héllo ✓ 🙂");
    expect(v("t.strings")).toEqual(["a", "", "ccc"]);
    expect(Array.from(v("t.f32s") as Float32Array)).toEqual([1.5, -2, 3]);
    expect(Array.from(v("t.i32s") as Int32Array)).toEqual([-1, 2, 3]);
    expect(v("t.bools")).toEqual([true, false]);
    expect(Array.from(v("t.u64s") as BigUint64Array)).toEqual([1n, 2n ** 60n]);
    expect(h.metadata.get("t.strings")!.elementType).toBe(GGUFValueType.STRING);
    expect((v("t.empty") as Uint8Array).length).toBe(0);
    const a = h.tensors.get("a")!;
    expect(a).toMatchObject({ type: "F32", ne: [3, 2], shape: [2, 3], offset: 0, nbytes: 24 });
    expect(h.tensors.get("b")).toMatchObject({ type: "Q8_0", shape: [64], offset: 32, nbytes: 68 });
    expect(h.tensors.get("c")).toMatchObject({ type: "BF16", shape: [5], offset: 128, nbytes: 10 });
    expect(h.dataOffset % 32).toBe(0);
  });

  it("honours general.alignment (64) and reads tensor bytes at the padded offsets", async () => {
    const dir = tempDir("gguf");
    const data = (n: number, s: number) =>
      Uint8Array.from({ length: n }, (_, i) => (i * 3 + s) & 0xff);
    const path = join(dir, "a.gguf");
    writeFileSync(
      path,
      buildGGUF(
        [["general.alignment", u32(64)]],
        [
          { name: "x", type: "F32", ne: [5], data: data(20, 1) },
          { name: "y", type: "F16", ne: [3], data: data(6, 2) },
        ],
      ),
    );
    const f = await GGUFFile.open(path);
    expect(f.alignment).toBe(64);
    expect(f.dataOffset % 64).toBe(0);
    expect(f.info("y").offset).toBe(64);
    expect(await f.read("x")).toEqual(data(20, 1));
    expect(await f.read("y")).toEqual(data(6, 2));
    await f.close();
  });

  for (const type of ["F32", "BF16", "Q8_0", "Q4_0"] as const)
    it(`@huggingface/gguf reads our tiny-27b ${type} GGUF the same way (metadata and tensor infos)`, async () => {
      const path = await writeGemma3GGUF(
        join(fixtures, "tiny-27b"),
        type,
        join(tempDir("gguf"), `tiny-27b-${type}.gguf`),
      );
      const ours = await GGUFFile.open(path);
      const theirs = await hfGGUF(path, { allowLocalFile: true });
      await ours.close();
      const md = theirs.metadata as Record<string, unknown>;
      expect(md.version).toBe(3);
      expect(md.tensor_count).toBe(BigInt(ours.tensors.size));
      expect(md.kv_count).toBe(BigInt(ours.metadata.size));
      for (const [key, v] of ours.metadata) {
        const t = md[key];
        if (ArrayBuffer.isView(v.value) || Array.isArray(v.value))
          expect(Array.from(t as ArrayLike<unknown>), key).toEqual(
            Array.from(v.value as ArrayLike<unknown>),
          );
        else expect(t, key).toEqual(v.value);
      }
      expect(theirs.tensorInfos.map((t) => t.name)).toEqual([...ours.tensors.keys()]);
      for (const t of theirs.tensorInfos) {
        const o = ours.tensors.get(t.name)!;
        expect(t.shape.map(Number), t.name).toEqual(o.ne);
        expect(t.dtype, t.name).toBe(o.typeId);
        expect(Number(t.offset), t.name).toBe(o.offset);
      }
      expect(theirs.tensorDataOffset).toBe(BigInt(ours.dataOffset));
    });
});

// ---- hostile files ----------------------------------------------------------------------------------

/** Parses a file built from the tiny-1b Q8_0 GGUF with one field altered, timing and metering it. */
async function hostile(
  edit: (g: { metadata: [string, KV][]; tensors: GGUFTensorSpec[] }) => void,
  build: GGUFBuildOptions = {},
): Promise<{
  error: unknown;
  ms: number;
  stats: GGUFReadStats;
  arrayBufferGrowth: number;
  size: number;
}> {
  const g = await gemma3GGUF(join(fixtures, "tiny-1b"), "Q8_0");
  edit(g);
  const path = join(tempDir("gguf-hostile"), "evil.gguf");
  const bytes = buildGGUF(g.metadata, g.tensors, build);
  writeFileSync(path, bytes);
  const stats: GGUFReadStats = { largestAllocation: 0 };
  const before = process.memoryUsage().arrayBuffers;
  const t0 = performance.now();
  let error: unknown;
  try {
    const f = await GGUFFile.open(path, { stats });
    await f.close();
  } catch (e) {
    error = e;
  }
  const ms = performance.now() - t0;
  const arrayBufferGrowth = process.memoryUsage().arrayBuffers - before;
  return { error, ms, stats, arrayBufferGrowth, size: bytes.length };
}

const timings: string[] = [];
afterAll(() => {
  if (timings.length)
    console.log(["exploit shape | ms | largest reader allocation (bytes)", ...timings].join("\n"));
});

function expectRefused(
  r: Awaited<ReturnType<typeof hostile>>,
  code: GGUFErrorCode,
  message: RegExp,
  tensor?: string,
): void {
  expect(r.error).toBeInstanceOf(GGUFError);
  const e = r.error as GGUFError;
  expect(e.code, e.message).toBe(code);
  expect(e.message).toMatch(message);
  expect(e.message).toContain("evil.gguf");
  if (tensor) expect(e.tensor).toBe(tensor);
  timings.push(
    `${expect.getState().currentTestName?.split(" > ").pop()} | ${r.ms.toFixed(2)} | ${r.stats.largestAllocation}`,
  );
  expect(r.ms).toBeLessThan(50);
  // The reader's own buffers stay within one header chunk (and within the file, which is small).
  expect(r.stats.largestAllocation).toBeLessThanOrEqual(Math.min(GGUF_READ_CHUNK, r.size));
  expect(r.arrayBufferGrowth).toBeLessThan(16 * 1024 * 1024);
}

const findTensor = (g: { tensors: GGUFTensorSpec[] }, name: string) =>
  g.tensors.find((t) => t.name === name)!;

describe("GGUF reader: llama.cpp exploit shapes → GGUFError in < 50 ms, no large allocation", () => {
  it("control: the unaltered file parses", async () => {
    const r = await hostile(() => undefined);
    expect(r.error).toBeUndefined();
  });

  it("token_embd dimension 2^42+1 (llama.cpp #18674: size·stride wraps to 0)", async () => {
    const r = await hostile((g) => {
      findTensor(g, "token_embd.weight").ne[1] = 2n ** 42n + 1n;
    });
    // Sized in BigInt, token_embd now claims ~2^47 bytes: the next tensor's offset can't match.
    expectRefused(r, "E_OFFSET", /not the padded running sum \d{15} /, "blk.0.attn_norm.weight");
  });

  it("a dimension product beyond INT64_MAX is an overflow, not a wrap", async () => {
    const r = await hostile((g) => {
      findTensor(g, "token_embd.weight").ne = [64n, 2n ** 40n, 2n ** 30n];
    });
    expectRefused(r, "E_OVERFLOW", /exceeds INT64_MAX/, "token_embd.weight");
  });

  for (const a of [0, 13])
    it(`general.alignment ${a}`, async () => {
      const r = await hostile((g) => g.metadata.push(["general.alignment", u32(a)]));
      expectRefused(r, "E_ALIGNMENT", new RegExp(`${a} is not a power of two`));
    });

  it("general.alignment of the wrong type (llama.cpp asserted, i.e. aborted)", async () => {
    const r = await hostile((g) =>
      g.metadata.push(["general.alignment", { type: "i32", value: 32 }]),
    );
    expectRefused(r, "E_ALIGNMENT", /must be a UINT32, got INT32/);
  });

  it("string length 2^63", async () => {
    const r = await hostile((g) => {
      g.metadata[1] = ["general.name", { type: "string", value: "x", lengthOverride: 2n ** 63n }];
    });
    expectRefused(r, "E_BOUNDS", /claims 9223372036854775808 bytes but only \d+ remain/);
  });

  it("array length 2^63 (tokenizer.ggml.tokens)", async () => {
    const r = await hostile((g) => {
      const i = g.metadata.findIndex(([k]) => k === "tokenizer.ggml.tokens");
      g.metadata[i] = [
        "tokenizer.ggml.tokens",
        { ...(g.metadata[i]![1] as KV & { type: "array" }), lengthOverride: 2n ** 63n },
      ];
    });
    expectRefused(r, "E_BOUNDS", /array of 9223372036854775808 STRING needs at least/);
  });

  it("array length 2^63 of a numeric type (no typed array sized from it)", async () => {
    const r = await hostile((g) => {
      const i = g.metadata.findIndex(([k]) => k === "tokenizer.ggml.scores");
      g.metadata[i] = [
        "tokenizer.ggml.scores",
        { ...(g.metadata[i]![1] as KV & { type: "array" }), lengthOverride: 2n ** 63n },
      ];
    });
    expectRefused(r, "E_BOUNDS", /array of 9223372036854775808 FLOAT32/);
  });

  it("n_tensors = -1 (0xffffffffffffffff)", async () => {
    const r = await hostile(() => undefined, { nTensors: 2n ** 64n - 1n });
    expectRefused(r, "E_BOUNDS", /tensor count 18446744073709551615 cannot fit/);
  });

  it("n_kv = -1 (0xffffffffffffffff)", async () => {
    const r = await hostile(() => undefined, { nKv: 2n ** 64n - 1n });
    expectRefused(r, "E_BOUNDS", /metadata count 18446744073709551615 cannot fit/);
  });

  it("a tensor data offset that is not the padded running sum", async () => {
    const r = await hostile((g) => {
      findTensor(g, "blk.0.attn_q.weight").offset = 0n; // overlaps token_embd
    });
    expectRefused(
      r,
      "E_OFFSET",
      /data offset 0 is not the padded running sum/,
      "blk.0.attn_q.weight",
    );
  });

  it("ne[0] % 32 != 0 for a block type", async () => {
    const r = await hostile((g) => {
      findTensor(g, "blk.0.ffn_down.weight").ne = [120, 64];
    });
    expectRefused(
      r,
      "E_BLOCK",
      /ne\[0\] = 120 is not a multiple of Q8_0's block size 32/,
      "blk.0.ffn_down.weight",
    );
  });

  it("truncated data", async () => {
    const r = await hostile(() => undefined, { truncate: 100 });
    expectRefused(r, "E_TRUNCATED", /runs past the end of the \d+-byte file/, "output_norm.weight");
  });

  it("truncated inside the header", async () => {
    const g = await gemma3GGUF(join(fixtures, "tiny-1b"), "Q8_0");
    const full = buildGGUF(g.metadata, g.tensors);
    // Inside the counts: a plain truncation. Further in, the next length or count is checked
    // against the bytes left first.
    await expect(parseGGUF(full.slice(0, 20), { file: "evil.gguf" })).rejects.toMatchObject({
      code: "E_TRUNCATED",
    });
    for (const cut of [60, 1000, 5000]) {
      const e = await parseGGUF(full.slice(0, cut), { file: "evil.gguf" }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(GGUFError);
      expect(["E_TRUNCATED", "E_BOUNDS"]).toContain((e as GGUFError).code);
    }
  });
});

describe("GGUF reader: the other llama.cpp checks", () => {
  const tiny: GGUFTensorSpec[] = [{ name: "a", type: "F32", ne: [4] }];
  const refuse = async (bytes: Uint8Array, code: GGUFErrorCode, msg: RegExp) => {
    const e = await parseGGUF(bytes, { file: "bad.gguf" }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(GGUFError);
    expect((e as GGUFError).code).toBe(code);
    expect((e as GGUFError).message).toMatch(msg);
  };
  it("bad magic, GGUF v1, big-endian, unknown version", async () => {
    await refuse(buildGGUF([], tiny, { magic: 0x4c4d4747 }), "E_MAGIC", /bad magic/);
    await refuse(buildGGUF([], tiny, { version: 1 }), "E_VERSION", /v1/);
    await refuse(buildGGUF([], tiny, { version: 0x03000000 }), "E_VERSION", /big-endian/);
    await refuse(buildGGUF([], tiny, { version: 4 }), "E_VERSION", /version 4/);
  });
  it("duplicate keys and tensor names", async () => {
    await refuse(
      buildGGUF(
        [
          ["k", u32(1)],
          ["k", u32(2)],
        ],
        tiny,
      ),
      "E_DUPLICATE",
      /key "k"/,
    );
    await refuse(buildGGUF([], [...tiny, ...tiny]), "E_DUPLICATE", /tensor "a"/);
  });
  it("n_dims > 4, empty or 64-byte names", async () => {
    await refuse(
      buildGGUF([], [{ name: "a", type: "F32", ne: [1, 1, 1, 1, 1] }]),
      "E_DIMS",
      /n_dims 5/,
    );
    await refuse(buildGGUF([], [{ name: "", type: "F32", ne: [1] }]), "E_NAME", /0 bytes/);
    await refuse(
      buildGGUF([], [{ name: "n".repeat(64), type: "F32", ne: [1] }]),
      "E_NAME",
      /64 bytes/,
    );
  });
  it("unknown and removed ggml types, unknown value types, nested arrays", async () => {
    await refuse(
      buildGGUF([], [{ name: "a", type: "F32", ne: [4], typeId: 4 }]),
      "E_TENSOR_TYPE",
      /type 4/,
    );
    await refuse(
      buildGGUF([], [{ name: "a", type: "F32", ne: [4], typeId: 999 }]),
      "E_TENSOR_TYPE",
      /type 999/,
    );
    const bad = buildGGUF([["k", u32(7)]], tiny);
    // The value type of "k" sits after magic, version, counts (24 bytes) and the key (8 + 1).
    new DataView(bad.buffer).setUint32(24 + 9, 13, true);
    await refuse(bad, "E_VALUE_TYPE", /unknown value type 13/);
    await refuse(
      buildGGUF([["k", { type: "array", elementType: "array", value: [] }]], tiny),
      "E_VALUE_TYPE",
      /nested arrays/,
    );
  });
});
