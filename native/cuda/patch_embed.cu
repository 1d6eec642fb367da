// Patch embedding on the GPU (distill4j_impl.h): a convolution with kernel = stride = P is a GEMM over the patch
// matrix A[M = B*N, K = Cin*P*P], whose row m = (b, py, px) and column k = (c, ky, kx) is the pixel
// images[b, c, py*P + ky, px*P + kx]. A is never materialised: every kernel gathers its tiles of A straight from
// the image (im2col in the load stage) or scatters them back (col2im, dimages).
//
//   forward   tokens_patch[M, D] = A · weightᵀ                       patch_embed_fwd (+ bias, pos, placement)
//   backward  dweight[D, K]    += dtokens_patchᵀ · A                   patch_embed_dw (split over M) + _reduce
//             dbias, dpos, dcls, ddist += fixed-order sums             patch_embed_dw (dbias partials) + _reduce
//             dimages[B,Cin,H,W] = col2im(dtokens_patch · weight)      patch_embed_dimg
//
// All three GEMMs share one register-tiled fp32 main loop: a 64 x 64 block tile, 256 threads with 4 x 4 outputs
// each, the reduction staged through shared memory 16 at a time, double-buffered (the next tile's global loads are
// in flight in registers while the current tile's 256 FMAs per thread run; one barrier per tile).
//
// Determinism: no float atomics anywhere. The weight gradient reduces over M = B*N rows (6272 at the bench shape)
// into only D*K outputs, too few tiles to fill the GPU, so M is split into S fixed chunks (S depends on the shape
// alone, never on the device): block (tile, s) writes its partial into the workspace, and patch_embed_reduce sums
// the S partials in order s = 0..S-1 and adds the result into dweight. dbias rides along in the same way (the column
// sums of the dtokens tiles the dweight blocks already stage). dpos/dcls/ddist are per-element sums over the batch
// in order b = 0..B-1. dimages needs no reduction across blocks: kernel = stride, so every pixel belongs to exactly
// one patch and is written (=) once. Same inputs, same bits, on every run (of a given build on a given GPU).
#include "common.cuh"
#include "distill4j_impl.h"
#include "launch.cuh"

#include <algorithm>
#include <cstdint>
#include <limits>

