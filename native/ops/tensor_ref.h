// TensorRef: what an op sees of a JS Tensor — a buffer, a byte offset, a dtype and a row-major
// contiguous shape. Constructing one checks that the bytes lie inside the buffer, so no op can
// read or write past an allocation whatever JS passes.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "runtime/device.h"
#include "runtime/dtype.h"
#include "runtime/status.h"

namespace gemma3 {

struct TensorRef {
  std::shared_ptr<Buffer> buf;
  int64_t offset = 0;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;

  int device() const { return buf->device(); }
  int ndim() const { return int(shape.size()); }
  int64_t numel() const;
  int64_t dim(int i) const { return shape[size_t(i < 0 ? i + ndim() : i)]; }  // i in [-ndim, ndim)
  int64_t last() const { return shape.empty() ? 1 : shape.back(); }
  int64_t rows() const { return last() == 0 ? 0 : numel() / last(); }  // all but the last dim
  int64_t nbytes() const { return rows() * dtype_row_bytes(dtype, last()); }
  void* data() const { return static_cast<char*>(buf->data()) + offset; }
  std::string desc() const;  // "[3, 19] bf16 on cuda:0"
  // Whether the two share any byte (same buffer, intersecting byte ranges).
  bool overlaps(const TensorRef& o) const {
    return buf == o.buf && offset < o.offset + o.nbytes() && o.offset < offset + nbytes();
  }
};

Status make_tensor_ref(std::shared_ptr<Buffer> buf, int64_t offset, DType dtype,
                       std::vector<int64_t> shape, TensorRef* out);

std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace gemma3
