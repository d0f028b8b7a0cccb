// Standalone kernel benchmarks: every gemma3::cuda launcher at Gemma 3 shapes, timed with CUDA
// events (median, p10, p90 per iteration), against cuBLAS where it has a peer and against a
// roofline. Plain executable, no Node. Usage and column meanings: native/bench/README.md.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/pdl.cuh"
#include "runtime/dtype.h"
#include "runtime/kquant.h"
#include "runtime/status.h"

#if __has_include("kernels/cuda/attention_decode.h")
#include "kernels/cuda/attention_decode.h"
#else
namespace gemma3::cuda {
// Floats of split-KV scratch attention_decode needs (defined with the decode kernel).
int64_t attention_decode_workspace_floats(int64_t batch, int64_t num_qo_heads, int64_t head_dim,
                                          int64_t max_kv_len);
}  // namespace gemma3::cuda
#endif

#ifdef GEMMA3_WITH_CUBLAS
#include <cublas_v2.h>
#endif

namespace {

using gemma3::bf16;
using gemma3::block_q4_0;
using gemma3::block_q4_0s;
using gemma3::block_q4_K;
using gemma3::block_q6_K;
using gemma3::block_q8_0;
using gemma3::block_q8_0s;
using gemma3::fp8e4m3;
using gemma3::Status;
namespace gk = gemma3::cuda;

// ---------------------------------------------------------------- errors ----
// A failed setup call or launcher ends its row (reported as an error), never the whole run.
struct BenchError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void check_cuda(cudaError_t e, const char* what, int line) {
  if (e == cudaSuccess) return;
  throw BenchError(std::string(what) + " (line " + std::to_string(line) +
                   "): " + cudaGetErrorName(e) + " " + cudaGetErrorString(e));
}
#define CK(expr) check_cuda((expr), #expr, __LINE__)

void check_status(const Status& st) {
  if (!st.ok())
    throw BenchError(std::string(gemma3::status_code_name(st.code)) + ": " + st.message);
}

#ifdef GEMMA3_WITH_CUBLAS
void check_cublas(cublasStatus_t s, const char* what, int line) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  throw BenchError(std::string(what) + " (line " + std::to_string(line) +
                   "): " + cublasGetStatusString(s));
}
#define CKB(expr) check_cublas((expr), #expr, __LINE__)
#endif

// ---------------------------------------------------------------- memory ----
// Owning device buffer of n elements of T (movable, not copyable).
template <typename T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  DevBuf() = default;
  explicit DevBuf(size_t count) : n(count) {
    if (count) CK(cudaMalloc(reinterpret_cast<void**>(&p), count * sizeof(T)));
  }
  DevBuf(DevBuf&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr, o.n = 0; }
  DevBuf& operator=(DevBuf&& o) noexcept {
    std::swap(p, o.p);
    std::swap(n, o.n);
    return *this;
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  ~DevBuf() {
    if (!p) return;
    cudaError_t e = cudaFree(p);  // a destructor cannot throw: report and go on
    if (e != cudaSuccess) std::fprintf(stderr, "cudaFree: %s\n", cudaGetErrorString(e));
  }
  size_t bytes() const { return n * sizeof(T); }
};

template <typename T>
DevBuf<T> upload(const std::vector<T>& h, cudaStream_t s) {
  DevBuf<T> d(h.size());
  // Pageable source: returns once staged, so `h` may die; ordered on `s` before its use.
  CK(cudaMemcpyAsync(d.p, h.data(), d.bytes(), cudaMemcpyHostToDevice, s));
  return d;
}

// ------------------------------------------------------------ random data ----
__host__ __device__ inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// out[i] = T(N(0,1) * scale) by Box-Muller on a counter hash: deterministic, no state.
template <typename T>
__global__ void fill_normal_kernel(T* out, int64_t n, uint64_t seed, float scale) {
  int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    uint64_t h = splitmix64(seed ^ splitmix64(uint64_t(i)));
    float u1 = (float((h >> 40) & 0xffffff) + 1.0f) * (1.0f / 16777217.0f);  // (0, 1]
    float u2 = float((h >> 8) & 0xffffff) * (1.0f / 16777216.0f);
    float z = sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
    out[i] = gemma3::from_f32<T>(z * scale);
  }
}

// out[i] = uniform int in [0, range).
__global__ void fill_index_kernel(int32_t* out, int64_t n, uint64_t seed, int64_t range) {
  int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = int32_t(splitmix64(seed ^ splitmix64(uint64_t(i))) % uint64_t(range));
}

uint64_t g_seed = 0x5eed;  // bumped per fill so every buffer holds different data

int fill_grid(int64_t n) { return int(std::min<int64_t>((n + 255) / 256, 8192)); }

template <typename T>
void fill_normal(T* p, int64_t n, float scale, cudaStream_t s) {
  if (n == 0) return;
  fill_normal_kernel<T><<<fill_grid(n), 256, 0, s>>>(p, n, splitmix64(++g_seed), scale);
  CK(cudaGetLastError());
}

void fill_index(int32_t* p, int64_t n, int64_t range, cudaStream_t s) {
  if (n == 0) return;
  fill_index_kernel<<<fill_grid(n), 256, 0, s>>>(p, n, splitmix64(++g_seed), range);
  CK(cudaGetLastError());
}

// -------------------------------------------------------------- options ----
struct Options {
  std::string json_path, md_path, filter, commit;
  int iters = 50, warmup = 10, device = 0;
  double peak_gbs = 0;           // 0: the card's theoretical × 2990 / 3352 (README: why)
  double peak_tflops = 800.0;    // achievable dense bf16 tensor-core rate (README: why not 989)
  double graph_below_us = 20.0;  // launches faster than this are timed in CUDA graphs
  bool list = false;
};

struct DeviceInfo {
  std::string name;
  int sms = 0, sm_clock_mhz = 0, mem_clock_mhz = 0, bus_width = 0, cc_major = 0, cc_minor = 0;
  int64_t l2_bytes = 0, mem_bytes = 0;
  double theoretical_gbs = 0;
  int driver = 0, runtime = 0;
};

// Weight/activation copies rotated per iteration so their total is at least 2x L2: each launch
// then reads DRAM, as a decode step does. Small per-launch footprints (< 1 MiB) stay in L2 as they
// do in a model, so they are not rotated.
int64_t g_l2_bytes = 50ll << 20;
int rotation_copies(double bytes_per_launch) {
  if (bytes_per_launch < double(1 << 20)) return 1;
  double c = std::ceil(2.0 * double(g_l2_bytes) / bytes_per_launch);
  return int(std::clamp(c, 1.0, 256.0));
}

// ---------------------------------------------------------------- timing ----
struct Stats {
  double median = 0, p10 = 0, p90 = 0;
};

double percentile(const std::vector<double>& sorted, double q) {
  double pos = q * double(sorted.size() - 1);
  size_t lo = size_t(pos), hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - double(lo)) * (sorted[hi] - sorted[lo]);
}

Stats stats_of(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.median = percentile(v, 0.5), s.p10 = percentile(v, 0.1), s.p90 = percentile(v, 0.9);
  return s;
}

struct Timing {
  Stats st;              // per launch, µs
  double single_us = 0;  // median of individually event-timed launches (includes launch gaps)
  std::string mode;      // "events" or "graph xB"
};

// One launch of the op for iteration i (i picks the rotated buffer); throws BenchError on failure.
using LaunchFn = std::function<void(int64_t i)>;

constexpr double kGraphTargetUs = 200.0;

struct EventPool {
  std::vector<cudaEvent_t> ev;
  explicit EventPool(size_t n) : ev(n, nullptr) {
    for (auto& e : ev) CK(cudaEventCreate(&e));
  }
  ~EventPool() {
    for (auto e : ev)
      if (e) cudaEventDestroy(e);  // teardown: nothing left to report to
  }
};

// Back-to-back launches with an event between each: sample i = e[i+1] - e[i].
std::vector<double> time_events(const LaunchFn& f, int iters, int64_t first, cudaStream_t s) {
  EventPool pool(size_t(iters) + 1);
  CK(cudaEventRecord(pool.ev[0], s));
  for (int i = 0; i < iters; ++i) {
    f(first + i);
    CK(cudaEventRecord(pool.ev[size_t(i) + 1], s));
  }
  CK(cudaStreamSynchronize(s));
  std::vector<double> us(static_cast<size_t>(iters));
  for (int i = 0; i < iters; ++i) {
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, pool.ev[size_t(i)], pool.ev[size_t(i) + 1]));
    us[size_t(i)] = double(ms) * 1e3;
  }
  return us;
}

struct GraphExec {
  cudaGraph_t g = nullptr;
  cudaGraphExec_t ge = nullptr;
  ~GraphExec() {
    if (ge) cudaGraphExecDestroy(ge);
    if (g) cudaGraphDestroy(g);
  }
};

