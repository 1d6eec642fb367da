// Multi-head self-attention on the GPU, FlashAttention-2 style, fp32 (distill4j_impl.h). The N x N score matrix
// lives only in registers and shared memory, one tile at a time.
//
//   forward   attn_fwd: one block per (64 query rows, head, batch). Q is staged once; K/V tiles of 32 keys are
//             staged in turn; the online softmax keeps (m, l) and O in registers; out and lse are written once.
//   backward  attn_bwd_delta: D = rowsum(dO o O) into the workspace.
//             attn_bwd: one block per (32 keys, head, batch): K_j, V_j staged once, dK_j and dV_j in registers;
//             for every 32-row query tile i it recomputes P = exp(S - lse) and dS = P o (dP - D), and writes the
//             tile's dQ contribution dS_ij K_j into the workspace; dK_j, dV_j are written (=) at the end.
//             attn_bwd_dq: dQ_i = sum over key tiles j = 0, 1, ... of those partials, written (=) into dqkv.
//
// dQ strategy: a separate fixed-order pass, not atomicAdd. Every key-tile block contributes to every dQ row, so
// atomics would make dq depend on block scheduling (not reproducible run to run) and need dqkv zeroed first. The
// partials cost a workspace of ceil(N/32) * B*H*N*Dh floats (34 MB at B=32, H=3, N=198, Dh=64) and one extra
// write + read of it, about 20 us at 3 TB/s against a backward of a few hundred us; in exchange every output is
// written exactly once with a fixed order of additions: same inputs, same bits.
//
// Layout: the rows of one head are Dh contiguous floats at a stride of 3*H*Dh (qkv) or H*Dh (out, dout), so tiles
// are loaded with float4s, 16 (Dh = 64) or 8 (Dh = 32) threads per row. Scores are kept in base 2: S is
// multiplied by scale * log2(e) and exp2f is used; lse is stored in natural log as the ABI says.
//
// Micro-tiles (128 threads, 4 warps): in the forward a thread owns 4 query rows x 4 keys of S and the same 4 rows x
// Dh/8 columns of O, the 8 threads sharing a row sit in one warp (shuffle max/sum, no shared-memory exchange), and
// P goes through shared memory read back only by the warp that wrote it (__syncwarp). Shared-memory rows are
// padded by 4 floats so that the rows a warp reads at one column fall in different banks. The inner products are
// plain fp32 SIMT FMAs. Which thread owns which element here is not mma.sync's fragment layout, so a tensor-core
// version is another kernel with its own tiles (issue #18), not these loops with mma.sync swapped in.
#include "common.cuh"
#include "distill4j_impl.h"
#include "launch.cuh"
#include "reduce.cuh"

#include <cstdint>
#include <cstdio>
#include <limits>

