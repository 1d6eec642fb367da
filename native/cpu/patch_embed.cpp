// Patch embedding on the CPU: patchify (im2col for kernel = stride = P) + one OpenBLAS sgemm + the bias, position
// and prefix-token writes, and the backward as two sgemms around the same patchify. See distill4j_impl.h.
//
// Layout trick. The patch matrix in the workspace has one row per TOKEN, not per patch: [B, prefix + N, K], the
// prefix rows zero. Its rows then line up one to one with the rows of tokens/dtokens [B, prefix + N, D], so
//   forward   tokens  (+)= patches · weightᵀ      one sgemm over all B·(prefix+N) rows, C = the token buffer itself
//   backward  dweight += dtokensᵀ · patches        one sgemm whose reduction runs over every row of dtokens
// and neither needs a per-image loop nor a copy of the patch rows out of dtokens (the zero rows add exactly 0).
// The price is prefix/(prefix + N) extra GEMM rows: 1% at N = 196.
//
// The workspace is the caller's and may be reused between forward and backward, so backward rebuilds the patch
// matrix from the images (a copy of the image bytes, ~1 ms at B=32, 224², against ~13 ms per GEMM).
//
// Determinism: no atomics. Patchify and col2im write disjoint rows; the column sums for dpos/dcls/ddist run over
// b in order per row, dbias over rows in order per column. The GEMMs are split into row or column blocks (see
// gemm_workers), never along their reduction, and OpenBLAS itself splits M and N, never K: every output element is
// one single-threaded dot product, the same bits run to run.
#include "distill4j_impl.h"
#include "common.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

