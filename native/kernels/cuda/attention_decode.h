// Host-side sizing for the split-KV workspace of cuda::attention_decode (kernels/kernels.inc).
#pragma once
#include <cstdint>

namespace gemma3::cuda {

// Floats of workspace that let attention_decode split every sequence's KV range as far as it ever
// will for these sizes (it never splits further than the workspace allows, so less is also valid):
//   splits = max(1, min(ceil(max_kv_len / 64), 128, ceil(2048 / batch)))
//   floats = splits > 1 ? batch * num_qo_heads * splits * (head_dim + 2) + 4 : 0
// (per split and qo head: the unnormalized partial output [head_dim] plus its max and sum; the 4
// let the partials start 16-byte aligned wherever the workspace starts).
int64_t attention_decode_workspace_floats(int64_t batch, int64_t num_qo_heads, int64_t head_dim,
                                          int64_t max_kv_len);

}  // namespace gemma3::cuda
