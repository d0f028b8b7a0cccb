// Constrained decoding end to end with the demo checkpoint (random weights, the real Gemma 3
// vocabulary of 262144, CPU): the device sampler with masks against the host reference (same
// tokens, logprobs of the masked distribution as vLLM reports them), and response_format requests
// through the scheduler that finish in JSON which parses and validates (ajv). Skips when the demo
// checkpoint is absent.
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadTextModel, type Gemma3TextModel } from "@gemma3/model";
import { Tensor } from "@gemma3/native";
import { Gemma3Tokenizer } from "@gemma3/tokenizer";
import { Ajv2020 } from "ajv/dist/2020.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  GenerationError,
  JsonConstraint,
  Rng,
  Sampler,
  SamplingState,
  Scheduler,
  TokenVocab,
  compileResponseFormat,
  logSumExp,
  maskHas,
  maskedRow,
  sampleReference,
  type GenerationSummary,
  type JsonSchema,
  type ResponseFormat,
  type SamplingParams,
} from "../src/index.js";

const demo = join(dirname(fileURLToPath(import.meta.url)), "../../../apps/cli/demo-model");
const present = ["config.json", "model.safetensors", "tokenizer.json"].every((f) =>
  existsSync(join(demo, f)),
);
const V = 262144;
const STOP = [1, 106];
const ajv = new Ajv2020({ strict: false });

// Enum-heavy, bounded strings and numbers: a random model reaches the end well within the budget.
const ORDER: JsonSchema = {
  type: "object",
  properties: {
    item: { enum: ["apple", "pear", "fig"] },
    qty: { type: "integer", minimum: 1, maximum: 9 },
    note: { type: "string", maxLength: 4 },
    rush: { type: "boolean" },
    sizes: { type: "array", items: { enum: ["S", "M", "L"] }, minItems: 1, maxItems: 2 },
  },
  required: ["item", "qty", "note", "sizes"],
  additionalProperties: false,
};
const format = (schema: JsonSchema): ResponseFormat => ({
  type: "json_schema",
  json_schema: { name: "order", schema, strict: true },
});

