// `gemma3 bench`: end-to-end generation speed through the continuous-batching Scheduler (the
// server's engine without HTTP), on a checkpoint or on random weights at a published config's
// shape (`random:CONFIG.json`, made on the device). Token-id prompts, greedy, ignore_eos, so every
// request makes exactly the tokens asked. Reports, as medians of --runs runs after one warm-up run
// of the same shape (which also captures the decode graphs):
//   decode, per batch size B: B concurrent requests of --tokens tokens after a --prompt-token
//     prompt; aggregate tok/s (all tokens ÷ wall time) and the median per-request decode rate
//     (tokens after the first ÷ time after the first);
//   prefill: one request of --prefill prompt tokens and one output token: time to first token
//     and prompt tok/s.
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { Scheduler } from "@gemma3/generation";
import {
  loadModel,
  randomTensorParallelModel,
  randomTextModel,
  tensorParallelDevices,
  HEAD_QUANTIZATIONS,
  WEIGHT_QUANTIZATIONS,
  type HeadQuantization,
  type TextModel,
  type WeightQuantization,
} from "@gemma3/model";
import { cudaAvailable, Device } from "@gemma3/native";
import { CliUsageError } from "./serve.js";

export const BENCH_USAGE = `  gemma3 bench [--model DIR|FILE.gguf|random:CONFIG.json] [--device cuda|cpu] [--dtype bf16]
               [--quantize q4_0|…] [--quantize-head q6_k|…] [--tensor-parallel N]
               [--batch 1,8,32,64] [--tokens 128] [--prompt 16] [--prefill 2048] [--runs 3]
               [--batch-tokens 2048] [--json FILE]`;

interface DecodeResult {
  batch: number;
  aggregate_tok_s: number;
  per_request_tok_s: number;
  runs: number[];
  /** weight_bytes_per_step × per_request_tok_s / 1e9 (null: the model cannot say) */
  weight_gb_s?: number | null;
}

const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