// Captures `batch` launches (i = 0..batch-1, so every rotated buffer is used) into one graph and
// times `iters` replays: sample = replay time / batch. Returns false when capture is refused.
bool time_graph(const LaunchFn& f, int batch, int iters, cudaStream_t s, std::vector<double>* us,
                std::string* why) {
  GraphExec gx;
  CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  try {
    for (int j = 0; j < batch; ++j) f(j);
  } catch (const BenchError& e) {
    cudaGraph_t dead = nullptr;
    cudaStreamEndCapture(s, &dead);  // ends the (invalidated) capture; its error is the one below
    if (dead) cudaGraphDestroy(dead);
    cudaGetLastError();  // clear the capture error so later rows start clean
    *why = e.what();
    return false;
  }
  cudaError_t end = cudaStreamEndCapture(s, &gx.g);
  if (end != cudaSuccess) {
    cudaGetLastError();
    *why = std::string("cudaStreamEndCapture: ") + cudaGetErrorName(end);
    return false;
  }
  CK(cudaGraphInstantiate(&gx.ge, gx.g, 0));
  for (int w = 0; w < 2; ++w) CK(cudaGraphLaunch(gx.ge, s));
  EventPool pool(size_t(iters) + 1);
  CK(cudaEventRecord(pool.ev[0], s));
  for (int i = 0; i < iters; ++i) {
    CK(cudaGraphLaunch(gx.ge, s));
    CK(cudaEventRecord(pool.ev[size_t(i) + 1], s));
  }
  CK(cudaStreamSynchronize(s));
  us->assign(size_t(iters), 0.0);
  for (int i = 0; i < iters; ++i) {
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, pool.ev[size_t(i)], pool.ev[size_t(i) + 1]));
    (*us)[size_t(i)] = double(ms) * 1e3 / batch;
  }
  return true;
}

Timing time_launches(const LaunchFn& f, int copies, const Options& o, cudaStream_t s) {
  for (int i = 0; i < o.warmup; ++i) f(i);
  CK(cudaStreamSynchronize(s));
  CK(cudaGetLastError());
  Timing t;
  std::vector<double> single = time_events(f, o.iters, o.warmup, s);
  t.single_us = stats_of(single).median;
  if (t.single_us >= o.graph_below_us) {
    t.st = stats_of(single);
    t.mode = "events";
    return t;
  }
  // Short launches: CPU launch cost would dominate the events; a graph shows the GPU time.
  int batch = int(std::ceil(kGraphTargetUs / std::max(t.single_us, 0.5)));
  batch = std::clamp(std::max(batch, copies), 2, 1000);
  std::vector<double> us;
  std::string why;
  if (time_graph(f, batch, o.iters, s, &us, &why)) {
    t.st = stats_of(us);
    t.mode = "graph x" + std::to_string(batch);
  } else {
    t.st = stats_of(single);
    t.mode = "events (graph refused: " + why + ")";
  }
  return t;
}

// ------------------------------------------------------------------ rows ----
struct Row {
  std::string name, shape, dtype, impl = "gemma3";
  double median_us = 0, p10_us = 0, p90_us = 0, single_us = 0;
  std::string mode;
  double bytes = 0, flops = 0;  // per launch, for achieved and roofline
  double achieved = 0;
  std::string unit;               // "GB/s" or "TFLOP/s"
  double roofline_pct = 0;        // roofline time / measured time
  std::string peer;               // e.g. "cuBLAS bf16"
  double peer_us = 0, ratio = 0;  // ratio = peer_us / median_us (> 1: ours is faster)
  std::string peer_error, error;
  int copies = 1;
};

// Roofline time = max(flops / peak, bytes / bandwidth): min(P, AI * B) in time form.
void finish(Row& r, const Timing& t, const Options& o) {
  r.median_us = t.st.median, r.p10_us = t.st.p10, r.p90_us = t.st.p90;
  r.single_us = t.single_us, r.mode = t.mode;
  double sec = r.median_us * 1e-6;
  if (sec <= 0) return;
  r.achieved = r.unit == "TFLOP/s" ? r.flops / sec * 1e-12 : r.bytes / sec * 1e-9;
  double roof_s = std::max(r.flops / (o.peak_tflops * 1e12), r.bytes / (o.peak_gbs * 1e9));
  r.roofline_pct = 100.0 * roof_s / sec;
}

struct Ctx {
  Options opt;
  cudaStream_t stream = nullptr;
#ifdef GEMMA3_WITH_CUBLAS
  cublasHandle_t cublas = nullptr;
  DevBuf<uint8_t> cublas_ws;
  std::map<std::tuple<int64_t, int64_t, int64_t>, double> cublas_cache;  // (M, K, N) -> µs
#endif
};

struct Case {
  std::string name, shape, dtype;
  std::function<void(Ctx&, Row&)> run;
};

// ---------------------------------------------------------------- matmul ----
template <typename TW>
const char* wname() {
  if constexpr (std::is_same_v<TW, block_q8_0>) return "q8_0";
  if constexpr (std::is_same_v<TW, block_q4_0>) return "q4_0";
  if constexpr (std::is_same_v<TW, block_q4_0s>) return "q4_0s";
  if constexpr (std::is_same_v<TW, block_q8_0s>) return "q8_0s";
  if constexpr (std::is_same_v<TW, block_q4_K>) return "q4_k";
  if constexpr (std::is_same_v<TW, block_q6_K>) return "q6_k";
  if constexpr (std::is_same_v<TW, fp8e4m3>) return "fp8e4m3";
  return "bf16";
}

// Storage elements of TW for an [N, K] weight, and its bytes (fp8: + per-row f32 scales).
template <typename TW>
int64_t w_elems(int64_t N, int64_t K) {
  if constexpr (gemma3::is_kquant_v<TW>) return N * K / gemma3::kQK_K;
  return std::is_same_v<TW, block_q8_0> || std::is_same_v<TW, block_q4_0> ||
                 std::is_same_v<TW, block_q4_0s> || std::is_same_v<TW, block_q8_0s>
             ? N * K / gemma3::kQK
             : N * K;
}
template <typename TW>
double w_bytes(int64_t N, int64_t K) {
  return double(w_elems<TW>(N, K)) * sizeof(TW) + (std::is_same_v<TW, fp8e4m3> ? N * 4.0 : 0.0);
}

// Random [N, K] weights in format TW: bf16 ~ N(0,1)/sqrt(K), quantized from such bf16.
template <typename TW>
void make_weight(DevBuf<TW>* w, DevBuf<float>* scale, DevBuf<bf16>* tmp, int64_t N, int64_t K,
                 cudaStream_t s) {
  float sd = 1.0f / std::sqrt(float(K));
  *w = DevBuf<TW>(size_t(w_elems<TW>(N, K)));
  if constexpr (std::is_same_v<TW, bf16>) {
    fill_normal(w->p, N * K, sd, s);
  } else {
    if (!tmp->p) *tmp = DevBuf<bf16>(size_t(N * K));
    fill_normal(tmp->p, N * K, sd, s);
    if constexpr (std::is_same_v<TW, block_q4_0s> || std::is_same_v<TW, block_q8_0s>) {
      // GGUF blocks, repacked to the split row layout (ops.repack)
      using TB = std::conditional_t<std::is_same_v<TW, block_q4_0s>, block_q4_0, block_q8_0>;
      DevBuf<TB> q(size_t(N * K / gemma3::kQK));
      check_status(gk::quantize<bf16, TB>(tmp->p, q.p, nullptr, N, K, s));
      check_status(gk::repack_split(q.p, w->p, N, K, int(sizeof(TB)) - 2, true, s));
      CK(cudaStreamSynchronize(s));  // q is freed on return
    } else {
      if constexpr (std::is_same_v<TW, fp8e4m3>) *scale = DevBuf<float>(static_cast<size_t>(N));
      check_status(gk::quantize<bf16, TW>(tmp->p, w->p, scale->p, N, K, s));
    }
  }
}

void set_peer(Row& r, const char* peer, double peer_us) {
  r.peer = peer;
  r.peer_us = peer_us;
  r.ratio = r.median_us > 0 ? peer_us / r.median_us : 0;
}

#ifdef GEMMA3_WITH_CUBLAS

