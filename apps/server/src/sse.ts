// Server-sent events as OpenAI streams them: `data: {json}\n\n` per chunk, `data: [DONE]` last.
// Writes after the client has gone are dropped (the request's AbortSignal cancels the generation).
import type { ServerResponse } from "node:http";

export class SseWriter {
  private open = true;

  constructor(private readonly res: ServerResponse) {
    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
    res.flushHeaders();
    res.on("close", () => (this.open = false));
  }

  send(v: unknown): void {
    if (!this.open || this.res.writableEnded) return;
    this.res.write(`data: ${JSON.stringify(v)}\n\n`);
  }

  /** An error after the stream began: one error event (OpenAI's shape), then [DONE]. */
  error(body: unknown): void {
    this.send(body);
    this.done();
  }

  done(): void {
    if (this.res.writableEnded) return;
    if (this.open) this.res.write("data: [DONE]\n\n");
    this.res.end();
  }
}
