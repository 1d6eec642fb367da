// Multi-head self-attention forward in bf16 on the tensor cores, FlashAttention-2 style (distill4j_impl.h,
// d4j_impl_attention_bf16_forward): qkv and out bf16, S, the softmax statistics, O and lse fp32. The CPU twin is
// native/cpu/attention_bf16.cpp (same tiles, same roundings). Emulated only so far: never run on a GPU. The
// backward (d4j_impl_attention_bf16_backward) follows the forward below, with its own comment.
//
// One CTA per (64 query rows, head, batch), 4 warps, warp w owning query rows 16w..16w+15 of the tile; K/V tiles
// of 64 keys stream through shared memory, double-buffered with cp.async. Per key tile a warp computes
//   S (16 x 64)  = Q K^T           mma.sync m16n8k16 bf16: A = Q fragments held in registers for the whole pass
//                                  (ldmatrix.x4 once), B = K rows by ldmatrix.x4 (K stored key-major is the "col"
//                                  operand as it stands)
//   online softmax in fp32, base 2 (x = S * scale * log2 e, p = exp2(x - m)); the row's 64 scores sit in the 4
//                                  lanes of a quad, so max and sum need two __shfl_xor_sync each and no shared memory
//   O (16 x Dh) += P V             P never leaves registers: the accumulator of two adjacent m16n8 S blocks (keys
//                                  16kk..16kk+15) holds, per lane, exactly the elements the A fragment of the next
//                                  m16n8k16 wants (rows g and g+8, columns 2t, 2t+1 and 8+2t, 8+2t+1), so packing
//                                  them to bf16x2 is the whole conversion; B = V by ldmatrix.x4.trans (V stored
//                                  key-major is row-major in k, "row", so it is transposed on the way in).
//
// Why 64-query tiles rather than one (batch, head) per CTA at ViT lengths (N = 197/198): a whole head is 13 warps of
// 16 rows, an odd CTA size whose warps all wait at every tile barrier for the slowest, and only B*H CTAs (192 at
// B = 64, H = 3, for 132 SMs: coarse units that split unevenly). Four 64-row tiles give 4*B*H smaller CTAs (40 KiB
// shared memory and 164 registers a thread at Dh = 64, per ptxas for sm_80-90: 3 resident per SM by registers), for
// the price of reading K and V four times per head, from L2 (50 KiB per head in bf16). Any N works with the same
// shared memory. Unmeasured: the choice is from counting, not from a profile.
//
// Shared memory rows are Dh bf16 (64 or 128 bytes) in 16-byte chunks, XOR-swizzled: chunk c of row r sits at
// chunk c ^ swz(r). ldmatrix reads 8 rows at one logical chunk per 8-lane phase; unswizzled those 8 addresses hit
// the same 4 banks (128-byte rows) or 2 x 4 banks (64-byte rows), swizzled they cover all 32 banks once.
//
// Ragged N: rows past N are zero-filled by cp.async (src-size 0), so no global read leaves the tensor; their
// scores are replaced by -inf (P = 0 exactly: zero K rows would score 0, not nothing), their V rows are 0, and
// query rows past N are computed on zeros and not written. Key 0 is in the first tile, so every running maximum is
// finite after it (unless the row has a NaN: then its output and lse are NaN, as PyTorch's and our fp32 kernel's).
//
// Roundings (shared with the CPU twin): S in fp32 from exact bf16 products; x = fl(S * fl(scale log2 e)); per tile
// m' = max(m, max x), alpha = exp2f(m - m'), p = exp2f(x - m') in fp32; l = l alpha + sum p (fp32, unrounded p);
// P rounded to bf16 (nearest even) before P V; O = O alpha + P V in fp32; out = bf16(O / l) (one rounding);
// lse = (m + log2 l) ln 2 in fp32. The order of the fp32 sums differs (mma's internal order is unspecified).
//
// Output stores are 4-byte bf16x2 straight from the accumulator fragment (a quad writes 16 contiguous bytes of a
// row): half-used 32-byte sectors, on a write that is a small part of the traffic; staging it through shared memory
// is a possible later gain.
#include "common.cuh"
#include "distill4j_impl.h"
#include "launch.cuh"
#include "tensor_core.cuh"

