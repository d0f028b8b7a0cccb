// `gemma3 replicas`: N `gemma3 serve` processes on loopback ports (one per GPU or TP group, or all
// on the CPU) behind nginx, which does the balancing: an upstream with passive health checks
// (max_fails / fail_timeout), retries of requests that never reached a replica, SSE-friendly
// proxying, and prefix-affinity routing (njs hashes a chat's first messages, see
// ../nginx/affinity.js) so that a conversation's turns reach the replica holding its KV prefix.
// The launcher writes the config, runs nginx in the foreground and restarts a replica that exits,
// with backoff. No request passes through this process.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { CliUsageError } from "./serve.js";

export const REPLICAS_USAGE = `  gemma3 replicas --replicas N [--port 8000] [--host 127.0.0.1] [--base-port PORT+1]
               [--device cpu|cuda] [--routing prefix|session|round-robin|least-conn]
               [--max-fails 1] [--fail-timeout 10] [--run-dir DIR] [--nginx PATH]
               [--njs-module FILE.so] [--no-prefix-caching] [--print-config]
               [serve options: --model … --dtype … --tensor-parallel T --max-seqs …]`;

export const ROUTINGS = ["prefix", "session", "round-robin", "least-conn"] as const;
export type Routing = (typeof ROUTINGS)[number];

export interface NginxConfigOptions {
  /** where nginx listens */
  listen: { host: string; port: number };
  /** the replicas' loopback ports */
  replicas: readonly { host: string; port: number }[];
  routing: Routing;
  /** the directory holding the config, affinity.js, pid file, logs and temp files */
  runDir: string;
  /** ngx_http_js_module.so, loaded for --routing prefix (null when nginx has njs built in) */
  njsModule: string | null;
  /** passive health check: failures within failTimeoutS that take a replica out for failTimeoutS */
  maxFails: number;
  failTimeoutS: number;
  /** largest request body (the server's own limit: 32 MiB, images travel as data URLs) */
  maxBodyBytes?: number;
}

/** The nginx configuration `gemma3 replicas` runs (a complete nginx.conf, no system includes). */
export function nginxConfig(o: NginxConfigOptions): string {
  const dir = o.runDir;
  const body = Math.ceil((o.maxBodyBytes ?? 32 * 1024 * 1024) / 1024);
  const balance: string[] = {
    // Same key → same replica; a key whose replica is down moves to the next one on the ring and
    // comes back when it does (consistent hashing: other keys keep their replica).
    prefix: ["hash $gemma3_affinity consistent;"],
    session: ["hash $gemma3_affinity consistent;"],
    "round-robin": [],
    "least-conn": ["least_conn;"],
  }[o.routing];
  const affinity: string[] =
    o.routing === "prefix"
      ? [
          `js_import affinity from ${join(dir, "affinity.js")};`,
          "js_set $gemma3_affinity affinity.key;",
        ]
      : o.routing === "session"
        ? [
            // Without the header: the request id, i.e. spread (an empty key would pin one replica).
            "map $http_x_session_id $gemma3_affinity {",
            '    "" $request_id;',
            "    default $http_x_session_id;",
            "}",
          ]
        : ["map $request_id $gemma3_affinity { default -; }"];
  const servers = o.replicas.map(
    (r) => `server ${r.host}:${r.port} max_fails=${o.maxFails} fail_timeout=${o.failTimeoutS}s;`,
  );
  const lines = [
    `# Written by \`gemma3 replicas\`: ${o.replicas.length} \`gemma3 serve\` replicas behind nginx,`,
    `# routing: ${o.routing}. Run: nginx -c ${join(dir, "nginx.conf")} -p ${dir}/ -e stderr`,
    ...(o.routing === "prefix" && o.njsModule ? [`load_module ${o.njsModule};`] : []),
    "daemon off;",
    "worker_processes auto;",
    `pid ${join(dir, "nginx.pid")};`,
    "error_log stderr warn;",
    "events {",
    "  worker_connections 4096;",
    "}",
    "http {",
    "  log_format gemma3 '$remote_addr [$time_local] \"$request\" $status $body_bytes_sent '",
    "                    'upstream=$upstream_addr upstream_status=$upstream_status '",
    "                    'time=$request_time key=$gemma3_affinity';",
    `  access_log ${join(dir, "access.log")} gemma3;`,
    ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map(
      (t) => `  ${t}_temp_path ${join(dir, "tmp", t)};`,
    ),
    `  client_max_body_size ${body}k;`,
    // Every body stays in memory (nginx allocates what a request sends, up to this): the affinity
    // key reads it, images included, and no worker writes temp files.
    `  client_body_buffer_size ${body}k;`,
    "  client_body_in_single_buffer on;",
    ...affinity.map((l) => "  " + l),
    "  upstream gemma3 {",
    // Shared by the workers: a replica one of them found dead is skipped by all.
    "    zone gemma3 64k;",
    ...balance.map((l) => "    " + l),
    ...servers.map((l) => "    " + l),
    // Idle HTTP/1.1 connections to the replicas, reused across requests.
    "    keepalive 64;",
    "  }",
    "  server {",
    `    listen ${o.listen.host.includes(":") ? `[${o.listen.host}]` : o.listen.host}:${o.listen.port};`,
    "    location / {",
    "      proxy_pass http://gemma3;",
    "      proxy_http_version 1.1;",
    '      proxy_set_header Connection "";',
    "      proxy_set_header Host $host;",
    "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
    // SSE: every token goes out as it comes; a generation may run long between bytes.
    "      proxy_buffering off;",
    "      proxy_cache off;",
    "      proxy_read_timeout 3600s;",
    "      proxy_send_timeout 3600s;",
    "      proxy_connect_timeout 5s;",
    // A request that never reached a replica (refused, reset before it was sent, 502/503) goes
    // to the next one; a POST that a replica received is never sent twice (nginx's rule for
    // non-idempotent methods), so one running on a replica that dies gets the error instead.
    "      proxy_next_upstream error timeout http_502 http_503;",
    `      proxy_next_upstream_tries ${o.replicas.length};`,
    "      add_header X-Gemma3-Upstream $upstream_addr always;",
    "    }",
    "  }",
    "}",
  ];
  return lines.join("\n") + "\n";
}

