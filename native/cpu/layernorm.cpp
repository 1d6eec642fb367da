// LayerNorm over the last dimension on the CPU (timm's nn.LayerNorm, eps 1e-6): OpenMP over rows, AVX2 inside a
// row. A ViT row (C = 96..384) is 0.4-1.5 KB, in L1 for the second and third sweep.
// Forward: two passes (mean, then the mean of (x - mean)^2): no E[x^2] - E[x]^2 cancellation.
// Backward: xhat = (x - mean) rstd, g = dy w; dx += rstd (g - mean(g) - xhat mean(g xhat)).
// dweight = sum_rows dy xhat and dbias = sum_rows dy are summed per chunk of rows into the workspace, with a
// fixed chunk count (not the thread count), then over the chunks in chunk order: the same bits on any machine.
#include "distill4j_impl.h"
#include "common.h"
#include "vec_math.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>

namespace {

using namespace d4j::cpu;

constexpr int64_t kChunks = 64;

int64_t chunks(int64_t M) { return std::min(M, kChunks); }

float row_sum(const float *x, int64_t C) {
    int64_t i = 0;
    float s = 0.0f;
#ifdef __AVX2__
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
    for (; i + 16 <= C; i += 16) {
        a = _mm256_add_ps(a, _mm256_loadu_ps(x + i));
        b = _mm256_add_ps(b, _mm256_loadu_ps(x + i + 8));
    }
    if (i + 8 <= C) a = _mm256_add_ps(a, _mm256_loadu_ps(x + i)), i += 8;
    s = hsum(_mm256_add_ps(a, b));
#endif
    for (; i < C; ++i) s += x[i];
    return s;
}

float row_centered_sq(const float *x, int64_t C, float mean) {
    int64_t i = 0;
    float s = 0.0f;
#ifdef __AVX2__
    const __m256 m = _mm256_set1_ps(mean);
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
    for (; i + 16 <= C; i += 16) {
        const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), m), d1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), m);
        a = _mm256_fmadd_ps(d0, d0, a);
        b = _mm256_fmadd_ps(d1, d1, b);
    }
    if (i + 8 <= C) {
        const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), m);
        a = _mm256_fmadd_ps(d, d, a), i += 8;
    }
    s = hsum(_mm256_add_ps(a, b));
#endif
    for (; i < C; ++i) s = std::fma(x[i] - mean, x[i] - mean, s);
    return s;
}

#ifdef __AVX2__
inline void store8(float *y, __m256 v) { _mm256_storeu_ps(y, v); }
inline void store8(uint16_t *y, __m256 v) {
    alignas(32) float t[8];
    _mm256_store_ps(t, v);
    for (int k = 0; k < 8; ++k) store_as(y, k, t[k]);
}
#endif

// T: float, or uint16_t for bf16 bits (each the fp32 value rounded once, store_as).
template <typename T>
void forward_row(const float *x, const float *w, const float *b, int64_t C, float eps, T *y, float *mean_out,
                 float *rstd_out) {
    const float inv_c = 1.0f / static_cast<float>(C);
    const float mean = row_sum(x, C) * inv_c;
    const float rstd = 1.0f / std::sqrt(row_centered_sq(x, C, mean) * inv_c + eps);
    int64_t i = 0;
#ifdef __AVX2__
    const __m256 m = _mm256_set1_ps(mean), r = _mm256_set1_ps(rstd);
    for (; i + 8 <= C; i += 8) {
        const __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), m), r);
        store8(y + i, _mm256_fmadd_ps(xhat, _mm256_loadu_ps(w + i), _mm256_loadu_ps(b + i)));
    }
#endif
    for (; i < C; ++i) store_as(y, i, std::fma((x[i] - mean) * rstd, w[i], b[i]));
    *mean_out = mean;
    *rstd_out = rstd;
}

// dx += ..., and dy xhat, dy added into pw, pb (this chunk's partial dweight, dbias).
void backward_row(const float *x, const float *w, float mean, float rstd, const float *dy, int64_t C, float *dx,
                  float *pw, float *pb) {
    float sg = 0.0f, sgx = 0.0f;  // sum g, sum g xhat
    int64_t i = 0;
#ifdef __AVX2__
    const __m256 m = _mm256_set1_ps(mean), r = _mm256_set1_ps(rstd);
    {
        __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
        for (; i + 8 <= C; i += 8) {
            const __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), m), r);
            const __m256 d = _mm256_loadu_ps(dy + i), g = _mm256_mul_ps(d, _mm256_loadu_ps(w + i));
            a = _mm256_add_ps(a, g);
            b = _mm256_fmadd_ps(g, xhat, b);
            _mm256_storeu_ps(pw + i, _mm256_fmadd_ps(d, xhat, _mm256_loadu_ps(pw + i)));
            _mm256_storeu_ps(pb + i, _mm256_add_ps(d, _mm256_loadu_ps(pb + i)));
        }
        sg = hsum(a), sgx = hsum(b);
    }
