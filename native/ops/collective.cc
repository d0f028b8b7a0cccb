// Communicator backends (host, NCCL) and the cross-device column copy. See ops/collective.h.
#include "ops/collective.h"

#include <cstdlib>
#include <cstring>

#include "kernels/cpu/all_reduce.h"
#include "runtime/peer_copy.h"

#ifdef GEMMA3_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

namespace gemma3::ops {
namespace {

Status fail(StatusCode c, const std::string& msg) { return Status(c, "all_reduce: " + msg); }

// sum of n arrays of dtype `dt` into out (serial on the calling thread, or over the CPU pool).
Status host_sum(DType dt, const std::vector<char*>& src, char* out, int64_t count, bool pool) {
  auto run = [&](auto tag) -> Status {
    using T = decltype(tag);
    std::vector<const T*> p;
    for (char* s : src) p.push_back(reinterpret_cast<const T*>(s));
    T* o = reinterpret_cast<T*>(out);
    if (pool) return cpu::sum_n<T>(p.data(), int(p.size()), o, count);
    cpu::sum_n_range<T>(p.data(), int(p.size()), o, 0, count);
    return Status::Ok();
  };
  switch (dt) {
    case DType::kF32:
      return run(float{});
    case DType::kBF16:
      return run(bf16{});
    case DType::kF16:
      return run(f16{});
    default:
      return fail(StatusCode::kDType, std::string("unsupported dtype ") + dtype_name(dt));
  }
}

class HostCommunicator : public Communicator {
 public:
  explicit HostCommunicator(std::vector<int> devices) : Communicator(std::move(devices)) {}
  const char* backend() const override { return "host"; }
  // CPU ranks share the CPU stream, whose capture records the queued sum; CUDA ranks copy
  // through the host, which no CUDA graph can record.
  bool graph_capturable() const override { return devices()[0] == kCpu; }

 protected:
  Status all_reduce_impl(const std::vector<TensorRef>& t) override {
    const int n = size();
    const int64_t count = t[0].numel(), bytes = t[0].nbytes();
    const DType dt = t[0].dtype;
    if (devices()[0] == kCpu) {
      // CPU ranks share the CPU stream: one queued task runs after every rank's earlier ops.
      std::vector<std::shared_ptr<Buffer>> keep;
      std::vector<char*> ptrs;
      for (const TensorRef& x : t) {
        keep.push_back(x.buf);
        ptrs.push_back(static_cast<char*>(x.data()));
      }
      return cpu_submit([keep, ptrs, dt, count, bytes, n] {
        G3_RETURN_IF_ERROR(host_sum(dt, ptrs, ptrs[0], count, true));  // in place on rank 0
        for (int r = 1; r < n; ++r) std::memcpy(ptrs[r], ptrs[0], size_t(bytes));
        return Status::Ok();
      });
    }
    for (int d : devices())
      if (graph_capturing(d))
        return fail(StatusCode::kInvalidArgument,
                    "the host all-reduce of CUDA ranks cannot be graph-captured (build with NCCL)");
    std::vector<std::vector<char>> host(static_cast<size_t>(n),
                                        std::vector<char>(static_cast<size_t>(bytes)));
    std::vector<char*> ptrs;
    for (int r = 0; r < n; ++r) {
      G3_RETURN_IF_ERROR(copy_to_host(t[r].buf, t[r].offset, host[r].data(), bytes));
      ptrs.push_back(host[r].data());
    }
    G3_RETURN_IF_ERROR(host_sum(dt, ptrs, ptrs[0], count, false));
    for (int r = 0; r < n; ++r)
      G3_RETURN_IF_ERROR(copy_from_host(t[r].buf, t[r].offset, ptrs[0], bytes));
    return Status::Ok();
  }
};

#ifdef GEMMA3_WITH_NCCL
Status nccl_status(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return Status::Ok();
  std::string msg = std::string(what) + ": " + ncclGetErrorString(r);
#if defined(NCCL_VERSION_CODE) && NCCL_VERSION_CODE >= NCCL_VERSION(2, 13, 0)
  const char* last = ncclGetLastError(nullptr);
  if (last != nullptr && *last != '\0') msg += std::string(" (") + last + ")";
#endif
  return Status(StatusCode::kCuda, msg);
}

class NcclCommunicator : public Communicator {
 public:
  static Status create(const std::vector<int>& devices, std::unique_ptr<Communicator>* out) {
    // NVLink multicast (NVLS) stays off: the device notes require it (a fault there can take the
    // host's shared GPUs down). setenv without overwrite keeps a value the user chose.
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    // Captured collectives (decode graphs, one per rank device, launched from this one thread):
    // NCCL's env docs (NCCL_GRAPH_MIXING_SUPPORT) report hangs in the CUDA launches with graph
    // mixing support on when one thread drives several ranks, so it goes off; the price is that
    // no eager collective may run while a graph holding one is outstanding (wait_idle() between
    // the two). User-buffer registration of captured collectives (NCCL_GRAPH_REGISTER) stays off
    // too: our buffers come from the runtime's allocator, not NCCL's, and the NVLink ring of two
    // or four H100s does not need it.
    setenv("NCCL_GRAPH_MIXING_SUPPORT", "0", 0);
    setenv("NCCL_GRAPH_REGISTER", "0", 0);
    std::vector<ncclComm_t> comms(devices.size(), nullptr);
    G3_RETURN_IF_ERROR(nccl_status(
        ncclCommInitAll(comms.data(), int(devices.size()), devices.data()), "ncclCommInitAll"));
    out->reset(new NcclCommunicator(devices, std::move(comms)));
    return Status::Ok();
  }
  ~NcclCommunicator() override {
    for (int d : devices()) synchronize(d);  // no collective in flight when its comm goes
    for (ncclComm_t c : comms_) ncclCommDestroy(c);
  }
  const char* backend() const override { return "nccl"; }
  // NCCL captures collectives from 2.9 on (its "Using NCCL with CUDA Graphs").
  bool graph_capturable() const override {
#if defined(NCCL_VERSION_CODE) && NCCL_VERSION_CODE >= NCCL_VERSION(2, 9, 0)
    return true;
#else
    return false;
#endif
  }

