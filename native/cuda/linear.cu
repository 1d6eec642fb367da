// nn.Linear on the GPU: y = x Wᵀ + b (+ residual) and its backward. The GEMMs are cuBLAS(Lt) calls, never
// hand-written. See distill4j_impl.h.
//
// The GEMMs go through cublas.cuh (cuBLAS and cuBLASLt opened at run time, one handle per (device, stream); the
// host's OpenBLAS under the emulator). The forward is one cublasLtMatmul (residual as C, bias by the BIAS epilogue);
// the backward's dW GEMM computes the bias gradient by the BGRADB epilogue (fp32 only, see there). Where cuBLASLt
// has no algorithm for a case (lt_gemm_rm says so), the cuBLAS path runs: the bias/residual prologue kernel and
// the bias gradient's column sums (over many CTAs, in an order fixed by (M, N); its chunk partials in a per-stream
// scratch of cublas.cu), small kernels here, around plain GEMMs. Never run on a GPU so far.
// precision 1 (TF32) multiplies the fp32 operands on the tensor cores with
// CUBLAS_COMPUTE_32F_FAST_TF32; see native/cpu/linear.cpp for what its CPU twin computes and why.
// The two small kernels are shared with linear_bf16.cu (linear.cuh), whose dy is bf16.
#include "common.cuh"
#include "cublas.cuh"
#include "distill4j_impl.h"
#include "launch.cuh"
#include "linear.cuh"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <limits>

namespace {

using namespace d4j::cuda;

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = D4J_CUDA_EMU ? 8 : 4096;

// y[m, n] = bias[n] + residual[m, n] (either may be null, not both): what the GEMM then accumulates onto.
__global__ void __launch_bounds__(kThreads)
    linear_prologue(const float *bias, const float *residual, int64_t M, int64_t N, float *y) {
    const int64_t total = M * N, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
        float v = bias != nullptr ? bias[i % N] : 0.0f;
        if (residual != nullptr) v += residual[i];
        y[i] = v;
    }
}

__device__ __forceinline__ float widen(float v) { return v; }
// bf16 bits are the upper half of the fp32 word: exact.
__device__ __forceinline__ float widen(uint16_t v) { return __uint_as_float(static_cast<unsigned>(v) << 16); }

// dbias[n] += Σ_m dy[m, n] over many CTAs in an order fixed by (M, N) alone, so the bits are the same on every GPU
// and in the emulator (nothing depends on the SM count, no atomics). The rows are cut into chunks of kChunkRows
// (the last one shorter); a CTA owns 32 columns of one chunk (lane = column: coalesced rows). For column n:
//   chunk c's sum P_c: 8 row groups, group g summing rows c·R + g, c·R + g + 8, ... in order from 0, then the 8
//     group sums added in order, ((s_0 + s_1) + s_2) + ... + s_7;
//   one chunk (M <= R): dbias[n] += P_0 at once;
//   several: each P_c goes to the scratch [chunks, N], then linear_bias_grad_chunks adds
//     dbias[n] += (((P_0 + P_1) + P_2) + ... + P_(chunks-1)).
// R = 256: DeiT-Ti's M = 12672 (64 images x 198 tokens), N = 192 gives 50 chunks x 6 column tiles = 300 CTAs, a
// few per SM; each thread sums 32 rows.
constexpr int kSumCols = 32, kSumGroups = kThreads / kSumCols;
constexpr int64_t kChunkRows = 256;
__host__ __device__ constexpr int64_t bias_grad_chunks(int64_t M) { return (M + kChunkRows - 1) / kChunkRows; }

