// The GEMMs of the linear ops (linear.cu, linear_bf16.cu): row-major entries over cuBLAS (gemm_rm) and cuBLASLt
// with its bias epilogues (lt_gemm_rm), both opened at run time with one handle per (device, stream) (cublas.cu);
// under the emulator over the host's OpenBLAS (cuBLASLt through an emulation of the subset called). Include after
// common.cuh.
#ifndef D4J_CUDA_CUBLAS_CUH
#define D4J_CUDA_CUBLAS_CUH

#include <cstdint>
#include <functional>

namespace d4j::cuda {

constexpr int kNoTrans = 0, kTrans = 1;  // cublasOperation_t; mapped to CBLAS (111, 112) under the emulator

// The operands' type and the multiplication; C is fp32 and every sum fp32 in all three.
enum class gemm_mode {
    fp32,  // fp32 operands: cublasSgemm (the default math mode, no TF32)
    tf32,  // fp32 operands, multiplied as TF32 on the tensor cores: cublasGemmEx, CUBLAS_COMPUTE_32F_FAST_TF32
    bf16,  // bf16 operands (uint16_t bits): cublasGemmEx, CUDA_R_16BF, CUBLAS_COMPUTE_32F (bf16 products are exact)
};

// Row-major C [M, N] = op(A) op(B) + beta C, A and B of the mode's type, C fp32, on `stream` of the current device.
// `op` names the calling op in error messages. Sizes must fit an int (the callers check).
int gemm_rm(cudaStream_t stream, const char *op, gemm_mode mode, int ta, int tb, int64_t M, int64_t N, int64_t K,
            const void *A, int64_t lda, const void *B, int64_t ldb, float beta, float *C, int64_t ldc);

// lt_gemm_rm's answer when cuBLASLt has no algorithm for the case (its heuristic found none): nothing was run and
// no error recorded; the caller takes the gemm_rm path (a prologue or column-sum kernel around a cuBLAS GEMM).
constexpr int kLtUnsupported = 2;

// Row-major D [M, N] = op(A) op(B) + C (C null: beta 0, C not read; C may be D) through one cublasLtMatmul
// (cublas.cu; an emulated cuBLASLt under the emulator), with at most one epilogue:
//   bias  (fp32, length N): D[m, n] += bias[n]                          (CUBLASLT_EPILOGUE_BIAS)
//   dbias (fp32, length M): dbias[m] += Σ_k op(A)[m, k], A's values as the mode multiplies them
//                           (CUBLASLT_EPILOGUE_BGRADB into a per-stream scratch, then added: Lt only writes it);
//                           fp32 and bf16 modes only (what BGRADB sums in TF32 is undocumented).
// Returns 0, 1 (error recorded) or kLtUnsupported.
int lt_gemm_rm(cudaStream_t stream, const char *op, gemm_mode mode, int ta, int tb, int64_t M, int64_t N, int64_t K,
               const void *A, int64_t lda, const void *B, int64_t ldb, const float *C, const float *bias,
               float *dbias, float *D, int64_t ldd);

// Runs queue(scratch) under the (current device, stream) entry's lock, scratch an fp32 buffer of at least `floats`
// kept per (device, stream) (cublas.cu; growth is refused during a graph capture, see there): the column sums'
// chunk partials (linear.cu). The lock keeps another thread's launches on the stream from falling between
// queue's write and its read of the scratch. Returns queue's answer, or 1 (error recorded).
int with_partials_scratch(cudaStream_t stream, const char *op, int64_t floats,
                          const std::function<int(float *)> &queue);

}  // namespace d4j::cuda

#endif
