// CI-scale fuzzing (a few thousand inputs a target, seconds), the saved corpora replayed, and the
// safetensors differential: one negative file per reference rule, judged by both the reader and
// the independent reading in fuzz/safetensors_spec.ts. The long runs are `npm run fuzz -- --long`
// (docs/reliability.md).
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { parseSafetensors, SafetensorsError, SafetensorsFile } from "@gemma3/model";
import { buildGGUF, str, u32 } from "../../packages/model/test/gguf_writer.js";
import { buildSafetensors } from "../../packages/model/test/safetensors_writer.js";
import { fuzz, Rng, type FuzzStats, type Target } from "../engine.js";
import { generateSafetensors, runSafetensors, safetensorsTarget } from "../safetensors.js";
import { specVerdict } from "../safetensors_spec.js";
import { ggufTarget } from "../gguf.js";
import { imageTarget } from "../image.js";

const CORPUS = fileURLToPath(new URL("../corpus", import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), "gemma3-fuzz-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function corpus(name: string): Uint8Array[] {
  try {
    return readdirSync(join(CORPUS, name))
      .sort()
      .map((f) => new Uint8Array(readFileSync(join(CORPUS, name, f))));
  } catch {
    return [];
  }
}

function expectClean(s: FuzzStats, inputs: number, t: Target): void {
  expect(s.findings.map((f) => f.error.split("\n")[0])).toEqual([]);
  expect(s.inputs).toBe(inputs);
  // No hang: every input within the target's budget (1 s for the parsers).
  expect(s.maxMs).toBeLessThan(t.hangMs);
  // The run explored: many distinct outcomes, accepted files among them.
  expect(s.features).toBeGreaterThan(20);
}

describe("fuzz (CI scale)", () => {
  it("safetensors: 5000 inputs, every verdict equals the spec's, only SafetensorsError", async () => {
    const s = await fuzz(safetensorsTarget, {
      seed: 11,
      inputs: 5000,
      coverageInputs: 0,
      corpus: corpus("safetensors"),
    });
    expectClean(s, 5000, safetensorsTarget);
    expect([...s.outcomes.keys()].some((k) => k.startsWith("accept"))).toBe(true);
  });

  it("gguf: 4000 inputs, only GGUFError, allocation ≤ file size", async () => {
    // Seeds from the tests' writer as well as the target's own generator.
    const written = [
      buildGGUF([["general.architecture", str("gemma3")]], []),
      buildGGUF(
        [
          ["general.alignment", u32(64)],
          ["k", str("v")],
        ],
        [
          { name: "a", type: "F32", ne: [4, 2] },
          { name: "b", type: "Q8_0", ne: [32] },
        ],
      ),
    ];
    const s = await fuzz(ggufTarget, {
      seed: 12,
      inputs: 4000,
      coverageInputs: 0,
      corpus: [...written, ...corpus("gguf")],
    });
    expectClean(s, 4000, ggufTarget);
    expect(s.maxAllocated).toBeLessThanOrEqual(s.maxAllocatedInputBytes + 64);
  });

  it("image: 400 inputs through decode + preprocess, only ImageError", async () => {
    const s = await fuzz(imageTarget, {
      seed: 13,
      inputs: 400,
      coverageInputs: 0,
      corpus: corpus("image"),
    });
    expectClean(s, 400, imageTarget);
  });

  it("is deterministic for a seed", async () => {
    const run = async () => [
      ...(await fuzz(safetensorsTarget, { seed: 5, inputs: 1500, coverageInputs: 0 })).outcomes,
    ];
    expect(await run()).toEqual(await run());
  });

  it("the saved corpora replay without a finding", async () => {
    for (const t of [safetensorsTarget, ggufTarget, imageTarget] as Target[]) {
      const files = corpus(t.name);
      for (const b of files) await t.run(b); // throws on a finding
    }
  });
});

describe("parseSafetensors (the fuzzed entry) judges as SafetensorsFile.open", () => {
  it("same verdict and message on 300 generated files", async () => {
    const rng = new Rng(21);
    let accepted = 0;
    for (let i = 0; i < 300; i++) {
      const b = generateSafetensors(rng);
      const path = join(tmp, `g${i}.safetensors`);
      writeFileSync(path, b);
      const viaFile = await SafetensorsFile.open(path).then(
        async (f) => (await f.close(), "ok"),
        (e: SafetensorsError) => e.message.slice(path.length),
      );
      let viaMemory: string;
      try {
        parseSafetensors(b, path);
        viaMemory = "ok";
        accepted++;
      } catch (e) {
        viaMemory = (e as Error).message.slice(path.length);
      }
      expect(viaMemory).toBe(viaFile);
    }
    expect(accepted).toBeGreaterThan(30);
  });
});