namespace {

using namespace d4j::cuda;

constexpr int kTile = 64;             // block tile: 64 x 64 outputs
constexpr int kBK = 16;               // reduction slice staged per barrier
constexpr int kLd = kTile + 4;        // smem row: +4 floats keeps float4 alignment, transposed stores 2-way at most
constexpr int kThreads = 256;         // 16 x 16 threads, 4 x 4 outputs each
constexpr int kMinBlocks = 4;         // per SM: caps the GEMM kernels at 64 registers (they need no more, no spills)
constexpr int kMaxPrefix = 2;         // class + distillation: the workspace query does not know the prefix
constexpr int kMinChunk = 128;        // dweight split: rows of M per chunk at least...
constexpr int kTargetBlocks = 384;    // ...and about this many blocks (3 per SM on 128-132 SM parts)
using stage_tile = float[kBK][kLd];   // one operand's slice: [reduction index][output row or column]
constexpr size_t kSmemBytes = 4 * sizeof(stage_tile);  // A and B, two buffers each: 17 KiB

// Sizes as 32-bit ints: make_plan() checks that every element index of every tensor (and of the workspace) fits,
// which keeps address arithmetic and registers small.
struct geom {
    int B, Cin, H, W, P, D;
    int Hp, Wp, N, K, M;  // patches per column/row, per image, patch length, patch rows of the batch
    int prefix, T;        // prefix tokens, and rows per image in tokens: T = prefix + N
};

// Pixel k = (c, ky, kx) of a patch, walked forward `step` columns at a time without divisions.
struct col_cursor {
    int c, ky, kx;
    __device__ __forceinline__ void init(int k, int P) {
        c = k / (P * P);
        ky = k / P - c * P;
        kx = k - (c * P + ky) * P;
    }
    __device__ __forceinline__ void advance(int step, int P) {
        kx += step;
        while (kx >= P) kx -= P, ky += 1;
        while (ky >= P) ky -= P, c += 1;
    }
    // Offset of the pixel from its patch's top-left corner in channel 0 (valid while c < Cin).
    __device__ __forceinline__ int offset(const geom &g) const { return (c * g.H + ky) * g.W + kx; }
};

// Patch row m = (b, py, px), walked forward the same way.
struct row_cursor {
    int b, py, px;
    __device__ __forceinline__ void init(int m, const geom &g) {
        b = m / g.N;
        const int n = m - b * g.N;
        py = n / g.Wp;
        px = n - py * g.Wp;
    }
    __device__ __forceinline__ void advance(int step, const geom &g) {
        px += step;
        while (px >= g.Wp) px -= g.Wp, py += 1;
        while (py >= g.Hp) py -= g.Hp, b += 1;
    }
    __device__ __forceinline__ int image_offset(const geom &g) const {
        return (b * g.Cin * g.H + py * g.P) * g.W + px * g.P;
    }
    __device__ __forceinline__ int token_row(const geom &g) const { return b * g.T + g.prefix + py * g.Wp + px; }
};

// acc[i][j] += sum over the reduction of As[r][ty*4 + i] * Bs[r][tx*4 + j], tile after tile. `st` is the kernel's
// loader: fetch() reads the next slice of both operands from global memory into registers (zeros out of bounds),
// stash() writes them into the given buffers. on_tile(As) may read the staged A slice (dbias uses it).
template <class Stage, class OnTile>
__device__ __forceinline__ void gemm_tiles(Stage &st, int ntiles, stage_tile *As, stage_tile *Bs,
                                           float (&acc)[4][4], OnTile on_tile) {
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    st.fetch();
    st.stash(As[0], Bs[0]);
    __syncthreads();  // slice 0 staged by every thread before anyone reads it
    for (int t = 0; t < ntiles; ++t) {
        const int cur = t & 1;
        if (t + 1 < ntiles) st.fetch();  // in flight during the FMAs below
        on_tile(As[cur]);
#pragma unroll
        for (int r = 0; r < kBK; ++r) {
            const float4 a = *reinterpret_cast<const float4 *>(&As[cur][r][ty * 4]);
            const float4 b = *reinterpret_cast<const float4 *>(&Bs[cur][r][tx * 4]);
            const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
        }
        if (t + 1 < ntiles) st.stash(As[cur ^ 1], Bs[cur ^ 1]);
        // One barrier serves both hazards: the slice just stashed is complete before the next iteration reads it,
        // and every thread is done reading `cur` before the next iteration's stash overwrites it.
        __syncthreads();
    }
}

// ---- Forward: tokens[b, prefix + n, d] = sum_k A[m, k] weight[d, k] + bias[d] + pos[prefix + n, d].
// Both operands are read along k (contiguous in the weight, runs of P pixels in the image) and stored transposed,
// [k][row], so that the main loop reads 4 consecutive rows as one float4. Thread t loads column k0 + t % 16 of
// rows t / 16 + 16 i, i = 0..3: a warp reads two adjacent patches' 16-pixel runs (128 contiguous bytes at P = 16).
struct fwd_stage {
    geom g;
    const float *images, *weight;
    int a_row[4];  // image offset of this thread's patch rows; -1 past M
    int b_row[4];  // weight offset of this thread's weight rows (d * K); -1 past D
    int k;         // the column this thread loads next
    col_cursor kc;
    float a[4], b[4];

