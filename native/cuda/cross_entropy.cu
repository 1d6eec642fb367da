// Fused softmax + cross-entropy on the GPU (llm.c's fused classifier): row loss and d loss / d logits in one kernel.
// A group of threads owns a row: a warp when the row is short (8 rows per block), a 512-thread block otherwise.
// Sweep 1 reads the row once with an online max/sum; sweep 2 reads it again (from L2: the group just touched it)
// to write the gradient with a streaming store and to sum x - max for label smoothing (after the max is known, so
// logits of +-1e4 lose nothing to cancellation). The scalar loss is the mean of the [B] row losses in a second,
// one-block kernel: fixed order, so the loss is deterministic (atomics would not be). Probability targets (Mixup,
// CutMix) take ce_soft_rows, the same grouping with the target row read beside the logits. argmax: a warp per row.
#include "common.cuh"
#include "distill4j_impl.h"
#include "launch.cuh"
#include "reduce.cuh"

#include <cstdint>

namespace {

using namespace d4j::cuda;

constexpr int kWarpRowsBlock = 256;  // warp-per-row launches: 8 rows per block
constexpr int kBlockRow = 512;       // block-per-row launches
constexpr int64_t kWarpRowMaxC = 2048;

struct ce_args {
    const float *logits;
    const int32_t *labels;  // [B] class indices (ce_rows)
    const float *targets;   // [B, C] distributions (ce_soft_rows)
    int64_t B, C;
    float eps, loss_scale, k;  // k = loss_scale / B, the gradient's factor
    float *row_loss, *grad;
};

template <int GROUP, bool VEC4>
__global__ void __launch_bounds__(GROUP == 32 ? kWarpRowsBlock : GROUP) ce_rows(ce_args a) {
    D4J_STATIC_SMEM(float, scratch, [64]);
    const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / GROUP) + threadIdx.x / GROUP;
    if (row >= a.B) return;  // whole warps leave together (warp-per-row only: the block grid is exact)
    const int lane = threadIdx.x % GROUP;
    const int64_t C = a.C;
    const float *x = a.logits + row * C;

    online_sum o{-INFINITY, 0.0f};
    if constexpr (VEC4) {
        const float4 *x4 = reinterpret_cast<const float4 *>(x);
        for (int64_t i = lane; i < C / 4; i += GROUP) {
            const float4 v = x4[i];
            online_add(o, v.x);
            online_add(o, v.y);
            online_add(o, v.z);
            online_add(o, v.w);
        }
    } else {
        for (int64_t i = lane; i < C; i += GROUP) online_add(o, x[i]);
    }
    o = group_online<GROUP>(o, scratch);
    const float log_d = logf(o.d);
    // The label is data: a value that is not a class index gives a NaN row, never a read out of bounds (Java checks
    // labels in host memory; on cuda the caller checks its host copy).
    const int32_t label = a.labels[row];
    const bool valid = label >= 0 && label < C;
    const int64_t y = valid ? label : 0;
    // NaN anywhere (o.d is NaN), +inf, or an all -inf row: NaN, as PyTorch's log_softmax gives.
    const bool bad = !isfinite(o.m + log_d) || !valid;
    const float eps = a.eps, off = eps / static_cast<float>(C), hit = 1.0f - eps;

    float shifted = 0.0f;  // sum (x - max), for the smoothing term
    float *g = a.grad != nullptr ? a.grad + row * C : nullptr;
    if (g != nullptr || eps != 0.0f) {
        auto term = [&](int64_t i, float v) {
            const float d = v - o.m;
            shifted += d;
            return bad ? NAN : a.k * (expf(d - log_d) - off - (i == y ? hit : 0.0f));
        };
        if constexpr (VEC4) {
            const float4 *x4 = reinterpret_cast<const float4 *>(x);
            for (int64_t i = lane; i < C / 4; i += GROUP) {
                const float4 v = x4[i];
                float4 gv;
                gv.x = term(4 * i, v.x);
                gv.y = term(4 * i + 1, v.y);
                gv.z = term(4 * i + 2, v.z);
                gv.w = term(4 * i + 3, v.w);
                // Not read again by this kernel: evict-first keeps L2 for the logits' second sweep.
                if (g != nullptr) __stcs(reinterpret_cast<float4 *>(g) + i, gv);
            }
        } else {
            for (int64_t i = lane; i < C; i += GROUP) {
                const float gv = term(i, x[i]);
                if (g != nullptr) __stcs(g + i, gv);
            }
        }
        shifted = group_sum<GROUP>(shifted, scratch);
    }
    if (lane == 0) {
        // -log p_c = log_d - (x_c - max); eps == 0 skips the smoothing term, as PyTorch does (0 * inf would be NaN).
        float loss = hit * (log_d - (x[y] - o.m));
        if (eps != 0.0f) loss += eps * (log_d - shifted / static_cast<float>(C));
        a.row_loss[row] = bad ? NAN : a.loss_scale * loss;
    }
}