// y[M, N] = x[M, K] W[N, K]^T in cuBLAS column-major terms: y^T = W * x^T, i.e. TN with lda = K.
void cublas_matmul_bf16(Ctx& c, const bf16* x, const bf16* w, bf16* y, int64_t M, int64_t N,
                        int64_t K) {
  const float alpha = 1.0f, beta = 0.0f;
  CKB(cublasGemmEx(c.cublas, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(M), int(K), &alpha, w,
                   CUDA_R_16BF, int(K), x, CUDA_R_16BF, int(K), &beta, y, CUDA_R_16BF, int(N),
                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// cuBLAS bf16 at (M, K, N) on its own rotated bf16 weights; memoized across the formats.
double cublas_peer_us(Ctx& c, int64_t M, int64_t K, int64_t N) {
  auto key = std::make_tuple(M, K, N);
  auto it = c.cublas_cache.find(key);
  if (it != c.cublas_cache.end()) return it->second;
  cudaStream_t s = c.stream;
  int copies = rotation_copies(w_bytes<bf16>(N, K));
  std::vector<DevBuf<bf16>> w(static_cast<size_t>(copies));
  DevBuf<float> none;
  DevBuf<bf16> tmp;
  for (auto& wi : w) make_weight<bf16>(&wi, &none, &tmp, N, K, s);
  DevBuf<bf16> x(size_t(M * K)), y(size_t(M * N));
  fill_normal(x.p, M * K, 1.0f, s);
  Timing t = time_launches(
      [&](int64_t i) { cublas_matmul_bf16(c, x.p, w[size_t(i % copies)].p, y.p, M, N, K); }, copies,
      c.opt, s);
  c.cublas_cache[key] = t.st.median;
  return t.st.median;
}
#endif

template <typename TW>
// gelu: W is a [gate; up] projection and the op is matmul_gelu_mul (the gated-MLP epilogue at
// decode; GEMMA3_GELU_EPILOGUE=0 times matmul + gelu_mul instead).
void run_matmul(Ctx& c, Row& r, int64_t M, int64_t K, int64_t N, bool gelu = false) {
  cudaStream_t s = c.stream;
  double wb = w_bytes<TW>(N, K);
  // GEMV: effective GB/s counts the weight bytes only; GEMM: operands too, for the roofline.
  r.bytes = M == 1 ? wb : wb + double(M) * K * 2 + double(M) * N * 2;
  r.flops = 2.0 * M * N * K;
  r.unit = M == 1 ? "GB/s" : "TFLOP/s";
  int copies = rotation_copies(wb);
  r.copies = copies;
  std::vector<DevBuf<TW>> w(static_cast<size_t>(copies));
  std::vector<DevBuf<float>> sc(static_cast<size_t>(copies));
  {
    DevBuf<bf16> tmp;  // bf16 source of the quantized copies, freed before timing
    for (int i = 0; i < copies; ++i) make_weight<TW>(&w[size_t(i)], &sc[size_t(i)], &tmp, N, K, s);
    CK(cudaStreamSynchronize(s));
  }
  DevBuf<bf16> x(size_t(M * K)), y(size_t(M * N)), act(size_t(M * N / 2));
  fill_normal(x.p, M * K, 1.0f, s);
  Timing t = time_launches(
      [&](int64_t i) {
        size_t j = size_t(i % copies);
        if (gelu)
          check_status(
              gk::matmul_gelu_mul<bf16, TW>(x.p, w[j].p, sc[j].p, y.p, act.p, M, N / 2, K, s));
        else
          check_status(gk::matmul<bf16, TW>(x.p, w[j].p, sc[j].p, y.p, M, N, K, s));
      },
      copies, c.opt, s);
  finish(r, t, c.opt);
#ifdef GEMMA3_WITH_CUBLAS
  w.clear(), sc.clear();
  try {
    double peer = cublas_peer_us(c, M, K, N);
    set_peer(r, "cuBLAS bf16", peer);
  } catch (const BenchError& e) {
    r.peer = "cuBLAS bf16";
    r.peer_error = e.what();
  }
#endif
}

// ------------------------------------------------------------- attention ----
// Causal prefill of q_len queries (the last q_len positions, as a chunk of a longer prompt) over
// seq keys; q_len = seq is a whole prompt.
void run_prefill(Ctx& c, Row& r, int64_t h, int64_t kv, int64_t d, int64_t seq, int64_t q_len = 0) {
  cudaStream_t s = c.stream;
  if (q_len <= 0) q_len = seq;
  // QK^T and PV over the visible pairs: query i of the chunk sees seq - q_len + i + 1 keys (for
  // q_len = seq, the causal half plus the diagonal's half, which the rows have always left out).
  const double pairs = q_len == seq
                           ? double(seq) * seq / 2.0
                           : double(q_len) * (seq - q_len) + double(q_len) * (q_len + 1) / 2;
  r.flops = 2.0 * 2.0 * pairs * d * h;
  r.bytes = double(q_len) * 2 * h * d * 2 + double(seq) * 2 * kv * d * 2;
  r.unit = "TFLOP/s";
  DevBuf<bf16> q(size_t(q_len * h * d)), k(size_t(seq * kv * d)), v(size_t(seq * kv * d));
  DevBuf<bf16> out(size_t(q_len * h * d));
  fill_normal(q.p, q_len * h * d, 1.0f, s);
  fill_normal(k.p, seq * kv * d, 1.0f, s);
  fill_normal(v.p, seq * kv * d, 1.0f, s);
  DevBuf<int32_t> qo_indptr = upload(std::vector<int32_t>{0, int32_t(q_len)}, s);
  DevBuf<int32_t> kv_indptr = upload(std::vector<int32_t>{0, int32_t(seq)}, s);
  float sm_scale = 1.0f / std::sqrt(float(d));
  Timing t = time_launches(
      [&](int64_t) {
        check_status(gk::attention_prefill<bf16>(q.p, k.p, v.p, out.p, qo_indptr.p, kv_indptr.p,
                                                 nullptr, 1, q_len, seq, q_len, h, kv, d, h * d,
                                                 kv * d, kv * d, sm_scale, 0, true, s));
      },
      1, c.opt, s);
  finish(r, t, c.opt);
}

void run_decode(Ctx& c, Row& r, int64_t batch, int64_t h, int64_t kv, int64_t d, int64_t kv_len,
                int64_t page) {
  cudaStream_t s = c.stream;
  int64_t pps = (kv_len + page - 1) / page;  // pages per sequence
  int64_t pages = batch * pps;
  int64_t cache_elems = pages * page * kv * d;
  double kv_bytes = 2.0 * batch * kv_len * kv * d * 2;
  r.bytes = kv_bytes;  // effective KV GB/s, as flashinfer reports decode
  r.flops = 4.0 * batch * h * kv_len * d;
  r.unit = "GB/s";
  int copies = rotation_copies(kv_bytes);
  r.copies = copies;
  std::vector<DevBuf<bf16>> kc(static_cast<size_t>(copies)), vc(static_cast<size_t>(copies));
  for (int i = 0; i < copies; ++i) {
    kc[size_t(i)] = DevBuf<bf16>(static_cast<size_t>(cache_elems));
    vc[size_t(i)] = DevBuf<bf16>(static_cast<size_t>(cache_elems));
    fill_normal(kc[size_t(i)].p, cache_elems, 1.0f, s);
    fill_normal(vc[size_t(i)].p, cache_elems, 1.0f, s);
  }
  std::vector<int32_t> indptr(size_t(batch + 1)), indices(static_cast<size_t>(pages)),
      lens(static_cast<size_t>(batch));
  for (int64_t b = 0; b <= batch; ++b) indptr[size_t(b)] = int32_t(b * pps);
  for (int64_t p = 0; p < pages; ++p) indices[size_t(p)] = int32_t(p);  // contiguous pages
  for (int64_t b = 0; b < batch; ++b) lens[size_t(b)] = int32_t(kv_len);
  DevBuf<int32_t> d_indptr = upload(indptr, s), d_indices = upload(indices, s),
                  d_len = upload(lens, s);
  DevBuf<bf16> q(size_t(batch * h * d)), out(size_t(batch * h * d));
  fill_normal(q.p, batch * h * d, 1.0f, s);
  int64_t ws_floats = gk::attention_decode_workspace_floats(batch, h, d, kv_len);
  DevBuf<float> ws(size_t(std::max<int64_t>(ws_floats, 0)));
  float sm_scale = 1.0f / std::sqrt(float(d));
  Timing t = time_launches(
      [&](int64_t i) {
        size_t j = size_t(i % copies);
        check_status(gk::attention_decode<bf16, bf16>(
            q.p, kc[j].p, vc[j].p, out.p, d_indptr.p, d_indices.p, d_len.p, batch, h, kv, d, page,
            pages, pages, kv_len, sm_scale, 1.0f, 1.0f, 0, ws.p, int64_t(ws.n), s));
      },
      copies, c.opt, s);
  finish(r, t, c.opt);
}

// --------------------------------------------------------- memory-bound ----
// Rotated copies of a buffer of `elems` T, filled ~N(0,1).
template <typename T>
std::vector<DevBuf<T>> rotated(int copies, int64_t elems, cudaStream_t s) {
  std::vector<DevBuf<T>> v(static_cast<size_t>(copies));
  for (auto& b : v) {
    b = DevBuf<T>(static_cast<size_t>(elems));
    fill_normal(b.p, elems, 1.0f, s);
  }
  return v;
}

void run_rmsnorm(Ctx& c, Row& r, int64_t rows, int64_t dim) {
  cudaStream_t s = c.stream;
  r.bytes = (2.0 * rows * dim + dim) * 2;
  r.unit = "GB/s";
  int copies = rotation_copies(r.bytes);
  r.copies = copies;
  auto x = rotated<bf16>(copies, rows * dim, s);
  auto out = rotated<bf16>(copies, rows * dim, s);
  DevBuf<bf16> w(static_cast<size_t>(dim));
  fill_normal(w.p, dim, 0.1f, s);
  Timing t = time_launches(
      [&](int64_t i) {
        size_t j = size_t(i % copies);
        check_status(gk::rmsnorm<bf16>(x[j].p, w.p, out[j].p, rows, dim, 1e-6f, s));
      },
      copies, c.opt, s);
  finish(r, t, c.opt);
}

void run_rope(Ctx& c, Row& r, int64_t tokens, int64_t heads, int64_t hd) {
  cudaStream_t s = c.stream;
  r.bytes = 2.0 * tokens * heads * hd * 2 + tokens * 4.0;
  r.unit = "GB/s";
  int copies = rotation_copies(r.bytes);
  r.copies = copies;
  auto x = rotated<bf16>(copies, tokens * heads * hd, s);  // rotated in place: norms stay ~1
  DevBuf<int32_t> pos(static_cast<size_t>(tokens));
  fill_index(pos.p, tokens, 32768, s);
  Timing t = time_launches(
      [&](int64_t i) {
        check_status(gk::rope<bf16>(x[size_t(i % copies)].p, pos.p, tokens, heads, hd, heads * hd,
                                    1e6f, 1.0f, s));
      },
      copies, c.opt, s);
  finish(r, t, c.opt);
}

enum class RowOp { kSoftmax, kArgmax, kTopk };

void run_rowop(Ctx& c, Row& r, RowOp op, int64_t rows, int64_t cols, int64_t k) {
  cudaStream_t s = c.stream;
  double in = double(rows) * cols * 2;
  r.bytes = op == RowOp::kSoftmax  ? 2 * in
            : op == RowOp::kArgmax ? in + rows * 4.0
                                   : in + rows * k * 8.0;
  r.unit = "GB/s";
  int copies = rotation_copies(r.bytes);
  r.copies = copies;
  auto x = rotated<bf16>(copies, rows * cols, s);
  DevBuf<bf16> out(op == RowOp::kSoftmax ? size_t(rows * cols) : 0);
  DevBuf<int32_t> idx(size_t(rows * std::max<int64_t>(k, 1)));  // argmax: [rows]; topk: [rows, k]
  DevBuf<float> val(size_t(rows * k));
  Timing t = time_launches(
      [&](int64_t i) {
        const bf16* xi = x[size_t(i % copies)].p;
        if (op == RowOp::kSoftmax) check_status(gk::softmax<bf16>(xi, out.p, rows, cols, s));
        if (op == RowOp::kArgmax) check_status(gk::argmax<bf16>(xi, idx.p, rows, cols, s));
        if (op == RowOp::kTopk) check_status(gk::topk<bf16>(xi, val.p, idx.p, rows, cols, k, s));
      },
      copies, c.opt, s);
  finish(r, t, c.opt);
}

template <typename TW>
void run_embedding(Ctx& c, Row& r, int64_t n, int64_t dim, int64_t vocab) {
  cudaStream_t s = c.stream;
  double row_bytes = w_bytes<TW>(1, dim);
  r.bytes = n * (row_bytes + dim * 2.0) + n * 4.0;
  r.unit = "GB/s";
  DevBuf<TW> table;
  DevBuf<float> none;
  {
    DevBuf<bf16> tmp;
    make_weight<TW>(&table, &none, &tmp, vocab, dim, s);
    CK(cudaStreamSynchronize(s));
  }
  // Rotate the ids, not the table: fresh random rows each launch.
  int copies = rotation_copies(r.bytes);
  r.copies = copies;
  std::vector<DevBuf<int32_t>> ids(static_cast<size_t>(copies));
  for (auto& b : ids) {
    b = DevBuf<int32_t>(static_cast<size_t>(n));
    fill_index(b.p, n, vocab, s);
  }
  DevBuf<bf16> out(size_t(n * dim));
  float scale = gemma3::bf16_to_f32(gemma3::f32_to_bf16(std::sqrt(float(dim))));
  Timing t = time_launches(
      [&](int64_t i) {
        check_status(gk::embedding<TW, bf16>(ids[size_t(i % copies)].p, table.p, out.p, n, dim,
                                             vocab, scale, s));
      },
      copies, c.opt, s);
  finish(r, t, c.opt);
}

void run_gelu_mul(Ctx& c, Row& r, int64_t rows, int64_t cols) {
  cudaStream_t s = c.stream;
  r.bytes = 3.0 * rows * cols * 2;
  r.unit = "GB/s";
  int copies = rotation_copies(r.bytes);
  r.copies = copies;
  auto gu = rotated<bf16>(copies, rows * 2 * cols, s);  // fused [rows, 2*cols] gate|up
  auto out = rotated<bf16>(copies, rows * cols, s);
  Timing t = time_launches(
      [&](int64_t i) {
        size_t j = size_t(i % copies);
        const bf16* g = gu[j].p;
        check_status(gk::gelu_mul<bf16>(g, g + cols, out[j].p, rows, cols, 2 * cols, 2 * cols, s));
      },
      copies, c.opt, s);
  finish(r, t, c.opt);
}

// A decode layer's chain without attention, at M = 1: rmsnorm_add_rmsnorm -> QKV GEMV -> O GEMV
// (on the first q-width of the QKV output) -> rmsnorm_add_rmsnorm -> gate/up GEMV with gelu_mul
// (matmul_gelu_mul: one kernel, or two under GEMMA3_GELU_EPILOGUE=0) -> down GEMV, 6 (7) dependent
// kernels a launch. The layer's weights (189 MB at the 4B shape) exceed
// L2, so every launch streams them. Timed as one launch per layer (run it with --graph-below 1000
// to time graph replays, as the decode step runs): the row isolates what the boundaries between
// small dependent kernels cost (GEMMA3_PDL=0 vs 1 in two runs) from attention and the host.
// norms = false drops both rmsnorm_add_rmsnorm launches (values then meaningless): the chain's time
// without them bounds what folding the norms into the GEMVs that read them could save.
void run_layer_chain(Ctx& c, Row& r, int64_t H, int64_t Q, int64_t KV, int64_t I,
                     bool norms = true) {
  cudaStream_t s = c.stream;
  const int64_t QKV = Q + 2 * KV;
  DevBuf<bf16> wqkv{size_t(QKV * H)}, wo{size_t(H * Q)}, wgu{size_t(2 * I * H)},
      wdown{size_t(H * I)};
  fill_normal(wqkv.p, QKV * H, 0.02f, s), fill_normal(wo.p, H * Q, 0.02f, s);
  fill_normal(wgu.p, 2 * I * H, 0.02f, s), fill_normal(wdown.p, H * I, 0.02f, s);
  DevBuf<bf16> n1{size_t(H)}, n2{size_t(H)}, h{size_t(H)}, xn{size_t(H)}, o{size_t(H)},
      qkv{size_t(QKV)}, gu{size_t(2 * I)}, act{size_t(I)};
  for (auto* b : {&n1, &n2, &h, &o}) fill_normal(b->p, H, 0.1f, s);
  r.bytes = 2.0 * double(QKV * H + H * Q + 2 * I * H + H * I);
  r.unit = "GB/s";
  r.copies = 1;
  Timing t = time_launches(
      [&](int64_t) {
        if (norms)
          check_status(gk::rmsnorm_add_rmsnorm<bf16>(o.p, n1.p, h.p, n2.p, xn.p, 1, H, 1e-6f, s));
        check_status(gk::matmul<bf16, bf16>(xn.p, wqkv.p, nullptr, qkv.p, 1, QKV, H, s));
        check_status(gk::matmul<bf16, bf16>(qkv.p, wo.p, nullptr, o.p, 1, H, Q, s));
        if (norms)
          check_status(gk::rmsnorm_add_rmsnorm<bf16>(o.p, n1.p, h.p, n2.p, xn.p, 1, H, 1e-6f, s));
        check_status(
            gk::matmul_gelu_mul<bf16, bf16>(xn.p, wgu.p, nullptr, gu.p, act.p, 1, I, H, s));
        check_status(gk::matmul<bf16, bf16>(act.p, wdown.p, nullptr, o.p, 1, H, I, s));
      },
      1, c.opt, s);
  finish(r, t, c.opt);
}

// A decode layer's attention block at batch 1: the QKV GEMV -> attention with its prologue
// (attention_decode_qkv: one kernel with GEMMA3_DECODE_PROLOGUE=1, else the peer's two launches
// again) -> the O GEMV, against the same chain with qk_norm_rope and attention_decode launched
// apart (the peer, same call, same buffers). The new token is key kv_len - 1 of one sequence
// (contiguous pages, or one ring page of `ring` slots); every launch rewrites its row. Bytes: the
// two projections' weights and the K/V read.
void run_attention_block(Ctx& c, Row& r, int64_t H, int64_t h, int64_t kv, int64_t d,
                         int64_t kv_len, int64_t ring = 0) {
  cudaStream_t s = c.stream;
  const int64_t page = ring > 0 ? ring : 16, pages = ring > 0 ? 1 : (kv_len + page - 1) / page;
  const int64_t QKV = (h + 2 * kv) * d, max_kv = ring > 0 ? ring : kv_len;
  const int64_t cache = pages * page * kv * d;
  DevBuf<bf16> wqkv{size_t(QKV * H)}, wo{size_t(H * h * d)}, x{size_t(H)}, qkv{size_t(QKV)},
      q{size_t(h * d)}, att{size_t(h * d)}, o{size_t(H)}, qw{size_t(d)}, kw{size_t(d)},
      kc{size_t(cache)}, vc{size_t(cache)};
  fill_normal(wqkv.p, QKV * H, 0.02f, s), fill_normal(wo.p, H * h * d, 0.02f, s);
  fill_normal(x.p, H, 1.0f, s), fill_normal(qw.p, d, 0.5f, s), fill_normal(kw.p, d, 0.5f, s);
  fill_normal(kc.p, cache, 1.0f, s), fill_normal(vc.p, cache, 1.0f, s);
  std::vector<int32_t> indices(static_cast<size_t>(pages));
  for (int64_t i = 0; i < pages; ++i) indices[size_t(i)] = int32_t(i);
  DevBuf<int32_t> d_indptr = upload(std::vector<int32_t>{0, int32_t(pages)}, s),
                  d_indices = upload(indices, s),
                  d_len = upload(std::vector<int32_t>{int32_t(kv_len)}, s),
                  d_pos = upload(std::vector<int32_t>{int32_t(kv_len - 1)}, s),
                  d_row = upload(std::vector<int32_t>{int32_t(kv_len - 1)}, s);
  const int64_t ws_floats = gk::attention_decode_workspace_floats(1, h, d, max_kv);
  DevBuf<float> ws(size_t(std::max<int64_t>(ws_floats, 0)));
  const float sm = 1.0f / std::sqrt(float(d)), eps = 1e-6f, base = 1e6f;
  r.bytes = 2.0 * double(QKV * H + H * h * d) + 2.0 * double(kv_len * kv * d) * 2;
  r.unit = "GB/s";
  r.copies = 1;
  auto chain = [&](bool one) {
    check_status(gk::matmul<bf16, bf16>(x.p, wqkv.p, nullptr, qkv.p, 1, QKV, H, s));
    if (one) {
      check_status(gk::attention_decode_qkv<bf16>(qkv.p, qw.p, kw.p, d_pos.p, d_row.p, q.p, kc.p,
                                                  vc.p, att.p, d_indptr.p, d_indices.p, d_len.p, 1,
                                                  h, kv, d, page, pages, pages, max_kv, sm, 0, eps,
                                                  base, 1.0f, ws.p, int64_t(ws.n), s));
    } else {
      check_status(gk::qk_norm_rope<bf16>(qkv.p, qkv.p + h * d, qkv.p + (h + kv) * d, qw.p, kw.p,
                                          d_pos.p, q.p, kc.p, vc.p, d_row.p, pages * page, 1, h, kv,
                                          d, QKV, QKV, QKV, eps, base, 1.0f, s));
      check_status(gk::attention_decode<bf16, bf16>(
          q.p, kc.p, vc.p, att.p, d_indptr.p, d_indices.p, d_len.p, 1, h, kv, d, page, pages, pages,
          max_kv, sm, 1.0f, 1.0f, 0, ws.p, int64_t(ws.n), s));
    }
    check_status(gk::matmul<bf16, bf16>(att.p, wo.p, nullptr, o.p, 1, H, h * d, s));
  };
  finish(r, time_launches([&](int64_t) { chain(true); }, 1, c.opt, s), c.opt);
  set_peer(r, "qk_norm_rope + attention_decode",
           time_launches([&](int64_t) { chain(false); }, 1, c.opt, s).st.median);
}

// Device-to-device copy: the achievable-bandwidth reference for the GB/s rooflines.
void run_memcpy(Ctx& c, Row& r, int64_t bytes) {
  cudaStream_t s = c.stream;
  r.bytes = 2.0 * bytes;
  r.unit = "GB/s";
  r.impl = "cudaMemcpyAsync";
  DevBuf<uint8_t> a(static_cast<size_t>(bytes)), b(static_cast<size_t>(bytes));
  CK(cudaMemsetAsync(a.p, 1, size_t(bytes), s));
  Timing t = time_launches(
      [&](int64_t) { CK(cudaMemcpyAsync(b.p, a.p, size_t(bytes), cudaMemcpyDeviceToDevice, s)); },
      1, c.opt, s);
  finish(r, t, c.opt);
}

// A pure read of a buffer: the fastest one kernel moves a GEMV's weight bytes in this harness, the
// size-matched floor a GEMV row is compared with (stream_read rows; issue 8). Grid-stride 16-byte
// loads that skip L1 (as the GEMVs' W loads), kReadU in flight a thread, 4 CTAs of 256 an SM;
// launched as the GEMVs are (PDL). It lets the next launch start only once its own loads are done:
// triggered at the start, the next launch's CTAs (which fit beside these) read alongside it, and
// where a row has one copy both read the same lines, one DRAM fetch serving two launches (session
// 16 measured 194% of the copy rate that way). The XOR of what a thread read goes to *sink only if
// it equals a value the random data never gives, so no load is optimised away.
constexpr int kReadU = 4;
__global__ void __launch_bounds__(256)
    stream_read_kernel(const uint4* __restrict__ p, int64_t n, unsigned* sink) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  unsigned acc = 0;
  for (; i + (kReadU - 1) * stride < n; i += kReadU * stride) {
    uint4 v[kReadU];
#pragma unroll
    for (int u = 0; u < kReadU; ++u) {
      asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
                   : "=r"(v[u].x), "=r"(v[u].y), "=r"(v[u].z), "=r"(v[u].w)
                   : "l"(p + i + u * stride));
    }
#pragma unroll
    for (int u = 0; u < kReadU; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n; i += stride) {
    const uint4 v = __ldg(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  gemma3::cuda::pdl_trigger();
  gemma3::cuda::pdl_wait();
  if (acc == 0x9e3779b9u) *sink = acc;
}

// stream_read of the bytes of the format-TW weight of an [N, K] GEMV (w_bytes), rotated over as
// many copies as its GEMV row.
template <typename TW>
void run_stream_read(Ctx& c, Row& r, int64_t K, int64_t N) {
  cudaStream_t s = c.stream;
  const double wb = w_bytes<TW>(N, K);
  r.bytes = wb;
  r.unit = "GB/s";
  r.impl = "stream_read";
  const int copies = rotation_copies(wb);
  r.copies = copies;
  const int64_t n = int64_t(wb) / 16;  // whole 16-byte words (every row here is)
  std::vector<DevBuf<uint4>> w(static_cast<size_t>(copies));
  for (auto& wi : w) {
    wi = DevBuf<uint4>(static_cast<size_t>(n));
    fill_index(reinterpret_cast<int32_t*>(wi.p), 4 * n, 1 << 30, s);
  }
  DevBuf<unsigned> sink(1);
  int dev = 0, sms = 0;
  CK(cudaGetDevice(&dev));
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const unsigned grid = unsigned(std::min<int64_t>(4 * sms, (n + 255) / 256));
  Timing t = time_launches(
      [&](int64_t i) {
        CK(gemma3::cuda::launch_ex(gemma3::cuda::pdl_enabled(), 0, stream_read_kernel, dim3(grid),
                                   dim3(256), 0, s, w[size_t(i % copies)].p, n, sink.p));
      },
      copies, c.opt, s);
  finish(r, t, c.opt);
}

// ---------------------------------------------------------- grid barrier ----
// What one grid-wide barrier costs (docs/kernels.md, session 6 "Next": a persistent decode-layer
// kernel would put these where kernel boundaries are now). `rounds` barriers among `ctas` resident
// CTAs of 256 threads; the row reports the time of one barrier (kernel time / rounds).
constexpr int kBarrierRounds = 200;

// Cooperative groups' grid.sync (needs a cooperative launch).
__global__ void grid_sync_kernel(int rounds, unsigned* sink) {
  cooperative_groups::grid_group g = cooperative_groups::this_grid();
  for (int i = 0; i < rounds; ++i) g.sync();
  if (threadIdx.x == 0 && blockIdx.x == 0) sink[0] = unsigned(rounds);
}

// A counter and a generation word in global memory: each CTA's thread 0 arrives with atomicAdd;
// the last to arrive resets the counter and bumps the generation, the others spin until it moves.
// Needs every CTA resident at once (the launcher checks the occupancy).
__global__ void flag_barrier_kernel(int rounds, unsigned* count, unsigned* gen) {
  volatile unsigned* vgen = gen;
  unsigned seen = 0;
  if (threadIdx.x == 0) seen = *vgen;
  for (int i = 0; i < rounds; ++i) {
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();  // this CTA's writes before its arrival (as a real phase would need)
      if (atomicAdd(count, 1u) == gridDim.x - 1) {
        atomicExch(count, 0u);
        __threadfence();
        atomicAdd(gen, 1u);
      } else {
        while (*vgen == seen) {
        }
      }
      ++seen;
      __threadfence();
    }
    __syncthreads();
  }
}

void run_grid_barrier(Ctx& c, Row& r, bool cooperative, int per_sm) {
  cudaStream_t s = c.stream;
  r.unit = "";
  r.impl = cooperative ? "cg grid.sync" : "atomic flag";
  int dev = 0, sms = 0, occ = 0;
  CK(cudaGetDevice(&dev));
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  if (cooperative) {
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, grid_sync_kernel, 256, 0));
  } else {
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, flag_barrier_kernel, 256, 0));
  }
  if (occ < per_sm) throw BenchError("only " + std::to_string(occ) + " CTAs an SM fit");
  const unsigned ctas = unsigned(sms * per_sm);
  DevBuf<unsigned> words(2);
  CK(cudaMemsetAsync(words.p, 0, 2 * sizeof(unsigned), s));
  int rounds = kBarrierRounds;
  unsigned* count = words.p;
  unsigned* gen = words.p + 1;
  Timing t = time_launches(
      [&](int64_t) {
        if (cooperative) {
          void* args[] = {&rounds, &count};
          CK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(grid_sync_kernel),
                                         dim3(ctas), dim3(256), args, 0, s));
        } else {
          flag_barrier_kernel<<<ctas, 256, 0, s>>>(rounds, count, gen);
          CK(cudaGetLastError());
        }
      },
      1, c.opt, s);
  finish(r, t, c.opt);
  for (double* v : {&r.median_us, &r.p10_us, &r.p90_us, &r.single_us}) *v /= kBarrierRounds;
}

