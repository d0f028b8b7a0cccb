// Tensor parallelism: the layout of the split, sharded loading, the model and its KV cache.
export * from "./layout.js";
export * from "./shard.js";
export * from "./cache.js";
export * from "./model.js";
export * from "./load.js";
