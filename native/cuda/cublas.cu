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
// only matters if one stream is driven from two threads at once. The cuBLASLt handle, its workspace and the bias
// gradient's scratches (BGRADB's; the column sums' chunk partials, linear.cu) live beside the cuBLAS handle for the
// same reasons: memory used by a stream's queued work must not be handed to another stream, and one stream's (write
// scratch, add into dbias) pair is queued under the entry's mutex, so no other call on that stream can reuse the
// scratch between the two.
// Cost: one small map lookup under a mutex per GEMM, and per stream ever used one handle of each, 32 MiB of
// workspace and the scratch (a process that opens and closes many CUDA backends keeps them for each stream).
//
// cuBLASLt (libcublasLt.so.13) is opened the same way, on the first GEMM with an epilogue (lt_gemm_rm). Each call
// builds its descriptors and asks the heuristic for one algorithm (no cache: a few microseconds of host time per
// GEMM, to be measured; a step replayed from a CUDA graph pays it once, at the capture, where the chosen algorithm
// and the descriptors' values are recorded); when the heuristic has none for a case, lt_gemm_rm says so and the
// callers take the cuBLAS path. Under a capture nothing here may allocate: the workspace and the BGRADB scratch
// exist from the first (uncaptured) call of the stream's largest M, as the trainer's first step makes them. Under the emulator an emulated cuBLASLt of exactly the subset called stands in (below).
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
#include "distill4j_impl.h"
#include "launch.cuh"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <type_traits>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

