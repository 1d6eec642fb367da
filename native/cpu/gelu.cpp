// Exact (erf) GELU on the CPU, y = x Phi(x), and its derivative Phi(x) + x phi(x).
// 1 + erf(x/sqrt 2) cancels for x < 0 (at x = -5 float erf keeps one digit of Phi), so Phi comes from erfc on
// the side where it is small: Phi(x) = erfc(|x|/sqrt 2)/2 for x < 0, 1 - that for x >= 0. erfc(z) =
// t exp(-z^2 + P(t)), t = 1/(1 + z/2) (Numerical Recipes' erfcc, relative error < 1.2e-7 for all z >= 0).
// exp(-z^2) is formed from x^2 split exactly into hi + lo (FMA), so the large argument carries no rounding:
// a float z^2 near 80 would be off by 4e-6 and so would the tail. Max relative error of y vs float64: ~5e-7.
// The bf16 outputs (issue #18) are the fp32 values of the same code, rounded once by bf16_rn (common.h, the rule of
// the casts) block by block while the block is in L1: one pass over memory instead of a kernel and a cast.
#include "distill4j_impl.h"
#include "common.h"
#include "vec_math.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace {

using namespace d4j::cpu;

constexpr float kInvSqrt2 = 0.70710678118654752f, kInvSqrt2Pi = 0.39894228040143268f, kNrBias = -1.26551223f;
constexpr float kNr[9] = {1.00002368f,  0.37409196f, 0.09678418f, -0.18628806f, 0.27886807f,
                          -1.13520398f, 1.48851587f, -0.82215223f, 0.17087277f};

// Phi(x) and the density phi(x).
// x is clamped to +-20 first (Phi is 0 or 1 in float there): x^2 = inf would make lo = inf - inf = NaN.
inline void phi_ss(float x_in, float &cdf, float &pdf) {
    const float x = std::fmin(std::fmax(x_in, -20.0f), 20.0f);
    const float hi = x * x, lo = std::fma(x, x, -hi);
    const float e = exp_ss(-0.5f * hi) * (1.0f - 0.5f * lo);  // exp(-x^2/2); below -87 exp_ss gives 0, as it should
    const float t = 1.0f / (1.0f + 0.5f * kInvSqrt2 * std::fabs(x));
    float p = kNr[8];
    for (int i = 7; i >= 0; --i) p = std::fma(p, t, kNr[i]);
    const float half_erfc = 0.5f * t * e * exp_ss(std::fma(t, p, kNrBias));
    cdf = x < 0.0f ? half_erfc : 1.0f - half_erfc;
    pdf = kInvSqrt2Pi * e;
}

#ifdef __AVX2__
inline void phi_ps(__m256 x_in, __m256 &cdf, __m256 &pdf) {
    const __m256 x = _mm256_min_ps(_mm256_max_ps(x_in, _mm256_set1_ps(-20.0f)), _mm256_set1_ps(20.0f));
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    const __m256 hi = _mm256_mul_ps(x, x), lo = _mm256_fmsub_ps(x, x, hi);
    const __m256 e = _mm256_mul_ps(exp_ps(_mm256_mul_ps(_mm256_set1_ps(-0.5f), hi)), _mm256_fnmadd_ps(half, lo, one));
    const __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
    const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.5f * kInvSqrt2), ax, one));
    __m256 p = _mm256_set1_ps(kNr[8]);
    for (int i = 7; i >= 0; --i) p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(kNr[i]));
    const __m256 q = exp_ps(_mm256_fmadd_ps(t, p, _mm256_set1_ps(kNrBias)));
    const __m256 half_erfc = _mm256_mul_ps(_mm256_mul_ps(half, t), _mm256_mul_ps(e, q));
    const __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
    cdf = _mm256_blendv_ps(_mm256_sub_ps(one, half_erfc), half_erfc, neg);
    pdf = _mm256_mul_ps(_mm256_set1_ps(kInvSqrt2Pi), e);
}
#endif

