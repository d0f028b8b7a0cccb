// `gemma3 serve` (the OpenAI-compatible server and web page) and `gemma3 chat` (an interactive,
// streaming conversation in the terminal). Both load through @gemma3/server's Engine, with a
// progress bar on stderr while the weights load.
import { createInterface } from "node:readline/promises";
import { parseArgs } from "node:util";
import { Engine, startServer, type EngineOptions } from "@gemma3/server";
import type { ChatMessage } from "@gemma3/tokenizer";
import {
  HEAD_QUANTIZATIONS,
  WEIGHT_QUANTIZATIONS,
  type HeadQuantization,
  type WeightQuantization,
} from "@gemma3/model";
import { formatBytes } from "@gemma3/kv-cache/estimate";

export const SERVE_USAGE = `  gemma3 serve [--model DIR|FILE.gguf [--mmproj MMPROJ.gguf]] [--port 8000] [--host 127.0.0.1] [--api-key KEY]
               [--device cpu|cuda|cuda:N] [--dtype f32|bf16] [--quantize q8_0|q4_0|q4_k|…]
               [--quantize-head q8_0|q4_0|q6_k|…] [--tensor-parallel N] [--max-seqs 16]
               [--max-model-len N] [--max-queue 256]
               [--cors ORIGIN] [--allow-image-urls] [--served-model-name NAME]
               [--enable-prefix-caching [--prefix-cache-snapshot-blocks N]] [--listen-after-load]
  gemma3 chat  [--model DIR|FILE.gguf [--mmproj MMPROJ.gguf]] [--device …] [--dtype …] [--quantize …] [--max-tokens 512]
               [--quantize-head …] [--temperature T] [--system TEXT]`;

const MODEL_OPTIONS = {
  model: { type: "string" },
  mmproj: { type: "string" },
  device: { type: "string" },
  dtype: { type: "string" },
  quantize: { type: "string" },
  "quantize-head": { type: "string" },
  "tensor-parallel": { type: "string" },
  "max-seqs": { type: "string" },
  "max-model-len": { type: "string" },
} as const;

export class CliUsageError extends Error {}

function posInt(s: string | undefined, what: string): number | undefined {
  if (s === undefined) return undefined;
  const v = Number(s);
  if (!Number.isInteger(v) || v < 1)
    throw new CliUsageError(`${what}: expected a positive integer, got "${s}"`);
  return v;
}

/** A one-line progress bar on stderr (only when stderr is a terminal; a final line otherwise). */
function progressBar(label: string): {
  update: (done: number, total: number) => void;
  end: (ok?: boolean) => void;
} {
  const tty = process.stderr.isTTY;
  let last = -1;
  return {
    update(done, total) {
      const pct = total > 0 ? Math.floor((100 * done) / total) : 100;
      if (!tty || pct === last) return;
      last = pct;
      const w = 30;
      const fill = Math.round((w * pct) / 100);
      process.stderr.write(`\r${label} [${"#".repeat(fill)}${" ".repeat(w - fill)}] ${pct}%`);
    },
    end(ok = true) {
      process.stderr.write(tty ? "\n" : `${label}: ${ok ? "done" : "failed"}\n`);
    },
  };
}