// ----------------------------------------------------------------- cases ----
std::string mkn(int64_t M, int64_t K, int64_t N) {
  return "M" + std::to_string(M) + " K" + std::to_string(K) + " N" + std::to_string(N);
}

template <typename TW>
void add_read(std::vector<Case>& cs, int64_t K, int64_t N) {
  cs.push_back({"stream_read", mkn(1, K, N), wname<TW>(),
                [=](Ctx& c, Row& r) { run_stream_read<TW>(c, r, K, N); }});
}

template <typename TW>
void add_matmul(std::vector<Case>& cs, const char* name, int64_t M, int64_t K, int64_t N,
                bool gelu = false) {
  cs.push_back({name, mkn(M, K, N), wname<TW>(),
                [=](Ctx& c, Row& r) { run_matmul<TW>(c, r, M, K, N, gelu); }});
}

std::vector<Case> all_cases() {
  std::vector<Case> cs;
  const int64_t kVocab4B = 262208;
  cs.push_back({"memcpy_d2d", "1GiB", "u8", [](Ctx& c, Row& r) { run_memcpy(c, r, 1ll << 30); }});
  // Issue 8's GEMV shapes (4B / 27B up, gate/up, down; 4B logits): a pure read of each format's
  // bytes, the size-matched floor of its gemv / gate_up_gelu rows.
  for (auto& kn : {std::array<int64_t, 2>{2560, 10240},
                   {2560, 20480},
                   {10240, 2560},
                   {5376, 21504},
                   {5376, 43008},
                   {21504, 5376},
                   {2560, kVocab4B}}) {
    add_read<bf16>(cs, kn[0], kn[1]);
    add_read<fp8e4m3>(cs, kn[0], kn[1]);
    add_read<block_q8_0s>(cs, kn[0], kn[1]);
    add_read<block_q4_0s>(cs, kn[0], kn[1]);
  }
  // 4B and 1B decode layers without attention (hidden, q width, kv width, intermediate).
  for (int per_sm : {1, 4})
    for (bool coop : {true, false})
      cs.push_back({"grid_barrier",
                    std::to_string(per_sm) + " CTA/SM x 256 threads, " +
                        (coop ? "cg grid.sync" : "atomic flag") + ", per barrier",
                    "-", [=](Ctx& c, Row& r) { run_grid_barrier(c, r, coop, per_sm); }});
  cs.push_back({"layer_chain", "4B H2560 Q2048 KV1024 I10240", "bf16",
                [](Ctx& c, Row& r) { run_layer_chain(c, r, 2560, 2048, 1024, 10240); }});
  cs.push_back({"layer_chain", "1B H1152 Q1024 KV256 I6912", "bf16",
                [](Ctx& c, Row& r) { run_layer_chain(c, r, 1152, 1024, 256, 6912); }});
  cs.push_back({"layer_chain", "4B GEMVs only (no norms)", "bf16",
                [](Ctx& c, Row& r) { run_layer_chain(c, r, 2560, 2048, 1024, 10240, false); }});
  cs.push_back({"layer_chain", "1B GEMVs only (no norms)", "bf16",
                [](Ctx& c, Row& r) { run_layer_chain(c, r, 1152, 1024, 256, 6912, false); }});
  // (model, hidden, q heads, kv heads, head_dim) x kv_len: the decode attention block.
  const std::tuple<const char*, int64_t, int64_t, int64_t, int64_t> blocks[] = {
      {"1B", 1152, 4, 1, 256}, {"4B", 2560, 8, 4, 256}, {"27B", 5376, 32, 16, 128}};
  for (const auto& [model, H, h, kv, d] : blocks)
    for (int64_t len : {128, 1024}) {
      std::string shape = std::string(model) + " b1 H" + std::to_string(H) + " h" +
                          std::to_string(h) + " kv" + std::to_string(kv) + " d" +
                          std::to_string(d) + " kv_len" + std::to_string(len);
      const int64_t H_ = H, h_ = h, kv_ = kv, d_ = d;
      cs.push_back({"attention_block", shape, "bf16",
                    [=](Ctx& c, Row& r) { run_attention_block(c, r, H_, h_, kv_, d_, len); }});
    }
  for (int64_t len : {16, 100, 512})  // a sliding layer's ring (one page of 512 slots)
    cs.push_back({"attention_block", "1B ring512 b1 H1152 h4 kv1 d256 kv_len" + std::to_string(len),
                  "bf16",
                  [=](Ctx& c, Row& r) { run_attention_block(c, r, 1152, 4, 1, 256, len, 512); }});

  // (K, N): 4B MLP up, 27B MLP up, 1B MLP up, 4B logits.
  const int64_t gemv[][2] = {{2560, 10240}, {5376, 21504}, {1152, 6912}, {2560, kVocab4B}};
  for (auto& kn : gemv) {
    add_matmul<bf16>(cs, "gemv", 1, kn[0], kn[1]);
    add_matmul<block_q8_0>(cs, "gemv", 1, kn[0], kn[1]);
    add_matmul<block_q4_0>(cs, "gemv", 1, kn[0], kn[1]);
    add_matmul<block_q4_0s>(cs, "gemv", 1, kn[0], kn[1]);
    add_matmul<block_q8_0s>(cs, "gemv", 1, kn[0], kn[1]);
    add_matmul<fp8e4m3>(cs, "gemv", 1, kn[0], kn[1]);
    if (kn[0] % gemma3::kQK_K == 0) {  // K-quant rows are whole 256-blocks (not 1B's 1152)
      add_matmul<block_q4_K>(cs, "gemv", 1, kn[0], kn[1]);
      add_matmul<block_q6_K>(cs, "gemv", 1, kn[0], kn[1]);
    }
  }
  // The decode layer's fused dense GEMVs as the model runs them (QKV, O, gate/up, down): 1B, 4B.
  const int64_t layer[][2] = {{1152, 1536}, {1024, 1152}, {1152, 13824}, {6912, 1152},
                              {2560, 4096}, {2048, 2560}, {2560, 20480}};
  for (auto& kn : layer) {
    add_matmul<bf16>(cs, "gemv_layer", 1, kn[0], kn[1]);
    add_matmul<fp8e4m3>(cs, "gemv_layer", 1, kn[0], kn[1]);
    if (kn[0] % 256 == 0) {  // 4B: the quantized checkpoints' layers (issue 8)
      add_matmul<block_q8_0>(cs, "gemv_layer", 1, kn[0], kn[1]);
      add_matmul<block_q4_0>(cs, "gemv_layer", 1, kn[0], kn[1]);
      add_matmul<block_q4_0s>(cs, "gemv_layer", 1, kn[0], kn[1]);
      add_matmul<block_q8_0s>(cs, "gemv_layer", 1, kn[0], kn[1]);
    }
  }
  // The gate/up projections with gelu_mul as the model runs them at decode (matmul_gelu_mul: one
  // GEMV with the gated-MLP epilogue; GEMMA3_GELU_EPILOGUE=0: the GEMV, then gelu_mul): 1B, 4B,
  // 27B.
  for (auto& kn : {std::array<int64_t, 2>{1152, 13824}, {2560, 20480}, {5376, 43008}}) {
    add_matmul<bf16>(cs, "gate_up_gelu", 1, kn[0], kn[1], true);
    add_matmul<fp8e4m3>(cs, "gate_up_gelu", 1, kn[0], kn[1], true);
    add_matmul<block_q4_0s>(cs, "gate_up_gelu", 1, kn[0], kn[1], true);
    add_matmul<block_q8_0s>(cs, "gate_up_gelu", 1, kn[0], kn[1], true);
  }
  // Down projections (small N, long K: the GEMVs split K across warps): 4B, 27B.
  const int64_t down[][2] = {{10240, 2560}, {21504, 5376}};
  for (auto& kn : down) {
    add_matmul<bf16>(cs, "gemv", 1, kn[0], kn[1]);
    add_matmul<block_q8_0>(cs, "gemv", 1, kn[0], kn[1]);
    add_matmul<block_q4_0>(cs, "gemv", 1, kn[0], kn[1]);
    add_matmul<block_q4_0s>(cs, "gemv", 1, kn[0], kn[1]);
    add_matmul<block_q8_0s>(cs, "gemv", 1, kn[0], kn[1]);
    add_matmul<block_q4_K>(cs, "gemv", 1, kn[0], kn[1]);
    add_matmul<block_q6_K>(cs, "gemv", 1, kn[0], kn[1]);
  }
  const int64_t gemm[][2] = {{2560, 10240}, {5376, 21504}};
  for (auto& kn : gemm) {
    for (int64_t M : {16, 128, 2048}) add_matmul<bf16>(cs, "gemm", M, kn[0], kn[1]);
    add_matmul<block_q8_0>(cs, "gemm", 2048, kn[0], kn[1]);
    add_matmul<block_q4_0>(cs, "gemm", 2048, kn[0], kn[1]);
    add_matmul<block_q4_0s>(cs, "gemm", 2048, kn[0], kn[1]);
    add_matmul<block_q8_0s>(cs, "gemm", 2048, kn[0], kn[1]);
    add_matmul<block_q4_K>(cs, "gemm", 2048, kn[0], kn[1]);
    add_matmul<block_q6_K>(cs, "gemm", 2048, kn[0], kn[1]);
  }

  // (qo heads, kv heads, head_dim, seq): 4B at 8k (headline) and 1k…16k (TFLOP/s against the
  // sequence length, issue 9's plot), 27B at 4k. tools/peers/torch_peers.py lists the same.
  const int64_t pre[][4] = {{8, 4, 256, 8192}, {8, 4, 256, 1024},  {8, 4, 256, 2048},
                            {8, 4, 256, 4096}, {8, 4, 256, 16384}, {32, 16, 128, 4096}};
  for (auto& p : pre) {
    int64_t h = p[0], kv = p[1], d = p[2], seq = p[3];
    std::string shape = "b1 h" + std::to_string(h) + " kv" + std::to_string(kv) + " d" +
                        std::to_string(d) + " s" + std::to_string(seq) + " causal";
    cs.push_back({"attention_prefill", shape, "bf16",
                  [=](Ctx& c, Row& r) { run_prefill(c, r, h, kv, d, seq); }});
  }
  // The scheduler prefills in chunks of 512 tokens: the 4B heads' last chunk of a 2048-token
  // prompt (32 CTAs of 128 query rows for 132 SMs: the small-grid case, docs/kernels.md session
  // 11).
  cs.push_back({"attention_prefill", "b1 h8 kv4 d256 q512 kv2048 causal", "bf16",
                [=](Ctx& c, Row& r) { run_prefill(c, r, 8, 4, 256, 2048, 512); }});

  const int64_t dec[][3] = {{8, 4, 256}, {32, 16, 128}, {4, 1, 256}};  // 4B, 27B, 1B
  for (auto& hk : dec)
    for (int64_t batch : {1, 16})
      // 32K: issue 9's "decode attention at 32K"; 16-256 at batch 1: the one-split range and its
      // edge (docs/kernels.md, "decode attention at short context").
      for (int64_t len : {16, 64, 96, 128, 256, 1024, 8192, 32768}) {
        if (len < 1024 && batch != 1) continue;
        int64_t h = hk[0], kv = hk[1], d = hk[2];
        std::string shape = "b" + std::to_string(batch) + " h" + std::to_string(h) + " kv" +
                            std::to_string(kv) + " d" + std::to_string(d) + " kv_len" +
                            std::to_string(len) + " page16";
        cs.push_back({"attention_decode", shape, "bf16",
                      [=](Ctx& c, Row& r) { run_decode(c, r, batch, h, kv, d, len, 16); }});
      }

  for (int64_t rows : {1, 2048})
    for (int64_t dim : {2560, 5376})
      cs.push_back({"rmsnorm", "rows" + std::to_string(rows) + " dim" + std::to_string(dim), "bf16",
                    [=](Ctx& c, Row& r) { run_rmsnorm(c, r, rows, dim); }});

  const int64_t rope_hd[][2] = {{8, 256}, {32, 128}};
  for (int64_t tokens : {1, 2048})
    for (auto& hd : rope_hd) {
      int64_t heads = hd[0], d = hd[1];
      cs.push_back(
          {"rope",
           "t" + std::to_string(tokens) + " h" + std::to_string(heads) + " d" + std::to_string(d),
           "bf16", [=](Ctx& c, Row& r) { run_rope(c, r, tokens, heads, d); }});
    }

  for (int64_t rows : {1, 16}) {
    std::string shape = "rows" + std::to_string(rows) + " cols" + std::to_string(kVocab4B);
    cs.push_back({"softmax", shape, "bf16",
                  [=](Ctx& c, Row& r) { run_rowop(c, r, RowOp::kSoftmax, rows, kVocab4B, 0); }});
    cs.push_back({"argmax", shape, "bf16",
                  [=](Ctx& c, Row& r) { run_rowop(c, r, RowOp::kArgmax, rows, kVocab4B, 0); }});
    cs.push_back({"topk", shape + " k64", "bf16",
                  [=](Ctx& c, Row& r) { run_rowop(c, r, RowOp::kTopk, rows, kVocab4B, 64); }});
  }

  for (int64_t n : {1, 2048}) {
    // dtype = the table's format; the output is bf16.
    std::string shape = "n" + std::to_string(n) + " dim2560 vocab" + std::to_string(kVocab4B);
    cs.push_back({"embedding", shape, "bf16",
                  [=](Ctx& c, Row& r) { run_embedding<bf16>(c, r, n, 2560, kVocab4B); }});
    cs.push_back({"embedding", shape, "q8_0",
                  [=](Ctx& c, Row& r) { run_embedding<block_q8_0>(c, r, n, 2560, kVocab4B); }});
  }

  for (int64_t rows : {1, 2048})
    for (int64_t cols : {10240, 21504})
      cs.push_back({"gelu_mul", "rows" + std::to_string(rows) + " cols" + std::to_string(cols),
                    "bf16", [=](Ctx& c, Row& r) { run_gelu_mul(c, r, rows, cols); }});
  return cs;
}

