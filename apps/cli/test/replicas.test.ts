// `gemma3 replicas`: the nginx config it writes, run by the real nginx (Debian's nginx and
// libnginx-mod-http-js; CI installs them and sets GEMMA3_REQUIRE_NGINX=1, elsewhere these tests
// skip without nginx). First nginx in front of stand-in upstreams that answer with their port
// (routing rules, fast); then the launcher itself with two replicas of the demo checkpoint on the
// CPU, driven by the `openai` client: a conversation stays on one replica and reuses its prefix
// (cached_tokens, the replicas' Prometheus counters), and killing a replica under load fails only
// the requests that were running on it, while the launcher restarts it.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { connect, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  findNginx,
  findNjsModule,
  parseReplicasArgs,
  ROUTINGS,
  writeNginxConfig,
  type Routing,
} from "../src/replicas.js";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const cli = join(root, "dist", "cli.js");
const nginx = findNginx();
const njs = findNjsModule();
if (process.env.GEMMA3_REQUIRE_NGINX === "1" && (!nginx || !njs))
  throw new Error("GEMMA3_REQUIRE_NGINX=1 but nginx or its njs module is missing");
const withNginx = nginx !== null && njs !== null;

async function freePorts(n: number): Promise<number[]> {
  // Consecutive ports (the launcher's replicas take base..base+n−1): probe a random range.
  for (;;) {
    const base = 20000 + Math.floor(Math.random() * 30000);
    const ok = await Promise.all(
      Array.from(
        { length: n },
        (_, i) =>
          new Promise<boolean>((done) => {
            const s = createServer();
            s.once("error", () => done(false));
            s.listen(base + i, "127.0.0.1", () => s.close(() => done(true)));
          }),
      ),
    );
    if (ok.every(Boolean)) return Array.from({ length: n }, (_, i) => base + i);
  }
}

const refused = (port: number) =>
  new Promise<boolean>((done) => {
    const s = connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      done(false);
    });
    s.once("error", () => done(true));
  });