function engineOptions(
  values: Record<string, string | boolean | undefined>,
  demo: string,
): EngineOptions {
  const dtype = values.dtype as string | undefined;
  if (dtype !== undefined && dtype !== "f32" && dtype !== "bf16")
    throw new CliUsageError(`--dtype: f32 or bf16, got "${dtype}"`);
  const quantize = values.quantize as string | undefined;
  if (quantize !== undefined && !(WEIGHT_QUANTIZATIONS as readonly string[]).includes(quantize))
    throw new CliUsageError(
      `--quantize: one of ${WEIGHT_QUANTIZATIONS.join(", ")}, got "${quantize}"`,
    );
  const quantizeHead = values["quantize-head"] as string | undefined;
  if (
    quantizeHead !== undefined &&
    !(HEAD_QUANTIZATIONS as readonly string[]).includes(quantizeHead)
  )
    throw new CliUsageError(
      `--quantize-head: one of ${HEAD_QUANTIZATIONS.join(", ")}, got "${quantizeHead}"`,
    );
  const model = (values.model as string | undefined) ?? demo;
  if (values.model === undefined)
    process.stderr.write(
      "gemma3: no --model given, using the bundled demo checkpoint (random weights)\n",
    );
  const maxSeqs = posInt(values["max-seqs"] as string | undefined, "--max-seqs");
  const maxSeqLen = posInt(values["max-model-len"] as string | undefined, "--max-model-len");
  const tensorParallel = posInt(
    values["tensor-parallel"] as string | undefined,
    "--tensor-parallel",
  );
  return {
    model,
    ...(values.mmproj !== undefined ? { mmproj: values.mmproj as string } : {}),
    ...(values.device !== undefined ? { device: values.device as string } : {}),
    ...(dtype ? { dtype: dtype as "f32" | "bf16" } : {}),
    ...(quantize ? { quantize: quantize as WeightQuantization } : {}),
    ...(quantizeHead ? { quantizeHead: quantizeHead as HeadQuantization } : {}),
    ...(maxSeqs !== undefined ? { maxSeqs } : {}),
    ...(maxSeqLen !== undefined ? { maxSeqLen } : {}),
    ...(tensorParallel !== undefined ? { tensorParallel } : {}),
  };
}

export async function cmdServe(argv: string[], demo: string): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...MODEL_OPTIONS,
      port: { type: "string" },
      host: { type: "string" },
      "api-key": { type: "string" },
      "max-queue": { type: "string" },
      cors: { type: "string" },
      "allow-image-urls": { type: "boolean" },
      "served-model-name": { type: "string" },
      "enable-prefix-caching": { type: "boolean" },
      "prefix-cache-snapshot-blocks": { type: "string" },
      "listen-after-load": { type: "boolean" },
      quiet: { type: "boolean" },
    },
  });
  const opts = engineOptions(values, demo);
  const port = values.port === undefined ? 8000 : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new CliUsageError(`--port: expected 0..65535, got "${values.port}"`);
  const maxQueue = posInt(values["max-queue"], "--max-queue");
  const snapshotBlocks = posInt(
    values["prefix-cache-snapshot-blocks"],
    "--prefix-cache-snapshot-blocks",
  );
  if (snapshotBlocks !== undefined && !values["enable-prefix-caching"])
    throw new CliUsageError("--prefix-cache-snapshot-blocks needs --enable-prefix-caching");
  const bar = progressBar("loading weights");
  const engine = Engine.load({
    ...opts,
    ...(maxQueue !== undefined ? { maxQueue } : {}),
    ...(values["served-model-name"] ? { modelId: values["served-model-name"] } : {}),
    ...(values["enable-prefix-caching"] ? { prefixCaching: true } : {}),
    ...(snapshotBlocks !== undefined ? { prefixCacheSnapshotBlocks: snapshotBlocks } : {}),
    onProgress: bar.update,
  });
  // Behind a load balancer (gemma3 replicas), a replica that refuses connections while it loads
  // is skipped by nginx's retry of connection errors; one that answers 503 is not (a POST that
  // reached a server is never passed on), so there the port opens only once the model is in.
  if (values["listen-after-load"]) {
    try {
      await engine;
    } catch (e) {
      bar.end(false);
      // The CLI prints it and exits 1 (setting process.exitCode here would be overwritten).
      throw new Error(`the model failed to load: ${(e as Error).message}`);
    }
  }
  let fatal: Error | null = null;
  const srv = await startServer({
    engine,
    port,
    host: values.host ?? "127.0.0.1",
    ...(values["api-key"] !== undefined ? { apiKey: values["api-key"] } : {}),
    ...(values.cors !== undefined ? { cors: values.cors } : {}),
    allowImageUrls: values["allow-image-urls"] ?? false,
    ...(values.quiet ? {} : { log: (l: string) => process.stderr.write(l + "\n") }),
    onFatal: (e) => {
      // The device is gone for good: fail health checks, finish replies, exit for a restart.
      process.stderr.write(`gemma3: fatal device error, exiting: ${e.message}\n`);
      fatal = e;
      setImmediate(() => process.kill(process.pid, "SIGTERM"));
      setTimeout(() => process.exit(1), 10_000).unref(); // if the shutdown itself hangs
    },
  });
  process.stderr.write(
    `gemma3: listening on ${srv.url}${values["listen-after-load"] ? "" : " (model loading…)"}\n`,
  );
  try {
    const e = await srv.ready();
    bar.end();
    process.stderr.write(
      `gemma3: ready: ${e.info.id} on ${e.info.device} (${e.info.dtype}), context ${e.info.maxModelLen}; chat page at ${srv.url}/\n`,
    );
    const pc = e.info.prefixCache;
    if (pc)
      process.stderr.write(
        `gemma3: prefix caching on: ${pc.snapshotBlocks} sliding-layer snapshot blocks (${formatBytes(pc.snapshotBytes)})\n`,
      );
  } catch (e) {
    bar.end(false);
    await srv.close();
    throw new Error(`the model failed to load: ${(e as Error).message}`);
  }
  // Ctrl-C / SIGTERM: stop accepting, cancel what runs, free the device, exit 0.
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
  process.stderr.write("gemma3: shutting down\n");
  await srv.close().catch((e: Error) => process.stderr.write(`gemma3: ${e.message}\n`));
  // Exit 1 after a device fault, so that a supervisor restarts the server.
  if (fatal) throw new Error(`stopped after a fatal device error: ${(fatal as Error).message}`);
}

