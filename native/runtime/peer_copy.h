// Pitched copies between buffers, also across devices: rows of `width` bytes from src (rows
// `src_pitch` bytes apart) to dst (rows `dst_pitch` apart). Tensor parallelism gathers each rank's
// vocabulary columns of the logits onto one device with it, and hands image features to every rank.
#pragma once
#include <cstdint>
#include <memory>

#include "runtime/device.h"

namespace gemma3 {

// Enqueued in stream order on both sides: the copy waits for the work already enqueued on src's
// device, and later work on src's device waits for the copy (so neither side may overwrite what the
// other still uses). CPU <-> CPU and CUDA <-> CUDA (peer copies, staged by the driver where the
// GPUs have no peer access); CPU <-> CUDA is E_DEVICE. Cross-device copies refuse graph capture.
Status copy_2d(const std::shared_ptr<Buffer>& dst, int64_t dst_offset, int64_t dst_pitch,
               const std::shared_ptr<Buffer>& src, int64_t src_offset, int64_t src_pitch,
               int64_t width, int64_t rows);

// Lets each CUDA device of `devices` read the others' memory directly where the hardware can
// (NVLink / PCIe P2P); copies work without it, through the host. Best effort: never fails.
void enable_peer_access(const int* devices, int n);

}  // namespace gemma3
