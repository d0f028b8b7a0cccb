// Status: the one error type of the native core. Kernels, ops and the runtime return it; the addon
// turns a non-ok Status into a JS exception whose `code` names the kind. Nothing here aborts.
#pragma once
#include <string>
#include <utility>

namespace gemma3 {

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,  // a value out of range (eps < 0, k > cols, ...)
  kShape = 2,            // shapes that do not fit together
  kDType = 3,            // a dtype the op does not take
  kDevice = 4,           // tensors on different devices, or a device that does not exist
  kUnsupported = 5,      // a closed set was left (head_dim 96, ...), or CUDA not built
  kOutOfMemory = 6,      // host or device allocation failed
  kCuda = 7,             // any other CUDA error
  kOutOfRange = 8,       // a view or copy past the end of its buffer
  kInternal = 9,
  kDisposed = 10,    // a buffer, tensor or graph used after dispose()
  kCudaSticky = 11,  // a CUDA error that poisons the context (illegal address, ...): restart
};

struct Status {
  StatusCode code = StatusCode::kOk;
  std::string message;

  Status() = default;
  Status(StatusCode c, std::string m) : code(c), message(std::move(m)) {}
  bool ok() const { return code == StatusCode::kOk; }
  static Status Ok() { return Status(); }
};

inline const char* status_code_name(StatusCode c) {
  switch (c) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kInvalidArgument:
      return "E_INVALID_ARGUMENT";
    case StatusCode::kShape:
      return "E_SHAPE";
    case StatusCode::kDType:
      return "E_DTYPE";
    case StatusCode::kDevice:
      return "E_DEVICE";
    case StatusCode::kUnsupported:
      return "E_UNSUPPORTED";
    case StatusCode::kOutOfMemory:
      return "E_OUT_OF_MEMORY";
    case StatusCode::kCuda:
      return "E_CUDA";
    case StatusCode::kOutOfRange:
      return "E_OUT_OF_RANGE";
    case StatusCode::kInternal:
      return "E_INTERNAL";
    case StatusCode::kDisposed:
      return "E_DISPOSED";
    case StatusCode::kCudaSticky:
      return "E_CUDA_STICKY";
  }
  return "E_INTERNAL";
}

}  // namespace gemma3

// Propagates a non-ok Status to the caller.
#define G3_RETURN_IF_ERROR(expr)   \
  do {                             \
    ::gemma3::Status _st = (expr); \
    if (!_st.ok()) return _st;     \
  } while (0)
