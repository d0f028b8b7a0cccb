// What the server runs: a model, its tokenizer and generation_config.json defaults, and one
// continuous-batching Scheduler that every request shares. Loading is async and reported, so the
// HTTP server can answer /health with 503 until the weights are in.
import { existsSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import {
  loadGenerationConfig,
  Scheduler,
  TokenVocab,
  type GenerationConfigDefaults,
  type GenerationRequest,
  type GenerationStream,
  type SamplingParams,
  type SchedulerStats,
} from "@gemma3/generation";
import {
  loadModel,
  loadTokenizer,
  resolveModelPath,
  type HeadQuantization,
  type TextModel,
  type WeightQuantization,
} from "@gemma3/model";
import {
  Gemma3Tokenizer,
  imageTokenConfig,
  stopTokenIds,
  type ImageTokenConfig,
} from "@gemma3/tokenizer";
import {
  imageProcessorOptions,
  loadVisionEncoder,
  type Gemma3VisionEncoder,
  type PreprocessOptions,
} from "@gemma3/vision";
import { readFile } from "node:fs/promises";
import { snapshotBytes } from "@gemma3/kv-cache/estimate";

/** Global-layer KV page size (tokens): the scheduler's default, the prefix cache's block. */
const PAGE_SIZE = 16;

export interface EngineOptions {
  /** A model directory (config.json + safetensors) or a .gguf file (its tokenizer embedded or beside it). */
  model: string;
  /**
   * GGUF models: the llama.cpp mmproj GGUF (vision tower + projector) to pair with the text file;
   * a model named by its directory takes the one mmproj-*.gguf there without it.
   */
  mmproj?: string;
  /** The id /v1/models reports and requests name (default: the directory's or file's name). */
  modelId?: string;
  device?: string;
  dtype?: "f32" | "bf16";
  quantize?: WeightQuantization;
  /** The token embedding / tied head's format (LoadOptions.quantizeHead; default: `dtype`). */
  quantizeHead?: HeadQuantization;
  /** Tensor-parallel ranks (default 1): the model splits over `device`'s cuda:0 … cuda:N−1. */
  tensorParallel?: number;
  /** Sequences decoded together (default 16). */
  maxSeqs?: number;
  /** Context per sequence (default min(max_position_embeddings, 8192)). */
  maxSeqLen?: number;
  /** Requests waiting for admission beyond this get 429 (default 256). */
  maxQueue?: number;
  /** Tokens per step: decodes plus one prefill chunk (default 512). */
  maxBatchTokens?: number;
  /**
   * Reuse the KV of cached prompt prefixes across requests (vLLM's --enable-prefix-caching): a
   * request starts after the longest cached prefix of its prompt, in whole pages (README of
   * @gemma3/kv-cache). Off by default.
   */
  prefixCaching?: boolean;
  /**
   * Sliding-layer snapshot blocks of the prefix cache (default maxSeqs · ⌈(W − 1)/16⌉: the last
   * window of as many prefixes as sequences run). Gemma 3's sliding layers can reuse a prefix only
   * where snapshots of its last W − 1 tokens survive; each block costs snapshotBytes().perBlock.
   */
  prefixCacheSnapshotBlocks?: number;
  /**
   * Pipelined greedy decoding (SchedulerOptions.asyncDecode): steady greedy decode steps are
   * launched before the previous step's tokens are read. Default on; GEMMA3_ASYNC_DECODE=0 turns it off.
   */
  asyncDecode?: boolean;
  onProgress?: (done: number, total: number) => void;
}

export interface ModelInfo {
  id: string;
  /** prompt + output tokens per sequence */
  maxModelLen: number;
  vocabSize: number;
  /** "text", plus "image" for a checkpoint with a vision tower */
  modalities: string[];
  device: string;
  dtype: string;
  /** prefix caching on, and its sliding-layer snapshot pool (blocks and bytes) */
  prefixCache: { snapshotBlocks: number; snapshotBytes: number } | null;
}

/** What image inputs need: the encoder, preprocessing settings and the prompt's image tokens. */
export interface VisionParts {
  encoder: Gemma3VisionEncoder;
  /** preprocessor_config.json's settings, at the tower's image size */
  preprocess: PreprocessOptions;
  imageTokens: ImageTokenConfig;
}

export class Engine {
  private constructor(
    readonly info: ModelInfo,
    readonly model: TextModel,
    readonly tokenizer: Gemma3Tokenizer,
    readonly generationConfig: GenerationConfigDefaults,
    readonly scheduler: Scheduler,
    /** null for a text-only checkpoint (or a GGUF without an mmproj GGUF paired with it) */
    readonly vision: VisionParts | null,
  ) {}

  static async load(o: EngineOptions): Promise<Engine> {
    const mm = o.mmproj !== undefined ? { mmproj: o.mmproj } : {};
    const src = await resolveModelPath(o.model, mm);
    const dir = src.format === "gguf" ? dirname(src.file) : src.dir;
    // tokenizer.json beside the weights, else the tokenizer embedded in a GGUF file.
    const { tokenizer } = await loadTokenizer(o.model);
    const gc = await loadGenerationConfig(dir);
    const model = await loadModel(o.model, {
      ...(o.device !== undefined ? { device: o.device } : {}),
      ...(o.tensorParallel !== undefined ? { tensorParallel: o.tensorParallel } : {}),
      ...(o.dtype !== undefined ? { dtype: o.dtype } : {}),
      ...(o.quantize !== undefined ? { quantize: o.quantize } : {}),
      ...(o.quantizeHead !== undefined ? { quantizeHead: o.quantizeHead } : {}),
      ...(o.onProgress ? { onProgress: o.onProgress } : {}),
      ...mm,
    });
    try {
      const c = model.config;
      const maxSeqLen = o.maxSeqLen ?? Math.min(c.maxPositionEmbeddings, 8192);
      const generationConfig: GenerationConfigDefaults = {
        ...gc,
        // generation_config.json may add stop ids to config.json's ([1, 106] for Gemma 3 IT).
        eosTokenIds: stopTokenIds(
          { eos_token_id: c.eosTokenIds },
          { eos_token_id: gc.eosTokenIds },
        ),
      };
      const maxSeqs = o.maxSeqs ?? 16;
      let prefixCache: ModelInfo["prefixCache"] = null;
      if (o.prefixCaching) {
        // The pool is sized per sequence: each needs ⌈(W − 1)/P⌉ blocks for its prefix to be
        // reusable by the sliding layers (every Gemma 3 layout has them).
        const snap = snapshotBytes(c, { pageSize: PAGE_SIZE, dtype: model.dtype, maxSeqLen });
        const snapshotBlocks = o.prefixCacheSnapshotBlocks ?? maxSeqs * snap.blocksPerBoundary;
        prefixCache = { snapshotBlocks, snapshotBytes: snapshotBlocks * snap.perBlock };
      }
      const scheduler = new Scheduler(model, {
        tokenizer,
        maxSeqs,
        maxSeqLen,
        maxQueue: o.maxQueue ?? 256,
        ...(o.maxBatchTokens !== undefined ? { maxBatchTokens: o.maxBatchTokens } : {}),
        ...(prefixCache
          ? {
              pageSize: PAGE_SIZE,
              kv: { prefixCache: true, snapshotBlocks: prefixCache.snapshotBlocks },
            }
          : {}),
        generationConfig,
        // Pipelined greedy decoding (docs/architecture.md): +7% (4B) to +10% (1B) on an H100.
        asyncDecode: o.asyncDecode ?? process.env.GEMMA3_ASYNC_DECODE !== "0",
      });
      let vision: VisionParts | null = null;
      // The model's own config says whether there is a vision tower (a GGUF's: whether an mmproj
      // GGUF was paired with it).
      if (c.vision) {
        const encoder = await loadVisionEncoder(o.model, {
          ...mm,
          device: model.device,
          dtype: model.dtype,
        });
        const pre = existsSync(join(dir, "preprocessor_config.json"))
          ? (JSON.parse(await readFile(join(dir, "preprocessor_config.json"), "utf8")) as Record<
              string,
              unknown
            >)
          : undefined;
        vision = {
          encoder,
          // The tower fixes the pixel size (896 for Gemma 3), whatever the preprocessor says; an
          // mmproj's image_mean / image_std stand in for a missing preprocessor_config.json.
          preprocess: {
            ...(pre ? {} : encoder.preprocessDefaults),
            ...imageProcessorOptions(pre),
            imageSize: encoder.imageSize,
          },
          imageTokens: imageTokenConfig(
            { mm_tokens_per_image: c.mmTokensPerImage ?? undefined },
            tokenizer.config,
          ),
        };
      }
      // The constrained-decoding index over the vocabulary (0.5–1 s): built now, not in a request.
      TokenVocab.of(tokenizer, c.vocabSize);
      const info: ModelInfo = {
        id: o.modelId ?? basename(src.format === "gguf" ? src.file : src.dir),
        maxModelLen: maxSeqLen,
        vocabSize: c.vocabSize,
        modalities: vision ? ["text", "image"] : ["text"],
        device: (model.devices ?? [model.device]).join(","),
        dtype: model.dtype,
        prefixCache,
      };
      return new Engine(info, model, tokenizer, generationConfig, scheduler, vision);
    } catch (e) {
      model.dispose();
      throw e;
    }
  }

  submit(req: GenerationRequest): GenerationStream {
    return this.scheduler.submit(req);
  }

  /**
   * One request's n = choices.length choices, sharing one prefill of the prompt (Scheduler
   * .submitGroup): one stream per choice, in order; choices[i] overrides req's sampling fields.
   */
  submitGroup(req: GenerationRequest, choices: readonly SamplingParams[]): GenerationStream[] {
    return this.scheduler.submitGroup(req, choices);
  }

  stats(): SchedulerStats {
    return this.scheduler.stats();
  }

  async close(): Promise<void> {
    await this.scheduler.close();
    this.vision?.encoder.dispose();
    this.model.dispose();
  }
}
