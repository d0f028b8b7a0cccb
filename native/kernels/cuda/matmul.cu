// matmul<TX, TW>: y[M, N] = x[M, K] . W[N, K]^T (times w_scale[n]), dispatched on M:
//  - M <= 8: GEMV (matmul_gemv.cu). Decode and small batches are bound by reading W, so one pass
//    over W serves all M rows of x (each weight byte loaded once; x is tiny and stays in L1).
//  - M > 8, bf16 x bf16, no w_scale, built with GEMMA3_WITH_CUBLAS: cublasGemmEx (f32 compute,
//    f32 split-K reductions), the fastest bf16 GEMM on the card.
//  - M > 8 otherwise: matmul_gemm.cu. TX = bf16: tensor cores (mma.sync bf16 -> f32, 128x128x32
//    tiles; fp8 / q8_0 / q4_0 expanded exactly to bf16 in shared memory). TX or W float: FFMA
//    tiles.
// Why 8: the GEMV's x traffic, registers and FMAs grow with M while W bytes do not, so past ~8 rows
// it stops being bound by W alone; a tensor-core tile reads W once per 128 rows of x instead.
// All paths accumulate in f32, round y once, and take any M, N, K (block formats: K % 32 == 0,
// K-quants K % 256 == 0; their GEMV is matmul_kquant.cu, their GEMM matmul_gemm.cu's loaders).
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gemv_common.cuh"
#include "kernels/qdot.h"
#include "runtime/env.h"
#include "runtime/kquant.h"

#if GEMMA3_WITH_CUBLAS
#include <cublas_v2.h>

#include <climits>
#endif

namespace gemma3::cuda {
namespace detail {

constexpr int64_t kGemvMaxM = 8;

// Rows up to which bf16 x bf16 uses our GEMV rather than cuBLAS (when built with cuBLAS):
// GEMMA3_BF16_GEMV_MAX_M (1..8) overrides the default, for measuring the crossover.
int64_t bf16_gemv_max_m() {
  static const int64_t v = [] {
    const long n = env_long("GEMMA3_BF16_GEMV_MAX_M");
    // Measured on H100 (4B decode step, docs/kernels.md): GEMV wins at M <= 2, cuBLAS from 3.
    return n >= 1 && n <= kGemvMaxM ? int64_t(n) : int64_t(2);
  }();
  return v;
}

// matmul_gemv.cu: 1 <= M <= kGemvMaxM; gp: the gated-MLP epilogue, where gemv_pairs_ok.
template <typename TX, typename TW>
Status gemv(const TX* x, const TW* w, const float* w_scale, TX* y, int64_t M, int64_t N, int64_t K,
            cudaStream_t stream, const GeluPairs<TX>& gp = {});
template <typename TX, typename TW>
bool gemv_pairs_ok(const TX* x, const TW* w, int64_t K);
// matmul_kquant.cu: the K-quants, 1 <= M <= kGemvMaxM.
template <typename TX, typename TB>
Status kq_gemv(const TX* x, const TB* w, TX* y, int64_t M, int64_t N, int64_t K,
               cudaStream_t stream);
// matmul_gemm.cu: any M >= 1.
template <typename TX, typename TW>
Status gemm(const TX* x, const TW* w, const float* w_scale, TX* y, int64_t M, int64_t N, int64_t K,
            cudaStream_t stream);

#if GEMMA3_WITH_CUBLAS
namespace {

constexpr int kMaxDevices = 64;
constexpr size_t kCublasWorkspaceBytes = size_t(32) << 20;

Status cublas_status(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  const StatusCode code =
      s == CUBLAS_STATUS_ALLOC_FAILED ? StatusCode::kOutOfMemory : StatusCode::kCuda;
  return Status(code, std::string(what) + ": " + cublasGetStatusName(s) + " (" +
                          cublasGetStatusString(s) + ")");
}

// One handle per (thread, device), created on first use with its fixed workspace, so no call
// allocates afterwards. Handles live until process exit (destroying them at thread exit can race
// CUDA's own teardown). The workspace assumes one stream at a time per thread and device.
struct CublasSlot {
  cublasHandle_t handle = nullptr;
  void* workspace = nullptr;
};
thread_local CublasSlot t_cublas[kMaxDevices];

Status cublas_handle(cublasHandle_t* out) {
  int dev = 0;
  G3_CUDA_RETURN(cudaGetDevice(&dev));
  if (dev < 0 || dev >= kMaxDevices) {
    return Status(StatusCode::kUnsupported, "matmul cublas: device " + std::to_string(dev));
  }
  CublasSlot& slot = t_cublas[dev];
  if (slot.handle == nullptr) {
    cublasHandle_t h = nullptr;
    G3_RETURN_IF_ERROR(cublas_status(cublasCreate(&h), "cublasCreate"));
    void* ws = nullptr;
    Status st = cuda_status(cudaMalloc(&ws, kCublasWorkspaceBytes), "cudaMalloc(cublas workspace)");
    if (st.ok())
      st = cublas_status(cublasSetWorkspace(h, ws, kCublasWorkspaceBytes), "cublasSetWorkspace");
    // Split-K partial sums stay in f32 (not bf16): y is rounded once.
    if (st.ok()) {
      st = cublas_status(
          cublasSetMathMode(
              h, static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH |
                                           CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)),
          "cublasSetMathMode");
    }
    if (!st.ok()) {
      cublasDestroy(h);
      if (ws != nullptr) cudaFree(ws);
      return st;
    }
    slot.handle = h;
    slot.workspace = ws;
  }
  *out = slot.handle;
  return Status::Ok();
}

// Row-major y[M, N] = x[M, K] . W[N, K]^T is column-major y^T[N, M] = W^T(op T of W[K, N]) . x^T.
Status cublas_gemm_bf16(const bf16* x, const bf16* w, bf16* y, int64_t M, int64_t N, int64_t K,
                        cudaStream_t stream) {
  cublasHandle_t h = nullptr;
  G3_RETURN_IF_ERROR(cublas_handle(&h));
  G3_RETURN_IF_ERROR(cublas_status(cublasSetStream(h, stream), "cublasSetStream"));
  const float alpha = 1.f, beta = 0.f;
  return cublas_status(
      cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M),
                   static_cast<int>(K), &alpha, w, CUDA_R_16BF, static_cast<int>(K), x, CUDA_R_16BF,
                   static_cast<int>(K), &beta, y, CUDA_R_16BF, static_cast<int>(N),
                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      "matmul cublasGemmEx");
}

}  // namespace
#endif  // GEMMA3_WITH_CUBLAS

}  // namespace detail

