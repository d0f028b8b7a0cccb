// vLLM's cancellation test at CI scale (bench/cancel.mjs runs it at 200): many concurrent requests
// for 10 000 tokens whose clients give up after 0.5 s. Within 1 s of the last hang-up every KV
// page is back, and a fresh request then completes within 5 s.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Engine, RunningServer } from "../src/index.js";
import { demoEngine, serve } from "./helpers.js";

let engine: Engine;
let srv: RunningServer;

beforeAll(async () => {
  engine = await demoEngine({ maxSeqs: 16, maxSeqLen: 10_100, maxQueue: 256 });
  srv = await serve({ engine });
});
afterAll(async () => {
  await srv?.close();
});

describe("client timeouts cancel long generations", () => {
  it("48 requests for 10 000 tokens, 0.5 s client timeout: KV back within 1 s, next request fast", async () => {
    const base = engine.stats().kv;
    const N = 48;
    const outcomes = await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        try {
          const r = await fetch(`${srv.url}/v1/completions`, {
            method: "POST",
            signal: AbortSignal.timeout(500),
            body: JSON.stringify({
              prompt: `story ${i}`,
              max_tokens: 10_000,
              ignore_eos: true,
              stream: i % 2 === 0,
            }),
          });
          await r.text();
          return "completed";
        } catch (e) {
          return (e as Error).name;
        }
      }),
    );
    expect(outcomes.every((o) => o === "TimeoutError")).toBe(true);
    const t0 = performance.now();
    while (engine.stats().kv.sequences > 0 || engine.stats().waiting > 0) {
      if (performance.now() - t0 > 1000) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    const freedMs = performance.now() - t0;
    expect(engine.stats().kv.sequences).toBe(0);
    expect(engine.stats().waiting).toBe(0);
    expect(engine.stats().kv.freePages).toBe(base.freePages);
    expect(freedMs).toBeLessThan(1000);
    const t1 = performance.now();
    const ok = await fetch(`${srv.url}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ messages: [{ role: "user", content: "Hello" }], max_tokens: 16 }),
    });
    expect(ok.status).toBe(200);
    await ok.json();
    expect(performance.now() - t1).toBeLessThan(5000);
  });
});
