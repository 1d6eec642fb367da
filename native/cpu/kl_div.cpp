// Fused log_softmax + KL divergence on the CPU: loss and d loss / d student in one call.
// OpenMP over rows; inside a row, three AVX2 sweeps (maxima, exp-sums, loss terms + gradient). A row of 32000
// classes is 256 KB for both inputs, so sweeps 2 and 3 read it from L2: memory sees each input once.
#include "distill4j_impl.h"
#include "common.h"
#include "vec_math.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

using namespace d4j::cpu;

// Normalisation of the summed loss (and of every gradient element) for each reduction.
double reduction_norm(int reduction, int64_t B, int64_t C) {
    switch (reduction) {
        case D4J_REDUCTION_BATCHMEAN: return 1.0 / static_cast<double>(B);
        case D4J_REDUCTION_MEAN: return 1.0 / (static_cast<double>(B) * static_cast<double>(C));
        default: return 1.0;  // SUM, and NONE where each row is its own loss
    }
}

// Screens a row (sweep 1): maxima of student and teacher, and whether any NaN is present.
struct row_max {
    float ms, mt;
    bool nan;
};

row_max scan_row(const float *s, const float *t, int64_t C) {
    row_max m{-INFINITY, -INFINITY, false};
    int64_t i = 0;
#ifdef __AVX2__
    // Four independent accumulators per input: one running vmaxps would wait on its own latency.
    __m256 ms4[4], mt4[4], nan = _mm256_setzero_ps();
    for (int j = 0; j < 4; ++j) ms4[j] = mt4[j] = _mm256_set1_ps(-INFINITY);
    for (; i + 32 <= C; i += 32) {
        for (int j = 0; j < 4; ++j) {
            const __m256 sv = _mm256_loadu_ps(s + i + 8 * j), tv = _mm256_loadu_ps(t + i + 8 * j);
            ms4[j] = _mm256_max_ps(ms4[j], sv);
            mt4[j] = _mm256_max_ps(mt4[j], tv);
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(sv, tv, _CMP_UNORD_Q));
        }
    }
    m.ms = hmax(_mm256_max_ps(_mm256_max_ps(ms4[0], ms4[1]), _mm256_max_ps(ms4[2], ms4[3])));
    m.mt = hmax(_mm256_max_ps(_mm256_max_ps(mt4[0], mt4[1]), _mm256_max_ps(mt4[2], mt4[3])));
    m.nan = _mm256_movemask_ps(nan) != 0;
#endif
    for (; i < C; ++i) {
        m.ms = std::fmax(m.ms, s[i]);
        m.mt = std::fmax(m.mt, t[i]);
        m.nan |= std::isnan(s[i]) || std::isnan(t[i]);
    }
    return m;
}

// One row. Returns the unscaled row loss; writes the gradient times `k` into g when GRAD.
// Sweep 2 sums d_s = sum exp(a), d_t = sum exp(b) with a = (z_s - max_s)/T, b = (z_t - max_t)/T (b = log q itself
// when LOG_TARGET). Sweep 3 then knows log p = a - log d_s and log q = b - log d_t exactly as log_softmax forms
// them, and adds q (log q - log p) term by term: summing exp-weighted logs first and subtracting the logs of the
// sums at the end loses ~1e-5 to cancellation at C = 32000.
template <bool LOG_TARGET, bool GRAD>
float kl_row(const float *s, const float *t, float *g, int64_t C, float inv_T, float k) {
    const row_max m = scan_row(s, t, C);
    // NaN anywhere, a +inf logit, or a row without a finite maximum: PyTorch's answer is NaN, and so is ours.
    // Screening here keeps NaN out of exp, which does not propagate it.
    const bool teacher_bad = LOG_TARGET ? m.mt == INFINITY : !std::isfinite(m.mt);
    if (m.nan || !std::isfinite(m.ms) || teacher_bad) {
        if (GRAD) std::fill(g, g + C, std::numeric_limits<float>::quiet_NaN());
        return std::numeric_limits<float>::quiet_NaN();
    }
    // With LOG_TARGET the teacher is used unshifted, and dt = sum q need not be 1 (autograd's p * sum q - q).
    const float mt = LOG_TARGET ? 0.f : m.mt, bscale = LOG_TARGET ? 1.f : inv_T;
    float ds = 0.f, dt = 0.f;
    int64_t i = 0;
#ifdef __AVX2__
    {
        const __m256 vms = _mm256_set1_ps(m.ms), vmt = _mm256_set1_ps(mt), vinv = _mm256_set1_ps(inv_T),
                     vbs = _mm256_set1_ps(bscale);
        blocked_sum vds, vdt;
        for (; i + 8 <= C; i += 8) {
            const __m256 es = exp_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(s + i), vms), vinv));
            vds.add(es);
            vdt.add(exp_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(t + i), vmt), vbs)));
            if (GRAD) _mm256_storeu_ps(g + i, es);  // stash exp(a) for the gradient
        }
        ds = vds.value(), dt = vdt.value();
    }
