// Server fuzz run (issue #10): N mutated OpenAI requests (bench/mutate.mjs) against a live server
// on the demo checkpoint, C at a time. Counts statuses; any 5xx, a dead server, or KV that does not
// return to the baseline fails the run. Also times one valid request before and after. The context
// is 32 tokens so that every valid request finishes quickly (CPU sampling of a flat random model
// often needs the full-row fallback, ~40 ms a row).
//   node apps/server/bench/fuzz-server.mjs [--count 100000] [--concurrency 16] [--seed 1]
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Engine, startServer } from "@gemma3/server";
import { mutate, rng } from "./mutate.mjs";

const { values } = parseArgs({
  options: {
    count: { type: "string", default: "100000" },
    concurrency: { type: "string", default: "16" },
    seed: { type: "string", default: "1" },
    model: { type: "string" },
  },
});
const demo = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "cli", "demo-model");
const engine = await Engine.load({
  model: values.model ?? demo,
  device: "cpu",
  dtype: "f32",
  maxSeqs: 16,
  maxSeqLen: 32,
});
const srv = await startServer({ engine, port: 0 });
const r = rng(Number(values.seed));
const N = Number(values.count);
const C = Number(values.concurrency);

const valid = async () => {
  const t = performance.now();
  const res = await fetch(`${srv.url}/v1/chat/completions`, {
    method: "POST",
    body: JSON.stringify({
      messages: [{ role: "user", content: "Hello" }],
      max_tokens: 8,
      temperature: 0,
    }),
  });
  if (res.status !== 200) throw new Error(`valid request failed: ${res.status}`);
  await res.text();
  return performance.now() - t;
};
await valid();
const before = (await valid()) + 0;
const kv0 = engine.stats().kv;

const statuses = new Map();
const failures = [];
let next = 0;
const t0 = performance.now();
async function worker() {
  for (;;) {
    const i = next++;
    if (i >= N) return;
    const m = mutate(r, engine.info.vocabSize);
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), 120_000);
    let status;
    try {
      const res = await fetch(srv.url + m.path, {
        method: "POST",
        body: m.body,
        signal: ac.signal,
      });
      status = res.status;
      await res.text();
    } catch (e) {
      status = ac.signal.aborted ? "timeout" : `fetch error: ${e.message}`;
    } finally {
      clearTimeout(timer);
    }
    statuses.set(status, (statuses.get(status) ?? 0) + 1);
    if (typeof status !== "number" || status >= 500)
      failures.push({ i, status, body: m.body.slice(0, 300) });
  }
}
await Promise.all(Array.from({ length: C }, worker));
const secs = (performance.now() - t0) / 1000;
const deadline = Date.now() + 5000;
while ((engine.stats().running > 0 || engine.stats().waiting > 0) && Date.now() < deadline)
  await new Promise((res) => setTimeout(res, 20));
const kv1 = engine.stats().kv;
const health = (await fetch(`${srv.url}/health`)).status;
const after = await valid();
const report = {
  count: N,
  concurrency: C,
  seconds: secs,
  statuses: Object.fromEntries([...statuses].sort()),
  failures: failures.slice(0, 20),
  failureCount: failures.length,
  health,
  kvBaseline: kv0.freePages === kv1.freePages && kv1.sequences === 0,
  validMsBefore: before,
  validMsAfter: after,
  rssMB: Math.round(process.memoryUsage().rss / 2 ** 20),
};
console.log(JSON.stringify(report, null, 1));
await srv.close();
process.exitCode =
  failures.length === 0 && health === 200 && report.kvBaseline && after < 2 * before + 50 ? 0 : 1;