// ---------------------------------------------------------------- output ----
std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}
std::string fus(double us) { return fmt(us < 100 ? "%.2f" : "%.1f", us); }

std::string json_str(const std::string& s) {
  std::string o = "\"";
  for (char ch : s) {
    unsigned char u = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      o += '\\';
      o += ch;
    } else if (u < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", u);
      o += b;
    } else {
      o += ch;
    }
  }
  return o + "\"";
}
std::string json_num(double v) { return std::isfinite(v) ? fmt("%.6g", v) : "null"; }

std::string version_str(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

std::string device_line(const DeviceInfo& d, const Options& o) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "%s (sm_%d%d, %d SMs, SM clock %d MHz, mem clock %d MHz, %d-bit bus, "
                "theoretical %.0f GB/s, L2 %lld MiB, %.1f GiB), driver %s, runtime %s",
                d.name.c_str(), d.cc_major, d.cc_minor, d.sms, d.sm_clock_mhz, d.mem_clock_mhz,
                d.bus_width, d.theoretical_gbs, static_cast<long long>(d.l2_bytes >> 20),
                double(d.mem_bytes) / (1 << 30), version_str(d.driver).c_str(),
                version_str(d.runtime).c_str());
  std::string s = buf;
  s += "; commit " + (o.commit.empty() ? std::string("(not given)") : o.commit);
  return s;
}

