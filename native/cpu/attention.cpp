// Multi-head self-attention on the CPU, FlashAttention-2's algorithm blocked for the cache. See distill4j_impl.h.
//
// Forward, one task per (b, h), OpenMP over all of them; Kᵀ of the head is gathered once, then per query block:
//   for each key block (<= 256 keys):  S = scale · Q_i K_jᵀ            (one sgemm, [rows, keys], L1/L2-resident)
//                                      m_new = max(m, rowmax S); P = exp(S - m_new); l = l·e^(m - m_new) + rowsum P
//                                      O_i = O_i · e^(m - m_new) + P V_j  (one sgemm, accumulating in `out` itself)
//   then O_i /= l and lse = m + log l.
// Backward, one task per (b, h): D = rowsum(dO ∘ O) for the head, then for each key block j and query block i, with
// the tiles held transposed ([keys, queries]):
//   Pᵀ = exp(scale · K_j Q_iᵀ - lse_i)     dV_j += Pᵀ dO_i      dPᵀ = V_j dO_iᵀ     dSᵀ = Pᵀ ∘ (dPᵀ - D_i)
//   dK_j += scale · dSᵀ Q_i                 dQ_i += scale · dS K_j   (dS: dSᵀ transposed in registers)
// so the N x N matrix never exists, only one [<=128, <=128] tile of P and one of dP per thread.
//
// GEMMs are not hand-written (DESIGN.md): the block products are single-threaded OpenBLAS sgemms, called from
// several OpenMP threads at once on disjoint outputs (the CPU backend runs OpenBLAS with one thread; see
// patch_embed.cpp for why one thread pool). Every product is arranged as a plain NoTrans x NoTrans one: at these
// sizes OpenBLAS runs NN through its unpacked small-matrix kernel but packs both operands of NT and TN products,
// and the packing cost as much as the arithmetic. So Kᵀ (forward), Qᵀ and dOᵀ (backward) of the head are gathered
// into [Dh, N] scratch once per task, and the backward keeps its tiles transposed, which makes dV and dK plain and
// leaves one tile transpose (dS, for dQ). Rows of a head in qkv are Dh contiguous floats at stride 3·H·Dh, which
// is just a leading dimension; outputs (out, dqkv) are likewise written through their leading dimension.
// Measured at B=32, H=3, N=198, Dh=64 on the shared 2-core machine (noisy), fwd / bwd: NT/TN products 13 / 25-30 ms,
// all-NN 10.5 / 21 ms. Tiles: backward 128x128 beat 64x64, 128x256, 256x128 and one 198x198 tile (21 against 22-25
// ms); forward 32, 64 or 256 query rows were within the noise.
//
// Determinism: no atomics, no reduction split across threads. Each forward task owns the out and lse rows of its
// (b, h); each backward task owns its dq, dk, dv rows. Every sum runs in a fixed order whatever the thread count,
// and a single-threaded sgemm gives the same bits for the same inputs: the results are the same bits run to run.
// (With B·H below the thread count some threads stay idle; the ViT shapes have B·H >= 24.)
//
// Non-finite inputs follow PyTorch: a NaN score, or a row whose maximum is ±inf, makes that row's output, lse and
// gradients NaN. exp_ps does not propagate NaN (it returns 0), so P is blended with NaN where exp's argument is NaN
// (which also covers inf - inf and -inf - -inf); the sgemms then carry the NaN on.
//
// Scratch (the S/P tiles, the row statistics, D, the transposed heads) is per OpenMP thread and thread_local: its
// size depends on the tile sizes, Dh and N only, libgomp keeps its pool threads, so repeated calls allocate nothing.
// The workspace is therefore 0 bytes, which also spares the size query from guessing the thread count of later calls.
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

// Query rows per forward block: 64 rows x 256 keys of S is 64 KB (L2). Keys per forward block: 256 covers the ViT
// sequence lengths in one block (one online-softmax step, no rescale of O). Backward tiles: 128 x 128 keeps P and dP
// (128 KB) with the head's Q, K, V, dO and their transposes (8 x 50 KB at N = 198) in L2.
constexpr int64_t kFwdRows = 64, kFwdKeys = 256, kBwdRows = 128, kBwdKeys = 128;

