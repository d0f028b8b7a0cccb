// Test hooks of the native core. Inert unless the process runs with GEMMA3_FAULT_INJECTION=1.
import { addon } from "./addon.js";
import { Device } from "./device.js";
import { native } from "./errors.js";

/**
 * Injects a fault on `device` (runtime/fault.h): "alloc" fails the allocation after `after` more
 * successful ones (once), with OutOfMemoryError; "sticky" fails the launch after `after` more
 * launches and every one after it, with CudaError code E_CUDA_STICKY (as a CUDA illegal address
 * would); "trap" (CUDA only) enqueues a real faulting kernel before the launch after `after`
 * more, so the context takes a genuine sticky cudaErrorIllegalAddress; "clear" removes all three.
 * @throws UnsupportedError unless GEMMA3_FAULT_INJECTION=1
 */
export function injectFault(
  kind: "alloc" | "sticky" | "trap" | "clear",
  device: Device | string,
  after = 0,
): void {
  const d = typeof device === "string" ? Device.of(device) : device;
  native(() => addon().injectFault(kind, d.index, after));
}
