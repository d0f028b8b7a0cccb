// safetensors reader: every check of the reference crate's read_metadata/validate, hit on purpose
// with files written by the test's own writer; sharded checkpoints; chunked reads and progress.
import { mkdirSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  MAX_HEADER_SIZE,
  SafetensorsError,
  SafetensorsFile,
  openCheckpoint,
} from "../src/safetensors.js";
import {
  buildSafetensors,
  patterned,
  removeTempDirs,
  tempDir,
  writeSafetensors,
  writeSharded,
  type BuildOptions,
  type TensorSpec,
} from "./safetensors_writer.js";

afterAll(removeTempDirs);

const TWO: Record<string, TensorSpec> = {
  "a.weight": { dtype: "BF16", shape: [3, 4] }, // 24 bytes at [0, 24)
  "b.weight": { dtype: "F32", shape: [5] }, // 20 bytes at [24, 44)
};

/** Writes a file and expects open() to fail with a SafetensorsError naming it (and `tensor`). */
async function expectOpenError(
  tensors: Record<string, TensorSpec>,
  opts: BuildOptions,
  pattern: RegExp,
  tensor?: string,
): Promise<SafetensorsError> {
  const path = writeSafetensors(join(tempDir(), "model.safetensors"), tensors, opts);
  let err: unknown;
  try {
    const f = await SafetensorsFile.open(path);
    await f.close();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(SafetensorsError);
  const se = err as SafetensorsError;
  expect(se.file).toBe(path);
  expect(se.message).toContain(path);
  expect(se.message).toMatch(pattern);
  expect(se.tensor).toBe(tensor);
  if (tensor !== undefined) expect(se.message).toContain(`"${tensor}"`);
  return se;
}

describe("SafetensorsFile", () => {
  it("opens, lists and reads tensors", async () => {
    const a = patterned(24, 3);
    const path = writeSafetensors(
      join(tempDir(), "m.safetensors"),
      {
        "a.weight": { dtype: "BF16", shape: [3, 4], data: a },
        "b.weight": { dtype: "F32", shape: [5] },
        scalar: { dtype: "I64", shape: [] },
        empty: { dtype: "F16", shape: [0, 7] },
        packed: { dtype: "F4", shape: [2, 3] }, // 6 × 4 bits = 3 bytes
      },
      { metadata: { format: "pt" } },
    );
    const f = await SafetensorsFile.open(path);
    try {
      expect(f.metadata).toEqual({ format: "pt" });
      expect([...f.tensors.keys()].sort()).toEqual([
        "a.weight",
        "b.weight",
        "empty",
        "packed",
        "scalar",
      ]);
      expect(f.info("a.weight")).toEqual({ dtype: "BF16", shape: [3, 4], begin: 0, end: 24 });
      expect(f.info("scalar")).toMatchObject({ shape: [], begin: 44, end: 52 });
      expect(f.info("empty")).toMatchObject({ begin: 52, end: 52 });
      expect(f.info("packed")).toMatchObject({ begin: 52, end: 55 });
      expect(await f.read("a.weight")).toEqual(a);
      expect((await f.read("empty")).length).toBe(0);
      expect((await f.read("packed")).length).toBe(3);
      const part = new Uint8Array(10);
      await f.readInto("a.weight", 7, part);
      expect(part).toEqual(a.subarray(7, 17));
    } finally {
      await f.close();
    }
  });

  it("reads in chunks and reports progress", async () => {
    const data = patterned(1000, 9);
    const path = writeSafetensors(join(tempDir(), "m.safetensors"), {
      big: { dtype: "U8", shape: [1000], data },
    });
    const f = await SafetensorsFile.open(path);
    const calls: [number, number][] = [];
    expect(await f.read("big", (d, t) => calls.push([d, t]), 300)).toEqual(data);
    expect(calls).toEqual([
      [300, 1000],
      [600, 1000],
      [900, 1000],
      [1000, 1000],
    ]);
    const one: [number, number][] = [];
    await f.read("big", (d, t) => one.push([d, t]));
    expect(one).toEqual([[1000, 1000]]); // default 64 MB chunk: one read
    await f.close();
  });

  it("an empty header {} with no data is valid; header padding spaces are fine", async () => {
    const path = writeSafetensors(join(tempDir(), "e.safetensors"), {});
    const f = await SafetensorsFile.open(path);
    expect(f.tensors.size).toBe(0);
    expect(f.dataOffset).toBe(16); // "{}" + 6 spaces
    await f.close();
  });

  it("tensor lookup, read after close, and a file truncated after open", async () => {
    const dir = tempDir();
    const path = writeSafetensors(join(dir, "m.safetensors"), TWO);
    const f = await SafetensorsFile.open(path);
    expect(() => f.info("nope")).toThrow(SafetensorsError);
    expect(() => f.info("nope")).toThrow(/tensor "nope": no such tensor/);
    truncateSync(path, f.dataOffset + 30); // b.weight now runs past EOF
    await expect(f.read("b.weight")).rejects.toThrow(/tensor "b.weight": unexpected end of file/);
    await f.close();
    await expect(f.read("a.weight")).rejects.toThrow(/tensor "a.weight": read after close/);
    await f.close(); // idempotent
  });

  it("missing file", async () => {
    const path = join(tempDir(), "absent.safetensors");
    await expect(SafetensorsFile.open(path)).rejects.toThrow(SafetensorsError);
    await expect(SafetensorsFile.open(path)).rejects.toThrow(`${path}: file not found`);
  });
});

describe("validation (reference: safetensors read_metadata + Metadata::validate)", () => {
  it("file shorter than the 8-byte length", async () => {
    const path = join(tempDir(), "tiny.safetensors");
    writeFileSync(path, new Uint8Array([1, 2, 3]));
    await expect(SafetensorsFile.open(path)).rejects.toThrow(
      /3 bytes, shorter than the 8-byte header length/,
    );
  });

  it("header length over 100 MB (HeaderTooLarge)", async () => {
    await expectOpenError(
      TWO,
      { headerLength: BigInt(MAX_HEADER_SIZE) + 1n },
      /exceeds the 100000000-byte limit/,
    );
    await expectOpenError(TWO, { headerLength: 0xffff_ffff_ffff_ffffn }, /exceeds/);
  });

  it("header length past the end of the file (InvalidHeaderLength)", async () => {
    await expectOpenError(
      TWO,
      { headerLength: 1_000_000n },
      /runs past the end of the \d+-byte file/,
    );
    // A truncated file whose header is cut.
    await expectOpenError(TWO, { truncate: 44 + 20 }, /runs past the end/);
  });

  it("header not UTF-8, not JSON, not an object", async () => {
    await expectOpenError(
      TWO,
      { rawHeader: new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]) },
      /not valid UTF-8/,
    );
    await expectOpenError(TWO, { rawHeader: '{"a.weight": {' }, /not valid JSON/);
    await expectOpenError({}, { rawHeader: "[]      " }, /not a JSON object/);
    await expectOpenError({}, { rawHeader: "null    " }, /not a JSON object/);
    // serde_json rejects a BOM and NUL padding; so does this reader.
    await expectOpenError({}, { rawHeader: "\uFEFF{}" }, /not valid JSON/);
    await expectOpenError({}, { rawHeader: "{}\0\0\0\0\0\0" }, /not valid JSON/);
  });

  it("__metadata__ must map strings to strings", async () => {
    await expectOpenError(
      TWO,
      { metadata: { format: 1 } },
      /__metadata__\["format"\] must be a string/,
    );
    await expectOpenError(
      TWO,
      { metadata: ["pt"] as unknown as Record<string, unknown> },
      /__metadata__ must be an object/,
    );
  });

  it("malformed entries name the tensor", async () => {
    const edit = (f: (e: Record<string, unknown>) => void): BuildOptions => ({
      editHeader: (h) => f(h["b.weight"] as Record<string, unknown>),
    });
    await expectOpenError(
      TWO,
      { editHeader: (h) => (h["b.weight"] = 5) },
      /entry is not an object/,
      "b.weight",
    );
    await expectOpenError(
      TWO,
      edit((e) => (e.dtype = "F128")),
      /unknown dtype "F128"/,
      "b.weight",
    );
    await expectOpenError(
      TWO,
      edit((e) => delete e.dtype),
      /missing or non-string dtype/,
      "b.weight",
    );
    await expectOpenError(
      TWO,
      edit((e) => (e.shape = [5, -1])),
      /shape must be a list of integers >= 0/,
      "b.weight",
    );
    await expectOpenError(
      TWO,
      edit((e) => (e.shape = [2.5])),
      /shape must be/,
      "b.weight",
    );
    await expectOpenError(
      TWO,
      edit((e) => (e.shape = 5)),
      /shape must be/,
      "b.weight",
    );
    await expectOpenError(
      TWO,
      edit((e) => (e.data_offsets = [24])),
      /data_offsets must be \[begin, end\]/,
      "b.weight",
    );
    await expectOpenError(
      TWO,
      edit((e) => (e.data_offsets = [24, 44, 50])),
      /data_offsets must be/,
      "b.weight",
    );
    await expectOpenError(
      TWO,
      edit((e) => (e.data_offsets = [24, -44])),
      /data_offsets must be/,
      "b.weight",
    );
  });

  it("offsets that overlap, leave gaps, or run backwards (InvalidOffset)", async () => {
    const set = (name: string, off: [number, number]): BuildOptions => ({
      editHeader: (h) => ((h[name] as Record<string, unknown>).data_offsets = off),
    });
    await expectOpenError(TWO, set("b.weight", [20, 40]), /overlaps tensor "a.weight"/, "b.weight");
    await expectOpenError(
      TWO,
      set("b.weight", [26, 46]),
      /leaves a gap of 2 bytes after tensor "a.weight"/,
      "b.weight",
    );
    await expectOpenError(
      TWO,
      set("a.weight", [4, 28]),
      /leaves a gap of 4 bytes after the data start/,
      "a.weight",
    );
    // Both tensors claim [0, 24): the second one sorted overlaps the first.
    await expectOpenError(TWO, set("b.weight", [0, 24]), /overlaps tensor/, "b.weight");
    await expectOpenError(TWO, set("b.weight", [24, 20]), /end < begin/, "b.weight");
  });

  it("dtype × shape must equal the span (TensorInvalidInfo), with no overflow", async () => {
    await expectOpenError(
      TWO,
      { editHeader: (h) => ((h["b.weight"] as Record<string, unknown>).dtype = "F64") },
      /F64 × shape \[5\] needs 40 bytes but data_offsets \[24, 44\] span 20/,
      "b.weight",
    );
    await expectOpenError(
      TWO,
      { editHeader: (h) => ((h["a.weight"] as Record<string, unknown>).shape = [4, 4]) },
      /needs 32 bytes/,
      "a.weight",
    );
    // 2^32 · 2^32 one-byte elements = 2^64 wraps to 0 in u64; it must not match the 0-byte span.
    await expectOpenError(
      { e: { dtype: "U8", shape: [0] } },
      {
        editHeader: (h) => ((h.e as Record<string, unknown>).shape = [2 ** 32, 2 ** 32]),
        metadata: null,
      },
      /shape \[4294967296, 4294967296\] overflows u64 \(ValidationOverflow\)/,
      "e",
    );
    await expectOpenError(
      { p: { dtype: "F4", shape: [3] } },
      {},
      /not a whole number of bytes/,
      "p",
    );
  });

  it("tensors must end exactly at the data section's end (MetadataIncompleteBuffer)", async () => {
    await expectOpenError(
      TWO,
      { truncate: 4 },
      /data_offsets end at 44 but the data section has only 40 bytes/,
      "b.weight",
    );
    await expectOpenError(
      TWO,
      { extra: new Uint8Array(3) },
      /tensors cover 44 bytes but the data section has 47 \(3 trailing bytes\)/,
    );
    await expectOpenError(
      TWO,
      { editHeader: (h) => ((h["b.weight"] as Record<string, unknown>).data_offsets = [24, 1e15]) },
      /needs 20 bytes/,
      "b.weight",
    );
  });

  it("every error is a SafetensorsError, never a crash, on random corruption", async () => {
    const good = buildSafetensors(TWO, { metadata: { format: "pt" } });
    const dir = tempDir("fuzz");
    let seed = 1;
    const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    for (let i = 0; i < 200; i++) {
      const bad = good.slice();
      const flips = 1 + Math.floor(rand() * 3);
      for (let j = 0; j < flips; j++)
        bad[Math.floor(rand() * Math.min(bad.length, 8 + 120))] = Math.floor(rand() * 256);
      const path = join(dir, `f${i}.safetensors`);
      writeFileSync(path, bad);
      try {
        const f = await SafetensorsFile.open(path);
        await f.close();
      } catch (e) {
        expect(e).toBeInstanceOf(SafetensorsError);
      }
    }
  });
});

