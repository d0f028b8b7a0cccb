// End-to-end server benchmark: a live `gemma3 serve` engine on this machine, driven over HTTP by
// concurrent streaming clients (token-id prompts, greedy, ignore_eos, so every stream makes exactly
// the tokens asked). Prints one JSON line:
//   b1:        decode tok/s of one stream (tokens after the first ÷ time after the first)
//   streams:   for 8/32/64 concurrent streams, aggregate tok/s (all tokens ÷ wall time) and the
//              median per-stream decode rate
//   ttft:      time to first token of a 2048-token prompt (non-streamed, max_tokens 1)
// Medians of 3 runs after a warm-up run of the same shape (which also captures decode graphs).
//   node apps/server/bench/serve-bench.mjs MODEL_DIR [--device cuda] [--tokens 128]
//        [--streams 8,32,64] [--ttft-prompt 2048] [--direct]
import { parseArgs } from "node:util";
import { Worker } from "node:worker_threads";
import { Engine, startServer } from "@gemma3/server";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    device: { type: "string", default: "cuda" },
    dtype: { type: "string" },
    tokens: { type: "string", default: "128" },
    prompt: { type: "string", default: "16" },
    streams: { type: "string", default: "8,32,64" },
    "ttft-prompt": { type: "string", default: "2048" },
    runs: { type: "string", default: "3" },
    direct: { type: "boolean", default: false },
  },
});
const model = positionals[0];
if (!model) throw new Error("usage: serve-bench.mjs MODEL_DIR [--device cuda]");
const T = Number(values.tokens);
const P = Number(values.prompt);
const streams = values.streams.split(",").filter(Boolean).map(Number);
const ttftPrompt = Number(values["ttft-prompt"]);
const RUNS = Number(values.runs);
const maxSeqs = Math.max(1, ...streams);

// Deterministic token ids in [3, 1000) (the same range as the HF peer's random prompts).
let seed = 12345;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed / 2 ** 31);
const ids = (n) => Array.from({ length: n }, () => 3 + Math.floor(rand() * 997));

const t0 = performance.now();
const engine = await Engine.load({
  model,
  device: values.device,
  ...(values.dtype ? { dtype: values.dtype } : {}),
  maxSeqs,
  maxSeqLen: Math.max(P, ttftPrompt) + T + 8,
  maxBatchTokens: 2048,
});
const loadS = (performance.now() - t0) / 1000;
const srv = await startServer({ engine, port: 0 });

/**
 * One streamed completion; returns chunk arrival times (ms) and the token count. The HTTP clients
 * run in a worker thread (their own event loop, as real clients would be another process), so
 * parsing 64 SSE streams does not steal the server's thread. `--direct` skips HTTP and reads the
 * scheduler's streams in-process (what the engine alone sustains).
 */
const direct = values.direct;
const worker = direct ? null : new Worker(new URL("./sse-client.mjs", import.meta.url));
let nextId = 0;
const pending = new Map();
worker?.on("message", (m) => {
  const p = pending.get(m.id);
  pending.delete(m.id);
  if (m.error) p.reject(new Error(m.error));
  else p.resolve(m.result);
});
async function stream(prompt, maxTokens) {
  if (!direct) {
    const id = nextId++;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      worker.postMessage({
        id,
        url: `${srv.url}/v1/completions`,
        body: {
          prompt,
          max_tokens: maxTokens,
          temperature: 0,
          ignore_eos: true,
          stream: true,
          stream_options: { include_usage: true },
        },
      });
    });
  }
  const start = performance.now();
  const s = engine.submit({ prompt, maxTokens, temperature: 0, ignoreEos: true });
  const times = [];
  let tokens = 0;
  for await (const ev of s) {
    if (ev.type === "delta") times.push(performance.now());
    else tokens = ev.usage.completionTokens;
  }
  return { start, times, end: performance.now(), tokens };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const decodeRate = (s) => (s.tokens - 1) / ((s.times[s.times.length - 1] - s.times[0]) / 1000);

async function concurrent(n) {
  const prompts = Array.from({ length: n }, () => ids(P));
  const t = performance.now();
  const all = await Promise.all(prompts.map((p) => stream(p, T)));
  const wall = (performance.now() - t) / 1000;
  const tokens = all.reduce((s, x) => s + x.tokens, 0);
  return { aggregate: tokens / wall, perStream: median(all.map(decodeRate)), tokens, wall };
}

const result = {
  model,
  device: values.device,
  mode: direct ? "direct" : "http",
  load_s: loadS,
  tokens: T,
  prompt: P,
  max_batch_tokens: 2048,
};
// batch 1
await stream(ids(P), T);
const b1 = [];
for (let r = 0; r < RUNS; r++) b1.push(decodeRate(await stream(ids(P), T)));
result.b1 = { tok_s: median(b1), runs: b1 };
// concurrent streams
result.streams = {};
for (const n of streams) {
  await concurrent(n);
  const runs = [];
  for (let r = 0; r < RUNS; r++) runs.push(await concurrent(n));
  const m = runs.map((x) => x.aggregate);
  result.streams[n] = {
    aggregate_tok_s: median(m),
    per_stream_tok_s: median(runs.map((x) => x.perStream)),
    runs: m,
  };
}
// TTFT at a long prompt
if (ttftPrompt > 0) {
  const once = async () => {
    const t = performance.now();
    const r = await fetch(`${srv.url}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({
        prompt: ids(ttftPrompt),
        max_tokens: 1,
        temperature: 0,
        ignore_eos: true,
      }),
    });
    if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${await r.text()}`);
    await r.json();
    return performance.now() - t;
  };
  await once();
  const runs = [];
  for (let r = 0; r < RUNS; r++) runs.push(await once());
  result.ttft = { prompt: ttftPrompt, ms: median(runs), runs };
}
result.stats = engine.stats();
console.log(JSON.stringify(result));
await worker?.terminate();
await srv.close();