bool cublas_built() {
#ifdef GEMMA3_WITH_CUBLAS
  return true;
#else
  return false;
#endif
}

void write_json(const std::string& path, const DeviceInfo& d, const Options& o,
                const std::vector<Row>& rows) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    return;
  }
  std::string s = "{\n  \"tool\": \"bench_kernels\",\n  \"device\": {";
  s += "\"name\": " + json_str(d.name) + ", \"sms\": " + std::to_string(d.sms) + ", \"cc\": \"" +
       std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor) +
       "\", \"sm_clock_mhz\": " + std::to_string(d.sm_clock_mhz) +
       ", \"mem_clock_mhz\": " + std::to_string(d.mem_clock_mhz) +
       ", \"bus_width\": " + std::to_string(d.bus_width) +
       ", \"l2_bytes\": " + std::to_string(d.l2_bytes) +
       ", \"theoretical_gbs\": " + json_num(d.theoretical_gbs) + ", \"driver\": \"" +
       version_str(d.driver) + "\", \"runtime\": \"" + version_str(d.runtime) + "\"},\n";
  s += "  \"commit\": " + json_str(o.commit) + ",\n  \"iters\": " + std::to_string(o.iters) +
       ", \"warmup\": " + std::to_string(o.warmup) + ", \"peak_gbs\": " + json_num(o.peak_gbs) +
       ", \"peak_tflops\": " + json_num(o.peak_tflops) +
       ", \"cublas\": " + (cublas_built() ? "true" : "false") + ",\n  \"rows\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    s += "    {\"name\": " + json_str(r.name) + ", \"shape\": " + json_str(r.shape) +
         ", \"dtype\": " + json_str(r.dtype) + ", \"impl\": " + json_str(r.impl) +
         ", \"median_us\": " + json_num(r.median_us) + ", \"p10_us\": " + json_num(r.p10_us) +
         ", \"p90_us\": " + json_num(r.p90_us) + ", \"single_us\": " + json_num(r.single_us) +
         ", \"mode\": " + json_str(r.mode) + ", \"copies\": " + std::to_string(r.copies) +
         ", \"bytes\": " + json_num(r.bytes) + ", \"flops\": " + json_num(r.flops) +
         ", \"achieved\": " + json_num(r.achieved) + ", \"unit\": " + json_str(r.unit) +
         ", \"roofline_pct\": " + json_num(r.roofline_pct) + ", \"peer\": " + json_str(r.peer) +
         ", \"peer_us\": " + json_num(r.peer_us) + ", \"ratio\": " + json_num(r.ratio) +
         ", \"peer_error\": " + json_str(r.peer_error) + ", \"error\": " + json_str(r.error) + "}" +
         (i + 1 < rows.size() ? ",\n" : "\n");
  }
  s += "  ]\n}\n";
  std::fputs(s.c_str(), f);
  std::fclose(f);
}