    __device__ __forceinline__ void fetch() {
        const bool kv = k < g.K;
        const int koff = kv ? kc.offset(g) : 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            a[i] = kv && a_row[i] >= 0 ? __ldg(images + a_row[i] + koff) : 0.0f;
            b[i] = kv && b_row[i] >= 0 ? __ldg(weight + b_row[i] + k) : 0.0f;
        }
        k += kBK;
        kc.advance(kBK, g.P);
    }
    __device__ __forceinline__ void stash(stage_tile &As, stage_tile &Bs) const {
        const int kk = threadIdx.x % kBK, r = threadIdx.x / kBK;
#pragma unroll
        for (int i = 0; i < 4; ++i) As[kk][r + 16 * i] = a[i], Bs[kk][r + 16 * i] = b[i];
    }
};

// Grid (ceil(M / 64), ceil(D / 64)). The blocks of the first row also write the prefix rows of their 64 columns,
// so the whole token sequence comes from one launch. vec4: D % 4 == 0 and tokens, bias, pos 16-byte aligned.
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    patch_embed_fwd(geom g, const float *images, const float *weight, const float *bias, const float *pos,
                    const float *cls, const float *dist, float *tokens, int vec4) {
    D4J_DYNAMIC_SMEM(float, smem);
    stage_tile *As = reinterpret_cast<stage_tile *>(smem), *Bs = As + 2;
    const int tid = threadIdx.x, m0 = blockIdx.x * kTile, n0 = blockIdx.y * kTile;

    if (blockIdx.x == 0) {
        for (int i = tid; i < g.prefix * kTile; i += kThreads) {
            const int p = i / kTile, d = n0 + i % kTile;
            if (d >= g.D) continue;
            const float v = (p == 0 ? cls : dist)[d] + pos[p * g.D + d];
            for (int b = 0; b < g.B; ++b) tokens[(b * g.T + p) * g.D + d] = v;
        }
    }

    fwd_stage st;
    st.g = g;
    st.images = images;
    st.weight = weight;
    st.k = tid % kBK;
    st.kc.init(st.k, g.P);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + tid / kBK + 16 * i, n = n0 + tid / kBK + 16 * i;
        row_cursor rc;
        rc.init(m < g.M ? m : 0, g);
        st.a_row[i] = m < g.M ? rc.image_offset(g) : -1;
        st.b_row[i] = n < g.D ? n * g.K : -1;
    }
    float acc[4][4] = {};
    gemm_tiles(st, (g.K + kBK - 1) / kBK, As, Bs, acc, [](const stage_tile &) {});

    // Epilogue: bias + position embedding, stored at token row b * T + prefix + n.
    const int tx = tid % 16, ty = tid / 16, d = n0 + tx * 4;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty * 4 + i;
        if (m >= g.M) continue;
        const int b = m / g.N, n = m - b * g.N;
        float *out = tokens + (b * g.T + g.prefix + n) * g.D;
        const float *pr = pos + (g.prefix + n) * g.D;
        if (vec4 && d < g.D) {  // D % 4 == 0: all four columns are in range
            const float4 bi = *reinterpret_cast<const float4 *>(bias + d);
            const float4 po = *reinterpret_cast<const float4 *>(pr + d);
            *reinterpret_cast<float4 *>(out + d) =
                make_float4(acc[i][0] + bi.x + po.x, acc[i][1] + bi.y + po.y, acc[i][2] + bi.z + po.z,
                            acc[i][3] + bi.w + po.w);
        } else if (!vec4) {
#pragma unroll
            for (int j = 0; j < 4; ++j)
                if (d + j < g.D) out[d + j] = acc[i][j] + bias[d + j] + pr[d + j];
        }
    }
}

// ---- Weight gradient, one chunk of M: part[s][d][k] = sum over m in chunk s of G[m, d] A[m, k], with G the patch
// rows of dtokens. Here the reduction runs over m, so both operands are read along their output dimension (d in a
// token row, k in runs of P pixels) and stored as they come, [m][d] and [m][k]. Thread t loads column t % 64 of
// rows t / 64 + 4 i of each 16-row slice; the four rows are tracked by cursors (no divisions in the loop).
struct dw_stage {
    geom g;
    const float *dtokens, *images;
    row_cursor rc[4];
    int m, m_end;  // m: this thread's first row in the next slice (rows m + 4 i); the chunk ends at m_end
    int dcol;      // dtokens column d0 + t % 64
    int koff;      // pixel offset of column k0 + t % 64 within its patch; -1 past K
    float a[4], b[4];