export async function cmdBench(argv: string[], defaultModel: string): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string" },
      device: { type: "string" },
      dtype: { type: "string" },
      quantize: { type: "string" },
      "quantize-head": { type: "string" },
      "tensor-parallel": { type: "string" },
      batch: { type: "string", default: "1,8,32,64" },
      tokens: { type: "string", default: "128" },
      prompt: { type: "string", default: "16" },
      prefill: { type: "string", default: "2048" },
      runs: { type: "string", default: "3" },
      // The scheduler's token budget a step: a longer prompt is prefilled in chunks of this many.
      "batch-tokens": { type: "string", default: "2048" },
      json: { type: "string" },
    },
  });
  const int = (name: string, v: string, min: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min)
      throw new CliUsageError(`--${name} must be an integer >= ${min}, got "${v}"`);
    return n;
  };
  const batches = values.batch.split(",").map((b) => int("batch", b, 1));
  const T = int("tokens", values.tokens, 2);
  const P = int("prompt", values.prompt, 1);
  const prefill = int("prefill", values.prefill, 0);
  const runs = int("runs", values.runs, 1);
  const batchTokens = int("batch-tokens", values["batch-tokens"], 1);
  const tp = values["tensor-parallel"] ? int("tensor-parallel", values["tensor-parallel"], 1) : 1;
  if (values.dtype !== undefined && values.dtype !== "f32" && values.dtype !== "bf16")
    throw new CliUsageError(`--dtype is f32 or bf16, got "${values.dtype}"`);
  const q = values.quantize as WeightQuantization | undefined;
  if (q !== undefined && !WEIGHT_QUANTIZATIONS.includes(q))
    throw new CliUsageError(`--quantize is one of ${WEIGHT_QUANTIZATIONS.join(", ")}`);
  const qh = values["quantize-head"] as HeadQuantization | undefined;
  if (qh !== undefined && !HEAD_QUANTIZATIONS.includes(qh))
    throw new CliUsageError(`--quantize-head is one of ${HEAD_QUANTIZATIONS.join(", ")}`);
  const modelArg = values.model ?? defaultModel;
  const device = Device.of(values.device ?? (cudaAvailable() ? "cuda" : "cpu"));
  const common = {
    device,
    ...(values.dtype ? { dtype: values.dtype as "f32" | "bf16" } : {}),
    ...(q ? { quantize: q } : {}),
    ...(qh ? { quantizeHead: qh } : {}),
  };

  const t0 = performance.now();
  let model: TextModel;
  if (modelArg.startsWith("random:")) {
    const cfg = modelArg.slice("random:".length);
    model =
      tp > 1
        ? await randomTensorParallelModel(cfg, {
            devices: tensorParallelDevices(tp, device),
            ...(values.dtype ? { dtype: values.dtype as "f32" | "bf16" } : {}),
            ...(q ? { quantize: q } : {}),
            ...(qh ? { quantizeHead: qh } : {}),
          })
        : await randomTextModel(cfg, common);
  } else {
    model = await loadModel(modelArg, { ...common, ...(tp > 1 ? { tensorParallel: tp } : {}) });
  }
  const loadS = (performance.now() - t0) / 1000;
  const maxSeqs = Math.max(...batches);
  // Pipelined decoding (docs/architecture.md), as `serve` runs it; GEMMA3_ASYNC_DECODE=0 for A/Bs.
  const asyncDecode = process.env.GEMMA3_ASYNC_DECODE !== "0";
  const scheduler = new Scheduler(model, {
    maxSeqs,
    maxSeqLen: Math.max(P + T, prefill + 1) + 8,
    maxBatchTokens: batchTokens,
    asyncDecode,
  });

  // Deterministic prompt ids in [3, 1000) (the range the HF peer's random prompts use; a smaller
  // vocabulary bounds it).
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed / 2 ** 31);
  const top = Math.min(1000, model.config.vocabSize);
  const ids = (n: number) => Array.from({ length: n }, () => 3 + Math.floor(rand() * (top - 3)));

  /** One request; the arrival times of its tokens. */
  async function request(prompt: number[], maxTokens: number) {
    const s = scheduler.submit({ prompt, maxTokens, temperature: 0, ignoreEos: true });
    const times: number[] = [];
    let tokens = 0;
    for await (const ev of s) {
      if (ev.type === "delta") times.push(performance.now());
      else tokens = ev.usage.completionTokens;
    }
    return { times, tokens };
  }
  async function decodeRun(B: number) {
    const t = performance.now();
    const all = await Promise.all(Array.from({ length: B }, () => request(ids(P), T)));
    const wall = (performance.now() - t) / 1000;
    const tokens = all.reduce((a, r) => a + r.tokens, 0);
    const rates = all.map((r) => (r.tokens - 1) / ((r.times.at(-1)! - r.times[0]!) / 1000));
    return { aggregate: tokens / wall, perRequest: median(rates) };
  }

  const decode: DecodeResult[] = [];
  for (const B of batches) {
    await decodeRun(B);
    const rs = [];
    for (let r = 0; r < runs; r++) rs.push(await decodeRun(B));
    decode.push({
      batch: B,
      aggregate_tok_s: median(rs.map((x) => x.aggregate)),
      per_request_tok_s: median(rs.map((x) => x.perRequest)),
      runs: rs.map((x) => x.aggregate),
    });
  }
  let prefillResult: { prompt: number; ttft_ms: number; tok_s: number; runs: number[] } | null =
    null;
  if (prefill > 0) {
    const once = async () => {
      const t = performance.now();
      await request(ids(prefill), 1);
      return performance.now() - t;
    };
    await once();
    const rs = [];
    for (let r = 0; r < runs; r++) rs.push(await once());
    const ms = median(rs);
    prefillResult = { prompt: prefill, ttft_ms: ms, tok_s: prefill / (ms / 1000), runs: rs };
  }
  const pipelined = scheduler.stats().pipelined;
  await scheduler.close();
  // Weights one decode step reads (all ranks), and what that is per second at each batch's steady
  // step rate (a request's tokens per second: one token a step): the number to set against the
  // card's memory bandwidth (docs/benchmarks.md's rooflines).
  const stepBytes = model.decodeWeightBytes?.() ?? null;
  for (const d of decode)
    d.weight_gb_s = stepBytes === null ? null : (stepBytes * d.per_request_tok_s) / 1e9;

  const c = model.config;
  const info = device.info();
  const result = {
    model: modelArg,
    device: `${device} (${info.name})`,
    dtype: values.dtype ?? (device.isCuda ? "bf16" : "f32"),
    quantize: q ?? null,
    quantize_head: qh ?? null,
    tensor_parallel: tp,
    async_decode: asyncDecode,
    pipelined_steps: pipelined,
    shape: {
      layers: c.numHiddenLayers,
      hidden: c.hiddenSize,
      intermediate: c.intermediateSize,
      heads: `${c.numAttentionHeads}/${c.numKeyValueHeads}x${c.headDim}`,
      vocab: c.vocabSize,
    },
    load_s: loadS,
    weight_bytes_per_step: stepBytes,
    prompt: P,
    tokens: T,
    runs,
    decode,
    prefill: prefillResult,
    batch_tokens: batchTokens,
    date: new Date().toISOString(),
  };
  model.dispose();

  const out = process.stdout;
  out.write(
    `gemma3 bench: ${result.model} on ${result.device}, ${result.dtype}` +
      `${q ? ` + ${q}` : ""}${qh ? `, head ${qh}` : ""}${tp > 1 ? `, TP ${tp}` : ""}; ` +
      `${c.numHiddenLayers} layers, hidden ` +
      `${c.hiddenSize}, vocab ${c.vocabSize}; loaded in ${loadS.toFixed(1)} s` +
      `${asyncDecode ? `; async decode (${pipelined} steps pipelined)` : ""}\n`,
  );
  out.write(
    `  decode (${P}-token prompts, ${T} tokens each, median of ${runs}` +
      `${stepBytes === null ? "" : `; ${(stepBytes / 1e9).toFixed(2)} GB of weights a step`}):\n`,
  );
  for (const d of decode)
    out.write(
      `    batch ${String(d.batch).padStart(3)}: ${d.aggregate_tok_s.toFixed(1).padStart(9)} tok/s` +
        ` aggregate, ${d.per_request_tok_s.toFixed(1)} tok/s per request` +
        `${d.weight_gb_s == null ? "" : ` (weights at ${Math.round(d.weight_gb_s)} GB/s)`}\n`,
    );
  if (prefillResult)
    out.write(
      `  prefill ${prefill} tokens: TTFT ${prefillResult.ttft_ms.toFixed(1)} ms ` +
        `(${Math.round(prefillResult.tok_s)} prompt tok/s)\n`,
    );
  if (values.json) writeFileSync(values.json, JSON.stringify(result, null, 2) + "\n");
}
