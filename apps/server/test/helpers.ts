// Shared by the server tests: the bundled demo checkpoint (random weights, real tokenizer; built by
// @gemma3/cli's build), a server on a free localhost port, and a plain greedy loop over the model
// as the reference the server's output is checked against.
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { TextModel } from "@gemma3/model";
import { ops } from "@gemma3/native";
import {
  Engine,
  startServer,
  type EngineOptions,
  type RunningServer,
  type ServerOptions,
} from "../src/index.js";

export const DEMO = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "cli", "demo-model");

export function demoEngine(o: Partial<EngineOptions> = {}): Promise<Engine> {
  if (!existsSync(join(DEMO, "config.json")))
    throw new Error(
      `${DEMO} is missing: run \`npm run build\` first (it writes the demo checkpoint)`,
    );
  return Engine.load({
    model: DEMO,
    device: "cpu",
    dtype: "f32",
    maxSeqs: 8,
    maxSeqLen: 256,
    ...o,
  });
}

export async function serve(
  o: Partial<ServerOptions> & { engine: ServerOptions["engine"] },
): Promise<RunningServer> {
  return startServer({ port: 0, host: "127.0.0.1", ...o });
}

/** Greedy ids straight from model.forward and argmax: no scheduler, sampler or stop logic. */
export async function greedyReference(
  model: TextModel,
  prompt: readonly number[],
  n: number,
): Promise<number[]> {
  const seq = model.newCache(prompt.length + n);
  const out: number[] = [];
  try {
    let logits = model.forward(prompt, seq);
    for (let i = 0; i < n; i++) {
      const am = ops.argmax(logits);
      const t = (await am.toArray())[0]!;
      am.dispose();
      logits.dispose();
      out.push(t);
      if (i + 1 < n) logits = model.forward([t], seq);
    }
  } finally {
    seq.dispose();
  }
  return out;
}

/** Reads a fetch Response's SSE body into parsed events (the "[DONE]" sentinel as the string). */
export async function readSse(r: Response): Promise<unknown[]> {
  const text = await r.text();
  return text
    .split("\n\n")
    .map((b) => b.trim())
    .filter((b) => b.startsWith("data:"))
    .map((b) => b.slice(5).trim())
    .map((d) => (d === "[DONE]" ? d : JSON.parse(d)));
}
