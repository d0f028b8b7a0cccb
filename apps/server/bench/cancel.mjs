// vLLM's cancellation test at full scale (apps/server/test/cancel.test.ts runs it at 48): N
// concurrent requests for 10 000 tokens whose clients give up after 0.5 s; then the time until
// every KV page is back and the latency of a fresh request, after a warm-up burst. Prints one JSON
// line.
//   node apps/server/bench/cancel.mjs [--requests 200] [--device cpu] [--model DIR]
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { Engine, startServer } from "@gemma3/server";

const { values } = parseArgs({
  options: {
    requests: { type: "string", default: "200" },
    device: { type: "string", default: "cpu" },
    model: { type: "string" },
  },
});
const demo = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "cli", "demo-model");
const engine = await Engine.load({
  model: values.model ?? demo,
  device: values.device,
  maxSeqs: 32,
  maxSeqLen: 10_100,
  maxQueue: 1024,
});
const srv = await startServer({ engine, port: 0 });
const N = Number(values.requests);
// Warm-up: one burst of short requests, so first-use costs (CUDA module loading, cuBLAS handles,
// graph captures per batch size) are not part of the cancellation timing.
await Promise.all(
  Array.from({ length: 64 }, (_, i) =>
    fetch(`${srv.url}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({ prompt: `warm ${i}`, max_tokens: 32, ignore_eos: true }),
    }).then((r) => r.text()),
  ),
);
const base = engine.stats().kv;
// Where the time goes: the scheduler's state every 25 ms, and how long the event loop was blocked.
const timeline = [];
const lag = monitorEventLoopDelay({ resolution: 5 });
lag.enable();
const t0 = performance.now();
const sampler = setInterval(() => {
  const st = engine.stats();
  timeline.push([
    Math.round(performance.now() - t0),
    st.running,
    st.waiting,
    st.kv.sequences,
    st.steps,
  ]);
}, 25);
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
      return e.name;
    }
  }),
);
const tAbort = performance.now();
while (engine.stats().kv.sequences > 0 || engine.stats().waiting > 0) {
  if (performance.now() - tAbort > 10_000) break;
  await new Promise((r) => setTimeout(r, 5));
}
const freedMs = performance.now() - tAbort;
clearInterval(sampler);
lag.disable();
const kv = engine.stats().kv;
const t1 = performance.now();
const ok = await fetch(`${srv.url}/v1/chat/completions`, {
  method: "POST",
  body: JSON.stringify({ messages: [{ role: "user", content: "Hello" }], max_tokens: 16 }),
});
await ok.text();
const report = {
  requests: N,
  device: values.device,
  timeouts: outcomes.filter((o) => o === "TimeoutError").length,
  other: outcomes.filter((o) => o !== "TimeoutError").length,
  clientsDoneMs: Math.round(tAbort - t0),
  kvBackMs: Math.round(freedMs),
  kvBaseline: kv.freePages === base.freePages && kv.sequences === 0,
  freshStatus: ok.status,
  freshMs: Math.round(performance.now() - t1),
  eventLoopDelayMs: {
    p50: lag.percentile(50) / 1e6,
    p99: lag.percentile(99) / 1e6,
    max: lag.max / 1e6,
  },
  ...(process.env.CANCEL_TIMELINE ? { timeline } : {}),
};
console.log(JSON.stringify(report));
await srv.close();
process.exitCode =
  report.kvBaseline && report.kvBackMs < 1000 && ok.status === 200 && report.freshMs < 5000 ? 0 : 1;
