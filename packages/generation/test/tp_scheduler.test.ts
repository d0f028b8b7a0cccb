// The scheduler over a tensor-parallel model (issue 11): two CPU ranks of tiny-1b (float32) serve
// concurrent requests (chunked prefill mixed with decode, prefix reuse through snapshot blocks)
// and give the one-device model's greedy tokens; the first request reproduces HF's greedy ids.
// Decode-only steps replay the TP model's captured graphs, mixed steps run eagerly.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  TensorParallelKVCache,
  loadTensorParallelModel,
  loadTextModel,
  type TextModel,
} from "@gemma3/model";
import { describe, expect, it } from "vitest";
import { Scheduler, type GenerationStream, type GenerationSummary } from "../src/index.js";

const fixture = join(dirname(fileURLToPath(import.meta.url)), "../../model/test/fixtures/tiny-1b");
const golden = JSON.parse(readFileSync(join(fixture, "goldens.json"), "utf8")) as {
  prompt_ids: number[];
  greedy_ids: number[];
};
const P = golden.prompt_ids;

async function finish(s: GenerationStream): Promise<GenerationSummary> {
  for await (const e of s) void e;
  return s.result;
}

/** Six concurrent greedy requests (two share a 20-token prefix with P), then P again (cached). */
async function serve(model: TextModel) {
  const sched = new Scheduler(model, {
    maxSeqs: 3,
    maxSeqLen: 80,
    pageSize: 8,
    maxBatchTokens: 24,
    kv: { snapshotBlocks: 16 },
  });
  const prompts = [
    P,
    [...P.slice(0, 20), 7, 8, 9],
    P.slice(3, 11),
    [...P.slice(0, 20), 99],
    [5],
    P.slice(10),
  ];
  const lengths = [24, 9, 14, 5, 11, 7];
  const runs = prompts.map((prompt, i) =>
    finish(sched.submit({ prompt, maxTokens: lengths[i]!, ignoreEos: true, temperature: 0 })),
  );
  const first = await Promise.all(runs);
  const again = await finish(
    sched.submit({ prompt: P, maxTokens: 6, ignoreEos: true, temperature: 0 }),
  );
  await sched.close();
  return {
    ids: [...first.map((s) => s.tokenIds), again.tokenIds],
    cached: again.usage.cachedTokens,
  };
}

describe("Scheduler over a tensor-parallel model (2 CPU ranks, tiny-1b)", () => {
  it("gives the one-device model's greedy tokens for concurrent requests, with prefix reuse", async () => {
    const single = await loadTextModel(fixture, { device: "cpu", dtype: "f32" });
    const want = await serve(single);
    single.dispose();
    const tp = await loadTensorParallelModel(fixture, { devices: ["cpu", "cpu"], dtype: "f32" });
    const cache = tp.newKVCache({ maxSeqLen: 8 });
    expect(cache).toBeInstanceOf(TensorParallelKVCache);
    cache.dispose();
    const got = await serve(tp);
    // Decode-only steps replayed captured graphs (CPU ranks record one task list per batch size).
    const captured = tp.capturedBatches;
    tp.dispose();
    expect(captured.length).toBeGreaterThan(0);
    expect(got.ids[0]).toEqual(golden.greedy_ids);
    expect(got.ids).toEqual(want.ids);
    expect(got.cached).toBe(want.cached);
    expect(got.cached).toBeGreaterThan(0);
  });
});
