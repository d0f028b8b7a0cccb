// Collectives of one process over a group of ranks, one device per rank (tensor parallelism):
// an in-place all-reduce (sum) and a column copy across devices. Two backends:
//   nccl: NCCL (built with GEMMA3_WITH_NCCL), distinct CUDA devices, ncclCommInitAll and one
//         ncclGroupStart/End per all-reduce over the devices' streams (NCCL's single-process,
//         multi-device pattern). NVLink multicast stays off (NCCL_NVLS_ENABLE=0 unless set).
//   host: everywhere else. CPU ranks (any number, all on the one CPU stream): a queued host sum.
//         CUDA ranks without NCCL: each device's stream drains, the bytes come to the host, are
//         summed there and go back: correct, blocking, slow (a fallback, not a fast path).
// Sum semantics (host): float32 accumulation in rank order, rounded once. NCCL sums pairwise in
// its ring order (bf16: rounded per step); identical results on every rank in both.
// Graph capture: an all-reduce issued while every rank's device is capturing is recorded into
// each rank's graph (NCCL: ncclGroupStart, one ncclAllReduce per rank stream, ncclGroupEnd, as
// NCCL's "Using NCCL with CUDA Graphs"; CPU ranks: the host sum is a task of the CPU stream's
// recorded list). The host fallback of CUDA ranks cannot be captured (graph_capturable() false).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "ops/tensor_ref.h"

namespace gemma3::ops {

class Communicator {
 public:
  // devices: the rank -> device map (kCpu for CPU ranks). All CPU, or distinct CUDA devices.
  // backend: "auto" (nccl when built, every rank is CUDA and GEMMA3_NCCL is not "0"; else host),
  // "nccl" (E_UNSUPPORTED when unavailable) or "host".
  static Status create(const std::vector<int>& devices, const std::string& backend,
                       std::unique_ptr<Communicator>* out);
  virtual ~Communicator() = default;

  virtual const char* backend() const = 0;
  const std::vector<int>& devices() const { return devices_; }
  int size() const { return int(devices_.size()); }

  // In place: every t[r] <- Σ_r t[r]. t[r] on devices()[r]; one shape and dtype (f32|bf16|f16);
  // no two tensors overlapping. Enqueued in stream order on every rank's device.
  Status all_reduce_sum(const std::vector<TensorRef>& t);

  // Whether all_reduce_sum may be issued while the ranks' devices capture a graph.
  virtual bool graph_capturable() const = 0;

  // Blocks until every rank's device has run all work queued on it (the first deferred error).
  // NCCL without graph mixing support (set off here, see collective.cc) forbids an eager
  // collective while a graph holding one is still running: callers that switch between replayed
  // and eager steps wait here first.
  Status wait_idle();

 protected:
  explicit Communicator(std::vector<int> devices) : devices_(std::move(devices)) {}
  virtual Status all_reduce_impl(const std::vector<TensorRef>& t) = 0;

 private:
  std::vector<int> devices_;
};

// dst[:, dst_col : dst_col + width] = src[:, src_col : src_col + width] (columns of the last dim).
// src: [rows, C_src], dst: [rows, C_dst] (leading dims flattened), same non-block dtype; devices
// may differ (CPU <-> CPU or CUDA <-> CUDA, see runtime/peer_copy.h).
Status copy_columns(const TensorRef& src, int64_t src_col, const TensorRef& dst, int64_t dst_col,
                    int64_t width);

}  // namespace gemma3::ops