#include <cstdint>
#include <cstdio>
#include <limits>

namespace {

using namespace d4j::cuda;
using d4j::tc::cp_async_cg16;
using d4j::tc::cp_async_commit;
using d4j::tc::cp_async_wait;
using d4j::tc::ldmatrix;
using d4j::tc::mma_m16n8k16_bf16;
using d4j::tc::pack_bf16x2;

constexpr int kThreads = 128;  // 4 warps
constexpr int kBr = 64;        // query rows per CTA (16 per warp)
constexpr int kBc = 64;        // keys per staged K/V tile
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Shared memory: Q tile, then two stages of (K tile, V tile); bf16 elements.
template <int DH>
constexpr int kTileElems = kBr * DH;
template <int DH>
constexpr size_t kSmemBytes = sizeof(uint16_t) * 5 * kTileElems<DH>;  // 40 KiB at Dh = 64, 20 KiB at 32
static_assert(kBr == kBc, "the Q tile and the K/V tiles share one row count and one swizzle");

// Element offset of chunk c (8 bf16) of row r in a tile of DH-element rows. With CH = DH / 8 chunks a row, rows
// r .. r+7 read at one chunk fall on 8 different 16-byte bank groups: 128-byte rows (CH = 8) XOR with r % 8,
// 64-byte rows (CH = 4, two rows per 128 bytes) with (r / 2) % 4.
template <int DH>
__device__ __forceinline__ int swz(int r, int c) {
    constexpr int CH = DH / 8, PER = 8 / CH;
    return r * DH + ((c ^ ((r / PER) % CH)) * 8);
}

// Copies rows row0 .. row0+63 of one head (row r at src + r * stride, DH contiguous bf16) into a swizzled tile;
// rows at or past n are zero-filled (src-size 0: nothing is read, the pointer stays at row 0 of the head).
template <int DH>
__device__ __forceinline__ void stage_tile(uint16_t *dst, const uint16_t *src, int64_t stride, int row0, int n) {
    constexpr int CH = DH / 8;
    for (int i = static_cast<int>(threadIdx.x); i < kBr * CH; i += kThreads) {
        const int r = i / CH, c = i % CH;
        const bool valid = row0 + r < n;
        cp_async_cg16(dst + swz<DH>(r, c), valid ? src + (row0 + r) * stride + c * 8 : src, valid ? 16u : 0u);
    }
}

__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// qkv [B, N, 3, H, DH], out [B, N, H*DH] (bf16 bits), lse [B, H, N].
template <int DH>
__global__ void __launch_bounds__(kThreads) attn_bf16_fwd(const uint16_t *qkv, int N, int H, float scale_log2,
                                                          uint16_t *out, float *lse) {
    constexpr int KS = DH / 16;   // k-steps of Q K^T
    constexpr int NB = kBc / 8;   // 8-key blocks of S
    constexpr int DB = DH / 8;    // 8-column blocks of O
    D4J_DYNAMIC_SMEM(uint16_t, smem);
    // Stage st: K at tile 1 + 2 st, V at 2 + 2 st (arithmetic, not a pointer array: indexed by a loop variable,
    // an array would live in local memory).
    uint16_t *sQ = smem;
    const auto sK = [&](int st) { return sQ + (1 + 2 * st) * kTileElems<DH>; };
    const auto sV = [&](int st) { return sQ + (2 + 2 * st) * kTileElems<DH>; };

    const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32, g = lane >> 2, t = lane % 4;
    const int q0 = static_cast<int>(blockIdx.x) * kBr, h = static_cast<int>(blockIdx.y),
              b = static_cast<int>(blockIdx.z);
    const int64_t stride = int64_t{3} * H * DH;
    const uint16_t *q_src = qkv + int64_t{b} * N * stride + h * DH, *k_src = q_src + H * DH,
                   *v_src = k_src + H * DH;
    const int tiles = (N + kBc - 1) / kBc;

    stage_tile<DH>(sQ, q_src, stride, q0, N);
    stage_tile<DH>(sK(0), k_src, stride, 0, N);
    stage_tile<DH>(sV(0), v_src, stride, 0, N);
    cp_async_commit();

    uint32_t qf[KS][4];
    float o[DB][4];
    // Rows g (index 0) and g + 8 (index 1) of this warp's 16: running max (base 2), this lane's partial row sum.
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int j = 0; j < DB; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;

    for (int kt = 0; kt < tiles; ++kt) {
        const int st = kt % 2;
        if (kt + 1 < tiles) {
            // Stage (kt + 1) % 2 was last read in iteration kt - 1, before its closing barrier.
            stage_tile<DH>(sK(st ^ 1), k_src, stride, (kt + 1) * kBc, N);
            stage_tile<DH>(sV(st ^ 1), v_src, stride, (kt + 1) * kBc, N);
            cp_async_commit();
            cp_async_wait<1>();  // tile kt (and Q) landed; kt + 1 may still be in flight
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();  // the other threads' copies
        if (kt == 0) {
            // Lanes 0-15 give rows 0-15 of the left 8 columns of the k-step, lanes 16-31 of the right 8: the
            // registers come out as a0 (rows 0-7, k 0-7), a1 (rows 8-15), a2 (k 8-15), a3.
#pragma unroll
            for (int ks = 0; ks < KS; ++ks) ldmatrix(qf[ks], sQ + swz<DH>(16 * warp + lane % 16, 2 * ks + lane / 16));
        }

        // S = Q K^T. ldmatrix.x4 of K rows: lanes 0-7 keys 0-7 at k 0-7 (b0 of block 2p), 8-15 the same keys at k
        // 8-15 (b1), 16-31 the same for keys 8-15 (block 2p + 1).
        float s[NB][4];
#pragma unroll
        for (int j = 0; j < NB; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
        const uint16_t *K = sK(st), *V = sV(st);
#pragma unroll
        for (int ks = 0; ks < KS; ++ks)
#pragma unroll
            for (int p = 0; p < NB / 2; ++p) {
                uint32_t kb[4];
                ldmatrix(kb, K + swz<DH>(16 * p + (lane / 16) * 8 + lane % 8, 2 * ks + (lane / 8) % 2));
                const uint32_t b0[2] = {kb[0], kb[1]}, b1[2] = {kb[2], kb[3]};
                mma_m16n8k16_bf16(s[2 * p], qf[ks], b0, s[2 * p]);
                mma_m16n8k16_bf16(s[2 * p + 1], qf[ks], b1, s[2 * p + 1]);
            }

        // Online softmax; lane holds keys 8j + 2t, 8j + 2t + 1 of rows g (s[j][0..1]) and g + 8 (s[j][2..3]).
        const int k0 = kt * kBc;
        float mt[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int j = 0; j < NB; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const bool valid = k0 + 8 * j + 2 * t + e % 2 < N;
                s[j][e] = valid ? __fmul_rn(s[j][e], scale_log2) : -INFINITY;  // never fused into x - m
                mt[e / 2] = fmaxf(mt[e / 2], s[j][e]);
            }
        float alpha[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const float mn = fmaxf(m[r], quad_max(mt[r]));
            alpha[r] = exp2f(m[r] - mn);  // 0 on the first tile (m = -inf, mn finite)
            m[r] = mn;
            l[r] = __fmul_rn(l[r], alpha[r]);  // rounded before the adds below, as the CPU twin
        }
#pragma unroll
        for (int j = 0; j < NB; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[j][e] = exp2f(s[j][e] - m[e / 2]);
                l[e / 2] += s[j][e];
            }
#pragma unroll
        for (int j = 0; j < DB; ++j) {
            o[j][0] *= alpha[0], o[j][1] *= alpha[0];
            o[j][2] *= alpha[1], o[j][3] *= alpha[1];
        }

        // O += P V, keys 16kk .. 16kk+15 per step. The A fragment is the S accumulators of blocks 2kk, 2kk + 1,
        // rounded to bf16. ldmatrix.x4.trans of V rows: lanes 0-15 keys 0-15 at columns 16d..16d+7 (b0, b1 of
        // column block 2d), lanes 16-31 at columns 16d+8.. (block 2d + 1).
#pragma unroll
        for (int kk = 0; kk < kBc / 16; ++kk) {
            const uint32_t pa[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]), pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                                    pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int d = 0; d < DB / 2; ++d) {
                uint32_t vb[4];
                ldmatrix<true>(vb, V + swz<DH>(16 * kk + lane % 16, 2 * d + lane / 16));
                const uint32_t b0[2] = {vb[0], vb[1]}, b1[2] = {vb[2], vb[3]};
                mma_m16n8k16_bf16(o[2 * d], pa, b0, o[2 * d]);
                mma_m16n8k16_bf16(o[2 * d + 1], pa, b1, o[2 * d + 1]);
            }
        }
        __syncthreads();  // every warp is done with stage st before iteration kt + 1 refills it
    }

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l[r] = quad_sum(l[r]);
        const int n = q0 + 16 * warp + g + 8 * r;
        if (n >= N) continue;
        uint16_t *dst = out + (int64_t{b} * N + n) * H * DH + h * DH + 2 * t;
#pragma unroll
        for (int j = 0; j < DB; ++j) {
            const uint32_t v = pack_bf16x2(o[j][2 * r] / l[r], o[j][2 * r + 1] / l[r]);
            *reinterpret_cast<uint32_t *>(dst + 8 * j) = v;
        }
        if (t == 0) lse[(int64_t{b} * H + h) * N + n] = (m[r] + log2f(l[r])) * kLn2;
    }
}

