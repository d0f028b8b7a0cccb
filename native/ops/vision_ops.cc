// Op validation and dispatch of the vision-encoder kernels (bias_add, patchify, avg_pool2d):
// devices, dtypes and shapes checked here with messages naming the op and shapes.
#include <cmath>

#include "ops/dispatch.h"
#include "ops/ops.h"

namespace gemma3::ops {
using namespace detail;

Status bias_add(const TensorRef& x, const TensorRef& bias, const TensorRef* residual,
                const TensorRef& out, bool gelu) {
  const char* op = "bias_add";
  int dev;
  G3_RETURN_IF_ERROR(same_device(op, {&x, &bias, residual, &out}, &dev));
  G3_RETURN_IF_ERROR(expect_dtype(op, "x", x, {DType::kF32, DType::kBF16}));
  G3_RETURN_IF_ERROR(expect_same_dtype(op, x, "x", bias, "bias"));
  G3_RETURN_IF_ERROR(expect_same_dtype(op, x, "x", out, "out"));
  if (residual) G3_RETURN_IF_ERROR(expect_same_dtype(op, x, "x", *residual, "residual"));
  G3_RETURN_IF_ERROR(expect(x.ndim() >= 1 && x.shape == out.shape, op,
                            named("x", x) + " and " + named("out", out) + " must match"));
  if (residual)
    G3_RETURN_IF_ERROR(expect(residual->shape == out.shape, op,
                              named("residual", *residual) + " must match " + named("out", out)));
  G3_RETURN_IF_ERROR(expect(bias.numel() == x.last(), op,
                            named("bias", bias) + " must have " + std::to_string(x.last()) +
                                " elements for " + named("x", x)));
  if (x.numel() == 0) return Status::Ok();
  return dispatch_float(op, x, [&](auto t) {
    using T = typename decltype(t)::type;
    const T* rp = residual ? static_cast<const T*>(residual->data()) : nullptr;
    return G3_LAUNCH(dev, keep({&x, &bias, residual, &out}), bias_add<T>,
                     static_cast<const T*>(x.data()), static_cast<const T*>(bias.data()), rp,
                     static_cast<T*>(out.data()), x.rows(), x.last(), gelu);
  });
}

Status patchify(const TensorRef& pixels, const TensorRef& out, int64_t patch) {
  const char* op = "patchify";
  int dev;
  G3_RETURN_IF_ERROR(same_device(op, {&pixels, &out}, &dev));
  G3_RETURN_IF_ERROR(expect_dtype(op, "pixels", pixels, {DType::kF32}));
  G3_RETURN_IF_ERROR(expect_dtype(op, "out", out, {DType::kF32, DType::kBF16}));
  G3_RETURN_IF_ERROR(
      expect(pixels.ndim() == 4, op, named("pixels", pixels) + " must be [n, C, H, W]"));
  const int64_t n = pixels.dim(0), C = pixels.dim(1), H = pixels.dim(2), W = pixels.dim(3);
  if (patch <= 0 || H % patch != 0 || W % patch != 0 || C <= 0)
    return fail(
        StatusCode::kInvalidArgument, op,
        "patch " + std::to_string(patch) + " must divide H and W of " + named("pixels", pixels));
  const std::vector<int64_t> want{n, (H / patch) * (W / patch), C * patch * patch};
  G3_RETURN_IF_ERROR(expect(out.shape == want, op,
                            named("out", out) + " must be " + shape_str(want) + " for " +
                                named("pixels", pixels) + " and patch " + std::to_string(patch)));
  if (n == 0) return Status::Ok();
  return dispatch_float(op, out, [&](auto t) {
    using T = typename decltype(t)::type;
    return G3_LAUNCH(dev, keep({&pixels, &out}), patchify<T>,
                     static_cast<const float*>(pixels.data()), static_cast<T*>(out.data()), n, C, H,
                     W, patch);
  });
}

Status avg_pool2d(const TensorRef& x, const TensorRef& out, int64_t k) {
  const char* op = "avg_pool2d";
  int dev;
  G3_RETURN_IF_ERROR(same_device(op, {&x, &out}, &dev));
  G3_RETURN_IF_ERROR(expect_dtype(op, "x", x, {DType::kF32, DType::kBF16}));
  G3_RETURN_IF_ERROR(expect_same_dtype(op, x, "x", out, "out"));
  G3_RETURN_IF_ERROR(expect(x.ndim() == 3, op, named("x", x) + " must be [n, side², C]"));
  const int64_t n = x.dim(0), P = x.dim(1), C = x.dim(2);
  const int64_t side = int64_t(std::llround(std::sqrt(double(P))));
  G3_RETURN_IF_ERROR(
      expect(side * side == P && P > 0, op,
             named("x", x) + ": " + std::to_string(P) + " rows are not a square grid"));
  if (k <= 0 || side % k != 0)
    return fail(StatusCode::kInvalidArgument, op,
                "k " + std::to_string(k) + " must divide the grid side " + std::to_string(side));
  const std::vector<int64_t> want{n, (side / k) * (side / k), C};
  G3_RETURN_IF_ERROR(expect(out.shape == want, op,
                            named("out", out) + " must be " + shape_str(want) + " for " +
                                named("x", x) + " and k " + std::to_string(k)));
  if (n == 0 || C == 0) return Status::Ok();
  return dispatch_float(op, x, [&](auto t) {
    using T = typename decltype(t)::type;
    return G3_LAUNCH(dev, keep({&x, &out}), avg_pool2d<T>, static_cast<const T*>(x.data()),
                     static_cast<T*>(out.data()), n, side, C, k);
  });
}

Status attention_prefill_qkv(const TensorRef& qkv, const TensorRef& out, const TensorRef& qo_indptr,
                             const TensorRef& kv_indptr, int64_t num_qo_heads, int64_t num_kv_heads,
                             const PrefillParams& p) {
  const char* op = "attention_prefill_qkv";
  int dev;
  G3_RETURN_IF_ERROR(same_device(op, {&qkv, &out, &qo_indptr, &kv_indptr}, &dev));
  G3_RETURN_IF_ERROR(expect_dtype(op, "qkv", qkv, {DType::kF32, DType::kBF16}));
  G3_RETURN_IF_ERROR(expect_same_dtype(op, qkv, "qkv", out, "out"));
  G3_RETURN_IF_ERROR(expect_dtype(op, "qo_indptr", qo_indptr, {DType::kI32}));
  G3_RETURN_IF_ERROR(expect_dtype(op, "kv_indptr", kv_indptr, {DType::kI32}));
  if (num_qo_heads <= 0 || num_kv_heads <= 0 || num_qo_heads % num_kv_heads != 0)
    return fail(StatusCode::kShape, op,
                "num_qo_heads " + std::to_string(num_qo_heads) +
                    " must be a positive multiple of num_kv_heads " + std::to_string(num_kv_heads));
  G3_RETURN_IF_ERROR(expect(out.ndim() == 3 && out.dim(1) == num_qo_heads, op,
                            named("out", out) + " must be [total, num_qo_heads, D]"));
  const int64_t total = out.dim(0), D = out.dim(2);
  const int64_t width = (num_qo_heads + 2 * num_kv_heads) * D;
  G3_RETURN_IF_ERROR(expect(qkv.ndim() == 2 && qkv.dim(0) == total && qkv.dim(1) == width, op,
                            named("qkv", qkv) + " must be [" + std::to_string(total) + ", " +
                                std::to_string(width) + "] for " + named("out", out)));
  const int64_t batch = qo_indptr.numel() - 1;
  G3_RETURN_IF_ERROR(expect(batch >= 1 && kv_indptr.numel() == batch + 1, op,
                            named("qo_indptr", qo_indptr) + " and " +
                                named("kv_indptr", kv_indptr) + " must both be [batch + 1]"));
  if (!p.causal && p.window != 0)
    return fail(StatusCode::kInvalidArgument, op, "non-causal attention takes no window");
  if (p.window < 0 || p.max_q_len < 0)
    return fail(StatusCode::kInvalidArgument, op, "window and max_q_len must be >= 0");
  if (total == 0 || D == 0) return Status::Ok();
  const int64_t max_q = p.max_q_len > 0 ? p.max_q_len : total;
  return dispatch_float(op, qkv, [&](auto t) {
    using T = typename decltype(t)::type;
    const T* base = static_cast<const T*>(qkv.data());
    return G3_LAUNCH(dev, keep({&qkv, &out, &qo_indptr, &kv_indptr}), attention_prefill<T>, base,
                     base + num_qo_heads * D, base + (num_qo_heads + num_kv_heads) * D,
                     static_cast<T*>(out.data()), static_cast<const int32_t*>(qo_indptr.data()),
                     static_cast<const int32_t*>(kv_indptr.data()), nullptr, batch, total, total,
                     max_q, num_qo_heads, num_kv_heads, D, width, width, width, p.sm_scale,
                     p.window, p.causal);
  });
}

}  // namespace gemma3::ops