export async function cmdChat(argv: string[], demo: string): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...MODEL_OPTIONS,
      "max-tokens": { type: "string" },
      temperature: { type: "string" },
      system: { type: "string" },
    },
  });
  const opts = engineOptions(values, demo);
  const maxTokens = posInt(values["max-tokens"], "--max-tokens") ?? 512;
  const temperature = values.temperature === undefined ? undefined : Number(values.temperature);
  if (temperature !== undefined && !(temperature >= 0))
    throw new CliUsageError(`--temperature: expected a number >= 0, got "${values.temperature}"`);
  const bar = progressBar("loading weights");
  const engine = await Engine.load({ ...opts, maxSeqs: 1, onProgress: bar.update });
  bar.end();
  const rl = createInterface({
    input: process.stdin,
    output: process.stdout,
    terminal: process.stdin.isTTY,
  });
  const history: ChatMessage[] = values.system ? [{ role: "system", content: values.system }] : [];
  process.stderr.write(
    `${engine.info.id}: type a message; an empty line or Ctrl-D quits, Ctrl-C stops a reply.\n`,
  );
  try {
    for (;;) {
      let line: string;
      try {
        line = await rl.question("> ");
      } catch {
        break; // stdin closed
      }
      if (line.trim() === "") break;
      history.push({ role: "user", content: line });
      const abort = new AbortController();
      const onSigint = () => abort.abort();
      rl.once("SIGINT", onSigint);
      try {
        const ids = engine.tokenizer.encodeChat(history, { addGenerationPrompt: true }).ids;
        const stream = engine.submit({
          prompt: ids,
          maxTokens: Math.min(maxTokens, engine.info.maxModelLen - ids.length),
          ...(temperature !== undefined ? { temperature } : {}),
          signal: abort.signal,
        });
        let reply = "";
        for await (const ev of stream) {
          if (ev.type === "delta") {
            reply += ev.text;
            process.stdout.write(ev.text);
          } else {
            const t = ev.timings;
            const secs = (t.totalMs - t.ttftMs) / 1000;
            process.stdout.write("\n");
            process.stderr.write(
              `[${ev.usage.completionTokens} tokens, ${ev.finishReason}, ${secs > 0 ? ((ev.usage.completionTokens - 1) / secs).toFixed(1) : "-"} tok/s]\n`,
            );
          }
        }
        history.push({ role: "assistant", content: reply });
      } catch (e) {
        // A turn that cannot run (the conversation outgrew the context): say so, drop the turn.
        history.pop();
        process.stderr.write(`gemma3: ${(e as Error).message}\n`);
      } finally {
        rl.off("SIGINT", onSigint);
      }
    }
  } finally {
    rl.close();
    await engine.close();
  }
}
