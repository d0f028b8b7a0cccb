// @gemma3/server: the OpenAI-compatible HTTP server and web chat page over the Gemma 3 runtime.
export * from "./engine.js";
export * from "./errors.js";
export * from "./metrics.js";
export * from "./openai.js";
export * from "./requests.js";
export * from "./server.js";
export { SseWriter } from "./sse.js";
