// nn.Linear on the CPU: y = x Wᵀ + b (+ residual) and its backward, as OpenBLAS sgemms (never hand-written) spread
// over the OpenMP threads. See distill4j_impl.h.
//
// Threading. OpenBLAS runs single-threaded in the CPU backend (see gemm_workers in common.h), so each OpenMP
// thread makes sgemm calls on blocks of the output (gemm_blocks: two per thread of threads(), taken dynamically).
// Blocks are split along an output dimension, never along the reduction: every output element is one
// single-threaded dot product in a call that does not depend on the team size, the same bits run to run.
//   forward   y [M, N]:   row blocks of M (column blocks of N when M is too short to share, e.g. the heads, M = B)
//   backward  dx [M, K]:  the same choice over [M, K]
//             dW [N, K]:  row blocks of N (the reduction runs over M); db in column blocks of dy, each owned by
//                         one thread.
//
// Epilogue. The bias (+ residual) is written into y first and the GEMM accumulates onto it (beta = 1): OpenBLAS
// reads each C tile while it computes it, cheaper than a second pass over y, and each thread fills the very block
// it then multiplies, while it is in its cache.
//
// TF32 (precision 1). The card's tensor cores multiply TF32 operands (fp32's 8-bit exponent, 10 explicit mantissa
// bits: every product exact in fp32) and sum in fp32. NVIDIA does not document how cuBLAS's
// CUBLAS_COMPUTE_32F_FAST_TF32 rounds the fp32 operands to TF32 (to nearest, or by truncation). Here, and in the
// emulator (native/cuda/cublas.cu), copies of the operands are rounded to nearest even before the same fp32 sgemm,
// so that the CPU models the card's arithmetic; tests that compare with a card therefore bound the error by 2^-10
// relative per operand, which covers truncation too. The copies cost memory and a pass: speed is not the point.
#include "distill4j_impl.h"
#include "common.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <new>
#include <vector>

