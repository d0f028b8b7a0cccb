#!/usr/bin/env node
// gemma3: the command line. `generate` runs a checkpoint on a prompt (text or token ids);
// `tokenize` shows the ids of a text or a chat; `inspect` describes a config without weights. With
// no --model, generate and tokenize use the bundled demo checkpoint (random weights: a plumbing
// demo, not a language model) and the real Gemma 3 tokenizer copied beside it at build.
import { existsSync, readFileSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import {
  GGUFError,
  HEAD_QUANTIZATIONS,
  MissingTokenizerError,
  WEIGHT_QUANTIZATIONS,
  inspectConfig,
  loadConfig,
  loadModel,
  loadModelConfig,
  loadTokenizer,
  resolveModelPath,
  type Gemma3Config,
  type HeadQuantization,
  type TextModel,
  type WeightQuantization,
} from "@gemma3/model";
import type { Tensor } from "@gemma3/native";
import {
  imageProcessorOptions,
  loadImage,
  loadVisionEncoder,
  probeImage,
  type ImageInfo,
  type PreprocessedImage,
} from "@gemma3/vision";
import { estimateKV, formatBytes, type KVDType } from "@gemma3/kv-cache/estimate";
import {
  Gemma3Tokenizer,
  imageTokenConfig,
  panAndScanCrops,
  stopTokenIds,
  type ChatMessage,
} from "@gemma3/tokenizer";
import { generate } from "./generate.js";
import { CliUsageError, cmdChat, cmdServe, SERVE_USAGE } from "./serve.js";
import { cmdReplicas, REPLICAS_USAGE } from "./replicas.js";
import { BENCH_USAGE, cmdBench } from "./bench.js";

const DEMO = join(dirname(dirname(fileURLToPath(import.meta.url))), "demo-model");

const USAGE = `usage:
  gemma3 generate [--model DIR|FILE.gguf [--mmproj MMPROJ.gguf]] (--prompt TEXT | --prompt-ids 2,9259,1902)
                  [--image PATH ... [--pan-and-scan]]
                  [--max-tokens 24] [--temperature 0] [--seed 0] [--logprobs N]
                  [--device cpu|cuda|cuda:N] [--dtype f32|bf16] [--quantize q8_0|q4_0|q4_k|…]
                  [--quantize-head q8_0|q4_0|q6_k|…] [--tensor-parallel N] [--ignore-eos] [--json]
                  [--stats]
  gemma3 tokenize [--model DIR] (--text TEXT | --chat FILE.json [--image PATH ...] [--pan-and-scan])
                  [--no-special-tokens] [--json]
  gemma3 inspect --config FILE [--context N [--batch B] [--kv-dtype bf16|f32|fp8]] [--json]
${SERVE_USAGE}
${REPLICAS_USAGE}
${BENCH_USAGE}

  --model DIR   a directory with config.json and *.safetensors (single or sharded), as on the hub,
                or a llama.cpp gemma3 .gguf (F32/F16/BF16/Q8_0/Q4_0/Q4_K/Q5_K/Q6_K tensors, so
                Q4_K_M files too; its tokenizer is the tokenizer.json beside it, else the one
                embedded in the file); without it, the
                bundled demo checkpoint (RANDOM weights, real vocabulary size).
  --mmproj FILE llama.cpp's mmproj GGUF (vision tower + projector, convert_hf_to_gguf.py --mmproj)
                for a .gguf --model, so --image works; a --model directory takes the one
                mmproj-*.gguf inside it without this flag.
  --quantize Q  quantize the linear weights on load (q8_0, q4_0, q4_k, q5_k, q6_k: GGUF blocks;
                fp8_e4m3: per-row scale); embeddings, head and norms stay in --dtype.
  --quantize-head Q  quantize the token embedding, which is also the tied output head, on load
                (q8_0, q4_0, q4_k, q5_k, q6_k; off by default: it stays in --dtype). llama.cpp
                does this by default (Q6_K in Q4_0 files); here it is opt-in. Rows must be whole
                blocks (hidden % 32, % 256 for the K-quants), else the table stays in --dtype.
  --tensor-parallel N  split the model over N GPUs (cuda:0 … cuda:N−1, or from --device cuda:K;
                N CPU ranks with --device cpu): heads, MLP units and vocabulary per GPU, summed with
                NCCL's all-reduce when the addon was built with it. Safetensors checkpoints only.
  --prompt TEXT encoded with the model's tokenizer (<bos> first); prints the generated text
                (--json: ids plus "text", special tokens left out of the text).
  --text TEXT   ids of TEXT (<bos> first unless --no-special-tokens); --json adds the pieces.
  --chat FILE   a JSON conversation, [{"role": "user", "content": "…"}, …] or {"messages": […],
                "add_generation_prompt": true}, rendered with the model's chat template; content
                parts {"type": "image"} take the --image files in order (or their "path").
  --pan-and-scan  count Pan & Scan crops from each image's size (needs the image files).
  --image PATH  (generate) an image for a multimodal checkpoint (repeatable): with --prompt, the
                prompt is one user turn [images…, TEXT] rendered with the chat template (each image
                expanded to its soft tokens, Pan & Scan crops with --pan-and-scan); with
                --prompt-ids, the positions holding the image token id take the images' features
                in order (original then crops, image after image), with no further expansion.
  bench         end-to-end speed through the scheduler (greedy, token-id prompts): decode tok/s
                per batch size and time to first token of a --prefill-token prompt, medians of
                --runs after a warm-up; --model random:CONFIG.json builds random weights at that
                config's shape on the device (no checkpoint needed).`;

class UsageError extends Error {}

function intList(s: string, what: string): number[] {
  const ids = s
    .split(",")
    .map((x) => x.trim())
    .filter((x) => x !== "")
    .map(Number);
  if (ids.length === 0 || ids.some((x) => !Number.isInteger(x) || x < 0))
    throw new UsageError(`${what}: expected comma-separated token ids, got "${s}"`);
  return ids;
}

function num(s: string | undefined, def: number, what: string, min: number): number {
  if (s === undefined) return def;
  const v = Number(s);
  if (!Number.isFinite(v) || v < min)
    throw new UsageError(`${what}: expected a number >= ${min}, got "${s}"`);
  return v;
}

async function cmdGenerate(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string" },
      mmproj: { type: "string" },
      "prompt-ids": { type: "string" },
      prompt: { type: "string" },
      image: { type: "string", multiple: true },
      "pan-and-scan": { type: "boolean" },
      "max-tokens": { type: "string" },
      temperature: { type: "string" },
      seed: { type: "string" },
      logprobs: { type: "string" },
      device: { type: "string" },
      dtype: { type: "string" },
      quantize: { type: "string" },
      "quantize-head": { type: "string" },
      "tensor-parallel": { type: "string" },
      "ignore-eos": { type: "boolean" },
      json: { type: "boolean" },
      stats: { type: "boolean" },
    },
  });
  if ((values.prompt === undefined) === (values["prompt-ids"] === undefined))
    throw new UsageError("generate: give --prompt TEXT or --prompt-ids IDS (one of them)");
  const givenIds =
    values["prompt-ids"] === undefined ? undefined : intList(values["prompt-ids"], "--prompt-ids");
  const dtype = values.dtype;
  if (dtype !== undefined && dtype !== "f32" && dtype !== "bf16")
    throw new UsageError(`--dtype: f32 or bf16, got "${dtype}"`);
  const quantize = values.quantize as WeightQuantization | undefined;
  if (quantize !== undefined && !WEIGHT_QUANTIZATIONS.includes(quantize))
    throw new UsageError(
      `--quantize: one of ${WEIGHT_QUANTIZATIONS.join(", ")}, got "${String(quantize)}"`,
    );
  const quantizeHead = values["quantize-head"] as HeadQuantization | undefined;
  if (quantizeHead !== undefined && !HEAD_QUANTIZATIONS.includes(quantizeHead))
    throw new UsageError(
      `--quantize-head: one of ${HEAD_QUANTIZATIONS.join(", ")}, got "${String(quantizeHead)}"`,
    );
  const tensorParallel = num(values["tensor-parallel"], 1, "--tensor-parallel", 1);
  if (!Number.isInteger(tensorParallel))
    throw new UsageError(`--tensor-parallel: a whole number of ranks, got ${tensorParallel}`);
  const modelPath = values.model ?? DEMO;
  const mm = values.mmproj !== undefined ? { mmproj: values.mmproj } : {};
  // A .gguf carries no generation_config.json (nor, often, tokenizer.json): read beside it.
  const src = await resolveModelPath(modelPath, mm);
  const dir = src.format === "gguf" ? dirname(src.file) : src.dir;
  if (!values.model && !existsSync(join(DEMO, "config.json")))
    throw new UsageError(`the demo checkpoint is missing (${DEMO}): run \`npm run build\``);
  if (!values.model)
    process.stderr.write(
      "gemma3: no --model given, using the bundled demo checkpoint (random weights)\n",
    );
  // With a tokenizer (beside the weights, or embedded in a GGUF), --prompt works and the output
  // gains the text.
  const tok = await modelTokenizer(modelPath, !values.model, givenIds ? undefined : "--prompt");
  if (values["pan-and-scan"] && !values.image)
    throw new UsageError("generate: --pan-and-scan goes with --image");
  // config.json, or a GGUF pair's headers: the tower's image size and tokens per image.
  const config = values.image ? await loadModelConfig(modelPath, mm) : undefined;
  const images = values.image
    ? await preprocessImages(values.image, dir, !!values["pan-and-scan"], config!.vision)
    : undefined;
  const promptIds =
    givenIds ??
    (images ? imagePrompt(tok!, values.prompt!, images, config!) : tok!.encode(values.prompt!));
  const generationConfig = readJsonIfExists(join(dir, "generation_config.json"));
  const model = await loadModel(modelPath, {
    device: values.device ?? (tensorParallel > 1 ? "cuda" : "cpu"),
    tensorParallel,
    ...(dtype ? { dtype } : {}),
    ...(quantize ? { quantize } : {}),
    ...(quantizeHead ? { quantizeHead } : {}),
    ...mm,
  });
  let imageFeatures: Tensor | undefined;
  try {
    if (images) imageFeatures = await encodeImages(modelPath, mm, images, model);
    const r = await generate(model, promptIds, {
      ...(imageFeatures ? { imageFeatures } : {}),
      maxTokens: num(values["max-tokens"], 24, "--max-tokens", 1),
      temperature: num(values.temperature, 0, "--temperature", 0),
      seed: num(values.seed, 0, "--seed", 0),
      logprobs: num(values.logprobs, 0, "--logprobs", 0),
      ...(values["ignore-eos"]
        ? { stop: [] }
        : generationConfig
          ? // generation_config.json may name more stop ids than config.json ([1, 106]).
            { stop: stopTokenIds({ eos_token_id: model.config.eosTokenIds }, generationConfig) }
          : {}),
    });
    const text = tok?.decode(r.tokens, { skipSpecialTokens: true });
    if (values.json) {
      const out: Record<string, unknown> = { tokens: r.tokens };
      if (r.logprobs) out.logprobs = r.logprobs;
      out.finish_reason = r.finishReason;
      if (text !== undefined) out.text = text;
      process.stdout.write(JSON.stringify(out) + "\n");
    } else {
      process.stdout.write((values.prompt !== undefined ? text : r.tokens.join(",")) + "\n");
    }
    if (values.stats) {
      const t = r.timings;
      process.stderr.write(
        `prefill ${t.promptTokens} tokens in ${t.prefillMs.toFixed(1)} ms; decode ${t.decodeSteps} steps in ${t.decodeMs.toFixed(1)} ms` +
          ` = ${t.decodeSteps ? ((t.decodeSteps * 1000) / t.decodeMs).toFixed(1) : "-"} tok/s (${model.device}, ${model.dtype})\n`,
      );
    }
  } finally {
    imageFeatures?.dispose();
    model.dispose();
  }
}