// Probability targets (Mixup, CutMix): a.targets is t [B, C]; t' = (1 - eps) t + eps/C, loss = sum_c t'_c (log_d -
// (x_c - max)), grad = k (softmax * sum t' - t'). A target row need not sum to 1 (PyTorch does not ask it to), so
// sweep 1 sums t' beside the online max/sum: the gradient needs it before sweep 2 writes. Scalar loads only: the
// float4 path of ce_rows would buy nothing on an op of a few hundred KB a step.
template <int GROUP>
__global__ void __launch_bounds__(GROUP == 32 ? kWarpRowsBlock : GROUP) ce_soft_rows(ce_args a) {
    D4J_STATIC_SMEM(float, scratch, [64]);
    const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / GROUP) + threadIdx.x / GROUP;
    if (row >= a.B) return;  // whole warps leave together (warp-per-row only: the block grid is exact)
    const int lane = threadIdx.x % GROUP;
    const int C = static_cast<int>(a.C);  // < 2^31, checked by the entry point
    const float *x = a.logits + row * C, *t = a.targets + row * C;
    const float off = a.eps / static_cast<float>(C), hit = 1.0f - a.eps;

    online_sum o{-INFINITY, 0.0f};
    float total = 0.0f;  // sum t'
    for (int i = lane; i < C; i += GROUP) {
        online_add(o, x[i]);
        total += hit * t[i] + off;
    }
    o = group_online<GROUP>(o, scratch);
    total = group_sum<GROUP>(total, scratch);
    // No screen as in ce_rows (its label test needs one): a NaN logit, a +inf one (the merge's inf - inf) or an
    // all -inf row (x - max) already make the whole row NaN here, loss and gradient, as PyTorch's log_softmax does.
    const float log_d = logf(o.d);
    float *g = a.grad != nullptr ? a.grad + row * C : nullptr;
    float loss = 0.0f;
    for (int i = lane; i < C; i += GROUP) {
        const float d = x[i] - o.m, tp = hit * t[i] + off;
        // Term by term, as PyTorch: a zero target at a -inf logit is 0 * inf = NaN in the loss there too.
        loss += tp * (log_d - d);
        // Not read again by this kernel: evict-first keeps L2 for the second sweep over logits and targets.
        if (g != nullptr) __stcs(g + i, a.k * (total * expf(d - log_d) - tp));
    }
    loss = group_sum<GROUP>(loss, scratch);
    if (lane == 0) a.row_loss[row] = a.loss_scale * loss;
}

// loss = sum(row_loss) / B, one block, fixed order.
__global__ void __launch_bounds__(256) ce_reduce(const float *row_loss, int64_t B, float *loss) {
    D4J_STATIC_SMEM(float, scratch, [32]);
    float v = 0.0f;
    for (int64_t i = threadIdx.x; i < B; i += blockDim.x) v += row_loss[i];
    v = group_sum<256>(v, scratch);
    if (threadIdx.x == 0) *loss = v / static_cast<float>(B);
}

// Whether (va, ia) comes before (vb, ib) in torch.argmax's order: NaN is the maximum, then larger values, then the
// lower index.
__device__ __forceinline__ bool argmax_before(float va, int ia, float vb, int ib) {
    const bool na = isnan(va), nb = isnan(vb);
    if (na || nb) return na && (!nb || ia < ib);
    return va > vb || (va == vb && ia < ib);
}

__global__ void __launch_bounds__(kWarpRowsBlock) argmax_rows(const float *x, int64_t B, int64_t C, int32_t *index) {
    const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= B) return;  // whole warps leave together
    const int lane = threadIdx.x % 32;
    const float *r = x + row * C;
    // A lane without elements holds (-inf, C): it loses to every real element, ties included.
    float best = -INFINITY;
    int at = static_cast<int>(C);
    for (int64_t i = lane; i < C; i += 32) {
        const float v = r[i];
        if (argmax_before(v, static_cast<int>(i), best, at)) best = v, at = static_cast<int>(i);
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float vb = __shfl_xor_sync(kFullMask, best, o);
        const int ib = __shfl_xor_sync(kFullMask, at, o);
        if (argmax_before(vb, ib, best, at)) best = vb, at = ib;
    }
    if (lane == 0) index[row] = at < C ? at : 0;
}

