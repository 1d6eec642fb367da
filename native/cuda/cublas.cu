// The handle pool and the dlopen'd entries: the GEMMs of linear.cu and linear_bf16.cu (cublas.cuh). Never
// hand-written: cuBLAS on a GPU, the host's OpenBLAS under the emulator.
//
// cuBLAS without its headers or library at build time. The build machine has neither, and a user without a GPU
// must be able to load this library, so the few entry points are declared here and resolved with dlopen/dlsym
// from libcublas.so.13 on the first GEMM; a missing library is reported with dlerror()'s text, naming it. The enum
// values below are cuBLAS's and CUDA's (cublas_api.h of the nvidia-cublas 13.1 wheel, library_types.h of CUDA 13.0).
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
// the process (the CPU backend's preset), so the kernels of the linear ops still run emulated around them. bf16
// operands are widened to fp32 first (exact), and TF32 operands rounded to TF32 as native/cpu/linear.cpp does (see
// there), into host scratch: the same products and fp32 sums as the card's, in another order.
//
// Row-major GEMMs on column-major cuBLAS: a row-major C = op(A) op(B) is the column-major Cᵀ = op(B)ᵀ op(A)ᵀ,
// i.e. the same call with the operands swapped and M, N swapped; the transposition flags carry over unchanged.
#include "common.cuh"
#include "cublas.cuh"
#include "launch.cuh"

#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

namespace d4j::cuda {
namespace {

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

// The fp32 values the card multiplies: the `rows` x `cols` operand (leading dimension ld) copied into `scratch`
// as the mode sees it, or the operand itself in fp32 mode.
const float *as_fp32(gemm_mode mode, const void *p, int64_t rows, int64_t cols, int64_t ld,
                     std::vector<float> &scratch) {
    if (mode == gemm_mode::fp32) return static_cast<const float *>(p);
    const size_t n = static_cast<size_t>((rows - 1) * ld + cols);
    scratch.resize(n);
    if (mode == gemm_mode::bf16) {
        const uint16_t *h = static_cast<const uint16_t *>(p);
        for (size_t i = 0; i < n; ++i) scratch[i] = __uint_as_float(static_cast<unsigned>(h[i]) << 16);
    } else {
        const float *f = static_cast<const float *>(p);
        for (size_t i = 0; i < n; ++i) scratch[i] = round_tf32(f[i]);
    }
    return scratch.data();
}

// cuBLAS launches on the current device: its operands are checked as a kernel's arguments are.
int emulated_gemm(const char *op, gemm_mode mode, int ta, int tb, int64_t M, int64_t N, int64_t K, const void *A,
                  int64_t lda, const void *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    const char *what = mode == gemm_mode::fp32 ? "cublasSgemm (emulated) launched" : "cublasGemmEx (emulated) launched";
    if (!d4j_emu::on_current_device(what, "operand A", A) || !d4j_emu::on_current_device(what, "operand B", B) ||
        !d4j_emu::on_current_device(what, "operand C", C)) {
        cudaGetLastError();  // reported here, not by the next launch check
        const std::string why = std::string(op) + ": " + d4j_emu::device_error;
        d4j_emu::device_error.clear();
        return fail(why.c_str());
    }
    const cblas_sgemm_fn f = host_sgemm();
    if (f == nullptr) {
        const std::string why = std::string(op) + " (cuda-emu): OpenBLAS (libopenblas_nolapack.so.0 or "
                                "libopenblas.so.0) is not loaded in the process; the emulated GEMM uses the host's";
        return fail(why.c_str());
    }
    std::vector<float> a_scratch, b_scratch;
    const float *a, *b;
    try {
        a = as_fp32(mode, A, ta == kTrans ? K : M, ta == kTrans ? M : K, lda, a_scratch);
        b = as_fp32(mode, B, tb == kTrans ? N : K, tb == kTrans ? K : N, ldb, b_scratch);
    } catch (const std::bad_alloc &) {
        const std::string why = std::string(op) + " (cuda-emu): no host memory for the fp32 copies of the operands";
        return fail(why.c_str());
    }
    f(101, ta == kTrans ? 112 : 111, tb == kTrans ? 112 : 111, static_cast<int>(M), static_cast<int>(N),
      static_cast<int>(K), 1.0f, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta, C, static_cast<int>(ldc));
    return 0;
}

#else

struct cublas_context;
using cublas_handle = cublas_context *;
using create_fn = int (*)(cublas_handle *);
using set_stream_fn = int (*)(cublas_handle, cudaStream_t);
using sgemm_fn = int (*)(cublas_handle, int, int, int, int, int, const float *, const float *, int, const float *, int,
                         const float *, float *, int);
// cublasGemmEx: (handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc,
// computeType, algo); the three enums are int-sized.
using gemm_ex_fn = int (*)(cublas_handle, int, int, int, int, int, const void *, const void *, int, int, const void *,
                           int, int, const void *, void *, int, int, int, int);
constexpr int kCudaR32F = 0, kCudaR16BF = 14;                   // cudaDataType_t (library_types.h)
constexpr int kComputeF32 = 68, kComputeF32FastTf32 = 77;       // cublasComputeType_t (cublas_api.h)
constexpr int kGemmDefault = -1;                                // cublasGemmAlgo_t CUBLAS_GEMM_DEFAULT

struct cublas_api {
    create_fn create = nullptr;
    set_stream_fn set_stream = nullptr;
    sgemm_fn sgemm = nullptr;
    gemm_ex_fn gemm_ex = nullptr;
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
            std::snprintf(r.error, sizeof r.error, "cuBLAS is needed for the GEMMs: %s",
                          why != nullptr ? why : "libcublas.so.13 could not be opened");
            return r;
        }
        r.create = reinterpret_cast<create_fn>(dlsym(lib, "cublasCreate_v2"));
        r.set_stream = reinterpret_cast<set_stream_fn>(dlsym(lib, "cublasSetStream_v2"));
        r.sgemm = reinterpret_cast<sgemm_fn>(dlsym(lib, "cublasSgemm_v2"));
        r.gemm_ex = reinterpret_cast<gemm_ex_fn>(dlsym(lib, "cublasGemmEx"));
        if (r.create == nullptr || r.set_stream == nullptr || r.sgemm == nullptr || r.gemm_ex == nullptr) {
            std::snprintf(r.error, sizeof r.error, "libcublas.so.13 lacks cublasCreate_v2, cublasSetStream_v2, "
                                                   "cublasSgemm_v2 or cublasGemmEx");
            r.create = nullptr;
        }
        return r;
    }();
    return a;
}