// One file per reference rule (issue #10): the reader and the spec both refuse it, and the spec
// names the rule. Valid twins show each refusal is about that rule alone.
describe("safetensors differential: one negative file per rule", () => {
  const enc = new TextEncoder();
  const file = (header: string, data: number, length?: bigint) => {
    const h = enc.encode(header);
    const out = new Uint8Array(8 + h.length + data);
    new DataView(out.buffer).setBigUint64(0, length ?? BigInt(h.length), true);
    out.set(h, 8);
    return out;
  };
  const both = (b: Uint8Array) => {
    const spec = specVerdict(b);
    let reader = true;
    try {
      parseSafetensors(b);
    } catch (e) {
      expect(e).toBeInstanceOf(SafetensorsError);
      reader = false;
    }
    return { spec, reader };
  };

  const cases: [string, Uint8Array, RegExp][] = [
    ["header of 100 MB + 1", file("{}", 0, 100_000_001n), /HeaderTooLarge/],
    [
      "gap between tensors",
      file(
        `{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}}`,
        5,
      ),
      /gap/,
    ],
    [
      "overlapping tensors",
      file(
        `{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}`,
        3,
      ),
      /overlap/,
    ],
    [
      "trailing bytes",
      file(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}`, 3),
      /trailing bytes/,
    ],
    [
      "shape overflow",
      file(`{"a":{"dtype":"U8","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}}`, 0),
      /ValidationOverflow/,
    ],
    [
      "non-object header",
      file(`[{"dtype":"U8","shape":[2],"data_offsets":[0,2]}]`, 2),
      /not an object/,
    ],
    [
      "duplicate keys",
      file(
        `{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"a":{"dtype":"I16","shape":[1],"data_offsets":[0,2]}}`,
        2,
      ),
      /duplicate key/,
    ],
    [
      "shape × dtype ≠ span",
      file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,2]}}`, 2),
      /TensorInvalidInfo/,
    ],
    [
      "unknown dtype",
      file(`{"a":{"dtype":"F128","shape":[2],"data_offsets":[0,2]}}`, 2),
      /unknown dtype/,
    ],
    [
      "__metadata__ not a string map",
      file(`{"__metadata__":{"n":1}}`, 0),
      /__metadata__ value not a string/,
    ],
    [
      "float literal as a dimension",
      file(`{"a":{"dtype":"U8","shape":[2.0],"data_offsets":[0,2]}}`, 2),
      /not a usize/,
    ],
  ];
  for (const [rule, bytes, specRule] of cases)
    it(rule, () => {
      const { spec, reader } = both(bytes);
      expect(spec.ok).toBe(false);
      expect(spec.rule).toMatch(specRule);
      expect(reader).toBe(false);
    });

  it("the valid twins are accepted by both", () => {
    for (const b of [
      file("{}", 0, 2n),
      file(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}`, 2),
      file(`{"a":{"dtype":"U8","shape":[0,18446744073709551615],"data_offsets":[0,0]}}`, 0),
      file(`{"__metadata__":{"n":"1"}}`, 0),
      buildSafetensors({ w: { dtype: "BF16", shape: [3, 2] }, s: { dtype: "F4", shape: [4] } }),
    ]) {
      const { spec, reader } = both(b);
      expect(spec).toEqual({ ok: true });
      expect(reader).toBe(true);
    }
  });

  it("a verdict mismatch is a finding (the check can fail)", () => {
    const bad = file(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}`, 3);
    const good = file(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}`, 2);
    expect(() => runSafetensors(bad)).not.toThrow();
    expect(() => runSafetensors(bad, () => ({ ok: true }))).toThrow(
      /differential: the reader rejects/,
    );
    expect(() => runSafetensors(good, () => ({ ok: false, rule: "x" }))).toThrow(
      /differential: the reader accepts but the spec rejects \(x\)/,
    );
  });
});