describe("openCheckpoint", () => {
  const shardA: Record<string, TensorSpec> = {
    "model.embed_tokens.weight": { dtype: "BF16", shape: [8, 4] },
    "model.norm.weight": { dtype: "BF16", shape: [4] },
  };
  const shardB: Record<string, TensorSpec> = {
    "model.layers.0.mlp.up_proj.weight": { dtype: "F32", shape: [6, 4] },
  };

  it("single model.safetensors", async () => {
    const dir = tempDir("ck");
    writeSafetensors(join(dir, "model.safetensors"), { ...shardA, ...shardB });
    const ck = await openCheckpoint(dir);
    expect(ck.sharded).toBe(false);
    expect(ck.files).toHaveLength(1);
    expect(ck.tensors.size).toBe(3);
    expect((await ck.read("model.norm.weight")).length).toBe(8);
    await ck.close();
  });

  it("sharded via model.safetensors.index.json", async () => {
    const dir = tempDir("ck");
    writeSharded(dir, {
      "model-00001-of-00002.safetensors": shardA,
      "model-00002-of-00002.safetensors": shardB,
    });
    const ck = await openCheckpoint(dir);
    expect(ck.sharded).toBe(true);
    expect(ck.indexFile).toBe(join(dir, "model.safetensors.index.json"));
    expect(ck.files.map((f) => f.path)).toEqual([
      join(dir, "model-00001-of-00002.safetensors"),
      join(dir, "model-00002-of-00002.safetensors"),
    ]);
    const up = ck.entry("model.layers.0.mlp.up_proj.weight");
    expect(up.file.path).toBe(join(dir, "model-00002-of-00002.safetensors"));
    expect(up.info).toEqual({ dtype: "F32", shape: [6, 4], begin: 0, end: 96 });
    const calls: number[] = [];
    expect(await ck.read("model.layers.0.mlp.up_proj.weight", (d) => calls.push(d), 40)).toEqual(
      patterned(96, 0),
    );
    expect(calls).toEqual([40, 80, 96]);
    expect(() => ck.entry("nope")).toThrow(
      /model\.safetensors\.index\.json: tensor "nope": no such tensor/,
    );
    await ck.close();
  });

  it("a single file wins over an index (as transformers)", async () => {
    const dir = tempDir("ck");
    writeSharded(dir, { "s1.safetensors": shardA });
    writeSafetensors(join(dir, "model.safetensors"), shardB);
    const ck = await openCheckpoint(dir);
    expect([...ck.tensors.keys()]).toEqual(["model.layers.0.mlp.up_proj.weight"]);
    await ck.close();
  });

  async function expectCkError(dir: string, pattern: RegExp, file: string, tensor?: string) {
    let err: unknown;
    try {
      await (await openCheckpoint(dir)).close();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SafetensorsError);
    const se = err as SafetensorsError;
    expect(se.message).toMatch(pattern);
    expect(se.file).toBe(file);
    expect(se.message).toContain(file);
    expect(se.tensor).toBe(tensor);
  }

  it("missing shard names the shard and a tensor mapped to it", async () => {
    const dir = tempDir("ck");
    writeSharded(dir, { "s1.safetensors": shardA }, (idx) => {
      idx.weight_map["model.layers.0.mlp.up_proj.weight"] = "s2.safetensors";
    });
    await expectCkError(
      dir,
      /missing shard "s2.safetensors"/,
      join(dir, "model.safetensors.index.json"),
      "model.layers.0.mlp.up_proj.weight",
    );
  });

  it("a mapped tensor absent from its shard", async () => {
    const dir = tempDir("ck");
    writeSharded(dir, { "s1.safetensors": shardA, "s2.safetensors": shardB }, (idx) => {
      idx.weight_map["model.norm.weight"] = "s2.safetensors";
    });
    await expectCkError(
      dir,
      /maps this tensor to "s2.safetensors", which does not contain it/,
      join(dir, "s2.safetensors"),
      "model.norm.weight",
    );
  });

  it("the same tensor in two shards", async () => {
    const dir = tempDir("ck");
    writeSharded(dir, {
      "s1.safetensors": shardA,
      "s2.safetensors": { ...shardB, "model.norm.weight": { dtype: "BF16", shape: [4] } },
    });
    await expectCkError(
      dir,
      /duplicate tensor: also in .*s1\.safetensors/,
      join(dir, "s2.safetensors"),
      "model.norm.weight",
    );
  });

  it("a corrupt shard surfaces its own error", async () => {
    const dir = tempDir("ck");
    writeSharded(dir, { "s1.safetensors": shardA, "s2.safetensors": shardB });
    writeFileSync(join(dir, "s2.safetensors"), buildSafetensors(shardB, { truncate: 10 }));
    await expectCkError(
      dir,
      /data section has only/,
      join(dir, "s2.safetensors"),
      "model.layers.0.mlp.up_proj.weight",
    );
  });

  it("bad index files and empty directories", async () => {
    const dir = tempDir("ck");
    await expectCkError(dir, /no model\.safetensors or model\.safetensors\.index\.json/, dir);
    writeFileSync(join(dir, "model.safetensors.index.json"), "{not json");
    await expectCkError(dir, /cannot read the index/, join(dir, "model.safetensors.index.json"));
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {} }));
    await expectCkError(dir, /no "weight_map" object/, join(dir, "model.safetensors.index.json"));
    writeFileSync(
      join(dir, "model.safetensors.index.json"),
      JSON.stringify({ weight_map: { x: 3 } }),
    );
    await expectCkError(dir, /not a file name/, join(dir, "model.safetensors.index.json"), "x");
    mkdirSync(join(dir, "sub"));
    writeSharded(join(dir, "sub"), { "s1.safetensors": shardA }, (idx) => {
      idx.weight_map["model.norm.weight"] = "../../etc/passwd";
    });
    await expectCkError(
      join(dir, "sub"),
      /outside the checkpoint directory/,
      join(dir, "sub", "model.safetensors.index.json"),
      "model.norm.weight",
    );
  });
});