 protected:
  Status all_reduce_impl(const std::vector<TensorRef>& t) override {
    ncclDataType_t type;
    switch (t[0].dtype) {
      case DType::kF32:
        type = ncclFloat32;
        break;
      case DType::kF16:
        type = ncclFloat16;
        break;
#if defined(NCCL_VERSION_CODE) && NCCL_VERSION_CODE >= NCCL_VERSION(2, 10, 0)
      case DType::kBF16:
        type = ncclBfloat16;
        break;
#endif
      default:
        return fail(StatusCode::kDType,
                    std::string("NCCL takes no ") + dtype_name(t[0].dtype) + " here");
    }
    // Captured or not is a collective property (NCCL docs): every rank's stream, or none.
    int capturing = 0;
    for (int d : devices()) capturing += graph_capturing(d) ? 1 : 0;
    if (capturing != 0 && capturing != size())
      return fail(StatusCode::kInvalidArgument,
                  std::to_string(capturing) + " of " + std::to_string(size()) +
                      " ranks' devices are capturing a graph (all of them or none)");
    std::vector<cudaStream_t> streams;
    for (int d : devices()) {
      void* s = nullptr;
      G3_RETURN_IF_ERROR(cuda_stream(d, &s));
      streams.push_back(static_cast<cudaStream_t>(s));
    }
    // A capture that an op invalidates fails only at its end, naming nothing: say here whether it
    // was already invalid before this all-reduce, or NCCL's launch invalidated it.
    auto check_capture = [&](const char* when) -> Status {
      if (capturing == 0) return Status::Ok();
      for (int r = 0; r < size(); ++r) {
        cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
        cudaSetDevice(devices()[size_t(r)]);
        if (cudaStreamIsCapturing(streams[size_t(r)], &st) != cudaSuccess) cudaGetLastError();
        if (st != cudaStreamCaptureStatusActive)
          return fail(
              StatusCode::kCuda,
              "rank " + std::to_string(r) + "'s graph capture is " +
                  (st == cudaStreamCaptureStatusInvalidated ? "invalidated " : "not active ") +
                  when);
      }
      return Status::Ok();
    };
    G3_RETURN_IF_ERROR(check_capture("before the all-reduce (an earlier op of the capture)"));
    // One thread drives every device: the group makes the N launches one collective (NCCL docs,
    // "Example 1: single process, single thread, multiple devices").
    G3_RETURN_IF_ERROR(nccl_status(ncclGroupStart(), "ncclGroupStart"));
    ncclResult_t first = ncclSuccess;
    for (size_t r = 0; r < t.size(); ++r) {
      void* p = t[r].data();
      ncclResult_t e =
          ncclAllReduce(p, p, size_t(t[r].numel()), type, ncclSum, comms_[r], streams[r]);
      if (e != ncclSuccess && first == ncclSuccess) first = e;
    }
    ncclResult_t end = ncclGroupEnd();
    G3_RETURN_IF_ERROR(nccl_status(first, "ncclAllReduce"));
    G3_RETURN_IF_ERROR(nccl_status(end, "ncclGroupEnd"));
    return check_capture("after ncclGroupEnd (NCCL's launch could not be recorded)");
  }