// Splits n into ceil(n / max_block) blocks of near-equal size (198 -> 99 + 99 rather than 128 + 70): the sgemm
// micro-tiles waste less on a short last block.
struct blocks {
    int64_t n, count;
    blocks(int64_t n_, int64_t max_block) : n(n_), count((n_ + max_block - 1) / max_block) {}
    int64_t begin(int64_t i) const { return n * i / count; }
    int64_t end(int64_t i) const { return n * (i + 1) / count; }
};

// Validates the sizes; returns an error message, or nullptr when the shape is usable.
const char *check_shape(int64_t B, int64_t N, int64_t H, int64_t Dh) {
    if (B <= 0 || N <= 0 || H <= 0 || Dh <= 0) return "attention: every size (B, N, H, Dh) must be positive";
    // Any Dh works with sgemm; the bound only keeps the leading dimension 3·H·Dh and every row count within the
    // int arguments of a BLAS call. The Java op admits Dh 32 and 64, the sizes every backend supports.
    constexpr int64_t kIntMax = std::numeric_limits<int>::max();
    if (Dh > 4096) return "attention: head dim above 4096";
    if (H > kIntMax / (3 * Dh)) return "attention: 3*H*Dh exceeds 2^31";
    if (N > kIntMax) return "attention: N exceeds 2^31";
    if (B > (int64_t{1} << 58) / N / (3 * H * Dh)) return "attention: qkv exceeds 2^58 elements";
    return nullptr;
}

// p[c] = exp(s[c] - shift) for c < n, NaN where the argument is NaN; returns Σ p (in the order of the lanes, then
// the tail: fixed, so deterministic).
float exp_row(const float *s, float shift, float *p, int64_t n) {
    int64_t c = 0;
    float sum = 0.f;
#ifdef __AVX2__
    const __m256 sh = _mm256_set1_ps(shift), nan = _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN());
    __m256 acc = _mm256_setzero_ps();
    for (; c + 8 <= n; c += 8) {
        const __m256 x = _mm256_sub_ps(_mm256_loadu_ps(s + c), sh);
        const __m256 e = _mm256_blendv_ps(exp_ps(x), nan, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
        _mm256_storeu_ps(p + c, e);
        acc = _mm256_add_ps(acc, e);
    }
    sum = hsum(acc);
#endif
    for (; c < n; ++c) {
        const float x = s[c] - shift;
        p[c] = std::isnan(x) ? x : exp_ss(x);
        sum += p[c];
    }
    return sum;
}

// Row maximum; NaN entries are skipped here (exp_row turns them into NaN outputs).
float max_row(const float *s, int64_t n) {
    int64_t c = 0;
    float m = -INFINITY;
#ifdef __AVX2__
    __m256 acc = _mm256_set1_ps(-INFINITY);
    for (; c + 8 <= n; c += 8) acc = _mm256_max_ps(_mm256_loadu_ps(s + c), acc);  // NaN in s: acc kept
    m = hmax(acc);
#endif
    for (; c < n; ++c) m = s[c] > m ? s[c] : m;
    return m;
}

// p[r] = exp(s[r] - shift[r]) for r < n, NaN where the argument is NaN (a per-column shift: the backward's
// transposed tiles subtract each query's lse along a row).
void exp_sub_row(const float *s, const float *shift, float *p, int64_t n) {
    int64_t r = 0;
#ifdef __AVX2__
    const __m256 nan = _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN());
    for (; r + 8 <= n; r += 8) {
        const __m256 x = _mm256_sub_ps(_mm256_loadu_ps(s + r), _mm256_loadu_ps(shift + r));
        _mm256_storeu_ps(p + r, _mm256_blendv_ps(exp_ps(x), nan, _mm256_cmp_ps(x, x, _CMP_UNORD_Q)));
    }
#endif
    for (; r < n; ++r) {
        const float x = s[r] - shift[r];
        p[r] = std::isnan(x) ? x : exp_ss(x);
    }
}

// dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols. The products want every operand with its inner
// index contiguous (OpenBLAS's unpacked small-matrix kernels serve NN but not NT or TN shapes, which pay for packing
// at these sizes), so K, Q, O, dO of a head and the dS tile are transposed here, 8 x 8 in registers.
void transpose(const float *src, int64_t lds, int64_t rows, int64_t cols, float *dst, int64_t ldd) {
    int64_t r0 = 0;
#ifdef __AVX2__
    for (; r0 + 8 <= rows; r0 += 8) {
        int64_t c0 = 0;
        for (; c0 + 8 <= cols; c0 += 8) {
            const float *s = src + r0 * lds + c0;
            __m256 x[8], y[8];
            for (int i = 0; i < 8; ++i) x[i] = _mm256_loadu_ps(s + i * lds);
            for (int i = 0; i < 8; i += 2) {
                y[i] = _mm256_unpacklo_ps(x[i], x[i + 1]);
                y[i + 1] = _mm256_unpackhi_ps(x[i], x[i + 1]);
            }
            for (int i = 0; i < 8; i += 4)
                for (int h = 0; h < 2; ++h) {
                    x[i + h] = _mm256_shuffle_ps(y[i + h], y[i + h + 2], _MM_SHUFFLE(1, 0, 1, 0));
                    x[i + h + 2] = _mm256_shuffle_ps(y[i + h], y[i + h + 2], _MM_SHUFFLE(3, 2, 3, 2));
                }
            // x[0], x[2], x[1], x[3] hold columns 0|4, 1|5, 2|6, 3|7 of rows 0-3 (low|high 128 bits), x[4..7]
            // the same of rows 4-7: join the halves.
            float *d = dst + c0 * ldd + r0;
            const __m256 c0v = _mm256_permute2f128_ps(x[0], x[4], 0x20), c4v = _mm256_permute2f128_ps(x[0], x[4], 0x31);
            const __m256 c1v = _mm256_permute2f128_ps(x[2], x[6], 0x20), c5v = _mm256_permute2f128_ps(x[2], x[6], 0x31);
            const __m256 c2v = _mm256_permute2f128_ps(x[1], x[5], 0x20), c6v = _mm256_permute2f128_ps(x[1], x[5], 0x31);
            const __m256 c3v = _mm256_permute2f128_ps(x[3], x[7], 0x20), c7v = _mm256_permute2f128_ps(x[3], x[7], 0x31);
            _mm256_storeu_ps(d + 0 * ldd, c0v);
            _mm256_storeu_ps(d + 1 * ldd, c1v);
            _mm256_storeu_ps(d + 2 * ldd, c2v);
            _mm256_storeu_ps(d + 3 * ldd, c3v);
            _mm256_storeu_ps(d + 4 * ldd, c4v);
            _mm256_storeu_ps(d + 5 * ldd, c5v);
            _mm256_storeu_ps(d + 6 * ldd, c6v);
            _mm256_storeu_ps(d + 7 * ldd, c7v);
        }
        for (; c0 < cols; ++c0)
            for (int64_t r = r0; r < r0 + 8; ++r) dst[c0 * ldd + r] = src[r * lds + c0];
    }
#endif
    for (; r0 < rows; ++r0)
        for (int64_t c = 0; c < cols; ++c) dst[c * ldd + r0] = src[r0 * lds + c];
}

template <typename T>
T *scratch(std::vector<T> &v, size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
}

thread_local std::vector<float> tl_tile, tl_tile2, tl_rows, tl_kt, tl_qt, tl_dot;

}  // namespace

D4J_IMPL_API int64_t d4j_impl_attention_workspace(int64_t B, int64_t N, int64_t H, int64_t Dh) {
    if (const char *why = check_shape(B, N, H, Dh)) return -fail(why);
    return 0;  // per-thread scratch only (see the top of this file)
}

