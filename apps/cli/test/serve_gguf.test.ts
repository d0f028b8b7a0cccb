// `gemma3 serve --model FILE.gguf` with no tokenizer.json beside the file: the engine takes the
// tokenizer embedded in the GGUF (written as convert_hf_to_gguf.py writes it) and answers a chat
// request as the safetensors demo with tokenizer.json does.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Engine, startServer, type EngineOptions, type RunningServer } from "@gemma3/server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeGemma3GGUF } from "../../../packages/model/test/gguf_writer.js";
import { STRINGS } from "../../../packages/tokenizer/test/helpers.js";

const DEMO = join(dirname(dirname(fileURLToPath(import.meta.url))), "demo-model");
const demoEngine = (o: Partial<EngineOptions> = {}) =>
  Engine.load({ model: DEMO, device: "cpu", dtype: "f32", maxSeqs: 8, maxSeqLen: 256, ...o });
const serve = (engine: Engine) => startServer({ port: 0, host: "127.0.0.1", engine });

const tmp = mkdtempSync(join(tmpdir(), "gemma3-serve-gguf-"));
let ref: Engine;
let gguf: Engine;
let srvRef: RunningServer;
let srvGGUF: RunningServer;

beforeAll(async () => {
  const path = await writeGemma3GGUF(DEMO, "BF16", join(tmp, "demo.gguf"), {
    vocab: { tokenizerDir: DEMO },
  });
  ref = await demoEngine();
  gguf = await demoEngine({ model: path, modelId: "demo-model" });
  srvRef = await serve(ref);
  srvGGUF = await serve(gguf);
});
afterAll(async () => {
  await srvRef?.close();
  await srvGGUF?.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe("Engine.load on a GGUF without tokenizer.json", () => {
  it("uses the embedded tokenizer: tokenizer.json's ids on the string table and chat template", () => {
    expect(gguf.tokenizer.vocabSize).toBe(262144);
    for (const { name, text } of STRINGS.strings)
      if (!text.includes("<image_soft_token>"))
        expect(gguf.tokenizer.encode(text), name).toEqual(ref.tokenizer.encode(text));
    const messages = [{ role: "user", content: "Hello there" }];
    expect(gguf.tokenizer.encodeChat(messages).ids).toEqual(ref.tokenizer.encodeChat(messages).ids);
  });

  it("answers /v1/chat/completions like the safetensors demo with tokenizer.json", async () => {
    const ask = async (url: string) => {
      const r = await fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          model: "demo-model",
          messages: [{ role: "user", content: "Tell me about llamas 🦙" }],
          max_tokens: 6,
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
    expect(a.usage.completion_tokens).toBe(b.usage.completion_tokens);
    expect(a.choices[0]!.message.content).toBe(b.choices[0]!.message.content);
  });
});
