// Vector math for the CPU kernels. AVX2+FMA intrinsics, 8 lanes, with a scalar twin for tails and other ISAs.
// libm's expf is one call per element unless -ffast-math, and -ffast-math would also assume no inf/NaN, which
// the KL kernel must handle (-inf logits are legal); gcc would not vectorise our own scalar exp either (it
// spilled its omp-simd reduction arrays). So: a Cephes-style exp, written once per width, ~1 ulp.
#ifndef D4J_CPU_VEC_MATH_H
#define D4J_CPU_VEC_MATH_H

#include <immintrin.h>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace d4j::cpu {

// Range reduction exp(x) = 2^n exp(r), |r| <= ln2/2, with ln2 split in two (Cody-Waite) so r keeps its low bits.
constexpr float kExpLo = -87.3f, kExpHi = 88.3f, kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f, kP3 = 4.1665795894e-2f,
                kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;

// exp(x) for x <= 88 (the kernels pass max-shifted values, x <= 0, or -inf). 0 below -87.3, where expf would
// be subnormal. NaN is not propagated: callers screen NaN rows first.
inline float exp_ss(float x) {
    const float xc = std::fmin(std::fmax(x, kExpLo), kExpHi);
    const float n = std::floor(xc * kLog2e + 0.5f);
    const float r = std::fma(n, -kLn2Lo, std::fma(n, -kLn2Hi, xc));
    float p = std::fma(std::fma(std::fma(std::fma(std::fma(kP0, r, kP1), r, kP2), r, kP3), r, kP4), r, kP5);
    p = std::fma(p, r * r, r) + 1.0f;
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return x < kExpLo ? 0.0f : p * scale;
}

#ifdef __AVX2__
inline __m256 exp_ps(__m256 x) {
    const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(kExpLo)), _mm256_set1_ps(kExpHi));
    // Round x*log2e to the nearest integer by adding 1.5*2^23 (+127, the exponent bias): the low mantissa bits
    // of `shifted` then hold n + 127, ready to become the exponent field of 2^n. No vroundps, no vcvtps2dq.
    const __m256 magic = _mm256_set1_ps(12582912.0f + 127.0f);
    const __m256 shifted = _mm256_fmadd_ps(xc, _mm256_set1_ps(kLog2e), magic);
    const __m256 n = _mm256_sub_ps(shifted, _mm256_set1_ps(12582912.0f + 127.0f));
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
    __m256 p = _mm256_set1_ps(kP0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP5));
    p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(shifted), 23));
    // Exact 0 below the range (and for -inf): the KL kernel's 0 * log 0 = 0 test relies on it.
    return _mm256_and_ps(_mm256_mul_ps(p, scale), _mm256_cmp_ps(x, _mm256_set1_ps(kExpLo), _CMP_GE_OQ));
}

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// A long sum of __m256 terms, in blocks of 32 vectors: each lane's rounding error grows with 32 + n/256 additions
// instead of n/8. A plain running sum over a 32000-class row (4000 additions a lane) drifts by ~1e-5 relative,
// the whole budget of a test against float64.
struct blocked_sum {
    __m256 total = _mm256_setzero_ps(), part = _mm256_setzero_ps();
    int n = 0;

    void add(__m256 v) {
        part = _mm256_add_ps(part, v);
        if (++n == 32) total = _mm256_add_ps(total, part), part = _mm256_setzero_ps(), n = 0;
    }
    float value() const { return hsum(_mm256_add_ps(total, part)); }
};

inline float hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

}  // namespace d4j::cpu
#endif