    __device__ __forceinline__ void fetch() {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const bool mv = m + 4 * i < m_end;
            a[i] = mv && dcol < g.D ? __ldg(dtokens + rc[i].token_row(g) * g.D + dcol) : 0.0f;
            b[i] = mv && koff >= 0 ? __ldg(images + rc[i].image_offset(g) + koff) : 0.0f;
            rc[i].advance(kBK, g);
        }
        m += kBK;
    }
    __device__ __forceinline__ void stash(stage_tile &As, stage_tile &Bs) const {
        const int c = threadIdx.x % kTile, r = threadIdx.x / kTile;
#pragma unroll
        for (int i = 0; i < 4; ++i) As[r + 4 * i][c] = a[i], Bs[r + 4 * i][c] = b[i];
    }
};

// Grid (ceil(K / 64), ceil(D / 64), S); chunk s covers rows [s * chunk, min(M, (s + 1) * chunk)). Blocks of the
// first k column also sum their staged dtokens slices per column: the dbias partial of the chunk.
// Workspace: part [S][D][K], then bias_part [S][D].
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    patch_embed_dw(geom g, int chunk, const float *images, const float *dtokens, float *part, float *bias_part) {
    D4J_DYNAMIC_SMEM(float, smem);
    stage_tile *As = reinterpret_cast<stage_tile *>(smem), *Bs = As + 2;
    const int tid = threadIdx.x, k0 = blockIdx.x * kTile, d0 = blockIdx.y * kTile, s = blockIdx.z;
    const int m_begin = s * chunk, m_end = min(g.M, m_begin + chunk);

    dw_stage st;
    st.g = g;
    st.dtokens = dtokens;
    st.images = images;
    st.m = m_begin + tid / kTile;
    st.m_end = m_end;
    st.dcol = d0 + tid % kTile;
    const int k = k0 + tid % kTile;
    col_cursor kc;
    kc.init(k < g.K ? k : 0, g.P);
    st.koff = k < g.K ? kc.offset(g) : -1;
#pragma unroll
    for (int i = 0; i < 4; ++i) st.rc[i].init(min(st.m + 4 * i, g.M - 1), g);  // rows past M are never loaded

    const bool bias_block = blockIdx.x == 0 && tid < kTile;
    float bsum = 0.0f, acc[4][4] = {};
    gemm_tiles(st, (m_end - m_begin + kBK - 1) / kBK, As, Bs, acc, [&](const stage_tile &G) {
        if (bias_block)
#pragma unroll
            for (int r = 0; r < kBK; ++r) bsum += G[r][tid];  // rows in order: the same sum every run
    });

    const int tx = tid % 16, ty = tid / 16;
    float *out = part + s * g.D * g.K;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int d = d0 + ty * 4 + i;
        if (d >= g.D) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j)
            if (k0 + tx * 4 + j < g.K) out[d * g.K + k0 + tx * 4 + j] = acc[i][j];
    }
    if (bias_block && d0 + tid < g.D) bias_part[s * g.D + d0 + tid] = bsum;
}

