// Helpers shared by the op files: validation with messages that name the op and the shapes, dtype
// dispatch onto kernel template parameters, and launching on the tensors' device.
#pragma once
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "ops/tensor_ref.h"
#include "runtime/fault.h"
#ifdef GEMMA3_WITH_CUDA
#include "kernels/cuda/cuda_kernels.h"
#endif

namespace gemma3::ops::detail {

template <typename T>
struct Tag {
  using type = T;
};

inline Status fail(StatusCode c, const char* op, const std::string& msg) {
  return Status(c, std::string(op) + ": " + msg);
}

// All tensors on one device; returns it in *device.
inline Status same_device(const char* op, std::initializer_list<const TensorRef*> ts, int* device) {
  const TensorRef* first = nullptr;
  for (const TensorRef* t : ts) {
    if (t == nullptr) continue;
    if (first == nullptr) {
      first = t;
    } else if (t->device() != first->device()) {
      return fail(StatusCode::kDevice, op,
                  "tensors on different devices: " + first->desc() + " and " + t->desc());
    }
  }
  *device = first ? first->device() : kCpu;
  return check_device(*device);
}

inline Status expect_dtype(const char* op, const char* name, const TensorRef& t,
                           std::initializer_list<DType> allowed) {
  for (DType d : allowed)
    if (t.dtype == d) return Status::Ok();
  std::string list;
  for (DType d : allowed) list += (list.empty() ? "" : "|") + std::string(dtype_name(d));
  return fail(StatusCode::kDType, op, std::string(name) + " is " + t.desc() + ", expected " + list);
}

inline Status expect(bool cond, const char* op, const std::string& msg) {
  return cond ? Status::Ok() : fail(StatusCode::kShape, op, msg);
}

inline Status expect_same_dtype(const char* op, const TensorRef& a, const char* an,
                                const TensorRef& b, const char* bn) {
  if (a.dtype == b.dtype) return Status::Ok();
  return fail(StatusCode::kDType, op,
              std::string(an) + " " + a.desc() + " and " + bn + " " + b.desc() +
                  " must have the same dtype");
}

inline std::string named(const char* name, const TensorRef& t) {
  return std::string(name) + " " + shape_str(t.shape);
}

// Calls f(Tag<T>{}) for T = float | bf16.
template <class F>
Status dispatch_float(const char* op, const TensorRef& t, F&& f) {
  switch (t.dtype) {
    case DType::kF32:
      return f(Tag<float>{});
    case DType::kBF16:
      return f(Tag<bf16>{});
    default:
      return fail(StatusCode::kDType, op, "unsupported dtype " + t.desc() + " (f32|bf16)");
  }
}

// Calls f(Tag<T>{}) for T = float | bf16 | f16.
template <class F>
Status dispatch_half(const char* op, const TensorRef& t, F&& f) {
  if (t.dtype == DType::kF16) return f(Tag<f16>{});
  return dispatch_float(op, t, std::forward<F>(f));
}

// Calls f(Tag<B>{}) for the GGUF K-quant blocks; false when t is not one.
template <class F>
bool dispatch_kquant(const TensorRef& t, F&& f, Status* st) {
  switch (t.dtype) {
    case DType::kQ4_K:
      return *st = f(Tag<block_q4_K>{}), true;
    case DType::kQ5_K:
      return *st = f(Tag<block_q5_K>{}), true;
    case DType::kQ6_K:
      return *st = f(Tag<block_q6_K>{}), true;
    default:
      return false;
  }
}

// Calls f(Tag<W>{}) for the weight formats (f32 | bf16 | q8_0 | q4_0 | K-quants, and fp8 when
// allow_fp8).
template <class F>
Status dispatch_weight(const char* op, const TensorRef& t, bool allow_fp8, F&& f) {
  switch (t.dtype) {
    case DType::kF32:
      return f(Tag<float>{});
    case DType::kBF16:
      return f(Tag<bf16>{});
    case DType::kQ8_0:
      return f(Tag<block_q8_0>{});
    case DType::kQ4_0:
      return f(Tag<block_q4_0>{});
    case DType::kFP8E4M3:
      if (allow_fp8) return f(Tag<fp8e4m3>{});
      [[fallthrough]];
    default: {
      Status st;
      if (dispatch_kquant(t, f, &st)) return st;
      return fail(StatusCode::kDType, op, "unsupported weight dtype " + t.desc());
    }
  }
}

// f(Tag<block_q4_0s | block_q8_0s>{}) for a weight in a split row layout (callers check dtype).
template <class F>
Status dispatch_split(const TensorRef& t, F&& f) {
  if (t.dtype == DType::kQ8_0S) return f(Tag<block_q8_0s>{});
  return f(Tag<block_q4_0s>{});
}

template <class F>
Status dispatch_quant(const char* op, const TensorRef& t, F&& f) {
  switch (t.dtype) {
    case DType::kQ8_0:
      return f(Tag<block_q8_0>{});
    case DType::kQ4_0:
      return f(Tag<block_q4_0>{});
    case DType::kFP8E4M3:
      return f(Tag<fp8e4m3>{});
    default: {
      Status st;
      if (dispatch_kquant(t, f, &st)) return st;
      return fail(StatusCode::kDType, op, "expected a quantized dtype, got " + t.desc());
    }
  }
}

inline std::vector<std::shared_ptr<Buffer>> keep(std::initializer_list<const TensorRef*> ts) {
  std::vector<std::shared_ptr<Buffer>> v;
  for (const TensorRef* t : ts)
    if (t) v.push_back(t->buf);
  return v;
}

// Runs a launcher on the device's stream: CPU launchers are queued on the CPU worker together with
// the buffers they touch (so a JS dispose cannot free them first); CUDA launchers are enqueued now.
template <class CpuCall, class CudaCall>
Status launch(int device, std::vector<std::shared_ptr<Buffer>> bufs, CpuCall cpu_call,
              CudaCall cuda_call) {
  G3_RETURN_IF_ERROR(fault::check_launch(device));
  if (device == kCpu) {
    return cpu_submit([bufs = std::move(bufs), cpu_call]() { return cpu_call(); });
  }
#ifdef GEMMA3_WITH_CUDA
  void* s = nullptr;
  G3_RETURN_IF_ERROR(cuda_stream(device, &s));
  return cuda_call(static_cast<cudaStream_t>(s));
#else
  (void)cuda_call;
  return Status(StatusCode::kDevice, "CUDA backend not built");
#endif
}

#ifdef GEMMA3_WITH_CUDA
// Runs a launcher only the CUDA backend has (weights in q4_0s / q8_0s, the split row layouts): a
// CPU tensor gets kUnsupported (G3_LAUNCH_CUDA below). cuda_call(cudaStream_t) is enqueued now.
template <class CudaCall>
Status launch_cuda_only(const char* op, int device, std::vector<std::shared_ptr<Buffer>> bufs,
                        CudaCall cuda_call) {
  if (device == kCpu) {
    return fail(
        StatusCode::kUnsupported, op,
        "q4_0s / q8_0s are CUDA row layouts; a CPU tensor keeps the GGUF blocks (ops.repack)");
  }
  return launch(
      device, std::move(bufs), [] { return Status(); }, cuda_call);
}
#endif

}  // namespace gemma3::ops::detail