std::string md_cell(std::string s) {
  for (auto& ch : s)
    if (ch == '|' || ch == '\n') ch = ' ';
  return s;
}

std::string md_table(const std::vector<Row>& rows, const Options& o) {
  std::string s =
      "| kernel | shape | dtype | median µs | p10 µs | p90 µs | achieved | roofline % | "
      "peer | peer µs | ratio | timing |\n";
  s += "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|\n";
  for (const Row& r : rows) {
    s += "| " + r.name + " | " + r.shape + " | " + r.dtype + " | ";
    if (!r.error.empty()) {
      s += "**error** | | | | | | | | " + md_cell(r.error) + " |\n";
      continue;
    }
    s += fus(r.median_us) + " | " + fus(r.p10_us) + " | " + fus(r.p90_us) + " | " +
         fmt(r.unit == "TFLOP/s" ? "%.1f" : "%.0f", r.achieved) + " " + r.unit + " | " +
         fmt("%.1f", r.roofline_pct) + " | " + r.peer + " | ";
    if (!r.peer_error.empty())
      s += "error: " + md_cell(r.peer_error) + " | | ";
    else if (!r.peer.empty())
      s += fus(r.peer_us) + " | " + fmt("%.2f", r.ratio) + " | ";
    else
      s += " | | ";
    s += md_cell(r.mode);
    if (r.mode.rfind("graph", 0) == 0) s += " (1 launch " + fus(r.single_us) + " µs)";
    if (r.copies > 1) s += ", " + std::to_string(r.copies) + " copies";
    s += " |\n";
  }
  s += "\nroofline = max(flops / " + fmt("%.0f", o.peak_tflops) + " TFLOP/s, bytes / " +
       fmt("%.0f", o.peak_gbs) + " GB/s) / median; ratio = peer µs / ours µs (> 1: ours faster)\n";
  return s;
}