int fail_op(const char *op, const char *what) {
    char msg[640];
    std::snprintf(msg, sizeof msg, "%s: %s", op, what);
    return fail(msg);
}

#endif

}  // namespace

int gemm_rm(cudaStream_t stream, const char *op, gemm_mode mode, int ta, int tb, int64_t M, int64_t N, int64_t K,
            const void *A, int64_t lda, const void *B, int64_t ldb, float beta, float *C, int64_t ldc) {
#if D4J_CUDA_EMU
    (void)stream;
    return emulated_gemm(op, mode, ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
#else
    const cublas_api &a = api();
    if (a.create == nullptr) return fail_op(op, a.error);
    // The dispatch library made the backend's device current on this thread (d4j_impl_set_device).
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return fail_op(op, "no current CUDA device");
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
            std::snprintf(msg, sizeof msg, "cublasCreate_v2 failed (cublasStatus_t %d)", s);
            return fail_op(op, msg);
        }
    }
    const float one = 1.0f;
    // Set on every call (a store in the handle): nothing is assumed from an earlier call's stream of that address.
    int s = a.set_stream(h->handle, stream);
    const char *entry = mode == gemm_mode::fp32 ? "cublasSgemm_v2" : "cublasGemmEx";
    if (s == 0 && mode == gemm_mode::fp32) {
        s = a.sgemm(h->handle, tb, ta, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &one,
                    static_cast<const float *>(B), static_cast<int>(ldb), static_cast<const float *>(A),
                    static_cast<int>(lda), &beta, C, static_cast<int>(ldc));
    } else if (s == 0) {
        const int type = mode == gemm_mode::bf16 ? kCudaR16BF : kCudaR32F;
        const int compute = mode == gemm_mode::bf16 ? kComputeF32 : kComputeF32FastTf32;
        s = a.gemm_ex(h->handle, tb, ta, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &one, B, type,
                      static_cast<int>(ldb), A, type, static_cast<int>(lda), &beta, C, kCudaR32F,
                      static_cast<int>(ldc), compute, kGemmDefault);
    }
    if (s != 0) {
        char msg[128];
        std::snprintf(msg, sizeof msg, "%s failed (cublasStatus_t %d)", entry, s);
        return fail_op(op, msg);
    }
    return 0;
#endif
}

}  // namespace d4j::cuda
