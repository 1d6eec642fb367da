// nn.Linear on the GPU: y = x Wᵀ + b (+ residual) and its backward. The GEMMs are cuBLAS calls, never
// hand-written; the bias/residual prologue and the bias gradient's column sums are small kernels here.
// See distill4j_impl.h.
//
// cuBLAS without its headers or library at build time. The build machine has neither, and a user without a GPU
// must be able to load this library, so the few entry points are declared here and resolved with dlopen/dlsym
// from libcublas.so.13 on the first linear call; a missing library is reported with dlerror()'s text, naming it.
// One handle per (device, stream), created on first use and kept for the process (destroying it at exit races the
// driver's own teardown, as PyTorch's handle pool also avoids). Why per stream: a handle is bound to one stream
// by cublasSetStream, and cuBLAS asks that a handle not be used by two threads at once; with one handle per device,
// two threads on two streams had to take turns on one lock for the (set stream, GEMM) pair. Keyed by stream, two
// backends (two Java threads, each with its own stream) never share a handle or a lock; the handle's own mutex
// only matters if one stream is driven from two threads at once. The (later) cuBLASLt workspace belongs beside
// the handle for the same reason: memory used by a stream's queued GEMM must not be handed to another stream.
// Cost: one small map lookup under a mutex per GEMM, and one handle per stream ever used (a process that opens
// and closes many CUDA backends keeps one handle per stream it created).
//
// Under the emulator (D4J_CUDA_EMU) device memory is host memory: the GEMMs go to the host OpenBLAS already in
// the process (the CPU backend's preset), so the kernels of this file still run emulated around them.
//
// Row-major GEMMs on column-major cuBLAS: a row-major C = op(A) op(B) is the column-major Cᵀ = op(B)ᵀ op(A)ᵀ,
// i.e. the same call with the operands swapped and M, N swapped; the transposition flags carry over unchanged.
#include "common.cuh"
#include "distill4j_impl.h"
#include "launch.cuh"

#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

