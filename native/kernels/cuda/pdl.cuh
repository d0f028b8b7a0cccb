// Programmatic dependent launch (PDL, sm_90+; CUDA programming guide, "Programmatic Dependent
// Launch and Synchronization"). A kernel launched through launch_pdl may start while the kernel
// before it in the stream (or the graph node before it, when captured) is still running: its CTAs
// are scheduled once every CTA of that kernel has called pdl_trigger (or exited), and they block in
// pdl_wait until that kernel has completed and its writes are visible. What this buys in a decode
// step of ~12 small kernels a layer: the next kernel's launch and CTA rasterization (a few µs a
// boundary at batch 1, docs/kernels.md) overlap the previous kernel's tail instead of following it.
//
// The rule that keeps it correct: a kernel launched through launch_pdl calls pdl_wait() in every
// CTA before its first access to memory that an earlier kernel of the step writes or reads (its
// inputs, and outputs an earlier kernel may still be reading). Memory nothing in the step writes
// (weights) may be read before the wait. Calling pdl_wait at the top of the kernel, as most do,
// meets the rule trivially; it also makes this kernel's completion imply its predecessor's, so the
// ordering stays transitive along the stream. Both calls are no-ops when the kernel was launched
// without the attribute (GEMMA3_PDL=0, or a device before sm_90).
#pragma once
#include <cuda_runtime.h>

#include <utility>

namespace gemma3::cuda {

/** Blocks until the grids this one depends on have completed and their writes are visible. */
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/** Lets the next PDL-launched kernel be scheduled once every CTA of this grid has called it. */
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/**
 * Whether a launch sets the attribute (sm_90+ only): on for every kernel launched through
 * launch_pdl unless GEMMA3_PDL=0. Opt-in until session 6, when an H100 A/B with pipelined decoding
 * measured it (1B 595/599 -> 652/660, 4B 271 -> 284 tok/s; docs/benchmarks.md) and its CUDA tests
 * (pdl.cuda, graph, ops with GEMMA3_PDL=1) passed.
 */
bool pdl_enabled();

/** The current device's compute capability as 10 * major + minor (90 for sm_90), 0 when it
 * cannot be read; queried once per device. */
int compute_capability();

/** Whether the current device is sm_90 or newer (PDL, thread-block clusters); cached per device. */
bool sm90_or_newer();

/**
 * kernel<<<grid, block, smem, stream>>>(args...) with programmatic stream serialization allowed
 * when `on`, and in thread-block clusters of `cluster_x` CTAs along x when cluster_x > 0 (sm_90+).
 * The kernel must follow the rule above. Returns cudaLaunchKernelEx's error (launch_pdl_if leaves
 * errors for check_launch, cudaGetLastError, as with <<<>>>).
 */
template <typename... KArgs, typename... Args>
cudaError_t launch_ex(bool on, unsigned cluster_x, void (*kernel)(KArgs...), dim3 grid, dim3 block,
                      size_t smem, cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = on ? 1 : 0;
  attr[1].id = cudaLaunchAttributeClusterDimension;
  attr[1].val.clusterDim.x = cluster_x;
  attr[1].val.clusterDim.y = 1;
  attr[1].val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = cluster_x > 0 ? 2 : 1;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

template <typename... KArgs, typename... Args>
void launch_pdl_if(bool on, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                   cudaStream_t stream, Args&&... args) {
  (void)launch_ex(on, 0, kernel, grid, block, smem, stream, std::forward<Args>(args)...);
}

/** launch_pdl_if(pdl_enabled(), ...): the launch of every converted kernel. */
template <typename... KArgs, typename... Args>
void launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                Args&&... args) {
  launch_pdl_if(pdl_enabled(), kernel, grid, block, smem, stream, std::forward<Args>(args)...);
}

}  // namespace gemma3::cuda
