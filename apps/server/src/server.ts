// The HTTP server: node:http, routes, API key, CORS, body limits, SSE, client disconnects. It
// listens before the model is loaded (GET /health answers 503 until it is) and holds no math: every
// request goes to OpenAIApi over the Engine.
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { timingSafeEqual } from "node:crypto";
import type { AddressInfo } from "node:net";
import type { Engine } from "./engine.js";
import { isStickyDeviceError } from "@gemma3/native";
import { HttpError, toHttpError } from "./errors.js";
import { Metrics } from "./metrics.js";
import { OpenAIApi } from "./openai.js";
import { CHAT_PAGE } from "./page.js";
import { SseWriter } from "./sse.js";

export interface ServerOptions {
  /** The engine, or its loading promise (the server answers 503 until it resolves). */
  engine: Engine | Promise<Engine>;
  /** Bearer token the /v1 endpoints and /tokenize, /detokenize require (health, metrics and the page stay public). */
  apiKey?: string;
  /** Access-Control-Allow-Origin value (e.g. "*"); CORS is off when absent. */
  cors?: string;
  /** Largest request body in bytes (default 32 MiB: images travel as data URLs). */
  maxBodyBytes?: number;
  /** Let image_url parts name http(s) URLs (default: data: URLs only). */
  allowImageUrls?: boolean;
  /** Log one line per request to this function. */
  log?: (line: string) => void;
  /**
   * Called once when the device fails for good (a sticky CUDA error): /health answers 503 from
   * then on, and the process should exit so a supervisor restarts it (`gemma3 serve` does).
   */
  onFatal?: (e: Error) => void;
}

export interface RunningServer {
  readonly server: Server;
  readonly metrics: Metrics;
  /** "http://host:port" once listening */
  readonly url: string;
  /** The engine once loaded (null while loading or after a load failure). */
  engine(): Engine | null;
  /** Resolves when the engine is loaded (rejects with its load error). */
  ready(): Promise<Engine>;
  close(): Promise<void>;
}

type State =
  | { kind: "loading" }
  | { kind: "ready"; engine: Engine; api: OpenAIApi }
  | { kind: "failed"; error: Error };

async function readBody(req: IncomingMessage, limit: number): Promise<unknown> {
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit)
    throw new HttpError(
      413,
      `request body of ${declared} bytes exceeds the limit of ${limit} bytes`,
      null,
      "body_too_large",
    );
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > limit)
      throw new HttpError(
        413,
        `request body exceeds the limit of ${limit} bytes`,
        null,
        "body_too_large",
      );
    chunks.push(c as Buffer);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "") throw new HttpError(400, "the request body is empty (expected JSON)");
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HttpError(
      400,
      `the request body is not valid JSON: ${(e as Error).message}`,
      null,
      "invalid_json",
    );
  }
}

function keyMatches(given: string, want: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(want);
  return a.length === b.length && timingSafeEqual(a, b);
}

