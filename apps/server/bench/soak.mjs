// Soak run (issue #10): mixed load at saturation against a live server on the demo checkpoint —
// text chats (streamed and not), chats with an image (and Pan & Scan), completions, clients that
// hang up mid-stream — from C concurrent client loops for D seconds, with a small admission queue
// so overload is answered with 429 + Retry-After. Samples RSS every 5 s; after a warm-up of W
// seconds, RSS must stay within 1% (+ 8 MB of allocator slack) of its post-warm-up value. Any 5xx
// other than 503, a 429 without Retry-After, a dropped connection or a dead server fails the run.
//   node apps/server/bench/soak.mjs [--seconds 600] [--warmup 60] [--clients 48] [--device cpu]
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import sharp from "sharp";
import { Engine, startServer } from "@gemma3/server";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "600" },
    warmup: { type: "string", default: "60" },
    clients: { type: "string", default: "48" },
    device: { type: "string", default: "cpu" },
    model: { type: "string" },
  },
});
const demo = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "cli", "demo-model");
const engine = await Engine.load({
  model: values.model ?? demo,
  device: values.device,
  maxSeqs: 16,
  maxSeqLen: 512,
  maxQueue: 16,
});
const srv = await startServer({ engine, port: 0 });
const png = await sharp({
  create: { width: 320, height: 96, channels: 3, background: { r: 20, g: 120, b: 200 } },
})
  .png()
  .toBuffer();
const image = `data:image/png;base64,${png.toString("base64")}`;

const kinds = [
  () => ({
    path: "/v1/chat/completions",
    body: { messages: [{ role: "user", content: "Tell me a story." }], max_tokens: 24 },
  }),
  () => ({
    path: "/v1/chat/completions",
    body: { messages: [{ role: "user", content: "Hi" }], max_tokens: 16, stream: true },
  }),
  () => ({
    path: "/v1/chat/completions",
    body: {
      messages: [
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: image } },
            { type: "text", text: "What is this?" },
          ],
        },
      ],
      max_tokens: 12,
      pan_and_scan: Math.random() < 0.5,
    },
  }),
  () => ({
    path: "/v1/completions",
    body: { prompt: "Once upon a time", max_tokens: 16, temperature: 0.7 },
  }),
  () => ({
    path: "/v1/chat/completions",
    body: { messages: [{ role: "user", content: "Long one" }], max_tokens: 200, stream: true },
    hangUp: true,
  }),
];

const statuses = new Map();
const failures = [];
let requests = 0;
const end = Date.now() + Number(values.seconds) * 1000;
async function client(i) {
  while (Date.now() < end) {
    const k = kinds[(i + requests) % kinds.length]();
    requests++;
    const ac = new AbortController();
    try {
      const r = await fetch(srv.url + k.path, {
        method: "POST",
        body: JSON.stringify(k.body),
        signal: ac.signal,
      });
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      if (r.status === 429 || r.status === 503) {
        if (!r.headers.get("retry-after")) failures.push(`${r.status} without Retry-After`);
        await r.text();
        await new Promise((res) => setTimeout(res, 100 + Math.random() * 200));
        continue;
      }
      if (r.status >= 500) failures.push(`${r.status}: ${(await r.text()).slice(0, 200)}`);
      if (k.hangUp) {
        const reader = r.body.getReader();
        await reader.read();
        await reader.read();
        ac.abort();
      } else await r.text();
    } catch (e) {
      if (!ac.signal.aborted) failures.push(`fetch: ${e.message}`);
    }
  }
}

const rss = [];
const sampler = setInterval(
  () =>
    rss.push({
      t: (Date.now() - (end - Number(values.seconds) * 1000)) / 1000,
      mb: process.memoryUsage().rss / 2 ** 20,
    }),
  5000,
);
const t0 = performance.now();
await Promise.all(Array.from({ length: Number(values.clients) }, (_, i) => client(i)));
clearInterval(sampler);
const health = (await fetch(`${srv.url}/health`)).status;
const after = rss.filter((s) => s.t >= Number(values.warmup));
const base = after[0]?.mb ?? NaN;
const maxMb = Math.max(...after.map((s) => s.mb));
const last = after[after.length - 1]?.mb ?? NaN;
const growth = (last - base) / base;
const report = {
  seconds: (performance.now() - t0) / 1000,
  clients: Number(values.clients),
  requests,
  statuses: Object.fromEntries([...statuses].sort()),
  failures: failures.slice(0, 20),
  failureCount: failures.length,
  health,
  rssMB: {
    afterWarmup: Math.round(base),
    last: Math.round(last),
    max: Math.round(maxMb),
    growthPct: +(100 * growth).toFixed(2),
  },
  kv: engine.stats().kv,
};
console.log(JSON.stringify(report, null, 1));
await srv.close();
process.exitCode =
  failures.length === 0 && health === 200 && last - base <= 0.01 * base + 8 ? 0 : 1;
