#include "runtime/device.h"

#include <sys/sysinfo.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "runtime/fault.h"

#ifdef GEMMA3_WITH_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#endif

namespace gemma3 {

std::string device_name(int device) {
  return device == kCpu ? std::string("cpu") : "cuda:" + std::to_string(device);
}

bool cuda_built() {
#ifdef GEMMA3_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef GEMMA3_WITH_CUDA
  static int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // no driver / no GPU: not an error for a CPU user
      return 0;
    }
    return n;
  }();
  return count;
#else
  return 0;
#endif
}

Status check_device(int device) {
  if (device == kCpu) return Status::Ok();
  if (device < 0 || device >= cuda_device_count()) {
    std::string why = cuda_built() ? std::to_string(cuda_device_count()) + " CUDA device(s) visible"
                                   : "this build has no CUDA backend";
    return Status(StatusCode::kDevice, "no such device " + device_name(device) + " (" + why + ")");
  }
  return Status::Ok();
}

#ifdef GEMMA3_WITH_CUDA
namespace {
Status set_device(int device) { return cuda::cuda_status(cudaSetDevice(device), "cudaSetDevice"); }
}  // namespace
#endif

Status device_info(int device, DeviceInfo* out) {
  G3_RETURN_IF_ERROR(check_device(device));
  if (device == kCpu) {
    out->name = "cpu (" + std::to_string(std::thread::hardware_concurrency()) + " threads)";
    int64_t free_b = 0;
    return memory_info(kCpu, &free_b, &out->total_memory);
  }
#ifdef GEMMA3_WITH_CUDA
  cudaDeviceProp p;
  G3_CUDA_RETURN(cudaGetDeviceProperties(&p, device));
  out->name = p.name;
  out->total_memory = int64_t(p.totalGlobalMem);
  out->sm_count = p.multiProcessorCount;
  out->cc_major = p.major;
  out->cc_minor = p.minor;
  out->l2_bytes = p.l2CacheSize;
#endif
  return Status::Ok();
}

Status memory_info(int device, int64_t* free_bytes, int64_t* total_bytes) {
  G3_RETURN_IF_ERROR(check_device(device));
  if (device == kCpu) {
    struct sysinfo si;
    if (sysinfo(&si) != 0) return Status(StatusCode::kInternal, "sysinfo failed");
    *total_bytes = int64_t(si.totalram) * si.mem_unit;
    *free_bytes = int64_t(si.freeram + si.bufferram) * si.mem_unit;
    return Status::Ok();
  }
#ifdef GEMMA3_WITH_CUDA
  G3_RETURN_IF_ERROR(set_device(device));
  size_t f = 0, t = 0;
  G3_CUDA_RETURN(cudaMemGetInfo(&f, &t));
  // Memory the stream-ordered pool keeps after frees is free for our allocations.
  cudaMemPool_t pool = nullptr;
  uint64_t reserved = 0, used = 0;
  if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess &&
      cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved) == cudaSuccess &&
      cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used) == cudaSuccess &&
      reserved > used)
    f += size_t(reserved - used);
  cudaGetLastError();
  *free_bytes = int64_t(f);
  *total_bytes = int64_t(t);
#endif
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Buffers

static std::string human_bytes(int64_t b) {
  char s[64];
  snprintf(s, sizeof(s), "%.2f GiB", double(b) / (1024.0 * 1024.0 * 1024.0));
  return s;
}

#ifdef GEMMA3_WITH_CUDA
namespace {
// Defined with the per-device CUDA state below.
cudaError_t cuda_alloc(int device, size_t bytes, void** p, bool* pooled);
void cuda_release(int device, void* p, bool pooled);
}  // namespace
#endif