namespace {

using namespace d4j::cpu;

// Rows when there are at least as many as columns or enough for every block, columns otherwise.
bool split_rows(int64_t rows, int64_t cols) { return rows >= cols || gemm_blocks(rows) == gemm_max_blocks(); }

const char *check_sizes(int64_t M, int64_t K, int64_t N) {
    if (M <= 0 || K <= 0 || N <= 0) return "linear: M, K and N must be positive";
    constexpr int64_t kIntMax = std::numeric_limits<int>::max();
    if (M > kIntMax || K > kIntMax || N > kIntMax) return "linear: a size exceeds the 2^31 of a BLAS call";
    return nullptr;
}

// fp32 -> tf32 (10 explicit mantissa bits), nearest even, kept in an fp32 word; NaN and infinity unchanged (a NaN
// with only low payload bits would round to infinity).
float round_tf32(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if ((u & 0x7f800000u) == 0x7f800000u) return f;
    u = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// precision 0 leaves the operands as they are; 1 points each at a TF32-rounded copy in its scratch vector.
// Returns nonzero, with the message set, on another precision or when the copies do not fit in memory.
template <size_t Count>
int apply_precision(int precision, const float *(&operands)[Count], const int64_t (&sizes)[Count],
                    std::vector<float> (&scratch)[Count]) {
    if (precision == 0) return 0;
    if (precision != 1) {
        char msg[128];
        std::snprintf(msg, sizeof msg, "linear: precision %d is not supported: 0 (fp32) or 1 (tf32)", precision);
        return fail(msg);
    }
    try {
        for (size_t i = 0; i < Count; ++i) {
            scratch[i].resize(static_cast<size_t>(sizes[i]));
            for (int64_t j = 0; j < sizes[i]; ++j) scratch[i][j] = round_tf32(operands[i][j]);
            operands[i] = scratch[i].data();
        }
    } catch (const std::bad_alloc &) {
        return fail("linear: no memory for the tf32 copies of the operands");
    }
    return 0;
}

}  // namespace

D4J_IMPL_API int d4j_impl_linear_forward(void *, const float *x, const float *weight, const float *bias,
                                         const float *residual, int64_t M, int64_t K, int64_t N, float *y,
                                         int precision) {
    if (const char *why = check_sizes(M, K, N)) return fail(why);
    if (x == nullptr || weight == nullptr || y == nullptr)
        return fail("linear forward: x, weight and y must not be null");
    if (residual != nullptr && residual == y) return fail("linear forward: residual may not alias y");
    const float *operands[2] = {x, weight};
    std::vector<float> scratch[2];
    if (apply_precision(precision, operands, {M * K, N * K}, scratch) != 0) return 1;
    x = operands[0];
    weight = operands[1];
    const sgemm_fn gemm = sgemm();
    if (gemm == nullptr) return 1;
    const bool rows = split_rows(M, N);
    const int64_t blocks = gemm_blocks(rows ? M : N);
    const bool prefill = bias != nullptr || residual != nullptr;
#pragma omp parallel for schedule(dynamic, 1) num_threads(gemm_threads(blocks, static_cast<double>(M) * K * N))
    for (int64_t i = 0; i < blocks; ++i) {
        int64_t r0 = 0, r1 = M, c0 = 0, c1 = N;
        if (rows) gemm_block(M, blocks, i, r0, r1); else gemm_block(N, blocks, i, c0, c1);
        if (r0 == r1 || c0 == c1) continue;
        if (prefill) {
            for (int64_t m = r0; m < r1; ++m) {
                float *out = y + m * N;
                const float *res = residual != nullptr ? residual + m * N : nullptr;
                if (bias != nullptr && res != nullptr) {
#pragma omp simd
                    for (int64_t n = c0; n < c1; ++n) out[n] = bias[n] + res[n];
                } else {
                    std::memcpy(out + c0, (bias != nullptr ? bias : res) + c0, sizeof(float) * (c1 - c0));
                }
            }
        }
        sgemm_rm(gemm, kNoTrans, kTrans, r1 - r0, c1 - c0, K, 1.0f, x + r0 * K, K, weight + c0 * K, K,
                 prefill ? 1.0f : 0.0f, y + r0 * N + c0, N);
    }
    return 0;
}

D4J_IMPL_API int d4j_impl_linear_backward(void *, const float *x, const float *weight, const float *dy, int64_t M,
                                          int64_t K, int64_t N, float *dx, float *dweight, float *dbias,
                                          int precision) {
    if (const char *why = check_sizes(M, K, N)) return fail(why);
    if (x == nullptr || weight == nullptr || dy == nullptr || dweight == nullptr)
        return fail("linear backward: x, weight, dy and dweight must not be null");
    // dbias sums dy as it is: the bias gradient is no product (cuBLAS's TF32 touches only the GEMMs' operands).
    const float *operands[3] = {x, weight, dy};
    std::vector<float> scratch[3];
    if (apply_precision(precision, operands, {M * K, N * K, M * N}, scratch) != 0) return 1;
    const float *dy_bias = dy;
    x = operands[0];
    weight = operands[1];
    dy = operands[2];
    const sgemm_fn gemm = sgemm();
    if (gemm == nullptr) return 1;
    const bool dx_rows = split_rows(M, K), dw_rows = split_rows(N, K);
    const int64_t dx_blocks = dx != nullptr ? gemm_blocks(dx_rows ? M : K) : 0;
    const int64_t dw_blocks = gemm_blocks(dw_rows ? N : K);
    // One parallel region for the three products: the threads' pool is woken once, and a thread that finishes
    // dx early starts on dW at once (nowait; the blocks are disjoint).
#pragma omp parallel num_threads(gemm_threads(std::max(dx_blocks, dw_blocks), 2.0 * M * K * N))
    {
        if (dx != nullptr) {
            // dx [M, K] = dy [M, N] · W [N, K]
#pragma omp for schedule(dynamic, 1) nowait
            for (int64_t i = 0; i < dx_blocks; ++i) {
                int64_t r0 = 0, r1 = M, c0 = 0, c1 = K;
                if (dx_rows) gemm_block(M, dx_blocks, i, r0, r1); else gemm_block(K, dx_blocks, i, c0, c1);
                if (r0 == r1 || c0 == c1) continue;
                sgemm_rm(gemm, kNoTrans, kNoTrans, r1 - r0, c1 - c0, N, 1.0f, dy + r0 * N, N, weight + c0, K, 0.0f,
                         dx + r0 * K + c0, K);
            }
        }
        // dW [N, K] += dyᵀ [N, M] · x [M, K]
#pragma omp for schedule(dynamic, 1) nowait
        for (int64_t i = 0; i < dw_blocks; ++i) {
            int64_t r0 = 0, r1 = N, c0 = 0, c1 = K;
            if (dw_rows) gemm_block(N, dw_blocks, i, r0, r1); else gemm_block(K, dw_blocks, i, c0, c1);
            if (r0 == r1 || c0 == c1) continue;
            sgemm_rm(gemm, kTrans, kNoTrans, r1 - r0, c1 - c0, M, 1.0f, dy + r0, N, x + c0, K, 1.0f,
                     dweight + r0 * K + c0, K);
        }
        if (dbias != nullptr) {
            // db [N] += Σ_m dy[m, :], rows in order, in double (M terms of mixed sign). Column blocks of 256
            // keep the accumulators in registers/L1 while dy streams through once per block.
            constexpr int64_t kCols = 256;
#pragma omp for schedule(dynamic, 1)
            for (int64_t c0 = 0; c0 < N; c0 += kCols) {
                const int64_t c1 = std::min(N, c0 + kCols);
                double acc[kCols] = {};
                for (int64_t m = 0; m < M; ++m) {
                    const float *row = dy_bias + m * N;
#pragma omp simd
                    for (int64_t n = c0; n < c1; ++n) acc[n - c0] += row[n];
                }
                for (int64_t n = c0; n < c1; ++n) dbias[n] += static_cast<float>(acc[n - c0]);
            }
        }
    }
    return 0;
}
