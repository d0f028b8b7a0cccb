// generate() end to end with the demo checkpoint (random weights, the real Gemma 3 vocabulary of
// 262144) and its tokenizer: text prompt in, UTF-8-safe text deltas out, stop strings over real
// token boundaries, logprobs over the full vocabulary. Skips when the demo checkpoint is absent.
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadTextModel, type Gemma3TextModel } from "@gemma3/model";
import { Gemma3Tokenizer } from "@gemma3/tokenizer";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generate, type GenerationRequest, type GenerationSummary } from "../src/index.js";

const demo = join(dirname(fileURLToPath(import.meta.url)), "../../../apps/cli/demo-model");
const present = ["config.json", "model.safetensors", "tokenizer.json"].every((f) =>
  existsSync(join(demo, f)),
);

describe.skipIf(!present)("generate with the demo checkpoint and tokenizer", () => {
  let model: Gemma3TextModel;
  let tok: Gemma3Tokenizer;
  beforeAll(async () => {
    model = await loadTextModel(demo, { device: "cpu", dtype: "f32" });
    tok = await Gemma3Tokenizer.fromDir(demo);
  });
  afterAll(() => model?.dispose());

  async function run(req: GenerationRequest) {
    const deltas: string[] = [];
    let sum: GenerationSummary | undefined;
    for await (const e of generate(model, tok, req)) {
      if (e.type === "delta") deltas.push(e.text);
      else sum = e;
    }
    expect(deltas.join("")).toBe(sum!.text);
    for (const d of deltas) expect(d).not.toContain("\ufffd");
    return { deltas, sum: sum! };
  }

  it("streams text that decodes the tokens; stop strings cut across token boundaries", async () => {
    const prompt = "The quick brown fox";
    const { sum } = await run({ prompt, maxTokens: 24, temperature: 0, ignoreEos: true });
    expect(sum.usage.promptTokens).toBe(tok.encode(prompt).length);
    expect(sum.text).toBe(tok.decode(sum.tokenIds, { skipSpecialTokens: true }));
    // A stop string made of the end of one token's text and the start of the next one's.
    const pieces = sum.tokenIds.map((id) => tok.decode([id], { skipSpecialTokens: true }));
    const k = pieces.findIndex(
      (p, i) => i > 2 && p.length >= 2 && (pieces[i + 1]?.length ?? 0) >= 2,
    );
    expect(k).toBeGreaterThan(0);
    const at = pieces.slice(0, k).join("").length + pieces[k]!.length - 1;
    const stop = sum.text.slice(at, at + 3);
    const cut = await run({ prompt, maxTokens: 24, temperature: 0, ignoreEos: true, stop: [stop] });
    expect(cut.sum).toMatchObject({ finishReason: "stop", stopReason: stop });
    expect(cut.sum.text).toBe(sum.text.slice(0, sum.text.indexOf(stop)));
    expect(cut.sum.tokenIds).toEqual(sum.tokenIds.slice(0, k + 2));
  });

  it("samples over the 262144-token vocabulary with logprobs (seeded, reproducible)", async () => {
    const req: GenerationRequest = {
      prompt: "Hello",
      maxTokens: 8,
      temperature: 0.8,
      topP: 0.9,
      topK: 64,
      seed: 7,
      logprobs: 5,
      ignoreEos: true,
    };
    const a = await run(req);
    const b = await run(req);
    expect(a.sum.tokenIds).toEqual(b.sum.tokenIds);
    for (const lp of a.sum.logprobs!) {
      expect(lp.top).toHaveLength(5);
      expect(lp.logprob).toBeLessThanOrEqual(lp.top[0]!.logprob + 1e-9);
      // The random demo weights give a near-flat distribution: logprobs ≈ −log(262144) ± a bit.
      expect(lp.logprob).toBeGreaterThan(-Math.log(262144) - 5);
    }
  });
});
