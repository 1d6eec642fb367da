// Shared by the CPU kernels: the error slot behind d4j_impl_last_error.
#ifndef D4J_CPU_COMMON_H
#define D4J_CPU_COMMON_H

#include "threads.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

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
// OpenMP threads: gemm_workers() is team() (threads.h), gemm_max_workers() threads(); otherwise both are 1, one
// call at a time, threaded by OpenBLAS.
int gemm_workers();
int gemm_max_workers();

// Threads for a parallel region that touches about `work` floats: the team (threads.h). Below kSerialWork (~10 us
// of work) the region runs on the calling thread alone: a team costs a wake-up and a barrier, which on a busy
// machine means waiting a scheduler time slice (milliseconds) for a descheduled thread, for microseconds of work.
// AdamW on a bias, the losses at batch 8 and the like stay serial.
constexpr int64_t kSerialWork = 32768;
inline int threads_for(int64_t work) { return work < kSerialWork ? 1 : team(); }

// Iterations per dynamic chunk of a loop over n independent rows: 4 chunks per thread, at least 32 chunks, so that
// a descheduled thread holds back at most one small chunk. Each row is written by whichever thread takes it, with
// the same arithmetic: the schedule never changes a result.
inline int64_t row_chunk(int64_t n) { return std::max<int64_t>(1, n / std::max(32, 4 * threads())); }

// The GEMM splits. A product is cut into blocks along one output dimension, each block one single-threaded sgemm
// call, handed to the threads dynamically: a thread that is descheduled (another process on its core) takes fewer
// blocks instead of holding the others at the barrier. Two blocks per thread of threads(), the process's fixed
// count, never per thread of the team, which follows the load: every output element comes from the same call with
// the same operands whichever thread runs it and however many run, so the load changes no bit. (Blocks fixed by the
// shape alone would also make the bits independent of threads(), but each call packs the whole other operand: 8
// blocks on 2 cores cost the DeiT-Ti step about 5 %, 2 per thread are within the noise of 1.) At least kGemmMinRows
// rows each; boundaries on multiples of kGemmAlign, OpenBLAS's AVX2 micro-tile.
constexpr int64_t kGemmAlign = 16, kGemmMinRows = 64;

inline int64_t gemm_max_blocks() { return gemm_max_workers() == 1 ? 1 : 2 * int64_t{gemm_max_workers()}; }
inline int64_t gemm_blocks(int64_t n) {
    return std::min(gemm_max_blocks(), std::max<int64_t>(1, n / kGemmMinRows));
}

// [begin, end) of block i of `count` over n items, in units of kGemmAlign (the last block takes the remainder).
inline void gemm_block(int64_t n, int64_t count, int64_t i, int64_t &begin, int64_t &end) {
    const int64_t units = (n + kGemmAlign - 1) / kGemmAlign;
    begin = std::min(n, units * i / count * kGemmAlign);
    end = std::min(n, units * (i + 1) / count * kGemmAlign);
}

// Threads for `blocks` GEMM blocks of `macs` multiply-adds in all: no more than blocks, one below ~10 us of work.
inline int gemm_threads(int64_t blocks, double macs) {
    return macs < 64.0 * kSerialWork ? 1 : static_cast<int>(std::min<int64_t>(gemm_workers(), blocks));
}

// Row-major sgemm with int64 sizes (callers check that they fit an int).
inline void sgemm_rm(sgemm_fn gemm, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                     const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    gemm(kRowMajor, trans_a, trans_b, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
         static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

// Records a message for d4j_impl_last_error on this thread and returns the nonzero error code.
int fail(const char *message);

// fp32 bits u -> bf16 bits, round to nearest even (cvt.rn.bf16.f32); a NaN stays a quiet NaN with its sign and the
// payload's upper bits (the contract of d4j_impl_cast_bf16, the same bits as native/cuda/cast.cu). Adding 0x7FFF
// plus the kept part's lowest bit carries into the kept part exactly when the dropped half is above a tie, or a tie
// with an odd kept part; a carry out of the significand moves to the next binade, and past the largest finite
// value to infinity (0x7F80), as IEEE rounding must. Subnormals round the same way (nothing is flushed).
// Branch-free, so loops over it vectorise.
inline uint16_t bf16_rn(uint32_t u) {
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const uint32_t quiet = (u >> 16) | 0x0040u;
    return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}

// out[i] = v for float *out, bf16_rn(v) for uint16_t *out: the one store of kernels with fp32 and bf16 outputs.
inline void store_as(float *out, int64_t i, float v) { out[i] = v; }
inline void store_as(uint16_t *out, int64_t i, float v) {
    uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    out[i] = bf16_rn(u);
}
}  // namespace d4j::cpu
#endif