#define G3_COMMA ,
#ifdef GEMMA3_WITH_CUDA
// G3_LAUNCH(device, buffers, kernel<T...>, args...): the same call on either backend.
#define G3_LAUNCH(dev, bufs, FN, ...)                              \
  ::gemma3::ops::detail::launch(                                   \
      dev, bufs, [=]() { return ::gemma3::cpu::FN(__VA_ARGS__); }, \
      [=](cudaStream_t stream_) { return ::gemma3::cuda::FN(__VA_ARGS__, stream_); })
#else
#define G3_LAUNCH(dev, bufs, FN, ...)                              \
  ::gemma3::ops::detail::launch(                                   \
      dev, bufs, [=]() { return ::gemma3::cpu::FN(__VA_ARGS__); }, \
      [](auto) { return ::gemma3::Status(); })
#endif
// G3_LAUNCH_CUDA(op, device, buffers, kernel<T...>, args...): a launcher of the CUDA backend only.
#ifdef GEMMA3_WITH_CUDA
#define G3_LAUNCH_CUDA(op, dev, bufs, FN, ...)                                       \
  ::gemma3::ops::detail::launch_cuda_only(op, dev, bufs, [=](cudaStream_t stream_) { \
    return ::gemma3::cuda::FN(__VA_ARGS__, stream_);                                 \
  })
#else
#define G3_LAUNCH_CUDA(op, dev, bufs, FN, ...)                        \
  ::gemma3::ops::detail::fail(::gemma3::StatusCode::kUnsupported, op, \
                              "q4_0s / q8_0s need the CUDA backend")
#endif
