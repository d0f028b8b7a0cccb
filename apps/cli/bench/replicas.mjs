#!/usr/bin/env node
// The heavier run behind apps/cli/test/replicas.test.ts: `gemma3 replicas` (N replicas behind
// nginx) measured with the `openai` client.
//
//   1. Prefix-cache hit rate of multi-turn conversations through nginx, prefix-affinity routing
//      vs round robin: sum of gemma3_prefix_cache_hits_total / gemma3_prefix_cache_queries_total
//      over the replicas' /metrics (tokens), plus how many conversations stayed on one replica.
//   2. Killing one replica (SIGKILL) under load: closed-loop clients send streamed and non-streamed
//      chats; every request is classified by when it started (before the kill, between the kill
//      and the replica's port closing, after) and by its outcome; then the launcher's restart and
//      the return of traffic to the restarted replica are timed. Clients run with maxRetries 0
//      (what nginx alone gives) and a second set with the openai client's default retries.
//
//   node apps/cli/bench/replicas.mjs [--replicas 3] [--conversations 24] [--turns 4]
//        [--concurrency 6] [--clients 6] [--load-seconds 10] [--json FILE] [serve options…]
//
// Needs the built CLI (npm run build), nginx and libnginx-mod-http-js. CPU and the demo
// checkpoint by default (a plumbing measurement: random weights, tiny model).
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import OpenAI from "openai";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const cli = join(root, "dist", "cli.js");
if (!existsSync(cli)) throw new Error(`${cli} missing: run npm run build`);

