// Shared by the CPU kernels: the error slot behind d4j_impl_last_error.
#ifndef D4J_CPU_COMMON_H
#define D4J_CPU_COMMON_H

#include <cstdint>

namespace d4j::cpu {

// cblas_sgemm's signature (CBLAS enums as int: RowMajor 101, NoTrans 111, Trans 112).
using sgemm_fn = void (*)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                          const float *b, int ldb, float beta, float *c, int ldc);
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

// OpenBLAS's cblas_sgemm, or nullptr with the reason in d4j_impl_last_error: GEMMs are not hand-written on the CPU.
// The library is the one the org.bytedeco:openblas preset loaded into the process (found by soname, never a
// second copy); native test programs dlopen it themselves before d4j_impl_init.
sgemm_fn sgemm();

// How many OpenMP threads may call sgemm at once, each on its own block. Two thread pools in one process on few
// cores fight: after an OpenMP region its workers spin-wait, and after an sgemm OpenBLAS's own workers spin, each
// stealing the cores the other pool needs next (2 cores: patch_embed backward 30 ms with one pool, 60-140 ms with
// both). So when OpenBLAS runs single-threaded (the CPU backend sets it so) the kernels spread their GEMMs over our
// OpenMP threads (the answer is the OpenMP thread count); otherwise 1: one call at a time, threaded by OpenBLAS.
int gemm_workers();

// Row-major sgemm with int64 sizes (callers check that they fit an int).
inline void sgemm_rm(sgemm_fn gemm, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                     const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    gemm(kRowMajor, trans_a, trans_b, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
         static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

// Records a message for d4j_impl_last_error on this thread and returns the nonzero error code.
int fail(const char *message);
}  // namespace d4j::cpu
#endif