namespace {

using namespace d4j::cuda;

constexpr int kThreads = 128;
constexpr int kFwdBr = 64;  // forward: query rows per block
constexpr int kFwdBc = 32;  // forward: keys per staged K/V tile
constexpr int kBwdBr = 32;  // backward: query rows per tile
constexpr int kBwdBc = 32;  // backward: keys per block (= rows per dQ partial)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <int DH>
constexpr int kLd = DH + 4;           // padded shared-memory row of a Q/K/V/dO tile
constexpr int kLdP = kFwdBc + 4;      // padded row of a P / dS tile (both directions use 32 keys)
static_assert(kFwdBc == kBwdBc, "kLdP serves both directions");

template <int DH>
constexpr size_t kFwdSmem = sizeof(float) * ((kFwdBr + 2 * kFwdBc) * kLd<DH> + kFwdBr * kLdP);  // 43 KiB at 64
template <int DH>
constexpr size_t kBwdSmem = sizeof(float) * ((2 * kBwdBc + 2 * kBwdBr) * kLd<DH> + 2 * kBwdBr * kLdP + 2 * kBwdBr);

struct dims {
    int B, N, H;
};

__device__ __forceinline__ float4 f4(const float *p) { return *reinterpret_cast<const float4 *>(p); }

__device__ __forceinline__ float dot4(float acc, float4 a, float4 b) {
    return fmaf(a.w, b.w, fmaf(a.z, b.z, fmaf(a.y, b.y, fmaf(a.x, b.x, acc))));
}

__device__ __forceinline__ void axpy4(float4 &acc, float a, float4 x) {
    acc.x = fmaf(a, x.x, acc.x);
    acc.y = fmaf(a, x.y, acc.y);
    acc.z = fmaf(a, x.z, acc.z);
    acc.w = fmaf(a, x.w, acc.w);
}

// Stages ROWS rows of DH floats (row r at src + r * stride) into dst (row stride kLd<DH>), times mul. Rows at or
// past `valid` are zero, so that the ragged last tile computes on zeros, never on garbage (0 * NaN = NaN).
template <int DH, int ROWS>
__device__ __forceinline__ void stage_rows(float *dst, const float *src, int64_t stride, int valid, float mul) {
    constexpr int kVecs = DH / 4;
    for (int i = threadIdx.x; i < ROWS * kVecs; i += kThreads) {
        const int r = i / kVecs, c = (i % kVecs) * 4;
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (r < valid) v = f4(src + r * stride + c);
        v.x *= mul, v.y *= mul, v.z *= mul, v.w *= mul;
        *reinterpret_cast<float4 *>(dst + r * kLd<DH> + c) = v;
    }
}

// ---- Forward.

template <int DH>
__global__ void __launch_bounds__(kThreads) attn_fwd(const float *qkv, dims g, float scale_log2, float *out,
                                                     float *lse) {
    constexpr int LD = kLd<DH>, BR = kFwdBr, BC = kFwdBc, QD = DH / 32;  // QD float4 columns of O per thread
    D4J_DYNAMIC_SMEM(float, smem);
    float *sQ = smem, *sK = sQ + BR * LD, *sV = sK + BC * LD, *sP = sV + BC * LD;

    const int lane = threadIdx.x % 32, tr = threadIdx.x / 32 * 4 + lane / 8, tc = lane % 8;
    const int q0 = blockIdx.x * BR, h = blockIdx.y, b = blockIdx.z;
    const int64_t stride = int64_t{3} * g.H * DH;
    const float *q_src = qkv + int64_t{b} * g.N * stride + h * DH, *k_src = q_src + g.H * DH,
                *v_src = k_src + g.H * DH;
    // Q unscaled: S = (Q K^T) * scale_log2 rounds as attn_bwd recomputes it, so that P = exp2(S - lse) there is the P
    // of this pass. Pre-scaled Q would round each product differently, an error of u * sum |q k| in S (not u * |S|)
    // that large, cancelling scores turn into a visibly wrong P (1 - 2.5e-4 at N = 1, where P is exactly 1).
    stage_rows<DH, BR>(sQ, q_src + q0 * stride, stride, g.N - q0, 1.0f);

    // Thread (tr, tc) owns query rows tr + 16 i, keys tc + 8 j of each tile, O columns tc * 4 + 32 q (+0..3).
    float m[4], l[4];
    float4 o[4][QD];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        m[i] = -INFINITY, l[i] = 0.0f;
#pragma unroll
        for (int q = 0; q < QD; ++q) o[i][q] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }

    for (int k0 = 0; k0 < g.N; k0 += BC) {
        __syncthreads();  // every warp is done reading the previous sK/sV (and sQ is complete on the first pass)
        stage_rows<DH, BC>(sK, k_src + k0 * stride, stride, g.N - k0, 1.0f);
        stage_rows<DH, BC>(sV, v_src + k0 * stride, stride, g.N - k0, 1.0f);
        __syncthreads();

        float s[4][4] = {};
#pragma unroll 4
        for (int d = 0; d < DH; d += 4) {
            float4 qv[4], kv[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) qv[i] = f4(sQ + (tr + 16 * i) * LD + d);
#pragma unroll
            for (int j = 0; j < 4; ++j) kv[j] = f4(sK + (tc + 8 * j) * LD + d);
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) s[i][j] = dot4(s[i][j], qv[i], kv[j]);
        }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) s[i][j] = __fmul_rn(s[i][j], scale_log2);  // never fused into a later add
