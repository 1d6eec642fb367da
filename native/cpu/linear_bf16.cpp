// The CPU twin of native/cuda/linear_bf16.cu (d4j_impl_linear_bf16_* in distill4j_impl.h): nn.Linear with bf16
// operands. Widening bf16 to fp32 is exact (the bf16 bits are the upper half of the fp32 word), and a product of
// two bf16 values is exact in fp32, so the fp32 linear op (linear.cpp: OpenBLAS sgemm, fp32 sums) on the widened
// copies computes what the card's cublasGemmEx with CUBLAS_COMPUTE_32F does, in another summation order. The
// copies cost memory and a pass: speed in bf16 is not a goal of the CPU backend (issue #18).
#include "distill4j_impl.h"
#include "common.h"

#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <vector>

namespace {

using namespace d4j::cpu;

const char *check_sizes(int64_t M, int64_t K, int64_t N) {
    if (M <= 0 || K <= 0 || N <= 0) return "linear_bf16: M, K and N must be positive";
    constexpr int64_t kIntMax = std::numeric_limits<int>::max();
    if (M > kIntMax || K > kIntMax || N > kIntMax) return "linear_bf16: a size exceeds the 2^31 of a BLAS call";
    return nullptr;
}

void widen(const uint16_t *h, int64_t n, std::vector<float> &out) {
    out.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        const uint32_t u = static_cast<uint32_t>(h[i]) << 16;
        std::memcpy(&out[i], &u, sizeof u);
    }
}

}  // namespace

D4J_IMPL_API int d4j_impl_linear_bf16_forward(void *stream, const uint16_t *x, const uint16_t *weight,
                                              const float *bias, const float *residual, int64_t M, int64_t K,
                                              int64_t N, float *y) {
    if (const char *why = check_sizes(M, K, N)) return fail(why);
    if (x == nullptr || weight == nullptr || y == nullptr)
        return fail("linear_bf16 forward: x, weight and y must not be null");
    if (residual != nullptr && residual == y) return fail("linear_bf16 forward: residual may not alias y");
    std::vector<float> xf, wf;
    try {
        widen(x, M * K, xf);
        widen(weight, N * K, wf);
    } catch (const std::bad_alloc &) {
        return fail("linear_bf16: no memory for the fp32 copies of the operands");
    }
    return d4j_impl_linear_forward(stream, xf.data(), wf.data(), bias, residual, M, K, N, y, 0);
}

D4J_IMPL_API int d4j_impl_linear_bf16_backward(void *stream, const uint16_t *x, const uint16_t *weight,
                                               const uint16_t *dy, int64_t M, int64_t K, int64_t N, float *dx,
                                               float *dweight, float *dbias) {
    if (const char *why = check_sizes(M, K, N)) return fail(why);
    if (x == nullptr || weight == nullptr || dy == nullptr || dweight == nullptr)
        return fail("linear_bf16 backward: x, weight, dy and dweight must not be null");
    std::vector<float> xf, wf, dyf;
    try {
        widen(x, M * K, xf);
        widen(weight, N * K, wf);
        widen(dy, M * N, dyf);
    } catch (const std::bad_alloc &) {
        return fail("linear_bf16: no memory for the fp32 copies of the operands");
    }
    return d4j_impl_linear_backward(stream, xf.data(), wf.data(), dyf.data(), M, K, N, dx, dweight, dbias, 0);
}
