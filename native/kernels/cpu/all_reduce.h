// The host side of collectives: out = Σ of n same-sized arrays, float32 accumulation in source
// order, rounded once to T. Used by the host all-reduce (ops/collective.cc) when ranks are CPU
// ranks, or CUDA ranks without NCCL. Not part of kernels.inc: the CUDA side of a collective is NCCL
// (or the host), never a kernel of ours.
#pragma once
#include <cstdint>

#include "runtime/dtype.h"
#include "runtime/status.h"

namespace gemma3::cpu {

// Most sources one sum takes (ranks of a tensor-parallel group).
constexpr int kMaxSumSources = 16;

// out[i] = T(Σ_r float(src[r][i])) for i in [begin, end), r in source order. out may alias any
// src (each element is read from every source before it is written). Runs on the calling thread.
// T in {float, bf16, f16}.
template <typename T>
void sum_n_range(const T* const* src, int n_src, T* out, int64_t begin, int64_t end);

// The same over [0, count), split over the CPU pool (call it from the CPU stream's worker only).
template <typename T>
Status sum_n(const T* const* src, int n_src, T* out, int64_t count);

}  // namespace gemma3::cpu
