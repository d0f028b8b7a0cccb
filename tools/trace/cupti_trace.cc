// A CUDA injection library that records every kernel's start and end (CUPTI activity records,
// concurrent-kernel kind: kernels are not serialized, so PDL and graph overlaps stay as they run)
// and writes them as CSV at exit. Session 13: the in-graph timeline of a decode step, which ncu
// (one kernel at a time) cannot show and nsys (absent on the device machines) would.
//   g++ -O2 -shared -fPIC -I$CUDA/include tools/trace/cupti_trace.cc -o /tmp/libg3trace.so \
//     -L$CUDA/lib64 -lcupti
//   CUDA_INJECTION64_PATH=/tmp/libg3trace.so G3_TRACE_OUT=trace.csv node ...
// Columns: correlation (the launch: one graph launch's kernels share it), graph node, start and
// end (ns, GPU clock), grid, block, registers, name (demangled, truncated).
#include <cupti.h>
#include <cxxabi.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct Rec {
  uint32_t corr;
  uint64_t node, start, end;
  int gx, bx, regs;
  std::string name;
};
std::mutex mu;
std::vector<Rec> recs;

void CUPTIAPI requested(uint8_t** buf, size_t* size, size_t* max_records) {
  *size = 8 << 20;
  *buf = static_cast<uint8_t*>(aligned_alloc(8, *size));
  *max_records = 0;
}

void CUPTIAPI completed(CUcontext, uint32_t, uint8_t* buf, size_t, size_t valid) {
  CUpti_Activity* r = nullptr;
  std::lock_guard<std::mutex> lock(mu);
  while (cuptiActivityGetNextRecord(buf, valid, &r) == CUPTI_SUCCESS) {
    if (r->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && r->kind != CUPTI_ACTIVITY_KIND_KERNEL)
      continue;
    auto* k = reinterpret_cast<CUpti_ActivityKernel10*>(r);
    int st = 0;
    char* dm = abi::__cxa_demangle(k->name, nullptr, nullptr, &st);
    std::string name = st == 0 && dm ? dm : k->name;
    free(dm);
    if (name.size() > 160) name.resize(160);
    for (char& c : name)
      if (c == ',') c = ';';
    recs.push_back({k->correlationId, k->graphNodeId, k->start, k->end, k->gridX, k->blockX,
                    k->registersPerThread, name});
  }
  free(buf);
}

void dump() {
  cuptiActivityFlushAll(1);
  const char* path = getenv("G3_TRACE_OUT");
  FILE* f = fopen(path ? path : "g3trace.csv", "w");
  if (!f) return;
  fprintf(f, "corr,node,start,end,grid,block,regs,name\n");
  std::lock_guard<std::mutex> lock(mu);
  for (const Rec& r : recs)
    fprintf(f, "%u,%llu,%llu,%llu,%d,%d,%d,%s\n", r.corr, (unsigned long long)r.node,
            (unsigned long long)r.start, (unsigned long long)r.end, r.gx, r.bx, r.regs,
            r.name.c_str());
  fclose(f);
}

}  // namespace

extern "C" int InitializeInjection(void) {
  if (cuptiActivityRegisterCallbacks(requested, completed) != CUPTI_SUCCESS) return 0;
  if (cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS) return 0;
  atexit(dump);
  return 1;
}