// ---- Backward (d4j_impl_attention_bf16_backward). Two kernels from one template, both launched per call:
//   KEYS = true:  one CTA per (64 keys, head, batch), warp w owning keys 16w..16w+15; query tiles of 64 (Q, dO,
//                 lse, D) stream through shared memory. Per query tile a warp computes S^T = K Q^T and
//                 dP^T = V dO^T (A = K and V fragments held in registers, B = Q / dO rows by ldmatrix as K in the
//                 forward), P^T = exp2(S^T c - lse log2 e), dS^T = P^T o (dP^T - D), then dV += bf16(P^T) dO and
//                 dK += bf16(dS^T) Q (A = the accumulators repacked as in the forward's P V, B = dO / Q by
//                 ldmatrix.trans).
//   KEYS = false: one CTA per (64 queries, head, batch), warp owning 16 queries; K/V tiles stream. S = Q K^T and
//                 dP = dO V^T as above, dS the same, dQ += bf16(dS) K (B = K by ldmatrix.trans).
// Why two kernels that both recompute S and dP (7 mma passes instead of 5): every sum then lives in one warp's
// accumulators, in a fixed order, with no dQ partials, workspace, atomics or cross-warp reduction, so the bits
// are reproducible by construction, and both kernels are the forward's loop with other operands. One CTA per
// (b, h) holding a whole head (N ~ 200) would save the recomputation but needs a cross-warp dQ sum in shared
// memory (fp32 64 KiB for N = 256) and B*H CTAs only. Unmeasured: neither the cost of the recomputation nor the
// alternative has been timed (no GPU here). ptxas for sm_80-90 (2026-12-03): the dK/dV kernel 244-246 registers a
// thread at Dh = 64 (2 CTAs of 4 warps per SM by registers), the dQ kernel 180; 140-181 at Dh = 32; no spills.
// D = rowsum(dO o out) is computed where it is needed (a row of 2*Dh bf16 per query tile and CTA) instead of in a
// pre-pass, so the call needs no workspace.
// Roundings (shared with the CPU twin): S, dP and D in fp32 (exact bf16 products); x = fl(S fl(scale log2 e)),
// L = fl(lse fl(log2 e)), p = exp2f(x - L) in fp32; dS = fl(p fl(dP - D)); P and dS rounded to bf16 (nearest
// even) before their mma; dV, dQ, dK summed in fp32; dQ and dK times scale in fp32; each output rounded once to
// bf16. Rows past N: tiles zero-filled, their p set to 0 (a zero key row has score 0, so its p = exp2(-L) would be
// inf for a row whose scores are all very negative, and inf times the zero row is NaN), never written.

