// Fused softmax + cross-entropy on the CPU (llm.c's fused classifier): row loss and d loss / d logits in one call.
// OpenMP over rows; inside a row, two AVX2 sweeps: (1) maximum, NaN screen and the sum of the shifted logits (for
// label smoothing), (2) exp-sums with exp stashed in the gradient row, then one pass over the (L1/L2-hot) gradient
// row to normalise it. The loss is assembled from log-softmax in two parts, (x - max) - log(sum), as PyTorch's
// log_softmax does, so logits of +-1e4 lose nothing to cancellation. The probability-target form (Mixup, CutMix) is
// a scalar three-sweep row beside it.
#include "distill4j_impl.h"
#include "common.h"
#include "vec_math.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>

namespace {

using namespace d4j::cpu;

struct row_scan {
    float max;
    bool nan;
};

row_scan scan(const float *x, int64_t C) {
    row_scan s{-INFINITY, false};
    int64_t i = 0;
#ifdef __AVX2__
    __m256 m4[4], nan = _mm256_setzero_ps();
    for (int j = 0; j < 4; ++j) m4[j] = _mm256_set1_ps(-INFINITY);
    for (; i + 32 <= C; i += 32) {
        for (int j = 0; j < 4; ++j) {
            const __m256 v = _mm256_loadu_ps(x + i + 8 * j);
            m4[j] = _mm256_max_ps(m4[j], v);
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        }
    }
    s.max = hmax(_mm256_max_ps(_mm256_max_ps(m4[0], m4[1]), _mm256_max_ps(m4[2], m4[3])));
    s.nan = _mm256_movemask_ps(nan) != 0;
#endif
    for (; i < C; ++i) {
        s.max = std::fmax(s.max, x[i]);
        s.nan |= std::isnan(x[i]);
    }
    return s;
}

// One row; returns the unscaled loss, writes k * (softmax - target) into g when GRAD.
template <bool GRAD>
float ce_row(const float *x, int64_t y, float *g, int64_t C, float eps, float k) {
    const row_scan s = scan(x, C);
    // NaN anywhere, a +inf logit or an all -inf row: log_softmax is NaN in PyTorch, and so is ours. Screening keeps
    // NaN away from exp_ps, which does not propagate it.
    if (s.nan || !std::isfinite(s.max)) {
        if (GRAD) std::fill(g, g + C, std::numeric_limits<float>::quiet_NaN());
        return std::numeric_limits<float>::quiet_NaN();
    }
    float sum = 0.f, shifted = 0.f;  // sum exp(x - max), sum (x - max)
    int64_t i = 0;
#ifdef __AVX2__
    {
        const __m256 vm = _mm256_set1_ps(s.max);
        blocked_sum vs, vx;
        for (; i + 8 <= C; i += 8) {
            const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), vm);
            const __m256 e = exp_ps(d);
            vs.add(e);
            vx.add(d);
            if (GRAD) _mm256_storeu_ps(g + i, e);
        }
        sum = vs.value(), shifted = vx.value();
    }
#endif
    for (; i < C; ++i) {
        const float d = x[i] - s.max, e = exp_ss(d);
        sum += e;
        shifted += d;
        if (GRAD) g[i] = e;
    }
    const float log_sum = std::log(sum);
    // -log p_c = log_sum - (x_c - max); loss = (1 - eps)(-log p_y) + eps/C sum_c (-log p_c).
    // eps == 0 skips the smoothing term: with a -inf logit it would be 0 * inf = NaN, where PyTorch skips it too.
    float loss = (1.f - eps) * (log_sum - (x[y] - s.max));
    if (eps != 0.f) loss += eps * (log_sum - shifted / static_cast<float>(C));
    if (GRAD) {
        const float kp = k / sum, off = k * eps / static_cast<float>(C);
        i = 0;
#ifdef __AVX2__
        const __m256 vkp = _mm256_set1_ps(kp), voff = _mm256_set1_ps(off);
        for (; i + 8 <= C; i += 8)
            _mm256_storeu_ps(g + i, _mm256_fmsub_ps(vkp, _mm256_loadu_ps(g + i), voff));
#endif
        for (; i < C; ++i) g[i] = kp * g[i] - off;
        g[y] -= k * (1.f - eps);
    }
    return loss;
}

// One row with a probability target t: the unscaled loss sum_c t'_c (log_sum - (x_c - max)), t' = (1 - eps) t +
// eps/C, and k * (softmax * sum t' - t') into g when GRAD. Three sweeps: the gradient needs both the exp-sum and sum t'
// before it is written. Scalar with double sums: the op is off the hot path (a few hundred KB a step), and a target
// row need not sum to 1, so nothing may assume it does.
template <bool GRAD>
float ce_soft_row(const float *x, const float *t, float *g, int64_t C, float eps, float k) {
    const row_scan s = scan(x, C);
    if (s.nan || !std::isfinite(s.max)) {
        if (GRAD) std::fill(g, g + C, std::numeric_limits<float>::quiet_NaN());
        return std::numeric_limits<float>::quiet_NaN();
    }
    const float off = eps / static_cast<float>(C), hit = 1.f - eps;
    double sum = 0.0, total = 0.0;  // sum exp(x - max), sum t'
    for (int64_t i = 0; i < C; ++i) {
        const float e = exp_ss(x[i] - s.max);
        sum += e;
        total += hit * t[i] + off;
        if (GRAD) g[i] = e;
    }
    const double log_sum = std::log(sum), kp = k * total / sum;
    double loss = 0.0;
    // t'_c times -log p_c, term by term as PyTorch: a zero target at a -inf logit is 0 * inf = NaN there too.
    for (int64_t i = 0; i < C; ++i) {
        const float tp = hit * t[i] + off;
        loss += tp * (log_sum - (static_cast<double>(x[i]) - s.max));
        if (GRAD) g[i] = static_cast<float>(kp * g[i] - static_cast<double>(k) * tp);
    }
    return static_cast<float>(loss);
}

