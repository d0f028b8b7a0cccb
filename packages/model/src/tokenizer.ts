// The tokenizer of a checkpoint, for the CLI and the server: tokenizer.json beside the weights (the
// reference: HF's own file) when there is one, else the tokenizer embedded in a GGUF file
// (tokenizer.ggml.*, read here and handed to @gemma3/tokenizer as plain arrays), else a clear error.
import { stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Gemma3Tokenizer, TokenizerFormatError, checkGGUFVocabSize } from "@gemma3/tokenizer";
import { GGUFError, GGUFFile } from "./gguf.js";
import { ggufTokenizerInfo } from "./gguf_load.js";
import { resolveModelPath } from "./load.js";

/** Neither a tokenizer.json beside the weights nor one embedded in the GGUF file. */
export class MissingTokenizerError extends Error {
  override name = "MissingTokenizerError";
}

export interface LoadTokenizerOptions {
  /** Parsed-tokenizer cache directory (null: none); default @gemma3/tokenizer's defaultCacheDir(). */
  cacheDir?: string | null;
}

export interface LoadedTokenizer {
  tokenizer: Gemma3Tokenizer;
  /** Where it came from: "tokenizer.json" beside the weights or the GGUF's "embedded" metadata. */
  source: "tokenizer.json" | "embedded";
  /** The tokenizer.json or .gguf file read. */
  file: string;
}

/**
 * The tokenizer of the checkpoint at `path` (a model directory, a .gguf file, or a directory with
 * one .gguf, as loadModel takes): tokenizer.json beside the weights if present, else the GGUF's
 * embedded tokenizer, whose token count must equal token_embd.weight's rows (llama.cpp's rule).
 * @throws MissingTokenizerError when there is neither; GGUFError (E_METADATA) for embedded
 *   metadata that is inconsistent; GGUFError from the reader for a malformed file
 */
export async function loadTokenizer(
  path: string,
  opts: LoadTokenizerOptions = {},
): Promise<LoadedTokenizer> {
  const src = await resolveModelPath(path);
  const dir = src.format === "gguf" ? dirname(src.file) : src.dir;
  const json = join(dir, "tokenizer.json");
  const cache = opts.cacheDir !== undefined ? { cacheDir: opts.cacheDir } : {};
  if (
    await stat(json)
      .then((s) => s.isFile())
      .catch(() => false)
  )
    return {
      tokenizer: await Gemma3Tokenizer.fromDir(dir, cache),
      source: "tokenizer.json",
      file: json,
    };
  if (src.format !== "gguf") throw new MissingTokenizerError(`${json} is missing`);
  const file = src.file;
  // The header (262k token strings) is parsed on a cache miss only: the cache is keyed by the
  // file's identity, so a hit is this same file, already checked.
  const read = async () => {
    const f = await GGUFFile.open(file);
    try {
      const info = ggufTokenizerInfo(f);
      if (!info.tokens)
        throw new MissingTokenizerError(
          `${file} has no embedded tokenizer (tokenizer.ggml.tokens) and there is no ` +
            `tokenizer.json beside it`,
        );
      const rows = f.tensors.get("token_embd.weight")?.shape[0];
      if (rows !== undefined) checkGGUFVocabSize(info.tokens.length, rows);
      return info;
    } finally {
      await f.close();
    }
  };
  try {
    const tokenizer = await Gemma3Tokenizer.fromGGUFFile(file, read, cache);
    return { tokenizer, source: "embedded", file };
  } catch (e) {
    if (e instanceof TokenizerFormatError)
      throw new GGUFError(`${file}: ${e.message}`, "E_METADATA", file);
    throw e;
  }
}
