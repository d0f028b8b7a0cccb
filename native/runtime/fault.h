// Fault injection for tests of error handling (issue #10): a forced allocation failure, and a
// "sticky" device fault (every later launch on the device fails, as after a CUDA illegal address).
// Off unless the process runs with GEMMA3_FAULT_INJECTION=1; the checks cost one relaxed atomic
// load when off.
#pragma once
#include <cstdint>
#include <string>

#include "runtime/status.h"

namespace gemma3::fault {

// kind "alloc": after `after` more successful allocations on `device`, the next one fails with
// kOutOfMemory (once). kind "sticky": after `after` more launches on `device`, that launch and
// every later one fails with kCudaSticky. kind "trap" (CUDA devices only): after `after` more
// launches, a real faulting kernel (a store to address 0) is enqueued before that launch, so the
// CUDA context takes a genuine sticky cudaErrorIllegalAddress that the next checked call reports.
// kind "clear": removes all three for the device.
Status inject(const std::string& kind, int device, int64_t after);

// Called by Buffer::create and ops launch: non-ok when an injected fault fires.
Status check_alloc(int device);
Status check_launch(int device);

#ifdef GEMMA3_WITH_CUDA
// Enqueues the faulting kernel on the device's stream (runtime/fault_trap.cu).
Status launch_trap(int device);
#endif

}  // namespace gemma3::fault