 private:
  NcclCommunicator(std::vector<int> devices, std::vector<ncclComm_t> comms)
      : Communicator(std::move(devices)), comms_(std::move(comms)) {}
  std::vector<ncclComm_t> comms_;
};
#endif

}  // namespace

Status Communicator::create(const std::vector<int>& devices, const std::string& backend,
                            std::unique_ptr<Communicator>* out) {
  const int n = int(devices.size());
  if (n < 1 || n > cpu::kMaxSumSources)
    return Status(StatusCode::kInvalidArgument, "communicator: " + std::to_string(n) +
                                                    " ranks (1 to " +
                                                    std::to_string(cpu::kMaxSumSources) + ")");
  for (int d : devices) G3_RETURN_IF_ERROR(check_device(d));
  const bool cpu = devices[0] == kCpu;
  for (int i = 0; i < n; ++i) {
    if ((devices[i] == kCpu) != cpu)
      return Status(StatusCode::kDevice, "communicator: ranks on " + device_name(devices[0]) +
                                             " and " + device_name(devices[i]) +
                                             " (all CPU or all CUDA)");
    for (int j = 0; j < i && !cpu; ++j)
      if (devices[j] == devices[i])
        return Status(StatusCode::kDevice, "communicator: " + device_name(devices[i]) +
                                               " holds two ranks (one CUDA device per rank)");
  }
  if (backend != "auto" && backend != "nccl" && backend != "host")
    return Status(StatusCode::kInvalidArgument,
                  "communicator: backend \"" + backend + "\" (auto, nccl or host)");
  if (!cpu) enable_peer_access(devices.data(), n);
  const char* env = std::getenv("GEMMA3_NCCL");
  const bool env_off = env != nullptr && std::string(env) == "0";
#ifdef GEMMA3_WITH_NCCL
  if (!cpu && (backend == "nccl" || (backend == "auto" && !env_off)))
    return NcclCommunicator::create(devices, out);
#endif
  (void)env_off;
  if (backend == "nccl")
    return Status(StatusCode::kUnsupported,
                  cpu ? "communicator: NCCL needs CUDA ranks"
                      : "communicator: this build has no NCCL (configure with it found: "
                        "GEMMA3_NCCL_ROOT)");
  out->reset(new HostCommunicator(devices));
  return Status::Ok();
}

Status Communicator::all_reduce_sum(const std::vector<TensorRef>& t) {
  if (int(t.size()) != size())
    return fail(StatusCode::kInvalidArgument,
                std::to_string(t.size()) + " tensors for " + std::to_string(size()) + " ranks");
  for (int r = 0; r < size(); ++r) {
    if (t[r].device() != devices_[r])
      return fail(StatusCode::kDevice, "rank " + std::to_string(r) + " is on " +
                                           device_name(devices_[r]) + ", its tensor " +
                                           t[r].desc());
    if (t[r].dtype != t[0].dtype)
      return fail(StatusCode::kDType, t[0].desc() + " and " + t[r].desc());
    if (t[r].shape != t[0].shape)
      return fail(StatusCode::kShape, t[0].desc() + " and " + t[r].desc());
    for (int q = 0; q < r; ++q)
      if (t[q].overlaps(t[r]))
        return fail(StatusCode::kInvalidArgument, "the tensors of ranks " + std::to_string(q) +
                                                      " and " + std::to_string(r) + " overlap");
  }
  if (t[0].dtype != DType::kF32 && t[0].dtype != DType::kBF16 && t[0].dtype != DType::kF16)
    return fail(StatusCode::kDType, t[0].desc() + " (f32|bf16|f16)");
  if (t[0].numel() == 0) return Status::Ok();
  return all_reduce_impl(t);
}

Status Communicator::wait_idle() {
  if (devices_[0] == kCpu) return synchronize(kCpu);  // CPU ranks share one stream
  Status first = Status::Ok();
  for (int d : devices_) {
    Status s = synchronize(d);
    if (!s.ok() && first.ok()) first = s;
  }
  return first;
}

Status copy_columns(const TensorRef& src, int64_t src_col, const TensorRef& dst, int64_t dst_col,
                    int64_t width) {
  auto bad = [&](StatusCode c, const std::string& m) {
    return Status(c, "copy_columns: " + m + " (src " + src.desc() + ", dst " + dst.desc() + ")");
  };
  if (src.dtype != dst.dtype) return bad(StatusCode::kDType, "dtypes differ");
  if (dtype_is_block(src.dtype)) return bad(StatusCode::kDType, "block dtypes have no columns");
  if (src.rows() != dst.rows()) return bad(StatusCode::kShape, "row counts differ");
  if (width < 0 || src_col < 0 || dst_col < 0 || src_col + width > src.last() ||
      dst_col + width > dst.last())
    return bad(StatusCode::kShape, "columns [" + std::to_string(src_col) + ", +" +
                                       std::to_string(width) + ") -> [" + std::to_string(dst_col) +
                                       ", +" + std::to_string(width) + ") out of range");
  const int64_t eb = dtype_row_bytes(src.dtype, 1);
  return copy_2d(dst.buf, dst.offset + dst_col * eb, dst.last() * eb, src.buf,
                 src.offset + src_col * eb, src.last() * eb, width * eb, src.rows());
}

}  // namespace gemma3::ops
