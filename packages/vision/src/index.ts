// @gemma3/vision: image decode, Gemma 3 preprocessing (resize, rescale, normalize, Pan & Scan),
// the SigLIP vision tower and the multimodal projector on the native kernels.
export {};