namespace d4j::cuda {
namespace {

constexpr int kCudaR32F = 0, kCudaR16BF = 14;                   // cudaDataType_t (library_types.h)
constexpr int kComputeF32 = 68, kComputeF32FastTf32 = 77;       // cublasComputeType_t (cublas_api.h)

constexpr int kLtStatusSuccess = 0;          // CUBLAS_STATUS_SUCCESS (cublas_api.h)
constexpr int kLtNotSupported = 15;         // CUBLAS_STATUS_NOT_SUPPORTED (cublas_api.h): no heuristic for the case
constexpr int kLtDescTransA = 3;             // CUBLASLT_MATMUL_DESC_TRANSA, int32_t
constexpr int kLtDescTransB = 4;             // CUBLASLT_MATMUL_DESC_TRANSB, int32_t
constexpr int kLtDescEpilogue = 7;           // CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t
constexpr int kLtDescBiasPointer = 8;        // CUBLASLT_MATMUL_DESC_BIAS_POINTER, (const) void *
constexpr uint32_t kLtEpilogueDefault = 1;   // CUBLASLT_EPILOGUE_DEFAULT
constexpr uint32_t kLtEpilogueBias = 4;      // CUBLASLT_EPILOGUE_BIAS: D's rows += bias[row]
constexpr uint32_t kLtEpilogueBgradB = 512;  // CUBLASLT_EPILOGUE_BGRADB: bias[col of D] = Σ_k op(B)[k, col]
constexpr int kLtPrefMaxWorkspace = 1;       // CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, uint64_t

// cuBLASLt's opaque types (cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t,
// cublasLtMatmulPreference_t): complete only in the emulator's build, below.
struct lt_context;
struct lt_desc_s;
struct lt_layout_s;
struct lt_pref_s;
using lt_handle = lt_context *;
using lt_desc = lt_desc_s *;
using lt_layout = lt_layout_s *;
using lt_pref = lt_pref_s *;
struct lt_algo {  // cublasLtMatmulAlgo_t
    uint64_t data[8];
};
struct lt_heuristic {  // cublasLtMatmulHeuristicResult_t
    lt_algo algo;
    size_t workspace_size;
    int state;  // cublasStatus_t
    float waves_count;
    int reserved[4];
};

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

// Work of an emulated cuBLAS(Lt) call: run now (its status returned), or, on a stream under capture, appended to
// the graph (the arguments checked now, the GEMM run at each replay; a failure there leaves
// cudaErrorMemoryAllocation for the next launch check, the only way it can fail).
template <typename Work>
int run_or_capture(cudaStream_t stream, Work work) {
    if (!d4j_emu::is_capturing(stream)) return work();
    d4j_emu::enqueue(stream, [work] {
        if (work() != 0) d4j_emu::last_error = cudaErrorMemoryAllocation;
    });
    return 0;
}

// cuBLAS launches on the current device: its operands are checked as a kernel's arguments are.
int emulated_gemm(cudaStream_t stream, const char *op, gemm_mode mode, int ta, int tb, int64_t M, int64_t N,
                  int64_t K, const void *A, int64_t lda, const void *B, int64_t ldb, float beta, float *C,
                  int64_t ldc) {
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
    return run_or_capture(stream, [=] {
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
          static_cast<int>(K), 1.0f, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta, C,
          static_cast<int>(ldc));
        return 0;
    });
}


// ---- An emulated cuBLASLt: exactly the subset lt_gemm_rm calls, with the semantics cublasLt.h documents for it,
// so that the descriptor-building code and linear.cu's Lt branches are what CI runs. Anything else (another
// attribute, data or compute type, epilogue, a BGRADB with alpha != 1 or in tf32) is refused with
// CUBLAS_STATUS_INVALID_VALUE (7) and the reason on stderr: a call outside the subset cannot pass unnoticed.
struct lt_context {};
struct lt_desc_s {
    int compute, scale;
    int32_t transa = 0, transb = 0;  // CUBLAS_OP_N by default, as the header says
    uint32_t epilogue = 1;           // CUBLASLT_EPILOGUE_DEFAULT
    const void *bias = nullptr;
};
struct lt_layout_s {
    int type;
    uint64_t rows, cols;
    int64_t ld;
};
struct lt_pref_s {
    uint64_t workspace = 0;
};

// Test hooks (linear_emu, through the exported functions at the end of the file).
std::atomic<long> emu_lt_matmul_calls{0};
std::atomic<int> emu_lt_no_algorithm{0};

namespace emu_lt {

// The header's values again, written independently of the kLt* constants the caller uses: a wrong value there
// (BGRADA's 256 for BGRADB's 512, say) is then refused here instead of being agreed with.
constexpr int kInvalid = 7, kNotSupported = 15;  // CUBLAS_STATUS_INVALID_VALUE, CUBLAS_STATUS_NOT_SUPPORTED
constexpr int kOpN = 0, kOpT = 1;                // CUBLAS_OP_N, CUBLAS_OP_T
constexpr int kR32F = 0, kR16BF = 14;            // CUDA_R_32F, CUDA_R_16BF
constexpr int kCompute32F = 68, kCompute32FFastTf32 = 77;  // CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32
constexpr int kTransA = 3, kTransB = 4, kEpilogueAttr = 7, kBiasPointer = 8;  // CUBLASLT_MATMUL_DESC_*
constexpr uint32_t kDefault = 1, kBias = 4, kBgradB = 512;                     // CUBLASLT_EPILOGUE_*
constexpr int kMaxWorkspace = 1;  // CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES

int refuse(const char *why) {
    std::fprintf(stderr, "d4j-emu: cublasLt (emulated) refuses: %s\n", why);
    std::fflush(stderr);
    return kInvalid;
}

int create(lt_handle *h) {
    static lt_context one;
    *h = &one;
    return 0;
}
int desc_create(lt_desc *d, int compute, int scale) {
    if (compute != kCompute32F && compute != kCompute32FFastTf32)
        return refuse("compute type not 32F or 32F_FAST_TF32");
    if (scale != kR32F) return refuse("scale type not CUDA_R_32F");
    *d = new lt_desc_s{compute, scale};
    return 0;
}
int desc_destroy(lt_desc d) {
    delete d;
    return 0;
}
// The sizes are the header's: int32_t, int32_t, uint32_t, a pointer.
int desc_set(lt_desc d, int attr, const void *buf, size_t size) {
    if ((attr == kTransA || attr == kTransB) && size == sizeof(int32_t)) {
        int32_t v;
        std::memcpy(&v, buf, size);
        if (v != kOpN && v != kOpT) return refuse("transposition not CUBLAS_OP_N or CUBLAS_OP_T");
        (attr == kTransA ? d->transa : d->transb) = v;
    } else if (attr == kEpilogueAttr && size == sizeof(uint32_t)) {
        std::memcpy(&d->epilogue, buf, size);
        if (d->epilogue != kDefault && d->epilogue != kBias && d->epilogue != kBgradB)
            return refuse("epilogue not DEFAULT, BIAS or BGRADB");
    } else if (attr == kBiasPointer && size == sizeof(void *)) {
        std::memcpy(&d->bias, buf, size);
    } else {
        return refuse("matmul descriptor attribute or its size outside the subset");
    }
    return 0;
}
int layout_create(lt_layout *l, int type, uint64_t rows, uint64_t cols, int64_t ld) {
    if (type != kR32F && type != kR16BF) return refuse("matrix type not CUDA_R_32F or CUDA_R_16BF");
    if (rows == 0 || cols == 0 || ld < static_cast<int64_t>(rows)) return refuse("empty layout or ld < rows");
    *l = new lt_layout_s{type, rows, cols, ld};
    return 0;
}
int layout_destroy(lt_layout l) {
    delete l;
    return 0;
}
int pref_create(lt_pref *p) {
    *p = new lt_pref_s;
    return 0;
}
int pref_destroy(lt_pref p) {
    delete p;
    return 0;
}
int pref_set(lt_pref p, int attr, const void *buf, size_t size) {
    if (attr != kMaxWorkspace || size != sizeof(uint64_t)) return refuse("preference attribute outside the subset");
    std::memcpy(&p->workspace, buf, size);
    return 0;
}

// The whole call checked against the subset; nullptr when it is in it, else why not.
const char *outside_subset(lt_desc d, lt_layout a, lt_layout b, lt_layout c, lt_layout dd) {
    if (c->type != kR32F || dd->type != kR32F) return "C or D not CUDA_R_32F";
    if (a->type != b->type) return "A and B of different types";
    if (a->type == kR16BF && d->compute != kCompute32F) return "bf16 operands need CUBLAS_COMPUTE_32F";
    const uint64_t m = dd->rows, n = dd->cols;
    const uint64_t am = d->transa == kOpN ? a->rows : a->cols, ak = d->transa == kOpN ? a->cols : a->rows;
    const uint64_t bk = d->transb == kOpN ? b->rows : b->cols, bn = d->transb == kOpN ? b->cols : b->rows;
    if (am != m || bn != n || ak != bk) return "op(A), op(B) and D shapes do not agree";
    if (c->rows != m || c->cols != n || c->ld != dd->ld) return "C's layout differs from D's";
    if (d->epilogue == kDefault && d->bias != nullptr) return "a bias pointer without a bias epilogue";
    if (d->epilogue != kDefault && d->bias == nullptr) return "a bias epilogue without a bias pointer";
    if (d->epilogue == kBgradB && d->compute != kCompute32F) return "BGRADB only with CUBLAS_COMPUTE_32F";
    return nullptr;
}

int heuristic(lt_handle, lt_desc d, lt_layout a, lt_layout b, lt_layout c, lt_layout dd, lt_pref p, int requested,
              lt_heuristic *results, int *count) {
    *count = 0;
    if (requested < 1 || p == nullptr) return refuse("heuristic asked for no algorithm or without a preference");
    if (const char *why = outside_subset(d, a, b, c, dd)) return refuse(why);
    if (emu_lt_no_algorithm.load() != 0) return kNotSupported;  // the header's "no heuristic ... available"
    results[0] = lt_heuristic{};
    *count = 1;
    return 0;
}

// D = alpha op(A) op(B) + beta C (C not read when beta is 0) + the epilogue: BIAS adds bias[i] to D's row i
// (its length is D's rows); BGRADB writes bias[j] = Σ_k op(B)[k, j] (length D's columns, a sum over the GEMM's k).
int matmul(lt_handle, lt_desc d, const void *alpha_p, const void *A, lt_layout la, const void *B, lt_layout lb,
           const void *beta_p, const void *C, lt_layout lc, void *D, lt_layout ld, const lt_algo *algo, void *ws,
           size_t ws_size, cudaStream_t stream) {
    if (algo == nullptr) return refuse("no algorithm (lt_gemm_rm passes the heuristic's)");
    if (const char *why = outside_subset(d, la, lb, lc, ld)) return refuse(why);
    if (ws_size > 0 && ws == nullptr) return refuse("a workspace size without a workspace");
    float alpha, beta;
    std::memcpy(&alpha, alpha_p, sizeof alpha);  // CUBLASLT_POINTER_MODE_HOST, the default
    std::memcpy(&beta, beta_p, sizeof beta);
    if (d->epilogue == kBgradB && alpha != 1.0f) return refuse("BGRADB with alpha != 1 (undocumented)");
    const char *what = "cublasLtMatmul (emulated) launched";
    if (!d4j_emu::on_current_device(what, "operand A", A) || !d4j_emu::on_current_device(what, "operand B", B) ||
        !d4j_emu::on_current_device(what, "operand C", C) || !d4j_emu::on_current_device(what, "operand D", D) ||
        !d4j_emu::on_current_device(what, "the bias", d->bias) ||
        !d4j_emu::on_current_device(what, "the workspace", ws)) {
        cudaGetLastError();
        return refuse(d4j_emu::device_error.c_str());
    }
    const cblas_sgemm_fn f = host_sgemm();
    if (f == nullptr) return refuse("OpenBLAS is not loaded in the process (the emulated GEMM uses the host's)");
    // By value: the caller destroys its descriptors after the call, as a captured matmul outlives them.
    const lt_desc_s dv = *d;
    const lt_layout_s a_l = *la, b_l = *lb, c_l = *lc, d_l = *ld;
    emu_lt_matmul_calls.fetch_add(1);
    return run_or_capture(stream, [=] {
        const gemm_mode mode = a_l.type == kR16BF                 ? gemm_mode::bf16
                               : dv.compute == kCompute32FFastTf32 ? gemm_mode::tf32
                                                                   : gemm_mode::fp32;
        const int64_t m = static_cast<int64_t>(d_l.rows), n = static_cast<int64_t>(d_l.cols);
        const int64_t k = static_cast<int64_t>(dv.transa == kOpN ? a_l.cols : a_l.rows);
        float *out = static_cast<float *>(D);
        const float *cin = static_cast<const float *>(C);
        std::vector<float> a_scratch, b_scratch;
        const float *a, *b;
        try {
            // Column-major rows x cols with leading dimension ld: `cols` lines of `rows`, as_fp32's (lines, length).
            a = as_fp32(mode, A, static_cast<int64_t>(a_l.cols), static_cast<int64_t>(a_l.rows), a_l.ld, a_scratch);
            b = as_fp32(mode, B, static_cast<int64_t>(b_l.cols), static_cast<int64_t>(b_l.rows), b_l.ld, b_scratch);
        } catch (const std::bad_alloc &) {
            return 3;  // CUBLAS_STATUS_ALLOC_FAILED
        }
        if (beta != 0.0f && cin != out)
            for (int64_t j = 0; j < n; ++j) std::memcpy(out + j * d_l.ld, cin + j * c_l.ld, sizeof(float) * m);
        f(102, dv.transa == kOpT ? 112 : 111, dv.transb == kOpT ? 112 : 111, static_cast<int>(m),
          static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(a_l.ld), b, static_cast<int>(b_l.ld),
          beta, out, static_cast<int>(d_l.ld));
        if (dv.epilogue == kBias) {
            const float *bias = static_cast<const float *>(dv.bias);
            for (int64_t j = 0; j < n; ++j)
                for (int64_t i = 0; i < m; ++i) out[j * d_l.ld + i] += bias[i];
        } else if (dv.epilogue == kBgradB) {
            float *grad = static_cast<float *>(const_cast<void *>(dv.bias));
            for (int64_t j = 0; j < n; ++j) {
                float s = 0.0f;
                for (int64_t kk = 0; kk < k; ++kk) s += dv.transb == kOpN ? b[j * b_l.ld + kk] : b[kk * b_l.ld + j];
                grad[j] = s;
            }
        }
        return 0;
    });
}

}  // namespace emu_lt

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
constexpr int kGemmDefault = -1;                                // cublasGemmAlgo_t CUBLAS_GEMM_DEFAULT

struct cublas_api {
    create_fn create = nullptr;
    set_stream_fn set_stream = nullptr;
    sgemm_fn sgemm = nullptr;
    gemm_ex_fn gemm_ex = nullptr;
    char error[512] = {};
};

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

#endif

int fail_op(const char *op, const char *what) {
    char msg[640];
    std::snprintf(msg, sizeof msg, "%s: %s", op, what);
    return fail(msg);
}

// ---- cuBLASLt: the GEMMs with an epilogue (lt_gemm_rm). The entry points and the values below are those of
// cublasLt.h (nvidia-cublas 13.1.1.3 wheel), each quoted with its name; cublasOperation_t, cublasComputeType_t and
// cudaDataType_t are the ones above (kNoTrans/kTrans, kComputeF32..., kCudaR32F/kCudaR16BF).
struct lt_api {
    int (*create)(lt_handle *) = nullptr;                                          // cublasLtCreate
    int (*desc_create)(lt_desc *, int compute, int scale) = nullptr;               // cublasLtMatmulDescCreate
    int (*desc_destroy)(lt_desc) = nullptr;                                        // cublasLtMatmulDescDestroy
    int (*desc_set)(lt_desc, int attr, const void *, size_t) = nullptr;            // cublasLtMatmulDescSetAttribute
    int (*layout_create)(lt_layout *, int type, uint64_t, uint64_t, int64_t) = nullptr;  // ...MatrixLayoutCreate
    int (*layout_destroy)(lt_layout) = nullptr;                                    // cublasLtMatrixLayoutDestroy
    int (*pref_create)(lt_pref *) = nullptr;                                       // cublasLtMatmulPreferenceCreate
    int (*pref_destroy)(lt_pref) = nullptr;                                        // ...MatmulPreferenceDestroy
    int (*pref_set)(lt_pref, int attr, const void *, size_t) = nullptr;  // cublasLtMatmulPreferenceSetAttribute
    int (*heuristic)(lt_handle, lt_desc, lt_layout, lt_layout, lt_layout, lt_layout, lt_pref, int, lt_heuristic *,
                     int *) = nullptr;  // cublasLtMatmulAlgoGetHeuristic
    int (*matmul)(lt_handle, lt_desc, const void *alpha, const void *A, lt_layout, const void *B, lt_layout,
                  const void *beta, const void *C, lt_layout, void *D, lt_layout, const lt_algo *, void *workspace,
                  size_t, cudaStream_t) = nullptr;  // cublasLtMatmul
    char error[512] = {};
};

#if D4J_CUDA_EMU
const lt_api &lt() {
    static const lt_api a = [] {
        lt_api r;
        r.create = emu_lt::create;
        r.desc_create = emu_lt::desc_create;
        r.desc_destroy = emu_lt::desc_destroy;
        r.desc_set = emu_lt::desc_set;
        r.layout_create = emu_lt::layout_create;
        r.layout_destroy = emu_lt::layout_destroy;
        r.pref_create = emu_lt::pref_create;
        r.pref_destroy = emu_lt::pref_destroy;
        r.pref_set = emu_lt::pref_set;
        r.heuristic = emu_lt::heuristic;
        r.matmul = emu_lt::matmul;
        return r;
    }();
    return a;
}
#else
const lt_api &lt() {
    static const lt_api a = [] {
        lt_api r;
        void *lib = dlopen("libcublasLt.so.13", RTLD_NOW | RTLD_GLOBAL);
        if (lib == nullptr) {
            const char *why = dlerror();
            std::snprintf(r.error, sizeof r.error, "cuBLASLt is needed for the GEMMs with an epilogue: %s",
                          why != nullptr ? why : "libcublasLt.so.13 could not be opened");
            return r;
        }
        bool all = true;
        auto sym = [&](auto &fn, const char *name) {
            fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
            all = all && fn != nullptr;
        };
        sym(r.create, "cublasLtCreate");
        sym(r.desc_create, "cublasLtMatmulDescCreate");
        sym(r.desc_destroy, "cublasLtMatmulDescDestroy");
        sym(r.desc_set, "cublasLtMatmulDescSetAttribute");
        sym(r.layout_create, "cublasLtMatrixLayoutCreate");
        sym(r.layout_destroy, "cublasLtMatrixLayoutDestroy");
        sym(r.pref_create, "cublasLtMatmulPreferenceCreate");
        sym(r.pref_destroy, "cublasLtMatmulPreferenceDestroy");
        sym(r.pref_set, "cublasLtMatmulPreferenceSetAttribute");
        sym(r.heuristic, "cublasLtMatmulAlgoGetHeuristic");
        sym(r.matmul, "cublasLtMatmul");
        if (!all) {
            std::snprintf(r.error, sizeof r.error, "libcublasLt.so.13 lacks one of the cublasLt entry points used "
                                                   "(cublasLtCreate, cublasLtMatmul, ...)");
            r.create = nullptr;
        }
        return r;
    }();
    return a;
}
#endif

// cuBLASLt's workspace, per (device, stream): 32 MiB, the size the cuBLAS API reference (cublasSetWorkspace)
// recommends for Hopper, 4 MiB for earlier cards (PyTorch sizes its Lt workspace the same way); one size for all
// keeps it simple at 28 MiB too many per stream on Ampere. Too little can leave the heuristic only slower kernels.
// Under the emulator the heuristic asks for none: a token 4 KiB keeps the allocation path running without 32 MiB
// of host memory per stream in every test process.
constexpr size_t kLtWorkspaceBytes = D4J_CUDA_EMU ? size_t{4} << 10 : size_t{32} << 20;

struct stream_handle {
    std::mutex mutex;  // cuBLAS(Lt): a handle is used by one thread at a time; the scratch below by one GEMM
#if !D4J_CUDA_EMU
    cublas_handle handle = nullptr;
#endif
    lt_handle lt = nullptr;
    void *workspace = nullptr;     // kLtWorkspaceBytes, for the queued GEMMs of this stream only
    float *bias_grad = nullptr;    // BGRADB's output, added into the caller's dbias (+=) by lt_add_bias_grad
    int64_t bias_grad_cap = 0;     // floats
    float *partials = nullptr;     // the column sums' chunk partials (with_partials_scratch)
    int64_t partials_cap = 0;      // floats
};
std::mutex handles_mutex;  // guards the map only, never held during a GEMM
std::map<std::pair<int, cudaStream_t>, std::unique_ptr<stream_handle>> &handles =
    *new std::map<std::pair<int, cudaStream_t>, std::unique_ptr<stream_handle>>;  // never destroyed (see above)

// The (current device, stream) entry, created empty on first use; its address is stable (entries never erased).
stream_handle *pool_entry(const char *op, cudaStream_t stream) {
    // The dispatch library made the backend's device current on this thread (d4j_impl_set_device).
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) {
        fail_op(op, "no current CUDA device");
        return nullptr;
    }
    std::lock_guard<std::mutex> lock(handles_mutex);
    std::unique_ptr<stream_handle> &slot = handles[{device, stream}];
    if (slot == nullptr) slot = std::make_unique<stream_handle>();
    return slot.get();
}