#pragma unroll
        for (int j = 0; j < 4; ++j)
            if (k0 + tc + 8 * j >= g.N)
#pragma unroll
                for (int i = 0; i < 4; ++i) s[i][j] = -INFINITY;

        // Online softmax. Key k0 is always valid, so the tile maximum (over the 8 lanes tc of the row) is finite.
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            float mt = fmaxf(fmaxf(s[i][0], s[i][1]), fmaxf(s[i][2], s[i][3]));
#pragma unroll
            for (int off = 1; off < 8; off <<= 1) mt = fmaxf(mt, __shfl_xor_sync(kFullMask, mt, off));
            const float mn = fmaxf(m[i], mt), alpha = exp2f(m[i] - mn);  // 0 on the first tile (m = -inf)
            float rs = 0.0f;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const float p = exp2f(s[i][j] - mn);
                rs += p;
                sP[(tr + 16 * i) * kLdP + tc + 8 * j] = p;
            }
#pragma unroll
            for (int off = 1; off < 8; off <<= 1) rs += __shfl_xor_sync(kFullMask, rs, off);
            l[i] = fmaf(l[i], alpha, rs);
            m[i] = mn;
#pragma unroll
            for (int q = 0; q < QD; ++q) o[i][q].x *= alpha, o[i][q].y *= alpha, o[i][q].z *= alpha, o[i][q].w *= alpha;
        }
        __syncwarp();  // the rows of sP this warp reads below were written by this warp only

        // O += P V.
#pragma unroll 2
        for (int c = 0; c < BC; c += 4) {
            float4 p[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) p[i] = f4(sP + (tr + 16 * i) * kLdP + c);
#pragma unroll
            for (int q = 0; q < QD; ++q) {
                const float *v = sV + c * LD + tc * 4 + 32 * q;
                const float4 v0 = f4(v), v1 = f4(v + LD), v2 = f4(v + 2 * LD), v3 = f4(v + 3 * LD);
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    axpy4(o[i][q], p[i].x, v0);
                    axpy4(o[i][q], p[i].y, v1);
                    axpy4(o[i][q], p[i].z, v2);
                    axpy4(o[i][q], p[i].w, v3);
                }
            }
        }
        // The next pass overwrites sP only after the __syncthreads at the top of the loop.
    }

#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int n = q0 + tr + 16 * i;
        if (n >= g.N) continue;
        const float inv = 1.0f / l[i];
        float *dst = out + (int64_t{b} * g.N + n) * g.H * DH + h * DH + tc * 4;
#pragma unroll
        for (int q = 0; q < QD; ++q)
            *reinterpret_cast<float4 *>(dst + 32 * q) =
                make_float4(o[i][q].x * inv, o[i][q].y * inv, o[i][q].z * inv, o[i][q].w * inv);
        if (tc == 0) lse[(int64_t{b} * g.H + h) * g.N + n] = (m[i] + log2f(l[i])) * kLn2;
    }
}

// ---- Backward.

