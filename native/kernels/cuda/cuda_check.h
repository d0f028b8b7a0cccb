// Status helpers for CUDA launchers: every CUDA call is checked, every launch followed by
// cudaGetLastError. Include only from .cu / CUDA-enabled translation units.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "runtime/status.h"

namespace gemma3::cuda {

inline Status cuda_status(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::Ok();
  StatusCode code = e == cudaErrorMemoryAllocation ? StatusCode::kOutOfMemory : StatusCode::kCuda;
  return Status(
      code, std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

// After a <<<>>> launch: reports configuration errors without synchronizing.
inline Status check_launch(const char* kernel) { return cuda_status(cudaGetLastError(), kernel); }

}  // namespace gemma3::cuda

#define G3_CUDA_RETURN(expr) G3_RETURN_IF_ERROR(::gemma3::cuda::cuda_status((expr), #expr))