__device__ __forceinline__ float bf16_bits_to_float(uint16_t h) { return __uint_as_float(uint32_t{h} << 16); }

// D_n = sum_d out_nd dO_nd in fp32, d in order (as the CPU twin; the products are exact).
template <int DH>
__device__ __forceinline__ float row_d(const uint16_t *o, const uint16_t *dout) {
    float s = 0.0f;
    for (int d = 0; d < DH; ++d) s += bf16_bits_to_float(o[d]) * bf16_bits_to_float(dout[d]);
    return s;
}

// Shared memory: two stages of (Y1, Y2) tiles (the prologue parks the CTA's own two tiles in stage 1), then lse
// and D of the streamed query tile (KEYS).
template <int DH>
constexpr size_t kBwdSmemBytes = sizeof(uint16_t) * 4 * kTileElems<DH> + sizeof(float) * 2 * kBc;

// dqkv [B, N, 3, H, DH]: KEYS writes the K and V slots, !KEYS the Q slot.
template <int DH, bool KEYS>
__device__ __forceinline__ void attn_bf16_bwd(const uint16_t *qkv, const uint16_t *out, const float *lse,
                                              const uint16_t *dout, int N, int H, float scale, float scale_log2,
                                              uint16_t *dqkv) {
    constexpr int KS = DH / 16, NB = kBc / 8, DB = DH / 8;
    D4J_DYNAMIC_SMEM(uint16_t, smem);
    const auto sY1 = [&](int st) { return smem + (2 * st) * kTileElems<DH>; };
    const auto sY2 = [&](int st) { return smem + (2 * st + 1) * kTileElems<DH>; };
    float *sL = reinterpret_cast<float *>(smem + 4 * kTileElems<DH>), *sD = sL + kBc;

    const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32, g = lane >> 2, t = lane % 4;
    const int r0 = static_cast<int>(blockIdx.x) * kBr, h = static_cast<int>(blockIdx.y),
              b = static_cast<int>(blockIdx.z);
    const int64_t stride = int64_t{3} * H * DH, ostride = int64_t{H} * DH;
    const uint16_t *q_src = qkv + int64_t{b} * N * stride + h * DH, *k_src = q_src + H * DH,
                   *v_src = k_src + H * DH;
    const uint16_t *o_src = out + int64_t{b} * N * ostride + h * DH,
                   *do_src = dout + int64_t{b} * N * ostride + h * DH;
    const float *lse_bh = lse + (int64_t{b} * H + h) * N;
    // Own rows: keys (K, V) or queries (Q, dO); streamed: the other pair.
    const uint16_t *x1 = KEYS ? k_src : q_src, *x2 = KEYS ? v_src : do_src;
    const uint16_t *y1 = KEYS ? q_src : k_src, *y2 = KEYS ? do_src : v_src;
    const int64_t x2s = KEYS ? stride : ostride, y2s = KEYS ? ostride : stride;
    const int tiles = (N + kBc - 1) / kBc;

    stage_tile<DH>(sY1(1), x1, stride, r0, N);
    stage_tile<DH>(sY2(1), x2, x2s, r0, N);
    stage_tile<DH>(sY1(0), y1, stride, 0, N);
    stage_tile<DH>(sY2(0), y2, y2s, 0, N);
    cp_async_commit();
    // !KEYS: L and D of this lane's rows g and g + 8 (the four lanes of a quad compute the same two).
    float rl[2] = {0.0f, 0.0f}, rd[2] = {0.0f, 0.0f};
    if (!KEYS) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int n = r0 + 16 * warp + g + 8 * r;
            if (n < N) {
                rl[r] = __fmul_rn(lse_bh[n], kLog2e);
                rd[r] = row_d<DH>(o_src + n * ostride, do_src + n * ostride);
            }
        }
    }
    cp_async_wait<0>();
    __syncthreads();
    uint32_t xf1[KS][4], xf2[KS][4];
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
        ldmatrix(xf1[ks], sY1(1) + swz<DH>(16 * warp + lane % 16, 2 * ks + lane / 16));
        ldmatrix(xf2[ks], sY2(1) + swz<DH>(16 * warp + lane % 16, 2 * ks + lane / 16));
    }
    __syncthreads();  // stage 1 is refilled in iteration 0

    float acc[DB][4], dv[DB][4];  // dK (KEYS) or dQ, before the scale; dV (KEYS)