/** Each --image decoded and preprocessed as the checkpoint's preprocessor_config.json says. */
async function preprocessImages(
  paths: string[],
  dir: string,
  panAndScan: boolean,
  vision: Gemma3Config["vision"],
): Promise<PreprocessedImage[]> {
  const pre = (readJsonIfExists(join(dir, "preprocessor_config.json")) ?? {}) as Record<
    string,
    unknown
  >;
  const opts = imageProcessorOptions(pre);
  // Without a preprocessor size, the tower's own input size (vision_config.image_size).
  if (pre.size === undefined && vision) opts.imageSize = vision.image_size;
  return Promise.all(paths.map((p) => loadImage(p, { ...opts, panAndScan })));
}

/** --prompt with images: one user turn [images…, text] through the chat template. */
function imagePrompt(
  tok: Gemma3Tokenizer,
  text: string,
  images: PreprocessedImage[],
  config: Gemma3Config,
): number[] {
  const content: ChatMessage["content"] = [
    ...images.map(() => ({ type: "image" as const })),
    { type: "text", text },
  ];
  return tok.encodeChat([{ role: "user", content }], {
    addGenerationPrompt: true,
    numCrops: images.map((im) => im.numCrops),
    imageTokens: imageTokenConfig(
      config.mmTokensPerImage !== null ? { mm_tokens_per_image: config.mmTokensPerImage } : {},
      tok.config,
    ),
  }).ids;
}

