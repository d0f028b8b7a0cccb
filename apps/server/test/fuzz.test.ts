// The server fuzz run at CI scale (bench/fuzz-server.mjs runs 10^5): mutated OpenAI requests get a
// 200 or a 4xx, never a 5xx or a dropped connection; afterwards the server is healthy and every KV
// page is back.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
// @ts-expect-error: a plain .mjs module shared with the benchmark script
import { mutate, rng } from "../bench/mutate.mjs";
import type { Engine, RunningServer } from "../src/index.js";
import { demoEngine, serve } from "./helpers.js";

let engine: Engine;
let srv: RunningServer;

beforeAll(async () => {
  engine = await demoEngine({ maxSeqs: 16, maxSeqLen: 32 });
  srv = await serve({ engine });
});
afterAll(async () => {
  await srv?.close();
});

describe("mutated requests", () => {
  it("answer 200 or 4xx, and leave the server healthy", async () => {
    const r = rng(2026) as () => number;
    const N = 400;
    const statuses = new Map<number | string, number>();
    const bad: { status: number | string; body: string }[] = [];
    let next = 0;
    const kv0 = engine.stats().kv;
    const worker = async () => {
      for (;;) {
        if (next >= N) return;
        next++;
        const m = mutate(r, engine.info.vocabSize) as { path: string; body: string };
        let status: number | string;
        try {
          const res = await fetch(srv.url + m.path, { method: "POST", body: m.body });
          status = res.status;
          const text = await res.text();
          if (status !== 200) expect(JSON.parse(text).error.message).toBeTypeOf("string");
        } catch (e) {
          status = `fetch error: ${(e as Error).message}`;
        }
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
        if (typeof status !== "number" || status >= 500)
          bad.push({ status, body: m.body.slice(0, 200) });
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    expect(bad).toEqual([]);
    // Both outcomes occur: the mutations are neither all rejected nor all accepted.
    expect(statuses.get(200) ?? 0).toBeGreaterThan(N / 20);
    expect(statuses.get(400) ?? 0).toBeGreaterThan(N / 2);
    const t0 = Date.now();
    while (engine.stats().running > 0 && Date.now() - t0 < 5000)
      await new Promise((res) => setTimeout(res, 20));
    expect(engine.stats().kv.freePages).toBe(kv0.freePages);
    expect(engine.stats().kv.sequences).toBe(0);
    expect((await fetch(`${srv.url}/health`)).status).toBe(200);
  });
});