// D[b, h, n] = sum_d dout[b, n, h, d] * out[b, n, h, d], one thread per (b, n, h) row, summed over d in the order
// attn_bwd forms dP = dO . V (one chain of fmas from d = 0). Where P is one-hot (N = 1, a saturated softmax) the
// row of O equals a row of V bit for bit, and dP - D is then exactly 0 rather than rounding noise that scale * K
// would amplify into dQ and dK (the CPU kernel sums D the same way). The strided loads cost little: this pass reads
// 2 * B*N*H*Dh floats once.
template <int DH>
__global__ void __launch_bounds__(256) attn_bwd_delta(const float *out, const float *dout, dims g, float *delta) {
    const int64_t rows = int64_t{g.B} * g.N * g.H;
    const int64_t row = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;  // = (b * N + n) * H + h
    if (row >= rows) return;
    float v = 0.0f;
#pragma unroll 4
    for (int c = 0; c < DH; c += 4) v = dot4(v, f4(dout + row * DH + c), f4(out + row * DH + c));
    const int64_t h = row % g.H, bn = row / g.H;
    delta[(bn / g.N * g.H + h) * g.N + bn % g.N] = v;
}

template <int DH>
__global__ void __launch_bounds__(kThreads) attn_bwd(const float *qkv, const float *dout, const float *lse,
                                                     const float *delta, dims g, float scale, float *dqkv,
                                                     float *dq_part) {
    constexpr int LD = kLd<DH>, BR = kBwdBr, BC = kBwdBc;
    // Phase 2/3 mapping: DH/4 column groups (a float4 each) x NG row groups; a thread owns RPT keys (dK, dV) or
    // query rows (dQ): rg + NG * i.
    constexpr int CG = DH / 4, NG = kThreads / CG, RPT = BC / NG;
    static_assert(BR == BC && BC % NG == 0, "phase 2 and 3 share one mapping");
    D4J_DYNAMIC_SMEM(float, smem);
    float *sK = smem, *sV = sK + BC * LD, *sQ = sV + BC * LD, *sdO = sQ + BR * LD, *sP = sdO + BR * LD,
          *sdS = sP + BR * kLdP, *sL = sdS + BR * kLdP, *sD = sL + BR;

    const int k0 = blockIdx.x * BC, h = blockIdx.y, b = blockIdx.z;
    const int64_t stride = int64_t{3} * g.H * DH, ostride = int64_t{g.H} * DH;
    const float *q_src = qkv + int64_t{b} * g.N * stride + h * DH, *k_src = q_src + g.H * DH,
                *v_src = k_src + g.H * DH;
    const float *do_src = dout + int64_t{b} * g.N * ostride + h * DH;
    const float *lse_bh = lse + (int64_t{b} * g.H + h) * g.N, *delta_bh = delta + (int64_t{b} * g.H + h) * g.N;
    stage_rows<DH, BC>(sK, k_src + k0 * stride, stride, g.N - k0, 1.0f);
    stage_rows<DH, BC>(sV, v_src + k0 * stride, stride, g.N - k0, 1.0f);

    // Phase 1: thread (tr, tc) owns query rows tr + 8 i and keys tc + 16 j of the 32 x 32 tile.
    const int tr = threadIdx.x / 16, tc = threadIdx.x % 16;
    // Phases 2/3: column group cg, row group rg.
    const int cg = threadIdx.x % CG, rg = threadIdx.x / CG;
    float4 dk[RPT], dv[RPT];
#pragma unroll
    for (int i = 0; i < RPT; ++i) dk[i] = dv[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const float scale_log2 = scale * kLog2e;

    for (int q0 = 0; q0 < g.N; q0 += BR) {
        __syncthreads();  // every warp is done with the previous query tile
        stage_rows<DH, BR>(sQ, q_src + q0 * stride, stride, g.N - q0, 1.0f);
        stage_rows<DH, BR>(sdO, do_src + q0 * ostride, ostride, g.N - q0, 1.0f);
        if (threadIdx.x < BR) {
            const int n = q0 + threadIdx.x;
            // A missing row gets lse = +inf: P = 0 there, so it adds nothing to dK and dV.
            sL[threadIdx.x] = n < g.N ? lse_bh[n] * kLog2e : INFINITY;
            sD[threadIdx.x] = n < g.N ? delta_bh[n] : 0.0f;
        }
        __syncthreads();

        // Phase 1: S = Q K^T and dP = dO V^T, then P = exp(S - lse) and dS = P o (dP - D), times scale into sdS.
        float s[4][2] = {}, dp[4][2] = {};
#pragma unroll 4
        for (int d = 0; d < DH; d += 4) {
            float4 kv[2], vv[2];
#pragma unroll
            for (int j = 0; j < 2; ++j) kv[j] = f4(sK + (tc + 16 * j) * LD + d), vv[j] = f4(sV + (tc + 16 * j) * LD + d);
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const float4 qv = f4(sQ + (tr + 8 * i) * LD + d), dov = f4(sdO + (tr + 8 * i) * LD + d);
#pragma unroll
                for (int j = 0; j < 2; ++j) s[i][j] = dot4(s[i][j], qv, kv[j]), dp[i][j] = dot4(dp[i][j], dov, vv[j]);
            }
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int r = tr + 8 * i;
            const float lr = sL[r], dr = sD[r];
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                const int c = tc + 16 * j;
                const float p = k0 + c < g.N ? exp2f(__fmul_rn(s[i][j], scale_log2) - lr) : 0.0f;  // S as attn_fwd rounds it
                sP[r * kLdP + c] = p;
                sdS[r * kLdP + c] = p * (dp[i][j] - dr) * scale;
            }
        }
        __syncthreads();

        // Phase 2: dV_j += P^T dO, dK_j += dS^T Q (dS carries the scale).
#pragma unroll 4
        for (int r = 0; r < BR; ++r) {
            const float4 dov = f4(sdO + r * LD + cg * 4), qv = f4(sQ + r * LD + cg * 4);
#pragma unroll
            for (int i = 0; i < RPT; ++i) {
                const int c = rg + NG * i;
                axpy4(dv[i], sP[r * kLdP + c], dov);
                axpy4(dk[i], sdS[r * kLdP + c], qv);
            }
        }

        // Phase 3: this key tile's part of dQ_i = dS K_j, written to the workspace (summed by attn_bwd_dq).
        float4 dq[RPT];
#pragma unroll
        for (int i = 0; i < RPT; ++i) dq[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 2
        for (int c = 0; c < BC; c += 4) {
            const float *kp = sK + c * LD + cg * 4;
            const float4 k0v = f4(kp), k1v = f4(kp + LD), k2v = f4(kp + 2 * LD), k3v = f4(kp + 3 * LD);
#pragma unroll
            for (int i = 0; i < RPT; ++i) {
                const float4 ds = f4(sdS + (rg + NG * i) * kLdP + c);
                axpy4(dq[i], ds.x, k0v);
                axpy4(dq[i], ds.y, k1v);
                axpy4(dq[i], ds.z, k2v);
                axpy4(dq[i], ds.w, k3v);
            }
        }
        float *part = dq_part + ((int64_t{blockIdx.x} * g.B + b) * g.H + h) * g.N * DH;
#pragma unroll
        for (int i = 0; i < RPT; ++i) {
            const int n = q0 + rg + NG * i;
            if (n < g.N) *reinterpret_cast<float4 *>(part + int64_t{n} * DH + cg * 4) = dq[i];
        }
    }

#pragma unroll
    for (int i = 0; i < RPT; ++i) {
        const int n = k0 + rg + NG * i;
        if (n >= g.N) continue;
        float *dst = dqkv + (int64_t{b} * g.N + n) * stride + h * DH + cg * 4;
        *reinterpret_cast<float4 *>(dst + g.H * DH) = dk[i];
        *reinterpret_cast<float4 *>(dst + 2 * g.H * DH) = dv[i];
    }
}