D4J_IMPL_API int d4j_impl_attention_forward(void *, const float *qkv, int64_t B, int64_t N, int64_t H, int64_t Dh,
                                            float scale, float *out, float *lse, void *) {
    if (const char *why = check_shape(B, N, H, Dh)) return fail(why);
    if (qkv == nullptr || out == nullptr || lse == nullptr)
        return fail("attention forward: qkv, out and lse must not be null");
    if (!std::isfinite(scale)) return fail("attention forward: scale must be finite");
    const sgemm_fn gemm = sgemm();
    if (gemm == nullptr) return 1;

    const int64_t ld = 3 * H * Dh, ldo = H * Dh;
    const blocks qb(N, kFwdRows), kb(N, kFwdKeys);
#pragma omp parallel for schedule(dynamic, 1) num_threads(gemm_threads(B * H, 2.0 * B * H * N * N * Dh))
    for (int64_t t = 0; t < B * H; ++t) {
        const int64_t b = t / H, h = t % H;
        const float *k = qkv + b * N * ld + H * Dh + h * Dh;  // k: part 1 of [3, H, Dh]
        const float *v = k + H * Dh;
        float *Kt = scratch(tl_kt, static_cast<size_t>(Dh * N));  // Kᵀ [Dh, N]: S = Q Kᵀ as a plain product
        transpose(k, ld, N, Dh, Kt, N);
        float *S = scratch(tl_tile, static_cast<size_t>(kFwdRows * kFwdKeys));
        float *m = scratch(tl_rows, static_cast<size_t>(2 * kFwdRows)), *l = m + kFwdRows;
        for (int64_t i = 0; i < qb.count; ++i) {
            const int64_t r0 = qb.begin(i), nr = qb.end(i) - r0;
            const float *q = qkv + (b * N + r0) * ld + h * Dh;
            float *o = out + (b * N + r0) * ldo + h * Dh;
            std::fill(m, m + nr, -INFINITY);
            std::fill(l, l + nr, 0.f);
            for (int64_t j = 0; j < kb.count; ++j) {
                const int64_t c0 = kb.begin(j), nc = kb.end(j) - c0;
                sgemm_rm(gemm, kNoTrans, kNoTrans, nr, nc, Dh, scale, q, ld, Kt + c0, N, 0.f, S, nc);
                for (int64_t r = 0; r < nr; ++r) {
                    float *s = S + r * nc;
                    const float m_new = std::max(m[r], max_row(s, nc));
                    l[r] = exp_row(s, m_new, s, nc) + (j == 0 ? 0.f : l[r] * exp_ss(m[r] - m_new));
                    if (j > 0) {  // rescale the running O row to the new maximum (m_new >= m: factor <= 1)
                        const float alpha = exp_ss(m[r] - m_new);
                        float *orow = o + r * ldo;
#pragma omp simd
                        for (int64_t d = 0; d < Dh; ++d) orow[d] *= alpha;
                    }
                    m[r] = m_new;
                }
                // O (+)= P V_j straight into out: beta = 0 on the first block overwrites whatever out held.
                sgemm_rm(gemm, kNoTrans, kNoTrans, nr, Dh, nc, 1.f, S, nc, v + c0 * ld, ld, j == 0 ? 0.f : 1.f, o,
                           ldo);
            }
            for (int64_t r = 0; r < nr; ++r) {
                const float inv = 1.f / l[r];
                float *orow = o + r * ldo;
#pragma omp simd
                for (int64_t d = 0; d < Dh; ++d) orow[d] *= inv;
                // m = -inf (a row of -inf scores) gives NaN here, as PyTorch's softmax does; l is NaN for NaN rows.
                lse[t * N + r0 + r] = m[r] + std::log(l[r]);
            }
        }
    }
    return 0;
}