// Finishes the parameter gradients, one output element per thread (grid-stride), each a sum in fixed order:
//   [0, D*K)            dweight += sum_s part[s]          [D*K, D*K + D)   dbias += sum_s bias_part[s]
//   then T*D elements   dpos[r, d] += sum_b dtokens[b, r, d]; rows r < prefix add the same sum into dcls/ddist.
__global__ void __launch_bounds__(kThreads)
    patch_embed_reduce(geom g, int S, const float *part, const float *bias_part, const float *dtokens, float *dweight,
                       float *dbias, float *dpos, float *dcls, float *ddist) {
    const int nw = g.D * g.K;
    const int64_t total = int64_t{nw} + g.D + int64_t{g.T} * g.D;  // each part < 2^31, the sum maybe not
    const int64_t stride = int64_t{gridDim.x} * kThreads;
    for (int64_t idx = int64_t{blockIdx.x} * kThreads + threadIdx.x; idx < total; idx += stride) {
        float sum = 0.0f;
        if (idx >= nw + g.D) {
            const int j = static_cast<int>(idx - nw - g.D), r = j / g.D;
            for (int b = 0; b < g.B; ++b) sum += dtokens[b * g.T * g.D + j];
            dpos[j] += sum;
            if (r < g.prefix) (r == 0 ? dcls : ddist)[j - r * g.D] += sum;
            continue;
        }
        const int i = static_cast<int>(idx);
        if (i < nw) {
            for (int s = 0; s < S; ++s) sum += part[s * nw + i];
            dweight[i] += sum;
        } else {
            const int d = i - nw;
            for (int s = 0; s < S; ++s) sum += bias_part[s * g.D + d];
            dbias[d] += sum;
        }
    }
}

// ---- Image gradient: dA[m, k] = sum_d G[m, d] weight[d, k], scattered to dimages (col2im; no overlaps since
// kernel = stride, so a plain store). G is read along d and stored transposed, [d][m], like A in the forward;
// the weight is read along k and stored as it comes, [d][k].
struct dimg_stage {
    geom g;
    const float *dtokens, *weight;
    int g_row[4];  // dtokens offset of this thread's patch rows (token_row * D); -1 past M
    int d;         // the dtokens column this thread loads next: d0 + t % 16
    int wd;        // the weight row this thread loads next (rows wd + 4 i): d0 + t / 64
    int wk;        // weight column k0 + t % 64; -1 past K
    float a[4], b[4];

    __device__ __forceinline__ void fetch() {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            a[i] = g_row[i] >= 0 && d < g.D ? __ldg(dtokens + g_row[i] + d) : 0.0f;
            b[i] = wk >= 0 && wd + 4 * i < g.D ? __ldg(weight + (wd + 4 * i) * g.K + wk) : 0.0f;
        }
        d += kBK;
        wd += kBK;
    }
    __device__ __forceinline__ void stash(stage_tile &As, stage_tile &Bs) const {
        const int t = threadIdx.x;
#pragma unroll
        for (int i = 0; i < 4; ++i) As[t % kBK][t / kBK + 16 * i] = a[i], Bs[t / kTile + 4 * i][t % kTile] = b[i];
    }
};

// Grid (ceil(M / 64), ceil(K / 64)).
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    patch_embed_dimg(geom g, const float *dtokens, const float *weight, float *dimages) {
    D4J_DYNAMIC_SMEM(float, smem);
    stage_tile *As = reinterpret_cast<stage_tile *>(smem), *Bs = As + 2;
    const int tid = threadIdx.x, m0 = blockIdx.x * kTile, k0 = blockIdx.y * kTile;

    dimg_stage st;
    st.g = g;
    st.dtokens = dtokens;
    st.weight = weight;
    st.d = tid % kBK;
    st.wd = tid / kTile;
    st.wk = k0 + tid % kTile < g.K ? k0 + tid % kTile : -1;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + tid / kBK + 16 * i;
        row_cursor rc;
        rc.init(m < g.M ? m : 0, g);
        st.g_row[i] = m < g.M ? rc.token_row(g) * g.D : -1;
    }
    float acc[4][4] = {};
    gemm_tiles(st, (g.D + kBK - 1) / kBK, As, Bs, acc, [](const stage_tile &) {});

    const int tx = tid % 16, ty = tid / 16, k = k0 + tx * 4;
    int koff[4];
    col_cursor kc;
    kc.init(k < g.K ? k : 0, g.P);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        koff[j] = k + j < g.K ? kc.offset(g) : -1;
        kc.advance(1, g.P);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty * 4 + i;
        if (m >= g.M) continue;
        row_cursor rc;
        rc.init(m, g);
        float *out = dimages + rc.image_offset(g);
