// LayerNorm over the last dimension on the GPU (timm: eps 1e-6). One warp per row, 8 rows per block: a ViT row
// (C = 96..384, a few thousand at most) is 3-12 floats per lane, re-read from L1 by the later sweeps.
// Forward: mean, then the mean of (x - mean)^2 (no E[x^2] - E[x]^2 cancellation), then y; mean and rstd saved.
// Backward, kernel 1: each of W = min(M, 1024) warps takes rows w, w + W, ...: dx += rstd (g - mean(g) - xhat
// mean(g xhat)), g = dy w, and adds dy xhat, dy into its own slice [2][C] of the workspace (each lane only ever
// touches its own columns: no atomics, no races).
// dweight, dbias are the W slices summed per column, in two levels so that many SMs share the work (one thread per
// column over all W slices ran 2 CTAs at C = 192, each thread 1024 loads deep):
//   kernel 2, only when W > 32: CTA (64-column tile, group g) sums slices 32g .. 32g + 31 (fewer in the last group)
//     per column in slice order and writes the sum in place over slice 32g, the first of its range;
//   kernel 3: per column, the group sums (slices 0, 32, 64, ...) in group order, or for W <= 32 the W slices in
//     slice order, added into dweight, dbias.
// Lanes are adjacent columns: a warp's loads are 128 contiguous bytes. W, the groups and the order of every
// addition depend only on M and C (never on the SM count), so the bits are the same on every run and every GPU.
// The bf16 forward (issue #18: y feeds a bf16 GEMM) is the same kernel with a bf16 store: each y the fp32 value,
// rounded once as cast.cu rounds; mean and rstd stay fp32.
#include "common.cuh"
#include "distill4j_impl.h"
#include "launch.cuh"
#include "reduce.cuh"
#include "tensor_core.cuh"

#include <cstdint>
#include <cstdio>