// True when `stream` may allocate: it is not being captured into a CUDA graph, where cudaMalloc would break the
// capture. Otherwise says for `op` that `what` cannot be allocated now, and why.
bool may_allocate(cudaStream_t stream, const char *op, const char *what) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &capture) == cudaSuccess && capture == cudaStreamCaptureStatusNone) return true;
    cudaGetLastError();
    fail_op(op, (std::string(what) + " must be allocated, which a CUDA graph capture cannot do: run the step once "
                                     "uncaptured before capturing it").c_str());
    return false;
}

}  // namespace

// Grown, never shrunk, by cudaMalloc, which a CUDA graph capture may not call: the trainer runs one ordinary step
// before it captures, so every size is allocated then and a capture only finds it. A growth that would fall in a
// capture (a size not seen uncaptured) is refused with the reason instead of breaking the capture. The old buffer is
// never freed: a graph captured earlier may still name it (a few hundred KiB per growth, rare).
int with_partials_scratch(cudaStream_t stream, const char *op, int64_t floats,
                          const std::function<int(float *)> &queue) {
    stream_handle *h = pool_entry(op, stream);
    if (h == nullptr) return 1;
    std::lock_guard<std::mutex> lock(h->mutex);
    if (h->partials_cap < floats) {
        if (!may_allocate(stream, op, "a larger partials scratch for the bias gradient")) return 1;
        float *p = nullptr;
        if (cudaMalloc(&p, sizeof(float) * static_cast<size_t>(floats)) != cudaSuccess) {
            cudaGetLastError();
            return fail_op(op, "no device memory for the bias gradient's partials scratch");
        }
        h->partials = p;
        h->partials_cap = floats;
    }
    return queue(h->partials);
}