async function until<T>(what: string, f: () => Promise<T | null> | T | null, ms = 60_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== null && v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("gemma3 replicas: options", () => {
  it("keeps its own options and passes the rest to every gemma3 serve", () => {
    const a = parseReplicasArgs([
      "--replicas",
      "3",
      "--model",
      "/m",
      "--port=9000",
      "--tensor-parallel",
      "2",
      "--max-seqs",
      "8",
      "--routing",
      "session",
    ]);
    expect(a).toMatchObject({ replicas: 3, port: 9000, basePort: 9001, routing: "session" });
    expect(a.tensorParallel).toBe(2);
    expect(a.serveArgs).toEqual(["--model", "/m", "--tensor-parallel", "2", "--max-seqs", "8"]);
    expect(a.prefixCaching).toBe(true);
  });

  it("refuses what cannot work, with the reason", () => {
    const bad = (argv: string[], msg: RegExp) => expect(() => parseReplicasArgs(argv)).toThrow(msg);
    bad(["--model", "/m"], /--replicas N is required/);
    bad(["--replicas", "0"], /--replicas: expected an integer in 1\.\.64/);
    bad(["--replicas", "2", "--routing", "random"], /--routing: one of prefix, session/);
    bad(["--replicas", "2", "--device", "cuda:1"], /--device: cpu or cuda/);
    bad(["--replicas", "2", "--port", "8000", "--base-port", "7999"], /falls among/);
    bad(["--replicas", "2", "--listen-after-load"], /the launcher sets it/);
  });

  it("the CLI reports a usage error with exit code 2", () => {
    const r = spawnSync(process.execPath, [cli, "replicas", "--routing", "x"], {
      encoding: "utf8",
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--replicas N is required/);
  });
});

describe.skipIf(!withNginx)("nginx routing in front of stand-in upstreams", () => {
  const upstreams: Server[] = [];
  let ports: number[] = [];
  let dir: string;
  let proc: ChildProcess | null = null;
  let lbPort = 0;
  let nginxLog = "";

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "gemma3-nginx-test-"));
    // Stand-ins answer with their own port (and how much body they got).
    for (let i = 0; i < 3; i++) {
      const s = createServer((req, res) => {
        let n = 0;
        req.on("data", (c: Buffer) => (n += c.length));
        req.on("end", () => {
          res.setHeader("content-type", "application/json");
          res.end(JSON.stringify({ port: (s.address() as AddressInfo).port, bytes: n }));
        });
      });
      await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
      upstreams.push(s);
    }
    ports = upstreams.map((s) => (s.address() as AddressInfo).port);
  });
  afterAll(async () => {
    proc?.kill("SIGTERM");
    for (const s of upstreams) s.close();
    rmSync(dir, { recursive: true, force: true });
  });

  let running: Routing | null = null;
  async function startNginx(routing: Routing): Promise<void> {
    if (running === routing) return;
    running = routing;
    if (proc) {
      const p = proc;
      await new Promise<void>((r) => {
        p.once("exit", () => r());
        p.kill("SIGTERM");
      });
    }
    lbPort = (await freePorts(1))[0]!;
    const conf = writeNginxConfig(nginx!, {
      listen: { host: "127.0.0.1", port: lbPort },
      replicas: ports.map((port) => ({ host: "127.0.0.1", port })),
      routing,
      runDir: join(dir, routing),
      njsModule: njs,
      maxFails: 1,
      failTimeoutS: 10,
    });
    proc = spawn(nginx!, ["-c", conf, "-p", join(dir, routing) + "/", "-e", "stderr"], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    proc.stderr!.on("data", (c: Buffer) => (nginxLog += c.toString()));
    await until("nginx", async () => ((await refused(lbPort)) ? null : true), 10_000);
  }

  async function to(body: unknown, headers: Record<string, string> = {}) {
    const r = await fetch(`http://127.0.0.1:${lbPort}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
    if (r.status !== 200) throw new Error(`${r.status} ${await r.text()} ${nginxLog}`);
    const j = (await r.json()) as { port: number; bytes: number };
    expect(r.headers.get("x-gemma3-upstream")).toBe(`127.0.0.1:${j.port}`);
    return j.port;
  }

  it("nginx -t accepts the config of every routing", () => {
    for (const routing of ROUTINGS)
      expect(() =>
        writeNginxConfig(nginx!, {
          listen: { host: "127.0.0.1", port: 1 },
          replicas: ports.map((port) => ({ host: "127.0.0.1", port })),
          routing,
          runDir: join(dir, "t-" + routing),
          njsModule: njs,
          maxFails: 1,
          failTimeoutS: 10,
        }),
      ).not.toThrow();
  });

  it("prefix: every turn of a conversation reaches one upstream; conversations spread", async () => {
    await startNginx("prefix");
    const seen = new Set<number>();
    for (let c = 0; c < 24; c++) {
      const messages: { role: string; content: string }[] = [
        { role: "system", content: "Be brief." },
        { role: "user", content: `Question ${c}: what is ${c} squared?` },
      ];
      const first = await to({ messages });
      for (let t = 1; t < 4; t++) {
        messages.push({ role: "assistant", content: `Answer ${t}` });
        messages.push({ role: "user", content: `Follow-up ${t}` });
        expect(await to({ messages, stream: t % 2 === 0 })).toBe(first);
      }
      seen.add(first);
    }
    // Spread, not balance: which upstream a conversation hashes to depends on the upstreams'
    // ephemeral ports (nginx's consistent hash), so all three need not be hit (12 conversations
    // missed one about 1 run in 40); all 24 on one upstream would mean no spreading at all.
    expect(seen.size).toBeGreaterThan(1);
  });

  it("prefix: X-Session-Id wins; bodies that are not chats, and GETs, spread", async () => {
    await startNginx("prefix");
    const messages = [{ role: "user", content: "same opening" }];
    const bySession = new Set<number>();
    for (let s = 0; s < 12; s++)
      bySession.add(await to({ messages }, { "x-session-id": `session-${s}` }));
    expect(bySession.size).toBeGreaterThan(1); // the header, not the (equal) messages, decides
    const a = await to({ messages: [{ role: "user", content: "x" }] }, { "x-session-id": "s-1" });
    expect(
      await to({ messages: [{ role: "user", content: "y" }] }, { "x-session-id": "s-1" }),
    ).toBe(a);
    const spread = new Set<number>();
    for (let i = 0; i < 24; i++) spread.add(await to("not json"));
    expect(spread.size).toBeGreaterThan(1);
    const gets = new Set<number>();
    for (let i = 0; i < 24; i++) {
      const r = await fetch(`http://127.0.0.1:${lbPort}/v1/models`);
      gets.add(((await r.json()) as { port: number }).port);
    }
    expect(gets.size).toBeGreaterThan(1);
  });

  it("prefix: a multi-MiB body (images as data URLs) keeps its affinity and arrives whole", async () => {
    await startNginx("prefix");
    const image = "data:image/png;base64," + "A".repeat(3 << 20);
    const messages: unknown[] = [
      {
        role: "user",
        content: [
          { type: "text", text: "What is in this picture?" },
          { type: "image_url", image_url: { url: image } },
        ],
      },
    ];
    const home = await to({ messages });
    messages.push({ role: "assistant", content: "A cat." }, { role: "user", content: "Sure?" });
    expect(await to({ messages })).toBe(home);
    const body = JSON.stringify({ messages });
    const r = await fetch(`http://127.0.0.1:${lbPort}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
    expect(((await r.json()) as { bytes: number }).bytes).toBe(body.length);
    // A different image in the same words is another conversation: some go elsewhere.
    const homes = new Set<number>();
    for (let i = 0; i < 8; i++)
      homes.add(
        await to({
          messages: [
            { role: "user", content: [{ type: "image_url", image_url: { url: image + i } }] },
          ],
        }),
      );
    expect(homes.size).toBeGreaterThan(1);
  });

  it("session: the header picks the upstream; without it requests spread", async () => {
    await startNginx("session");
    const a = await to({ messages: [{ role: "user", content: "1" }] }, { "x-session-id": "abc" });
    for (let i = 0; i < 5; i++)
      expect(
        await to({ messages: [{ role: "user", content: String(i) }] }, { "x-session-id": "abc" }),
      ).toBe(a);
    const spread = new Set<number>();
    for (let i = 0; i < 24; i++)
      spread.add(await to({ messages: [{ role: "user", content: "same" }] }));
    expect(spread.size).toBeGreaterThan(1);
  });

  it("round-robin: each upstream in turn", async () => {
    await startNginx("round-robin");
    const got: number[] = [];
    for (let i = 0; i < 6; i++)
      got.push(await to({ messages: [{ role: "user", content: "same" }] }));
    expect(new Set(got.slice(0, 3)).size).toBe(3);
    expect(got.slice(3)).toEqual(got.slice(0, 3));
  });

  it("a refused upstream is retried on another and taken out of rotation", async () => {
    await startNginx("prefix");
    // nginx writes a request's access-log line after the response has gone out, so a client can
    // read the log before the line is there: count the lines first, then wait for this test's
    // three (the pinned request, the retried one, the one after).
    const logLines = () => {
      try {
        return readFileSync(join(dir, "prefix", "access.log"), "utf8")
          .split("\n")
          .filter(Boolean);
      } catch {
        return [];
      }
    };
    const before = logLines().length;
    const messages = [{ role: "user", content: "pinned conversation" }];
    const home = await to({ messages });
    const i = ports.indexOf(home);
    await new Promise<void>((r) => upstreams[i]!.close(() => r()));
    try {
      const r = await fetch(`http://127.0.0.1:${lbPort}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ messages }),
      });
      expect(r.status).toBe(200);
      const moved = ((await r.json()) as { port: number }).port;
      expect(moved).not.toBe(home);
      // Tried the dead one first (then the next on the ring), and then no longer tries it.
      expect(r.headers.get("x-gemma3-upstream")).toBe(`127.0.0.1:${home}, 127.0.0.1:${moved}`);
      expect(await to({ messages })).toBe(moved);
      let log = logLines();
      for (let t = 0; t < 100 && log.length < before + 3; t++) {
        await new Promise((res) => setTimeout(res, 20));
        log = logLines();
      }
      expect(log.at(-1)).toContain(`upstream=127.0.0.1:${moved} upstream_status=200`);
    } finally {
      await new Promise<void>((r) => upstreams[i]!.listen(home, "127.0.0.1", r));
    }
  });
});