namespace {

using namespace d4j::cpu;

// The workspace is sized for the largest prefix (class + distillation): the size query does not know the prefix.
constexpr int64_t kMaxPrefix = 2;

struct geometry {
    int64_t B, Cin, H, W, P, D;
    int64_t nx, ny, N, K;
};

// Validates the sizes (positive, H and W multiples of P, products that fit the GEMM's int arguments) and fills in
// the derived ones. Returns an error message, or nullptr when the shape is usable.
const char *make_geometry(int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t P, int64_t D, geometry &g) {
    if (B <= 0 || Cin <= 0 || H <= 0 || W <= 0 || P <= 0 || D <= 0)
        return "patch_embed: every size (B, Cin, H, W, P, D) must be positive";
    if (H % P != 0 || W % P != 0) return "patch_embed: H and W must be multiples of the patch size P";
    // sgemm takes int sizes: rows B*(prefix+N) and columns K, D must stay below 2^31. Each bound is checked before
    // the product it protects is formed, so nothing here overflows int64.
    constexpr int64_t kIntMax = std::numeric_limits<int>::max();
    if (B > kIntMax || Cin > kIntMax || H > kIntMax || W > kIntMax || P > 46340 || D > kIntMax)
        return "patch_embed: a size exceeds 2^31";
    g = geometry{B, Cin, H, W, P, D, W / P, H / P, (H / P) * (W / P), Cin * P * P};
    if (g.K > kIntMax || g.N + kMaxPrefix > kIntMax / B)
        return "patch_embed: the patch matrix exceeds the 2^31 rows or columns of a BLAS call";
    if ((g.N + kMaxPrefix) * D > kIntMax) return "patch_embed: the position embedding exceeds 2^31 elements";
    if (B * (g.N + kMaxPrefix) > (int64_t{1} << 58) / g.K) return "patch_embed: the patch matrix exceeds 2^58 elements";
    return nullptr;
}

// patches[b, prefix + n, :] = the K = Cin*P*P pixels of patch n of image b in (c, ky, kx) order (the order of the
// weight's columns); patches[b, 0..prefix) = 0. One task per row of patches (b, py): it reads Cin*P image rows and
// writes nx*K contiguous floats, P at a time.
void patchify(const geometry &g, int64_t prefix, const float *images, float *patches) {
    const int64_t P = g.P, K = g.K, T = prefix + g.N;
#pragma omp parallel for schedule(dynamic, row_chunk(g.B * g.ny)) num_threads(threads_for(2 * g.B * T * K))
    for (int64_t task = 0; task < g.B * g.ny; ++task) {
        const int64_t b = task / g.ny, py = task % g.ny;
        float *rows = patches + (b * T + prefix + py * g.nx) * K;
        if (py == 0 && prefix > 0) std::memset(patches + b * T * K, 0, sizeof(float) * prefix * K);
        for (int64_t c = 0; c < g.Cin; ++c) {
            for (int64_t ky = 0; ky < P; ++ky) {
                const float *src = images + ((b * g.Cin + c) * g.H + py * P + ky) * g.W;
                float *dst = rows + (c * P + ky) * P;
                for (int64_t px = 0; px < g.nx; ++px) std::memcpy(dst + px * K, src + px * P, sizeof(float) * P);
            }
        }
    }
}

// The inverse scatter (col2im without overlaps, kernel = stride): dimages = the patch rows of dpatches put back.
// Every image element is written exactly once.
void col2im(const geometry &g, int64_t prefix, const float *dpatches, float *dimages) {
    const int64_t P = g.P, K = g.K, T = prefix + g.N;
#pragma omp parallel for schedule(dynamic, row_chunk(g.B * g.ny)) num_threads(threads_for(2 * g.B * T * K))
    for (int64_t task = 0; task < g.B * g.ny; ++task) {
        const int64_t b = task / g.ny, py = task % g.ny;
        const float *rows = dpatches + (b * T + prefix + py * g.nx) * K;
        for (int64_t c = 0; c < g.Cin; ++c) {
            for (int64_t ky = 0; ky < P; ++ky) {
                float *dst = dimages + ((b * g.Cin + c) * g.H + py * P + ky) * g.W;
                const float *src = rows + (c * P + ky) * P;
                for (int64_t px = 0; px < g.nx; ++px) std::memcpy(dst + px * P, src + px * K, sizeof(float) * P);
            }
        }
    }
}

// C[M, N] = alpha A[M, K] B[K, N] + beta C (row-major, A and B possibly transposed) with the rows of C in blocks
// (gemm_blocks in common.h) shared by the OpenMP threads. Each row of C is computed by one single-threaded call,
// the same whatever the thread count.
void gemm_split_rows(sgemm_fn gemm, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, const float *A,
                     int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    const int64_t blocks = gemm_blocks(M);
#pragma omp parallel for schedule(dynamic, 1) num_threads(gemm_threads(blocks, static_cast<double>(M) * N * K))
    for (int64_t i = 0; i < blocks; ++i) {
        int64_t r0, r1;
        gemm_block(M, blocks, i, r0, r1);
        if (r0 == r1) continue;
        const float *a = trans_a == kNoTrans ? A + r0 * lda : A + r0;
        sgemm_rm(gemm, trans_a, trans_b, r1 - r0, N, K, 1.0f, a, lda, B, ldb, beta, C + r0 * ldc, ldc);
    }
}

// The same with the columns of C split: for dweight, where the long dimension is the reduction (B·T rows) and
// splitting it would need partial sums. Each thread owns a column block of dweight outright.
void gemm_split_cols(sgemm_fn gemm, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, const float *A,
                     int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    const int64_t blocks = gemm_blocks(N);
#pragma omp parallel for schedule(dynamic, 1) num_threads(gemm_threads(blocks, static_cast<double>(M) * N * K))
    for (int64_t i = 0; i < blocks; ++i) {
        int64_t c0, c1;
        gemm_block(N, blocks, i, c0, c1);
        if (c0 == c1) continue;
        const float *b = trans_b == kNoTrans ? B + c0 : B + c0 * ldb;
        sgemm_rm(gemm, trans_a, trans_b, M, c1 - c0, K, 1.0f, A, lda, b, ldb, beta, C + c0, ldc);
    }
}

float *workspace_patches(void *workspace) { return static_cast<float *>(workspace); }

// The [kMaxPrefix + N, D] row sums of dtokens over the batch, after the patch matrix.
float *workspace_rowsums(void *workspace, const geometry &g) {
    return static_cast<float *>(workspace) + g.B * (g.N + kMaxPrefix) * g.K;
}

}  // namespace

D4J_IMPL_API int64_t d4j_impl_patch_embed_workspace(int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t P,
                                                    int64_t D) {
    geometry g;
    if (const char *why = make_geometry(B, Cin, H, W, P, D, g)) return -fail(why);
    // The patch matrix [B, 2 + N, K], then the batch sums of dtokens [2 + N, D].
    return static_cast<int64_t>(sizeof(float)) * (B * (g.N + kMaxPrefix) * g.K + (g.N + kMaxPrefix) * D);
}

