// `gemma3 tokenize` and `gemma3 generate --prompt` as a user runs them (built dist/cli.js, child
// process), on the real Gemma 3 tokenizer that the build copies into demo-model/.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const cli = join(root, "dist", "cli.js");
const tiny1b = join(root, "..", "..", "packages", "model", "test", "fixtures", "tiny-1b");
const tmp = mkdtempSync(join(tmpdir(), "gemma3-tokenize-"));
// The parsed-tokenizer cache goes to a temporary directory, not ~/.cache.
const env = { ...process.env, GEMMA3_CACHE_DIR: join(tmp, "cache") };
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function gemma3(...args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", env });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function file(name: string, data: string | Uint8Array): string {
  const p = join(tmp, name);
  writeFileSync(p, data);
  return p;
}

// A real image (a header alone is refused, as HF's load_image would): 1600 × 300, 4 crops.
const wide = join(root, "../../packages/vision/test/fixtures/images/wide_1600x300.png");

const count = (ids: number[], id: number) => ids.filter((x) => x === id).length;

describe("gemma3 tokenize", () => {
  it('--text "Hello world!" prints the FACTS ids with the demo tokenizer; --json adds pieces', () => {
    const r = gemma3("tokenize", "--text", "Hello world!");
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toBe("2,9259,1902,236888\n");
    const j = JSON.parse(
      gemma3("tokenize", "--text", "Hello world!", "--json", "--no-special-tokens").out,
    );
    expect(j).toEqual({ ids: [9259, 1902, 236888], pieces: ["Hello", "▁world", "!"] });
  });

  it("--chat renders the model's template: <bos> once, system folded, images expanded (P&S crops counted)", () => {
    const chat = file(
      "chat.json",
      JSON.stringify([
        { role: "system", content: "Be brief." },
        { role: "user", content: [{ type: "image" }, { type: "text", text: "What is this?" }] },
      ]),
    );
    const j = JSON.parse(
      gemma3("tokenize", "--chat", chat, "--image", wide, "--pan-and-scan", "--json").out,
    );
    expect(
      j.text.startsWith(
        "<bos><start_of_turn>user\nBe brief.\n\nHere is the original image \n\n<start_of_image>",
      ),
    ).toBe(true);
    expect(j.text.endsWith("What is this?<end_of_turn>\n<start_of_turn>model\n")).toBe(true);
    expect(j.num_crops).toEqual([4]);
    expect(count(j.ids, 2)).toBe(1);
    expect(count(j.ids, 262144)).toBe(5 * 256);
    expect(j.pieces).toHaveLength(j.ids.length);
    // Without Pan & Scan: one image, 256 soft tokens.
    const plain = gemma3("tokenize", "--chat", chat, "--image", wide);
    expect(plain.code).toBe(0);
    const ids = plain.out.trim().split(",").map(Number);
    expect(count(ids, 262144)).toBe(256);
  });

  it("surfaces the template's error, and bad arguments exit 2", () => {
    const bad = file(
      "bad.json",
      JSON.stringify({
        messages: [
          { role: "user", content: "a" },
          { role: "user", content: "b" },
        ],
      }),
    );
    const r = gemma3("tokenize", "--chat", bad);
    expect(r.code).toBe(1);
    expect(r.err).toContain("Conversation roles must alternate user/assistant/user/assistant/...");
    const img = file("img.json", JSON.stringify([{ role: "user", content: [{ type: "image" }] }]));
    const mismatch = gemma3("tokenize", "--chat", img, "--image", "a.png", "--image", "b.png");
    expect(mismatch.code).toBe(2);
    expect(mismatch.err).toMatch(/1 image part\(s\) but 2 --image/);
    expect(gemma3("tokenize").code).toBe(2);
    const noTok = gemma3("tokenize", "--model", tiny1b, "--text", "hi");
    expect(noTok.code).toBe(2);
    expect(noTok.err).toMatch(/tokenizer\.json/);
  });
});

describe("gemma3 generate --prompt", () => {
  it('encodes the prompt with <bos> (same tokens as --prompt-ids), adds "text" to the JSON', () => {
    const a = JSON.parse(
      gemma3("generate", "--prompt", "Hello world!", "--max-tokens", "4", "--json", "--ignore-eos")
        .out,
    );
    const b = JSON.parse(
      gemma3(
        "generate",
        "--prompt-ids",
        "2,9259,1902,236888",
        "--max-tokens",
        "4",
        "--json",
        "--ignore-eos",
      ).out,
    );
    expect(a.tokens).toHaveLength(4);
    expect(a.tokens).toEqual(b.tokens);
    expect(Object.keys(a)).toEqual(["tokens", "finish_reason", "text"]);
    expect(typeof a.text).toBe("string");
    expect(a.text).toBe(b.text);
    const t = gemma3("generate", "--prompt", "Hello world!", "--max-tokens", "4", "--ignore-eos");
    expect(t.code).toBe(0);
    expect(t.out).toBe(a.text + "\n");
  });

  it("needs a tokenizer.json beside the weights, and one of --prompt / --prompt-ids", () => {
    const r = gemma3("generate", "--model", tiny1b, "--prompt", "hi");
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--prompt needs .*tokenizer\.json/);
    expect(gemma3("generate", "--prompt", "hi", "--prompt-ids", "2").code).toBe(2);
  });
});