Status Buffer::create(int device, int64_t bytes, std::shared_ptr<Buffer>* out) {
  G3_RETURN_IF_ERROR(check_device(device));
  if (bytes < 0) return Status(StatusCode::kInvalidArgument, "negative allocation size");
  G3_RETURN_IF_ERROR(fault::check_alloc(device));
  int64_t alloc = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;  // never a null pointer
  auto oom = [&](const char* why) {
    int64_t free_b = 0, total_b = 0;
    (void)memory_info(device, &free_b, &total_b);
    return Status(StatusCode::kOutOfMemory,
                  "out of memory on " + device_name(device) + ": asked for " + human_bytes(bytes) +
                      ", " + human_bytes(free_b) + " free of " + human_bytes(total_b) + why);
  };
  if (device == kCpu) {
    // Linux overcommits: refuse what can never fit instead of dying later on first touch.
    int64_t free_b = 0, total_b = 0;
    G3_RETURN_IF_ERROR(memory_info(device, &free_b, &total_b));
    if (alloc > total_b) return oom("");
    void* p = nullptr;
    if (posix_memalign(&p, 64, size_t(alloc)) != 0 || p == nullptr) return oom("");
    out->reset(new Buffer(device, p, bytes, false));
    return Status::Ok();
  }
#ifdef GEMMA3_WITH_CUDA
  G3_RETURN_IF_ERROR(set_device(device));
  void* p = nullptr;
  bool pooled = false;
  cudaError_t e = cuda_alloc(device, size_t(alloc), &p, &pooled);
  if (e != cudaSuccess) {
    cudaGetLastError();  // allocation errors are not sticky; clear so later calls see success
    if (e == cudaErrorMemoryAllocation) return oom(pooled ? " (cudaMallocAsync)" : " (cudaMalloc)");
    return cuda::cuda_status(e, pooled ? "cudaMallocAsync" : "cudaMalloc");
  }
  out->reset(new Buffer(device, p, bytes, pooled));
  return Status::Ok();
#else
  return Status(StatusCode::kDevice, "CUDA backend not built");
#endif
}

Buffer::~Buffer() {
  if (device_ == kCpu) {
    std::free(data_);
    return;
  }
#ifdef GEMMA3_WITH_CUDA
  cuda_release(device_, data_, pooled_);
#endif
}

// ---------------------------------------------------------------------------------------------
// The CPU stream: one worker thread running tasks in order.

namespace {

class CpuStream {
 public:
  CpuStream() {
    std::thread([this] { loop(); }).detach();
  }

  Status submit(Task t) {
    std::lock_guard<std::mutex> lk(mu_);
    if (capturing_) {
      captured_.push_back(std::move(t));
      return Status::Ok();
    }
    queue_.push_back(std::move(t));
    cv_.notify_one();
    return Status::Ok();
  }

  Status synchronize() {
    std::unique_lock<std::mutex> lk(mu_);
    idle_cv_.wait(lk, [this] { return queue_.empty() && !running_; });
    Status st = error_;
    error_ = Status::Ok();
    return st;
  }

  Status begin_capture() {
    std::lock_guard<std::mutex> lk(mu_);
    if (capturing_) return Status(StatusCode::kInvalidArgument, "cpu: a capture is already active");
    capturing_ = true;
    captured_.clear();
    return Status::Ok();
  }
  Status end_capture(std::vector<Task>* out) {
    std::lock_guard<std::mutex> lk(mu_);
    if (!capturing_) return Status(StatusCode::kInvalidArgument, "cpu: no capture is active");
    capturing_ = false;
    *out = std::move(captured_);
    captured_.clear();
    return Status::Ok();
  }
  bool capturing() {
    std::lock_guard<std::mutex> lk(mu_);
    return capturing_;
  }
  /** The deferred error synchronize() will report (kept: synchronize still reports it). */
  Status error() {
    std::lock_guard<std::mutex> lk(mu_);
    return error_;
  }

 private:
  void loop() {
    for (;;) {
      Task t;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [this] { return !queue_.empty(); });
        t = std::move(queue_.front());
        queue_.pop_front();
        running_ = true;
      }
      Status st;
      try {
        st = t();
      } catch (const std::bad_alloc&) {
        st = Status(StatusCode::kOutOfMemory, "cpu: out of host memory in a queued op");
      } catch (const std::exception& e) {
        st = Status(StatusCode::kInternal, std::string("cpu: queued op threw: ") + e.what());
      }
      t = nullptr;  // drop captured buffers before reporting idle
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (!st.ok() && error_.ok()) error_ = st;
        running_ = false;
        if (queue_.empty()) idle_cv_.notify_all();
      }
    }
  }

  std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<Task> queue_;
  bool running_ = false;
  Status error_;
  bool capturing_ = false;
  std::vector<Task> captured_;
};

CpuStream& cpu_stream() {
  static CpuStream* s =
      new CpuStream();  // leaked on purpose: its thread lives as long as the process
  return *s;
}

}  // namespace

Status cpu_submit(Task task) { return cpu_stream().submit(std::move(task)); }