#if GEMMA3_WITH_CUBLAS
template <typename TX, typename TW>
constexpr bool kCublasBf16 = std::is_same_v<TX, bf16> && std::is_same_v<TW, bf16>;
#else
template <typename TX, typename TW>
constexpr bool kCublasBf16 = false;
#endif

namespace {

// Whether matmul runs M rows on the GEMV: M <= 8, except bf16 x bf16 with cuBLAS past
// bf16_gemv_max_m() rows (its x re-reads make it slower than cuBLAS's tensor cores past a few rows;
// docs/kernels.md, "GEMV vs cuBLAS") and q4_0s / q8_0s (CUDA only, a q-dot GEMV only) under
// GEMMA3_QDOT=float, which sends them to the GEMM at every M.
template <typename TX, typename TW>
bool takes_gemv(int64_t M, const float* w_scale) {
  constexpr bool kSplit = std::is_same_v<TW, block_q4_0s> || std::is_same_v<TW, block_q8_0s>;
  return M <= detail::kGemvMaxM && (!kSplit || qdot::enabled()) &&
         !(kCublasBf16<TX, TW> && w_scale == nullptr && M > detail::bf16_gemv_max_m());
}

// False when GEMMA3_GELU_EPILOGUE=0 (read once): matmul_gelu_mul always runs two launches (the A/B
// of the fused epilogue).
bool gelu_epilogue_enabled() {
  static const bool on = !env_is("GEMMA3_GELU_EPILOGUE", "0");
  return on;
}

}  // namespace

template <typename TX, typename TW>
Status matmul(const TX* x, const TW* w, const float* w_scale, TX* y, int64_t M, int64_t N,
              int64_t K, cudaStream_t stream) {
  constexpr bool kBlock = std::is_same_v<TW, block_q8_0> || std::is_same_v<TW, block_q4_0> ||
                          std::is_same_v<TW, block_q4_0s> || std::is_same_v<TW, block_q8_0s>;
  // Same argument rules as the CPU backend: K > 0, M == 0 or N == 0 is a no-op.
  if (M < 0 || N < 0 || K <= 0) {
    return Status(StatusCode::kInvalidArgument,
                  "matmul: M = " + std::to_string(M) + ", N = " + std::to_string(N) +
                      ", K = " + std::to_string(K) + " (need M, N >= 0, K > 0)");
  }
  if (kBlock && K % kQK != 0) {
    return Status(StatusCode::kInvalidArgument, "matmul: K = " + std::to_string(K) +
                                                    " is not a multiple of 32 for a block format");
  }
  if (is_kquant_v<TW> && K % kQK_K != 0) {
    return Status(StatusCode::kInvalidArgument,
                  "matmul: K = " + std::to_string(K) + " is not a multiple of 256 for a K-quant");
  }
  if (M == 0 || N == 0) return Status::Ok();
  if (x == nullptr || w == nullptr || y == nullptr) {
    return Status(StatusCode::kInvalidArgument, "matmul: null pointer");
  }
  if (takes_gemv<TX, TW>(M, w_scale)) {
    if constexpr (is_kquant_v<TW>) {
      return detail::kq_gemv<TX, TW>(x, w, y, M, N, K, stream);  // w_scale is fp8-only (ops)
    } else {
      return detail::gemv<TX, TW>(x, w, w_scale, y, M, N, K, stream);
    }
  }
#if GEMMA3_WITH_CUBLAS
  if constexpr (std::is_same_v<TX, bf16> && std::is_same_v<TW, bf16>) {
    if (w_scale == nullptr && M <= INT_MAX && N <= INT_MAX && K <= INT_MAX) {
      return detail::cublas_gemm_bf16(x, w, y, M, N, K, stream);
    }
  }
#endif
  return detail::gemm<TX, TW>(x, w, w_scale, y, M, N, K, stream);
}