export async function startServer(
  o: ServerOptions & { port?: number; host?: string },
): Promise<RunningServer> {
  const metrics = new Metrics();
  const maxBody = o.maxBodyBytes ?? 32 * 1024 * 1024;
  let state: State = { kind: "loading" };
  const loading = Promise.resolve(o.engine).then(
    (engine) => {
      metrics.prefixCaching = engine.info.prefixCache !== null;
      state = {
        kind: "ready",
        engine,
        api: new OpenAIApi(engine, metrics, { allowImageUrls: o.allowImageUrls ?? false }),
      };
      return engine;
    },
    (error: Error) => {
      state = { kind: "failed", error };
      throw error;
    },
  );
  loading.catch(() => undefined);

  const api = (): OpenAIApi => {
    if (state.kind === "ready") return state.api;
    if (state.kind === "loading")
      throw new HttpError(503, "the model is loading", null, "model_loading", 5);
    throw new HttpError(
      503,
      `the model failed to load: ${state.error.message}`,
      null,
      "model_load_failed",
    );
  };

  const send = (
    res: ServerResponse,
    status: number,
    body: unknown,
    headers: Record<string, string> = {},
  ) => {
    if (res.headersSent) return;
    const text = typeof body === "string" ? body : JSON.stringify(body);
    res.writeHead(status, {
      "content-type": typeof body === "string" ? "text/plain; charset=utf-8" : "application/json",
      "content-length": Buffer.byteLength(text),
      ...headers,
    });
    res.end(text);
  };

  async function route(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    abort: AbortController,
    sseRef: { w?: SseWriter },
  ): Promise<number> {
    const method = req.method ?? "GET";
    const signal = abort.signal;
    const needsKey = path.startsWith("/v1/") || path === "/tokenize" || path === "/detokenize";
    if (needsKey && o.apiKey !== undefined) {
      const auth = req.headers.authorization ?? "";
      const m = /^Bearer\s+(.+)$/i.exec(auth);
      if (!m || !keyMatches(m[1]!.trim(), o.apiKey))
        throw new HttpError(
          401,
          "Incorrect or missing API key (send Authorization: Bearer <key>)",
          null,
          "invalid_api_key",
        );
    }
    const json = (status: number, v: unknown) => send(res, status, v);
    const post = async (handler: (body: unknown) => Promise<void> | void): Promise<number> => {
      if (method !== "POST")
        throw new HttpError(405, `${path} takes POST`, null, "method_not_allowed");
      api(); // 503 before reading a body the loading model can't serve
      const body = await readBody(req, maxBody);
      // A client that hung up while its request waited to be read (a burst behind a busy event
      // loop) is gone before its socket's "close" event runs: cancel now rather than after a step.
      if (req.socket.destroyed || req.socket.readableEnded) abort.abort();
      await handler(body);
      return 200;
    };
    const sse = () => (sseRef.w = new SseWriter(res));
    switch (path) {
      case "/health": {
        if (state.kind === "ready") json(200, { status: "ok" });
        else if (state.kind === "loading")
          send(res, 503, { status: "loading" }, { "retry-after": "5" });
        else json(503, { status: "failed", error: state.error.message });
        return res.statusCode;
      }
      case "/":
      case "/index.html":
        if (method !== "GET") throw new HttpError(405, "GET only", null, "method_not_allowed");
        res.writeHead(200, {
          "content-type": "text/html; charset=utf-8",
          "content-length": Buffer.byteLength(CHAT_PAGE),
        });
        res.end(CHAT_PAGE);
        return 200;
      case "/metrics":
        send(res, 200, metrics.render(state.kind === "ready" ? state.engine.stats() : null), {
          "content-type": "text/plain; version=0.0.4; charset=utf-8",
        });
        return 200;
      case "/v1/models": {
        if (method !== "GET") throw new HttpError(405, "GET only", null, "method_not_allowed");
        api();
        const info = (state as { engine: Engine }).engine.info;
        json(200, {
          object: "list",
          data: [
            {
              id: info.id,
              object: "model",
              created: Math.floor(Date.now() / 1000),
              owned_by: "gemma3-node",
              max_model_len: info.maxModelLen,
              modalities: info.modalities,
            },
          ],
        });
        return 200;
      }
      case "/v1/chat/completions":
        return post((b) => api().chat(b, signal, sse, json));
      case "/v1/completions":
        return post((b) => api().completions(b, signal, sse, json));
      case "/tokenize":
        return post((b) =>
          api()
            .tokenize(b)
            .then((r) => json(200, r)),
        );
      case "/detokenize":
        return post((b) => json(200, api().detokenize(b)));
      default:
        throw new HttpError(404, `no route for ${method} ${path}`, null, "not_found");
    }
  }

  const server = createHttpServer(async (req, res) => {
    const t0 = performance.now();
    const path = (req.url ?? "/").split("?")[0]!;
    if (o.cors !== undefined) {
      res.setHeader("access-control-allow-origin", o.cors);
      res.setHeader("access-control-allow-headers", "authorization, content-type");
      res.setHeader("access-control-allow-methods", "GET, POST, OPTIONS");
      if (req.method === "OPTIONS") {
        res.writeHead(204).end();
        return;
      }
    }
    // A client that goes away (closed tab, timeout, dropped stream) cancels its generations: the
    // scheduler frees their KV at once.
    const abort = new AbortController();
    res.on("close", () => {
      if (!res.writableFinished) abort.abort();
    });
    const sseRef: { w?: SseWriter } = {};
    let status: number;
    try {
      status = await route(req, res, path, abort, sseRef);
    } catch (e) {
      if (isStickyDeviceError(e) && state.kind === "ready") {
        state = { kind: "failed", error: new Error(`device fault: ${(e as Error).message}`) };
        o.onFatal?.(e as Error);
      }
      const h = toHttpError(e);
      status = h.status;
      if (sseRef.w) sseRef.w.error(h.body());
      else
        send(
          res,
          h.status,
          h.body(),
          h.retryAfter !== undefined ? { "retry-after": String(h.retryAfter) } : {},
        );
      // Stop reading an oversized body; the reply is already on its way.
      if (h.status === 413) req.resume();
    }
    metrics.onRequest(
      path.startsWith("/v1/") || path === "/tokenize" || path === "/detokenize" ? path : "other",
      status,
    );
    o.log?.(`${req.method} ${path} ${status} ${(performance.now() - t0).toFixed(1)}ms`);
  });
  // Slow-header and slow-body clients are cut off; streamed responses are not limited.
  server.headersTimeout = 15_000;
  server.requestTimeout = 120_000;

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port ?? 8000, o.host ?? "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
  return {
    server,
    metrics,
    url: `http://${host}:${addr.port}`,
    engine: () => (state.kind === "ready" ? state.engine : null),
    ready: () => loading,
    async close() {
      await new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      });
      const e = await loading.catch(() => null);
      if (state.kind === "ready") await state.api.close();
      await e?.close();
    },
  };
}