#endif
    for (; i < C; ++i) {
        const float xhat = (x[i] - mean) * rstd, g = dy[i] * w[i];
        sg += g;
        sgx = std::fma(g, xhat, sgx);
        pw[i] = std::fma(dy[i], xhat, pw[i]);
        pb[i] += dy[i];
    }
    const float inv_c = 1.0f / static_cast<float>(C), mg = sg * inv_c, mgx = sgx * inv_c;
    i = 0;
#ifdef __AVX2__
    const __m256 vmg = _mm256_set1_ps(mg), vmgx = _mm256_set1_ps(mgx);
    for (; i + 8 <= C; i += 8) {
        const __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), m), r);
        const __m256 g = _mm256_mul_ps(_mm256_loadu_ps(dy + i), _mm256_loadu_ps(w + i));
        const __m256 v = _mm256_sub_ps(_mm256_sub_ps(g, vmg), _mm256_mul_ps(xhat, vmgx));
        _mm256_storeu_ps(dx + i, _mm256_fmadd_ps(r, v, _mm256_loadu_ps(dx + i)));
    }
#endif
    for (; i < C; ++i) {
        const float xhat = (x[i] - mean) * rstd, g = dy[i] * w[i];
        dx[i] = std::fma(rstd, (g - mg) - xhat * mgx, dx[i]);
    }
}

}  // namespace

// Per chunk: partial dweight [C] and dbias [C].
D4J_IMPL_API int64_t d4j_impl_layernorm_workspace(int64_t M, int64_t C) {
    if (M <= 0 || C <= 0) return d4j::cpu::fail("layernorm_workspace: empty shape"), -1;
    return chunks(M) * 2 * C * static_cast<int64_t>(sizeof(float));
}

namespace {

template <typename T>
int forward(const char *name, const float *x, const float *weight, const float *bias, int64_t M, int64_t C, float eps,
            T *y, float *mean, float *rstd) {
    char msg[96];
    if (x == nullptr || weight == nullptr || bias == nullptr || y == nullptr || mean == nullptr || rstd == nullptr)
        return std::snprintf(msg, sizeof msg, "%s: null buffer", name), d4j::cpu::fail(msg);
    if (M <= 0 || C <= 0 || !(eps >= 0.0f))
        return std::snprintf(msg, sizeof msg, "%s: empty shape or eps < 0", name), d4j::cpu::fail(msg);
#pragma omp parallel for schedule(dynamic, row_chunk(M)) num_threads(threads_for(2 * M * C))
    for (int64_t m = 0; m < M; ++m) forward_row(x + m * C, weight, bias, C, eps, y + m * C, mean + m, rstd + m);
    return 0;
}

}  // namespace

D4J_IMPL_API int d4j_impl_layernorm_forward(void *, const float *x, const float *weight, const float *bias, int64_t M,
                                            int64_t C, float eps, float *y, float *mean, float *rstd) {
    return forward("layernorm_forward", x, weight, bias, M, C, eps, y, mean, rstd);
}

D4J_IMPL_API int d4j_impl_layernorm_forward_bf16(void *, const float *x, const float *weight, const float *bias,
                                                 int64_t M, int64_t C, float eps, uint16_t *y, float *mean,
                                                 float *rstd) {
    return forward("layernorm_forward_bf16", x, weight, bias, M, C, eps, y, mean, rstd);
}

D4J_IMPL_API int d4j_impl_layernorm_backward(void *, const float *x, const float *weight, const float *mean,
                                             const float *rstd, const float *dy, int64_t M, int64_t C, float *dx,
                                             float *dweight, float *dbias, void *workspace) {
    if (x == nullptr || weight == nullptr || mean == nullptr || rstd == nullptr || dy == nullptr || dx == nullptr ||
        dweight == nullptr || dbias == nullptr || workspace == nullptr)
        return d4j::cpu::fail("layernorm_backward: null buffer");
    if (M <= 0 || C <= 0) return d4j::cpu::fail("layernorm_backward: empty shape");
    const int64_t K = chunks(M);
    float *partial = static_cast<float *>(workspace);  // [K][2][C]
#pragma omp parallel num_threads(threads_for(3 * M * C))
    {
#pragma omp for schedule(dynamic, 1)
        for (int64_t k = 0; k < K; ++k) {
            float *pw = partial + k * 2 * C, *pb = pw + C;
            std::fill(pw, pw + 2 * C, 0.0f);
            for (int64_t m = k * M / K; m < (k + 1) * M / K; ++m)
                backward_row(x + m * C, weight, mean[m], rstd[m], dy + m * C, C, dx + m * C, pw, pb);
        }
        // Implicit barrier: every chunk's partial is complete. Then per column, the chunks in order.
#pragma omp for schedule(dynamic, row_chunk(C))
        for (int64_t c = 0; c < C; ++c) {
            float sw = 0.0f, sb = 0.0f;
            for (int64_t k = 0; k < K; ++k) sw += partial[k * 2 * C + c], sb += partial[k * 2 * C + C + c];
            dweight[c] += sw;
            dbias[c] += sb;
        }
    }
    return 0;
}