// loss[0] = mean of the row losses; serial, in row order: the same bits on every run and any thread count.
void mean_rows(const float *row_loss, int64_t B, float *loss) {
    if (loss == nullptr) return;
    double sum = 0.0;
    for (int64_t b = 0; b < B; ++b) sum += row_loss[b];
    loss[0] = static_cast<float>(sum / static_cast<double>(B));
}

}  // namespace

D4J_IMPL_API int d4j_impl_cross_entropy(void *, const float *logits, const int32_t *labels, int64_t B, int64_t C,
                                        float label_smoothing, float loss_scale, float *row_loss, float *loss,
                                        float *grad) {
    if (logits == nullptr || labels == nullptr || row_loss == nullptr || B <= 0 || C <= 0)
        return fail("cross_entropy: null buffer or empty shape");
    if (!(label_smoothing >= 0.f && label_smoothing <= 1.f)) return fail("cross_entropy: label_smoothing not in [0, 1]");
    // Host memory: a bad label is an error before anything is written (the CUDA kernel can only write NaN rows).
    for (int64_t b = 0; b < B; ++b) {
        if (labels[b] < 0 || labels[b] >= C) {
            char message[128];
            std::snprintf(message, sizeof message,
                          "cross_entropy: label %d at row %lld is not a class index in [0, %lld)",
                          static_cast<int>(labels[b]), static_cast<long long>(b), static_cast<long long>(C));
            return fail(message);
        }
    }
    const float k = loss_scale / static_cast<float>(B);
#pragma omp parallel for schedule(dynamic, row_chunk(B)) num_threads(threads_for(2 * B * C))
    for (int64_t b = 0; b < B; ++b) {
        const float *x = logits + b * C;
        const int64_t y = labels[b];
        const float l = grad != nullptr ? ce_row<true>(x, y, grad + b * C, C, label_smoothing, k)
                                        : ce_row<false>(x, y, nullptr, C, label_smoothing, k);
        row_loss[b] = loss_scale * l;
    }
    mean_rows(row_loss, B, loss);
    return 0;
}

D4J_IMPL_API int d4j_impl_cross_entropy_soft(void *, const float *logits, const float *targets, int64_t B, int64_t C,
                                             float label_smoothing, float loss_scale, float *row_loss, float *loss,
                                             float *grad) {
    if (logits == nullptr || targets == nullptr || row_loss == nullptr || B <= 0 || C <= 0)
        return fail("cross_entropy_soft: null buffer or empty shape");
    if (!(label_smoothing >= 0.f && label_smoothing <= 1.f))
        return fail("cross_entropy_soft: label_smoothing not in [0, 1]");
    const float k = loss_scale / static_cast<float>(B);
#pragma omp parallel for schedule(dynamic, row_chunk(B)) num_threads(threads_for(3 * B * C))
    for (int64_t b = 0; b < B; ++b) {
        const float *x = logits + b * C, *t = targets + b * C;
        const float l = grad != nullptr ? ce_soft_row<true>(x, t, grad + b * C, C, label_smoothing, k)
                                        : ce_soft_row<false>(x, t, nullptr, C, label_smoothing, k);
        row_loss[b] = loss_scale * l;
    }
    mean_rows(row_loss, B, loss);
    return 0;
}

D4J_IMPL_API int d4j_impl_argmax(void *, const float *x, int64_t B, int64_t C, int32_t *index) {
    if (x == nullptr || index == nullptr || B <= 0 || C <= 0) return fail("argmax: null buffer or empty shape");
    if (C > INT32_MAX) return fail("argmax: more than 2^31 - 1 classes (the index is int32)");
#pragma omp parallel for schedule(dynamic, row_chunk(B)) num_threads(threads_for(B * C))
    for (int64_t b = 0; b < B; ++b) {
        const float *r = x + b * C;
        int64_t best = 0;
        float m = r[0];
        // Strictly greater keeps the first of equal maxima; a NaN wins and stays (torch.argmax: NaN is the maximum).
        if (!std::isnan(m)) {
            for (int64_t i = 1; i < C; ++i) {
                if (std::isnan(r[i])) {
                    best = i;
                    break;
                }
                if (r[i] > m) m = r[i], best = i;
            }
        }
        index[b] = static_cast<int32_t>(best);
    }
    return 0;
}