// dq[b, n, h] = sum over key tiles t = 0, 1, ... of dq_part[t, b, h, n], in that order; one float4 per thread.
template <int DH>
__global__ void __launch_bounds__(256) attn_bwd_dq(const float *dq_part, dims g, int tiles, float *dqkv) {
    const int64_t per_tile = int64_t{g.B} * g.H * g.N * (DH / 4);  // float4s
    const int64_t stride = int64_t{3} * g.H * DH;
    for (int64_t idx = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; idx < per_tile;
         idx += int64_t{gridDim.x} * blockDim.x) {
        float4 acc = f4(dq_part + idx * 4);
        for (int t = 1; t < tiles; ++t) {
            const float4 v = f4(dq_part + (t * per_tile + idx) * 4);
            acc.x += v.x, acc.y += v.y, acc.z += v.z, acc.w += v.w;
        }
        const int64_t c = idx % (DH / 4) * 4, bhn = idx / (DH / 4), n = bhn % g.N, bh = bhn / g.N;
        *reinterpret_cast<float4 *>(dqkv + (bh / g.H * g.N + n) * stride + bh % g.H * DH + c) = acc;
    }
}

// ---- Host side.

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
bool aligned16(const void *p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
constexpr int64_t kLimit = int64_t{1} << 40;
// a * b for a, b >= 0 when it stays below kLimit, else -1 (and -1 stays -1).
int64_t mul_lim(int64_t a, int64_t b) { return a < 0 || b < 0 || (a != 0 && b > kLimit / a) ? -1 : a * b; }

struct plan {
    dims g;
    int dh, key_tiles;
    int64_t delta_floats;  // B*H*N rounded up to a multiple of 4: the dQ partials after it stay 16-byte aligned
    int64_t ws_floats;     // delta + key_tiles * B*H*N*Dh
};

// Checks the shape (not the pointers). The message lives in a static buffer: the callers copy it at once.
const char *make_plan(int64_t B, int64_t N, int64_t H, int64_t Dh, plan &p) {
    static thread_local char msg[128];
    if (B <= 0 || N <= 0 || H <= 0 || Dh <= 0) return "attention: every size (B, N, H, Dh) must be positive";
    if (Dh != 32 && Dh != 64) {
        std::snprintf(msg, sizeof msg, "attention: head dim %lld is not supported: 32 or 64",
                      static_cast<long long>(Dh));
        return msg;
    }
    if (B > 65535 || H > 65535) return "attention: B and H must be at most 65535 (CUDA grid)";
    if (N > std::numeric_limits<int>::max()) return "attention: N exceeds 2^31 - 1";
    const int64_t tiles = ceil_div(N, kBwdBc);
    // Offsets are 64-bit in the kernels; the limit (2^40 floats, 4 TiB) only keeps this arithmetic from overflowing.
    const int64_t rows = mul_lim(B, mul_lim(H, N)), delta = ceil_div(rows, 4) * 4;
    const int64_t partials = mul_lim(tiles, mul_lim(rows, Dh));
    if (rows < 0 || partials < 0 || mul_lim(3, mul_lim(rows, Dh)) < 0)
        return "attention: a tensor or the workspace exceeds 2^40 elements";
    p.g = dims{static_cast<int>(B), static_cast<int>(N), static_cast<int>(H)};
    p.dh = static_cast<int>(Dh);
    p.key_tiles = static_cast<int>(tiles);
    p.delta_floats = delta;
    p.ws_floats = delta + partials;
    return nullptr;
}

template <int DH>
int forward(const plan &p, const float *qkv, float scale, float *out, float *lse, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>(ceil_div(p.g.N, kFwdBr)), static_cast<unsigned>(p.g.H),
                    static_cast<unsigned>(p.g.B));
    D4J_LAUNCH(attn_fwd<DH>, grid, dim3(kThreads), kFwdSmem<DH>, stream, qkv, p.g, scale * kLog2e, out, lse);
    return check_launch("attn_fwd");
}

