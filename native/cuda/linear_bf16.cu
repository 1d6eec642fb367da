// nn.Linear with bf16 operands on the GPU (distill4j_impl.h, d4j_impl_linear_bf16_*): x, weight and dy bf16, every
// product exact in fp32 and every sum fp32, y, dx, dweight and dbias fp32. The GEMMs have CUDA_R_16BF operands, a
// CUDA_R_32F result and CUBLAS_COMPUTE_32F (cublas.cuh; under the emulator the operands are widened to fp32, exactly,
// for the host's OpenBLAS): the forward and dW are cublasLtMatmul calls with the BIAS and BGRADB epilogues as in
// linear.cu, dx a cublasGemmEx; where cuBLASLt has no algorithm, linear.cu's prologue and bias-gradient kernels
// (linear.cuh, the latter reading dy as bf16) around cublasGemmEx. The CPU twin is native/cpu/linear_bf16.cpp.
// Emulated only so far: never run on a GPU.
#include "common.cuh"
#include "cublas.cuh"
#include "distill4j_impl.h"
#include "launch.cuh"
#include "linear.cuh"

#include <cstdint>
#include <limits>

namespace {

using namespace d4j::cuda;

const char *check_sizes(int64_t M, int64_t K, int64_t N) {
    if (M <= 0 || K <= 0 || N <= 0) return "linear_bf16: M, K and N must be positive";
    constexpr int64_t kIntMax = std::numeric_limits<int>::max();
    if (M > kIntMax || K > kIntMax || N > kIntMax) return "linear_bf16: a size exceeds the 2^31 of a BLAS call";
    return nullptr;
}

}  // namespace

D4J_IMPL_API int d4j_impl_linear_bf16_forward(void *stream_ptr, const uint16_t *x, const uint16_t *weight,
                                              const float *bias, const float *residual, int64_t M, int64_t K,
                                              int64_t N, float *y) {
    if (const char *why = check_sizes(M, K, N)) return fail(why);
    if (x == nullptr || weight == nullptr || y == nullptr)
        return fail("linear_bf16 forward: x, weight and y must not be null");
    if (residual != nullptr && residual == y) return fail("linear_bf16 forward: residual may not alias y");
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    // y [M, N] = x [M, K] · Wᵀ (+ residual as C, beta 1) (+ bias by the BIAS epilogue): one cublasLtMatmul.
    const int rc = lt_gemm_rm(stream, "linear_bf16", gemm_mode::bf16, kNoTrans, kTrans, M, N, K, x, K, weight, K,
                              residual, bias, nullptr, y, N);
    if (rc != kLtUnsupported) return rc;
    // No cuBLASLt algorithm for the case: the prologue kernel, then cuBLAS accumulating onto it.
    const bool prefill = bias != nullptr || residual != nullptr;
    if (prefill && linear_prefill(stream, bias, residual, M, N, y) != 0) return 1;
    return gemm_rm(stream, "linear_bf16", gemm_mode::bf16, kNoTrans, kTrans, M, N, K, x, K, weight, K,
                   prefill ? 1.0f : 0.0f, y, N);
}

D4J_IMPL_API int d4j_impl_linear_bf16_backward(void *stream_ptr, const uint16_t *x, const uint16_t *weight,
                                               const uint16_t *dy, int64_t M, int64_t K, int64_t N, float *dx,
                                               float *dweight, float *dbias) {
    if (const char *why = check_sizes(M, K, N)) return fail(why);
    if (x == nullptr || weight == nullptr || dy == nullptr || dweight == nullptr)
        return fail("linear_bf16 backward: x, weight, dy and dweight must not be null");
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    // dx [M, K] = dy [M, N] · W [N, K]
    if (dx != nullptr && gemm_rm(stream, "linear_bf16", gemm_mode::bf16, kNoTrans, kNoTrans, M, K, N, dy, N, weight,
                                 K, 0.0f, dx, K) != 0)
        return 1;
    // dW [N, K] += dyᵀ [N, M] · x [M, K] (C = D = dW, beta 1), with dbias += Σ_m dy (bf16 values, exact in fp32) by
    // the BGRADB epilogue.
    const int rc = lt_gemm_rm(stream, "linear_bf16", gemm_mode::bf16, kTrans, kNoTrans, N, K, M, dy, N, x, K, dweight,
                              nullptr, dbias, dweight, K);
    if (rc != kLtUnsupported) return rc;
    if (gemm_rm(stream, "linear_bf16", gemm_mode::bf16, kTrans, kNoTrans, N, K, M, dy, N, x, K, 1.0f, dweight, K) != 0)
        return 1;
    return dbias != nullptr ? linear_bias_grad(stream, dy, M, N, dbias) : 0;
}
