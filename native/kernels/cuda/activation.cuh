// The gated GELU's arithmetic, shared by every kernel that computes it (elementwise.cu's gelu_mul,
// vision.cu's bias epilogue, the GEMV's gated-MLP epilogue in matmul_gemv.cu), so the bits agree
// wherever it runs. Include only from .cu files.
#pragma once
#include <cuda_runtime.h>

#include "runtime/dtype.h"

namespace gemma3::cuda {

// torch's gelu(approximate='tanh') in float32 (the opmath of bf16), same constants and order.
__device__ __forceinline__ float gelu_tanh(float x) {
  constexpr float kBeta = 0.7978845608028654f;  // M_SQRT2 * M_2_SQRTPI * 0.5
  constexpr float kKappa = 0.044715f;
  const float inner = kBeta * (x + kKappa * (x * x * x));
  return 0.5f * x * (1.0f + tanhf(inner));
}

// One element of gelu_mul from gate and up as T values (in float): HF's act_fn(gate) is a T tensor
// before the multiply, so gelu rounds to T first. Returns the float product; the caller rounds it
// to T once.
template <typename T>
__device__ __forceinline__ float gelu_mul_f32(float gate, float up) {
  return to_f32(from_f32<T>(gelu_tanh(gate))) * up;
}

}  // namespace gemma3::cuda
