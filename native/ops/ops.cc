// Op validation and dispatch. One function per op: check devices, dtypes and shapes (errors name
// the op and the shapes), then launch the kernel template that matches the dtypes.
#include "ops/ops.h"

#include <cmath>

#include "ops/dispatch.h"
#ifdef GEMMA3_WITH_CUDA
#include "kernels/cuda/attention_decode.h"
#endif

namespace gemma3::ops {
using namespace detail;

// matmul's checks, shared with gelu_mul's projection: x [..., K] float, w [N, K], y x's leading
// dims + [N] in x's dtype, w_scale [N] f32 for fp8 weights only.
static Status check_matmul(const char* op, const TensorRef& x, const TensorRef& w,
                           const TensorRef* w_scale, const TensorRef& y, int* dev) {
  G3_RETURN_IF_ERROR(same_device(op, {&x, &w, w_scale, &y}, dev));
  G3_RETURN_IF_ERROR(expect_dtype(op, "x", x, {DType::kF32, DType::kBF16}));
  G3_RETURN_IF_ERROR(expect_same_dtype(op, x, "x", y, "y"));
  G3_RETURN_IF_ERROR(expect(w.ndim() == 2, op, named("w", w) + " must be [N, K]"));
  G3_RETURN_IF_ERROR(expect(x.ndim() >= 1 && y.ndim() == x.ndim(), op,
                            named("x", x) + " and " + named("y", y) + " must have the same rank"));
  const int64_t K = w.dim(1), N = w.dim(0);
  G3_RETURN_IF_ERROR(expect(x.last() == K, op,
                            named("x", x) + " and " + named("w", w) + " disagree on K (" +
                                std::to_string(x.last()) + " vs " + std::to_string(K) + ")"));
  bool lead_ok = y.last() == N;
  for (int i = 0; i + 1 < x.ndim(); ++i) lead_ok = lead_ok && x.dim(i) == y.dim(i);
  G3_RETURN_IF_ERROR(expect(lead_ok, op,
                            named("y", y) + " must be x's leading dims + [" + std::to_string(N) +
                                "] for " + named("x", x) + ", " + named("w", w)));
  if (w.dtype == DType::kFP8E4M3) {
    if (!w_scale) return fail(StatusCode::kInvalidArgument, op, "fp8_e4m3 weights need a scale");
    G3_RETURN_IF_ERROR(expect_dtype(op, "w_scale", *w_scale, {DType::kF32}));
    G3_RETURN_IF_ERROR(
        expect(w_scale->numel() == N, op,
               named("w_scale", *w_scale) + " must have N = " + std::to_string(N) + " elements"));
  } else if (w_scale) {
    return fail(StatusCode::kInvalidArgument, op, "w_scale is only for fp8_e4m3 weights");
  }
  if ((w.dtype == DType::kQ4_0S || w.dtype == DType::kQ8_0S) && K % kQK != 0)
    return fail(StatusCode::kInvalidArgument, op, named("w", w) + ": K % 32 != 0");
  return Status::Ok();
}

// f(TX, TW) with the kernel types of x and w: the split layouts (CUDA only) or dispatch_weight's.
template <typename F>
static Status dispatch_matmul(const char* op, const TensorRef& x, const TensorRef& w, F&& f) {
  return dispatch_float(op, x, [&](auto tx) {
    if (w.dtype == DType::kQ4_0S || w.dtype == DType::kQ8_0S)
      return dispatch_split(w, [&](auto tw) { return f(tx, tw); });
    return dispatch_weight(op, w, true, [&](auto tw) { return f(tx, tw); });
  });
}

Status matmul(const TensorRef& x, const TensorRef& w, const TensorRef* w_scale,
              const TensorRef& y) {
  const char* op = "matmul";
  int dev;
  G3_RETURN_IF_ERROR(check_matmul(op, x, w, w_scale, y, &dev));
  const int64_t K = w.dim(1), N = w.dim(0), M = x.rows();
  if (M == 0 || N == 0) return Status::Ok();
  const float* sp = w_scale ? static_cast<const float*>(w_scale->data()) : nullptr;
  return dispatch_matmul(op, x, w, [&](auto tx, auto tw) {
    using TX = typename decltype(tx)::type;
    using TW = typename decltype(tw)::type;
    auto xp = static_cast<const TX*>(x.data());
    auto wp = static_cast<const TW*>(w.data());
    auto yp = static_cast<TX*>(y.data());
    if constexpr (std::is_same_v<TW, block_q4_0s> || std::is_same_v<TW, block_q8_0s>) {
      return G3_LAUNCH_CUDA(op, dev, keep({&x, &w, &y}), matmul<TX G3_COMMA TW>, xp, wp, nullptr,
                            yp, M, N, K);
    } else {
      return G3_LAUNCH(dev, keep({&x, &w, w_scale, &y}), matmul<TX G3_COMMA TW>, xp, wp, sp, yp, M,
                       N, K);
    }
  });
}

// Shared checks of the row-wise norms: x, out [..., D]; w (and b) [D]; one float dtype.
static Status check_norm(const char* op, const TensorRef& x, const TensorRef& w, const TensorRef* b,
                         const TensorRef& out, float eps, int* dev) {
  G3_RETURN_IF_ERROR(same_device(op, {&x, &w, b, &out}, dev));
  G3_RETURN_IF_ERROR(expect_dtype(op, "x", x, {DType::kF32, DType::kBF16}));
  G3_RETURN_IF_ERROR(expect_same_dtype(op, x, "x", w, "w"));
  G3_RETURN_IF_ERROR(expect_same_dtype(op, x, "x", out, "out"));
  if (b) G3_RETURN_IF_ERROR(expect_same_dtype(op, x, "x", *b, "b"));
  G3_RETURN_IF_ERROR(expect(x.shape == out.shape, op, named("x", x) + " vs " + named("out", out)));
  G3_RETURN_IF_ERROR(expect(
      w.numel() == x.last() && x.ndim() >= 1, op,
      named("w", w) + " must have " + std::to_string(x.last()) + " elements for " + named("x", x)));
  if (b)
    G3_RETURN_IF_ERROR(expect(b->numel() == x.last(), op, named("b", *b) + " vs " + named("x", x)));
  if (!(eps >= 0.0f)) return fail(StatusCode::kInvalidArgument, op, "eps must be >= 0");
  return Status::Ok();
}

Status rmsnorm(const TensorRef& x, const TensorRef& w, const TensorRef& out, float eps) {
  int dev;
  G3_RETURN_IF_ERROR(check_norm("rmsnorm", x, w, nullptr, out, eps, &dev));
  if (x.numel() == 0) return Status::Ok();
  return dispatch_float("rmsnorm", x, [&](auto t) {
    using T = typename decltype(t)::type;
    return G3_LAUNCH(dev, keep({&x, &w, &out}), rmsnorm<T>, static_cast<const T*>(x.data()),
                     static_cast<const T*>(w.data()), static_cast<T*>(out.data()), x.rows(),
                     x.last(), eps);
  });
}

Status rmsnorm_add(const TensorRef& x, const TensorRef& w, const TensorRef& residual, float eps) {
  int dev;
  G3_RETURN_IF_ERROR(check_norm("rmsnorm_add", x, w, nullptr, residual, eps, &dev));
  if (x.numel() == 0) return Status::Ok();
  return dispatch_float("rmsnorm_add", x, [&](auto t) {
    using T = typename decltype(t)::type;
    return G3_LAUNCH(dev, keep({&x, &w, &residual}), rmsnorm_add<T>,
                     static_cast<const T*>(x.data()), static_cast<const T*>(w.data()),
                     static_cast<T*>(residual.data()), x.rows(), x.last(), eps);
  });
}

Status layernorm(const TensorRef& x, const TensorRef& w, const TensorRef& b, const TensorRef& out,
                 float eps) {
  int dev;
  G3_RETURN_IF_ERROR(check_norm("layernorm", x, w, &b, out, eps, &dev));
  if (x.numel() == 0) return Status::Ok();
  return dispatch_float("layernorm", x, [&](auto t) {
    using T = typename decltype(t)::type;
    return G3_LAUNCH(dev, keep({&x, &w, &b, &out}), layernorm<T>, static_cast<const T*>(x.data()),
                     static_cast<const T*>(w.data()), static_cast<const T*>(b.data()),
                     static_cast<T*>(out.data()), x.rows(), x.last(), eps);
  });
}

// With the projection (x, w given): gate is matmul(x, w)'s output [..., 2F] (scratch the fused
// CUDA GEMV leaves unwritten) and the kernel is matmul_gelu_mul.
Status gelu_mul(const TensorRef& gate, const TensorRef* up, const TensorRef& out,
                const TensorRef* x, const TensorRef* w, const TensorRef* w_scale) {
  const char* op = "gelu_mul";
  int dev;
  if ((x || w || w_scale) && !(x && w && !up))
    return fail(StatusCode::kInvalidArgument, op,
                "the projection needs x, w and the fused form (gate [..., 2F], up null)");
  G3_RETURN_IF_ERROR(same_device(op, {&gate, up, &out, x, w, w_scale}, &dev));
  G3_RETURN_IF_ERROR(expect_dtype(op, "gate", gate, {DType::kF32, DType::kBF16}));
  G3_RETURN_IF_ERROR(expect_same_dtype(op, gate, "gate", out, "out"));
  const int64_t F = out.last(), rows = out.rows();
  int64_t ld_gate, ld_up;
  const char* up_ptr;
  if (up) {
    G3_RETURN_IF_ERROR(expect_same_dtype(op, gate, "gate", *up, "up"));
    G3_RETURN_IF_ERROR(expect(gate.shape == out.shape && up->shape == out.shape, op,
                              named("gate", gate) + ", " + named("up", *up) + " and " +
                                  named("out", out) + " must match"));
    ld_gate = ld_up = F;
    up_ptr = static_cast<const char*>(up->data());
  } else {
    bool ok = gate.ndim() == out.ndim() && gate.last() == 2 * F && gate.rows() == rows;
    G3_RETURN_IF_ERROR(expect(ok, op,
                              "fused " + named("gate", gate) + " must be " + named("out", out) +
                                  " with a doubled last dim"));
    ld_gate = ld_up = 2 * F;
    up_ptr = static_cast<const char*>(gate.data()) + dtype_row_bytes(gate.dtype, F);
  }
  if (x) {
    G3_RETURN_IF_ERROR(check_matmul(op, *x, *w, w_scale, gate, &dev));
    if (out.overlaps(gate) || out.overlaps(*x) || gate.overlaps(*x))
      return fail(StatusCode::kInvalidArgument, op,
                  "x, gate (matmul's output) and out must not overlap");
  }
  if (out.numel() == 0) return Status::Ok();
  if (x) {
    const int64_t K = w->dim(1);
    const float* sp = w_scale ? static_cast<const float*>(w_scale->data()) : nullptr;
    return dispatch_matmul(op, *x, *w, [&](auto tx, auto tw) {
      using TX = typename decltype(tx)::type;
      using TW = typename decltype(tw)::type;
      auto xp = static_cast<const TX*>(x->data());
      auto wp = static_cast<const TW*>(w->data());
      auto gp = static_cast<TX*>(gate.data());
      auto op_ = static_cast<TX*>(out.data());
      if constexpr (std::is_same_v<TW, block_q4_0s> || std::is_same_v<TW, block_q8_0s>) {
        return G3_LAUNCH_CUDA(op, dev, keep({x, w, &gate, &out}), matmul_gelu_mul<TX G3_COMMA TW>,
                              xp, wp, nullptr, gp, op_, rows, F, K);
      } else {
        return G3_LAUNCH(dev, keep({x, w, w_scale, &gate, &out}), matmul_gelu_mul<TX G3_COMMA TW>,
                         xp, wp, sp, gp, op_, rows, F, K);
      }
    });
  }
  return dispatch_float(op, gate, [&](auto t) {
    using T = typename decltype(t)::type;
    return G3_LAUNCH(dev, keep({&gate, up, &out}), gelu_mul<T>, static_cast<const T*>(gate.data()),
                     reinterpret_cast<const T*>(up_ptr), static_cast<T*>(out.data()), rows, F,
                     ld_gate, ld_up);
  });
}

Status add(const TensorRef& a, const TensorRef& b, const TensorRef& out) {
  const char* op = "add";
  int dev;
  G3_RETURN_IF_ERROR(same_device(op, {&a, &b, &out}, &dev));
  G3_RETURN_IF_ERROR(expect_same_dtype(op, a, "a", b, "b"));
  G3_RETURN_IF_ERROR(expect_same_dtype(op, a, "a", out, "out"));
  G3_RETURN_IF_ERROR(
      expect(a.shape == b.shape && a.shape == out.shape, op,
             named("a", a) + ", " + named("b", b) + ", " + named("out", out) + " must match"));
  if (a.numel() == 0) return Status::Ok();
  return dispatch_float(op, a, [&](auto t) {
    using T = typename decltype(t)::type;
    return G3_LAUNCH(dev, keep({&a, &b, &out}), add<T>, static_cast<const T*>(a.data()),
                     static_cast<const T*>(b.data()), static_cast<T*>(out.data()), a.numel());
  });
}

// Shared checks of the x -> out ops (scale, softmax): one device, one dtype, one shape.
static Status check_unary(const char* op, const TensorRef& x, const TensorRef& out, int* dev) {
  G3_RETURN_IF_ERROR(same_device(op, {&x, &out}, dev));
  G3_RETURN_IF_ERROR(expect_same_dtype(op, x, "x", out, "out"));
  return expect(x.shape == out.shape, op, named("x", x) + " vs " + named("out", out));
}

Status scale(const TensorRef& x, const TensorRef& out, float s) {
  const char* op = "scale";
  int dev;
  G3_RETURN_IF_ERROR(check_unary(op, x, out, &dev));
  if (x.numel() == 0) return Status::Ok();
  return dispatch_float(op, x, [&](auto t) {
    using T = typename decltype(t)::type;
    return G3_LAUNCH(dev, keep({&x, &out}), scale<T>, static_cast<const T*>(x.data()),
                     static_cast<T*>(out.data()), x.numel(), s);
  });
}

Status embedding(const TensorRef& ids, const TensorRef& table, const TensorRef& out, float s) {
  const char* op = "embedding";
  int dev;
  G3_RETURN_IF_ERROR(same_device(op, {&ids, &table, &out}, &dev));
  G3_RETURN_IF_ERROR(expect_dtype(op, "ids", ids, {DType::kI32}));
  G3_RETURN_IF_ERROR(expect_dtype(op, "out", out, {DType::kF32, DType::kBF16}));
  G3_RETURN_IF_ERROR(expect(table.ndim() == 2, op, named("table", table) + " must be [V, D]"));
  const int64_t n = ids.numel(), V = table.dim(0), D = table.dim(1);
  G3_RETURN_IF_ERROR(expect(out.rows() == n && out.last() == D, op,
                            named("out", out) + " must be [" + std::to_string(n) + ", " +
                                std::to_string(D) + "] for " + named("ids", ids) + ", " +
                                named("table", table)));
  if (n == 0) return Status::Ok();
  if (table.dtype == DType::kQ4_0S || table.dtype == DType::kQ8_0S) {  // CUDA only
    return dispatch_float(op, out, [&](auto ty) {
      using TY = typename decltype(ty)::type;
      return dispatch_split(table, [&](auto tw) {
        using TW = typename decltype(tw)::type;
        return G3_LAUNCH_CUDA(op, dev, keep({&ids, &table, &out}), embedding<TW G3_COMMA TY>,
                              static_cast<const int32_t*>(ids.data()),
                              static_cast<const TW*>(table.data()), static_cast<TY*>(out.data()), n,
                              D, V, s);
      });
    });
  }
  // fp8 tables take the scalar s only (a row gather of an fp8 KV cache), no per-row scale.
  return dispatch_weight(op, table, true, [&](auto tw) {
    using TW = typename decltype(tw)::type;
    return dispatch_float(op, out, [&](auto ty) {
      using TY = typename decltype(ty)::type;
      return G3_LAUNCH(dev, keep({&ids, &table, &out}), embedding<TW G3_COMMA TY>,
                       static_cast<const int32_t*>(ids.data()),
                       static_cast<const TW*>(table.data()), static_cast<TY*>(out.data()), n, D, V,
                       s);
    });
  });
}

Status softmax(const TensorRef& x, const TensorRef& out) {
  const char* op = "softmax";
  int dev;
  G3_RETURN_IF_ERROR(check_unary(op, x, out, &dev));
  if (x.numel() == 0) return Status::Ok();
  return dispatch_float(op, x, [&](auto t) {
    using T = typename decltype(t)::type;
    return G3_LAUNCH(dev, keep({&x, &out}), softmax<T>, static_cast<const T*>(x.data()),
                     static_cast<T*>(out.data()), x.rows(), x.last());
  });
}

Status argmax(const TensorRef& x, const TensorRef& out) {
  const char* op = "argmax";
  int dev;
  G3_RETURN_IF_ERROR(same_device(op, {&x, &out}, &dev));
  G3_RETURN_IF_ERROR(expect_dtype(op, "out", out, {DType::kI32}));
  G3_RETURN_IF_ERROR(
      expect(x.last() > 0 && out.numel() == x.rows(), op,
             named("out", out) + " must have one element per row of " + named("x", x)));
  if (x.rows() == 0) return Status::Ok();
  return dispatch_float(op, x, [&](auto t) {
    using T = typename decltype(t)::type;
    return G3_LAUNCH(dev, keep({&x, &out}), argmax<T>, static_cast<const T*>(x.data()),
                     static_cast<int32_t*>(out.data()), x.rows(), x.last());
  });
}

Status topk(const TensorRef& x, const TensorRef& values, const TensorRef& indices) {
  const char* op = "topk";
  int dev;
  G3_RETURN_IF_ERROR(same_device(op, {&x, &values, &indices}, &dev));
  G3_RETURN_IF_ERROR(expect_dtype(op, "values", values, {DType::kF32}));
  G3_RETURN_IF_ERROR(expect_dtype(op, "indices", indices, {DType::kI32}));
  const int64_t k = values.last();
  if (k < 1 || k > x.last() || k > 1024)
    return fail(StatusCode::kInvalidArgument, op,
                "k = " + std::to_string(k) +
                    " must be in [1, min(cols = " + std::to_string(x.last()) + ", 1024)]");
  G3_RETURN_IF_ERROR(expect(values.shape == indices.shape && values.rows() == x.rows(), op,
                            named("values", values) + " and " + named("indices", indices) +
                                " must be [rows, k] for " + named("x", x)));
  if (x.rows() == 0) return Status::Ok();
  return dispatch_float(op, x, [&](auto t) {
    using T = typename decltype(t)::type;
    return G3_LAUNCH(dev, keep({&x, &values, &indices}), topk<T>, static_cast<const T*>(x.data()),
                     static_cast<float*>(values.data()), static_cast<int32_t*>(indices.data()),
                     x.rows(), x.last(), k);
  });
}

Status rope(const TensorRef& x, const TensorRef& positions, float base, float scale) {
  const char* op = "rope";
  int dev;
  G3_RETURN_IF_ERROR(same_device(op, {&x, &positions}, &dev));
  G3_RETURN_IF_ERROR(expect_dtype(op, "positions", positions, {DType::kI32}));
  G3_RETURN_IF_ERROR(
      expect(x.ndim() == 3, op, named("x", x) + " must be [tokens, heads, head_dim]"));
  const int64_t T = x.dim(0), H = x.dim(1), D = x.dim(2);
  G3_RETURN_IF_ERROR(
      expect(positions.numel() == T, op,
             named("positions", positions) + " must have one entry per token of " + named("x", x)));
  G3_RETURN_IF_ERROR(expect(D % 2 == 0, op, "head_dim must be even, got " + std::to_string(D)));
  if (!(base > 0.0f) || !(scale > 0.0f))
    return fail(StatusCode::kInvalidArgument, op, "base and scale must be > 0");
  if (x.numel() == 0) return Status::Ok();
  return dispatch_float(op, x, [&](auto t) {
    using TT = typename decltype(t)::type;
    return G3_LAUNCH(dev, keep({&x, &positions}), rope<TT>, static_cast<TT*>(x.data()),
                     static_cast<const int32_t*>(positions.data()), T, H, D, H * D, base, scale);
  });
}

// q/k/v-style [tokens, heads, head_dim] checks shared by both attention ops.
static Status check_heads(const char* op, const TensorRef& q, int64_t num_kv_heads) {
  const int64_t Hq = q.dim(1);
  if (num_kv_heads <= 0 || Hq % num_kv_heads != 0)
    return fail(StatusCode::kShape, op,
                "num_qo_heads " + std::to_string(Hq) + " must be a multiple of num_kv_heads " +
                    std::to_string(num_kv_heads));
  return Status::Ok();
}

Status attention_prefill(const TensorRef& q, const TensorRef& k, const TensorRef& v,
                         const TensorRef& out, const TensorRef& qo_indptr,
                         const TensorRef& kv_indptr, const TensorRef* kv_last,
                         const PrefillParams& p) {
  const char* op = "attention_prefill";
  int dev;
  G3_RETURN_IF_ERROR(same_device(op, {&q, &k, &v, &out, &qo_indptr, &kv_indptr, kv_last}, &dev));
  G3_RETURN_IF_ERROR(expect_dtype(op, "q", q, {DType::kF32, DType::kBF16}));
  G3_RETURN_IF_ERROR(expect_same_dtype(op, q, "q", k, "k"));
  G3_RETURN_IF_ERROR(expect_same_dtype(op, q, "q", v, "v"));
  G3_RETURN_IF_ERROR(expect_same_dtype(op, q, "q", out, "out"));
  G3_RETURN_IF_ERROR(expect_dtype(op, "qo_indptr", qo_indptr, {DType::kI32}));
  G3_RETURN_IF_ERROR(expect_dtype(op, "kv_indptr", kv_indptr, {DType::kI32}));
  G3_RETURN_IF_ERROR(expect(q.ndim() == 3 && k.ndim() == 3 && k.shape == v.shape &&
                                q.shape == out.shape && k.dim(2) == q.dim(2),
                            op,
                            named("q", q) + ", " + named("k", k) + ", " + named("v", v) + ", " +
                                named("out", out) +
                                ": expected q/out [total_q, Hq, D], k/v [total_kv, Hkv, D]"));
  G3_RETURN_IF_ERROR(check_heads(op, q, k.dim(1)));
  const int64_t batch = qo_indptr.numel() - 1;
  G3_RETURN_IF_ERROR(expect(batch >= 1 && kv_indptr.numel() == batch + 1, op,
                            named("qo_indptr", qo_indptr) + " and " +
                                named("kv_indptr", kv_indptr) + " must both be [batch + 1]"));
  if (kv_last) {
    G3_RETURN_IF_ERROR(expect_dtype(op, "kv_last", *kv_last, {DType::kI32}));
    G3_RETURN_IF_ERROR(expect(kv_last->numel() == q.dim(0), op,
                              named("kv_last", *kv_last) + " must be [total_q]"));
  }
  if (!p.causal && (p.window != 0 || kv_last))
    return fail(StatusCode::kInvalidArgument, op,
                "non-causal attention takes no window or kv_last");
  if (p.window < 0 || p.max_q_len < 0)
    return fail(StatusCode::kInvalidArgument, op, "window and max_q_len must be >= 0");
  if (q.numel() == 0) return Status::Ok();
  const int64_t Hq = q.dim(1), Hkv = k.dim(1), D = q.dim(2);
  const int64_t total_q = q.dim(0), total_kv = k.dim(0);  // bound every indptr entry (kernels.inc)
  const int64_t max_q = p.max_q_len > 0 ? p.max_q_len : total_q;
  return dispatch_float(op, q, [&](auto t) {
    using T = typename decltype(t)::type;
    const int32_t* last = kv_last ? static_cast<const int32_t*>(kv_last->data()) : nullptr;
    return G3_LAUNCH(dev, keep({&q, &k, &v, &out, &qo_indptr, &kv_indptr, kv_last}),
                     attention_prefill<T>, static_cast<const T*>(q.data()),
                     static_cast<const T*>(k.data()), static_cast<const T*>(v.data()),
                     static_cast<T*>(out.data()), static_cast<const int32_t*>(qo_indptr.data()),
                     static_cast<const int32_t*>(kv_indptr.data()), last, batch, total_q, total_kv,
                     max_q, Hq, Hkv, D, Hq * D, Hkv * D, Hkv * D, p.sm_scale, p.window, p.causal);
  });
}

int64_t attention_decode_workspace_floats(int device, int64_t batch, int64_t num_qo_heads,
                                          int64_t head_dim, int64_t max_kv_len) {
#ifdef GEMMA3_WITH_CUDA
  if (device != kCpu)
    return cuda::attention_decode_workspace_floats(batch, num_qo_heads, head_dim, max_kv_len);
#endif
  (void)device, (void)batch, (void)num_qo_heads, (void)head_dim, (void)max_kv_len;
  return 0;
}

// attention_decode's checks (shared with attention_decode_qkv, which names itself in op).
Status detail::check_attention_decode(const char* op, const TensorRef& q, const TensorRef& k_cache,
                                      const TensorRef& v_cache, const TensorRef& out,
                                      const TensorRef& kv_indptr, const TensorRef& kv_indices,
                                      const TensorRef& kv_len, const TensorRef* workspace,
                                      const DecodeParams& p, int* dev_out) {
  int dev;
  G3_RETURN_IF_ERROR(same_device(
      op, {&q, &k_cache, &v_cache, &out, &kv_indptr, &kv_indices, &kv_len, workspace}, &dev));
  G3_RETURN_IF_ERROR(expect_dtype(op, "q", q, {DType::kF32, DType::kBF16}));
  // Caches hold q's dtype, or fp8 e4m3 with per-tensor scales (kernels.inc).
  G3_RETURN_IF_ERROR(expect_dtype(op, "k_cache", k_cache, {q.dtype, DType::kFP8E4M3}));
  G3_RETURN_IF_ERROR(expect_same_dtype(op, k_cache, "k_cache", v_cache, "v_cache"));
  G3_RETURN_IF_ERROR(expect_same_dtype(op, q, "q", out, "out"));
  const bool fp8 = k_cache.dtype == DType::kFP8E4M3;
  if (fp8 ? !(std::isfinite(p.k_scale) && p.k_scale > 0.f && std::isfinite(p.v_scale) &&
              p.v_scale > 0.f)
          : (p.k_scale != 1.f || p.v_scale != 1.f))
    return fail(StatusCode::kInvalidArgument, op,
                "k_scale " + std::to_string(p.k_scale) + " and v_scale " +
                    std::to_string(p.v_scale) +
                    (fp8 ? " must be finite and > 0" : " must be 1 (they scale fp8_e4m3 caches)"));
  for (const TensorRef* t : {&kv_indptr, &kv_indices, &kv_len})
    G3_RETURN_IF_ERROR(expect_dtype(op, "page table", *t, {DType::kI32}));
  G3_RETURN_IF_ERROR(expect(q.ndim() == 3 && q.shape == out.shape && k_cache.ndim() == 4 &&
                                k_cache.shape == v_cache.shape && k_cache.dim(3) == q.dim(2),
                            op,
                            named("q", q) + ", " + named("k_cache", k_cache) + ", " +
                                named("v_cache", v_cache) +
                                ": expected q/out [batch, Hq, D], caches [pages, page_size, "
                                "Hkv, D]"));
  G3_RETURN_IF_ERROR(check_heads(op, q, k_cache.dim(2)));
  const int64_t batch = q.dim(0);
  G3_RETURN_IF_ERROR(expect(kv_indptr.numel() == batch + 1 && kv_len.numel() == batch, op,
                            named("kv_indptr", kv_indptr) + " must be [batch + 1] and " +
                                named("kv_len", kv_len) + " [batch] for " + named("q", q)));
  if (workspace) G3_RETURN_IF_ERROR(expect_dtype(op, "workspace", *workspace, {DType::kF32}));
  if (p.window < 0 || p.max_kv_len < 0)
    return fail(StatusCode::kInvalidArgument, op, "window and max_kv_len must be >= 0");
  *dev_out = dev;
  return Status::Ok();
}

Status attention_decode(const TensorRef& q, const TensorRef& k_cache, const TensorRef& v_cache,
                        const TensorRef& out, const TensorRef& kv_indptr,
                        const TensorRef& kv_indices, const TensorRef& kv_len,
                        const TensorRef* workspace, const DecodeParams& p) {
  const char* op = "attention_decode";
  int dev;
  G3_RETURN_IF_ERROR(check_attention_decode(op, q, k_cache, v_cache, out, kv_indptr, kv_indices,
                                            kv_len, workspace, p, &dev));
  const bool fp8 = k_cache.dtype == DType::kFP8E4M3;
  const int64_t batch = q.dim(0);
  if (q.numel() == 0) return Status::Ok();
  const int64_t Hq = q.dim(1), Hkv = k_cache.dim(2), D = q.dim(2), page = k_cache.dim(1);
  // Bounds for data-dependent page indices and kv_indptr entries (kernels.inc).
  const int64_t num_pages = k_cache.dim(0), num_indices = kv_indices.numel();
  const int64_t max_kv = p.max_kv_len > 0 ? p.max_kv_len : k_cache.dim(0) * page;
  float* ws = workspace ? static_cast<float*>(workspace->data()) : nullptr;
  const int64_t ws_n = workspace ? workspace->numel() : 0;
  auto run = [&](auto t, auto tkv) {
    using T = typename decltype(t)::type;
    using TKV = typename decltype(tkv)::type;
    return G3_LAUNCH(
        dev, keep({&q, &k_cache, &v_cache, &out, &kv_indptr, &kv_indices, &kv_len, workspace}),
        attention_decode<T G3_COMMA TKV>, static_cast<const T*>(q.data()),
        static_cast<const TKV*>(k_cache.data()), static_cast<const TKV*>(v_cache.data()),
        static_cast<T*>(out.data()), static_cast<const int32_t*>(kv_indptr.data()),
        static_cast<const int32_t*>(kv_indices.data()), static_cast<const int32_t*>(kv_len.data()),
        batch, Hq, Hkv, D, page, num_pages, num_indices, max_kv, p.sm_scale, p.k_scale, p.v_scale,
        p.window, ws, ws_n);
  };
  return dispatch_float(op, q, [&](auto t) {
    if (fp8) return run(t, Tag<fp8e4m3>{});
    return run(t, t);
  });
}

Status cast(const TensorRef& src, const TensorRef& dst) {
  const char* op = "cast";
  int dev;
  G3_RETURN_IF_ERROR(same_device(op, {&src, &dst}, &dev));
  G3_RETURN_IF_ERROR(
      expect(src.shape == dst.shape, op, named("src", src) + " vs " + named("dst", dst)));
  if (src.numel() == 0) return Status::Ok();
  if (dst.dtype == DType::kFP8E4M3) {  // f32|bf16 -> fp8 (saturating): fp8 KV cache writes
    return dispatch_float(op, src, [&](auto ts) {
      using TS = typename decltype(ts)::type;
      return G3_LAUNCH(dev, keep({&src, &dst}), cast<TS G3_COMMA fp8e4m3>,
                       static_cast<const TS*>(src.data()), static_cast<fp8e4m3*>(dst.data()),
                       src.numel());
    });
  }
  return dispatch_half(op, src, [&](auto ts) {
    using TS = typename decltype(ts)::type;
    return dispatch_half(op, dst, [&](auto td) {
      using TD = typename decltype(td)::type;
      return G3_LAUNCH(dev, keep({&src, &dst}), cast<TS G3_COMMA TD>,
                       static_cast<const TS*>(src.data()), static_cast<TD*>(dst.data()),
                       src.numel());
    });
  });
}

// Shared checks of quantize/dequantize: plain [..., C] against quantized [..., C].
static Status check_quant(const char* op, const TensorRef& plain, const TensorRef& q,
                          const TensorRef* scale, int* dev) {
  G3_RETURN_IF_ERROR(same_device(op, {&plain, &q, scale}, dev));
  G3_RETURN_IF_ERROR(expect_dtype(op, "plain", plain, {DType::kF32, DType::kBF16}));
  G3_RETURN_IF_ERROR(expect(plain.shape == q.shape && plain.ndim() >= 1, op,
                            named("plain", plain) + " vs " + named("quantized", q)));
  if (q.dtype == DType::kFP8E4M3) {
    if (!scale) return fail(StatusCode::kInvalidArgument, op, "fp8_e4m3 needs a per-row scale");
    G3_RETURN_IF_ERROR(expect_dtype(op, "scale", *scale, {DType::kF32}));
    G3_RETURN_IF_ERROR(expect(scale->numel() == plain.rows(), op,
                              named("scale", *scale) + " must have one entry per row"));
  } else if (scale) {
    return fail(StatusCode::kInvalidArgument, op, "scale is only for fp8_e4m3");
  }
  return Status::Ok();
}

Status quantize(const TensorRef& src, const TensorRef& dst, const TensorRef* scale) {
  const char* op = "quantize";
  int dev;
  G3_RETURN_IF_ERROR(check_quant(op, src, dst, scale, &dev));
  if (src.numel() == 0) return Status::Ok();
  float* sp = scale ? static_cast<float*>(scale->data()) : nullptr;
  return dispatch_float(op, src, [&](auto ts) {
    using TS = typename decltype(ts)::type;
    return dispatch_quant(op, dst, [&](auto tq) {
      using TQ = typename decltype(tq)::type;
      return G3_LAUNCH(dev, keep({&src, &dst, scale}), quantize<TS G3_COMMA TQ>,
                       static_cast<const TS*>(src.data()), static_cast<TQ*>(dst.data()), sp,
                       src.rows(), src.last());
    });
  });
}

Status dequantize(const TensorRef& src, const TensorRef* scale, const TensorRef& dst) {
  const char* op = "dequantize";
  int dev;
  if (src.dtype == DType::kQ4_0S || src.dtype == DType::kQ8_0S) {
    return fail(
        StatusCode::kUnsupported, op,
        named("src", src) + " is a CUDA split layout: ops.repack it to its GGUF blocks first");
  }
  G3_RETURN_IF_ERROR(check_quant(op, dst, src, scale, &dev));
  if (src.numel() == 0) return Status::Ok();
  const float* sp = scale ? static_cast<const float*>(scale->data()) : nullptr;
  return dispatch_quant(op, src, [&](auto tq) {
    using TQ = typename decltype(tq)::type;
    return dispatch_float(op, dst, [&](auto td) {
      using TD = typename decltype(td)::type;
      return G3_LAUNCH(dev, keep({&src, scale, &dst}), dequantize<TQ G3_COMMA TD>,
                       static_cast<const TQ*>(src.data()), sp, static_cast<TD*>(dst.data()),
                       dst.rows(), dst.last());
    });
  });
}

Status repack(const TensorRef& src, const TensorRef& dst) {
  const char* op = "repack";
  int dev;
  G3_RETURN_IF_ERROR(same_device(op, {&src, &dst}, &dev));
  // (GGUF, split) pairs and their quant bytes a block.
  const bool q4 = (src.dtype == DType::kQ4_0 && dst.dtype == DType::kQ4_0S) ||
                  (src.dtype == DType::kQ4_0S && dst.dtype == DType::kQ4_0);
  const bool q8 = (src.dtype == DType::kQ8_0 && dst.dtype == DType::kQ8_0S) ||
                  (src.dtype == DType::kQ8_0S && dst.dtype == DType::kQ8_0);
  G3_RETURN_IF_ERROR(expect(q4 || q8, op,
                            "converts q4_0 <-> q4_0s or q8_0 <-> q8_0s, got " + named("src", src) +
                                " -> " + named("dst", dst)));
  const bool to_split = dst.dtype == DType::kQ4_0S || dst.dtype == DType::kQ8_0S;
  G3_RETURN_IF_ERROR(expect(src.shape == dst.shape && src.ndim() >= 1 && src.last() % kQK == 0, op,
                            named("src", src) + " and " + named("dst", dst) +
                                " must have one shape with a last dim % 32 == 0"));
  G3_RETURN_IF_ERROR(expect(src.buf != dst.buf || src.offset + src.nbytes() <= dst.offset ||
                                dst.offset + dst.nbytes() <= src.offset,
                            op, "src and dst must not overlap"));
  if (src.numel() == 0) return Status::Ok();
  return G3_LAUNCH(dev, keep({&src, &dst}), repack_split, src.data(), dst.data(), src.rows(),
                   src.last(), q4 ? 16 : 32, to_split);
}

Status copy_rows(const TensorRef& src, const TensorRef& dst, const TensorRef& dst_rows) {
  const char* op = "copy_rows";
  int dev;
  G3_RETURN_IF_ERROR(same_device(op, {&src, &dst, &dst_rows}, &dev));
  G3_RETURN_IF_ERROR(expect_same_dtype(op, src, "src", dst, "dst"));
  G3_RETURN_IF_ERROR(expect_dtype(op, "dst_rows", dst_rows, {DType::kI32}));
  bool trailing = src.ndim() == dst.ndim() && src.ndim() >= 1;
  for (int i = 1; trailing && i < src.ndim(); ++i) trailing = src.dim(i) == dst.dim(i);
  G3_RETURN_IF_ERROR(expect(trailing && dst_rows.numel() == src.dim(0), op,
                            named("src", src) + " and " + named("dst", dst) +
                                " must share trailing dims, with one dst_rows entry per src row (" +
                                named("dst_rows", dst_rows) + ")"));
  const int64_t n = src.dim(0);
  if (n == 0 || src.numel() == 0) return Status::Ok();
  const int64_t row_bytes = src.nbytes() / n, capacity = dst.dim(0);
  const int32_t* rows = static_cast<const int32_t*>(dst_rows.data());
  if (dev == kCpu) {
    // Host index data: check it when the op runs (it may be written by an earlier queued op).
    auto bufs = keep({&src, &dst, &dst_rows});
    const void* s = src.data();
    void* d = dst.data();
    return cpu_submit([bufs, s, d, rows, n, row_bytes, capacity] {
      for (int64_t i = 0; i < n; ++i)
        if (rows[i] >= capacity)
          return Status(StatusCode::kOutOfRange, "copy_rows: dst_rows[" + std::to_string(i) +
                                                     "] = " + std::to_string(rows[i]) +
                                                     " >= capacity " + std::to_string(capacity));
      return cpu::copy_rows(s, d, rows, n, capacity, row_bytes, row_bytes);
    });
  }
  // CUDA cannot report bad indices from the device; the kernel skips rows >= capacity instead.
  return G3_LAUNCH(dev, keep({&src, &dst, &dst_rows}), copy_rows, src.data(), dst.data(), rows, n,
                   capacity, row_bytes, row_bytes);
}

}  // namespace gemma3::ops