/** ngx_http_js_module.so where distributions put it (Debian's libnginx-mod-http-js first). */
export function findNjsModule(): string | null {
  for (const d of [
    "/usr/lib/nginx/modules",
    "/usr/lib64/nginx/modules",
    "/usr/share/nginx/modules",
    "/etc/nginx/modules",
    "/usr/local/nginx/modules",
  ]) {
    const f = join(d, "ngx_http_js_module.so");
    if (existsSync(f)) return f;
  }
  return null;
}

/** The nginx binary: PATH, then /usr/sbin (not on a non-root PATH on Debian). */
export function findNginx(): string | null {
  const r = spawnSync("nginx", ["-v"], { stdio: "ignore" });
  if (!r.error) return "nginx";
  for (const f of ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"])
    if (existsSync(f)) return f;
  return null;
}

const AFFINITY_JS = join(dirname(dirname(fileURLToPath(import.meta.url))), "nginx", "affinity.js");

/**
 * Writes nginx.conf, affinity.js and the temp directories into runDir and checks the config with
 * `nginx -t`; returns the config's path. Throws with nginx's message when the check fails.
 */
export function writeNginxConfig(nginx: string, o: NginxConfigOptions): string {
  mkdirSync(o.runDir, { recursive: true, mode: 0o755 });
  for (const t of ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"])
    mkdirSync(join(o.runDir, "tmp", t), { recursive: true });
  if (o.routing === "prefix") copyFileSync(AFFINITY_JS, join(o.runDir, "affinity.js"));
  const conf = join(o.runDir, "nginx.conf");
  writeFileSync(conf, nginxConfig(o));
  const t = spawnSync(nginx, ["-t", "-q", "-c", conf, "-p", o.runDir + "/", "-e", "stderr"], {
    encoding: "utf8",
  });
  if (t.error || t.status !== 0)
    throw new Error(`nginx -t rejects ${conf}: ${(t.stderr || t.error?.message || "").trim()}`);
  return conf;
}

function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((done) => {
    const s = createServer();
    s.once("error", () => done(false));
    s.listen(port, host, () => s.close(() => done(true)));
  });
}

async function healthy(url: string): Promise<boolean> {
  try {
    const r = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2000) });
    await r.body?.cancel();
    return r.status === 200;
  } catch {
    return false;
  }
}

/** Prefixes each line of a child's output and writes it to our stderr. */
function relay(stream: NodeJS.ReadableStream | null, tag: string): void {
  if (!stream) return;
  createInterface({ input: stream }).on("line", (l) => process.stderr.write(`${tag} ${l}\n`));
}

const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30_000;
/** A replica up this long before it exits restarts at the shortest backoff again. */
const BACKOFF_RESET_MS = 60_000;

interface ReplicaState {
  index: number;
  port: number;
  device: string;
  pid: number | null;
  state: "starting" | "ready" | "exited";
  restarts: number;
}

