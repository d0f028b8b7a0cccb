// CPU kernel launchers (threaded, float32 accumulate). They run synchronously on the calling
// thread (the CPU stream's worker) and split rows over runtime/threadpool.h.
#pragma once
#include <cstdint>

#include "runtime/dtype.h"
#include "runtime/status.h"

namespace gemma3::cpu {
#define G3_STREAM_PARAM
#include "kernels/kernels.inc"
#undef G3_STREAM_PARAM
}  // namespace gemma3::cpu