// Each case below was a verdict differential found by fuzz/safetensors.ts against the independent
// reading in fuzz/safetensors_spec.ts: JSON.parse accepted what the format / serde_json refuse.
describe("regression: header rules JSON.parse does not enforce (fuzz differential)", () => {
  /** A one-tensor file whose header text is `header`, with `data` bytes of data. */
  const raw = (header: string, data: number): BuildOptions => ({
    rawHeader: header,
    extra: new Uint8Array(data),
  });

  it("duplicate tensor key: U8[4] then F32[1] over the same 4 bytes (TOB-SFTN-7)", async () => {
    const h =
      '{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},' +
      '"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}';
    await expectOpenError({}, raw(h, 4), /duplicate key "w"/);
  });

  it("duplicate __metadata__, metadata entry, or entry field", async () => {
    await expectOpenError(
      {},
      raw('{"__metadata__":{"format":"pt"},"__metadata__":{"format":"pt"}}', 0),
      /duplicate key "__metadata__"/,
    );
    await expectOpenError({}, raw('{"__metadata__":{"a":"1","a":"2"}}', 0), /duplicate key "a"/);
    await expectOpenError(
      {},
      raw('{"t":{"dtype":"F32","dtype":"U8","shape":[4],"data_offsets":[0,4]}}', 4),
      /duplicate key "dtype"/,
    );
    // A key spelled with an escape is the same key.
    await expectOpenError(
      {},
      raw('{"t":{"dtype":"U8","\\u0064type":"U8","shape":[4],"data_offsets":[0,4]}}', 4),
      /duplicate key "dtype"/,
    );
  });

  it("shape and data_offsets entries must be unsigned integer literals ≤ 2^64 − 1", async () => {
    const cases: [string, string][] = [
      ["[4.0]", "[0,4]"],
      ["[4e0]", "[0,4]"],
      ["[3.99999999999999999999]", "[0,4]"],
      ["[4]", "[-0,4]"],
      ["[4]", "[0,4.0]"],
      // 2^64 reads as the same double as 2^64 − 1; serde reads it as a float.
      ["[0,18446744073709551616]", "[0,0]"],
    ];
    for (const [shape, off] of cases) {
      const data = off === "[0,0]" ? 0 : 4;
      await expectOpenError(
        {},
        raw(`{"t":{"dtype":"U8","shape":${shape},"data_offsets":${off}}}`, data),
        /is not an unsigned integer literal of at most 2\^64 - 1/,
        "t",
      );
    }
    // The largest u64 is a valid dimension (the element count is 0 here, as in the crate).
    const path = writeSafetensors(
      join(tempDir(), "m.safetensors"),
      {},
      raw('{"t":{"dtype":"U8","shape":[0,18446744073709551615],"data_offsets":[0,0]}}', 0),
    );
    const f = await SafetensorsFile.open(path);
    expect(f.info("t").shape).toEqual([0, 18446744073709551615]);
    await f.close();
  });

  it("an element count past u64 fails even when a later dimension is 0 (ValidationOverflow)", async () => {
    await expectOpenError(
      {},
      raw('{"t":{"dtype":"U8","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}}', 0),
      /overflows u64 \(ValidationOverflow\)/,
      "t",
    );
  });

  it("lone surrogate escapes, numbers beyond f64, nesting past serde_json's limit", async () => {
    const t = (extra: string) =>
      raw(`{"t":{"dtype":"U8","shape":[4],"data_offsets":[0,4],"x":${extra}}}`, 4);
    await expectOpenError({}, t('"\\ud800"'), /lone surrogate/);
    await expectOpenError({}, t('"\\udc00\\ud800"'), /lone surrogate/);
    await expectOpenError({}, t("1e400"), /number 1e400 is out of range/);
    await expectOpenError({}, t("[".repeat(126) + "]".repeat(126)), /nesting is deeper than 127/);
    // 125 + the two objects around = 127 levels: accepted, as a surrogate pair is.
    for (const ok of ["[".repeat(125) + "]".repeat(125), '"\\ud83d\\ude00"', "-0", "1e-400"]) {
      const path = writeSafetensors(join(tempDir(), "m.safetensors"), {}, t(ok));
      const f = await SafetensorsFile.open(path);
      expect(f.info("t").shape).toEqual([4]);
      await f.close();
    }
  });
});