class Replica {
  child: ChildProcess | null = null;
  state: ReplicaState["state"] = "starting";
  restarts = 0;
  everReady = false;
  private backoffMs = BACKOFF_MIN_MS;
  private startedAt = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    readonly index: number,
    readonly host: string,
    readonly port: number,
    readonly device: string,
    private readonly argv: readonly string[],
    private readonly env: NodeJS.ProcessEnv,
    private readonly events: {
      changed: () => void;
      /** first start failed (bad options, model that does not load): no point in restarting */
      fatal: (r: Replica, why: string) => void;
      stopping: () => boolean;
    },
  ) {}

  get url(): string {
    return `http://${this.host}:${this.port}`;
  }

  start(): void {
    this.timer = null;
    this.state = "starting";
    this.startedAt = Date.now();
    const child = spawn(process.execPath, [...this.argv], {
      stdio: ["ignore", "pipe", "pipe"],
      env: this.env,
    });
    this.child = child;
    relay(child.stdout, `[r${this.index}]`);
    relay(child.stderr, `[r${this.index}]`);
    child.once("exit", (code, signal) => this.exited(child, code, signal));
    this.events.changed();
    void this.watchReady(child);
  }

  private async watchReady(child: ChildProcess): Promise<void> {
    while (this.child === child && child.exitCode === null && child.signalCode === null) {
      if (await healthy(this.url)) {
        if (this.child !== child) return;
        this.state = "ready";
        this.everReady = true;
        process.stderr.write(`gemma3 replicas: replica ${this.index} ready at ${this.url}\n`);
        this.events.changed();
        return;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  private exited(child: ChildProcess, code: number | null, signal: string | null): void {
    if (this.child !== child) return;
    this.child = null;
    this.state = "exited";
    this.events.changed();
    if (this.events.stopping()) return;
    const how = signal ? `signal ${signal}` : `code ${code}`;
    if (!this.everReady) {
      this.events.fatal(this, `replica ${this.index} exited (${how}) before it was ever ready`);
      return;
    }
    if (Date.now() - this.startedAt >= BACKOFF_RESET_MS) this.backoffMs = BACKOFF_MIN_MS;
    const wait = this.backoffMs;
    this.backoffMs = Math.min(BACKOFF_MAX_MS, this.backoffMs * 2);
    this.restarts++;
    process.stderr.write(
      `gemma3 replicas: replica ${this.index} (pid ${child.pid}) exited (${how}); restarting in ${wait / 1000} s\n`,
    );
    this.timer = setTimeout(() => this.start(), wait);
  }

  /** SIGTERM (the server cancels what runs and frees the device); SIGKILL after 15 s. */
  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const gone = new Promise<void>((r) => c.once("exit", () => r()));
    c.kill("SIGTERM");
    const t = setTimeout(() => c.kill("SIGKILL"), 15_000);
    await gone;
    clearTimeout(t);
  }

  snapshot(): ReplicaState {
    return {
      index: this.index,
      port: this.port,
      device: this.device,
      pid: this.child?.pid ?? null,
      state: this.state,
      restarts: this.restarts,
    };
  }
}

interface LauncherArgs {
  replicas: number;
  port: number;
  host: string;
  basePort: number;
  device: "cpu" | "cuda";
  routing: Routing;
  maxFails: number;
  failTimeoutS: number;
  runDir: string | undefined;
  nginx: string | undefined;
  njsModule: string | undefined;
  prefixCaching: boolean;
  printConfig: boolean;
  tensorParallel: number;
  /** passed to every `gemma3 serve` */
  serveArgs: string[];
}

const VALUE_OPTIONS = [
  "replicas",
  "port",
  "host",
  "base-port",
  "device",
  "routing",
  "max-fails",
  "fail-timeout",
  "run-dir",
  "nginx",
  "njs-module",
] as const;
const FLAG_OPTIONS = ["no-prefix-caching", "print-config"] as const;
/** serve options the launcher sets per replica */
const OWNED_BY_LAUNCHER = ["port", "host", "device", "listen-after-load"];

function intIn(s: string | undefined, what: string, lo: number, hi: number): number | undefined {
  if (s === undefined) return undefined;
  const v = Number(s);
  if (!Number.isInteger(v) || v < lo || v > hi)
    throw new CliUsageError(`${what}: expected an integer in ${lo}..${hi}, got "${s}"`);
  return v;
}

/** Splits argv into the launcher's options and the rest, which every `gemma3 serve` gets. */
export function parseReplicasArgs(argv: readonly string[]): LauncherArgs {
  const own = new Map<string, string | true>();
  const serveArgs: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
    const name = m?.[1];
    if (name !== undefined && (VALUE_OPTIONS as readonly string[]).includes(name)) {
      const v = m![2] ?? argv[++i];
      if (v === undefined) throw new CliUsageError(`--${name} needs a value`);
      own.set(name, v);
    } else if (name !== undefined && (FLAG_OPTIONS as readonly string[]).includes(name)) {
      own.set(name, true);
    } else {
      if (name !== undefined && OWNED_BY_LAUNCHER.includes(name))
        throw new CliUsageError(`--${name}: the launcher sets it for each replica`);
      serveArgs.push(a);
    }
  }
  const str = (k: string) => own.get(k) as string | undefined;
  const replicas = intIn(str("replicas"), "--replicas", 1, 64);
  if (replicas === undefined) throw new CliUsageError("replicas: --replicas N is required");
  const port = intIn(str("port"), "--port", 1, 65535) ?? 8000;
  const basePort = intIn(str("base-port"), "--base-port", 1, 65535 - replicas + 1) ?? port + 1;
  if (port >= basePort && port < basePort + replicas)
    throw new CliUsageError(`--port ${port} falls among the replicas' ports ${basePort}..`);
  const device = str("device") ?? "cpu";
  if (device !== "cpu" && device !== "cuda")
    throw new CliUsageError(
      `--device: cpu or cuda (replica i gets cuda:i, or cuda:i·T with --tensor-parallel T), got "${device}"`,
    );
  const routing = str("routing") ?? "prefix";
  if (!(ROUTINGS as readonly string[]).includes(routing))
    throw new CliUsageError(`--routing: one of ${ROUTINGS.join(", ")}, got "${routing}"`);
  // --tensor-parallel stays a serve option; the launcher reads it to give each group its GPUs.
  const tpAt = serveArgs.findIndex(
    (a) => a === "--tensor-parallel" || a.startsWith("--tensor-parallel="),
  );
  const tpText =
    tpAt < 0
      ? undefined
      : serveArgs[tpAt]!.includes("=")
        ? serveArgs[tpAt]!.split("=")[1]
        : serveArgs[tpAt + 1];
  const tensorParallel = intIn(tpText, "--tensor-parallel", 1, 64) ?? 1;
  return {
    replicas,
    port,
    host: str("host") ?? "127.0.0.1",
    basePort,
    device,
    routing: routing as Routing,
    maxFails: intIn(str("max-fails"), "--max-fails", 0, 100) ?? 1,
    failTimeoutS: intIn(str("fail-timeout"), "--fail-timeout", 1, 3600) ?? 10,
    runDir: str("run-dir"),
    nginx: str("nginx"),
    njsModule: str("njs-module"),
    prefixCaching: own.get("no-prefix-caching") !== true,
    printConfig: own.get("print-config") === true,
    tensorParallel,
    serveArgs,
  };
}