namespace {

using namespace d4j::cuda;

constexpr int kNoTrans = 0, kTrans = 1;  // cublasOperation_t; mapped to CBLAS (111, 112) under the emulator

#if D4J_CUDA_EMU

using cblas_sgemm_fn = void (*)(int, int, int, int, int, int, float, const float *, int, const float *, int, float,
                                float *, int);

// RTLD_NOLOAD: only an OpenBLAS already in the process, never a second copy.
cblas_sgemm_fn host_sgemm() {
    static cblas_sgemm_fn f = [] {
        for (const char *soname : {"libopenblas_nolapack.so.0", "libopenblas.so.0"}) {
            if (void *lib = dlopen(soname, RTLD_NOW | RTLD_NOLOAD)) {
                if (void *sym = dlsym(lib, "cblas_sgemm")) return reinterpret_cast<cblas_sgemm_fn>(sym);
            }
        }
        return static_cast<cblas_sgemm_fn>(nullptr);
    }();
    return f;
}

// Row-major C[M, N] = op(A) op(B) + beta C. cuBLAS launches on the current device: its operands are checked
// as a kernel's arguments are.
int gemm_rm(cudaStream_t, int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
            const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (!d4j_emu::on_current_device("cublasSgemm (emulated) launched", "operand A", A) ||
        !d4j_emu::on_current_device("cublasSgemm (emulated) launched", "operand B", B) ||
        !d4j_emu::on_current_device("cublasSgemm (emulated) launched", "operand C", C)) {
        cudaGetLastError();  // reported here, not by the next launch check
        const std::string why = "linear: " + d4j_emu::device_error;
        d4j_emu::device_error.clear();
        return fail(why.c_str());
    }
    const cblas_sgemm_fn f = host_sgemm();
    if (f == nullptr)
        return fail("linear (cuda-emu): OpenBLAS (libopenblas_nolapack.so.0 or libopenblas.so.0) is not loaded in "
                    "the process; the emulated GEMM uses the host's");
    f(101, ta == kTrans ? 112 : 111, tb == kTrans ? 112 : 111, static_cast<int>(M), static_cast<int>(N),
      static_cast<int>(K), 1.0f, A, static_cast<int>(lda), B, static_cast<int>(ldb), beta, C, static_cast<int>(ldc));
    return 0;
}

#else

struct cublas_context;
using cublas_handle = cublas_context *;
using create_fn = int (*)(cublas_handle *);
using set_stream_fn = int (*)(cublas_handle, cudaStream_t);
using sgemm_fn = int (*)(cublas_handle, int, int, int, int, int, const float *, const float *, int, const float *, int,
                         const float *, float *, int);

struct cublas_api {
    create_fn create = nullptr;
    set_stream_fn set_stream = nullptr;
    sgemm_fn sgemm = nullptr;
    char error[512] = {};
};

struct stream_handle {
    std::mutex mutex;  // cuBLAS: a handle is used by one thread at a time
    cublas_handle handle = nullptr;
};
std::mutex handles_mutex;  // guards the map only, never held during a GEMM
std::map<std::pair<int, cudaStream_t>, std::unique_ptr<stream_handle>> &handles =
    *new std::map<std::pair<int, cudaStream_t>, std::unique_ptr<stream_handle>>;  // never destroyed (see above)

const cublas_api &api() {
    static const cublas_api a = [] {
        cublas_api r;
        void *lib = dlopen("libcublas.so.13", RTLD_NOW | RTLD_GLOBAL);
        if (lib == nullptr) {
            const char *why = dlerror();
            std::snprintf(r.error, sizeof r.error, "linear: cuBLAS is needed for the GEMMs: %s",
                          why != nullptr ? why : "libcublas.so.13 could not be opened");
            return r;
        }
        r.create = reinterpret_cast<create_fn>(dlsym(lib, "cublasCreate_v2"));
        r.set_stream = reinterpret_cast<set_stream_fn>(dlsym(lib, "cublasSetStream_v2"));
        r.sgemm = reinterpret_cast<sgemm_fn>(dlsym(lib, "cublasSgemm_v2"));
        if (r.create == nullptr || r.set_stream == nullptr || r.sgemm == nullptr) {
            std::snprintf(r.error, sizeof r.error, "linear: libcublas.so.13 lacks cublasCreate_v2, "
                                                   "cublasSetStream_v2 or cublasSgemm_v2");
            r.create = nullptr;
        }
        return r;
    }();
    return a;
}

int gemm_rm(cudaStream_t stream, int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
            const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    const cublas_api &a = api();
    if (a.create == nullptr) return fail(a.error);
    // The dispatch library made the backend's device current on this thread (d4j_impl_set_device).
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return fail("linear: no current CUDA device");
    stream_handle *h;
    {
        std::lock_guard<std::mutex> lock(handles_mutex);
        std::unique_ptr<stream_handle> &slot = handles[{device, stream}];
        if (slot == nullptr) slot = std::make_unique<stream_handle>();
        h = slot.get();  // stable: entries are never erased
    }
    std::lock_guard<std::mutex> lock(h->mutex);
    if (h->handle == nullptr) {
        // Created with `device` current, so the handle belongs to it.
        if (int s = a.create(&h->handle); s != 0) {
            h->handle = nullptr;
            char msg[128];
            std::snprintf(msg, sizeof msg, "linear: cublasCreate_v2 failed (cublasStatus_t %d)", s);
            return fail(msg);
        }
    }
    const float one = 1.0f;
    // Set on every call (a store in the handle): nothing is assumed from an earlier call's stream of that address.
    int s = a.set_stream(h->handle, stream);
    if (s == 0)
        s = a.sgemm(h->handle, tb, ta, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &one, B,
                    static_cast<int>(ldb), A, static_cast<int>(lda), &beta, C, static_cast<int>(ldc));
    if (s != 0) {
        char msg[128];
        std::snprintf(msg, sizeof msg, "linear: cublasSgemm_v2 failed (cublasStatus_t %d)", s);
        return fail(msg);
    }
    return 0;
}

#endif

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

// dbias[n] += Σ_m dy[m, n]. A block owns 32 columns: lane = column (coalesced rows), 8 row groups each summing
// rows g, g + 8, ... in order, then the 8 partials added in order: a fixed order, no atomics.
constexpr int kSumCols = 32, kSumGroups = kThreads / kSumCols;
__global__ void __launch_bounds__(kThreads) linear_bias_grad(const float *dy, int64_t M, int64_t N, float *dbias) {
    D4J_STATIC_SMEM(float, partial, [kSumGroups][kSumCols]);
    const int lane = static_cast<int>(threadIdx.x) % kSumCols, group = static_cast<int>(threadIdx.x) / kSumCols;
    const int64_t n = static_cast<int64_t>(blockIdx.x) * kSumCols + lane;
    float acc = 0.0f;
    if (n < N)
        for (int64_t m = group; m < M; m += kSumGroups) acc += dy[m * N + n];
    partial[group][lane] = acc;
    __syncthreads();
    if (group == 0 && n < N) {
        float sum = partial[0][lane];
        for (int g = 1; g < kSumGroups; ++g) sum += partial[g][lane];
        dbias[n] += sum;
    }
}

const char *check_sizes(int64_t M, int64_t K, int64_t N) {
    if (M <= 0 || K <= 0 || N <= 0) return "linear: M, K and N must be positive";
    constexpr int64_t kIntMax = std::numeric_limits<int>::max();
    if (M > kIntMax || K > kIntMax || N > kIntMax) return "linear: a size exceeds the 2^31 of a BLAS call";
    return nullptr;
}

}  // namespace

