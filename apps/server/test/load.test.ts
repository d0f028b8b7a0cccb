// Many concurrent streams, half of whose clients hang up mid-stream (vLLM's cancellation test, at
// CI scale): every sequence leaves the batch, KV pages return to the baseline, the server stays
// healthy, and the streams that ran to the end are complete.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Engine, RunningServer } from "../src/index.js";
import { demoEngine, serve } from "./helpers.js";

let engine: Engine;
let srv: RunningServer;

beforeAll(async () => {
  engine = await demoEngine({ maxSeqs: 16, maxSeqLen: 128, maxQueue: 128 });
  srv = await serve({ engine });
});
afterAll(async () => {
  await srv?.close();
});

async function until(cond: () => boolean, ms: number): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("64 concurrent streams, 32 clients disconnecting", () => {
  it("frees every sequence and KV page and keeps serving", async () => {
    const base = engine.stats().kv;
    expect(base.sequences).toBe(0);
    const N = 64;
    const results = await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        const quit = i % 2 === 1;
        const ac = new AbortController();
        const r = await fetch(`${srv.url}/v1/chat/completions`, {
          method: "POST",
          signal: ac.signal,
          body: JSON.stringify({
            messages: [{ role: "user", content: `Request ${i}: tell me a story.` }],
            max_tokens: 24,
            stream: true,
            ignore_eos: true,
            seed: i,
          }),
        });
        expect(r.status).toBe(200);
        const reader = r.body!.getReader();
        const dec = new TextDecoder();
        let text = "";
        let events = 0;
        try {
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            text += dec.decode(value, { stream: true });
            events = text.split("\n\n").length - 1;
            // The quitters hang up after the role chunk and two content chunks.
            if (quit && events >= 3) {
              ac.abort();
              break;
            }
          }
        } catch (e) {
          if (!quit) throw e;
        }
        return { quit, text };
      }),
    );
    for (const r of results.filter((x) => !x.quit)) {
      expect(r.text.trimEnd().endsWith("data: [DONE]")).toBe(true);
      expect(r.text).toContain('"finish_reason":"length"');
    }
    // Cancellation is immediate in the scheduler; allow the last step in flight to land.
    await until(() => engine.stats().running === 0 && engine.stats().waiting === 0, 5000);
    const after = engine.stats().kv;
    expect(after.sequences).toBe(base.sequences);
    expect(after.freePages).toBe(base.freePages);
    expect(after.freeSequenceSlots).toBe(base.freeSequenceSlots);
    expect((await fetch(`${srv.url}/health`)).status).toBe(200);
    const ok = await fetch(`${srv.url}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({
        messages: [{ role: "user", content: "still there?" }],
        max_tokens: 4,
      }),
    });
    expect(ok.status).toBe(200);
    const metrics = await (await fetch(`${srv.url}/metrics`)).text();
    const aborted = Number(/finished_reason="abort"\} (\d+)/.exec(metrics)?.[1] ?? 0);
    // A quitter whose stream had already finished before it hung up is not an abort.
    const cut = results.filter((r) => r.quit && !r.text.includes('"finish_reason":"')).length;
    expect(cut).toBeGreaterThan(N / 4);
    expect(aborted).toBe(cut);
  });
});