#ifdef GEMMA3_WITH_CUDA
namespace {
struct CudaState {
  cudaStream_t stream = nullptr;
  bool capturing = false;
  bool pool_ready = false;
  // Buffers released while the stream captures: a stream-ordered free would become a node of the
  // graph, and cudaFree is not allowed during a capture. Freed when the capture ends.
  std::vector<std::pair<void*, bool>> deferred_frees;
};
std::mutex cuda_mu;
std::vector<CudaState>& cuda_states() {
  static auto* v = new std::vector<CudaState>(size_t(std::max(cuda_device_count(), 0)));
  return *v;
}

// Stream-ordered allocation on the device's one stream (cudaMallocAsync / cudaFreeAsync from the
// device's default memory pool). A free is an operation in the stream, after every op already
// queued there, so releasing a buffer never waits for the GPU: cudaFree synchronizes the whole
// device, which put the JS thread behind every queued step each time an eager step's outputs were
// released (issue #10: KV pages came back 2.5 s after 200 client hang-ups on the H100, 0.65 s on
// the CPU). All use of a buffer is ordered on its device's stream (peer copies make the source
// stream wait for the copy: runtime/peer_copy.cc), so stream order is enough. The pool keeps freed
// memory for reuse instead of returning it at every synchronization (release threshold: no
// limit); an allocation that fails trims the pool and tries once more.
cudaError_t ensure_pool(int device, CudaState& s, cudaMemPool_t* pool) {
  cudaError_t e = cudaDeviceGetDefaultMemPool(pool, device);
  if (e != cudaSuccess || s.pool_ready) return e;
  uint64_t keep = UINT64_MAX;
  e = cudaMemPoolSetAttribute(*pool, cudaMemPoolAttrReleaseThreshold, &keep);
  if (e == cudaSuccess) s.pool_ready = true;
  return e;
}

cudaError_t cuda_alloc(int device, size_t bytes, void** p, bool* pooled) {
  cudaStream_t stream = nullptr;
  cudaMemPool_t pool = nullptr;
  {
    std::lock_guard<std::mutex> lk(cuda_mu);
    CudaState& s = cuda_states()[size_t(device)];
    if (s.stream == nullptr) {
      cudaError_t e = cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking);
      if (e != cudaSuccess) return e;
    }
    // During a capture a stream-ordered alloc would join the graph. GEMMA3_CUDA_MALLOC=sync
    // restores cudaMalloc/cudaFree (for A/B measurements of this choice).
    static const bool sync_only = [] {
      const char* v = std::getenv("GEMMA3_CUDA_MALLOC");
      return v != nullptr && std::strcmp(v, "sync") == 0;
    }();
    *pooled = !s.capturing && !sync_only;
    if (*pooled) {
      cudaError_t e = ensure_pool(device, s, &pool);
      if (e != cudaSuccess) return e;
    }
    stream = s.stream;
  }
  if (!*pooled) {
    cudaError_t e = cudaMalloc(p, bytes);
    if (e == cudaErrorMemoryAllocation &&
        cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) {
      cudaGetLastError();
      cudaMemPoolTrimTo(pool, 0);  // memory the pool holds but nothing uses
      e = cudaMalloc(p, bytes);
    }
    return e;
  }
  cudaError_t e = cudaMallocAsync(p, bytes, stream);
  if (e == cudaErrorMemoryAllocation) {
    // Frees still queued in the stream count as used until the stream reaches them.
    cudaGetLastError();
    cudaStreamSynchronize(stream);
    cudaMemPoolTrimTo(pool, 0);
    e = cudaMallocAsync(p, bytes, stream);
  }
  return e;
}

void free_now(cudaStream_t stream, void* p, bool pooled) {
  if (pooled)
    cudaFreeAsync(p, stream);
  else
    cudaFree(p);  // synchronizes the device: no queued kernel can still read this memory
  cudaGetLastError();
}

void cuda_release(int device, void* p, bool pooled) {
  if (device < 0 || device >= cuda_device_count()) return;
  cudaStream_t stream = nullptr;
  {
    std::lock_guard<std::mutex> lk(cuda_mu);
    CudaState& s = cuda_states()[size_t(device)];
    if (s.capturing) {
      s.deferred_frees.emplace_back(p, pooled);
      return;
    }
    stream = s.stream;
  }
  cudaSetDevice(device);
  free_now(stream, p, pooled);
}

// Frees what was released during a capture (called once the capture has ended).
void release_deferred(int device) {
  std::vector<std::pair<void*, bool>> v;
  cudaStream_t stream = nullptr;
  {
    std::lock_guard<std::mutex> lk(cuda_mu);
    CudaState& s = cuda_states()[size_t(device)];
    v.swap(s.deferred_frees);
    stream = s.stream;
  }
  for (auto& [p, pooled] : v) free_now(stream, p, pooled);
}
}  // namespace

