// The decode MLP block as one persistent CUDA launch (mlp_block.cu; ops::mlp_block picks it or the
// kernel sequence it replaces). CUDA only: the CPU backend runs the sequence.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/dtype.h"
#include "runtime/status.h"

namespace gemma3::cuda {

// One layer's MLP half for one token (M = 1), bf16 throughout. The same arithmetic as
//   rmsnorm_add_rmsnorm(r, w_attn_post, h, w_ffn_pre, x2)        h += norm(r);  x2 = norm(h)
//   matmul_gelu_mul(x2, w_gate_up, act)                          act = gelu(x2 Wg^T) * (x2 Wu^T)
//   matmul(act, w_down, r2)                                      r2 = act Wd^T
//   rmsnorm_add_rmsnorm(r2, w_ffn_post, h, w_next, out)           h += norm(r2);  out = norm(h)
// (the last step rmsnorm_add alone when w_next is null), with every T rounding in the same place;
// only the float sums run in this kernel's own order (the norms' reductions, the down projection's
// K split over slices).
// r, h, out: [H]; w_attn_post, w_ffn_pre, w_ffn_post, w_next: [H]; w_gate_up: [2F, H] (gate rows,
// then up rows); w_down: [H, F]; act: [F] scratch; part: [H] float scratch;
// sync: 2 counters, zero before the first launch and then left to this kernel (they only grow;
// every launch that shares them must come from the same device and stream order).
// Sets *taken = false and enqueues nothing when this device or these sizes do not suit the kernel
// (the caller then runs the sequence): it needs a cooperative launch of one 512-thread CTA on
// every SM, H % 8 == 0, F % 8 == 0, 16-byte aligned rows; H <= 8192. prof (bench_kernels only;
// null: off): [SMs * 8] for each CTA's phase timestamps (globaltimer ns), mlp_block.cu's `stamp`.
Status mlp_block_decode(const bf16* r, bf16* h, const bf16* w_attn_post, const bf16* w_ffn_pre,
                        const bf16* w_gate_up, const bf16* w_down, const bf16* w_ffn_post,
                        const bf16* w_next, bf16* out, bf16* act, float* part,
                        unsigned long long* sync, int64_t H, int64_t F, float eps, bool* taken,
                        cudaStream_t stream, long long* prof = nullptr);

}  // namespace gemma3::cuda