/** The images' features (original then crops, image after image) on the model's device. */
async function encodeImages(
  modelPath: string,
  mm: { mmproj?: string },
  images: PreprocessedImage[],
  model: TextModel,
): Promise<Tensor> {
  const enc = await loadVisionEncoder(modelPath, {
    ...mm,
    device: model.device,
    dtype: model.dtype,
  });
  try {
    const all = new Float32Array(images.reduce((n, im) => n + im.pixelValues.length, 0));
    let at = 0;
    for (const im of images) {
      all.set(im.pixelValues, at);
      at += im.pixelValues.length;
    }
    return enc.encode(all);
  } finally {
    enc.dispose();
  }
}

function readJsonIfExists(file: string): unknown {
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message}`);
  }
}

/**
 * The checkpoint's tokenizer: tokenizer.json beside the weights, else the one embedded in a GGUF
 * (loadTokenizer); undefined when there is none and `needFor` is not given.
 */
async function modelTokenizer(
  model: string,
  demo: boolean,
  needFor: string | undefined,
): Promise<Gemma3Tokenizer | undefined> {
  try {
    return (await loadTokenizer(model)).tokenizer;
  } catch (e) {
    if (e instanceof MissingTokenizerError) {
      if (needFor === undefined) return undefined;
      if (demo)
        throw new UsageError(`the demo tokenizer is missing (${model}): run \`npm run build\``);
      throw new UsageError(`${needFor} needs a tokenizer: ${e.message}`);
    }
    if (needFor !== undefined) throw e;
    // Only for the output's "text": token ids still run when the tokenizer cannot be read (a file
    // that cannot be opened is reported by the model load).
    if (!(e instanceof GGUFError && e.code === "E_IO"))
      process.stderr.write(`gemma3: tokenizer not used (${(e as Error).message})\n`);
    return undefined;
  }
}

