// Images with a llama.cpp GGUF pair: the demo checkpoint as a BF16 text GGUF (real vocabulary) +
// its mmproj GGUF as convert_hf_to_gguf.py --mmproj writes it at f16 (model/test/
// gguf_mmproj_writer.ts), through `gemma3 generate --image` (a directory holding both, and
// --model FILE.gguf --mmproj FILE) and the server Engine (/v1/chat/completions with an image).
// Reference: the safetensors path on the checkpoint holding the values the mmproj carries (the
// converter rounds matrices to f16 and stores the Gemma norm as bf16(1 + w)): the same greedy
// tokens and reply; and the original demo checkpoint, whose greedy tokens these roundings leave
// unchanged here.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Engine, startServer, type RunningServer } from "@gemma3/server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { u32, writeGemma3GGUF } from "../../../packages/model/test/gguf_writer.js";
import {
  mmprojGGUF,
  mmprojReferenceCheckpoint,
} from "../../../packages/model/test/gguf_mmproj_writer.js";
import { writeGGUF } from "../../../packages/model/test/gguf_writer.js";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const cli = join(root, "dist", "cli.js");
const DEMO = join(root, "demo-model");
const image = join(
  root,
  "..",
  "..",
  "packages",
  "vision",
  "test",
  "fixtures",
  "images",
  "rgba_640x480.png",
);
const other = join(dirname(image), "gray_500x1400.png");
const tmp = mkdtempSync(join(tmpdir(), "gemma3-cli-mmproj-"));
const pair = join(tmp, "pair");
const ref = join(tmp, "reference");
let text: string;
let mmproj: string;

beforeAll(async () => {
  mkdirSync(pair);
  // The BF16 demo weights are exact in a BF16 GGUF; tokenizer.json beside it, as the demo's 262144
  // embedded tokens stop short of <image_soft_token> (a real 4B GGUF keeps 262208).
  text = await writeGemma3GGUF(DEMO, "BF16", join(pair, "demo-BF16.gguf"), {
    vocab: { tokenizerDir: DEMO },
    metadata: [["tokenizer.ggml.eot_token_id", u32(106)]],
  });
  for (const f of ["tokenizer.json", "tokenizer_config.json"])
    symlinkSync(join(DEMO, f), join(pair, f));
  const g = await mmprojGGUF(DEMO, "F16");
  mmproj = writeGGUF(join(pair, "mmproj-demo-f16.gguf"), g.metadata, g.tensors);
  await mmprojReferenceCheckpoint(DEMO, g, ref);
}, 120_000);
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function gemma3(...args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: "utf8" });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
const describeImage = (img: string, ...model: string[]) =>
  gemma3(
    "generate",
    ...model,
    "--image",
    img,
    "--prompt",
    "What is in this picture?",
    "--max-tokens",
    "8",
    "--ignore-eos",
    "--json",
  );

describe("gemma3 generate --image on a GGUF pair", () => {
  it("a directory with the text GGUF and mmproj-*.gguf, and --model FILE --mmproj FILE: the safetensors path's tokens", () => {
    const per: number[][] = [];
    for (const img of [image, other]) {
      const want = describeImage(img, "--model", ref);
      expect(want.err).toBe("");
      expect(want.code).toBe(0);
      const tokens = (JSON.parse(want.out) as { tokens: number[] }).tokens;
      expect(tokens).toHaveLength(8);
      for (const args of [
        ["--model", pair],
        ["--model", text, "--mmproj", mmproj],
      ]) {
        const r = describeImage(img, ...args);
        expect(r.err, args.join(" ")).toBe("");
        expect(r.code).toBe(0);
        expect(JSON.parse(r.out).tokens, args.join(" ")).toEqual(tokens);
      }
      // The original bf16 checkpoint gives the same greedy tokens (the converter's roundings are
      // below this random model's margins on these images; the features differ slightly).
      expect(JSON.parse(describeImage(img, "--model", DEMO).out).tokens).toEqual(tokens);
      per.push(tokens);
    }
    // The image reaches the model: the two images give different replies.
    expect(per[0]).not.toEqual(per[1]);
  });

  it("the text GGUF alone has no vision tower; --mmproj with a safetensors model is refused", () => {
    const r = describeImage(image, "--model", text);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/no vision tower; pair it with its mmproj GGUF/);
    const s = describeImage(image, "--model", ref, "--mmproj", mmproj);
    expect(s.code).not.toBe(0);
    expect(s.err).toMatch(/an mmproj goes with a GGUF model/);
  });
});

describe("the server Engine on a GGUF pair", () => {
  let gguf: Engine;
  let reference: Engine;
  let textOnly: Engine;
  let srvGGUF: RunningServer;
  let srvRef: RunningServer;
  const load = (model: string, mm?: string) =>
    Engine.load({
      model,
      ...(mm ? { mmproj: mm } : {}),
      device: "cpu",
      dtype: "f32",
      maxSeqs: 4,
      maxSeqLen: 256,
    });
  beforeAll(async () => {
    gguf = await load(text, mmproj);
    reference = await load(ref);
    textOnly = await load(text);
    srvGGUF = await startServer({ port: 0, host: "127.0.0.1", engine: gguf });
    srvRef = await startServer({ port: 0, host: "127.0.0.1", engine: reference });
  }, 120_000);
  afterAll(async () => {
    await srvGGUF?.close();
    await srvRef?.close();
    await textOnly?.close();
  });

  it("has vision with the mmproj (its 16 tokens per image), none without", () => {
    expect(gguf.info.modalities).toEqual(["text", "image"]);
    expect(gguf.vision!.imageTokens.mmTokensPerImage).toBe(16);
    expect(gguf.vision!.preprocess.imageSize).toBe(224);
    expect(gguf.vision!.preprocess.imageMean).toEqual([0.5, 0.5, 0.5]);
    expect(textOnly.info.modalities).toEqual(["text"]);
  });

  it("answers an image chat like the safetensors checkpoint of the same values", async () => {
    const url = `data:image/png;base64,${readFileSync(image).toString("base64")}`;
    const ask = async (base: string) => {
      const r = await fetch(`${base}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          messages: [
            {
              role: "user",
              content: [
                { type: "image_url", image_url: { url } },
                { type: "text", text: "Describe the image." },
              ],
            },
          ],
          max_tokens: 8,
          temperature: 0,
        }),
      });
      expect(r.status).toBe(200);
      return (await r.json()) as {
        choices: { message: { content: string } }[];
        usage: { prompt_tokens: number; completion_tokens: number };
      };
    };
    const a = await ask(srvGGUF.url);
    const b = await ask(srvRef.url);
    expect(a.usage.prompt_tokens).toBe(b.usage.prompt_tokens);
    expect(a.usage.prompt_tokens).toBeGreaterThan(16); // the image's soft tokens are in
    expect(a.usage.completion_tokens).toBe(b.usage.completion_tokens);
    expect(a.choices[0]!.message.content).toBe(b.choices[0]!.message.content);
  });
});