// Decode (where the GEMV takes the epilogue: takes_gemv, gemv_pairs_ok): one GEMV whose row groups
// read gate and up rows in pairs and write gelu_mul's output (gemv_common.cuh GeluPairs); gate_up
// is not written. Otherwise matmul into gate_up, then gelu_mul over its two halves. Same bits
// either way.
template <typename TX, typename TW>
Status matmul_gelu_mul(const TX* x, const TW* w, const float* w_scale, TX* gate_up, TX* out,
                       int64_t M, int64_t F, int64_t K, cudaStream_t stream) {
  if (M < 0 || F < 0 || K <= 0 || F > (int64_t(1) << 61)) {
    return Status(StatusCode::kInvalidArgument,
                  "matmul_gelu_mul: M = " + std::to_string(M) + ", F = " + std::to_string(F) +
                      ", K = " + std::to_string(K) + " (need M, F >= 0, K > 0)");
  }
  if (M == 0 || F == 0) return Status::Ok();
  if (x == nullptr || w == nullptr || gate_up == nullptr || out == nullptr) {
    return Status(StatusCode::kInvalidArgument, "matmul_gelu_mul: null pointer");
  }
  if constexpr (!is_kquant_v<TW>) {
    if (gelu_epilogue_enabled() && takes_gemv<TX, TW>(M, w_scale) &&
        detail::gemv_pairs_ok<TX, TW>(x, w, K)) {
      return detail::gemv<TX, TW>(x, w, w_scale, gate_up, M, 2 * F, K, stream,
                                  detail::GeluPairs<TX>{out, F});
    }
  }
  G3_RETURN_IF_ERROR((matmul<TX, TW>(x, w, w_scale, gate_up, M, 2 * F, K, stream)));
  return gelu_mul<TX>(gate_up, gate_up + F, out, M, F, 2 * F, 2 * F, stream);
}

#define G3_MATMUL_INSTANTIATE(TX, TW)                                                            \
  template Status matmul<TX, TW>(const TX*, const TW*, const float*, TX*, int64_t, int64_t,      \
                                 int64_t, cudaStream_t);                                         \
  template Status matmul_gelu_mul<TX, TW>(const TX*, const TW*, const float*, TX*, TX*, int64_t, \
                                          int64_t, int64_t, cudaStream_t);
G3_MATMUL_INSTANTIATE(float, float)
G3_MATMUL_INSTANTIATE(float, bf16)
G3_MATMUL_INSTANTIATE(float, block_q8_0)
G3_MATMUL_INSTANTIATE(float, block_q4_0)
G3_MATMUL_INSTANTIATE(float, block_q4_0s)
G3_MATMUL_INSTANTIATE(float, block_q8_0s)
G3_MATMUL_INSTANTIATE(float, fp8e4m3)
G3_MATMUL_INSTANTIATE(bf16, float)
G3_MATMUL_INSTANTIATE(bf16, bf16)
G3_MATMUL_INSTANTIATE(bf16, block_q8_0)
G3_MATMUL_INSTANTIATE(bf16, block_q4_0)
G3_MATMUL_INSTANTIATE(bf16, block_q4_0s)
G3_MATMUL_INSTANTIATE(bf16, block_q8_0s)
G3_MATMUL_INSTANTIATE(bf16, fp8e4m3)
G3_MATMUL_INSTANTIATE(float, block_q4_K)
G3_MATMUL_INSTANTIATE(float, block_q5_K)
G3_MATMUL_INSTANTIATE(float, block_q6_K)
G3_MATMUL_INSTANTIATE(bf16, block_q4_K)
G3_MATMUL_INSTANTIATE(bf16, block_q5_K)
G3_MATMUL_INSTANTIATE(bf16, block_q6_K)
#undef G3_MATMUL_INSTANTIATE

}  // namespace gemma3::cuda