namespace {

// dbias[i] += g[i]: BGRADB writes the bias gradient (it has no beta), our contract accumulates parameter gradients.
constexpr int kAddThreads = 256;
__global__ void __launch_bounds__(kAddThreads) lt_add_bias_grad(const float *g, int64_t n, float *dbias) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
        dbias[i] += g[i];
}

// Owns the descriptors of one lt_gemm_rm call.
struct lt_call {
    const lt_api &a;
    lt_desc desc = nullptr;
    lt_layout la = nullptr, lb = nullptr, lc = nullptr;
    lt_pref pref = nullptr;
    ~lt_call() {
        if (pref != nullptr) a.pref_destroy(pref);
        for (lt_layout l : {la, lb, lc})
            if (l != nullptr) a.layout_destroy(l);
        if (desc != nullptr) a.desc_destroy(desc);
    }
};

}  // namespace

int gemm_rm(cudaStream_t stream, const char *op, gemm_mode mode, int ta, int tb, int64_t M, int64_t N, int64_t K,
            const void *A, int64_t lda, const void *B, int64_t ldb, float beta, float *C, int64_t ldc) {
#if D4J_CUDA_EMU
    return emulated_gemm(stream, op, mode, ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
#else
    const cublas_api &a = api();
    if (a.create == nullptr) return fail_op(op, a.error);
    stream_handle *h = pool_entry(op, stream);
    if (h == nullptr) return 1;
    std::lock_guard<std::mutex> lock(h->mutex);
    if (h->handle == nullptr) {
        // Created with the entry's device current, so the handle belongs to it.
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

// Row-major to cuBLASLt's column-major as gemm_rm does: C [M, N] row-major is Dᶜ [N, M] column-major with Aᶜ = B
// (op tb) and Bᶜ = A (op ta), m = N, n = M, k = K. So the epilogues seen from the row-major caller:
//   BIAS adds bias[i] to Dᶜ's row i, i.e. bias[n] to C's column n: nn.Linear's bias (length N);
//   BGRADB sums op(Bᶜ) = op(A)ᵀ over k into a vector over Dᶜ's columns, i.e. over C's rows: Σ_k op(A)[m, k].
// For dW [N, K] = dyᵀ · x the caller's A is dy (op T), so that sum is Σ_rows dy: the bias gradient, on the operand
// that Lt calls B. (BGRADA would sum x, the other operand: wrong.)
int lt_gemm_rm(cudaStream_t stream, const char *op, gemm_mode mode, int ta, int tb, int64_t M, int64_t N, int64_t K,
               const void *A, int64_t lda, const void *B, int64_t ldb, const float *C, const float *bias,
               float *dbias, float *D, int64_t ldd) {
    if (bias != nullptr && dbias != nullptr) return fail_op(op, "lt_gemm_rm: bias and dbias together (no epilogue)");
    if (dbias != nullptr && mode == gemm_mode::tf32) return fail_op(op, "lt_gemm_rm: no BGRADB in tf32 (cublas.cuh)");
    const lt_api &a = lt();
    if (a.create == nullptr) return fail_op(op, a.error);
    stream_handle *h = pool_entry(op, stream);
    if (h == nullptr) return 1;
    std::lock_guard<std::mutex> lock(h->mutex);
    auto status = [&](const char *entry, int s) {
        char msg[160];
        std::snprintf(msg, sizeof msg, "%s failed (cublasStatus_t %d)", entry, s);
        return fail_op(op, msg);
    };
    if (h->lt == nullptr) {
        // Created with the entry's device current, so the handle and the workspace belong to it.
        if (int s = a.create(&h->lt); s != kLtStatusSuccess) {
            h->lt = nullptr;
            return status("cublasLtCreate", s);
        }
    }
    // The workspace and BGRADB's scratch as the partials scratch above: allocated by an uncaptured call (the
    // trainer's first step), refused with the reason when a capture would need them, an outgrown scratch never freed
    // (a graph captured earlier may still name it).
    const bool grow_workspace = h->workspace == nullptr, grow_scratch = dbias != nullptr && h->bias_grad_cap < M;
    if ((grow_workspace || grow_scratch) &&
        !may_allocate(stream, op, "cuBLASLt's workspace or the bias gradient's scratch"))
        return 1;
    if (grow_workspace && cudaMalloc(&h->workspace, kLtWorkspaceBytes) != cudaSuccess) {
        cudaGetLastError();
        h->workspace = nullptr;
        return fail_op(op, "no device memory for cuBLASLt's workspace");
    }
    if (grow_scratch) {
        float *p = nullptr;  // grows rarely (the largest M of the stream)
        if (cudaMalloc(&p, sizeof(float) * static_cast<size_t>(M)) != cudaSuccess) {
            cudaGetLastError();
            return fail_op(op, "no device memory for the bias gradient's scratch");
        }
        h->bias_grad = p;
        h->bias_grad_cap = M;
    }
    lt_call call{a};
    const int type = mode == gemm_mode::bf16 ? kCudaR16BF : kCudaR32F;
    const int compute = mode == gemm_mode::tf32 ? kComputeF32FastTf32 : kComputeF32;
    const int32_t trans_a = tb, trans_b = ta;  // Aᶜ = B, Bᶜ = A
    const uint32_t epilogue = bias != nullptr ? kLtEpilogueBias : dbias != nullptr ? kLtEpilogueBgradB
                                                                                    : kLtEpilogueDefault;
    // Bias elements are D's type (fp32) for these types (cublasLt.h, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE), the
    // gradient C's (fp32): the default, so the data type attribute is left unset.
    const void *bias_ptr = bias != nullptr ? static_cast<const void *>(bias) : static_cast<const void *>(h->bias_grad);
    const uint64_t ws_bytes = kLtWorkspaceBytes;
    int s = a.desc_create(&call.desc, compute, kCudaR32F);
    if (s != kLtStatusSuccess) return status("cublasLtMatmulDescCreate", s);
    if ((s = a.desc_set(call.desc, kLtDescTransA, &trans_a, sizeof trans_a)) != kLtStatusSuccess ||
        (s = a.desc_set(call.desc, kLtDescTransB, &trans_b, sizeof trans_b)) != kLtStatusSuccess ||
        (s = a.desc_set(call.desc, kLtDescEpilogue, &epilogue, sizeof epilogue)) != kLtStatusSuccess ||
        (epilogue != kLtEpilogueDefault &&
         (s = a.desc_set(call.desc, kLtDescBiasPointer, &bias_ptr, sizeof bias_ptr)) != kLtStatusSuccess))
        return status("cublasLtMatmulDescSetAttribute", s);
    // Stored shapes (column-major rows x cols): Aᶜ = B is N x K under op T (stored K x N) ..., i.e. the row-major
    // operand [r, c] is column-major c x r with the same leading dimension.
    const uint64_t ar = static_cast<uint64_t>(tb == kTrans ? K : N), ac = static_cast<uint64_t>(tb == kTrans ? N : K);
    const uint64_t br = static_cast<uint64_t>(ta == kTrans ? M : K), bc = static_cast<uint64_t>(ta == kTrans ? K : M);
    if ((s = a.layout_create(&call.la, type, ar, ac, ldb)) != kLtStatusSuccess ||
        (s = a.layout_create(&call.lb, type, br, bc, lda)) != kLtStatusSuccess ||
        (s = a.layout_create(&call.lc, kCudaR32F, static_cast<uint64_t>(N), static_cast<uint64_t>(M), ldd)) !=
            kLtStatusSuccess)
        return status("cublasLtMatrixLayoutCreate", s);
    if ((s = a.pref_create(&call.pref)) != kLtStatusSuccess) return status("cublasLtMatmulPreferenceCreate", s);
    if ((s = a.pref_set(call.pref, kLtPrefMaxWorkspace, &ws_bytes, sizeof ws_bytes)) != kLtStatusSuccess)
        return status("cublasLtMatmulPreferenceSetAttribute", s);
    // C and D share one layout (same shape and leading dimension; in place when C is D, as for dW += ...).
    lt_heuristic best{};
    int found = 0;
    s = a.heuristic(h->lt, call.desc, call.la, call.lb, call.lc, call.lc, call.pref, 1, &best, &found);
    if (s == kLtNotSupported || (s == kLtStatusSuccess && found == 0)) return kLtUnsupported;
    if (s != kLtStatusSuccess) return status("cublasLtMatmulAlgoGetHeuristic", s);
    const float one = 1.0f, beta = C != nullptr ? 1.0f : 0.0f;
    // beta 0: C is not read; D stands in for it (a valid pointer of the same layout).
    s = a.matmul(h->lt, call.desc, &one, B, call.la, A, call.lb, &beta, C != nullptr ? C : D, call.lc, D, call.lc,
                 &best.algo, h->workspace, kLtWorkspaceBytes, stream);
    if (s == kLtNotSupported) return kLtUnsupported;  // refused before running: the same as no algorithm
    if (s != kLtStatusSuccess) return status("cublasLtMatmul", s);
    if (dbias == nullptr) return 0;
    // Under the handle's lock: no other GEMM of this stream can be queued between the write and this read.
    const int64_t blocks = std::min<int64_t>((M + kAddThreads - 1) / kAddThreads, 1024);
    D4J_LAUNCH(lt_add_bias_grad, dim3(static_cast<unsigned>(blocks)), dim3(kAddThreads), 0, stream, h->bias_grad, M,
               dbias);
    return check_launch("lt_add_bias_grad");
}

}  // namespace d4j::cuda

#if D4J_CUDA_EMU
// Test hooks for linear_emu (looked up with dlsym): the emulated cublasLtMatmul calls so far, and a switch that
// makes the emulated heuristic find no algorithm, so the callers' cuBLAS fallback runs.
D4J_IMPL_API long d4j_impl_emu_lt_matmul_calls(void) { return d4j::cuda::emu_lt_matmul_calls.load(); }
D4J_IMPL_API void d4j_impl_emu_lt_no_algorithm(int on) { d4j::cuda::emu_lt_no_algorithm.store(on); }
#endif
