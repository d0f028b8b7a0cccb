// `gemma3 bench` as a user runs it (built dist/cli.js, CPU): the JSON report describes the model it
// ran (a checkpoint, or random weights at a config's shape), one decode row per batch size with
// its runs, and the prefill row; bad arguments are usage errors. (Speed itself is measured on the
// GPU machine and recorded in docs/benchmarks.md, not asserted here.)
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const cli = join(root, "dist", "cli.js");
const config = join(
  root,
  "..",
  "..",
  "packages",
  "model",
  "test",
  "fixtures",
  "tiny-1b",
  "config.json",
);

/** Runs the CLI with process.env plus `env`; an undefined value removes that variable. */
function gemma3Env(env: Record<string, string | undefined>, ...args: string[]) {
  const merged = { ...process.env, ...env };
  for (const k of Object.keys(merged)) if (merged[k] === undefined) delete merged[k];
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", env: merged });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
const gemma3 = (...args: string[]) => gemma3Env({}, ...args);

/** `gemma3 bench --model random:<tiny-1b config> --device cpu ARGS --json F`: the run and F. */
function benchRandom(args: string[], env: Record<string, string | undefined> = {}) {
  const json = join(mkdtempSync(join(tmpdir(), "bench-")), "bench.json");
  const r = gemma3Env(
    env,
    "bench",
    "--model",
    `random:${config}`,
    "--device",
    "cpu",
    ...args,
    "--json",
    json,
  );
  expect(r.err).toBe("");
  expect(r.code).toBe(0);
  return { out: r.out, json: JSON.parse(readFileSync(json, "utf8")) };
}

describe("gemma3 bench", () => {
  it("random:CONFIG: reports the config's shape, a decode row per batch and the prefill", () => {
    const args = [
      ...["--quantize", "q8_0", "--quantize-head", "q8_0"],
      ...["--batch", "1,3", "--tokens", "5", "--prefill", "40", "--batch-tokens", "16"],
    ];
    const r = benchRandom([...args, "--runs", "2"]);
    const cfg = JSON.parse(readFileSync(config, "utf8"));
    const out = r.json;
    expect(out.shape).toMatchObject({
      layers: cfg.num_hidden_layers,
      hidden: cfg.hidden_size,
      vocab: cfg.vocab_size,
    });
    expect(out.quantize).toBe("q8_0");
    expect(out.quantize_head).toBe("q8_0");
    expect(r.out).toMatch(/f32 \+ q8_0, head q8_0;/);
    expect(out.decode.map((d: { batch: number }) => d.batch)).toEqual([1, 3]);
    for (const d of out.decode) {
      expect(d.runs).toHaveLength(2);
      expect(d.aggregate_tok_s).toBeGreaterThan(0);
      expect(d.per_request_tok_s).toBeGreaterThan(0);
    }
    // Weights a decode step reads, counted here from the config: every linear weight and the tied
    // head in q8_0 (34 bytes per 32 weights), the norms in f32; fused views not counted twice.
    const { hidden_size: h, intermediate_size: f, head_dim: hd } = cfg;
    const [hq, hkv] = [cfg.num_attention_heads, cfg.num_key_value_heads];
    const q8 = (n: number, k: number) => (n * k * 34) / 32;
    const layer =
      q8((hq + 2 * hkv) * hd, h) + q8(h, hq * hd) + q8(2 * f, h) + q8(h, f) + 4 * (4 * h + 2 * hd);
    const stepBytes = cfg.num_hidden_layers * layer + 4 * h + q8(cfg.vocab_size, h);
    expect(out.weight_bytes_per_step).toBe(stepBytes);
    for (const d of out.decode)
      expect(d.weight_gb_s).toBeCloseTo((stepBytes * d.per_request_tok_s) / 1e9, 9);
    expect(r.out).toMatch(new RegExp(`${(stepBytes / 1e9).toFixed(2)} GB of weights a step`));
    expect(out.prefill.prompt).toBe(40);
    expect(out.batch_tokens).toBe(16); // the 40-token prompt prefilled in chunks of 16
    expect(out.prefill.runs).toHaveLength(2);
    expect(out.prefill.tok_s).toBeCloseTo(40 / (out.prefill.ttft_ms / 1000), 6);
    expect(r.out).toMatch(/batch {3}3: .* tok\/s aggregate/);
  });

  it("pipelines the decode steps by default (reported); GEMMA3_ASYNC_DECODE=0 does not", () => {
    const run = (flag: string | undefined) =>
      benchRandom(["--batch", "1,2", "--tokens", "6", "--prefill", "0", "--runs", "1"], {
        GEMMA3_ASYNC_DECODE: flag,
      });
    const on = run(undefined);
    // 6 tokens a run: the prefill's, one step entering the pipeline, then 4 pipelined steps (the
    // batch decodes together); two runs (warm-up and one measured) at batch 1 and two at batch 2.
    expect(on.json).toMatchObject({ async_decode: true, pipelined_steps: 2 * 4 + 2 * 4 });
    expect(on.json).toMatchObject({ quantize: null, quantize_head: null });
    expect(on.out).toMatch(/async decode \(16 steps pipelined\)/);
    expect(run("0").json).toMatchObject({ async_decode: false, pipelined_steps: 0 });
  });

  it("the bundled demo checkpoint by default; bad arguments are usage errors (exit 2)", () => {
    const r = gemma3(
      "bench",
      "--device",
      "cpu",
      "--batch",
      "2",
      "--tokens",
      "3",
      "--prefill",
      "0",
      "--runs",
      "1",
    );
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/demo-model on cpu/);
    expect(r.out).not.toMatch(/prefill/);
    expect(gemma3("bench", "--batch", "0").code).toBe(2);
    expect(gemma3("bench", "--quantize", "q3_x").code).toBe(2);
    const head = gemma3("bench", "--quantize-head", "fp8_e4m3");
    expect(head.code).toBe(2);
    expect(head.err).toMatch(/--quantize-head is one of q8_0, q4_0, q4_k, q5_k, q6_k/);
    expect(gemma3("bench", "--tensor-parallel", "0").code).toBe(2);
    expect(gemma3("bench", "--batch-tokens", "0").code).toBe(2);
  });

  it("random:CONFIG with --tensor-parallel 2 runs on two CPU ranks", () => {
    const out = benchRandom([
      "--tensor-parallel",
      "2",
      "--batch",
      "2",
      "--tokens",
      "4",
      "--prefill",
      "0",
      "--runs",
      "1",
    ]).json;
    expect(out.tensor_parallel).toBe(2);
    expect(out.decode[0].aggregate_tok_s).toBeGreaterThan(0);
    // Weights a step reads over both ranks (f32): each rank's q heads, the one KV head (replicated),
    // half the MLP, its norms, and its vocabulary rows padded to ceil(V / 2) plus the zero row.
    const cfg = JSON.parse(readFileSync(config, "utf8"));
    const { hidden_size: h, intermediate_size: f, head_dim: hd, vocab_size: v } = cfg;
    const [hq, hkv] = [cfg.num_attention_heads / 2, cfg.num_key_value_heads];
    const layer = (hq + 2 * hkv) * hd * h + h * hq * hd + 2 * (f / 2) * h + h * (f / 2);
    const rank = cfg.num_hidden_layers * (layer + 4 * h + 2 * hd) + h + (Math.ceil(v / 2) + 1) * h;
    expect(out.weight_bytes_per_step).toBe(2 * 4 * rank);
  });
});
