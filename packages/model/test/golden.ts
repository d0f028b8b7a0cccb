// Shared by the model tests: the committed HF fixtures and small comparisons on logits.
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "vitest";
import type { Gemma3TextModel, KVSequence } from "../src/index.js";

/** packages/model/test/fixtures (tiny-1b, tiny-27b from tools/reference/make_goldens.py). */
export const fixtures = join(dirname(fileURLToPath(import.meta.url)), "fixtures");

/** max |a − b| (NaN anywhere → Infinity). */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

/** First index of the maximum. */
export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/** Runs `ids` through the model on `seq` and returns the logits on the host. */
/** Logits [T, vocab] of every position of `ids` in one forward (a fresh cache, disposed after). */
export async function promptLogits(model: Gemma3TextModel, ids: number[]): Promise<Float32Array> {
  const cache = model.newCache(ids.length + 1);
  const l = model.forward(ids, cache, { allLogits: true });
  const out = (await l.toArray()) as Float32Array;
  l.dispose();
  cache.dispose();
  return out;
}

export async function take(model: Gemma3TextModel, ids: number[], seq: KVSequence, all = true) {
  const t = model.forward(ids, seq, { allLogits: all });
  const v = (await t.toArray()) as Float32Array;
  t.dispose();
  return v;
}

/**
 * Prompt logits (every position), then `steps` greedy decode steps' logits (graph-replayed when
 * `graph`), each on the host.
 */
export async function promptAndGreedy(
  model: Gemma3TextModel,
  ids: number[],
  opts: { steps?: number; graph?: boolean } = {},
): Promise<Float32Array[]> {
  const steps = opts.steps ?? 8;
  const seq = model.newCache(ids.length + steps + 1);
  const out = [await take(model, ids, seq)];
  let next = ids[ids.length - 1]!;
  for (let i = 0; i < steps; i++) {
    const s = model.forward([next], seq, { graph: opts.graph ?? false });
    const v = Float32Array.from((await s.toArray()) as Float32Array);
    s.dispose();
    out.push(v);
    next = argmax(v);
  }
  seq.dispose();
  return out;
}