// ----------------------------------------------------------------------------------------------
// The launcher with real replicas (demo checkpoint, CPU)

interface State {
  url: string;
  nginx: { pid: number | null };
  replicas: { index: number; port: number; pid: number | null; state: string; restarts: number }[];
}

async function scrape(port: number): Promise<{ queries: number; hits: number }> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const v = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]);
  return {
    queries: v("gemma3_prefix_cache_queries_total"),
    hits: v("gemma3_prefix_cache_hits_total"),
  };
}

describe.skipIf(!withNginx || !existsSync(cli))("gemma3 replicas with two demo replicas", () => {
  let dir: string;
  let launcher: ChildProcess;
  let log = "";
  let client: OpenAI;
  let lb = 0;
  const state = (): State => JSON.parse(readFileSync(join(dir, "replicas.json"), "utf8"));

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "gemma3-replicas-test-"));
    const [port] = await freePorts(3);
    lb = port!;
    launcher = spawn(
      process.execPath,
      [
        cli,
        "replicas",
        "--replicas",
        "2",
        "--port",
        String(lb),
        "--run-dir",
        dir,
        "--fail-timeout",
        "2",
        "--max-seqs",
        "8",
        "--max-model-len",
        "1024",
        "--quiet",
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    launcher.stderr!.on("data", (c: Buffer) => (log += c.toString()));
    await until(
      "both replicas and nginx",
      () => {
        if (launcher.exitCode !== null) throw new Error(`launcher exited:\n${log}`);
        if (!existsSync(join(dir, "replicas.json"))) return null;
        const s = state();
        return s.nginx.pid !== null && s.replicas.every((r) => r.state === "ready") ? s : null;
      },
      120_000,
    );
    client = new OpenAI({ baseURL: `http://127.0.0.1:${lb}/v1`, apiKey: "unused", maxRetries: 0 });
  }, 180_000);

  afterAll(async () => {
    if (launcher && launcher.exitCode === null) {
      const done = new Promise((r) => launcher.once("exit", r));
      launcher.kill("SIGTERM");
      await done;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  type Msg = { role: "system" | "user" | "assistant"; content: string };
  const system = "You are a terse assistant. Answer in one sentence, metric units, exact numbers.";

  async function turn(messages: Msg[], maxTokens: number) {
    const { data, response } = await client.chat.completions
      .create({ model: "demo-model", messages, max_tokens: maxTokens, temperature: 0 })
      .withResponse();
    return {
      text: data.choices[0]!.message.content ?? "",
      usage: data.usage!,
      upstream: response.headers.get("x-gemma3-upstream")!,
    };
  }

  it("a conversation stays on one replica and reuses its prefix there", async () => {
    const ports = state().replicas.map((r) => r.port);
    const before = await Promise.all(ports.map(scrape));
    let prompt = 0;
    let cached = 0;
    const homes = new Set<string>();
    for (let c = 0; c < 6; c++) {
      const messages: Msg[] = [
        { role: "system", content: system },
        { role: "user", content: `Conversation ${c}: how far is the Moon?` },
      ];
      let home: string | null = null;
      for (let t = 0; t < 3; t++) {
        const r = await turn(messages, 16);
        home ??= r.upstream;
        expect(r.upstream).toBe(home);
        const hit = r.usage.prompt_tokens_details?.cached_tokens ?? 0;
        // Turn 2 on reuses at least the previous turn's prompt, in whole 16-token pages.
        if (t > 0) expect(hit).toBeGreaterThanOrEqual(16);
        prompt += r.usage.prompt_tokens;
        cached += hit;
        messages.push({ role: "assistant", content: r.text });
        messages.push({ role: "user", content: `And follow-up ${t}?` });
      }
      homes.add(home!);
    }
    expect(homes.size).toBe(2); // the six conversations used both replicas
    const after = await Promise.all(ports.map(scrape));
    const queries = after.reduce((s, m, i) => s + m.queries - before[i]!.queries, 0);
    const hits = after.reduce((s, m, i) => s + m.hits - before[i]!.hits, 0);
    expect(queries).toBe(prompt);
    expect(hits).toBe(cached);
    process.stderr.write(
      `[replicas test] prefix-affinity hit rate over 6 conversations × 3 turns: ${hits}/${queries} = ${(hits / queries).toFixed(3)}\n`,
    );
  }, 120_000);

  it("killing a replica under load fails only what ran on it; the launcher restarts it", async () => {
    const s0 = state();
    const victim = s0.replicas[0]!;
    const victimAddr = `127.0.0.1:${victim.port}`;
    const survivor = `127.0.0.1:${s0.replicas[1]!.port}`;
    // Conversations whose affinity key lands on each replica (one-token probes through nginx).
    const on = new Map<string, string[]>([
      [victimAddr, []],
      [survivor, []],
    ]);
    for (let i = 0; [...on.values()].some((l) => l.length < 6); i++) {
      expect(i).toBeLessThan(200);
      const content = `conversation ${i}`;
      const l = on.get((await turn([{ role: "user", content }], 1)).upstream)!;
      if (l.length < 6) l.push(content);
    }
    const pick = (addr: string, from: number, n: number) => on.get(addr)!.slice(from, from + n);
    // Long streams, three per replica, each started (first chunk in) before the kill.
    const streams = await Promise.all(
      [...pick(victimAddr, 0, 3), ...pick(survivor, 0, 3)].map(async (content) => {
        const { data, response } = await client.chat.completions
          .create({
            model: "demo-model",
            messages: [{ role: "user", content }],
            max_tokens: 600,
            temperature: 0,
            stream: true,
            ...({ ignore_eos: true } as object),
          })
          .withResponse();
        const it = data[Symbol.asyncIterator]();
        await it.next();
        return { upstream: response.headers.get("x-gemma3-upstream")!, it };
      }),
    );
    expect(streams.map((s) => s.upstream)).toEqual([
      ...Array(3).fill(victimAddr),
      ...Array(3).fill(survivor),
    ]);
    const drained = streams.map(async (s) => {
      let chunks = 1;
      let finish: string | null = null;
      try {
        for (let r = await s.it.next(); !r.done; r = await s.it.next()) {
          chunks++;
          finish = r.value.choices[0]?.finish_reason ?? finish;
        }
        return { ...s, ok: true, chunks, finish, error: "" };
      } catch (e) {
        return { ...s, ok: false, chunks, finish, error: String(e) };
      }
    });
    // Non-streamed requests in flight across the kill, on both replicas.
    const inflight = [...pick(victimAddr, 3, 3), ...pick(survivor, 3, 3)].map((content) =>
      turn([{ role: "user", content }], 200).then(
        (r) => ({ ok: true, status: 200, upstream: r.upstream }),
        (e: InstanceType<typeof OpenAI.APIError>) => ({
          ok: false,
          status: e.status,
          upstream: e.headers?.get("x-gemma3-upstream") ?? "",
        }),
      ),
    );
    // The openai client's own retries (2 by default, 502 included) hide the 502 from the caller.
    const retrying = new OpenAI({ baseURL: `http://127.0.0.1:${lb}/v1`, apiKey: "unused" });
    const retried = retrying.chat.completions.create({
      model: "demo-model",
      messages: [{ role: "user", content: pick(victimAddr, 5, 1)[0]! }],
      max_tokens: 200,
      temperature: 0,
    });
    await new Promise((r) => setTimeout(r, 50));
    process.kill(victim.pid!, "SIGKILL");
    // Dead once its port refuses: a request sent from then on never reaches it. (One sent between
    // the signal and the process's end can still be accepted by its socket: it ran on it.)
    await until("the victim's port to close", async () =>
      (await refused(victim.port)) ? true : null,
    );
    const after = await Promise.all(
      [...pick(victimAddr, 0, 4), ...pick(survivor, 0, 4)].map((content) =>
        turn([{ role: "user", content }], 8),
      ),
    );
    const streamed = await Promise.all(drained);
    const flight = await Promise.all(inflight);
    expect((await retried).choices[0]!.finish_reason).toBe("length");

    for (const s of streamed) {
      if (s.upstream === victimAddr) {
        // Running on the victim: the SSE stream breaks (no finish_reason, no [DONE]) and the
        // client's read fails ("terminated", undici's premature close).
        expect(s.ok).toBe(false);
        expect(s.error).toMatch(/terminated/);
        expect(s.finish).toBeNull();
      } else {
        expect(s.ok).toBe(true);
        expect(s.finish).toBe("length");
        expect(s.chunks).toBeGreaterThanOrEqual(600);
      }
    }
    for (const [i, f] of flight.entries())
      if (i >= 3) expect(f).toEqual({ ok: true, status: 200, upstream: survivor });
      // On the victim: finished before the kill, or a 502 from nginx naming only the victim.
      else if (!f.ok) expect(f).toEqual({ ok: false, status: 502, upstream: victimAddr });
    // Sent after the victim died: every one served by the survivor; those whose key lands on the
    // victim were refused there and passed on (header "victim, survivor"), or went straight to
    // the survivor once nginx marked the victim failed.
    for (const a of after) expect(a.upstream.split(", ").at(-1)).toBe(survivor);
    process.stderr.write(
      `[replicas test] kill: streams on victim ${streamed
        .filter((s) => s.upstream === victimAddr)
        .map((s) => `broken after ${s.chunks} chunks`)
        .join(
          ", ",
        )}; on survivor ${streamed.filter((s) => s.upstream !== victimAddr && s.ok).length}/3 complete; ` +
        `non-streamed in flight ${flight.map((f) => f.status).join(",")}; after the kill ${after.length}/8 ok, upstreams ${after.map((a) => a.upstream).join(" | ")}\n`,
    );

    // The launcher restarts it (1 s backoff, then the load), and nginx sends it its conversations
    // again once fail_timeout (2 s) has passed.
    const back = await until(
      "the restart",
      () => {
        const r = state().replicas[0]!;
        return r.restarts === 1 && r.state === "ready" && r.pid !== victim.pid ? r : null;
      },
      60_000,
    );
    expect((await fetch(`http://127.0.0.1:${back.port}/health`)).status).toBe(200);
    expect(log).toMatch(/replica 0 \(pid \d+\) exited \(signal SIGKILL\); restarting in 1 s/);
    await until(
      "traffic back on the restarted replica",
      async () =>
        (await turn([{ role: "user", content: pick(victimAddr, 0, 1)[0]! }], 2)).upstream ===
        victimAddr
          ? true
          : null,
      30_000,
    );
  }, 180_000);
});
