// @gemma3/vision: image decode, Gemma 3 preprocessing (resize, rescale, normalize, Pan & Scan),
// the SigLIP vision tower and the multimodal projector on the native kernels.
export * from "./errors.js";
export * from "./decode.js";
export * from "./resize.js";
export * from "./pan_and_scan.js";
export * from "./preprocess.js";
export * from "./vision_weights.js";
export * from "./vision_gguf.js";
export * from "./siglip.js";
export * from "./projector.js";
export * from "./vision_encoder.js";