D4J_IMPL_API int d4j_impl_patch_embed_forward(void *, const float *images, int64_t B, int64_t Cin, int64_t H,
                                              int64_t W, int64_t P, int64_t D, const float *weight, const float *bias,
                                              const float *pos, const float *cls, const float *dist, float *tokens,
                                              void *workspace) {
    geometry g;
    if (const char *why = make_geometry(B, Cin, H, W, P, D, g)) return fail(why);
    if (images == nullptr || weight == nullptr || bias == nullptr || pos == nullptr || tokens == nullptr ||
        workspace == nullptr)
        return fail("patch_embed forward: images, weight, bias, pos, tokens and workspace must not be null");
    if (dist != nullptr && cls == nullptr) return fail("patch_embed forward: a distillation token needs a class token");
    const sgemm_fn gemm = sgemm();
    if (gemm == nullptr) return 1;
    const int64_t prefix = (cls != nullptr) + (dist != nullptr), T = prefix + g.N;
    float *patches = workspace_patches(workspace);
    patchify(g, prefix, images, patches);
    // The GEMM accumulates onto bias + pos (beta = 1) instead of an epilogue pass over its output: the tokens are
    // 5 MB at the bench shape, more than L2, and OpenBLAS reads C tile by tile while it is hot anyway. The prefix
    // rows get cls/dist + pos here and exactly 0 from their zero patch rows.
#pragma omp parallel for schedule(dynamic, row_chunk(B * T)) num_threads(threads_for(B * T * D))
    for (int64_t row = 0; row < B * T; ++row) {
        const int64_t t = row % T;
        float *out = tokens + row * D;
        const float *p = pos + t * D;
        const float *add = t >= prefix ? bias : t == 0 ? cls : dist;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) out[d] = add[d] + p[d];
    }
    gemm_split_rows(gemm, kNoTrans, kTrans, B * T, D, g.K, patches, g.K, weight, g.K, 1.0f, tokens, D);
    return 0;
}

D4J_IMPL_API int d4j_impl_patch_embed_backward(void *, const float *images, int64_t B, int64_t Cin, int64_t H,
                                               int64_t W, int64_t P, int64_t D, const float *weight,
                                               const float *dtokens, float *dweight, float *dbias, float *dpos,
                                               float *dcls, float *ddist, float *dimages, void *workspace) {
    geometry g;
    if (const char *why = make_geometry(B, Cin, H, W, P, D, g)) return fail(why);
    if (images == nullptr || weight == nullptr || dtokens == nullptr || dweight == nullptr || dbias == nullptr ||
        dpos == nullptr || workspace == nullptr)
        return fail("patch_embed backward: images, weight, dtokens, dweight, dbias, dpos and workspace must not be null");
    if (ddist != nullptr && dcls == nullptr)
        return fail("patch_embed backward: a distillation-token gradient needs a class-token gradient");
    const sgemm_fn gemm = sgemm();
    if (gemm == nullptr) return 1;
    const int64_t prefix = (dcls != nullptr) + (ddist != nullptr), T = prefix + g.N;
    float *patches = workspace_patches(workspace), *sums = workspace_rowsums(workspace, g);

    // sums[t] = Σ_b dtokens[b, t] (b in order), then dpos += sums; the prefix rows also go to dcls/ddist.
#pragma omp parallel for schedule(dynamic, row_chunk(T)) num_threads(threads_for(B * T * D))
    for (int64_t t = 0; t < T; ++t) {
        float *s = sums + t * D;
        std::memcpy(s, dtokens + t * D, sizeof(float) * D);
        for (int64_t b = 1; b < B; ++b) {
            const float *src = dtokens + (b * T + t) * D;
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) s[d] += src[d];
        }
        float *dp = dpos + t * D;
        float *dtok = t >= prefix ? nullptr : t == 0 ? dcls : ddist;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) dp[d] += s[d];
        if (dtok != nullptr) {
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) dtok[d] += s[d];
        }
    }
    // dbias = Σ over the patch rows of the batch sums, per column over rows in order, accumulated in double (N
    // terms of mixed sign; the rows of sums are L2-resident, so the strided walk is cheap).
#pragma omp parallel for schedule(dynamic, row_chunk(D)) num_threads(threads_for(T * D))
    for (int64_t d = 0; d < D; ++d) {
        double acc = 0.0;
        for (int64_t t = prefix; t < T; ++t) acc += sums[t * D + d];
        dbias[d] += static_cast<float>(acc);
    }

    patchify(g, prefix, images, patches);
    // dweight [D, K] += dtokensᵀ [D, B·T] · patches [B·T, K]; the zero prefix rows of patches drop the cls/dist rows.
    gemm_split_cols(gemm, kTrans, kNoTrans, D, g.K, B * T, dtokens, D, patches, g.K, 1.0f, dweight, g.K);
    if (dimages != nullptr) {
        // dpatches [B·T, K] = dtokens · weight, over the patch matrix (no longer needed); the prefix rows are
        // computed and ignored. Then col2im writes every image element once (kernel = stride: no overlaps).
        gemm_split_rows(gemm, kNoTrans, kNoTrans, B * T, g.K, D, dtokens, D, weight, g.K, 0.0f, patches, g.K);
        col2im(g, prefix, patches, dimages);
    }
    return 0;
}