D4J_IMPL_API int d4j_impl_linear_forward(void *stream_ptr, const float *x, const float *weight, const float *bias,
                                         const float *residual, int64_t M, int64_t K, int64_t N, float *y) {
    if (const char *why = check_sizes(M, K, N)) return fail(why);
    if (x == nullptr || weight == nullptr || y == nullptr)
        return fail("linear forward: x, weight and y must not be null");
    if (residual != nullptr && residual == y) return fail("linear forward: residual may not alias y");
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    const bool prefill = bias != nullptr || residual != nullptr;
    if (prefill) {
        const int64_t blocks = std::min(kMaxBlocks, (M * N + kThreads - 1) / kThreads);
        D4J_LAUNCH(linear_prologue, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream, bias, residual, M,
                   N, y);
        if (check_launch("linear_prologue") != 0) return 1;
    }
    // y [M, N] (+)= x [M, K] · Wᵀ
    return gemm_rm(stream, kNoTrans, kTrans, M, N, K, x, K, weight, K, prefill ? 1.0f : 0.0f, y, N);
}

D4J_IMPL_API int d4j_impl_linear_backward(void *stream_ptr, const float *x, const float *weight, const float *dy,
                                          int64_t M, int64_t K, int64_t N, float *dx, float *dweight, float *dbias) {
    if (const char *why = check_sizes(M, K, N)) return fail(why);
    if (x == nullptr || weight == nullptr || dy == nullptr || dweight == nullptr)
        return fail("linear backward: x, weight, dy and dweight must not be null");
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    // dx [M, K] = dy [M, N] · W [N, K]
    if (dx != nullptr && gemm_rm(stream, kNoTrans, kNoTrans, M, K, N, dy, N, weight, K, 0.0f, dx, K) != 0) return 1;
    // dW [N, K] += dyᵀ [N, M] · x [M, K]
    if (gemm_rm(stream, kTrans, kNoTrans, N, K, M, dy, N, x, K, 1.0f, dweight, K) != 0) return 1;
    if (dbias != nullptr) {
        D4J_LAUNCH(linear_bias_grad, dim3(static_cast<unsigned>((N + kSumCols - 1) / kSumCols)), dim3(kThreads), 0,
                   stream, dy, M, N, dbias);
        return check_launch("linear_bias_grad");
    }
    return 0;
}
