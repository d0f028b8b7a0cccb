// @gemma3/generation: sampling on the model's device (with a plain host reference), stop rules,
// streaming text, a continuous-batching scheduler, and constrained decoding (response_format).
export * from "./params.js";
export * from "./rng.js";
export * from "./state.js";
export * from "./decide.js";
export * from "./reference.js";
export * from "./sampler.js";
export * from "./stop.js";
export * from "./stream.js";
export * from "./scheduler.js";
export * from "./generate.js";
export * from "./constraint/index.js";