#pragma unroll
        for (int j = 0; j < 4; ++j)
            if (koff[j] >= 0) out[koff[j]] = acc[i][j];
    }
}

// ---- Host side.

struct plan {
    geom g;
    int S, chunk;        // dweight split of M
    int64_t ws_floats;   // S * (D * K + D)
};

constexpr int64_t kIntMax = std::numeric_limits<int>::max();

// a * b when it stays below 2^31 (a, b >= 0), else -1.
int64_t mul_small(int64_t a, int64_t b) { return a != 0 && b > kIntMax / a ? -1 : a * b; }
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Checks the shape and derives everything the launches need. The split S depends on the shape only (the workspace
// query has nothing else), so the workspace size and the summation order are the same on every device.
const char *make_plan(int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t P, int64_t D, int prefix, plan &p) {
    if (B <= 0 || Cin <= 0 || H <= 0 || W <= 0 || P <= 0 || D <= 0)
        return "patch_embed: every size (B, Cin, H, W, P, D) must be positive";
    if (H % P != 0 || W % P != 0) return "patch_embed: H and W must be multiples of the patch size P";
    if (B > kIntMax || Cin > kIntMax || H > kIntMax || W > kIntMax || P > kIntMax || D > kIntMax)
        return "patch_embed: a size exceeds 2^31";
    const int64_t N = (H / P) * (W / P), K = mul_small(Cin, mul_small(P, P));
    const int64_t images = mul_small(B, mul_small(Cin, mul_small(H, W)));
    const int64_t tokens = mul_small(B, mul_small(N + kMaxPrefix, D)), weights = mul_small(D, K);
    // The CUDA kernels index with 32-bit ints: every tensor (and the workspace, below) stays under 2^31 elements.
    if (K < 0 || images < 0 || tokens < 0 || weights < 0 || weights + D > kIntMax)
        return "patch_embed: a tensor exceeds 2^31 elements (the CUDA kernels index with 32-bit ints)";
    if (ceil_div(D, kTile) > 65535 || ceil_div(K, kTile) > 65535)
        return "patch_embed: D or Cin*P*P exceeds the CUDA grid (65535 tiles of 64)";
    const int64_t M = B * N;
    int64_t S = std::max<int64_t>(1, std::min(ceil_div(kTargetBlocks, ceil_div(D, kTile) * ceil_div(K, kTile)),
                                              ceil_div(M, kMinChunk)));
    const int64_t chunk = ceil_div(ceil_div(M, S), kBK) * kBK;
    S = ceil_div(M, chunk);
    if (mul_small(S, weights + D) < 0)
        return "patch_embed: the weight-gradient workspace exceeds 2^31 elements";
    p.g = geom{static_cast<int>(B), static_cast<int>(Cin), static_cast<int>(H), static_cast<int>(W),
               static_cast<int>(P), static_cast<int>(D), static_cast<int>(H / P), static_cast<int>(W / P),
               static_cast<int>(N), static_cast<int>(K), static_cast<int>(M), prefix, static_cast<int>(N + prefix)};
    p.S = static_cast<int>(S);
    p.chunk = static_cast<int>(chunk);
    p.ws_floats = S * (weights + D);
    return nullptr;
}

bool aligned16(const void *p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Enough blocks of the grid-stride reduce kernel to fill the device a few times over, no more.
unsigned reduce_blocks(int64_t total) {
    int device = 0, sms = 1;
    if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) !=
                                                     cudaSuccess)
        sms = 1;
    return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(ceil_div(total, kThreads), 8LL * sms)));
}

}  // namespace

D4J_IMPL_API int64_t d4j_impl_patch_embed_workspace(int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t P,
                                                    int64_t D) {
    plan p;
    if (const char *why = make_plan(B, Cin, H, W, P, D, kMaxPrefix, p)) return -fail(why);
    return static_cast<int64_t>(sizeof(float)) * p.ws_floats;
}

