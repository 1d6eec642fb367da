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

// OpenBLAS's own thread count (openblas_get_num_threads), 0 when unknown. At 1, a kernel may call sgemm from
// several OpenMP threads at once on disjoint blocks: one thread pool for the whole op, none spinning against it.
int blas_threads();

// Records a message for d4j_impl_last_error on this thread and returns the nonzero error code.
int fail(const char *message);
}  // namespace d4j::cpu
#endif
