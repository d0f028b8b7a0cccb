// @gemma3/model: Gemma 3 config, safetensors checkpoints and weights, and the text decoder.
export * from "./config.js";
export * from "./safetensors.js";
export * from "./weights.js";
export * from "./cache.js";
export * from "./block.js";
export * from "./scratch.js";
export * from "./text_model.js";
export * from "./multimodal.js";
export * from "./load.js";
export * from "./gguf.js";
export * from "./gguf_metadata.js";
export * from "./gguf_load.js";
export * from "./gguf_mmproj.js";
export * from "./tokenizer.js";
export * from "./quantize.js";
export * from "./tp/index.js";
export * from "./random.js";
