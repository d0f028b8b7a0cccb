// @gemma3/model: Gemma 3 config, safetensors checkpoints and weights, and the text decoder.
export * from "./config.js";
export * from "./safetensors.js";
export * from "./weights.js";
export * from "./cache.js";
export * from "./block.js";
export * from "./scratch.js";
export * from "./text_model.js";
export * from "./load.js";
