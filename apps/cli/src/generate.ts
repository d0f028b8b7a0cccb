// A minimal generation loop for the CLI: prefill, then one token per step, greedy or temperature
// sampling with a seed, logprobs from the model's distribution, stop at the config's eos ids.
// (The full sampler, stop strings and batching belong to @gemma3/generation, a later issue.)
import type { TextModel } from "@gemma3/model";
import { ops, type Tensor } from "@gemma3/native";

export interface GenerateOptions {
  maxTokens: number;
  /** 0 = greedy (argmax) */
  temperature: number;
  seed: number;
  /** Top alternatives reported per token (0 = no logprobs). */
  logprobs: number;
  /** Token ids that end generation (default: the config's eos ids). */
  stop?: readonly number[];
  /** Features of the prompt's image tokens, in order (see Gemma3TextModel ModelStep). */
  imageFeatures?: Tensor;
}

export interface TokenLogprob {
  token: number;
  logprob: number;
  top: { token: number; logprob: number }[];
}

export interface GenerateResult {
  tokens: number[];
  logprobs?: TokenLogprob[];
  finishReason: "length" | "stop";
  timings: { prefillMs: number; decodeMs: number; promptTokens: number; decodeSteps: number };
}

/** log-softmax of one row, in float64. */
function logSoftmax(x: Float32Array): Float64Array {
  let m = -Infinity;
  for (const v of x) if (v > m) m = v;
  let s = 0;
  for (const v of x) s += Math.exp(v - m);
  const lse = m + Math.log(s);
  return Float64Array.from(x, (v) => v - lse);
}

function topK(lp: Float64Array, k: number): { token: number; logprob: number }[] {
  const best: { token: number; logprob: number }[] = [];
  for (let i = 0; i < lp.length; i++) {
    const v = lp[i]!;
    if (best.length < k || v > best[best.length - 1]!.logprob) {
      best.push({ token: i, logprob: v });
      best.sort((a, b) => b.logprob - a.logprob || a.token - b.token);
      if (best.length > k) best.pop();
    }
  }
  return best;
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pick(logits: Float32Array, temperature: number, rand: () => number): number {
  if (temperature === 0) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
    return best;
  }
  const lp = logSoftmax(Float32Array.from(logits, (v) => v / temperature));
  let u = rand();
  for (let i = 0; i < lp.length; i++) {
    u -= Math.exp(lp[i]!);
    if (u <= 0) return i;
  }
  return lp.length - 1;
}

export async function generate(
  model: TextModel,
  promptIds: readonly number[],
  o: GenerateOptions,
): Promise<GenerateResult> {
  const stop = new Set(o.stop ?? model.config.eosTokenIds);
  const cache = model.newCache(promptIds.length + o.maxTokens);
  const rand = mulberry32(o.seed);
  const tokens: number[] = [];
  const logprobs: TokenLogprob[] = [];
  let finishReason: GenerateResult["finishReason"] = "length";
  const t0 = performance.now();
  let t1 = t0;
  try {
    let step = model.forward(
      promptIds,
      cache,
      o.imageFeatures ? { imageFeatures: o.imageFeatures } : {},
    );
    for (let i = 0; i < o.maxTokens; i++) {
      let token: number;
      if (o.temperature === 0 && o.logprobs === 0) {
        // Greedy without logprobs: argmax on the device, 4 bytes to the host instead of the row.
        const am = ops.argmax(step);
        token = (await am.toArray())[0]!;
        am.dispose();
      } else {
        const logits = (await step.toArray()) as Float32Array;
        token = pick(logits, o.temperature, rand);
        if (o.logprobs > 0) {
          const lp = logSoftmax(logits);
          logprobs.push({ token, logprob: lp[token]!, top: topK(lp, o.logprobs) });
        }
      }
      step.dispose();
      if (i === 0) t1 = performance.now();
      tokens.push(token);
      if (stop.has(token)) {
        finishReason = "stop";
        break;
      }
      if (i + 1 === o.maxTokens) break;
      step = model.forward([token], cache, { graph: true }); // decode steps replay one captured graph
    }
  } finally {
    cache.dispose();
  }
  const t2 = performance.now();
  return {
    tokens,
    ...(o.logprobs > 0 ? { logprobs } : {}),
    finishReason,
    timings: {
      prefillMs: t1 - t0,
      decodeMs: t2 - t1,
      promptTokens: promptIds.length,
      decodeSteps: Math.max(tokens.length - 1, 0),
    },
  };
}
