// The CPU twin of native/cuda/attention_bf16.cu (d4j_impl_attention_bf16_forward in distill4j_impl.h): the same
// algorithm with the same roundings, written as plain loops. Its speed is not a goal (issue #18: the CPU backend
// computes the bf16 roundings so that CPU-vs-CUDA comparisons compare like with like).
//
// Per (b, h) an OpenMP task; per query row, keys in tiles of kTile = 64 (the kernel's K/V tile), an online softmax:
//   x = fl(S * fl(scale log2 e))            S = q . k summed in fp32 (bf16 products are exact in fp32)
//   m' = max(m, max x); alpha = exp2f(m - m'); l = l alpha + sum_tile p, p = exp2f(x - m') (fp32, unrounded)
//   O = O alpha + sum_tile bf16(p) v        (fp32; bf16(p) v is exact in fp32)
//   out = bf16(O / l), lse = (m + log2f(l)) ln 2
// Shared with the kernel: every rounding step above, in that order, and the tile boundaries (P is rounded relative
// to the running maximum of its tile, so the tiling changes which bf16 value p becomes). Different: the order of
// the fp32 sums (S over Dh, l and O over keys: sequential here, inside mma.sync and across the lanes of a quad
// there), and exp2f/log2f (glibc here, CUDA's 2-ulp versions there). Neither changes a result by more than a few
// fp32 ulps of the sums' terms, which the tests' bounds include (native/tests/attention_bf16_emu.cpp).
// Built with -ffp-contract=off (CMakeLists.txt): an FMA fused into x - m or O alpha + ... would skip roundings the
// kernel makes (it uses __fmul_rn for the same reason).
//
// Masked keys do not exist here (the loops stop at N); a NaN anywhere in a row's scores or in a V column it uses
// makes that output NaN (fmax skips NaN, exp2f(NaN) is NaN), as in the kernel and in PyTorch.
#include "distill4j_impl.h"
#include "common.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

