#include "runtime/peer_copy.h"

#include <cstring>
#include <string>

#ifdef GEMMA3_WITH_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#endif

namespace gemma3 {

namespace {
Status check_span(const Buffer& b, int64_t offset, int64_t pitch, int64_t width, int64_t rows,
                  const char* what) {
  if (offset < 0 || pitch < width || width < 0 || rows < 0)
    return Status(StatusCode::kInvalidArgument,
                  std::string("copy_2d: ") + what + " offset " + std::to_string(offset) +
                      ", pitch " + std::to_string(pitch) + ", width " + std::to_string(width) +
                      ", rows " + std::to_string(rows) + " (need pitch >= width >= 0, rows >= 0)");
  if (rows == 0 || width == 0) return Status::Ok();
  const int64_t end = offset + (rows - 1) * pitch + width;  // one past the last byte touched
  if (end > b.size())
    return Status(StatusCode::kOutOfRange, std::string("copy_2d: ") + what + " rows end at byte " +
                                               std::to_string(end) + ", past a buffer of " +
                                               std::to_string(b.size()) + " bytes");
  return Status::Ok();
}
}  // namespace

Status copy_2d(const std::shared_ptr<Buffer>& dst, int64_t dst_offset, int64_t dst_pitch,
               const std::shared_ptr<Buffer>& src, int64_t src_offset, int64_t src_pitch,
               int64_t width, int64_t rows) {
  G3_RETURN_IF_ERROR(check_span(*dst, dst_offset, dst_pitch, width, rows, "dst"));
  G3_RETURN_IF_ERROR(check_span(*src, src_offset, src_pitch, width, rows, "src"));
  const int dd = dst->device(), sd = src->device();
  if ((dd == kCpu) != (sd == kCpu))
    return Status(StatusCode::kDevice, "copy_2d: " + device_name(sd) + " -> " + device_name(dd) +
                                           " (ranks must be all CPU or all CUDA)");
  if (rows == 0 || width == 0) return Status::Ok();
  char* d = static_cast<char*>(dst->data()) + dst_offset;
  const char* s = static_cast<const char*>(src->data()) + src_offset;
  if (dd == kCpu) {
    return cpu_submit([dst, src, d, s, dst_pitch, src_pitch, width, rows] {
      for (int64_t r = 0; r < rows; ++r)
        std::memmove(d + r * dst_pitch, s + r * src_pitch, size_t(width));
      return Status::Ok();
    });
  }
#ifdef GEMMA3_WITH_CUDA
  void* dsp = nullptr;
  G3_RETURN_IF_ERROR(cuda_stream(dd, &dsp));
  cudaStream_t ds = static_cast<cudaStream_t>(dsp);
  if (dd == sd) {
    G3_CUDA_RETURN(cudaMemcpy2DAsync(d, size_t(dst_pitch), s, size_t(src_pitch), size_t(width),
                                     size_t(rows), cudaMemcpyDeviceToDevice, ds));
    return Status::Ok();
  }
  if (graph_capturing(dd) || graph_capturing(sd))
    return Status(StatusCode::kInvalidArgument,
                  "copy_2d: a copy across devices cannot be graph-captured");
  void* ssp = nullptr;
  G3_RETURN_IF_ERROR(cuda_stream(sd, &ssp));
  cudaStream_t ss = static_cast<cudaStream_t>(ssp);
  // src ready -> copy on dst's stream -> src's stream waits for the copy before reusing its memory.
  // Events are released by the driver once they complete (cudaEventDestroy may be called at once).
  cudaEvent_t ready = nullptr, done = nullptr;
  G3_CUDA_RETURN(cudaSetDevice(sd));
  G3_CUDA_RETURN(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  cudaError_t e = cudaEventRecord(ready, ss);
  if (e == cudaSuccess) {
    e = cudaSetDevice(dd);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(ds, ready, 0);
  }
  cudaEventDestroy(ready);
  G3_CUDA_RETURN(e);
  cudaMemcpy3DPeerParms p;
  std::memset(&p, 0, sizeof p);
  p.srcPtr =
      make_cudaPitchedPtr(const_cast<char*>(s), size_t(src_pitch), size_t(width), size_t(rows));
  p.srcDevice = sd;
  p.dstPtr = make_cudaPitchedPtr(d, size_t(dst_pitch), size_t(width), size_t(rows));
  p.dstDevice = dd;
  p.extent = make_cudaExtent(size_t(width), size_t(rows), 1);
  if (width == src_pitch && width == dst_pitch) {
    G3_CUDA_RETURN(cudaMemcpyPeerAsync(d, dd, s, sd, size_t(width * rows), ds));
  } else if (cudaMemcpy3DPeerAsync(&p, ds) != cudaSuccess) {
    cudaGetLastError();  // a pitched peer copy the driver refuses: one peer copy per row instead
    for (int64_t r = 0; r < rows; ++r)
      G3_CUDA_RETURN(
          cudaMemcpyPeerAsync(d + r * dst_pitch, dd, s + r * src_pitch, sd, size_t(width), ds));
  }
  G3_CUDA_RETURN(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  e = cudaEventRecord(done, ds);
  if (e == cudaSuccess) {
    e = cudaSetDevice(sd);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(ss, done, 0);
  }
  cudaEventDestroy(done);
  G3_CUDA_RETURN(e);
  return Status::Ok();
#else
  return Status(StatusCode::kDevice, "CUDA backend not built");
#endif
}

void enable_peer_access(const int* devices, int n) {
#ifdef GEMMA3_WITH_CUDA
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      const int a = devices[i], b = devices[j];
      if (a < 0 || b < 0 || a == b) continue;
      int can = 0;
      if (cudaDeviceCanAccessPeer(&can, a, b) != cudaSuccess || !can) {
        cudaGetLastError();
        continue;
      }
      if (cudaSetDevice(a) == cudaSuccess) cudaDeviceEnablePeerAccess(b, 0);
      cudaGetLastError();  // cudaErrorPeerAccessAlreadyEnabled is fine
    }
#else
  (void)devices;
  (void)n;
#endif
}

}  // namespace gemma3
