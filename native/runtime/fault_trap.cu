// The "trap" fault (runtime/fault.h): a real device fault for tests of what follows one on the GPU
// (issue #10). A store to address 0 raises cudaErrorIllegalAddress, which is sticky: every later
// CUDA call in this process fails, as after any out-of-bounds kernel.
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#include "runtime/device.h"
#include "runtime/fault.h"

namespace gemma3::fault {

namespace {
__global__ void store_to_null(volatile int* p) { *p = 1; }
}  // namespace

Status launch_trap(int device) {
  void* s = nullptr;
  G3_RETURN_IF_ERROR(cuda_stream(device, &s));
  store_to_null<<<1, 1, 0, static_cast<cudaStream_t>(s)>>>(nullptr);
  return cuda::check_launch("fault trap");
}

}  // namespace gemma3::fault