D4J_IMPL_API int d4j_impl_attention_backward(void *, const float *qkv, const float *out, const float *lse,
                                             const float *dout, int64_t B, int64_t N, int64_t H, int64_t Dh,
                                             float scale, float *dqkv, void *) {
    if (const char *why = check_shape(B, N, H, Dh)) return fail(why);
    if (qkv == nullptr || out == nullptr || lse == nullptr || dout == nullptr || dqkv == nullptr)
        return fail("attention backward: qkv, out, lse, dout and dqkv must not be null");
    if (!std::isfinite(scale)) return fail("attention backward: scale must be finite");
    const sgemm_fn gemm = sgemm();
    if (gemm == nullptr) return 1;

    const int64_t ld = 3 * H * Dh, ldo = H * Dh;
    const blocks qb(N, kBwdRows), kb(N, kBwdKeys);
#pragma omp parallel for schedule(dynamic, 1) num_threads(gemm_threads(B * H, 4.0 * B * H * N * N * Dh))
    for (int64_t t = 0; t < B * H; ++t) {
        const int64_t b = t / H, h = t % H;
        const float *q = qkv + b * N * ld + h * Dh, *k = q + H * Dh, *v = q + 2 * H * Dh;
        float *dq = dqkv + b * N * ld + h * Dh, *dk = dq + H * Dh, *dv = dq + 2 * H * Dh;
        const float *o = out + b * N * ldo + h * Dh, *dO = dout + b * N * ldo + h * Dh;
        const float *L = lse + t * N;
        float *Pt = scratch(tl_tile, static_cast<size_t>(kBwdRows * kBwdKeys));
        float *dPt = scratch(tl_tile2, static_cast<size_t>(kBwdRows * kBwdKeys));
        float *D = scratch(tl_rows, static_cast<size_t>(N));
        // Qᵀ and dOᵀ [Dh, N] of the head: with the tiles held as [keys, queries], all five products are plain.
        float *Qt = scratch(tl_qt, static_cast<size_t>(Dh * N)), *dOt = scratch(tl_dot, static_cast<size_t>(Dh * N));
        transpose(dO, ldo, N, Dh, dOt, N);
        // D = rowsum(dO ∘ O), accumulated over d one fused multiply-add at a time from 0, as OpenBLAS's small NN
        // kernel forms each dPᵀ = V dOᵀ element (one accumulator along k): where O is a row of V (one-hot P, e.g.
        // N = 1), dP - D is then 0 rather than rounding noise that scale · K amplifies into dQ (an 8-lane D failed
        // the emulator-vs-CPU test at N = 1, |scores| ~ 80). Oᵀ borrows Qt's buffer.
        transpose(o, ldo, N, Dh, Qt, N);
        std::fill(D, D + N, 0.f);
        for (int64_t d = 0; d < Dh; ++d) {
            const float *a = dOt + d * N, *c = Qt + d * N;
#pragma omp simd
            for (int64_t n = 0; n < N; ++n) D[n] = std::fma(a[n], c[n], D[n]);
        }
        transpose(q, ld, N, Dh, Qt, N);
        for (int64_t j = 0; j < kb.count; ++j) {
            const int64_t c0 = kb.begin(j), nc = kb.end(j) - c0;
            for (int64_t i = 0; i < qb.count; ++i) {
                const int64_t r0 = qb.begin(i), nr = qb.end(i) - r0;
                const float beta_i = i == 0 ? 0.f : 1.f, beta_j = j == 0 ? 0.f : 1.f;
                // The tiles are held transposed, [keys, queries], so that dV and dK take plain products.
                sgemm_rm(gemm, kNoTrans, kNoTrans, nc, nr, Dh, scale, k + c0 * ld, ld, Qt + r0, N, 0.f, Pt, nr);
                for (int64_t c = 0; c < nc; ++c) exp_sub_row(Pt + c * nr, L + r0, Pt + c * nr, nr);
                // dV_j (+)= Pᵀ dO_i; dPᵀ = V_j dO_iᵀ
                sgemm_rm(gemm, kNoTrans, kNoTrans, nc, Dh, nr, 1.f, Pt, nr, dO + r0 * ldo, ldo, beta_i, dv + c0 * ld,
                           ld);
                sgemm_rm(gemm, kNoTrans, kNoTrans, nc, nr, Dh, 1.f, v + c0 * ld, ld, dOt + r0, N, 0.f, dPt, nr);
                const float *Di = D + r0;
                for (int64_t c = 0; c < nc; ++c) {
                    const float *p = Pt + c * nr;
                    float *ds = dPt + c * nr;
#pragma omp simd
                    for (int64_t r = 0; r < nr; ++r) ds[r] = p[r] * (ds[r] - Di[r]);
                }
                // dK_j (+)= scale dSᵀ Q_i; then dS itself (into the P tile, done with) for dQ_i (+)= scale dS K_j
                sgemm_rm(gemm, kNoTrans, kNoTrans, nc, Dh, nr, scale, dPt, nr, q + r0 * ld, ld, beta_i, dk + c0 * ld,
                           ld);
                transpose(dPt, nr, nc, nr, Pt, nc);
                sgemm_rm(gemm, kNoTrans, kNoTrans, nr, Dh, nc, scale, Pt, nc, k + c0 * ld, ld, beta_j, dq + r0 * ld,
                           ld);
            }
        }
    }
    return 0;
}