#endif
    for (; i < C; ++i) {
        const float es = exp_ss((s[i] - m.ms) * inv_T);
        ds += es;
        dt += exp_ss((t[i] - mt) * bscale);
        if (GRAD) g[i] = es;
    }
    // log p = a - lp_off, log q = b - lq_off; q = exp(b) / dt (or exp(t) as is).
    const float lp_off = std::log(ds), lq_off = LOG_TARGET ? 0.f : std::log(dt), q_norm = LOG_TARGET ? 1.f : 1.f / dt;
    // d/dz_s = (1/T)(p * sum q - q), times the scale, the reduction's norm and the upstream gradient (k).
    const float kp = LOG_TARGET ? k * dt / ds : k / ds, kq = k * q_norm;
    float loss = 0.f;
    i = 0;
#ifdef __AVX2__
    {
        const __m256 vms = _mm256_set1_ps(m.ms), vmt = _mm256_set1_ps(mt), vinv = _mm256_set1_ps(inv_T),
                     vbs = _mm256_set1_ps(bscale), vlp = _mm256_set1_ps(lp_off), vlq = _mm256_set1_ps(lq_off),
                     vqn = _mm256_set1_ps(q_norm), vkp = _mm256_set1_ps(kp), vkq = _mm256_set1_ps(kq),
                     zero = _mm256_setzero_ps();
        blocked_sum vloss;
        for (; i + 8 <= C; i += 8) {
            const __m256 b = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(t + i), vmt), vbs);
            const __m256 e = exp_ps(b);
            const __m256 lp = _mm256_sub_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(s + i), vms), vinv), vlp);
            const __m256 q = _mm256_mul_ps(e, vqn);
            // 0 * log 0 = 0 (xlogy): the mask also clears the NaN of (-inf) - (-inf).
            const __m256 live = _mm256_cmp_ps(q, zero, _CMP_GT_OQ);
            const __m256 term = _mm256_mul_ps(q, _mm256_sub_ps(_mm256_sub_ps(b, vlq), lp));
            vloss.add(_mm256_and_ps(live, term));
            if (GRAD) _mm256_storeu_ps(g + i, _mm256_fmsub_ps(vkp, _mm256_loadu_ps(g + i), _mm256_mul_ps(vkq, e)));
        }
        loss = vloss.value();
    }
#endif
    for (; i < C; ++i) {
        const float b = (t[i] - mt) * bscale, e = exp_ss(b), q = e * q_norm;
        const float lp = (s[i] - m.ms) * inv_T - lp_off;
        loss += q > 0.f ? q * ((b - lq_off) - lp) : 0.f;
        if (GRAD) g[i] = kp * g[i] - kq * e;
    }
    return loss;
}

}  // namespace

D4J_IMPL_API int d4j_impl_kl_div(void *, const float *student, const float *teacher, int64_t B, int64_t C, float T,
                                 int reduction, int log_target, float loss_scale, const float *grad_out,
                                 float *row_loss, float *loss, float *grad) {
    if (student == nullptr || teacher == nullptr || row_loss == nullptr || B <= 0 || C <= 0 || !(T > 0.f))
        return d4j::cpu::fail("kl_div: null buffer or empty shape or T <= 0");
    if (reduction < D4J_REDUCTION_NONE || reduction > D4J_REDUCTION_MEAN) return d4j::cpu::fail("kl_div: reduction");
    if (reduction != D4J_REDUCTION_NONE && loss == nullptr) return d4j::cpu::fail("kl_div: loss is null");
    const float inv_T = 1.0f / T;
    const float norm = static_cast<float>(reduction_norm(reduction, B, C));
    const float upstream = (grad_out != nullptr && reduction != D4J_REDUCTION_NONE) ? grad_out[0] : 1.0f;
#pragma omp parallel for schedule(dynamic, row_chunk(B)) num_threads(threads_for(3 * B * C))
    for (int64_t b = 0; b < B; ++b) {
        const float up = reduction == D4J_REDUCTION_NONE && grad_out != nullptr ? grad_out[b] : upstream;
        const float k = loss_scale * inv_T * norm * up;
        const float *s = student + b * C, *t = teacher + b * C;
        float *g = grad != nullptr ? grad + b * C : nullptr;
        float l;
        if (log_target != 0)
            l = g != nullptr ? kl_row<true, true>(s, t, g, C, inv_T, k) : kl_row<true, false>(s, t, g, C, inv_T, k);
        else
            l = g != nullptr ? kl_row<false, true>(s, t, g, C, inv_T, k) : kl_row<false, false>(s, t, g, C, inv_T, k);
        row_loss[b] = loss_scale * l;
    }
    if (reduction != D4J_REDUCTION_NONE) {
        double sum = 0.0;  // serial, in row order: the same bits on every run and any thread count
        for (int64_t b = 0; b < B; ++b) sum += row_loss[b];
        loss[0] = static_cast<float>(sum * reduction_norm(reduction, B, C));
    }
    return 0;
}
