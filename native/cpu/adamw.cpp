// Gradient-norm clipping (sum of squares, clip coefficient) and the AdamW step on the CPU.
#include "distill4j_impl.h"
#include "common.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <vector>

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
// Blocks of a fixed size, not "one per thread": the partial sums, hence the bits of the total, do not depend on the
// thread count. Each block sums in float (8 lanes, vectorised), the blocks in double, in order.
constexpr int64_t kBlock = 8192;

float block_sumsq(const float *x, int64_t n) {
    float lanes[16] = {};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
#pragma omp simd
        for (int j = 0; j < 16; ++j) lanes[j] += x[i + j] * x[i + j];
    float s = 0.f;
    for (int j = 0; j < 16; ++j) s += lanes[j];
    for (; i < n; ++i) s += x[i] * x[i];
    return s;
}
}  // namespace

D4J_IMPL_API int d4j_impl_sum_squares(void *, const float *x, int64_t n, int accumulate, float *out) {
    if (out == nullptr || n < 0 || (x == nullptr && n > 0)) return d4j::cpu::fail("sum_squares: null buffer or n < 0");
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    double total = 0.0;
    if (blocks <= 1) {
        total = n > 0 ? block_sumsq(x, n) : 0.0;
    } else {
        std::vector<float> partial(static_cast<size_t>(blocks));
#pragma omp parallel for schedule(dynamic, 1) num_threads(d4j::cpu::threads_for(n))
        for (int64_t b = 0; b < blocks; ++b) partial[b] = block_sumsq(x + b * kBlock, std::min(kBlock, n - b * kBlock));
        for (int64_t b = 0; b < blocks; ++b) total += partial[b];
    }
    out[0] = static_cast<float>((accumulate ? static_cast<double>(out[0]) : 0.0) + total);
    return 0;
}

D4J_IMPL_API int d4j_impl_clip_scale(void *, const float *sumsq, float max_norm, float *norm, float *scale) {
    if (sumsq == nullptr || norm == nullptr || scale == nullptr) return d4j::cpu::fail("clip_scale: null buffer");
    const float total = std::sqrt(sumsq[0]);
    const float coef = max_norm / (total + 1e-6f);
    norm[0] = total;
    scale[0] = coef > 1.f ? 1.f : coef;  // torch.clamp(coef, max=1): a NaN norm gives a NaN scale, as in PyTorch
    return 0;
}

D4J_IMPL_API int d4j_impl_adamw(void *, float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                                float beta1, float beta2, float eps, float weight_decay, int64_t step,
                                const float *grad_scale) {
    if (param == nullptr || grad == nullptr || m == nullptr || v == nullptr || n < 0 || step < 1)
        return d4j::cpu::fail("adamw: null buffer, n < 0 or step < 1");
    // torch.optim.AdamW's scalars, formed in double as Python does and rounded once.
    const double b1d = decimal(beta1), b2d = decimal(beta2), lrd = decimal(lr);
    const double bc1 = 1.0 - std::pow(b1d, static_cast<double>(step));
    const double bc2 = 1.0 - std::pow(b2d, static_cast<double>(step));
    const float decay = static_cast<float>(1.0 - lrd * decimal(weight_decay));
    const float step_size = static_cast<float>(lrd / bc1), bc2_sqrt = static_cast<float>(std::sqrt(bc2));
    const float gs = grad_scale != nullptr ? grad_scale[0] : 1.f, b1 = beta1, b2 = beta2,
                c1 = static_cast<float>(1.0 - b1d), c2 = static_cast<float>(1.0 - b2d);
    // Element-wise, in blocks of a fixed size (the same vector and scalar iterations whatever the thread count);
    // a bias or a norm's weight (hundreds of elements) stays on the calling thread.
    const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(dynamic, 1) num_threads(d4j::cpu::threads_for(4 * n))
    for (int64_t b = 0; b < blocks; ++b) {
        const int64_t end = std::min(n, (b + 1) * kBlock);
#pragma omp simd
        for (int64_t i = b * kBlock; i < end; ++i) {
            const float g = grad[i] * gs;
            const float mi = b1 * m[i] + c1 * g, vi = b2 * v[i] + c2 * g * g;
            m[i] = mi;
            v[i] = vi;
            param[i] = param[i] * decay - step_size * (mi / (std::sqrt(vi) / bc2_sqrt + eps));
        }
    }
    return 0;
}