#pragma unroll
    for (int j = 0; j < DB; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[j][e] = dv[j][e] = 0.0f;

    for (int kt = 0; kt < tiles; ++kt) {
        const int st = kt % 2, c0 = kt * kBc;
        if (kt + 1 < tiles) {
            // Stage st ^ 1 was last read in iteration kt - 1, before its closing barrier.
            stage_tile<DH>(sY1(st ^ 1), y1, stride, c0 + kBc, N);
            stage_tile<DH>(sY2(st ^ 1), y2, y2s, c0 + kBc, N);
            cp_async_commit();
        }
        if (KEYS && tid < kBc) {  // sL, sD were last read before the previous closing barrier
            const int n = c0 + tid;
            sL[tid] = n < N ? __fmul_rn(lse_bh[n], kLog2e) : 0.0f;
            sD[tid] = n < N ? row_d<DH>(o_src + n * ostride, do_src + n * ostride) : 0.0f;
        }
        if (kt + 1 < tiles)
            cp_async_wait<1>();
        else
            cp_async_wait<0>();
        __syncthreads();

        // S = X1 Y1^T and dP = X2 Y2^T; lane holds columns 8j + 2t, 8j + 2t + 1 of rows g, g + 8.
        float s[NB][4], dp[NB][4];
#pragma unroll
        for (int j = 0; j < NB; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[j][e] = dp[j][e] = 0.0f;
        const uint16_t *Y1 = sY1(st), *Y2 = sY2(st);
#pragma unroll
        for (int ks = 0; ks < KS; ++ks)
#pragma unroll
            for (int p = 0; p < NB / 2; ++p) {
                const int off = swz<DH>(16 * p + (lane / 16) * 8 + lane % 8, 2 * ks + (lane / 8) % 2);
                uint32_t yb[4], zb[4];
                ldmatrix(yb, Y1 + off);
                ldmatrix(zb, Y2 + off);
                const uint32_t y0[2] = {yb[0], yb[1]}, y1b[2] = {yb[2], yb[3]};
                const uint32_t z0[2] = {zb[0], zb[1]}, z1[2] = {zb[2], zb[3]};
                mma_m16n8k16_bf16(s[2 * p], xf1[ks], y0, s[2 * p]);
                mma_m16n8k16_bf16(s[2 * p + 1], xf1[ks], y1b, s[2 * p + 1]);
                mma_m16n8k16_bf16(dp[2 * p], xf2[ks], z0, dp[2 * p]);
                mma_m16n8k16_bf16(dp[2 * p + 1], xf2[ks], z1, dp[2 * p + 1]);
            }

        // P and dS, packed to bf16 at once into the A fragments of the next mma (pa, da[kk]: columns 16kk..16kk+15,
        // the forward's P V repacking); fewer live registers than keeping them in fp32 (ptxas spilled otherwise).
        // KEYS: the column is a query (its L, D from shared memory); else a key.
        uint32_t pa[NB / 2][4], da[NB / 2][4];
#pragma unroll
        for (int j = 0; j < NB; ++j)
#pragma unroll
            for (int hf = 0; hf < 2; ++hf) {
                float pv[2], dsv[2];
#pragma unroll
                for (int e2 = 0; e2 < 2; ++e2) {
                    const int col = 8 * j + 2 * t + e2, e = 2 * hf + e2;
                    const float L = KEYS ? sL[col] : rl[hf], D = KEYS ? sD[col] : rd[hf];
                    pv[e2] = c0 + col < N ? exp2f(__fmul_rn(s[j][e], scale_log2) - L) : 0.0f;
                    dsv[e2] = __fmul_rn(pv[e2], dp[j][e] - D);
                }
                pa[j / 2][2 * (j % 2) + hf] = pack_bf16x2(pv[0], pv[1]);
                da[j / 2][2 * (j % 2) + hf] = pack_bf16x2(dsv[0], dsv[1]);
            }

        // acc += bf16(dS) Y1 and (KEYS) dV += bf16(P) Y2, reduction over the 64 streamed rows, 16 per step.
#pragma unroll
        for (int kk = 0; kk < kBc / 16; ++kk) {
#pragma unroll
            for (int d = 0; d < DB / 2; ++d) {
                const int off = swz<DH>(16 * kk + lane % 16, 2 * d + lane / 16);
                uint32_t yb[4];
                ldmatrix<true>(yb, Y1 + off);
                const uint32_t b0[2] = {yb[0], yb[1]}, b1[2] = {yb[2], yb[3]};
                mma_m16n8k16_bf16(acc[2 * d], da[kk], b0, acc[2 * d]);
                mma_m16n8k16_bf16(acc[2 * d + 1], da[kk], b1, acc[2 * d + 1]);
                if (KEYS) {
                    uint32_t zb[4];
                    ldmatrix<true>(zb, Y2 + off);
                    const uint32_t c0b[2] = {zb[0], zb[1]}, c1b[2] = {zb[2], zb[3]};
                    mma_m16n8k16_bf16(dv[2 * d], pa[kk], c0b, dv[2 * d]);
                    mma_m16n8k16_bf16(dv[2 * d + 1], pa[kk], c1b, dv[2 * d + 1]);
                }
            }
        }
        __syncthreads();  // every warp is done with stage st (and sL, sD) before they are refilled
    }

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int n = r0 + 16 * warp + g + 8 * r;
        if (n >= N) continue;  // zero-filled rows past N: never written
        uint16_t *row = dqkv + (int64_t{b} * N + n) * stride + h * DH + 2 * t;
#pragma unroll
        for (int j = 0; j < DB; ++j) {
            *reinterpret_cast<uint32_t *>(row + (KEYS ? H * DH : 0) + 8 * j) =
                pack_bf16x2(__fmul_rn(acc[j][2 * r], scale), __fmul_rn(acc[j][2 * r + 1], scale));
            if (KEYS)
                *reinterpret_cast<uint32_t *>(row + 2 * H * DH + 8 * j) = pack_bf16x2(dv[j][2 * r], dv[j][2 * r + 1]);
        }
    }
}

