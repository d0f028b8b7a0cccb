// Ops: validate tensors (shape, dtype, device), then enqueue the kernel of the tensors' device on
// its stream. Errors name the op and the shapes. Semantics of each op: kernels/kernels.inc.
// Outputs are passed in (no hidden allocation); "rows" = product of all dims but the last.
#pragma once
#include "ops/tensor_ref.h"

namespace gemma3::ops {

// y = x·Wᵀ. x: [..., K] f32|bf16; w: [N, K] f32|bf16|q8_0|q4_0|fp8_e4m3; w_scale: [N] f32 (fp8
// only, required there); y: [..., N] same dtype as x.
Status matmul(const TensorRef& x, const TensorRef& w, const TensorRef* w_scale, const TensorRef& y);

// x, out: [..., D]; w: [D]; same dtype (f32|bf16). out may be x.
Status rmsnorm(const TensorRef& x, const TensorRef& w, const TensorRef& out, float eps);
// residual += rmsnorm(x) with HF's rounding. x, residual: [..., D]; w: [D].
Status rmsnorm_add(const TensorRef& x, const TensorRef& w, const TensorRef& residual, float eps);
Status layernorm(const TensorRef& x, const TensorRef& w, const TensorRef& b, const TensorRef& out,
                 float eps);

// out = gelu_tanh(gate) * up. gate, up, out: [..., F]; or up == nullptr and gate: [..., 2F] holding
// [gate | up] per row (a fused projection). With the projection (fused form; x [..., K], w [2F, K],
// w_scale as matmul's): gate = matmul(x, w) runs first, gate being its output, which CUDA's one
// GEMV at decode leaves unwritten (kernels.inc matmul_gelu_mul); x, gate and out must not overlap.
Status gelu_mul(const TensorRef& gate, const TensorRef* up, const TensorRef& out,
                const TensorRef* x = nullptr, const TensorRef* w = nullptr,
                const TensorRef* w_scale = nullptr);
Status add(const TensorRef& a, const TensorRef& b, const TensorRef& out);
Status scale(const TensorRef& x, const TensorRef& out, float s);

// ids: [n] i32; table: [V, D] f32|bf16|q8_0|q4_0|fp8_e4m3; out: [n, D] f32|bf16.
Status embedding(const TensorRef& ids, const TensorRef& table, const TensorRef& out, float s);

Status softmax(const TensorRef& x, const TensorRef& out);
// out: [rows] i32.
Status argmax(const TensorRef& x, const TensorRef& out);
// values: [rows, k] f32; indices: [rows, k] i32.
Status topk(const TensorRef& x, const TensorRef& values, const TensorRef& indices);

// In place. x: [tokens, heads, head_dim]; positions: [tokens] i32.
Status rope(const TensorRef& x, const TensorRef& positions, float base, float scale);

struct PrefillParams {
  int64_t max_q_len = 0;  // upper bound of any sequence's query count
  float sm_scale = 1.0f;
  int32_t window = 0;
  bool causal = true;
};
// q, out: [total_q, Hq, D]; k, v: [total_kv, Hkv, D]; qo_indptr, kv_indptr: [batch + 1] i32;
// kv_last: [total_q] i32 or null.
Status attention_prefill(const TensorRef& q, const TensorRef& k, const TensorRef& v,
                         const TensorRef& out, const TensorRef& qo_indptr,
                         const TensorRef& kv_indptr, const TensorRef* kv_last,
                         const PrefillParams& p);

struct DecodeParams {
  int64_t max_kv_len = 0;
  float sm_scale = 1.0f;
  int32_t window = 0;
  float k_scale = 1.0f;  // fp8_e4m3 caches: key = float(e4m3) * k_scale (1 for other dtypes)
  float v_scale = 1.0f;  // likewise for values
};
// q, out: [batch, Hq, D] f32|bf16; k_cache, v_cache: [pages, page_size, Hkv, D] of q's dtype or
// fp8_e4m3 (with k_scale/v_scale); kv_indptr: [batch + 1],
// kv_indices: [nnz_pages], kv_len: [batch] i32; workspace: f32 scratch or null.
Status attention_decode(const TensorRef& q, const TensorRef& k_cache, const TensorRef& v_cache,
                        const TensorRef& out, const TensorRef& kv_indptr,
                        const TensorRef& kv_indices, const TensorRef& kv_len,
                        const TensorRef* workspace, const DecodeParams& p);
// Prefill attention reading q, k and v from one fused projection (a vision encoder's QKV matmul):
// qkv: [total, (Hq + 2·Hkv)·D] with each row [q | k | v]; queries and keys share the row layout
// (qo_indptr, kv_indptr index the same rows); out: [total, Hq, D].
Status attention_prefill_qkv(const TensorRef& qkv, const TensorRef& out, const TensorRef& qo_indptr,
                             const TensorRef& kv_indptr, int64_t num_qo_heads, int64_t num_kv_heads,
                             const PrefillParams& p);

// Floats of workspace attention_decode can use to split long sequences (0 on CPU).
int64_t attention_decode_workspace_floats(int device, int64_t batch, int64_t num_qo_heads,
                                          int64_t head_dim, int64_t max_kv_len);

// Linear-layer epilogue: out = [residual +] [gelu_tanh](x + bias), rounding to T after each step.
// x, out: [..., N]; bias: [N]; residual: out's shape or null; one dtype (f32|bf16). out may be x or
// residual.
Status bias_add(const TensorRef& x, const TensorRef& bias, const TensorRef* residual,
                const TensorRef& out, bool gelu);
// Image patches as rows (im2col of a kernel = stride Conv2d). pixels: [n, C, H, W] f32;
// out: [n, (H/patch)·(W/patch), C·patch·patch] f32|bf16.
Status patchify(const TensorRef& pixels, const TensorRef& out, int64_t patch);
// Average pool of a square grid of rows, kernel = stride = k. x: [n, side², C];
// out: [n, (side/k)², C], same dtype (f32|bf16).
Status avg_pool2d(const TensorRef& x, const TensorRef& out, int64_t k);

// f32|bf16|f16 -> f32|bf16|f16, and f32|bf16 -> fp8_e4m3 (saturating at +-448).
Status cast(const TensorRef& src, const TensorRef& dst);
// src: [..., C] f32|bf16 -> dst q8_0|q4_0|fp8 (scale: [rows] f32 for fp8).
Status quantize(const TensorRef& src, const TensorRef& dst, const TensorRef* scale);
Status dequantize(const TensorRef& src, const TensorRef* scale, const TensorRef& dst);
// q4_0 <-> q4_0s, q8_0 <-> q8_0s (the CUDA split row layouts, runtime/dtype.h): src, dst [..., C],
// C % 32 == 0, not overlapping. matmul and embedding take the split layouts on CUDA only.
Status repack(const TensorRef& src, const TensorRef& dst);

// dst rows (first dim) dst_rows[i] <- src row i. src: [n, ...]; dst: [capacity, ...] with the same
// trailing shape and dtype; dst_rows: [n] i32 (negative = skip; >= capacity is an error on CPU and
// skipped on CUDA).
Status copy_rows(const TensorRef& src, const TensorRef& dst, const TensorRef& dst_rows);

// Decoder-layer fusions (ops/fused_ops.cc).
// Per-head RMSNorm of q and k, then RoPE, v passed through (kernels.inc qk_norm_rope).
// Fused form (qkv given): qkv [tokens, (Hq + 2·Hkv)·D] holds [q | k | v] per row; q [tokens, Hq,
// D], k [tokens, Hkv, D] and v [tokens, Hkv, D] (v may be null: not copied) are outputs that must
// not overlap qkv or each other. Separate form (qkv null): q and k are normed and rotated in place.
// q_w, k_w: [D]; positions: [tokens] i32; one dtype (f32|bf16). kv_rows (fused form, optional):
// [tokens] i32; k and v are then a layer's KV storage [capacity, Hkv, D] and token t's rows go to
// row kv_rows[t] (< 0 skipped; >= capacity: kOutOfRange on cpu, skipped on cuda, as copy_rows).
// x [tokens, K] and w [(Hq + 2·Hkv)·D, K] (fused form, optional, both or neither): the projection
// qkv = matmul(x, w) runs first, qkv being its output (kernels.inc matmul_qk_norm_rope when w has
// x's dtype: one GEMV on CUDA at decode; matmul then the kernel for other weight formats).
Status qk_norm_rope(const TensorRef* qkv, const TensorRef& q, const TensorRef& k,
                    const TensorRef* v, const TensorRef& q_w, const TensorRef& k_w,
                    const TensorRef& positions, float eps, float base, float scale,
                    const TensorRef* kv_rows = nullptr, const TensorRef* x = nullptr,
                    const TensorRef* w = nullptr);
// Decode attention with its prologue (kernels.inc attention_decode_qkv): qk_norm_rope's fused form
// of qkv [batch, (Hq + 2·Hkv)·D] into q [batch, Hq, D] and, at rows kv_rows [batch] i32 of the
// caches viewed as [pages · page_size, Hkv, D], into k_cache and v_cache (q's dtype), then
// attention_decode of q over the caches into out (p as there, its scales 1). Checks are both ops'
// (named attention_decode_qkv); out must not overlap q, qkv or the caches.
Status attention_decode_qkv(const TensorRef& qkv, const TensorRef& q, const TensorRef& q_w,
                            const TensorRef& k_w, const TensorRef& positions,
                            const TensorRef& kv_rows, float eps, float base, float scale,
                            const TensorRef& k_cache, const TensorRef& v_cache,
                            const TensorRef& out, const TensorRef& kv_indptr,
                            const TensorRef& kv_indices, const TensorRef& kv_len,
                            const TensorRef* workspace, const DecodeParams& p);
// residual += rmsnorm(x, w) (as rmsnorm_add), then out = rmsnorm(residual, w_next).
// x, residual, out: [..., D] (out overlapping neither); w, w_next: [D]; one dtype (f32|bf16).
Status rmsnorm_add_rmsnorm(const TensorRef& x, const TensorRef& w, const TensorRef& residual,
                           const TensorRef& w_next, const TensorRef& out, float eps);

namespace detail {
// attention_decode's checks, named op (ops.cc; attention_decode_qkv runs them too).
Status check_attention_decode(const char* op, const TensorRef& q, const TensorRef& k_cache,
                              const TensorRef& v_cache, const TensorRef& out,
                              const TensorRef& kv_indptr, const TensorRef& kv_indices,
                              const TensorRef& kv_len, const TensorRef* workspace,
                              const DecodeParams& p, int* dev);
}  // namespace detail

}  // namespace gemma3::ops
