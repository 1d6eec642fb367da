// The prefix tokens (class, then distillation) gathered for the heads, and the scatter back. See distill4j_impl.h.
// Element-wise grid-stride copies: the result does not depend on the grid, so the emulator runs a small one.
#include "common.cuh"
#include "distill4j_impl.h"
#include "launch.cuh"

#include <algorithm>
#include <cstdint>

namespace {

using namespace d4j::cuda;

constexpr int kThreads = 256;
// Enough blocks to fill any current GPU for a copy; the emulator runs one OS thread per CUDA thread.
constexpr int64_t kMaxBlocks = D4J_CUDA_EMU ? 8 : 4096;

dim3 grid_for(int64_t n) { return dim3(static_cast<unsigned>(std::min(kMaxBlocks, (n + kThreads - 1) / kThreads))); }

// rows[p, b, d] = tokens[b, p, d]
__global__ void __launch_bounds__(kThreads)
    token_rows_gather(const float *tokens, int64_t B, int64_t T, int64_t D, int64_t prefix, float *rows) {
    const int64_t n = prefix * B * D, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
        const int64_t d = i % D, pb = i / D, b = pb % B, p = pb / B;
        rows[i] = tokens[(b * T + p) * D + d];
    }
}

// dtokens[b, t, d] = t < prefix ? drows[t, b, d] : 0 (written whole: it starts the backward pass)
__global__ void __launch_bounds__(kThreads)
    token_rows_scatter(const float *drows, int64_t B, int64_t T, int64_t D, int64_t prefix, float *dtokens) {
    const int64_t n = B * T * D, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
        const int64_t d = i % D, bt = i / D, t = bt % T, b = bt / T;
        dtokens[i] = t < prefix ? drows[(t * B + b) * D + d] : 0.0f;
    }
}

const char *check(int64_t B, int64_t T, int64_t D, int64_t prefix) {
    if (B <= 0 || T <= 0 || D <= 0) return "token_rows: B, T and D must be positive";
    if (prefix <= 0 || prefix > T) return "token_rows: prefix must be in [1, T]";
    if (B > (int64_t{1} << 58) / T / D) return "token_rows: more than 2^58 elements";
    return nullptr;
}

}  // namespace

D4J_IMPL_API int d4j_impl_token_rows_forward(void *stream, const float *tokens, int64_t B, int64_t T, int64_t D,
                                             int64_t prefix, float *rows) {
    if (const char *why = check(B, T, D, prefix)) return fail(why);
    if (tokens == nullptr || rows == nullptr) return fail("token_rows forward: tokens and rows must not be null");
    D4J_LAUNCH(token_rows_gather, grid_for(prefix * B * D), dim3(kThreads), 0, static_cast<cudaStream_t>(stream),
               tokens, B, T, D, prefix, rows);
    return check_launch("token_rows_gather");
}

D4J_IMPL_API int d4j_impl_token_rows_backward(void *stream, const float *drows, int64_t B, int64_t T, int64_t D,
                                              int64_t prefix, float *dtokens) {
    if (const char *why = check(B, T, D, prefix)) return fail(why);
    if (drows == nullptr || dtokens == nullptr) return fail("token_rows backward: drows and dtokens must not be null");
    D4J_LAUNCH(token_rows_scatter, grid_for(B * T * D), dim3(kThreads), 0, static_cast<cudaStream_t>(stream), drows,
               B, T, D, prefix, dtokens);
    return check_launch("token_rows_scatter");
}
