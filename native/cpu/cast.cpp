// The CPU twin of native/cuda/cast.cu: fp32 -> bf16 round to nearest even (cvt.rn.bf16.f32), NaN kept as a quiet NaN
// with its sign and the payload's upper bits (as the CUDA kernel, and x86's VCVTNEPS2BF16), and bf16 -> fp32 exact.
// The rounding is d4j::cpu::bf16_rn (common.h), shared with the fused bf16 outputs (gelu.cpp).
#include "distill4j_impl.h"
#include "common.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace {

// Blocks of 16384 elements: element-wise, so the split never changes a result.
constexpr int64_t kBlock = 16384;

void cast_bf16(const float *x, int64_t n, uint16_t *y) {
    const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(dynamic, 1) num_threads(d4j::cpu::threads_for(n))
    for (int64_t b = 0; b < blocks; ++b) {
        const int64_t end = std::min(n, (b + 1) * kBlock);
        for (int64_t i = b * kBlock; i < end; ++i) {
            uint32_t u;
            std::memcpy(&u, x + i, sizeof u);
            y[i] = d4j::cpu::bf16_rn(u);
        }
    }
}

void cast_f32(const uint16_t *x, int64_t n, float *y) {
    const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(dynamic, 1) num_threads(d4j::cpu::threads_for(n))
    for (int64_t b = 0; b < blocks; ++b) {
        const int64_t end = std::min(n, (b + 1) * kBlock);
        for (int64_t i = b * kBlock; i < end; ++i) {
            const uint32_t u = static_cast<uint32_t>(x[i]) << 16;
            std::memcpy(y + i, &u, sizeof u);
        }
    }
}

}  // namespace

D4J_IMPL_API int d4j_impl_cast_bf16(void *, const float *x, int64_t n, uint16_t *y) {
    if (x == nullptr || y == nullptr || n <= 0) return d4j::cpu::fail("cast_bf16: null buffer or n <= 0");
    cast_bf16(x, n, y);
    return 0;
}

D4J_IMPL_API int d4j_impl_cast_f32(void *, const uint16_t *x, int64_t n, float *y) {
    if (x == nullptr || y == nullptr || n <= 0) return d4j::cpu::fail("cast_f32: null buffer or n <= 0");
    cast_f32(x, n, y);
    return 0;
}
