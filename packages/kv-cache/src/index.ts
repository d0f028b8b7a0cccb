// @gemma3/kv-cache: the hybrid KV cache (rings for sliding layers, shared pages for global
// layers), its per-step plan, and the memory estimator. `@gemma3/kv-cache/estimate` and
// `@gemma3/kv-cache/planner` load without the native addon.
export * from "./layout.js";
export * from "./estimate.js";
export * from "./errors.js";
export * from "./pages.js";
export * from "./planner.js";
export * from "./types.js";
export * from "./cache.js";
export * from "./attention.js";
export * from "./prefix.js";