interface ChatFile {
  messages: ChatMessage[];
  addGenerationPrompt: boolean;
}

/** A conversation file: an array of messages, or {messages, add_generation_prompt}. */
function readChat(file: string): ChatFile {
  let j: unknown;
  try {
    j = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new Error(`--chat ${file}: ${(e as Error).message}`);
  }
  if (Array.isArray(j)) return { messages: j as ChatMessage[], addGenerationPrompt: true };
  const o = j as { messages?: unknown; add_generation_prompt?: unknown };
  if (!o || typeof o !== "object" || !Array.isArray(o.messages))
    throw new Error(`--chat ${file}: expected [messages…] or {"messages": […]}`);
  return {
    messages: o.messages as ChatMessage[],
    addGenerationPrompt: o.add_generation_prompt !== false,
  };
}

/**
 * Pan & Scan crops per image part. Each image file's header is read (format checked, size after
 * EXIF orientation, as HF's load_image sees it); P&S parameters from preprocessor_config.json.
 */
async function chatImageCrops(
  chat: ChatFile,
  chatFile: string,
  images: string[] | undefined,
  panAndScan: boolean,
  dir: string,
): Promise<number[]> {
  const parts = chat.messages.flatMap((m) =>
    Array.isArray(m?.content) ? m.content.filter((p) => p?.type === "image") : [],
  );
  if (images && images.length !== parts.length)
    throw new UsageError(
      `--chat has ${parts.length} image part(s) but ${images.length} --image path(s) were given`,
    );
  const pre = (readJsonIfExists(join(dir, "preprocessor_config.json")) ?? {}) as Record<
    string,
    unknown
  >;
  const opts = imageProcessorOptions(pre);
  // HF turns P&S on when the preprocessor config says so; --pan-and-scan does per call.
  const pas = panAndScan || opts.panAndScan === true;
  const out: number[] = [];
  for (const [i, p] of parts.entries()) {
    let path = images?.[i] ?? (typeof p.path === "string" ? p.path : undefined);
    if (path === undefined) {
      if (pas)
        throw new UsageError(`--pan-and-scan needs image ${i + 1}'s file: pass --image PATH`);
      out.push(0);
      continue;
    }
    if (!images && !isAbsolute(path)) path = resolve(dirname(chatFile), path);
    let info: ImageInfo;
    try {
      info = await probeImage(path);
    } catch (e) {
      throw new Error(`image ${i + 1} (${path}): ${(e as Error).message}`);
    }
    out.push(pas ? panAndScanCrops(info.width, info.height, opts.panAndScanParams).length : 0);
  }
  return out;
}

