// Exact (erf) GELU on the GPU, element-wise with a grid-stride loop. Phi as in native/cpu/gelu.cpp: from erfc on
// the side where it is small (1 + erf cancels for x < 0), erfc(z) = t exp(-z^2 + P(t)), t = 1/(1 + z/2)
// (Numerical Recipes' erfcc, relative error < 1.2e-7), with x^2 split into hi + lo by an FMA so that the large
// exponent carries no rounding. erfcf(-x/sqrt 2) would round x/sqrt 2 first: ~1e-6 off in the tail.
// The bf16 entries (issue #18: the next consumer is a bf16 GEMM) are the same kernels with a bf16 store: the fp32
// value computed as for the fp32 output, then rounded once as cast.cu rounds (store_as), instead of a second pass.
#include "common.cuh"
#include "distill4j_impl.h"
#include "launch.cuh"
#include "tensor_core.cuh"

#include <cstdint>

namespace {

constexpr int kThreads = 256;
// Grid-stride beyond: ~30 waves of 132 SMs, enough to hide latency. The emulator runs 8 (one OS thread per CUDA
// thread; the result does not depend on the grid), so that its tests reach the loop's later turns.
constexpr int64_t kMaxBlocks = D4J_CUDA_EMU ? 8 : 4096;

// x clamped to +-20 first (Phi is 0 or 1 in float there): x^2 = inf would make lo = inf - inf = NaN.
__device__ __forceinline__ void gelu_phi(float x_in, float &cdf, float &pdf) {
    const float x = fminf(fmaxf(x_in, -20.0f), 20.0f);
    const float hi = x * x, lo = fmaf(x, x, -hi);
    const float e = expf(-0.5f * hi) * (1.0f - 0.5f * lo);
    const float t = 1.0f / (1.0f + 0.35355339059327376f * fabsf(x));  // 1/(1 + z/2), z = |x|/sqrt 2
    float p = 0.17087277f;
    p = fmaf(p, t, -0.82215223f);
    p = fmaf(p, t, 1.48851587f);
    p = fmaf(p, t, -1.13520398f);
    p = fmaf(p, t, 0.27886807f);
    p = fmaf(p, t, -0.18628806f);
    p = fmaf(p, t, 0.09678418f);
    p = fmaf(p, t, 0.37409196f);
    p = fmaf(p, t, 1.00002368f);
    const float half_erfc = 0.5f * t * e * expf(fmaf(t, p, -1.26551223f));
    cdf = x < 0.0f ? half_erfc : 1.0f - half_erfc;
    pdf = 0.39894228040143268f * e;
}

using d4j::tc::store_as;

// T: float or uint16_t (bf16 bits), deduced at the launch.
template <typename T>
__global__ void __launch_bounds__(kThreads) gelu_fwd(const float *x, int64_t n, T *y) {
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * kThreads) {
        const float v = x[i];
        float cdf, pdf;
        gelu_phi(v, cdf, pdf);
        store_as(y, i, isnan(v) ? v : v * cdf);
    }
}

// fp32 dx may alias dy: each element is read and then written by the same thread.
template <typename T>
__global__ void __launch_bounds__(kThreads) gelu_bwd(const float *x, const float *dy, int64_t n, T *dx) {
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * kThreads) {
        const float v = x[i];
        float cdf, pdf;
        gelu_phi(v, cdf, pdf);
        store_as(dx, i, isnan(v) ? v : dy[i] * fmaf(v, pdf, cdf));
    }
}

dim3 grid_for(int64_t n) {
    const int64_t blocks = (n + kThreads - 1) / kThreads;
    return dim3(static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks));
}

}  // namespace

D4J_IMPL_API int d4j_impl_gelu_forward(void *stream, const float *x, int64_t n, float *y) {
    if (x == nullptr || y == nullptr || n <= 0) return d4j::cuda::fail("gelu_forward: null buffer or n <= 0");
    D4J_LAUNCH(gelu_fwd, grid_for(n), dim3(kThreads), 0, static_cast<cudaStream_t>(stream), x, n, y);
    return d4j::cuda::check_launch("gelu_forward");
}

D4J_IMPL_API int d4j_impl_gelu_backward(void *stream, const float *x, const float *dy, int64_t n, float *dx) {
    if (x == nullptr || dy == nullptr || dx == nullptr || n <= 0)
        return d4j::cuda::fail("gelu_backward: null buffer or n <= 0");
    D4J_LAUNCH(gelu_bwd, grid_for(n), dim3(kThreads), 0, static_cast<cudaStream_t>(stream), x, dy, n, dx);
    return d4j::cuda::check_launch("gelu_backward");
}

D4J_IMPL_API int d4j_impl_gelu_forward_bf16(void *stream, const float *x, int64_t n, uint16_t *y) {
    if (x == nullptr || y == nullptr || n <= 0) return d4j::cuda::fail("gelu_forward_bf16: null buffer or n <= 0");
    D4J_LAUNCH(gelu_fwd, grid_for(n), dim3(kThreads), 0, static_cast<cudaStream_t>(stream), x, n, y);
    return d4j::cuda::check_launch("gelu_forward_bf16");
}

D4J_IMPL_API int d4j_impl_gelu_backward_bf16(void *stream, const float *x, const float *dy, int64_t n, uint16_t *dx) {
    if (x == nullptr || dy == nullptr || dx == nullptr || n <= 0)
        return d4j::cuda::fail("gelu_backward_bf16: null buffer or n <= 0");
    D4J_LAUNCH(gelu_bwd, grid_for(n), dim3(kThreads), 0, static_cast<cudaStream_t>(stream), x, dy, n, dx);
    return d4j::cuda::check_launch("gelu_backward_bf16");
}