// ------------------------------------------------------------------ main ----
int usage(const char* argv0) {
  std::fprintf(
      stderr,
      "usage: %s [--json PATH] [--md PATH] [--filter SUBSTR[|SUBSTR...]] [--iters N] [--warmup N]\n"
      "          [--commit SHA] [--device N] [--peak-gbs X] [--peak-tflops X]\n"
      "          [--graph-below US] [--list]\n",
      argv0);
  return 2;
}

bool parse(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&](const char** v) {
      if (i + 1 >= argc) return false;
      *v = argv[++i];
      return true;
    };
    const char* v = nullptr;
    if (a == "--list") {
      o->list = true;
    } else if (a == "--json" && next(&v)) {
      o->json_path = v;
    } else if (a == "--md" && next(&v)) {
      o->md_path = v;
    } else if (a == "--filter" && next(&v)) {
      o->filter = v;
    } else if (a == "--commit" && next(&v)) {
      o->commit = v;
    } else if (a == "--iters" && next(&v)) {
      o->iters = std::atoi(v);
    } else if (a == "--warmup" && next(&v)) {
      o->warmup = std::atoi(v);
    } else if (a == "--device" && next(&v)) {
      o->device = std::atoi(v);
    } else if (a == "--peak-gbs" && next(&v)) {
      o->peak_gbs = std::atof(v);
    } else if (a == "--peak-tflops" && next(&v)) {
      o->peak_tflops = std::atof(v);
    } else if (a == "--graph-below" && next(&v)) {
      o->graph_below_us = std::atof(v);
    } else {
      return false;
    }
  }
  return o->iters >= 1 && o->warmup >= 0 && o->peak_gbs >= 0 && o->peak_tflops > 0;
}

DeviceInfo query_device(int dev) {
  DeviceInfo d;
  cudaDeviceProp p;
  CK(cudaGetDeviceProperties(&p, dev));
  d.name = p.name;
  d.sms = p.multiProcessorCount;
  d.cc_major = p.major, d.cc_minor = p.minor;
  d.mem_bytes = int64_t(p.totalGlobalMem);
  int khz = 0, mem_khz = 0, bus = 0, l2 = 0;
  CK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, dev));
  CK(cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, dev));
  CK(cudaDeviceGetAttribute(&bus, cudaDevAttrGlobalMemoryBusWidth, dev));
  CK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
  d.sm_clock_mhz = khz / 1000, d.mem_clock_mhz = mem_khz / 1000, d.bus_width = bus;
  d.l2_bytes = l2;
  d.theoretical_gbs = 2.0 * mem_khz * 1e3 * (bus / 8.0) * 1e-9;  // DDR: two transfers a clock
  CK(cudaDriverGetVersion(&d.driver));
  CK(cudaRuntimeGetVersion(&d.runtime));
  return d;
}

int run_main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, &o)) return usage(argv[0]);
  std::vector<Case> cases = all_cases();
  std::vector<Case> picked;
  // --filter A|B: rows whose "name shape dtype" holds A or B.
  auto matches = [&](const std::string& row) {
    if (o.filter.empty()) return true;
    for (size_t b = 0; b <= o.filter.size();) {
      size_t e = o.filter.find('|', b);
      if (e == std::string::npos) e = o.filter.size();
      if (e > b && row.find(o.filter.substr(b, e - b)) != std::string::npos) return true;
      b = e + 1;
    }
    return false;
  };
  for (auto& c : cases)
    if (matches(c.name + " " + c.shape + " " + c.dtype)) picked.push_back(c);
  if (o.list) {
    for (auto& c : picked)
      std::printf("%s %s %s\n", c.name.c_str(), c.shape.c_str(), c.dtype.c_str());
    return 0;
  }

  CK(cudaSetDevice(o.device));
  DeviceInfo dev = query_device(o.device);
  if (dev.l2_bytes > 0) g_l2_bytes = dev.l2_bytes;
  // The achievable copy rate is ~89% of the theoretical one on H100 SXM (2990 of 3352 GB/s) and
  // H200 (4245 of 4814 measured); scale the default roofline with the card instead of assuming one.
  const bool auto_gbs = o.peak_gbs <= 0;
  if (auto_gbs)
    o.peak_gbs = dev.theoretical_gbs > 0 ? dev.theoretical_gbs * 2990.0 / 3352.0 : 2990.0;
  std::printf("device: %s\n", device_line(dev, o).c_str());
  std::printf("iters %d, warmup %d, roofline %.0f GB/s / %.0f TFLOP/s, cuBLAS peer %s\n", o.iters,
              o.warmup, o.peak_gbs, o.peak_tflops, cublas_built() ? "on" : "off (not built)");
  if (auto_gbs && dev.theoretical_gbs > 0 && std::fabs(dev.theoretical_gbs / 3352.0 - 1.0) > 0.1)
    std::printf(
        "note: roofline bandwidth %.0f GB/s scaled from this card's theoretical %.0f GB/s as an "
        "H100 SXM's 2990 of 3352 (check the memcpy_d2d row; --peak-gbs / --peak-tflops override; "
        "800 TFLOP/s is an H100 SXM's)\n",
        o.peak_gbs, dev.theoretical_gbs);

  Ctx ctx;
  ctx.opt = o;
  CK(cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking));
#ifdef GEMMA3_WITH_CUBLAS
  CKB(cublasCreate(&ctx.cublas));
  CKB(cublasSetStream(ctx.cublas, ctx.stream));
  // A fixed workspace keeps cuBLAS from allocating while a graph is being captured.
  ctx.cublas_ws = DevBuf<uint8_t>(size_t(64) << 20);
  CKB(cublasSetWorkspace(ctx.cublas, ctx.cublas_ws.p, ctx.cublas_ws.bytes()));
#endif

  std::vector<Row> rows;
  bool sticky = false;  // a device fault poisons the context: later rows cannot run
  for (auto& c : picked) {
    Row r;
    r.name = c.name, r.shape = c.shape, r.dtype = c.dtype;
    if (sticky) {
      r.error = "skipped: the CUDA context is broken by an earlier fault";
    } else {
      try {
        c.run(ctx, r);
        CK(cudaStreamSynchronize(ctx.stream));
      } catch (const BenchError& e) {
        r.error = e.what();
      } catch (const std::bad_alloc&) {
        r.error = "host out of memory";
      }
      if (!r.error.empty()) {
        cudaStreamSynchronize(ctx.stream);  // drain: its error, if any, is read just below
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess && cudaDeviceSynchronize() != cudaSuccess) sticky = true;
      }
    }
    if (r.error.empty()) {
      std::string peer;
      if (!r.peer.empty() && r.peer_error.empty())
        peer = "  " + r.peer + " " + fus(r.peer_us) + " us, ratio " + fmt("%.2f", r.ratio);
      else if (!r.peer_error.empty())
        peer = "  " + r.peer + " error: " + r.peer_error;
      std::printf("%-18s %-38s %-8s %10s us  %9s %-7s %6.1f%%%s\n", r.name.c_str(), r.shape.c_str(),
                  r.dtype.c_str(), fus(r.median_us).c_str(),
                  fmt(r.unit == "TFLOP/s" ? "%.1f" : "%.0f", r.achieved).c_str(), r.unit.c_str(),
                  r.roofline_pct, peer.c_str());
    } else {
      std::printf("%-18s %-38s %-8s ERROR %s\n", r.name.c_str(), r.shape.c_str(), r.dtype.c_str(),
                  r.error.c_str());
    }
    std::fflush(stdout);
    rows.push_back(r);
  }

#ifdef GEMMA3_WITH_CUBLAS
  cublasDestroy(ctx.cublas);  // teardown: nothing to do on failure
#endif
  cudaStreamDestroy(ctx.stream);

  std::string table = md_table(rows, o);
  if (!o.json_path.empty()) write_json(o.json_path, dev, o, rows);
  if (!o.md_path.empty()) {
    FILE* f = std::fopen(o.md_path.c_str(), "w");
    if (f) {
      std::fprintf(f, "# gemma3 kernel benchmarks\n\n%s\n\niters %d, warmup %d\n\n%s",
                   device_line(dev, o).c_str(), o.iters, o.warmup, table.c_str());
      std::fclose(f);
    } else {
      std::fprintf(stderr, "cannot write %s\n", o.md_path.c_str());
    }
  }
  std::printf("\n%s", table.c_str());
  size_t failed = 0;
  for (auto& r : rows) failed += !r.error.empty();
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run_main(argc, argv);
  } catch (const BenchError& e) {  // setup outside any row (device query, stream)
    std::fprintf(stderr, "bench_kernels: %s\n", e.what());
    return 1;
  }
}