async function cmdTokenize(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string" },
      text: { type: "string" },
      chat: { type: "string" },
      image: { type: "string", multiple: true },
      "pan-and-scan": { type: "boolean" },
      "no-special-tokens": { type: "boolean" },
      json: { type: "boolean" },
    },
  });
  if ((values.text === undefined) === (values.chat === undefined))
    throw new UsageError("tokenize: give --text TEXT or --chat FILE.json (one of them)");
  if (values.text !== undefined && (values.image || values["pan-and-scan"]))
    throw new UsageError("tokenize: --image and --pan-and-scan go with --chat");
  const dir = values.model ?? DEMO;
  const tok = (await modelTokenizer(dir, !values.model, "tokenize"))!;
  const extra: Record<string, unknown> = {};
  let ids: number[];
  if (values.text !== undefined) {
    ids = tok.encode(values.text, { addSpecialTokens: !values["no-special-tokens"] });
  } else {
    const chat = readChat(values.chat!);
    const numCrops = await chatImageCrops(
      chat,
      values.chat!,
      values.image,
      !!values["pan-and-scan"],
      dir,
    );
    const config = readJsonIfExists(join(dir, "config.json")) as
      Record<string, unknown> | undefined;
    const enc = tok.encodeChat(chat.messages, {
      addGenerationPrompt: chat.addGenerationPrompt,
      numCrops,
      imageTokens: imageTokenConfig(config, tok.config),
    });
    ids = enc.ids;
    extra.text = enc.text;
    if (numCrops.length > 0) extra.num_crops = numCrops;
  }
  if (values.json)
    process.stdout.write(
      JSON.stringify({ ids, pieces: ids.map((id) => tok.idToToken(id)), ...extra }) + "\n",
    );
  else process.stdout.write(ids.join(",") + "\n");
}