namespace {

using namespace d4j::cuda;

constexpr int kThreads = 256, kRowsPerBlock = kThreads / 32;
// Kernel 1's warp count W = min(M, kMaxWarps), a constant: W derived from the SM count would make the bits depend on
// the card. 1024 warps are 128 blocks of 8, spread one to an SM over 128 of a 132-SM H100/H200 (A100, 108 SMs: 20
// take two); an SM holds at least 5 such blocks (48 registers a thread), so all are resident at once and there is
// no tail wave. The workspace is W slices of 2C floats, 8 KB a warp at C = 1024: 8 MB in all, within L2 (40 MB on
// A100, 50 MB on H100), so the passes below read it from L2. More warps would hide more of kernel 1's latency at
// large M (8 warps an SM stream the rows of x, dy, dx) for as much more workspace to write and sum; that trade has
// not been measured on a GPU, so 1024 stays.
constexpr int64_t kMaxWarps = 1024;
// Slices per group of kernel 2: sqrt(kMaxWarps), so neither level sums more than 32 terms a column (kernel 2 at most
// 32 slices, kernel 3 at most 32 groups), each a short chain of L2 loads, not one of 1024.
constexpr int64_t kGroup = 32;
// Columns of [dweight | dbias] per CTA in kernels 2 and 3, one thread each. DeiT-Ti's 2C = 384 is 6 tiles: with 32
// groups 192 CTAs of 2 warps, one or two on every SM of a 132-SM card (a 256-column tile: 64 CTAs, half the SMs).
constexpr int kTile = 64;

int64_t warps(int64_t M) { return M < kMaxWarps ? M : kMaxWarps; }

// T: float or uint16_t (bf16 bits), deduced at the launch.
template <typename T>
__global__ void __launch_bounds__(kThreads) layernorm_fwd(const float *x, const float *w, const float *b, int64_t M,
                                                          int64_t C, float eps, T *y, float *mean, float *rstd) {
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
    T *yr = y + row * C;
    for (int64_t i = lane; i < C; i += 32) d4j::tc::store_as(yr, i, fmaf((xr[i] - mu) * r, w[i], b[i]));
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

// Group g = blockIdx.y: column j of [dweight | dbias] summed over the group's slices of the workspace [W][2C], in
// place over its first. Eight loads in flight before their adds, which stay in slice order (nvcc does not
// reassociate float adds).
__global__ void __launch_bounds__(kTile) layernorm_bwd_groups(float *partial, int64_t C, int64_t W) {
    const int64_t j = static_cast<int64_t>(blockIdx.x) * kTile + threadIdx.x, C2 = 2 * C;
    if (j >= C2) return;
    const int64_t first = static_cast<int64_t>(blockIdx.y) * kGroup;
    const int64_t n = W - first < kGroup ? W - first : kGroup;
    float *col = partial + first * C2 + j;
    float s = col[0];
#pragma unroll 8
    for (int64_t k = 1; k < n; ++k) s += col[k * C2];
    col[0] = s;
}

// Column j < C: dweight[j]; C <= j < 2C: dbias[j - C]. Slices 0, stride, 2 stride, ... (n of them) summed in order.
__global__ void __launch_bounds__(kTile) layernorm_bwd_params(const float *partial, int64_t C, int64_t stride,
                                                              int64_t n, float *dweight, float *dbias) {
    const int64_t j = static_cast<int64_t>(blockIdx.x) * kTile + threadIdx.x;
    if (j >= 2 * C) return;
    const float *col = partial + j;
    const int64_t step = stride * 2 * C;
    float s = col[0];
#pragma unroll 8
    for (int64_t k = 1; k < n; ++k) s += col[k * step];
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

namespace {

template <typename T>
int forward(const char *name, void *stream, const float *x, const float *weight, const float *bias, int64_t M,
            int64_t C, float eps, T *y, float *mean, float *rstd) {
    char msg[96];
    if (x == nullptr || weight == nullptr || bias == nullptr || y == nullptr || mean == nullptr || rstd == nullptr)
        return std::snprintf(msg, sizeof msg, "%s: null buffer", name), fail(msg);
    if (M <= 0 || C <= 0 || !(eps >= 0.0f))
        return std::snprintf(msg, sizeof msg, "%s: empty shape or eps < 0", name), fail(msg);
    if (M > 8LL * 2147483647LL) return std::snprintf(msg, sizeof msg, "%s: too many rows", name), fail(msg);
    const dim3 grid(static_cast<unsigned>((M + kRowsPerBlock - 1) / kRowsPerBlock));
    D4J_LAUNCH(layernorm_fwd, grid, dim3(kThreads), 0, static_cast<cudaStream_t>(stream), x, weight, bias, M, C, eps,
               y, mean, rstd);
    return check_launch(name);
}

}  // namespace

D4J_IMPL_API int d4j_impl_layernorm_forward(void *stream, const float *x, const float *weight, const float *bias,
                                            int64_t M, int64_t C, float eps, float *y, float *mean, float *rstd) {
    return forward("layernorm_forward", stream, x, weight, bias, M, C, eps, y, mean, rstd);
}

D4J_IMPL_API int d4j_impl_layernorm_forward_bf16(void *stream, const float *x, const float *weight,
                                                 const float *bias, int64_t M, int64_t C, float eps, uint16_t *y,
                                                 float *mean, float *rstd) {
    return forward("layernorm_forward_bf16", stream, x, weight, bias, M, C, eps, y, mean, rstd);
}

D4J_IMPL_API int d4j_impl_layernorm_backward(void *stream_ptr, const float *x, const float *weight, const float *mean,
                                             const float *rstd, const float *dy, int64_t M, int64_t C, float *dx,
                                             float *dweight, float *dbias, void *workspace) {
    if (x == nullptr || weight == nullptr || mean == nullptr || rstd == nullptr || dy == nullptr || dx == nullptr ||
        dweight == nullptr || dbias == nullptr || workspace == nullptr)
        return fail("layernorm_backward: null buffer");
    if (M <= 0 || C <= 0) return fail("layernorm_backward: empty shape");
    if (C > kTile / 2 * 2147483647LL) return fail("layernorm_backward: C too large");  // 2C / kTile CTAs
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    const int64_t W = warps(M);
    float *partial = static_cast<float *>(workspace);
    D4J_LAUNCH(layernorm_bwd_rows, dim3(static_cast<unsigned>((W + kRowsPerBlock - 1) / kRowsPerBlock)),
               dim3(kThreads), 0, stream, x, weight, mean, rstd, dy, M, C, W, dx, partial);
    if (check_launch("layernorm_backward rows") != 0) return 1;
    const unsigned tiles = static_cast<unsigned>((2 * C + kTile - 1) / kTile);
    int64_t stride = 1, n = W;  // W <= kGroup: the slices themselves
    if (W > kGroup) {
        stride = kGroup, n = (W + kGroup - 1) / kGroup;
        D4J_LAUNCH(layernorm_bwd_groups, dim3(tiles, static_cast<unsigned>(n)), dim3(kTile), 0, stream, partial, C, W);
        if (check_launch("layernorm_backward groups") != 0) return 1;
    }
    D4J_LAUNCH(layernorm_bwd_params, dim3(tiles), dim3(kTile), 0, stream, partial, C, stride, n, dweight, dbias);
    return check_launch("layernorm_backward params");
}
