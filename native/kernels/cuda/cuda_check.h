// Status helpers for CUDA launchers: every CUDA call is checked, every launch followed by
// cudaGetLastError. Include only from .cu / CUDA-enabled translation units.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "runtime/status.h"

namespace gemma3::cuda {

// Errors after which the CUDA context is unusable until the process exits (CUDA runtime API docs:
// "this error is sticky"): reported as kCudaSticky so a server can fail health checks and exit.
inline bool is_sticky(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
    case cudaErrorECCUncorrectable:
      return true;
    default:
      return false;
  }
}

inline Status cuda_status(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::Ok();
  StatusCode code = e == cudaErrorMemoryAllocation ? StatusCode::kOutOfMemory
                    : is_sticky(e)                 ? StatusCode::kCudaSticky
                                                   : StatusCode::kCuda;
  return Status(
      code,
      std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")" +
          (code == StatusCode::kCudaSticky ? ": the CUDA context is unusable; restart the process"
                                           : ""));
}

// After a <<<>>> launch: reports configuration errors without synchronizing.
inline Status check_launch(const char* kernel) { return cuda_status(cudaGetLastError(), kernel); }

}  // namespace gemma3::cuda

#define G3_CUDA_RETURN(expr) G3_RETURN_IF_ERROR(::gemma3::cuda::cuda_status((expr), #expr))
