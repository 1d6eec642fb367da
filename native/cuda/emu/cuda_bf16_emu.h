// bfloat16 for the emulator: the part of CUDA's <cuda_bf16.h> that kernels use, with the same names and layout.
// Included at the end of cuda_emu.h; never under nvcc.
//
// float -> bf16 is cvt.rn.bf16.f32 (PTX ISA, "cvt"): round to nearest, ties to even, on the 8-bit significand,
// with the exponent range of fp32, so subnormals round like normals (no flush), a carry out of the significand
// moves to the next binade and past the largest finite value to infinity, and infinities stay infinities. A NaN
// becomes the canonical quiet NaN 0x7FFF, as NVIDIA's own host implementation in cuda_bf16.hpp returns (the ISA
// only promises a NaN; the tests require a quiet NaN and compare the bits with that implementation).
// bf16 -> float is exact: the 16 bits become the upper half of the float.
#ifndef D4J_CUDA_BF16_EMU_H
#define D4J_CUDA_BF16_EMU_H

#include <bit>
#include <cstdint>

// The 16 bits in __x, as CUDA's own type keeps them; aggregates (trivially copyable, no implicit conversions),
// so that a kernel converts explicitly with the functions below.
struct __attribute__((aligned(2))) __nv_bfloat16 {
    unsigned short __x;
};
// .x in the low 16 bits (the lower address), .y in the high: the element order of a .bf16x2 register.
struct __attribute__((may_alias, aligned(4))) __nv_bfloat162 {
    __nv_bfloat16 x, y;
};
static_assert(sizeof(__nv_bfloat16) == 2 && sizeof(__nv_bfloat162) == 4);

inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return {u}; }

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    const uint32_t u = std::bit_cast<uint32_t>(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return {0x7fff};
    // Adding half an ulp minus one, plus the kept bit's parity, carries into bit 16 exactly when the dropped half
    // is above a tie, or a tie with an odd kept part: ties to even. The carry may ripple into the exponent
    // (next binade, or 0x7f80 = infinity after the largest finite value), as rounding must.
    const uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
    return {static_cast<unsigned short>(rounded >> 16)};
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return std::bit_cast<float>(static_cast<uint32_t>(h.__x) << 16); }

inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
    return {__float2bfloat16_rn(lo), __float2bfloat16_rn(hi)};
}
inline __nv_bfloat162 __float22bfloat162_rn(float2 f) { return __floats2bfloat162_rn(f.x, f.y); }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return {__bfloat162float(h.x), __bfloat162float(h.y)}; }
inline float __low2float(__nv_bfloat162 h) { return __bfloat162float(h.x); }
inline float __high2float(__nv_bfloat162 h) { return __bfloat162float(h.y); }
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 lo, __nv_bfloat16 hi) { return {lo, hi}; }

#endif