const opts = {
  replicas: 3,
  conversations: 24,
  turns: 4,
  concurrency: 6,
  clients: 6,
  "load-seconds": 10,
  json: null,
};
const serveArgs = [];
for (let i = 2; i < process.argv.length; i++) {
  const k = process.argv[i].replace(/^--/, "");
  if (k in opts) opts[k] = k === "json" ? process.argv[++i] : Number(process.argv[++i]);
  else serveArgs.push(process.argv[i]);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const refused = (port) =>
  new Promise((done) => {
    const s = connect(port, "127.0.0.1");
    s.once("connect", () => (s.destroy(), done(false)));
    s.once("error", () => done(true));
  });
async function freeBase(n) {
  for (;;) {
    const base = 20000 + Math.floor(Math.random() * 30000);
    const ok = await Promise.all(
      Array.from(
        { length: n },
        (_, i) =>
          new Promise((done) => {
            const s = createServer();
            s.once("error", () => done(false));
            s.listen(base + i, "127.0.0.1", () => s.close(() => done(true)));
          }),
      ),
    );
    if (ok.every(Boolean)) return base;
  }
}
async function until(what, f, ms = 120_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function launch(routing, extra = []) {
  const dir = mkdtempSync(join(tmpdir(), `gemma3-bench-${routing}-`));
  const port = await freeBase(opts.replicas + 1);
  const args = [
    cli,
    "replicas",
    "--replicas",
    String(opts.replicas),
    "--port",
    String(port),
    "--run-dir",
    dir,
    "--routing",
    routing,
    "--quiet",
    "--max-model-len",
    "2048",
    ...extra,
    ...serveArgs,
  ];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr.on("data", (c) => (log += c));
  const state = () => JSON.parse(readFileSync(join(dir, "replicas.json"), "utf8"));
  const t0 = Date.now();
  await until("replicas", () => {
    if (child.exitCode !== null) throw new Error(`launcher exited:\n${log}`);
    if (!existsSync(join(dir, "replicas.json"))) return false;
    const s = state();
    return s.nginx.pid !== null && s.replicas.every((r) => r.state === "ready");
  });
  const startS = (Date.now() - t0) / 1000;
  return {
    port,
    dir,
    state,
    startS,
    log: () => log,
    async stop() {
      const done = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await done;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function metrics(port) {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const v = (name) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? NaN);
  return {
    queries: v("gemma3_prefix_cache_queries_total"),
    hits: v("gemma3_prefix_cache_hits_total"),
  };
}

const SYSTEM =
  "You are a helpful assistant for a travel company. Answer in two sentences, use metric units, " +
  "and name the season that suits the trip best.";

/** C conversations × T turns, `concurrency` conversations at a time, each turn after the last. */
async function conversations(lb) {
  const client = new OpenAI({
    baseURL: `http://127.0.0.1:${lb.port}/v1`,
    apiKey: "x",
    maxRetries: 0,
  });
  const ports = lb.state().replicas.map((r) => r.port);
  const before = await Promise.all(ports.map(metrics));
  let sticky = 0;
  let turnHits = Array(opts.turns).fill(0);
  let turnQueries = Array(opts.turns).fill(0);
  const t0 = Date.now();
  let next = 0;
  const worker = async () => {
    for (let c = next++; c < opts.conversations; c = next++) {
      const messages = [
        { role: "system", content: SYSTEM },
        {
          role: "user",
          content: `Trip ${c}: I want to visit city number ${c}. What should I see?`,
        },
      ];
      const seen = new Set();
      for (let t = 0; t < opts.turns; t++) {
        const { data, response } = await client.chat.completions
          .create({ model: "demo-model", messages, max_tokens: 24, temperature: 0 })
          .withResponse();
        seen.add(response.headers.get("x-gemma3-upstream"));
        turnHits[t] += data.usage.prompt_tokens_details?.cached_tokens ?? 0;
        turnQueries[t] += data.usage.prompt_tokens;
        messages.push({ role: "assistant", content: data.choices[0].message.content ?? "" });
        messages.push({ role: "user", content: `Thanks. Follow-up ${t}: and in winter?` });
      }
      if (seen.size === 1) sticky++;
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  const seconds = (Date.now() - t0) / 1000;
  const after = await Promise.all(ports.map(metrics));
  const per = after.map((m, i) => ({
    port: ports[i],
    queries: m.queries - before[i].queries,
    hits: m.hits - before[i].hits,
  }));
  const queries = per.reduce((s, m) => s + m.queries, 0);
  const hits = per.reduce((s, m) => s + m.hits, 0);
  return {
    requests: opts.conversations * opts.turns,
    seconds,
    hitRate: hits / queries,
    hits,
    queries,
    // turns ≥ 2 only: turn 1 of a conversation has nothing to reuse under any routing
    hitRateLaterTurns:
      turnHits.slice(1).reduce((a, b) => a + b, 0) /
      turnQueries.slice(1).reduce((a, b) => a + b, 0),
    perTurnHitRate: turnHits.map((h, t) => +(h / turnQueries[t]).toFixed(3)),
    conversationsOnOneReplica: `${sticky}/${opts.conversations}`,
    perReplica: per,
  };
}

/** Closed-loop load with a kill in the middle. */
async function killUnderLoad(lb) {
  const s0 = lb.state();
  const victim = s0.replicas[0];
  const victimAddr = `127.0.0.1:${victim.port}`;
  const records = [];
  let stop = false;
  let tKill = Infinity;
  let tDead = Infinity;
  const client = (retries) =>
    new OpenAI({ baseURL: `http://127.0.0.1:${lb.port}/v1`, apiKey: "x", maxRetries: retries });
  const loop = async (id, retries) => {
    const c = client(retries);
    for (let n = 0; !stop; n++) {
      const stream = n % 2 === 0;
      const content = `client ${id} (${retries ? "retrying" : "plain"}) request ${n}`;
      const r = {
        client: id,
        retries,
        stream,
        start: Date.now(),
        ok: false,
        status: 0,
        upstream: "",
      };
      try {
        const { data, response } = await c.chat.completions
          .create({
            model: "demo-model",
            messages: [{ role: "user", content }],
            max_tokens: 64,
            temperature: 0,
            stream,
            ...{ ignore_eos: true },
          })
          .withResponse();
        r.upstream = response.headers.get("x-gemma3-upstream") ?? "";
        r.status = response.status;
        if (stream) {
          let finish = null;
          for await (const ch of data) finish = ch.choices[0]?.finish_reason ?? finish;
          r.ok = finish === "length";
        } else r.ok = data.choices[0].finish_reason === "length";
      } catch (e) {
        r.status = e.status ?? 0;
        r.upstream ||= e.headers?.get?.("x-gemma3-upstream") ?? "";
        r.error = String(e.message ?? e)
          .split("\n")[0]
          .slice(0, 80);
      }
      r.end = Date.now();
      records.push(r);
    }
  };
  const loops = [
    ...Array.from({ length: opts.clients }, (_, i) => loop(i, 0)),
    ...Array.from({ length: Math.max(1, opts.clients >> 1) }, (_, i) => loop(100 + i, 2)),
  ];
  await sleep((opts["load-seconds"] * 1000) / 2);
  tKill = Date.now();
  process.kill(victim.pid, "SIGKILL");
  await until("the port to close", () => refused(victim.port), 10_000);
  tDead = Date.now();
  await sleep((opts["load-seconds"] * 1000) / 2);
  // Restart, then traffic back on the restarted replica.
  const back = await until("the restart", () => {
    const r = lb.state().replicas[0];
    return r.restarts >= 1 && r.state === "ready" && r.pid !== victim.pid ? r : null;
  });
  const tRestarted = Date.now();
  const tail = records.length;
  await until(
    "traffic on the restarted replica",
    () => records.slice(tail).some((r) => r.ok && r.upstream === victimAddr),
    60_000,
  );
  const tBack = Date.now();
  stop = true;
  await Promise.all(loops);

  const classify = (r) => {
    if (r.start >= tDead) return "after";
    if (r.start >= tKill) return "between";
    if (r.end < tKill) return "done-before";
    return r.upstream.split(", ")[0] === victimAddr ? "running-on-victim" : "running-elsewhere";
  };
  const table = {};
  for (const r of records) {
    const k = `${classify(r)} ${r.retries ? "retrying-client" : "plain-client"} ${r.stream ? "stream" : "json"}`;
    const t = (table[k] ??= { total: 0, ok: 0, failures: {} });
    t.total++;
    if (r.ok) t.ok++;
    else {
      const why = r.status ? `HTTP ${r.status}` : r.error;
      t.failures[why] = (t.failures[why] ?? 0) + 1;
    }
  }
  const afterKill = records.filter((r) => r.start >= tDead);
  return {
    victim: victimAddr,
    portClosedMsAfterKill: tDead - tKill,
    restartedMsAfterKill: tRestarted - tKill,
    trafficBackMsAfterKill: tBack - tKill,
    restarts: back.restarts,
    requests: records.length,
    outcomes: Object.fromEntries(Object.entries(table).sort()),
    afterKill: {
      total: afterKill.length,
      ok: afterKill.filter((r) => r.ok).length,
      retriedPastVictim: afterKill.filter((r) => r.upstream.startsWith(victimAddr + ", ")).length,
    },
  };
}

const report = { replicas: opts.replicas, serveArgs, conversations: {}, kill: null };
for (const routing of ["prefix", "round-robin"]) {
  const lb = await launch(routing);
  try {
    report.conversations[routing] = { startSeconds: lb.startS, ...(await conversations(lb)) };
    process.stderr.write(`${routing}: ${JSON.stringify(report.conversations[routing])}\n`);
    if (routing === "prefix") {
      report.kill = await killUnderLoad(lb);
      process.stderr.write(`kill: ${JSON.stringify(report.kill, null, 2)}\n`);
    }
  } finally {
    await lb.stop();
  }
}
const text = JSON.stringify(report, null, 2);
if (opts.json) writeFileSync(opts.json, text + "\n");
process.stdout.write(text + "\n");