export async function cmdReplicas(argv: string[], cliPath: string): Promise<void> {
  const a = parseReplicasArgs(argv);
  const nginx = a.nginx ?? findNginx();
  if (!nginx)
    throw new Error(
      "nginx not found: install it (Debian: apt-get install nginx libnginx-mod-http-js) or pass --nginx PATH",
    );
  const njsModule = a.routing === "prefix" ? (a.njsModule ?? findNjsModule()) : null;
  if (a.routing === "prefix" && !njsModule)
    throw new Error(
      "--routing prefix needs nginx's njs module (Debian: apt-get install libnginx-mod-http-js; " +
        "or --njs-module FILE.so), or use --routing session (an X-Session-Id header picks the replica)",
    );
  const runDir = resolve(a.runDir ?? mkdtempSync(join(tmpdir(), "gemma3-replicas-")));
  // nginx's workers may run as another user (root starts them as nobody): they enter runDir.
  mkdirSync(runDir, { recursive: true });
  spawnSync("chmod", ["755", runDir]);
  const loop = "127.0.0.1";
  const ports = Array.from({ length: a.replicas }, (_, i) => a.basePort + i);
  const conf = writeNginxConfig(nginx, {
    listen: { host: a.host, port: a.port },
    replicas: ports.map((port) => ({ host: loop, port })),
    routing: a.routing,
    runDir,
    njsModule,
    maxFails: a.maxFails,
    failTimeoutS: a.failTimeoutS,
  });
  if (a.printConfig) {
    process.stdout.write(readFileSync(conf, "utf8"));
    return;
  }
  for (const p of [a.port, ...ports])
    if (!(await portFree(p === a.port ? a.host : loop, p)))
      throw new CliUsageError(`port ${p} is in use (--port, --base-port)`);
  if (a.device === "cuda") {
    const { deviceCount } = await import("@gemma3/native");
    const have = deviceCount();
    if (have < a.replicas * a.tensorParallel)
      throw new CliUsageError(
        `--device cuda: ${a.replicas} replicas × ${a.tensorParallel} GPUs need ${a.replicas * a.tensorParallel}, this machine has ${have}`,
      );
  }

  let stopping = false;
  let fatal: string | null = null;
  let wake: () => void = () => undefined;
  const stopped = new Promise<void>((r) => (wake = r));
  const stateFile = join(runDir, "replicas.json");
  let nginxChild: ChildProcess | null = null;
  const replicas: Replica[] = [];
  const writeState = () => {
    const s = {
      url: `http://${a.host.includes(":") ? `[${a.host}]` : a.host}:${a.port}`,
      routing: a.routing,
      nginx: { pid: nginxChild?.pid ?? null, config: conf },
      replicas: replicas.map((r) => r.snapshot()),
    };
    writeFileSync(stateFile + ".tmp", JSON.stringify(s, null, 2) + "\n");
    renameSync(stateFile + ".tmp", stateFile);
  };
  // NVLink SHARP (multicast) stays off for NCCL: the GPU machines' notes require it.
  const env = { ...process.env, NCCL_NVLS_ENABLE: process.env.NCCL_NVLS_ENABLE ?? "0" };
  for (let i = 0; i < a.replicas; i++) {
    const device = a.device === "cpu" ? "cpu" : `cuda:${i * a.tensorParallel}`;
    const argv = [
      cliPath,
      "serve",
      ...a.serveArgs,
      ...(a.prefixCaching && !a.serveArgs.includes("--enable-prefix-caching")
        ? ["--enable-prefix-caching"]
        : []),
      "--listen-after-load",
      "--host",
      loop,
      "--port",
      String(ports[i]),
      "--device",
      device,
    ];
    replicas.push(
      new Replica(i, loop, ports[i]!, device, argv, env, {
        changed: writeState,
        fatal: (_r, why) => {
          fatal ??= why;
          wake();
        },
        stopping: () => stopping,
      }),
    );
  }
  process.stderr.write(
    `gemma3 replicas: ${a.replicas} replicas on ${ports.map((p) => `${loop}:${p}`).join(", ")} (${a.device}), routing ${a.routing}; nginx config, logs and state in ${runDir}\n`,
  );
  for (const r of replicas) r.start();

  // Ctrl-C reaches the whole process group (replicas and nginx too): their exits are expected.
  const onSignal = () => {
    stopping = true;
    wake();
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  // nginx starts once one replica serves: until then it would only answer 502.
  const firstReady = new Promise<void>((res) => {
    const poll = setInterval(() => {
      if (replicas.some((r) => r.state === "ready") || fatal !== null || stopping) {
        clearInterval(poll);
        res();
      }
    }, 100);
  });
  await Promise.race([firstReady, stopped]);
  if (fatal === null && replicas.some((r) => r.state === "ready")) {
    const child = spawn(nginx, ["-c", conf, "-p", runDir + "/", "-e", "stderr"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    nginxChild = child;
    relay(child.stdout, "[nginx]");
    relay(child.stderr, "[nginx]");
    child.once("exit", (code, signal) => {
      if (stopping) return;
      fatal ??= `nginx exited (${signal ? `signal ${signal}` : `code ${code}`})`;
      wake();
    });
    writeState();
    process.stderr.write(
      `gemma3 replicas: nginx (pid ${child.pid}) listening on http://${a.host}:${a.port}, config ${conf}\n`,
    );
    await stopped;
  }
  stopping = true;
  process.off("SIGINT", onSignal);
  process.off("SIGTERM", onSignal);
  if (fatal) process.stderr.write(`gemma3 replicas: ${fatal}; shutting down\n`);
  else process.stderr.write("gemma3 replicas: shutting down\n");
  const ng = nginxChild as ChildProcess | null;
  const ngDone =
    ng && ng.exitCode === null && ng.signalCode === null
      ? new Promise<void>((r) => ng.once("exit", () => r()))
      : Promise.resolve();
  ng?.kill("SIGTERM"); // fast shutdown: open streams end now, the replicas stop next
  await Promise.all([ngDone, ...replicas.map((r) => r.stop())]);
  writeState();
  if (fatal) process.exitCode = 1;
}