// exp_ss/exp_ps do not propagate NaN (the KL kernel screens it): put it back so NaN in gives NaN out.
template <bool BACKWARD>
void gelu_range(const float *x, const float *dy, float *out, int64_t begin, int64_t end) {
    int64_t i = begin;
#ifdef __AVX2__
    for (; i + 8 <= end; i += 8) {
        const __m256 xv = _mm256_loadu_ps(x + i);
        __m256 cdf, pdf;
        phi_ps(xv, cdf, pdf);
        __m256 r = BACKWARD ? _mm256_mul_ps(_mm256_loadu_ps(dy + i), _mm256_fmadd_ps(xv, pdf, cdf))
                            : _mm256_mul_ps(xv, cdf);
        r = _mm256_blendv_ps(r, xv, _mm256_cmp_ps(xv, xv, _CMP_UNORD_Q));
        _mm256_storeu_ps(out + i, r);
    }
#endif
    for (; i < end; ++i) {
        float cdf, pdf;
        phi_ss(x[i], cdf, pdf);
        const float r = BACKWARD ? dy[i] * std::fma(x[i], pdf, cdf) : x[i] * cdf;
        out[i] = std::isnan(x[i]) ? x[i] : r;
    }
}

// Blocks of 4096 elements (16 KB per array): big enough to amortise the scheduling, small enough for OpenMP to
// balance; element-wise, so the split never changes a result.
constexpr int64_t kBlock = 4096;

// The block's elements [begin, end) in fp32, then to out: as they are, or rounded to bf16 bits.
template <bool BACKWARD>
void gelu_block(const float *x, const float *dy, float *out, int64_t begin, int64_t end) {
    gelu_range<BACKWARD>(x, dy, out, begin, end);
}

template <bool BACKWARD>
void gelu_block(const float *x, const float *dy, uint16_t *out, int64_t begin, int64_t end) {
    float tmp[kBlock];
    // Offsets from begin, a multiple of kBlock (and so of 8): the same elements take the AVX2 path as in fp32.
    gelu_range<BACKWARD>(x + begin, dy == nullptr ? nullptr : dy + begin, tmp, 0, end - begin);
    for (int64_t i = begin; i < end; ++i) store_as(out, i, tmp[i - begin]);
}

template <bool BACKWARD, typename T>
void gelu(const float *x, const float *dy, T *out, int64_t n) {
    const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(dynamic, 1) num_threads(d4j::cpu::threads_for(n))
    for (int64_t b = 0; b < blocks; ++b) gelu_block<BACKWARD>(x, dy, out, b * kBlock, std::min(n, (b + 1) * kBlock));
}

}  // namespace

D4J_IMPL_API int d4j_impl_gelu_forward(void *, const float *x, int64_t n, float *y) {
    if (x == nullptr || y == nullptr || n <= 0) return d4j::cpu::fail("gelu_forward: null buffer or n <= 0");
    gelu<false>(x, nullptr, y, n);
    return 0;
}

D4J_IMPL_API int d4j_impl_gelu_backward(void *, const float *x, const float *dy, int64_t n, float *dx) {
    if (x == nullptr || dy == nullptr || dx == nullptr || n <= 0)
        return d4j::cpu::fail("gelu_backward: null buffer or n <= 0");
    gelu<true>(x, dy, dx, n);  // dx may alias dy: each element is read before it is written, by the same thread
    return 0;
}

D4J_IMPL_API int d4j_impl_gelu_forward_bf16(void *, const float *x, int64_t n, uint16_t *y) {
    if (x == nullptr || y == nullptr || n <= 0) return d4j::cpu::fail("gelu_forward_bf16: null buffer or n <= 0");
    gelu<false>(x, nullptr, y, n);
    return 0;
}

D4J_IMPL_API int d4j_impl_gelu_backward_bf16(void *, const float *x, const float *dy, int64_t n, uint16_t *dx) {
    if (x == nullptr || dy == nullptr || dx == nullptr || n <= 0)
        return d4j::cpu::fail("gelu_backward_bf16: null buffer or n <= 0");
    gelu<true>(x, dy, dx, n);
    return 0;
}
