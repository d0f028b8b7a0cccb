// @gemma3/tokenizer: the Gemma 3 tokenizer (tokenizer.json or a GGUF's tokenizer.ggml.*), chat template, image prompt tokens
// and stop tokens. Pure TypeScript: never loads the native addon.
export * from "./tokenizer.js";
export * from "./gguf_vocab.js";
export * from "./detokenizer.js";
export * from "./chat.js";
export * from "./image_tokens.js";
export * from "./image_size.js";
export * from "./stop.js";
export { defaultCacheDir } from "./cache.js";