async function cmdInspect(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: "string" },
      json: { type: "boolean" },
      context: { type: "string" },
      batch: { type: "string" },
      "kv-dtype": { type: "string" },
    },
  });
  if (!values.config) throw new UsageError("inspect: --config FILE is required");
  const kvDtype = values["kv-dtype"] ?? "bf16";
  if (kvDtype !== "bf16" && kvDtype !== "f32" && kvDtype !== "fp8")
    throw new UsageError(`--kv-dtype: bf16, f32 or fp8, got "${kvDtype}"`);
  if (values.context === undefined && (values.batch !== undefined || values["kv-dtype"]))
    throw new UsageError("inspect: --batch and --kv-dtype size a KV cache: give --context N too");
  const intArg = (v: string, what: string) => {
    if (!/^[1-9][0-9]*$/.test(v))
      throw new UsageError(`${what}: expected an integer >= 1, got "${v}"`);
    return Number(v);
  };
  const cfg = await loadConfig(values.config);
  const s = inspectConfig(cfg);
  const kv =
    values.context === undefined
      ? undefined
      : estimateKV(cfg, {
          context: intArg(values.context, "--context"),
          batch: values.batch === undefined ? 1 : intArg(values.batch, "--batch"),
          kvDtype: kvDtype as KVDType,
        });
  if (values.json) {
    process.stdout.write(
      JSON.stringify({ config: cfg, summary: s, ...(kv ? { kv } : {}) }, null, 2) + "\n",
    );
    return;
  }
  const gib = (b: number) => `${(b / 2 ** 20).toFixed(2)} MiB`;
  const lines = [
    `${values.config}: ${cfg.architecture} (${cfg.modelType})`,
    `layers            ${cfg.numHiddenLayers}: ${s.layerPattern}  (L = sliding window ${cfg.slidingWindow}, G = global)`,
    `global layers     ${s.numGlobal} of ${cfg.numHiddenLayers} (${cfg.layerTypes
      .map((t, i) => (t === "full" ? i : -1))
      .filter((i) => i >= 0)
      .join(", ")})`,
    `hidden            ${cfg.hiddenSize}, intermediate ${cfg.intermediateSize}, vocab ${cfg.vocabSize}`,
    `attention         ${cfg.numAttentionHeads} heads, ${cfg.numKeyValueHeads} kv heads, head_dim ${cfg.headDim}, query_pre_attn_scalar ${cfg.queryPreAttnScalar}`,
    `rope              local base ${cfg.rope.local.base} scale ${cfg.rope.local.scale}; global base ${cfg.rope.global.base} scale ${cfg.rope.global.scale}`,
    `parameters        ${s.params.total.toLocaleString("en-US")} total, ${s.params.totalWithoutEmbedding.toLocaleString("en-US")} without embedding (text only)`,
    `KV bytes / token  ${s.kvBytesPerToken.full.toLocaleString("en-US")} with every layer caching every token (bf16)`,
    `                  ${s.kvBytesPerToken.globalOnly.toLocaleString("en-US")} in steady state with a hybrid cache (global layers only), plus ${gib(s.kvBytesPerToken.localFixed)} fixed for the sliding-window rings`,
  ];
  if (kv) {
    // The hybrid cache: 2·Hkv·d·bytes·(L_global·n + L_local·min(n, W)) per sequence.
    const b = (x: number) => `${formatBytes(x)} (${x.toLocaleString("en-US")} bytes)`;
    lines.push(
      `KV cache          ${kv.context} tokens × batch ${kv.batch}, ${kv.kvDtype}: ${kv.bytesPerLayerToken.toLocaleString("en-US")} bytes per layer per token${kv.kvDtype === "fp8" ? " (fp8: estimate only; the runtime stores bf16 or f32)" : ""}`,
      `  global layers   ${kv.numGlobal} × ${kv.context} tokens: ${b(kv.global)}`,
      `  local layers    ${kv.numLocal} × min(${kv.context}, ${cfg.slidingWindow}) = ${kv.window} tokens: ${b(kv.local)}`,
      `  hybrid total    ${b(kv.hybrid)}`,
      `  global-only     ${b(kv.globalOnly)}: every layer caching every token, ${(kv.globalOnly / kv.hybrid).toFixed(2)}× the hybrid`,
      `  page rounding   +${formatBytes(kv.pageRounding)} with pages of ${kv.pageSize} tokens (global layers hold whole pages)`,
    );
  }
  process.stdout.write(lines.join("\n") + "\n");
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === "generate") await cmdGenerate(rest);
    else if (cmd === "tokenize") await cmdTokenize(rest);
    else if (cmd === "inspect") await cmdInspect(rest);
    else if (cmd === "serve") await cmdServe(rest, DEMO);
    else if (cmd === "chat") await cmdChat(rest, DEMO);
    else if (cmd === "replicas") await cmdReplicas(rest, fileURLToPath(import.meta.url));
    else if (cmd === "bench") await cmdBench(rest, DEMO);
    else if (cmd === undefined || cmd === "--help" || cmd === "-h" || cmd === "help") {
      process.stdout.write(USAGE + "\n");
      return cmd === undefined ? 2 : 0;
    } else throw new UsageError(`unknown command "${cmd}"`);
    return 0;
  } catch (e) {
    const err = e as Error & { code?: string };
    process.stderr.write(`gemma3: ${err.message}\n`);
    if (
      e instanceof UsageError ||
      e instanceof CliUsageError ||
      (err as { code?: string }).code === "ERR_PARSE_ARGS_UNKNOWN_OPTION"
    )
      process.stderr.write(USAGE + "\n");
    return e instanceof UsageError || e instanceof CliUsageError ? 2 : 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