describe.skipIf(!present)("constrained decoding with the demo checkpoint", () => {
  let model: Gemma3TextModel;
  let tok: Gemma3Tokenizer;
  let vocab: TokenVocab;
  beforeAll(async () => {
    model = await loadTextModel(demo, { device: "cpu", dtype: "f32" });
    tok = await Gemma3Tokenizer.fromDir(demo);
    vocab = TokenVocab.of(tok, V);
  });
  afterAll(() => model?.dispose());

  it("the device sampler with masks gives the reference's tokens and masked logprobs", async () => {
    const rng = new Rng(7n);
    const B = 3;
    const host = new Float32Array(B * V);
    for (let i = 0; i < host.length; i++) host[i] = (rng.next() - 0.5) * 8;
    const logits = Tensor.from(host, [B, V], "f32", "cpu");
    const sampler = new Sampler();
    try {
      // Row 0: after `{"` of a schema (few tokens allowed: the ids go up as a keep list);
      // row 1: inside a free string (most allowed: a drop list); row 2: no constraint.
      const make = (row: number): JsonConstraint | null => {
        if (row === 2) return null;
        const rf: ResponseFormat = row === 0 ? format(ORDER) : { type: "json_object" };
        const c = new JsonConstraint(compileResponseFormat(rf)!, vocab, STOP);
        for (const id of tok.encode(row === 0 ? '{"' : '{"k": "ab', { addSpecialTokens: false }))
          c.accept(id);
        return c;
      };
      const cases: SamplingParams[] = [
        { temperature: 0, logprobs: 3 },
        { temperature: 1, seed: 5, logprobs: 2 },
        { temperature: 0.7, topK: 20, seed: 9 },
        { topP: 0.9, seed: 3, logprobs: 0 },
      ];
      for (const params of cases) {
        const dev = [0, 1, 2].map(
          (row) => new SamplingState(params, { vocabSize: V, constraint: make(row) }),
        );
        const ref = [0, 1, 2].map(
          (row) => new SamplingState(params, { vocabSize: V, constraint: make(row) }),
        );
        const masks = dev.map((s) => s.mask()?.slice() ?? null);
        const got = await sampler.sample(
          logits,
          dev.map((state, row) => ({ row, state })),
        );
        for (let row = 0; row < B; row++) {
          const x = host.subarray(row * V, row * V + V);
          const want = sampleReference(x, ref[row]!);
          const what = `${JSON.stringify(params)} row ${row}`;
          expect(got[row]!.token, what).toBe(want.token);
          const m = masks[row];
          if (m) {
            expect(maskHas(m, got[row]!.token), what).toBe(true);
            // vLLM: logprobs of the bitmasked logits (log-softmax over the allowed tokens).
            const masked = maskedRow(x, m);
            const lse = logSumExp(masked);
            if (params.logprobs !== undefined) {
              expect(got[row]!.logprob!).toBeCloseTo(x[got[row]!.token]! - lse, 5);
              for (const t of got[row]!.top!) expect(maskHas(m, t.token), what).toBe(true);
            }
          }
          if (want.logprob !== undefined) expect(got[row]!.logprob!).toBeCloseTo(want.logprob, 5);
          expect(got[row]!.top?.map((t) => t.token)).toEqual(want.top?.map((t) => t.token));
        }
      }
    } finally {
      sampler.dispose();
      logits.dispose();
    }
  });

  async function collect(s: AsyncIterable<{ type: string }>): Promise<GenerationSummary> {
    let sum: GenerationSummary | undefined;
    for await (const e of s) if (e.type === "finish") sum = e as GenerationSummary;
    return sum!;
  }

  it("json_schema and json_object requests finish in valid JSON (temperature 1, several seeds)", async () => {
    const sched = new Scheduler(model, { tokenizer: tok, maxSeqs: 4, maxSeqLen: 256 });
    try {
      const validate = ajv.compile(ORDER as object);
      const prompt = "Order some fruit as JSON:";
      const runs = [11, 12, 13, 14].map((seed) =>
        collect(
          sched.submit({
            prompt,
            maxTokens: 120,
            temperature: 1,
            seed,
            responseFormat: format(ORDER),
          }),
        ),
      );
      const sums = await Promise.all(runs);
      let finished = 0;
      for (const sum of sums) {
        if (sum.finishReason !== "stop") continue; // a random model may run out of tokens
        finished++;
        expect(STOP).toContain(sum.stopReason);
        const v = JSON.parse(sum.text);
        expect(validate(v), `${sum.text}: ${ajv.errorsText(validate.errors)}`).toBe(true);
        expect(sum.text).toBe(tok.decode(sum.tokenIds, { skipSpecialTokens: true }));
      }
      expect(finished).toBeGreaterThanOrEqual(3);

      // Greedy.
      const greedy = await collect(
        sched.submit({ prompt, maxTokens: 120, temperature: 0, responseFormat: format(ORDER) }),
      );
      expect(greedy.finishReason).toBe("stop");
      expect(validate(JSON.parse(greedy.text))).toBe(true);

      // json_object: free strings would run on for hundreds of tokens with random weights, so a
      // logit bias favours closing tokens; the mask still decides what is allowed.
      const id = (s: string) => tok.encode(s, { addSpecialTokens: false })[0]!;
      const logitBias = { [id('"')]: 12, [id("}")]: 12, [id('"}')]: 12, [id(":")]: 12 };
      for (const seed of [1, 2, 3]) {
        const sum = await collect(
          sched.submit({
            prompt,
            maxTokens: 60,
            seed,
            logitBias,
            responseFormat: { type: "json_object" },
          }),
        );
        expect(sum.finishReason, sum.text).toBe("stop");
        const v: unknown = JSON.parse(sum.text);
        expect(typeof v === "object" && v !== null && !Array.isArray(v), sum.text).toBe(true);
      }
    } finally {
      await sched.close();
    }
  });

  it("ends at once when the value closes and no stop token may come; refuses bad formats", async () => {
    const sched = new Scheduler(model, { tokenizer: tok, maxSeqs: 2, maxSeqLen: 128 });
    try {
      const schema = { enum: [{ ok: true }] };
      const sum = await collect(
        sched.submit({
          prompt: "x",
          maxTokens: 60,
          temperature: 1,
          seed: 1,
          ignoreEos: true,
          responseFormat: format(schema),
        }),
      );
      expect(sum).toMatchObject({ finishReason: "stop", stopReason: null });
      expect(sum.text).toMatch(/^\s{0,2}\{"ok":true\}$/); // at most 2 leading blanks, then the value
      expect(() =>
        sched.submit({ prompt: "x", responseFormat: format({ type: "string", pattern: "a+" }) }),
      ).toThrow(GenerationError);
      const noTok = new Scheduler(model, { maxSeqs: 1, maxSeqLen: 16 });
      expect(() => noTok.submit({ prompt: [2], responseFormat: { type: "json_object" } })).toThrow(
        /needs a tokenizer/,
      );
      await noTok.close();
    } finally {
      await sched.close();
    }
  });
});