D4J_IMPL_API int d4j_impl_patch_embed_forward(void *stream_ptr, const float *images, int64_t B, int64_t Cin,
                                              int64_t H, int64_t W, int64_t P, int64_t D, const float *weight,
                                              const float *bias, const float *pos, const float *cls, const float *dist,
                                              float *tokens, void *workspace) {
    (void)workspace;  // the forward needs none
    if (images == nullptr || weight == nullptr || bias == nullptr || pos == nullptr || tokens == nullptr)
        return fail("patch_embed forward: images, weight, bias, pos and tokens must not be null");
    if (dist != nullptr && cls == nullptr) return fail("patch_embed forward: a distillation token needs a class token");
    plan p;
    if (const char *why = make_plan(B, Cin, H, W, P, D, (cls != nullptr) + (dist != nullptr), p)) return fail(why);
    const geom &g = p.g;
    const int vec4 = g.D % 4 == 0 && aligned16(tokens) && aligned16(bias) && aligned16(pos);
    const dim3 grid(static_cast<unsigned>(ceil_div(g.M, kTile)), static_cast<unsigned>(ceil_div(g.D, kTile)));
    D4J_LAUNCH(patch_embed_fwd, grid, dim3(kThreads), kSmemBytes, static_cast<cudaStream_t>(stream_ptr), g, images,
               weight, bias, pos, cls, dist, tokens, vec4);
    return check_launch("patch_embed_fwd");
}

D4J_IMPL_API int d4j_impl_patch_embed_backward(void *stream_ptr, const float *images, int64_t B, int64_t Cin,
                                               int64_t H, int64_t W, int64_t P, int64_t D, const float *weight,
                                               const float *dtokens, float *dweight, float *dbias, float *dpos,
                                               float *dcls, float *ddist, float *dimages, void *workspace) {
    if (images == nullptr || weight == nullptr || dtokens == nullptr || dweight == nullptr || dbias == nullptr ||
        dpos == nullptr || workspace == nullptr)
        return fail(
            "patch_embed backward: images, weight, dtokens, dweight, dbias, dpos and workspace must not be null");
    if (ddist != nullptr && dcls == nullptr)
        return fail("patch_embed backward: a distillation-token gradient needs a class-token gradient");
    plan p;
    if (const char *why = make_plan(B, Cin, H, W, P, D, (dcls != nullptr) + (ddist != nullptr), p)) return fail(why);
    const geom &g = p.g;
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    float *part = static_cast<float *>(workspace), *bias_part = part + static_cast<int64_t>(p.S) * g.D * g.K;

    const dim3 grid_dw(static_cast<unsigned>(ceil_div(g.K, kTile)), static_cast<unsigned>(ceil_div(g.D, kTile)),
                       static_cast<unsigned>(p.S));
    D4J_LAUNCH(patch_embed_dw, grid_dw, dim3(kThreads), kSmemBytes, stream, g, p.chunk, images, dtokens, part,
               bias_part);
    if (check_launch("patch_embed_dw") != 0) return 1;
    const int64_t total = static_cast<int64_t>(g.D) * g.K + g.D + static_cast<int64_t>(g.T) * g.D;
    D4J_LAUNCH(patch_embed_reduce, dim3(reduce_blocks(total)), dim3(kThreads), 0, stream, g, p.S, part, bias_part,
               dtokens, dweight, dbias, dpos, dcls, ddist);
    if (check_launch("patch_embed_reduce") != 0) return 1;
    if (dimages == nullptr) return 0;
    const dim3 grid_dimg(static_cast<unsigned>(ceil_div(g.M, kTile)), static_cast<unsigned>(ceil_div(g.K, kTile)));
    D4J_LAUNCH(patch_embed_dimg, grid_dimg, dim3(kThreads), kSmemBytes, stream, g, dtokens, weight, dimages);
    return check_launch("patch_embed_dimg");
}