template <int DH>
int backward(const plan &p, const float *qkv, const float *out, const float *lse, const float *dout, float scale,
             float *dqkv, float *ws, cudaStream_t stream) {
    float *delta = ws, *dq_part = ws + p.delta_floats;
    const int64_t rows = int64_t{p.g.B} * p.g.N * p.g.H;
    D4J_LAUNCH(attn_bwd_delta<DH>, dim3(static_cast<unsigned>(ceil_div(rows, 256))), dim3(256), 0, stream,
               out, dout, p.g, delta);
    if (check_launch("attn_bwd_delta") != 0) return 1;
    const dim3 grid(static_cast<unsigned>(p.key_tiles), static_cast<unsigned>(p.g.H), static_cast<unsigned>(p.g.B));
    D4J_LAUNCH(attn_bwd<DH>, grid, dim3(kThreads), kBwdSmem<DH>, stream, qkv, dout, lse, delta, p.g, scale, dqkv,
               dq_part);
    if (check_launch("attn_bwd") != 0) return 1;
    // Grid-stride: a few blocks per SM's worth (65535 at most) is plenty for a streaming sum.
    const int64_t vecs = rows * (DH / 4);
    const unsigned blocks = static_cast<unsigned>(ceil_div(vecs, 256) < 4096 ? ceil_div(vecs, 256) : 4096);
    D4J_LAUNCH(attn_bwd_dq<DH>, dim3(blocks), dim3(256), 0, stream, dq_part, p.g, p.key_tiles, dqkv);
    return check_launch("attn_bwd_dq");
}

}  // namespace

