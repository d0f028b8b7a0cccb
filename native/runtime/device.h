// Devices, buffers, streams and graphs: the runtime under every op.
// Device index -1 is the CPU; 0..N-1 are CUDA devices. Every device has one in-order stream:
// CUDA ops go to a per-device cudaStream_t; CPU ops go to a worker thread that runs them in order,
// so the JS thread never waits for a kernel and both backends share one async contract.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/status.h"

namespace gemma3 {

constexpr int kCpu = -1;

std::string device_name(int device);  // "cpu", "cuda:0"
bool cuda_built();                    // compiled with the CUDA backend
int cuda_device_count();              // 0 when not built, no driver, or no GPU

struct DeviceInfo {
  std::string name;
  int64_t total_memory = 0;
  int sm_count = 0, cc_major = 0, cc_minor = 0;
  int64_t l2_bytes = 0;
};
Status device_info(int device, DeviceInfo* out);
Status memory_info(int device, int64_t* free_bytes, int64_t* total_bytes);
Status check_device(int device);  // E_DEVICE unless cpu or an existing CUDA device

// An owning allocation on one device. Freed when the last shared_ptr goes: queued CPU work and the
// JS handle both hold one, so disposing in JS never frees memory a queued op still reads.
class Buffer {
 public:
  static Status create(int device, int64_t bytes, std::shared_ptr<Buffer>* out);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* data() const { return data_; }
  int64_t size() const { return size_; }
  int device() const { return device_; }

 private:
  Buffer(int device, void* data, int64_t size, bool pooled)
      : device_(device), data_(data), size_(size), pooled_(pooled) {}
  int device_;
  void* data_;
  int64_t size_;
  bool pooled_;  // CUDA: from the device's stream-ordered pool (freed with cudaFreeAsync)
};

// ---- the per-device stream ----
using Task = std::function<Status()>;

// Enqueues a CPU task (cpu device only). While a capture is active on the CPU stream the task is
// recorded instead of run. The first failing task's Status is kept and reported by synchronize.
Status cpu_submit(Task task);

#ifdef GEMMA3_WITH_CUDA
// The device's stream (created on first use) with the device made current on this thread.
Status cuda_stream(int device, void** stream);
#endif

// Waits until every op enqueued on the device has run; returns the first deferred error.
Status synchronize(int device);

// Copies (all enqueued in stream order). Host memory passed to copy_from_host may be released as
// soon as the call returns. copy_to_host blocks until the bytes are in `dst` (call it off the JS
// thread). Buffer-to-buffer copies need both buffers on the same device.
Status copy_from_host(const std::shared_ptr<Buffer>& dst, int64_t dst_offset, const void* src,
                      int64_t bytes);
Status copy_to_host(const std::shared_ptr<Buffer>& src, int64_t src_offset, void* dst,
                    int64_t bytes);
Status copy_buffer(const std::shared_ptr<Buffer>& dst, int64_t dst_offset,
                   const std::shared_ptr<Buffer>& src, int64_t src_offset, int64_t bytes);
Status fill_bytes(const std::shared_ptr<Buffer>& dst, int64_t offset, int64_t bytes, uint8_t value);

// A device-to-host copy enqueued now, in stream order, and waited for on its own: wait() returns
// once the ops enqueued before enqueue() have run, not those enqueued after it (copy_to_host
// synchronizes the whole stream). Decode pipelining reads step N's tokens while step N+1 runs
// (vLLM's async scheduling). CUDA: pinned staging and an event; CPU: a task on the worker thread.
// One read in flight per readback: enqueue, wait, enqueue again.
class HostReadback {
 public:
  static Status create(int device, int64_t capacity, std::unique_ptr<HostReadback>* out);
  virtual ~HostReadback() = default;
  // Enqueues a copy of `bytes` (≤ capacity) of `src` from `offset`; refused during a capture.
  virtual Status enqueue(const std::shared_ptr<Buffer>& src, int64_t offset, int64_t bytes) = 0;
  // Blocks until the copy enqueued last is done, then copies its bytes to `dst` (off the JS
  // thread). `bytes` must be those enqueued.
  virtual Status wait(void* dst, int64_t bytes) = 0;
  virtual int device() const = 0;
};

// ---- graphs: record the ops of one stream once, replay them with one call ----
class Graph {
 public:
  virtual ~Graph() = default;
  virtual Status launch() = 0;
  virtual int device() const = 0;
  virtual int64_t num_nodes() const = 0;
};
Status graph_begin_capture(int device);
Status graph_end_capture(int device, std::unique_ptr<Graph>* out);
bool graph_capturing(int device);

}  // namespace gemma3