// Block b: column tile b % tiles of chunk b / tiles (one grid dimension: chunks may pass grid.y's 65535).
// `out`: dbias (one chunk, +=) or the scratch (several: slot [chunk, n] written).
template <typename T>
__global__ void __launch_bounds__(kThreads) linear_bias_grad(const T *dy, int64_t M, int64_t N, float *out) {
    D4J_STATIC_SMEM(float, partial, [kSumGroups][kSumCols]);
    const int lane = static_cast<int>(threadIdx.x) % kSumCols, group = static_cast<int>(threadIdx.x) / kSumCols;
    const int64_t tiles = (N + kSumCols - 1) / kSumCols, chunk = blockIdx.x / tiles;
    const int64_t n = static_cast<int64_t>(blockIdx.x % tiles) * kSumCols + lane;
    const int64_t first = chunk * kChunkRows, end = M - first < kChunkRows ? M : first + kChunkRows;
    float acc = 0.0f;
    if (n < N)
        for (int64_t m = first + group; m < end; m += kSumGroups) acc += widen(dy[m * N + n]);
    partial[group][lane] = acc;
    __syncthreads();
    if (group == 0 && n < N) {
        float sum = partial[0][lane];
        for (int g = 1; g < kSumGroups; ++g) sum += partial[g][lane];
        if (bias_grad_chunks(M) == 1)
            out[n] += sum;
        else
            out[chunk * N + n] = sum;
    }
}

// dbias[n] += the chunks' partials of column n, summed in chunk order. Thread = column: a warp reads 32 adjacent
// floats of each chunk's row of the scratch.
__global__ void __launch_bounds__(kThreads)
    linear_bias_grad_chunks(const float *partial, int64_t chunks, int64_t N, float *dbias) {
    const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (n >= N) return;
    float sum = partial[n];
    for (int64_t c = 1; c < chunks; ++c) sum += partial[c * N + n];
    dbias[n] += sum;
}

template <typename T>
int launch_bias_grad(cudaStream_t stream, const T *dy, int64_t M, int64_t N, float *dbias) {
    const int64_t chunks = bias_grad_chunks(M), blocks = chunks * ((N + kSumCols - 1) / kSumCols);
    if (blocks > std::numeric_limits<int>::max()) return fail("linear: bias gradient of over 2^31 CTAs");
    const dim3 grid(static_cast<unsigned>(blocks));
    if (chunks == 1) {
        D4J_LAUNCH(linear_bias_grad<T>, grid, dim3(kThreads), 0, stream, dy, M, N, dbias);
        return check_launch("linear_bias_grad");
    }
    return with_partials_scratch(stream, "linear", chunks * N, [&](float *scratch) {
        D4J_LAUNCH(linear_bias_grad<T>, grid, dim3(kThreads), 0, stream, dy, M, N, scratch);
        if (check_launch("linear_bias_grad") != 0) return 1;
        D4J_LAUNCH(linear_bias_grad_chunks, dim3(static_cast<unsigned>((N + kThreads - 1) / kThreads)),
                   dim3(kThreads), 0, stream, scratch, chunks, N, dbias);
        return check_launch("linear_bias_grad_chunks");
    });
}

const char *check_sizes(int64_t M, int64_t K, int64_t N) {
    if (M <= 0 || K <= 0 || N <= 0) return "linear: M, K and N must be positive";
    constexpr int64_t kIntMax = std::numeric_limits<int>::max();
    if (M > kIntMax || K > kIntMax || N > kIntMax) return "linear: a size exceeds the 2^31 of a BLAS call";
    return nullptr;
}

// precision: 0 fp32, 1 tf32 (distill4j_impl.h); anything else refused.
bool check_precision(int precision, gemm_mode &mode) {
    if (precision == 0 || precision == 1) {
        mode = precision == 0 ? gemm_mode::fp32 : gemm_mode::tf32;
        return true;
    }
    char msg[128];
    std::snprintf(msg, sizeof msg, "linear: precision %d is not supported: 0 (fp32) or 1 (tf32)", precision);
    fail(msg);
    return false;
}

}  // namespace

