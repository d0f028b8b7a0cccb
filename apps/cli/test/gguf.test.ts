// `gemma3 generate` on a .gguf --model and with --quantize / --quantize-head (built dist/cli.js in a
// child process; serve and chat refuse a bad --quantize-head the same way).
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { writeGemma3GGUF } from "../../../packages/model/test/gguf_writer.js";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const cli = join(root, "dist", "cli.js");
const fixtures = join(root, "..", "..", "packages", "model", "test", "fixtures");
const tmp = mkdtempSync(join(tmpdir(), "gemma3-cli-gguf-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function gemma3(...args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: "utf8" });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const goldens = (name: string) =>
  JSON.parse(readFileSync(join(fixtures, name, "goldens.json"), "utf8")) as {
    prompt_ids: number[];
    greedy_ids: number[];
  };

const greedy = (model: string, ids: number[], ...extra: string[]) =>
  gemma3(
    "generate",
    "--model",
    model,
    "--prompt-ids",
    ids.join(","),
    "--max-tokens",
    "24",
    "--json",
    "--ignore-eos",
    "--device",
    "cpu",
    ...extra,
  );

describe("gemma3 generate --model FILE.gguf", () => {
  for (const name of ["tiny-1b", "tiny-27b"])
    it(`${name} as an F32 GGUF gives HF's 24 greedy tokens`, async () => {
      const g = goldens(name);
      const path = await writeGemma3GGUF(join(fixtures, name), "F32", join(tmp, `${name}.gguf`));
      const r = greedy(path, g.prompt_ids);
      expect(r.err).toBe("");
      expect(r.code).toBe(0);
      expect(JSON.parse(r.out).tokens).toEqual(g.greedy_ids);
    });

  it("a directory holding one Q8_0 GGUF runs it", async () => {
    const dir = mkdtempSync(join(tmp, "q8-"));
    await writeGemma3GGUF(join(fixtures, "tiny-1b"), "Q8_0", join(dir, "tiny-Q8_0.gguf"));
    const r = greedy(dir, goldens("tiny-1b").prompt_ids);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out).tokens).toHaveLength(24);
  });

  it("a missing .gguf, and a GGUF with neither an embedded tokenizer nor tokenizer.json for --prompt, give clear errors", async () => {
    const missing = gemma3("generate", "--model", join(tmp, "nope.gguf"), "--prompt-ids", "2");
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/nope\.gguf: file not found/);
    const dir = mkdtempSync(join(tmp, "notok-"));
    const path = await writeGemma3GGUF(join(fixtures, "tiny-1b"), "Q4_0", join(dir, "m.gguf"), {
      vocab: "none",
    });
    const r = gemma3("generate", "--model", path, "--prompt", "hello");
    expect(r.code).toBe(2);
    expect(r.err).toMatch(
      /--prompt needs a tokenizer: .*m\.gguf has no embedded tokenizer \(tokenizer\.ggml\.tokens\) and there is no tokenizer\.json beside it/,
    );
  });
});

describe("the tokenizer embedded in a GGUF (no tokenizer.json beside it)", () => {
  // The demo checkpoint (real Gemma 3 vocabulary size, random weights) as a BF16 GGUF carrying the
  // real tokenizer as convert_hf_to_gguf.py writes it; the demo directory has tokenizer.json.
  const demo = join(root, "demo-model");
  let gguf: string;
  const demoGGUF = async () =>
    (gguf ??= await writeGemma3GGUF(
      demo,
      "BF16",
      join(mkdtempSync(join(tmp, "emb-")), "demo.gguf"),
      {
        vocab: { tokenizerDir: demo },
      },
    ));
  const text = "Hello  world! <start_of_turn>user\n안녕하세요 🦙\t\tcode()\u2581";

  it("gemma3 tokenize --model demo.gguf gives tokenizer.json's ids and pieces", async () => {
    const path = await demoGGUF();
    const ours = gemma3("tokenize", "--model", path, "--text", text, "--json");
    const ref = gemma3("tokenize", "--text", text, "--json");
    expect(ours.err).toBe("");
    expect(ours.code).toBe(0);
    expect(JSON.parse(ours.out)).toEqual(JSON.parse(ref.out));
    expect(JSON.parse(ours.out).ids.length).toBeGreaterThan(10);
  });

  it("gemma3 generate --model demo.gguf --prompt: the same prompt ids, tokens and text as the safetensors demo with tokenizer.json", async () => {
    const path = await demoGGUF();
    const args = [
      "--prompt",
      text,
      "--max-tokens",
      "6",
      "--ignore-eos",
      "--json",
      "--device",
      "cpu",
    ];
    const ours = gemma3("generate", "--model", path, ...args);
    expect(ours.err).toBe("");
    expect(ours.code).toBe(0);
    const ref = gemma3("generate", "--model", demo, ...args);
    expect(ref.code).toBe(0);
    const a = JSON.parse(ours.out) as { tokens: number[]; text: string };
    const b = JSON.parse(ref.out) as { tokens: number[]; text: string };
    expect(a.tokens).toHaveLength(6);
    expect(a.tokens).toEqual(b.tokens);
    expect(a.text).toBe(b.text);
  });
});

describe("gemma3 generate --quantize", () => {
  it("q8_0 keeps most of HF's greedy tokens on tiny-27b; q4_0 runs", () => {
    const g = goldens("tiny-27b");
    const q8 = greedy(join(fixtures, "tiny-27b"), g.prompt_ids, "--quantize", "q8_0");
    expect(q8.code).toBe(0);
    const tokens = JSON.parse(q8.out).tokens as number[];
    expect(tokens).toHaveLength(24);
    expect(tokens[0]).toBe(g.greedy_ids[0]);
    const q4 = greedy(
      join(fixtures, "tiny-1b"),
      goldens("tiny-1b").prompt_ids,
      "--quantize",
      "q4_0",
    );
    expect(q4.code).toBe(0);
    expect(JSON.parse(q4.out).tokens).toHaveLength(24);
  });

  it("an unknown format is a usage error", () => {
    const r = gemma3("generate", "--prompt-ids", "2", "--quantize", "q3_k");
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--quantize: one of q8_0, q4_0, fp8_e4m3, q4_k, q5_k, q6_k, got "q3_k"/);
  });

  it("--quantize-head q8_0 (the tied head) runs; fp8_e4m3 or an unknown format is a usage error", () => {
    const g = goldens("tiny-1b");
    const r = greedy(join(fixtures, "tiny-1b"), g.prompt_ids, "--quantize-head", "q8_0");
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out).tokens).toHaveLength(24);
    // Refused while parsing, before any model is read (serve and chat: before Engine.load).
    for (const [args, bad] of [
      [["generate", "--prompt-ids", "2"], "fp8_e4m3"],
      [["generate", "--prompt-ids", "2"], "q3_k"],
      [["serve"], "fp8_e4m3"],
      [["chat"], "q3_k"],
    ] as const) {
      const e = gemma3(...args, "--quantize-head", bad);
      expect(e.code, `${args[0]} ${bad}`).toBe(2);
      expect(e.err).toContain(`--quantize-head: one of q8_0, q4_0, q4_k, q5_k, q6_k, got "${bad}"`);
    }
  });

  it("fp8_e4m3 is refused with the reason until the layers apply weight scales", () => {
    const r = gemma3(
      "generate",
      "--model",
      join(fixtures, "tiny-1b"),
      "--prompt-ids",
      "2",
      "--quantize",
      "fp8_e4m3",
    );
    if (r.code === 0) return; // wired: the model package's tests check the numbers
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/fp8_e4m3.*per-row weight scales/);
  });
});
