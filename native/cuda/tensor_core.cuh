// Tensor-core building blocks for bf16 kernels (sm_80 and later): the bf16 type, mma.sync m16n8k16, ldmatrix and
// cp.async, as device functions that compile to the PTX instruction under nvcc and run on the emulator
// (emu/tensor_core_emu.h, emu/cuda_bf16_emu.h) under g++. Include after common.cuh.
//
//   __nv_bfloat16, __nv_bfloat162, __float2bfloat16_rn, __bfloat162float, __floats2bfloat162_rn, ... (CUDA's)
//   uint16_t bf16_rn(float f)                          f rounded to nearest even (cvt.rn.bf16.f32), as bits; a NaN
//                                                      keeps its sign and upper payload with the quiet bit set
//                                                      (cast.cu's contract, the same bits on every backend; CUDA's
//                                                      own conversion gives 0x7FFF whatever the sign)
//   store_as(out, i, v)                                out[i] = v for float *out, bf16_rn(v) for uint16_t *out:
//                                                      the one store of kernels with fp32 and bf16 outputs
//   uint32_t pack_bf16x2(float lo, float hi)            two floats rounded to nearest even, lo in bits 0..15:
//                                                      one .bf16x2 fragment register
//   mma_m16n8k16_bf16(d, a, b, c)                      mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32:
//                                                      D (16x8) = A (16x16) B (16x8) + C, fp32 accumulation;
//                                                      uint32_t a[4], b[2], float c[4], d[4] in the fragment
//                                                      layouts of the PTX ISA ("Matrix Fragments for
//                                                      mma.m16n8k16", .bf16). d may alias c. Whole warp only.
//   ldmatrix(r, row) / ldmatrix<true>(r, row)          ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16
//                                                      (N = 1, 2, 4 from uint32_t r[N]): row is this lane's
//                                                      16-byte-aligned shared-memory row address (lanes 8m..8m+7:
//                                                      rows 0..7 of matrix m). Whole warp only.
//   cp_async_cg16(dst, src [, src_bytes])              cp.async.cg.shared.global, 16 bytes (L2 only): global ->
//                                                      shared without registers; with src_bytes < 16 the rest is
//                                                      zero-filled (tails)
//   cp_async_ca<BYTES>(dst, src)                       cp.async.ca.shared.global, 4, 8 or 16 bytes (L1 too)
//   cp_async_commit()                                  cp.async.commit_group: the copies issued since form a group
//   cp_async_wait<N>()                                 cp.async.wait_group N: this thread's groups but the newest N
//                                                      have landed. Other threads see them after a __syncthreads.
//   cp_async_wait_all()                                cp.async.wait_all (commit, then wait for every group)
//
// The emulator's versions check what the hardware leaves undefined (a diverged or partial warp at mma/ldmatrix,
// misaligned or non-shared addresses) and defer every cp.async until its wait (see emu/tensor_core_emu.h).
#ifndef D4J_CUDA_TENSOR_CORE_CUH
#define D4J_CUDA_TENSOR_CORE_CUH

#include "common.cuh"

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#else
#include "emu/tensor_core_emu.h"
#endif

namespace d4j::tc {

__device__ __forceinline__ uint16_t bf16_rn(float f) {
    const uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

__device__ __forceinline__ void store_as(float *out, int64_t i, float v) { out[i] = v; }
__device__ __forceinline__ void store_as(uint16_t *out, int64_t i, float v) { out[i] = bf16_rn(v); }

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    uint32_t r;
    memcpy(&r, &v, sizeof r);
    return r;
}

#if defined(__CUDACC__)

__device__ __forceinline__ uint32_t shared_address(const void *p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                  const float (&c)[4]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
}

// "memory": the compiler must not move shared-memory accesses across the load (it reads what others stored).
template <bool TRANS = false, int N>
__device__ __forceinline__ void ldmatrix(uint32_t (&r)[N], const void *row) {
    static_assert(N == 1 || N == 2 || N == 4, "ldmatrix loads 1, 2 or 4 matrices");
    const uint32_t a = shared_address(row);
    if constexpr (N == 1 && !TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(a) : "memory");
    else if constexpr (N == 1)
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(a) : "memory");
    else if constexpr (N == 2 && !TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                     : "=r"(r[0]), "=r"(r[1]) : "r"(a) : "memory");
    else if constexpr (N == 2)
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                     : "=r"(r[0]), "=r"(r[1]) : "r"(a) : "memory");
    else if constexpr (!TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a) : "memory");
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a) : "memory");
}

__device__ __forceinline__ void cp_async_cg16(void *dst, const void *src, unsigned src_bytes = 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst)), "l"(src),
                 "r"(src_bytes)
                 : "memory");
}
template <int BYTES>
__device__ __forceinline__ void cp_async_ca(void *dst, const void *src) {
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async.ca copies 4, 8 or 16 bytes");
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(shared_address(dst)), "l"(src), "n"(BYTES)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

#else  // the emulator; the call site names the instruction in its error messages

inline void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                              std::source_location site = std::source_location::current()) {
    d4j_emu::tc::mma_m16n8k16_bf16(d, a, b, c, site);
}
template <bool TRANS = false, int N>
void ldmatrix(uint32_t (&r)[N], const void *row, std::source_location site = std::source_location::current()) {
    d4j_emu::tc::ldmatrix<TRANS>(r, row, site);
}
inline void cp_async_cg16(void *dst, const void *src, unsigned src_bytes = 16,
                          std::source_location site = std::source_location::current()) {
    d4j_emu::tc::cp_async("cp.async.cg.shared.global", dst, src, 16, src_bytes, site);
}
template <int BYTES>
void cp_async_ca(void *dst, const void *src, std::source_location site = std::source_location::current()) {
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async.ca copies 4, 8 or 16 bytes");
    d4j_emu::tc::cp_async("cp.async.ca.shared.global", dst, src, BYTES, BYTES, site);
}
inline void cp_async_commit() { d4j_emu::tc::cp_async_commit(); }
template <int N>
void cp_async_wait() {
    static_assert(N >= 0, "cp.async.wait_group takes a count of groups");
    d4j_emu::tc::cp_async_wait(N);
}
inline void cp_async_wait_all() {
    d4j_emu::tc::cp_async_commit();
    d4j_emu::tc::cp_async_wait(0);
}

#endif

}  // namespace d4j::tc

#endif