namespace d4j::cuda {

int linear_prefill(cudaStream_t stream, const float *bias, const float *residual, int64_t M, int64_t N, float *y) {
    const int64_t blocks = std::min(kMaxBlocks, (M * N + kThreads - 1) / kThreads);
    D4J_LAUNCH(linear_prologue, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream, bias, residual, M, N,
               y);
    return check_launch("linear_prologue");
}

int linear_bias_grad(cudaStream_t stream, const float *dy, int64_t M, int64_t N, float *dbias) {
    return launch_bias_grad(stream, dy, M, N, dbias);
}

int linear_bias_grad(cudaStream_t stream, const uint16_t *dy, int64_t M, int64_t N, float *dbias) {
    return launch_bias_grad(stream, dy, M, N, dbias);
}

}  // namespace d4j::cuda

D4J_IMPL_API int d4j_impl_linear_forward(void *stream_ptr, const float *x, const float *weight, const float *bias,
                                         const float *residual, int64_t M, int64_t K, int64_t N, float *y,
                                         int precision) {
    if (const char *why = check_sizes(M, K, N)) return fail(why);
    if (x == nullptr || weight == nullptr || y == nullptr)
        return fail("linear forward: x, weight and y must not be null");
    if (residual != nullptr && residual == y) return fail("linear forward: residual may not alias y");
    gemm_mode mode;
    if (!check_precision(precision, mode)) return 1;
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    // y [M, N] = x [M, K] · Wᵀ (+ residual as C, beta 1) (+ bias by the BIAS epilogue): one cublasLtMatmul.
    const int rc = lt_gemm_rm(stream, "linear", mode, kNoTrans, kTrans, M, N, K, x, K, weight, K, residual, bias,
                              nullptr, y, N);
    if (rc != kLtUnsupported) return rc;
    // No cuBLASLt algorithm for the case: the prologue kernel, then cuBLAS accumulating onto it.
    const bool prefill = bias != nullptr || residual != nullptr;
    if (prefill && linear_prefill(stream, bias, residual, M, N, y) != 0) return 1;
    return gemm_rm(stream, "linear", mode, kNoTrans, kTrans, M, N, K, x, K, weight, K, prefill ? 1.0f : 0.0f, y, N);
}

D4J_IMPL_API int d4j_impl_linear_backward(void *stream_ptr, const float *x, const float *weight, const float *dy,
                                          int64_t M, int64_t K, int64_t N, float *dx, float *dweight, float *dbias,
                                          int precision) {
    if (const char *why = check_sizes(M, K, N)) return fail(why);
    if (x == nullptr || weight == nullptr || dy == nullptr || dweight == nullptr)
        return fail("linear backward: x, weight, dy and dweight must not be null");
    gemm_mode mode;
    if (!check_precision(precision, mode)) return 1;
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    // dx [M, K] = dy [M, N] · W [N, K]
    if (dx != nullptr &&
        gemm_rm(stream, "linear", mode, kNoTrans, kNoTrans, M, K, N, dy, N, weight, K, 0.0f, dx, K) != 0)
        return 1;
    // dW [N, K] += dyᵀ [N, M] · x [M, K] (C = D = dW, beta 1), with dbias += Σ_m dy by the BGRADB epilogue in fp32
    // (cublas.cuh: in TF32 what BGRADB sums is undocumented, so the column-sum kernel does it there).
    float *lt_dbias = mode == gemm_mode::fp32 ? dbias : nullptr;
    const int rc = lt_gemm_rm(stream, "linear", mode, kTrans, kNoTrans, N, K, M, dy, N, x, K, dweight, nullptr,
                              lt_dbias, dweight, K);
    if (rc == 1) return 1;
    if (rc == kLtUnsupported) {
        if (gemm_rm(stream, "linear", mode, kTrans, kNoTrans, N, K, M, dy, N, x, K, 1.0f, dweight, K) != 0) return 1;
        lt_dbias = nullptr;
    }
    return dbias != nullptr && lt_dbias == nullptr ? linear_bias_grad(stream, dy, M, N, dbias) : 0;
}