D4J_IMPL_API int64_t d4j_impl_attention_workspace(int64_t B, int64_t N, int64_t H, int64_t Dh) {
    plan p;
    if (const char *why = make_plan(B, N, H, Dh, p)) return -fail(why);
    return static_cast<int64_t>(sizeof(float)) * p.ws_floats;
}

D4J_IMPL_API int d4j_impl_attention_forward(void *stream, const float *qkv, int64_t B, int64_t N, int64_t H,
                                            int64_t Dh, float scale, float *out, float *lse, void *workspace) {
    (void)workspace;  // the forward needs none
    if (qkv == nullptr || out == nullptr || lse == nullptr)
        return fail("attention forward: qkv, out and lse must not be null");
    plan p;
    if (const char *why = make_plan(B, N, H, Dh, p)) return fail(why);
    if (!(scale > -INFINITY && scale < INFINITY)) return fail("attention forward: scale must be finite");
    if (!aligned16(qkv) || !aligned16(out)) return fail("attention forward: qkv and out must be 16-byte aligned");
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    return p.dh == 32 ? forward<32>(p, qkv, scale, out, lse, s) : forward<64>(p, qkv, scale, out, lse, s);
}

D4J_IMPL_API int d4j_impl_attention_backward(void *stream, const float *qkv, const float *out, const float *lse,
                                             const float *dout, int64_t B, int64_t N, int64_t H, int64_t Dh,
                                             float scale, float *dqkv, void *workspace) {
    if (qkv == nullptr || out == nullptr || lse == nullptr || dout == nullptr || dqkv == nullptr ||
        workspace == nullptr)
        return fail("attention backward: qkv, out, lse, dout, dqkv and workspace must not be null");
    plan p;
    if (const char *why = make_plan(B, N, H, Dh, p)) return fail(why);
    if (!(scale > -INFINITY && scale < INFINITY)) return fail("attention backward: scale must be finite");
    if (!aligned16(qkv) || !aligned16(out) || !aligned16(dout) || !aligned16(dqkv) || !aligned16(workspace))
        return fail("attention backward: qkv, out, dout, dqkv and workspace must be 16-byte aligned");
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    float *ws = static_cast<float *>(workspace);
    return p.dh == 32 ? backward<32>(p, qkv, out, lse, dout, scale, dqkv, ws, s)
                      : backward<64>(p, qkv, out, lse, dout, scale, dqkv, ws, s);
}