template <int GROUP>
dim3 rows_grid(int64_t B) {
    const int rows_per_block = (GROUP == 32 ? kWarpRowsBlock : GROUP) / GROUP;
    return dim3(static_cast<unsigned>((B + rows_per_block - 1) / rows_per_block));
}

template <int GROUP, bool VEC4>
void launch_rows(const ce_args &a, cudaStream_t stream) {
    const dim3 block(GROUP == 32 ? kWarpRowsBlock : GROUP);
    D4J_LAUNCH((ce_rows<GROUP, VEC4>), rows_grid<GROUP>(a.B), block, 0, stream, a);
}

template <int GROUP>
void launch_soft_rows(const ce_args &a, cudaStream_t stream) {
    const dim3 block(GROUP == 32 ? kWarpRowsBlock : GROUP);
    D4J_LAUNCH((ce_soft_rows<GROUP>), rows_grid<GROUP>(a.B), block, 0, stream, a);
}

// The row kernel has run; the mean of its row losses when asked for.
int reduce_rows(const ce_args &a, float *loss, cudaStream_t stream, const char *what) {
    if (check_launch(what) != 0) return 1;
    if (loss == nullptr) return 0;
    D4J_LAUNCH(ce_reduce, dim3(1), dim3(256), 0, stream, a.row_loss, a.B, loss);
    return check_launch("cross_entropy_reduce");
}

bool aligned16(const void *p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

D4J_IMPL_API int d4j_impl_cross_entropy(void *stream_ptr, const float *logits, const int32_t *labels, int64_t B,
                                        int64_t C, float label_smoothing, float loss_scale, float *row_loss,
                                        float *loss, float *grad) {
    if (logits == nullptr || labels == nullptr || row_loss == nullptr || B <= 0 || C <= 0)
        return fail("cross_entropy: null buffer or empty shape");
    if (!(label_smoothing >= 0.0f && label_smoothing <= 1.0f)) return fail("cross_entropy: label_smoothing not in [0, 1]");
    if (B > 2147483647LL || C > 2147483647LL) return fail("cross_entropy: more than 2^31 - 1 rows or classes");
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    const ce_args a{logits, labels, nullptr, B, C, label_smoothing, loss_scale, loss_scale / static_cast<float>(B),
                    row_loss, grad};
    const bool vec4 = C % 4 == 0 && aligned16(logits) && (grad == nullptr || aligned16(grad));
    if (C <= kWarpRowMaxC)
        vec4 ? launch_rows<32, true>(a, stream) : launch_rows<32, false>(a, stream);
    else
        vec4 ? launch_rows<kBlockRow, true>(a, stream) : launch_rows<kBlockRow, false>(a, stream);
    return reduce_rows(a, loss, stream, "cross_entropy_rows");
}

D4J_IMPL_API int d4j_impl_cross_entropy_soft(void *stream_ptr, const float *logits, const float *targets, int64_t B,
                                             int64_t C, float label_smoothing, float loss_scale, float *row_loss,
                                             float *loss, float *grad) {
    if (logits == nullptr || targets == nullptr || row_loss == nullptr || B <= 0 || C <= 0)
        return fail("cross_entropy_soft: null buffer or empty shape");
    if (!(label_smoothing >= 0.0f && label_smoothing <= 1.0f))
        return fail("cross_entropy_soft: label_smoothing not in [0, 1]");
    if (B > 2147483647LL || C > 2147483647LL) return fail("cross_entropy_soft: more than 2^31 - 1 rows or classes");
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    const ce_args a{logits, nullptr, targets, B, C, label_smoothing, loss_scale, loss_scale / static_cast<float>(B),
                    row_loss, grad};
    C <= kWarpRowMaxC ? launch_soft_rows<32>(a, stream) : launch_soft_rows<kBlockRow>(a, stream);
    return reduce_rows(a, loss, stream, "cross_entropy_soft_rows");
}

D4J_IMPL_API int d4j_impl_argmax(void *stream_ptr, const float *x, int64_t B, int64_t C, int32_t *index) {
    if (x == nullptr || index == nullptr || B <= 0 || C <= 0) return fail("argmax: null buffer or empty shape");
    if (B > 2147483647LL || C > 2147483647LL) return fail("argmax: more than 2^31 - 1 rows or classes");
    const int rows_per_block = kWarpRowsBlock / 32;
    const dim3 grid(static_cast<unsigned>((B + rows_per_block - 1) / rows_per_block));
    D4J_LAUNCH(argmax_rows, grid, dim3(kWarpRowsBlock), 0, static_cast<cudaStream_t>(stream_ptr), x, B, C, index);
    return check_launch("argmax");
}
