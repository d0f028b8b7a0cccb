// CUDA kernel launchers: enqueue on `stream`, check the launch (cudaGetLastError) and return a
// Status; they never synchronize. Bounds that the device data could violate (ids, page indices) are
// guarded in the kernels, so bad data gives NaN/zeros, not a fault.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/dtype.h"
#include "runtime/status.h"

namespace gemma3::cuda {
#define G3_STREAM_PARAM , cudaStream_t stream
#include "kernels/kernels.inc"
#undef G3_STREAM_PARAM
}  // namespace gemma3::cuda
