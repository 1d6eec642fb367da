// Gradient-norm clipping (sum of squares, clip coefficient) and the AdamW step on the GPU, with no host round trip:
// the clip coefficient stays in device memory and AdamW reads it there.
#include "common.cuh"
#include "distill4j_impl.h"
#include "launch.cuh"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstdint>

namespace {

// The value the caller wrote: the ABI passes hyper-parameters as float, and 0.999f is 0.99900001287, so 1 - beta2
// would be off by 1.3e-5 relative from PyTorch's 1 - 0.999 (its scalars are Python floats, i.e. double). The
// shortest decimal that round-trips the float ("0.999") is what the user typed; read back as a double, it gives
// torch's scalars.
double decimal(float f) {
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof buf - 1, f);
    *r.ptr = '\0';
    return std::strtod(buf, nullptr);
}

using namespace d4j::cuda;

constexpr int kSumThreads = 1024;
constexpr int kAdamThreads = 256;
constexpr int64_t kAdamMaxBlocks = D4J_CUDA_EMU ? 8 : 4096;  // emulated: small, so tests reach the grid-stride turns

// One block over the whole tensor: each thread a strided float sum per 4 elements, folded into a double, then a
// fixed-order tree in shared memory. No second kernel and no workspace (the ABI has none), no float atomics: the
// same bits on every run. One block streams at a fraction of the device's bandwidth, but the call is once per
// step, over the model's flat gradient buffer (24 MB for DeiT-Ti): many blocks in a fixed order would need a
// workspace the ABI does not have.
__global__ void __launch_bounds__(kSumThreads) sum_squares_block(const float *x, int64_t n, int accumulate,
                                                                  float *out) {
    D4J_STATIC_SMEM(double, part, [kSumThreads]);
    double acc = 0.0;
    const bool vec4 = (reinterpret_cast<uintptr_t>(x) & 15u) == 0;
    int64_t i = 0;
    if (vec4) {
        const float4 *x4 = reinterpret_cast<const float4 *>(x);
        for (int64_t j = threadIdx.x; j < n / 4; j += kSumThreads) {
            const float4 v = x4[j];
            acc += static_cast<double>(v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w);
        }
        i = n / 4 * 4;
    }
    for (int64_t j = i + threadIdx.x; j < n; j += kSumThreads) acc += static_cast<double>(x[j]) * x[j];
    part[threadIdx.x] = acc;
    for (int s = kSumThreads / 2; s > 0; s >>= 1) {
        __syncthreads();
        if (static_cast<int>(threadIdx.x) < s) part[threadIdx.x] += part[threadIdx.x + s];
    }
    if (threadIdx.x == 0) *out = static_cast<float>((accumulate ? static_cast<double>(*out) : 0.0) + part[0]);
}

__global__ void clip_scale_one(const float *sumsq, float max_norm, float *norm, float *scale) {
    const float total = sqrtf(*sumsq);
    const float coef = max_norm / (total + 1e-6f);
    *norm = total;
    *scale = coef > 1.0f ? 1.0f : coef;  // torch.clamp(coef, max=1): a NaN norm gives a NaN scale, as in PyTorch
}

struct adamw_args {
    float *param, *m, *v;
    const float *grad, *grad_scale;
    int64_t n;
    float decay, b1, b2, c1, c2, step_size, bc2_sqrt, eps;
};

__global__ void __launch_bounds__(kAdamThreads) adamw_step(adamw_args a) {
    const float gs = a.grad_scale != nullptr ? *a.grad_scale : 1.0f;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < a.n; i += stride) {
        const float g = a.grad[i] * gs;
        const float m = a.b1 * a.m[i] + a.c1 * g, v = a.b2 * a.v[i] + a.c2 * g * g;
        a.m[i] = m;
        a.v[i] = v;
        a.param[i] = a.param[i] * a.decay - a.step_size * (m / (sqrtf(v) / a.bc2_sqrt + a.eps));
    }
}

}  // namespace

D4J_IMPL_API int d4j_impl_sum_squares(void *stream, const float *x, int64_t n, int accumulate, float *out) {
    if (out == nullptr || n < 0 || (x == nullptr && n > 0)) return fail("sum_squares: null buffer or n < 0");
    D4J_LAUNCH(sum_squares_block, dim3(1), dim3(kSumThreads), 0, static_cast<cudaStream_t>(stream), x, n,
               accumulate, out);
    return check_launch("sum_squares");
}

D4J_IMPL_API int d4j_impl_clip_scale(void *stream, const float *sumsq, float max_norm, float *norm, float *scale) {
    if (sumsq == nullptr || norm == nullptr || scale == nullptr) return fail("clip_scale: null buffer");
    D4J_LAUNCH(clip_scale_one, dim3(1), dim3(1), 0, static_cast<cudaStream_t>(stream), sumsq, max_norm, norm, scale);
    return check_launch("clip_scale");
}

D4J_IMPL_API int d4j_impl_adamw(void *stream, float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                                float beta1, float beta2, float eps, float weight_decay, int64_t step,
                                const float *grad_scale) {
    if (param == nullptr || grad == nullptr || m == nullptr || v == nullptr || n < 0 || step < 1)
        return fail("adamw: null buffer, n < 0 or step < 1");
    if (n == 0) return 0;
    // torch.optim.AdamW's scalars, formed in double on the host as Python does, rounded once to float.
    const double b1d = decimal(beta1), b2d = decimal(beta2), lrd = decimal(lr);
    const double bc1 = 1.0 - std::pow(b1d, static_cast<double>(step));
    const double bc2 = 1.0 - std::pow(b2d, static_cast<double>(step));
    const adamw_args a{param, m, v, grad, grad_scale, n,
                       static_cast<float>(1.0 - lrd * decimal(weight_decay)), beta1, beta2,
                       static_cast<float>(1.0 - b1d), static_cast<float>(1.0 - b2d), static_cast<float>(lrd / bc1),
                       static_cast<float>(std::sqrt(bc2)), eps};
    const int64_t blocks = std::min<int64_t>((n + kAdamThreads - 1) / kAdamThreads, kAdamMaxBlocks);
    D4J_LAUNCH(adamw_step, dim3(static_cast<unsigned>(blocks)), dim3(kAdamThreads), 0,
               static_cast<cudaStream_t>(stream), a);
    return check_launch("adamw");
}
