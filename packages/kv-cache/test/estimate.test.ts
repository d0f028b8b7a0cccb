// The estimator against the numbers, from the published configs (fixtures copied from the
// hub) parsed by @gemma3/model's parser: imported from source here, a test-only edge (the model
// depends on this package, never the reverse).
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../model/src/config.js";
import { estimateKV, formatBytes, hybridCacheBytes, snapshotBytes } from "../src/estimate.js";

const configs = join(dirname(fileURLToPath(import.meta.url)), "../../model/test/fixtures/configs");
const load = (name: string) =>
  parseConfig(
    JSON.parse(readFileSync(join(configs, `gemma-3-${name}-it.config.json`), "utf8")),
    name,
  );
const GiB = 2 ** 30;
const MiB = 2 ** 20;

describe("estimateKV on the published Gemma 3 configs (bf16, batch 1)", () => {
  // [model, context, global layers, local layers, window, 2·Hkv·d·2, global-only, hybrid]
  // hybrid = 2·Hkv·d·2·(L_g·n + L_l·min(n, W)), exact in bytes.
  const cases: [string, number, number, number, number, number, number, number][] = [
    // 27B: 62 layers (10 global), Hkv 16, d 128: 8 KiB per layer-token; 131072 · 8 KiB = 1 GiB.
    ["27b", 131072, 10, 52, 1024, 8192, 62 * GiB, 10 * GiB + 52 * 8 * MiB], // 62.0 vs 10.40625 GiB
    // 12B: 48 layers (8 global), Hkv 8, d 256: 8 KiB per layer-token.
    ["12b", 131072, 8, 40, 1024, 8192, 48 * GiB, 8 * GiB + 40 * 8 * MiB], // 48.0 vs 8.3125 GiB
    // 4B: 34 layers (5 global), Hkv 4, d 256: 4 KiB per layer-token.
    ["4b", 131072, 5, 29, 1024, 4096, 17 * GiB, 2.5 * GiB + 29 * 4 * MiB], // 17.0 vs 2.61328125 GiB
    // 1B: 26 layers (4 global), Hkv 1, d 256, window 512; its context is 32768.
    ["1b", 32768, 4, 22, 512, 1024, 832 * MiB, 128 * MiB + 11 * MiB], // 0.8125 vs 0.1357 GiB
  ];
  for (const [name, n, lg, ll, w, per, globalOnly, hybrid] of cases)
    it(`${name} at ${n} tokens: global-only ${formatBytes(globalOnly)}, hybrid ${formatBytes(hybrid)}`, () => {
      const e = estimateKV(load(name), { context: n });
      expect([e.numGlobal, e.numLocal, e.window, e.bytesPerLayerToken]).toEqual([lg, ll, w, per]);
      expect(e.globalOnly).toBe(globalOnly);
      expect(e.hybrid).toBe(hybrid);
      expect(e.global + e.local).toBe(hybrid);
      expect(e.pageRounding).toBe(0); // n is a multiple of the page size
      expect(e.allocated).toBe(hybrid);
    });

  it("27B prints as the issue states: 62.00 GiB vs 10.41 GiB", () => {
    const e = estimateKV(load("27b"), { context: 131072 });
    expect(formatBytes(e.globalOnly)).toBe("62.00 GiB");
    expect(formatBytes(e.hybrid)).toBe("10.41 GiB");
  });
});

describe("estimateKV options", () => {
  const cfg = load("4b");
  it("batch and dtype scale linearly; fp8 halves bf16", () => {
    const one = estimateKV(cfg, { context: 4096 });
    const b4 = estimateKV(cfg, { context: 4096, batch: 4, kvDtype: "f32" });
    expect(b4.hybrid).toBe(8 * one.hybrid);
    expect(estimateKV(cfg, { context: 4096, kvDtype: "fp8" }).hybrid * 2).toBe(one.hybrid);
  });
  it("short contexts keep min(n, W) tokens in the rings", () => {
    const e = estimateKV(cfg, { context: 300 });
    expect(e.window).toBe(300);
    expect(e.hybrid).toBe(e.globalOnly);
  });
  it("page rounding is reported apart: 1000 tokens in pages of 16 hold 1008", () => {
    const e = estimateKV(cfg, { context: 1000, pageSize: 16 });
    expect(e.pageRounding).toBe(5 * 8 * 4096);
    expect(e.allocated).toBe(e.hybrid + e.pageRounding);
  });
  it("rollback slots add ring rows beyond the window", () => {
    const e = estimateKV(cfg, { context: 4096, rollback: 5 });
    expect(e.ringExtra).toBe(29 * 4 * 4096);
  });
  it("a cache sized for one full sequence allocates the estimate", () => {
    const e = estimateKV(cfg, { context: 4096 });
    const bytes = hybridCacheBytes(cfg, {
      maxSeqs: 1,
      maxSeqLen: 4096,
      pageSize: 16,
      numPages: 256,
      dtype: "bf16",
    });
    expect(bytes).toBe(e.allocated);
  });
  it("snapshot blocks for prefix reuse: ≈ L_local · (W − 1) · 2·Hkv·d·bytes per reusable boundary", () => {
    // 4B bf16, pages of 16: a block is 29 · 16 · 4096 B = 1.8125 MiB; a boundary needs the
    // ⌈1023/16⌉ = 64 blocks under the window: 116 MiB (29 · 1023 · 4096 B = 115.9 MiB).
    const s = snapshotBytes(cfg, { pageSize: 16, dtype: "bf16" });
    expect(s.perBlock).toBe(29 * 16 * 4096);
    expect(s.blocksPerBoundary).toBe(64);
    expect(s.perBoundary).toBe(116 * MiB);
    expect(29 * 1023 * 4096).toBeLessThanOrEqual(s.perBoundary);
    const withSnap = hybridCacheBytes(cfg, {
      maxSeqs: 1,
      maxSeqLen: 4096,
      pageSize: 16,
      numPages: 256,
      snapshotBlocks: 64,
      dtype: "bf16",
    });
    expect(withSnap - estimateKV(cfg, { context: 4096 }).allocated).toBe(116 * MiB);
  });
  it("rejects nonsense", () => {
    expect(() => estimateKV(cfg, { context: 0 })).toThrow(/context/);
    expect(() => estimateKV(cfg, { context: 10, batch: 1.5 })).toThrow(/batch/);
  });
});
