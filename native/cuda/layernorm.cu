// LayerNorm over the last dimension on the GPU (timm: eps 1e-6). One warp per row, 8 rows per block: a ViT row
// (C = 96..384, a few thousand at most) is 3-12 floats per lane, re-read from L1 by the later sweeps.
// Forward: mean, then the mean of (x - mean)^2 (no E[x^2] - E[x]^2 cancellation), then y; mean and rstd saved.
// Backward, kernel 1: each of W warps takes rows w, w + W, ...: dx += rstd (g - mean(g) - xhat mean(g xhat)),
// g = dy w, and adds dy xhat, dy into its own slice [2][C] of the workspace (each lane only ever touches its own
// columns: no atomics, no races). Kernel 2 sums the W slices per column in slice order into dweight, dbias.
// W depends only on M, so the bits are the same on every run and every GPU.
#include "common.cuh"
#include "distill4j_impl.h"
#include "launch.cuh"
#include "reduce.cuh"

#include <cstdint>

namespace {

using namespace d4j::cuda;

constexpr int kThreads = 256, kRowsPerBlock = kThreads / 32;
constexpr int64_t kMaxWarps = 1024;  // backward: 128 blocks of 8 warps, ~1 wave; workspace 8 KB per warp at C = 1024

int64_t warps(int64_t M) { return M < kMaxWarps ? M : kMaxWarps; }

__global__ void __launch_bounds__(kThreads) layernorm_fwd(const float *x, const float *w, const float *b, int64_t M,
                                                          int64_t C, float eps, float *y, float *mean, float *rstd) {
    const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
    if (row >= M) return;  // the whole warp leaves: no block-wide barrier follows
    const int lane = threadIdx.x % 32;
    const float *xr = x + row * C;
    const float inv_c = 1.0f / static_cast<float>(C);
    float s = 0.0f;
    for (int64_t i = lane; i < C; i += 32) s += xr[i];
    const float mu = group_sum<32>(s, nullptr) * inv_c;
    float sq = 0.0f;
    for (int64_t i = lane; i < C; i += 32) {
        const float d = xr[i] - mu;
        sq = fmaf(d, d, sq);
    }
    const float r = 1.0f / sqrtf(group_sum<32>(sq, nullptr) * inv_c + eps);
    float *yr = y + row * C;
    for (int64_t i = lane; i < C; i += 32) yr[i] = fmaf((xr[i] - mu) * r, w[i], b[i]);
    if (lane == 0) mean[row] = mu, rstd[row] = r;
}

__global__ void __launch_bounds__(kThreads) layernorm_bwd_rows(const float *x, const float *w, const float *mean,
                                                               const float *rstd, const float *dy, int64_t M,
                                                               int64_t C, int64_t W, float *dx, float *partial) {
    const int64_t warp = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
    if (warp >= W) return;  // whole warps only
    const int lane = threadIdx.x % 32;
    float *pw = partial + warp * 2 * C, *pb = pw + C;
    for (int64_t i = lane; i < C; i += 32) pw[i] = 0.0f, pb[i] = 0.0f;
    const float inv_c = 1.0f / static_cast<float>(C);
    for (int64_t row = warp; row < M; row += W) {
        const float *xr = x + row * C, *dyr = dy + row * C;
        const float mu = mean[row], r = rstd[row];
        float sg = 0.0f, sgx = 0.0f;
        for (int64_t i = lane; i < C; i += 32) {
            const float xhat = (xr[i] - mu) * r, d = dyr[i], g = __fmul_rn(d, w[i]);
            sg += g;
            sgx = fmaf(g, xhat, sgx);
            pw[i] = fmaf(d, xhat, pw[i]);
            pb[i] += d;
        }
        const float mg = group_sum<32>(sg, nullptr) * inv_c, mgx = group_sum<32>(sgx, nullptr) * inv_c;
        float *dxr = dx + row * C;
        for (int64_t i = lane; i < C; i += 32) {
            // __fmul_rn: g rounded as in the sum above. A fused g - mg would leave the product's rounding error, which
            // rstd (up to 1/sqrt(eps)) magnifies where the row is nearly constant.
            const float xhat = (xr[i] - mu) * r, g = __fmul_rn(dyr[i], w[i]);
            dxr[i] = fmaf(r, (g - mg) - xhat * mgx, dxr[i]);
        }
    }
}

// Column j < C: dweight[j]; C <= j < 2C: dbias[j - C]. Slices summed in order 0..W-1.
__global__ void __launch_bounds__(kThreads) layernorm_bwd_params(const float *partial, int64_t C, int64_t W,
                                                                 float *dweight, float *dbias) {
    const int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
    if (j >= 2 * C) return;
    float s = 0.0f;
    for (int64_t k = 0; k < W; ++k) s += partial[k * 2 * C + j];
    if (j < C)
        dweight[j] += s;
    else
        dbias[j - C] += s;
}

}  // namespace

D4J_IMPL_API int64_t d4j_impl_layernorm_workspace(int64_t M, int64_t C) {
    if (M <= 0 || C <= 0) return fail("layernorm_workspace: empty shape"), -1;
    return warps(M) * 2 * C * static_cast<int64_t>(sizeof(float));
}

D4J_IMPL_API int d4j_impl_layernorm_forward(void *stream, const float *x, const float *weight, const float *bias,
                                            int64_t M, int64_t C, float eps, float *y, float *mean, float *rstd) {
    if (x == nullptr || weight == nullptr || bias == nullptr || y == nullptr || mean == nullptr || rstd == nullptr)
        return fail("layernorm_forward: null buffer");
    if (M <= 0 || C <= 0 || !(eps >= 0.0f)) return fail("layernorm_forward: empty shape or eps < 0");
    if (M > 8LL * 2147483647LL) return fail("layernorm_forward: too many rows");
    const dim3 grid(static_cast<unsigned>((M + kRowsPerBlock - 1) / kRowsPerBlock));
    D4J_LAUNCH(layernorm_fwd, grid, dim3(kThreads), 0, static_cast<cudaStream_t>(stream), x, weight, bias, M, C, eps,
               y, mean, rstd);
    return check_launch("layernorm_forward");
}

D4J_IMPL_API int d4j_impl_layernorm_backward(void *stream_ptr, const float *x, const float *weight, const float *mean,
                                             const float *rstd, const float *dy, int64_t M, int64_t C, float *dx,
                                             float *dweight, float *dbias, void *workspace) {
    if (x == nullptr || weight == nullptr || mean == nullptr || rstd == nullptr || dy == nullptr || dx == nullptr ||
        dweight == nullptr || dbias == nullptr || workspace == nullptr)
        return fail("layernorm_backward: null buffer");
    if (M <= 0 || C <= 0) return fail("layernorm_backward: empty shape");
    if (C > 1024LL * 2147483647LL) return fail("layernorm_backward: C too large");
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    const int64_t W = warps(M);
    float *partial = static_cast<float *>(workspace);
    D4J_LAUNCH(layernorm_bwd_rows, dim3(static_cast<unsigned>((W + kRowsPerBlock - 1) / kRowsPerBlock)),
               dim3(kThreads), 0, stream, x, weight, mean, rstd, dy, M, C, W, dx, partial);
    if (check_launch("layernorm_backward rows") != 0) return 1;
    D4J_LAUNCH(layernorm_bwd_params, dim3(static_cast<unsigned>((2 * C + kThreads - 1) / kThreads)), dim3(kThreads), 0,
               stream, partial, C, W, dweight, dbias);
    return check_launch("layernorm_backward params");
}
