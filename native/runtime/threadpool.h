// A fixed pool of worker threads for CPU kernels: parallel_for splits [0, n) into contiguous
// chunks, runs them on the pool and the calling thread, and returns when all are done.
// One parallel_for at a time (the CPU stream runs one op at a time); nested calls run inline.
#pragma once
#include <cstdint>
#include <functional>

namespace gemma3 {

// fn(begin, end) over [0, n); grain = the fewest items a chunk is worth (avoid waking threads for
// tiny work). Exceptions must not escape fn.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Threads the pool uses (hardware_concurrency, or GEMMA3_NUM_THREADS).
int num_threads();

}  // namespace gemma3
