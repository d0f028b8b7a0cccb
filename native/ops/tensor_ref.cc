#include "ops/tensor_ref.h"

namespace gemma3 {

int64_t TensorRef::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string TensorRef::desc() const {
  return shape_str(shape) + " " + dtype_name(dtype) + " on " + device_name(device());
}

Status make_tensor_ref(std::shared_ptr<Buffer> buf, int64_t offset, DType dtype,
                       std::vector<int64_t> shape, TensorRef* out) {
  if (!buf) return Status(StatusCode::kInvalidArgument, "tensor has no storage (disposed?)");
  if (int(dtype) < 0 || int(dtype) >= kNumDTypes)
    return Status(StatusCode::kDType, "unknown dtype code " + std::to_string(int(dtype)));
  if (shape.size() > 8) return Status(StatusCode::kShape, "tensor rank above 8");
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return Status(StatusCode::kShape, "negative dimension in " + shape_str(shape));
    if (d > 0 && n > (int64_t(1) << 50) / d)
      return Status(StatusCode::kShape, "tensor too large: " + shape_str(shape));
    n *= d;
  }
  if (dtype_is_block(dtype) && !shape.empty() && shape.back() % dtype_block_elems(dtype) != 0)
    return Status(StatusCode::kShape, std::string(dtype_name(dtype)) + " tensor " +
                                          shape_str(shape) + ": last dim must be a multiple of " +
                                          std::to_string(dtype_block_elems(dtype)));
  out->buf = std::move(buf);
  out->offset = offset;
  out->dtype = dtype;
  out->shape = std::move(shape);
  int64_t bytes = out->nbytes();
  if (offset < 0 || offset > out->buf->size() || bytes > out->buf->size() - offset)
    return Status(StatusCode::kOutOfRange, "tensor " + out->desc() + " at byte offset " +
                                               std::to_string(offset) + " needs " +
                                               std::to_string(bytes) + " bytes; its buffer has " +
                                               std::to_string(out->buf->size()));
  return Status::Ok();
}

}  // namespace gemma3
