// @gemma3/native: devices, tensors, arenas, graphs and the ops API over the C++/CUDA addon.
export { Device, deviceCount, buildInfo, cudaAvailable } from "./device.js";
export { Tensor, byteSize, type Shape, type HostData } from "./tensor.js";
export { Arena } from "./arena.js";
export { Graph } from "./graph.js";
export { HostReadback } from "./readback.js";
export {
  DType,
  dtypeCode,
  dtypeName,
  rowBytes,
  blockSize,
  isQuantized,
  isBlock,
  isKQuant,
  K_QUANTS,
  type DTypeName,
  type KQuantName,
} from "./dtype.js";
export * from "./errors.js";
export * as ops from "./ops.js";
export { Communicator, copyColumns, type CollectiveBackend } from "./collective.js";
export { bf16ToF32, f32ToBf16, f16ToF32, f32ToF16, fp8e4m3ToF32 } from "./numeric.js";
export * as testing from "./testing.js";
