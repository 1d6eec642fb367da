// The small kernels of linear.cu that linear_bf16.cu reuses (its bias and residual are fp32, its dy bf16).
// Include after common.cuh.
#ifndef D4J_CUDA_LINEAR_CUH
#define D4J_CUDA_LINEAR_CUH

#include <cstdint>

namespace d4j::cuda {

// y [M, N] = bias[n] + residual[m, n] (either may be null, not both): the GEMM then accumulates onto it (beta 1).
int linear_prefill(cudaStream_t stream, const float *bias, const float *residual, int64_t M, int64_t N, float *y);
// dbias [N] += Σ_m dy[m, :], fp32 sums in the order linear.cu documents, a function of (M, N) only (no atomics);
// dy fp32 or bf16 bits. More than 256 rows use the stream's partials scratch (cublas.cuh: refused if it must grow
// during a graph capture).
int linear_bias_grad(cudaStream_t stream, const float *dy, int64_t M, int64_t N, float *dbias);
int linear_bias_grad(cudaStream_t stream, const uint16_t *dy, int64_t M, int64_t N, float *dbias);

}  // namespace d4j::cuda

#endif
