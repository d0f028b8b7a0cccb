// The gemma3 command as a user runs it (built dist/cli.js in a child process).
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const cli = join(root, "dist", "cli.js");
const fixtures = join(root, "..", "..", "packages", "model", "test", "fixtures");
const configs = join(fixtures, "..", "fixtures", "configs");

function gemma3(...args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: "utf8" });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe("gemma3 generate", () => {
  it("prints the HF greedy tokens and consistent logprobs as JSON", () => {
    const g = JSON.parse(readFileSync(join(fixtures, "tiny-27b", "goldens.json"), "utf8"));
    const r = gemma3(
      "generate",
      "--model",
      join(fixtures, "tiny-27b"),
      "--prompt-ids",
      g.prompt_ids.join(","),
      "--max-tokens",
      "24",
      "--temperature",
      "0",
      "--json",
      "--logprobs",
      "5",
      "--device",
      "cpu",
      "--ignore-eos",
    );
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    const out = JSON.parse(r.out);
    expect(out.tokens).toEqual(g.greedy_ids);
    expect(out.logprobs).toHaveLength(24);
    for (const lp of out.logprobs) {
      expect(lp.top).toHaveLength(5);
      expect(lp.top[0].token).toBe(lp.token); // greedy: the chosen token is the most likely
      expect(lp.logprob).toBeLessThanOrEqual(0);
      for (let i = 1; i < 5; i++)
        expect(lp.top[i].logprob).toBeLessThanOrEqual(lp.top[i - 1].logprob);
      const mass = lp.top.reduce((a: number, t: { logprob: number }) => a + Math.exp(t.logprob), 0);
      expect(mass).toBeLessThanOrEqual(1 + 1e-9);
    }
  });

  it("greedy without logprobs (argmax on the device) gives the same HF greedy tokens", () => {
    const g = JSON.parse(readFileSync(join(fixtures, "tiny-1b", "goldens.json"), "utf8"));
    const r = gemma3(
      "generate",
      "--model",
      join(fixtures, "tiny-1b"),
      "--prompt-ids",
      g.prompt_ids.join(","),
      "--max-tokens",
      "24",
      "--json",
      "--ignore-eos",
    );
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out).tokens).toEqual(g.greedy_ids);
  });

  it("runs the bundled demo checkpoint without --model, and says it is random", () => {
    const r = gemma3("generate", "--prompt-ids", "2,9259,1902", "--max-tokens", "4", "--json");
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/demo checkpoint \(random weights\)/);
    expect(JSON.parse(r.out).tokens).toHaveLength(4);
  });

  it("sampling with a seed is reproducible", () => {
    const args = [
      "generate",
      "--model",
      join(fixtures, "tiny-1b"),
      "--prompt-ids",
      "2,5,9",
      "--max-tokens",
      "8",
      "--temperature",
      "1",
      "--seed",
      "42",
      "--json",
      "--ignore-eos",
    ];
    expect(gemma3(...args).out).toBe(gemma3(...args).out);
  });

  it("bad input gives a clear error and a non-zero exit", () => {
    const ids = gemma3("generate", "--prompt-ids", "2,x");
    expect(ids.code).toBe(2);
    expect(ids.err).toMatch(/--prompt-ids/);
    const big = gemma3(
      "generate",
      "--model",
      join(fixtures, "tiny-1b"),
      "--prompt-ids",
      "2,999999",
    );
    expect(big.code).toBe(1);
    expect(big.err).toMatch(/999999/);
    const missing = gemma3("generate", "--model", "/nonexistent", "--prompt-ids", "2");
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/config\.json/);
    expect(gemma3("frobnicate").code).toBe(2);
  });
});

describe("gemma3 inspect", () => {
  const cases: [string, number, string, number][] = [
    // file, layers, global layer list, KV bytes per token with every layer caching (bf16)
    ["gemma-3-1b-it.config.json", 26, "5, 11, 17, 23", 26 * 2 * 1 * 256 * 2],
    ["gemma-3-4b-it.config.json", 34, "5, 11, 17, 23, 29", 34 * 2 * 4 * 256 * 2],
    ["gemma-3-12b-it.config.json", 48, "5, 11, 17, 23, 29, 35, 41, 47", 48 * 2 * 8 * 256 * 2],
    [
      "gemma-3-27b-it.config.json",
      62,
      "5, 11, 17, 23, 29, 35, 41, 47, 53, 59",
      62 * 2 * 16 * 128 * 2,
    ],
  ];
  for (const [file, layers, globals, kv] of cases)
    it(`${file}: ${layers} layers, 1 global in 6, ${kv} KV bytes per token`, () => {
      const r = gemma3("inspect", "--config", join(configs, file));
      expect(r.code).toBe(0);
      expect(r.out).toMatch(new RegExp(`layers\\s+${layers}:`));
      expect(r.out).toContain(`(${globals})`);
      expect(r.out).toContain(`${kv.toLocaleString("en-US")} with every layer`);
      const globalOnly =
        (layers === 26 ? 4 : layers === 34 ? 5 : layers === 48 ? 8 : 10) * (kv / layers);
      expect(r.out).toContain(`${globalOnly.toLocaleString("en-US")} in steady state`);
    });
});

describe("gemma3 inspect --context (the KV memory estimator)", () => {
  it("27B at 131072 tokens, bf16, batch 1: global-only 62.0 GiB vs hybrid 10.41 GiB", () => {
    const r = gemma3(
      "inspect",
      "--config",
      join(configs, "gemma-3-27b-it.config.json"),
      "--context",
      "131072",
    );
    expect(r.code).toBe(0);
    // 2·Hkv·d·bytes = 2·16·128·2 = 8192 bytes per layer per token
    expect(r.out).toContain(
      `global-only     62.00 GiB (${(62 * 131072 * 8192).toLocaleString("en-US")} bytes)`,
    );
    expect(r.out).toContain(
      `hybrid total    10.41 GiB (${(10 * 131072 * 8192 + 52 * 1024 * 8192).toLocaleString("en-US")} bytes)`,
    );
  });
  it("asks for --context before --batch or --kv-dtype", () => {
    const r = gemma3(
      "inspect",
      "--config",
      join(configs, "gemma-3-4b-it.config.json"),
      "--batch",
      "4",
    );
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--context/);
  });
});