Status cuda_stream(int device, void** stream) {
  G3_RETURN_IF_ERROR(check_device(device));
  G3_RETURN_IF_ERROR(set_device(device));
  std::lock_guard<std::mutex> lk(cuda_mu);
  CudaState& s = cuda_states()[size_t(device)];
  if (s.stream == nullptr) {
    G3_CUDA_RETURN(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  }
  *stream = s.stream;
  return Status::Ok();
}

static Status get_stream(int device, cudaStream_t* s) {
  void* p = nullptr;
  G3_RETURN_IF_ERROR(cuda_stream(device, &p));
  *s = static_cast<cudaStream_t>(p);
  return Status::Ok();
}
#endif

// Host reads that the addon runs on worker threads (copy_to_host, synchronize) and graph captures
// on the same device exclude each other. A read inside another thread's capture would be recorded
// into the graph and never run (CPU), or would synchronize a capturing stream, an error that also
// invalidates the capture (CUDA); either way it could not see the ops the capture only records.
// So a read waits for a capture of its device to end, and a capture waits for the reads in flight
// (they need only the device to finish). From the capturing thread itself a read is refused, as
// before. One process serving several models (a scheduler each) on one device meets this.
namespace {

class CaptureGate {
 public:
  /** Before a host read of `device`; pair with leave(). */
  Status enter(int device, const char* what) {
    std::unique_lock<std::mutex> lk(mu_);
    State& st = states_[device];
    if (st.capturing && st.owner == std::this_thread::get_id())
      return Status(StatusCode::kInvalidArgument,
                    std::string(what) + ": not allowed during graph capture");
    cv_.wait(lk, [&] { return !st.capturing; });
    ++st.readers;
    return Status::Ok();
  }
  void leave(int device) {
    std::lock_guard<std::mutex> lk(mu_);
    --states_[device].readers;
    cv_.notify_all();
  }
  /** Marks a capture by this thread, once the reads in flight are done. */
  void begin(int device) {
    std::unique_lock<std::mutex> lk(mu_);
    State& st = states_[device];
    cv_.wait(lk, [&] { return st.readers == 0; });
    st.capturing = true;
    st.owner = std::this_thread::get_id();
  }
  void end(int device) {
    std::lock_guard<std::mutex> lk(mu_);
    states_[device].capturing = false;
    cv_.notify_all();
  }

 private:
  struct State {
    bool capturing = false;
    std::thread::id owner;
    int readers = 0;
  };
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<int, State> states_;
};

CaptureGate& capture_gate() {
  static auto* g = new CaptureGate();  // never destroyed: worker threads may outlive main
  return *g;
}

// enter() ... leave() around a host read, leave() on every return path.
class GateScope {
 public:
  GateScope(int device, const char* what) : device_(device) {
    status_ = capture_gate().enter(device, what);
  }
  ~GateScope() {
    if (status_.ok()) capture_gate().leave(device_);
  }
  const Status& status() const { return status_; }

 private:
  int device_;
  Status status_;
};

}  // namespace

Status synchronize(int device) {
  G3_RETURN_IF_ERROR(check_device(device));
  GateScope gate(device, "synchronize");
  G3_RETURN_IF_ERROR(gate.status());
  if (device == kCpu) return cpu_stream().synchronize();
#ifdef GEMMA3_WITH_CUDA
  cudaStream_t s;
  G3_RETURN_IF_ERROR(get_stream(device, &s));
  G3_CUDA_RETURN(cudaStreamSynchronize(s));
#endif
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Copies

static Status check_range(const Buffer& b, int64_t offset, int64_t bytes, const char* what) {
  if (offset < 0 || bytes < 0 || offset > b.size() || bytes > b.size() - offset) {
    return Status(StatusCode::kOutOfRange, std::string(what) + ": range [" +
                                               std::to_string(offset) + ", +" +
                                               std::to_string(bytes) + ") is outside a buffer of " +
                                               std::to_string(b.size()) + " bytes");
  }
  return Status::Ok();
}

Status copy_from_host(const std::shared_ptr<Buffer>& dst, int64_t dst_offset, const void* src,
                      int64_t bytes) {
  G3_RETURN_IF_ERROR(check_range(*dst, dst_offset, bytes, "copy_from_host"));
  // A capture would record the host address (CUDA) or a stale snapshot (CPU), and a replay would
  // read memory JS may have freed or data that is no longer current: refuse instead.
  if (graph_capturing(dst->device()))
    return Status(StatusCode::kInvalidArgument,
                  "copy_from_host: not allowed during graph capture (write inputs before launch)");
  if (bytes == 0) return Status::Ok();
  char* d = static_cast<char*>(dst->data()) + dst_offset;
  if (dst->device() == kCpu) {
    // The JS memory may go away after we return: the queued copy owns a snapshot.
    auto snap = std::make_shared<std::vector<char>>(static_cast<const char*>(src),
                                                    static_cast<const char*>(src) + bytes);
    return cpu_submit([dst, d, snap] {
      std::memcpy(d, snap->data(), snap->size());
      return Status::Ok();
    });
  }
#ifdef GEMMA3_WITH_CUDA
  cudaStream_t s;
  G3_RETURN_IF_ERROR(get_stream(dst->device(), &s));
  // From pageable memory this returns once the bytes are staged, so `src` may be released.
  G3_CUDA_RETURN(cudaMemcpyAsync(d, src, size_t(bytes), cudaMemcpyHostToDevice, s));
#endif
  return Status::Ok();
}

Status copy_to_host(const std::shared_ptr<Buffer>& src, int64_t src_offset, void* dst,
                    int64_t bytes) {
  G3_RETURN_IF_ERROR(check_range(*src, src_offset, bytes, "copy_to_host"));
  const char* p = static_cast<const char*>(src->data()) + src_offset;
  GateScope gate(src->device(), "copy_to_host");
  G3_RETURN_IF_ERROR(gate.status());
  if (src->device() == kCpu) {
    G3_RETURN_IF_ERROR(cpu_submit([src, p, dst, bytes] {
      std::memcpy(dst, p, size_t(bytes));
      return Status::Ok();
    }));
    return cpu_stream().synchronize();
  }
#ifdef GEMMA3_WITH_CUDA
  cudaStream_t s;
  G3_RETURN_IF_ERROR(get_stream(src->device(), &s));
  if (bytes > 0) G3_CUDA_RETURN(cudaMemcpyAsync(dst, p, size_t(bytes), cudaMemcpyDeviceToHost, s));
  G3_CUDA_RETURN(cudaStreamSynchronize(s));
#endif
  return Status::Ok();
}

Status copy_buffer(const std::shared_ptr<Buffer>& dst, int64_t dst_offset,
                   const std::shared_ptr<Buffer>& src, int64_t src_offset, int64_t bytes) {
  G3_RETURN_IF_ERROR(check_range(*dst, dst_offset, bytes, "copy"));
  G3_RETURN_IF_ERROR(check_range(*src, src_offset, bytes, "copy"));
  if (dst->device() != src->device()) {
    return Status(StatusCode::kDevice, "copy: buffers on " + device_name(src->device()) + " and " +
                                           device_name(dst->device()) +
                                           " (copy across devices through the host)");
  }
  if (bytes == 0) return Status::Ok();
  char* d = static_cast<char*>(dst->data()) + dst_offset;
  const char* s = static_cast<const char*>(src->data()) + src_offset;
  if (dst->device() == kCpu) {
    return cpu_submit([dst, src, d, s, bytes] {
      std::memmove(d, s, size_t(bytes));
      return Status::Ok();
    });
  }
#ifdef GEMMA3_WITH_CUDA
  cudaStream_t st;
  G3_RETURN_IF_ERROR(get_stream(dst->device(), &st));
  G3_CUDA_RETURN(cudaMemcpyAsync(d, s, size_t(bytes), cudaMemcpyDeviceToDevice, st));
#endif
  return Status::Ok();
}

Status fill_bytes(const std::shared_ptr<Buffer>& dst, int64_t offset, int64_t bytes,
                  uint8_t value) {
  G3_RETURN_IF_ERROR(check_range(*dst, offset, bytes, "fill"));
  if (bytes == 0) return Status::Ok();
  char* d = static_cast<char*>(dst->data()) + offset;
  if (dst->device() == kCpu) {
    return cpu_submit([dst, d, bytes, value] {
      std::memset(d, value, size_t(bytes));
      return Status::Ok();
    });
  }
#ifdef GEMMA3_WITH_CUDA
  cudaStream_t st;
  G3_RETURN_IF_ERROR(get_stream(dst->device(), &st));
  G3_CUDA_RETURN(cudaMemsetAsync(d, value, size_t(bytes), st));
#endif
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Host readbacks

namespace {

Status readback_checks(const Buffer& src, int device, int64_t offset, int64_t bytes,
                       int64_t capacity, bool pending) {
  G3_RETURN_IF_ERROR(check_range(src, offset, bytes, "readback"));
  if (src.device() != device)
    return Status(StatusCode::kDevice, "readback: a buffer on " + device_name(src.device()) +
                                           " into a readback of " + device_name(device));
  if (bytes > capacity)
    return Status(StatusCode::kOutOfRange, "readback: " + std::to_string(bytes) +
                                               " bytes exceed its capacity of " +
                                               std::to_string(capacity));
  if (pending)
    return Status(StatusCode::kInvalidArgument,
                  "readback: the previous read was not waited for (one read in flight)");
  return Status::Ok();
}

Status readback_wait_checks(bool pending, int64_t enqueued, int64_t bytes) {
  if (!pending) return Status(StatusCode::kInvalidArgument, "readback: no read enqueued");
  if (bytes != enqueued)
    return Status(StatusCode::kInvalidArgument, "readback: waiting for " + std::to_string(bytes) +
                                                    " bytes, " + std::to_string(enqueued) +
                                                    " were enqueued");
  return Status::Ok();
}

// CPU: the copy is a task on the worker thread; wait() waits for that task, not for the queue.
class CpuReadback : public HostReadback {
 public:
  explicit CpuReadback(int64_t capacity) : st_(std::make_shared<State>()) {
    st_->data.resize(size_t(capacity));
  }
  Status enqueue(const std::shared_ptr<Buffer>& src, int64_t offset, int64_t bytes) override {
    // A capture would record the copy instead of running it now: wait for one on another thread
    // to end (refused on the capturing thread), as copy_to_host does.
    GateScope gate(kCpu, "readback");
    G3_RETURN_IF_ERROR(gate.status());
    {
      std::lock_guard<std::mutex> lk(st_->mu);
      G3_RETURN_IF_ERROR(
          readback_checks(*src, kCpu, offset, bytes, int64_t(st_->data.size()), st_->pending));
      st_->pending = true;
      st_->done = false;
      st_->bytes = bytes;
    }
    auto st = st_;
    const char* p = static_cast<const char*>(src->data()) + offset;
    Status s = cpu_submit([st, src, p, bytes] {
      std::memcpy(st->data.data(), p, size_t(bytes));
      // An earlier queued op failed: its output (what was copied) cannot be trusted.
      Status e = cpu_stream().error();
      std::lock_guard<std::mutex> lk(st->mu);
      st->status = e;
      st->done = true;
      st->cv.notify_all();
      return Status::Ok();
    });
    if (!s.ok()) {
      std::lock_guard<std::mutex> lk(st_->mu);
      st_->pending = false;
    }
    return s;
  }
  Status wait(void* dst, int64_t bytes) override {
    std::unique_lock<std::mutex> lk(st_->mu);
    G3_RETURN_IF_ERROR(readback_wait_checks(st_->pending, st_->bytes, bytes));
    st_->cv.wait(lk, [this] { return st_->done; });
    st_->pending = false;
    if (!st_->status.ok()) return st_->status;
    std::memcpy(dst, st_->data.data(), size_t(bytes));
    return Status::Ok();
  }
  int device() const override { return kCpu; }

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<char> data;
    bool pending = false, done = false;
    int64_t bytes = 0;
    Status status;
  };
  // Shared with the queued task, which may outlive this object.
  std::shared_ptr<State> st_;
};

#ifdef GEMMA3_WITH_CUDA
// CUDA: an async copy into pinned memory and an event recorded after it; wait() synchronizes on
// the event only, so the ops enqueued later keep running.
class CudaReadback : public HostReadback {
 public:
  CudaReadback(int device, int64_t capacity) : device_(device), capacity_(capacity) {}
  ~CudaReadback() override {
    // cudaFreeHost waits for the device, so a copy still in flight never writes freed memory.
    if (event_ != nullptr) cudaEventDestroy(event_);
    if (host_ != nullptr) cudaFreeHost(host_);
  }
  Status init() {
    cudaStream_t s;
    G3_RETURN_IF_ERROR(get_stream(device_, &s));  // makes the device current
    G3_CUDA_RETURN(
        cudaHostAlloc(&host_, size_t(std::max<int64_t>(capacity_, 1)), cudaHostAllocDefault));
    G3_CUDA_RETURN(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
    return Status::Ok();
  }
  Status enqueue(const std::shared_ptr<Buffer>& src, int64_t offset, int64_t bytes) override {
    GateScope gate(device_, "readback");  // as CpuReadback::enqueue
    G3_RETURN_IF_ERROR(gate.status());
    std::lock_guard<std::mutex> lk(mu_);
    G3_RETURN_IF_ERROR(readback_checks(*src, device_, offset, bytes, capacity_, pending_));
    cudaStream_t s;
    G3_RETURN_IF_ERROR(get_stream(device_, &s));
    const char* p = static_cast<const char*>(src->data()) + offset;
    if (bytes > 0)
      G3_CUDA_RETURN(cudaMemcpyAsync(host_, p, size_t(bytes), cudaMemcpyDeviceToHost, s));
    G3_CUDA_RETURN(cudaEventRecord(event_, s));
    pending_ = true;
    bytes_ = bytes;
    return Status::Ok();
  }
  Status wait(void* dst, int64_t bytes) override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      G3_RETURN_IF_ERROR(readback_wait_checks(pending_ && !waiting_, bytes_, bytes));
      waiting_ = true;
    }
    // Not under mu_: an enqueue meanwhile is refused (pending), not blocked.
    Status st = [&]() -> Status {
      // As copy_to_host: a host wait waits for a capture of the device to end.
      GateScope gate(device_, "readback");
      G3_RETURN_IF_ERROR(gate.status());
      G3_CUDA_RETURN(cudaEventSynchronize(event_));
      std::memcpy(dst, host_, size_t(bytes));
      return Status::Ok();
    }();
    std::lock_guard<std::mutex> lk(mu_);
    waiting_ = pending_ = false;
    return st;
  }
  int device() const override { return device_; }

 private:
  int device_;
  int64_t capacity_;
  void* host_ = nullptr;
  cudaEvent_t event_ = nullptr;
  std::mutex mu_;
  bool pending_ = false, waiting_ = false;
  int64_t bytes_ = 0;
};
#endif

}  // namespace

Status HostReadback::create(int device, int64_t capacity, std::unique_ptr<HostReadback>* out) {
  G3_RETURN_IF_ERROR(check_device(device));
  if (capacity < 0) return Status(StatusCode::kInvalidArgument, "readback: negative capacity");
  if (device == kCpu) {
    *out = std::make_unique<CpuReadback>(capacity);
    return Status::Ok();
  }
#ifdef GEMMA3_WITH_CUDA
  auto r = std::make_unique<CudaReadback>(device, capacity);
  G3_RETURN_IF_ERROR(r->init());
  *out = std::move(r);
  return Status::Ok();
#else
  return Status(StatusCode::kDevice, "readback: built without CUDA");
#endif
}

// ---------------------------------------------------------------------------------------------
// Graphs

namespace {

class CpuGraph : public Graph {
 public:
  explicit CpuGraph(std::vector<Task> tasks)
      : tasks_(std::make_shared<std::vector<Task>>(std::move(tasks))) {}
  Status launch() override {
    if (cpu_stream().capturing())
      return Status(StatusCode::kInvalidArgument, "graph launch during a capture");
    auto tasks = tasks_;
    return cpu_submit([tasks] {
      for (auto& t : *tasks) G3_RETURN_IF_ERROR(t());
      return Status::Ok();
    });
  }
  int device() const override { return kCpu; }
  int64_t num_nodes() const override { return int64_t(tasks_->size()); }

 private:
  std::shared_ptr<std::vector<Task>> tasks_;
};

#ifdef GEMMA3_WITH_CUDA
class CudaGraph : public Graph {
 public:
  CudaGraph(int device, cudaGraph_t g, cudaGraphExec_t e, int64_t nodes)
      : device_(device), graph_(g), exec_(e), nodes_(nodes) {}
  ~CudaGraph() override {
    cudaSetDevice(device_);
    cudaGraphExecDestroy(exec_);
    cudaGraphDestroy(graph_);
    cudaGetLastError();
  }
  Status launch() override {
    cudaStream_t s;
    G3_RETURN_IF_ERROR(get_stream(device_, &s));
    G3_CUDA_RETURN(cudaGraphLaunch(exec_, s));
    return Status::Ok();
  }
  int device() const override { return device_; }
  int64_t num_nodes() const override { return nodes_; }

 private:
  int device_;
  cudaGraph_t graph_;
  cudaGraphExec_t exec_;
  int64_t nodes_;
};
#endif

}  // namespace

namespace {

// The stream side of graph_begin_capture.
Status begin_capture_stream(int device) {
  if (device == kCpu) return cpu_stream().begin_capture();
#ifdef GEMMA3_WITH_CUDA
  cudaStream_t s;
  G3_RETURN_IF_ERROR(get_stream(device, &s));
  {
    std::lock_guard<std::mutex> lk(cuda_mu);
    if (cuda_states()[size_t(device)].capturing)
      return Status(StatusCode::kInvalidArgument, device_name(device) + ": a capture is active");
  }
  // ThreadLocal: other threads' CUDA calls never touch our captures. GEMMA3_CAPTURE_MODE=relaxed
  // or global picks the other CUDA modes (diagnosing a library whose calls invalidate a capture).
  static const cudaStreamCaptureMode mode = [] {
    const char* v = std::getenv("GEMMA3_CAPTURE_MODE");
    if (v != nullptr && std::strcmp(v, "relaxed") == 0) return cudaStreamCaptureModeRelaxed;
    if (v != nullptr && std::strcmp(v, "global") == 0) return cudaStreamCaptureModeGlobal;
    return cudaStreamCaptureModeThreadLocal;
  }();
  G3_CUDA_RETURN(cudaStreamBeginCapture(s, mode));
  std::lock_guard<std::mutex> lk(cuda_mu);
  cuda_states()[size_t(device)].capturing = true;
#endif
  return Status::Ok();
}

}  // namespace

Status graph_begin_capture(int device) {
  G3_RETURN_IF_ERROR(check_device(device));
  if (graph_capturing(device))
    return Status(StatusCode::kInvalidArgument, device_name(device) + ": a capture is active");
  capture_gate().begin(device);  // after the reads in flight; see CaptureGate
  Status st = begin_capture_stream(device);
  if (!st.ok()) capture_gate().end(device);
  return st;
}

Status graph_end_capture(int device, std::unique_ptr<Graph>* out) {
  G3_RETURN_IF_ERROR(check_device(device));
  if (device == kCpu) {
    std::vector<Task> tasks;
    G3_RETURN_IF_ERROR(cpu_stream().end_capture(&tasks));
    capture_gate().end(device);  // the capture is over: waiting reads may run
    out->reset(new CpuGraph(std::move(tasks)));
    return Status::Ok();
  }
#ifdef GEMMA3_WITH_CUDA
  cudaStream_t s;
  G3_RETURN_IF_ERROR(get_stream(device, &s));
  {
    std::lock_guard<std::mutex> lk(cuda_mu);
    if (!cuda_states()[size_t(device)].capturing)
      return Status(StatusCode::kInvalidArgument, device_name(device) + ": no capture is active");
    cuda_states()[size_t(device)].capturing = false;
  }
  cudaGraph_t g = nullptr;
  cudaError_t e = cudaStreamEndCapture(s, &g);
  capture_gate().end(device);  // the stream captures no more, whatever the outcome
  release_deferred(device);
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (g) cudaGraphDestroy(g);
    return cuda::cuda_status(e, "cudaStreamEndCapture (an op in the capture was not capturable)");
  }
  size_t nodes = 0;
  cudaGraphGetNodes(g, nullptr, &nodes);
  cudaGraphExec_t exec = nullptr;
  // Captures nest when several devices record at once (a tensor-parallel step: one graph per rank
  // device, every rank's stream capturing together). Instantiating the inner graph while the outer
  // capture runs is a call ThreadLocal mode forbids on this thread (measured on 2x H100:
  // cudaErrorStreamCaptureUnsupported, and the outer capture invalidated); it touches neither
  // capture, so the thread's mode is relaxed for this one call, as NCCL does around its own
  // allocations (cudaThreadExchangeStreamCaptureMode).
  cudaStreamCaptureMode relaxed = cudaStreamCaptureModeRelaxed;
  cudaThreadExchangeStreamCaptureMode(&relaxed);
  e = cudaGraphInstantiate(&exec, g, 0);
  cudaThreadExchangeStreamCaptureMode(&relaxed);  // back to the thread's previous mode
  if (e != cudaSuccess) {
    cudaGetLastError();
    cudaGraphDestroy(g);
    return cuda::cuda_status(e, "cudaGraphInstantiate");
  }
  out->reset(new CudaGraph(device, g, exec, int64_t(nodes)));
#endif
  return Status::Ok();
}

bool graph_capturing(int device) {
  if (device == kCpu) return cpu_stream().capturing();
#ifdef GEMMA3_WITH_CUDA
  if (device >= 0 && device < cuda_device_count()) {
    std::lock_guard<std::mutex> lk(cuda_mu);
    return cuda_states()[size_t(device)].capturing;
  }
#endif
  return false;
}

}  // namespace gemma3