// One kernel name per direction (a template argument list with a comma cannot pass through D4J_LAUNCH).
template <int DH>
__global__ void __launch_bounds__(kThreads) attn_bf16_bwd_dkdv(const uint16_t *qkv, const uint16_t *out,
                                                               const float *lse, const uint16_t *dout, int N, int H,
                                                               float scale, float scale_log2, uint16_t *dqkv) {
    attn_bf16_bwd<DH, true>(qkv, out, lse, dout, N, H, scale, scale_log2, dqkv);
}
template <int DH>
__global__ void __launch_bounds__(kThreads) attn_bf16_bwd_dq(const uint16_t *qkv, const uint16_t *out,
                                                             const float *lse, const uint16_t *dout, int N, int H,
                                                             float scale, float scale_log2, uint16_t *dqkv) {
    attn_bf16_bwd<DH, false>(qkv, out, lse, dout, N, H, scale, scale_log2, dqkv);
}

bool aligned16(const void *p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

D4J_IMPL_API int d4j_impl_attention_bf16_forward(void *stream, const uint16_t *qkv, int64_t B, int64_t N, int64_t H,
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
    if (B > 65535 || H > 65535) return fail("attention_bf16 forward: B and H must be at most 65535 (CUDA grid)");
    if (N > std::numeric_limits<int>::max() - kBr) return fail("attention_bf16 forward: N exceeds 2^31 - 65");
    if (!(scale > -INFINITY && scale < INFINITY)) return fail("attention_bf16 forward: scale must be finite");
    if (!aligned16(qkv) || !aligned16(out))
        return fail("attention_bf16 forward: qkv and out must be 16-byte aligned");
    const int n = static_cast<int>(N), h = static_cast<int>(H);
    const dim3 grid(static_cast<unsigned>((N + kBr - 1) / kBr), static_cast<unsigned>(H), static_cast<unsigned>(B));
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    if (Dh == 32)
        D4J_LAUNCH(attn_bf16_fwd<32>, grid, dim3(kThreads), kSmemBytes<32>, s, qkv, n, h, scale * kLog2e, out, lse);
    else
        D4J_LAUNCH(attn_bf16_fwd<64>, grid, dim3(kThreads), kSmemBytes<64>, s, qkv, n, h, scale * kLog2e, out, lse);
    return check_launch("attn_bf16_fwd");
}


D4J_IMPL_API int d4j_impl_attention_bf16_backward(void *stream, const uint16_t *qkv, const uint16_t *out,
                                                  const float *lse, const uint16_t *dout, int64_t B, int64_t N,
                                                  int64_t H, int64_t Dh, float scale, uint16_t *dqkv) {
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
    if (B > 65535 || H > 65535) return fail("attention_bf16 backward: B and H must be at most 65535 (CUDA grid)");
    if (N > std::numeric_limits<int>::max() - kBr) return fail("attention_bf16 backward: N exceeds 2^31 - 65");
    if (!(scale > -INFINITY && scale < INFINITY)) return fail("attention_bf16 backward: scale must be finite");
    if (!aligned16(qkv) || !aligned16(out) || !aligned16(dout) || !aligned16(dqkv))
        return fail("attention_bf16 backward: qkv, out, dout and dqkv must be 16-byte aligned");
    const int n = static_cast<int>(N), h = static_cast<int>(H);
    const dim3 grid(static_cast<unsigned>((N + kBr - 1) / kBr), static_cast<unsigned>(H), static_cast<unsigned>(B));
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    const float sl = scale * kLog2e;
    if (Dh == 32) {
        D4J_LAUNCH(attn_bf16_bwd_dkdv<32>, grid, dim3(kThreads), kBwdSmemBytes<32>, s, qkv, out, lse, dout, n, h,
                   scale, sl, dqkv);
        D4J_LAUNCH(attn_bf16_bwd_dq<32>, grid, dim3(kThreads), kBwdSmemBytes<32>, s, qkv, out, lse, dout, n, h,
                   scale, sl, dqkv);
    } else {
        D4J_LAUNCH(attn_bf16_bwd_dkdv<64>, grid, dim3(kThreads), kBwdSmemBytes<64>, s, qkv, out, lse, dout, n, h,
                   scale, sl, dqkv);
        D4J_LAUNCH(attn_bf16_bwd_dq<64>, grid, dim3(kThreads), kBwdSmemBytes<64>, s, qkv, out, lse, dout, n, h,
                   scale, sl, dqkv);
    }
    return check_launch("attn_bf16_bwd");
}
