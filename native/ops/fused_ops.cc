// Validation and dispatch of the decoder-layer fusions (ops.h "Decoder-layer fusions"): checks
// name the op and the shapes, then the kernel of the tensors' device runs on its stream.
#include <utility>

#include "ops/dispatch.h"
#include "ops/ops.h"

namespace gemma3::ops {
using namespace detail;

namespace {
// qk_norm_rope's checks of everything but the projection (shared with attention_decode_qkv, which
// names itself in op). v is null in the separate form.
Status check_qk_norm_rope(const char* op, const TensorRef* qkv, const TensorRef& q,
                          const TensorRef& k, const TensorRef* v, const TensorRef& q_w,
                          const TensorRef& k_w, const TensorRef& positions, float eps, float base,
                          float scale, const TensorRef* kv_rows, int* dev) {
  if (kv_rows && !qkv)
    return fail(StatusCode::kInvalidArgument, op, "kv_rows needs the fused form (qkv)");
  G3_RETURN_IF_ERROR(same_device(op, {qkv, &q, &k, v, &q_w, &k_w, &positions, kv_rows}, dev));
  G3_RETURN_IF_ERROR(expect_dtype(op, "q", q, {DType::kF32, DType::kBF16}));
  const std::pair<const char*, const TensorRef*> same[] = {
      {"k", &k}, {"q_w", &q_w}, {"k_w", &k_w}, {"v", v}, {"qkv", qkv}};
  for (const auto& [name, t] : same)
    if (t) G3_RETURN_IF_ERROR(expect_same_dtype(op, q, "q", *t, name));
  G3_RETURN_IF_ERROR(expect_dtype(op, "positions", positions, {DType::kI32}));
  // k's rows: the tokens', or a KV storage's rows addressed by kv_rows.
  G3_RETURN_IF_ERROR(expect(
      q.ndim() == 3 && k.ndim() == 3 && (kv_rows || q.dim(0) == k.dim(0)) && q.dim(2) == k.dim(2),
      op,
      named("q", q) + " and " + named("k", k) +
          " must be [tokens, heads, head_dim] of one tokens and head_dim"));
  if (kv_rows) {
    G3_RETURN_IF_ERROR(expect_dtype(op, "kv_rows", *kv_rows, {DType::kI32}));
    G3_RETURN_IF_ERROR(
        expect(kv_rows->numel() == q.dim(0), op,
               named("kv_rows", *kv_rows) + " must have one entry per token of " + named("q", q)));
  }
  const int64_t T = q.dim(0), Hq = q.dim(1), Hkv = k.dim(1), D = q.dim(2);
  G3_RETURN_IF_ERROR(expect(
      Hq > 0 && Hkv > 0 && D % 2 == 0 && D > 0 && D <= 512, op,
      named("q", q) + ", " + named("k", k) + ": heads must be > 0 and head_dim even in (0, 512]"));
  G3_RETURN_IF_ERROR(expect(q_w.numel() == D && k_w.numel() == D, op,
                            named("q_w", q_w) + " and " + named("k_w", k_w) + " must have " +
                                std::to_string(D) + " elements"));
  G3_RETURN_IF_ERROR(
      expect(positions.numel() == T, op,
             named("positions", positions) + " must have one entry per token of " + named("q", q)));
  if (!(eps >= 0.0f) || !(base > 0.0f) || !(scale > 0.0f))
    return fail(StatusCode::kInvalidArgument, op, "eps must be >= 0, base and scale > 0");
  int64_t ld = 0;
  if (qkv) {
    ld = (Hq + 2 * Hkv) * D;
    G3_RETURN_IF_ERROR(expect(qkv->ndim() == 2 && qkv->dim(0) == T && qkv->dim(1) == ld, op,
                              named("qkv", *qkv) + " must be [" + std::to_string(T) + ", " +
                                  std::to_string(ld) + "] for " + named("q", q) + ", " +
                                  named("k", k)));
    if (v)
      G3_RETURN_IF_ERROR(
          expect(v->shape == k.shape, op, named("v", *v) + " must be shaped as " + named("k", k)));
    const bool clash = q.overlaps(*qkv) || k.overlaps(*qkv) || q.overlaps(k) ||
                       (v && (v->overlaps(*qkv) || v->overlaps(q) || v->overlaps(k)));
    if (clash)
      return fail(StatusCode::kInvalidArgument, op,
                  "the outputs q, k, v must not overlap qkv or each other");
  } else if (q.overlaps(k)) {
    return fail(StatusCode::kInvalidArgument, op, "q and k must not overlap");
  }
  return Status::Ok();
}
}  // namespace

Status qk_norm_rope(const TensorRef* qkv, const TensorRef& q, const TensorRef& k,
                    const TensorRef* v, const TensorRef& q_w, const TensorRef& k_w,
                    const TensorRef& positions, float eps, float base, float scale,
                    const TensorRef* kv_rows, const TensorRef* x, const TensorRef* w) {
  const char* op = "qk_norm_rope";
  int dev;
  if (!qkv) v = nullptr;  // separate form: v is not touched
  if ((x || w) && !(x && w && qkv))
    return fail(StatusCode::kInvalidArgument, op,
                "the projection needs x, w and the fused form (qkv, its output)");
  G3_RETURN_IF_ERROR(
      check_qk_norm_rope(op, qkv, q, k, v, q_w, k_w, positions, eps, base, scale, kv_rows, &dev));
  G3_RETURN_IF_ERROR(same_device(op, {&q, qkv, x, w}, &dev));
  const int64_t T = q.dim(0), Hq = q.dim(1), Hkv = k.dim(1), D = q.dim(2);
  const int64_t ld = (Hq + 2 * Hkv) * D;
  // The projection: qkv = matmul(x, w) first. Weights of x's dtype run with the norm and rope
  // (on CUDA, one GEMV at decode); other formats (quantized) as matmul, then the kernel below.
  const bool dense = x && w->dtype == q.dtype;
  if (x) {
    if (!dense) {
      G3_RETURN_IF_ERROR(matmul(*x, *w, nullptr, *qkv));
    } else {
      G3_RETURN_IF_ERROR(expect_same_dtype(op, q, "q", *x, "x"));
      G3_RETURN_IF_ERROR(expect(x->ndim() == 2 && x->dim(0) == T && w->ndim() == 2 &&
                                    w->dim(0) == ld && w->dim(1) == x->dim(1),
                                op,
                                named("x", *x) + " and " + named("w", *w) + " must be [" +
                                    std::to_string(T) + ", K] and [" + std::to_string(ld) +
                                    ", K]"));
      if (x->overlaps(*qkv) || w->overlaps(*qkv))
        return fail(StatusCode::kInvalidArgument, op, "qkv must not overlap x or w");
    }
  }
  if (T == 0) return Status::Ok();
  return dispatch_float(op, q, [&](auto t) {
    using TT = typename decltype(t)::type;
    TT* qp = static_cast<TT*>(q.data());
    TT* kp = static_cast<TT*>(k.data());
    TT* vp = v ? static_cast<TT*>(v->data()) : nullptr;
    const TT* base_in = qkv ? static_cast<const TT*>(qkv->data()) : nullptr;
    const TT* q_in = qkv ? base_in : qp;
    const TT* k_in = qkv ? base_in + Hq * D : kp;
    const TT* v_in = qkv ? base_in + (Hq + Hkv) * D : nullptr;
    const int64_t ld_q = qkv ? ld : Hq * D, ld_k = qkv ? ld : Hkv * D, ld_v = qkv ? ld : Hkv * D;
    const int32_t* rows = kv_rows ? static_cast<const int32_t*>(kv_rows->data()) : nullptr;
    if (dense) {
      // G3_LAUNCH evaluates its arguments when the stream runs it, so nothing through x or w.
      const TT* xp = static_cast<const TT*>(x->data());
      const TT* wp = static_cast<const TT*>(w->data());
      TT* yp = static_cast<TT*>(qkv->data());
      const TT* qwp = static_cast<const TT*>(q_w.data());
      const TT* kwp = static_cast<const TT*>(k_w.data());
      const int32_t* pp = static_cast<const int32_t*>(positions.data());
      const int64_t cap = k.dim(0), K = x->dim(1);
      return G3_LAUNCH(dev, keep({x, w, qkv, &q, &k, v, &q_w, &k_w, &positions, kv_rows}),
                       matmul_qk_norm_rope<TT>, xp, wp, yp, qwp, kwp, pp, qp, kp, vp, rows, cap, T,
                       K, Hq, Hkv, D, eps, base, scale);
    }
    return G3_LAUNCH(dev, keep({qkv, &q, &k, v, &q_w, &k_w, &positions, kv_rows}), qk_norm_rope<TT>,
                     q_in, k_in, v_in, static_cast<const TT*>(q_w.data()),
                     static_cast<const TT*>(k_w.data()),
                     static_cast<const int32_t*>(positions.data()), qp, kp, vp, rows, k.dim(0), T,
                     Hq, Hkv, D, ld_q, ld_k, ld_v, eps, base, scale);
  });
}

Status attention_decode_qkv(const TensorRef& qkv, const TensorRef& q, const TensorRef& q_w,
                            const TensorRef& k_w, const TensorRef& positions,
                            const TensorRef& kv_rows, float eps, float base, float scale,
                            const TensorRef& k_cache, const TensorRef& v_cache,
                            const TensorRef& out, const TensorRef& kv_indptr,
                            const TensorRef& kv_indices, const TensorRef& kv_len,
                            const TensorRef* workspace, const DecodeParams& p) {
  const char* op = "attention_decode_qkv";
  int dev;
  G3_RETURN_IF_ERROR(check_attention_decode(op, q, k_cache, v_cache, out, kv_indptr, kv_indices,
                                            kv_len, workspace, p, &dev));
  G3_RETURN_IF_ERROR(expect_same_dtype(op, q, "q", k_cache, "k_cache (the prologue writes it)"));
  // The caches as qk_norm_rope's KV storage: [pages · page_size, Hkv, D].
  TensorRef k_rows = k_cache, v_rows = v_cache;
  k_rows.shape = {k_cache.dim(0) * k_cache.dim(1), k_cache.dim(2), k_cache.dim(3)};
  v_rows.shape = k_rows.shape;
  G3_RETURN_IF_ERROR(check_qk_norm_rope(op, &qkv, q, k_rows, &v_rows, q_w, k_w, positions, eps,
                                        base, scale, &kv_rows, &dev));
  if (out.overlaps(q) || out.overlaps(qkv) || out.overlaps(k_cache) || out.overlaps(v_cache))
    return fail(StatusCode::kInvalidArgument, op, "out must not overlap q, qkv or the caches");
  if (q.numel() == 0) return Status::Ok();
  const int64_t batch = q.dim(0), Hq = q.dim(1), Hkv = k_cache.dim(2), D = q.dim(2);
  const int64_t page = k_cache.dim(1), num_pages = k_cache.dim(0), num_indices = kv_indices.numel();
  const int64_t max_kv = p.max_kv_len > 0 ? p.max_kv_len : num_pages * page;
  float* ws = workspace ? static_cast<float*>(workspace->data()) : nullptr;
  const int64_t ws_n = workspace ? workspace->numel() : 0;
  return dispatch_float(op, q, [&](auto t) {
    using TT = typename decltype(t)::type;
    return G3_LAUNCH(dev,
                     keep({&qkv, &q, &q_w, &k_w, &positions, &kv_rows, &k_cache, &v_cache, &out,
                           &kv_indptr, &kv_indices, &kv_len, workspace}),
                     attention_decode_qkv<TT>, static_cast<const TT*>(qkv.data()),
                     static_cast<const TT*>(q_w.data()), static_cast<const TT*>(k_w.data()),
                     static_cast<const int32_t*>(positions.data()),
                     static_cast<const int32_t*>(kv_rows.data()), static_cast<TT*>(q.data()),
                     static_cast<TT*>(k_cache.data()), static_cast<TT*>(v_cache.data()),
                     static_cast<TT*>(out.data()), static_cast<const int32_t*>(kv_indptr.data()),
                     static_cast<const int32_t*>(kv_indices.data()),
                     static_cast<const int32_t*>(kv_len.data()), batch, Hq, Hkv, D, page, num_pages,
                     num_indices, max_kv, p.sm_scale, p.window, eps, base, scale, ws, ws_n);
  });
}

Status rmsnorm_add_rmsnorm(const TensorRef& x, const TensorRef& w, const TensorRef& residual,
                           const TensorRef& w_next, const TensorRef& out, float eps) {
  const char* op = "rmsnorm_add_rmsnorm";
  int dev;
  G3_RETURN_IF_ERROR(same_device(op, {&x, &w, &residual, &w_next, &out}, &dev));
  G3_RETURN_IF_ERROR(expect_dtype(op, "x", x, {DType::kF32, DType::kBF16}));
  const std::pair<const char*, const TensorRef*> same[] = {
      {"w", &w}, {"residual", &residual}, {"w_next", &w_next}, {"out", &out}};
  for (const auto& [name, t] : same) G3_RETURN_IF_ERROR(expect_same_dtype(op, x, "x", *t, name));
  G3_RETURN_IF_ERROR(expect(x.ndim() >= 1 && x.shape == residual.shape && x.shape == out.shape, op,
                            named("x", x) + ", " + named("residual", residual) + " and " +
                                named("out", out) + " must have one shape"));
  const int64_t D = x.last();
  G3_RETURN_IF_ERROR(expect(w.numel() == D && w_next.numel() == D, op,
                            named("w", w) + " and " + named("w_next", w_next) + " must have " +
                                std::to_string(D) + " elements"));
  if (!(eps >= 0.0f)) return fail(StatusCode::kInvalidArgument, op, "eps must be >= 0");
  if (out.overlaps(x) || out.overlaps(residual))
    return fail(StatusCode::kInvalidArgument, op, "out must not overlap x or residual");
  if (x.numel() == 0) return Status::Ok();
  return dispatch_float(op, x, [&](auto t) {
    using TT = typename decltype(t)::type;
    return G3_LAUNCH(dev, keep({&x, &w, &residual, &w_next, &out}), rmsnorm_add_rmsnorm<TT>,
                     static_cast<const TT*>(x.data()), static_cast<const TT*>(w.data()),
                     static_cast<TT*>(residual.data()), static_cast<const TT*>(w_next.data()),
                     static_cast<TT*>(out.data()), x.rows(), D, eps);
  });
}

}  // namespace gemma3::ops