namespace {

using namespace d4j::cpu;

constexpr int64_t kTile = 64;  // the kernel's kBc
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

float bf16_to_float(uint16_t h) {
    const uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// Round to nearest, ties to even (cvt.rn.bf16.f32); NaN -> the canonical quiet NaN 0x7FFF, as CUDA's.
uint16_t float_to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
    return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace

D4J_IMPL_API int d4j_impl_attention_bf16_forward(void *, const uint16_t *qkv, int64_t B, int64_t N, int64_t H,
                                                 int64_t Dh, float scale, uint16_t *out, float *lse) {
    static thread_local char msg[128];
    if (qkv == nullptr || out == nullptr || lse == nullptr)
        return fail("attention_bf16 forward: qkv, out and lse must not be null");
    if (B <= 0 || N <= 0 || H <= 0 || Dh <= 0)
        return fail("attention_bf16 forward: every size (B, N, H, Dh) must be positive");
    if (Dh != 32 && Dh != 64) {
        std::snprintf(msg, sizeof msg, "attention_bf16 forward: head dim %lld is not supported: 32 or 64",
                      static_cast<long long>(Dh));
        return fail(msg);
    }
    if (H > (int64_t{1} << 20) || N > (int64_t{1} << 31) || B > (int64_t{1} << 58) / N / (3 * H * Dh))
        return fail("attention_bf16 forward: qkv exceeds 2^58 elements");
    if (!std::isfinite(scale)) return fail("attention_bf16 forward: scale must be finite");

    const float scale_log2 = scale * kLog2e;
    const int64_t ld = 3 * H * Dh, ldo = H * Dh;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads_for(B * H * N * N * Dh / 8))
    for (int64_t task = 0; task < B * H; ++task) {
        const int64_t b = task / H, h = task % H;
        // The head's K and V as floats (exact), rows of Dh.
        std::vector<float> K(static_cast<size_t>(N * Dh)), V(K.size()), q(static_cast<size_t>(Dh)),
            o(static_cast<size_t>(Dh)), x(kTile);
        for (int64_t n = 0; n < N; ++n)
            for (int64_t d = 0; d < Dh; ++d) {
                const uint16_t *row = qkv + (b * N + n) * ld + h * Dh + d;
                K[n * Dh + d] = bf16_to_float(row[H * Dh]);
                V[n * Dh + d] = bf16_to_float(row[2 * H * Dh]);
            }
        for (int64_t n = 0; n < N; ++n) {
            for (int64_t d = 0; d < Dh; ++d) q[d] = bf16_to_float(qkv[(b * N + n) * ld + h * Dh + d]);
            std::fill(o.begin(), o.end(), 0.0f);
            float m = -INFINITY, l = 0.0f;
            for (int64_t k0 = 0; k0 < N; k0 += kTile) {
                const int64_t nk = std::min(kTile, N - k0);
                float mt = -INFINITY;
                for (int64_t c = 0; c < nk; ++c) {
                    float s = 0.0f;
                    for (int64_t d = 0; d < Dh; ++d) s += q[d] * K[(k0 + c) * Dh + d];
                    x[c] = s * scale_log2;
                    mt = std::fmax(mt, x[c]);
                }
                const float mn = std::fmax(m, mt), alpha = std::exp2(m - mn);
                m = mn;
                l *= alpha;
                for (int64_t d = 0; d < Dh; ++d) o[d] *= alpha;
                for (int64_t c = 0; c < nk; ++c) {
                    const float p = std::exp2(x[c] - m);
                    l += p;
                    const float pr = bf16_to_float(float_to_bf16(p));
                    const float *v = &V[(k0 + c) * Dh];
                    for (int64_t d = 0; d < Dh; ++d) o[d] += pr * v[d];
                }
            }
            uint16_t *dst = out + (b * N + n) * ldo + h * Dh;
            for (int64_t d = 0; d < Dh; ++d) dst[d] = float_to_bf16(o[d] / l);
            lse[(b * H + h) * N + n] = (m + std::log2(l)) * kLn2;
        }
    }
    return 0;
}

// The backward (d4j_impl_attention_bf16_backward), with the kernels' roundings:
//   S_ij = q_i . k_j, dP_ij = dO_i . v_j, D_i = dO_i . o_i     fp32 (exact bf16 products), d in order
//   p_ij = exp2f(fl(S_ij fl(scale log2 e)) - fl(lse_i fl(log2 e)))
//   dS_ij = fl(p_ij fl(dP_ij - D_i))
//   dV_j = sum_i bf16(p_ij) dO_i, dK_j = fl(scale sum_i bf16(dS_ij) q_i), dQ_i = fl(scale sum_j bf16(dS_ij) k_j)
//                                                              fp32, i and j in order; each rounded once to bf16
// The kernels sum S, dP and the outputs in mma's (unspecified) order; that is the only difference.
D4J_IMPL_API int d4j_impl_attention_bf16_backward(void *, const uint16_t *qkv, const uint16_t *out, const float *lse,
                                                  const uint16_t *dout, int64_t B, int64_t N, int64_t H, int64_t Dh,
                                                  float scale, uint16_t *dqkv) {
    static thread_local char msg[128];
    if (qkv == nullptr || out == nullptr || lse == nullptr || dout == nullptr || dqkv == nullptr)
        return fail("attention_bf16 backward: qkv, out, lse, dout and dqkv must not be null");
    if (B <= 0 || N <= 0 || H <= 0 || Dh <= 0)
        return fail("attention_bf16 backward: every size (B, N, H, Dh) must be positive");
    if (Dh != 32 && Dh != 64) {
        std::snprintf(msg, sizeof msg, "attention_bf16 backward: head dim %lld is not supported: 32 or 64",
                      static_cast<long long>(Dh));
        return fail(msg);
    }
    if (H > (int64_t{1} << 20) || N > (int64_t{1} << 31) || B > (int64_t{1} << 58) / N / (3 * H * Dh))
        return fail("attention_bf16 backward: qkv exceeds 2^58 elements");
    if (N > (int64_t{1} << 24)) return fail("attention_bf16 backward: N exceeds 2^24 (an N x N fp32 scratch per head)");
    if (!std::isfinite(scale)) return fail("attention_bf16 backward: scale must be finite");

    const float scale_log2 = scale * kLog2e;
    const int64_t ld = 3 * H * Dh, ldo = H * Dh;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads_for(B * H * N * N * Dh / 4))
    for (int64_t task = 0; task < B * H; ++task) {
        const int64_t b = task / H, h = task % H;
        const size_t nd = static_cast<size_t>(N * Dh);
        std::vector<float> Q(nd), K(nd), V(nd), dO(nd), P(static_cast<size_t>(N * N)), dS(P.size()), acc(nd);
        std::vector<float> L(static_cast<size_t>(N)), D(L.size());
        for (int64_t n = 0; n < N; ++n) {
            float dsum = 0.0f;
            for (int64_t d = 0; d < Dh; ++d) {
                const uint16_t *row = qkv + (b * N + n) * ld + h * Dh + d;
                Q[n * Dh + d] = bf16_to_float(row[0]);
                K[n * Dh + d] = bf16_to_float(row[H * Dh]);
                V[n * Dh + d] = bf16_to_float(row[2 * H * Dh]);
                dO[n * Dh + d] = bf16_to_float(dout[(b * N + n) * ldo + h * Dh + d]);
                dsum += bf16_to_float(out[(b * N + n) * ldo + h * Dh + d]) * dO[n * Dh + d];
            }
            D[n] = dsum;
            L[n] = lse[(b * H + h) * N + n] * kLog2e;
        }
        for (int64_t i = 0; i < N; ++i)
            for (int64_t j = 0; j < N; ++j) {
                float s = 0.0f, dp = 0.0f;
                for (int64_t d = 0; d < Dh; ++d) {
                    s += Q[i * Dh + d] * K[j * Dh + d];
                    dp += dO[i * Dh + d] * V[j * Dh + d];
                }
                const float p = std::exp2(s * scale_log2 - L[i]);
                P[i * N + j] = bf16_to_float(float_to_bf16(p));
                dS[i * N + j] = bf16_to_float(float_to_bf16(p * (dp - D[i])));
            }
        // Writes one slot (0 Q, 1 K, 2 V) of dqkv from acc, times f (1 for dV: no rounding, the product is exact).
        const auto store = [&](int64_t slot, float f) {
            for (int64_t n = 0; n < N; ++n)
                for (int64_t d = 0; d < Dh; ++d)
                    dqkv[(b * N + n) * ld + slot * H * Dh + h * Dh + d] = float_to_bf16(acc[n * Dh + d] * f);
        };
        std::fill(acc.begin(), acc.end(), 0.0f);  // dQ
        for (int64_t i = 0; i < N; ++i)
            for (int64_t j = 0; j < N; ++j)
                for (int64_t d = 0; d < Dh; ++d) acc[i * Dh + d] += dS[i * N + j] * K[j * Dh + d];
        store(0, scale);
        std::fill(acc.begin(), acc.end(), 0.0f);  // dK
        for (int64_t j = 0; j < N; ++j)
            for (int64_t i = 0; i < N; ++i)
                for (int64_t d = 0; d < Dh; ++d) acc[j * Dh + d] += dS[i * N + j] * Q[i * Dh + d];
        store(1, scale);
        std::fill(acc.begin(), acc.end(), 0.0f);  // dV
        for (int64_t j = 0; j < N; ++j)
            for (int64_t i = 0; i < N; ++i)
                for (int64_t d = 0; d < Dh; ++d) acc[j * Dh + d] += P[i * N + j] * dO[i * Dh + d];
        store(2, 1.0f);
    }
    return 0;
}
