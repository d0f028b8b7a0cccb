#include "runtime/fault.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "runtime/device.h"

namespace gemma3::fault {
namespace {

constexpr int kSlots = 65;  // cpu (-1) + 64 CUDA devices
std::atomic<bool> g_any{false};
std::atomic<int64_t> g_alloc[kSlots];   // allocations left before the failure; -1 = none
std::atomic<int64_t> g_sticky[kSlots];  // launches left before the fault; -1 = none
std::atomic<int64_t> g_trap[kSlots];    // launches left before the real fault; -1 = none

int slot(int device) { return device + 1; }
bool valid(int device) { return device >= -1 && device < kSlots - 1; }

struct Init {
  Init() {
    for (int i = 0; i < kSlots; ++i) g_alloc[i] = -1, g_sticky[i] = -1, g_trap[i] = -1;
  }
} init_;

// GEMMA3_INJECT_FAULT="kind,device,after" (device -1 = cpu) arms a fault at load, for tests that
// drive a whole process (gemma3 serve); needs GEMMA3_FAULT_INJECTION=1 like inject().
struct FromEnv {
  FromEnv() {
    const char* spec = std::getenv("GEMMA3_INJECT_FAULT");
    if (spec == nullptr) return;
    char kind[16] = {0};
    int device = 0;
    long long after = 0;
    if (std::sscanf(spec, "%15[a-z],%d,%lld", kind, &device, &after) == 3)
      (void)inject(kind, device, int64_t(after));
  }
} from_env_;

}  // namespace

Status inject(const std::string& kind, int device, int64_t after) {
  const char* env = std::getenv("GEMMA3_FAULT_INJECTION");
  if (env == nullptr || std::strcmp(env, "1") != 0)
    return Status(StatusCode::kUnsupported,
                  "fault injection is off (run with GEMMA3_FAULT_INJECTION=1)");
  if (!valid(device)) return Status(StatusCode::kDevice, "fault injection: no such device");
  if (after < 0) return Status(StatusCode::kInvalidArgument, "fault injection: after must be >= 0");
  if (kind == "alloc") {
    g_alloc[slot(device)] = after;
  } else if (kind == "sticky") {
    g_sticky[slot(device)] = after;
  } else if (kind == "trap") {
    if (device < 0 || !cuda_built())
      return Status(StatusCode::kUnsupported, "fault injection: trap needs a CUDA device");
    g_trap[slot(device)] = after;
  } else if (kind == "clear") {
    g_alloc[slot(device)] = -1;
    g_sticky[slot(device)] = -1;
    g_trap[slot(device)] = -1;
  } else {
    return Status(StatusCode::kInvalidArgument,
                  "fault injection: kind is alloc, sticky, trap or clear");
  }
  g_any = true;
  return Status::Ok();
}

Status check_alloc(int device) {
  if (!g_any.load(std::memory_order_relaxed) || !valid(device)) return Status::Ok();
  auto& left = g_alloc[slot(device)];
  int64_t v = left.load();
  while (v >= 0) {
    if (left.compare_exchange_weak(v, v - 1)) {
      if (v == 0)
        return Status(StatusCode::kOutOfMemory,
                      "out of memory on " + device_name(device) + " (injected fault)");
      break;
    }
  }
  return Status::Ok();
}

Status check_launch(int device) {
  if (!g_any.load(std::memory_order_relaxed) || !valid(device)) return Status::Ok();
#ifdef GEMMA3_WITH_CUDA
  auto& trap = g_trap[slot(device)];
  for (int64_t t = trap.load(); t >= 0;) {
    if (trap.compare_exchange_weak(t, t - 1)) {
      if (t == 0) G3_RETURN_IF_ERROR(launch_trap(device));
      break;
    }
  }
#endif
  auto& left = g_sticky[slot(device)];
  int64_t v = left.load();
  while (v >= 0) {
    if (v == 0)
      return Status(StatusCode::kCudaSticky,
                    device_name(device) +
                        ": injected sticky device fault (the device is unusable; restart the "
                        "process)");
    if (left.compare_exchange_weak(v, v - 1)) break;
  }
  return Status::Ok();
}

}  // namespace gemma3::fault
