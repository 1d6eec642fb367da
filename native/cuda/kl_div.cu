// Fused log_softmax + KL divergence on the GPU: loss and d loss / d student in one kernel.
// A group of threads owns a row: a warp when the row is short (8 rows per block), a 512-thread block otherwise.
// Sweep 1 reads the row once with an online max/sum for both distributions; sweep 2 reads it again to write the
// gradient with a streaming store and accumulate the loss. Nothing of size [B,C] but the gradient is written.
// The second read comes from L2 only while the rows in flight fit there: each holds 8*C bytes of input, and at
// C = 32000 with every SM's resident blocks (H100: 50 MB of L2) they do not, so the kernel moves 20 bytes per
// element, not 12: bench/RESULTS.md's 61 % of copy bandwidth counted 12, and 20/12 of it is about the copy's own.
// Keeping the row on chip (a CTA or cluster holding it) is still to do. The scalar loss is the sum of the [B] row losses in a second,
// one-block kernel: fixed order, so the loss is deterministic (atomics would not be).
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

struct kl_args {
    const float *student, *teacher;
    int64_t B, C;
    float inv_T, loss_scale, norm;
    const float *grad_out;  // NULL, a scalar, or [B] (per_row_upstream)
    int per_row_upstream;
    float *row_loss, *grad;
};

// Visits the row's elements owned by thread `t` of a GROUP-thread group, 4 at a time with 128-bit loads when
// VEC4 (C % 4 == 0 and 16-byte aligned rows), else one at a time. f(index, student, teacher).
template <int GROUP, bool VEC4, typename F>
__device__ __forceinline__ void for_each_owned(const float *s, const float *t, int64_t C, int lane, F f) {
    if constexpr (VEC4) {
        const float4 *s4 = reinterpret_cast<const float4 *>(s), *t4 = reinterpret_cast<const float4 *>(t);
        for (int64_t i = lane; i < C / 4; i += GROUP) {
            const float4 a = s4[i], b = t4[i];
            f(4 * i, a.x, b.x);
            f(4 * i + 1, a.y, b.y);
            f(4 * i + 2, a.z, b.z);
            f(4 * i + 3, a.w, b.w);
        }
    } else {
        for (int64_t i = lane; i < C; i += GROUP) f(i, s[i], t[i]);
    }
}

template <int GROUP, bool VEC4, bool LOG_TARGET>
__global__ void __launch_bounds__(GROUP == 32 ? kWarpRowsBlock : GROUP) kl_div_rows(kl_args a) {
    D4J_STATIC_SMEM(float, scratch, [64]);
    const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / GROUP) + threadIdx.x / GROUP;
    if (row >= a.B) return;  // whole warps leave together (warp-per-row only: the block grid is exact)
    const int lane = threadIdx.x % GROUP;
    const float *s = a.student + row * a.C, *t = a.teacher + row * a.C;
    const float inv_T = a.inv_T, t_scale = LOG_TARGET ? 1.0f : a.inv_T;

    online_sum os{-INFINITY, 0.0f}, ot{-INFINITY, 0.0f};
    for_each_owned<GROUP, VEC4>(s, t, a.C, lane, [&](int64_t, float sv, float tv) {
        online_add(os, sv * inv_T);
        online_add(ot, tv * t_scale);
    });
    os = group_online<GROUP>(os, scratch);
    ot = group_online<GROUP>(ot, scratch);
    const float log_ds = logf(os.d), log_dt = logf(ot.d);
    // log p = (x - m_s) - log d_s, kept in two parts as log_softmax does, so |logits| ~ 1e4 cost no precision.
    // With LOG_TARGET the teacher is log q itself and sum q = d_t e^{m_t} need not be 1 (autograd: p sum q - q).
    const float mt = LOG_TARGET ? 0.0f : ot.m, log_dt_used = LOG_TARGET ? 0.0f : log_dt;
    const float q_sum = LOG_TARGET ? ot.d * expf(ot.m) : 1.0f;
    const float lse_t = ot.m + log_dt;
    // NaN anywhere, +inf, or no finite maximum gives NaN for the row, as PyTorch (and the CPU kernel) do.
    const bool bad = !isfinite(os.m + log_ds) || !(lse_t < INFINITY) || (!LOG_TARGET && lse_t == -INFINITY);
    const float up = a.grad_out == nullptr ? 1.0f : a.grad_out[a.per_row_upstream ? row : 0];
    const float k = a.loss_scale * inv_T * a.norm * up;
    float *g = a.grad != nullptr ? a.grad + row * a.C : nullptr;

    float acc = 0.0f;
    auto term = [&](float sv, float tv, float &gv) {
        const float lp = (sv * inv_T - os.m) - log_ds, lq = (tv * t_scale - mt) - log_dt_used;
        const float p = expf(lp), q = expf(lq);
        acc += q > 0.0f ? q * (lq - lp) : 0.0f;  // 0 * log 0 = 0 (xlogy)
        gv = bad ? NAN : k * (p * q_sum - q);
    };
    if constexpr (VEC4) {
        const float4 *s4 = reinterpret_cast<const float4 *>(s), *t4 = reinterpret_cast<const float4 *>(t);
        for (int64_t i = lane; i < a.C / 4; i += GROUP) {
            const float4 sv = s4[i], tv = t4[i];
            float4 gv;
            term(sv.x, tv.x, gv.x);
            term(sv.y, tv.y, gv.y);
            term(sv.z, tv.z, gv.z);
            term(sv.w, tv.w, gv.w);
            // Evict-first: the gradient is not read again here, so it should not push the rows out of L2.
            if (g != nullptr) __stcs(reinterpret_cast<float4 *>(g) + i, gv);
        }
    } else {
        for (int64_t i = lane; i < a.C; i += GROUP) {
            float gv;
            term(s[i], t[i], gv);
            if (g != nullptr) __stcs(g + i, gv);
        }
    }
    acc = group_sum<GROUP>(acc, scratch);
    if (lane == 0) a.row_loss[row] = bad ? NAN : a.loss_scale * acc;
}

// loss = norm * sum(row_loss), one block, fixed order.
__global__ void __launch_bounds__(256) kl_div_reduce(const float *row_loss, int64_t B, float norm, float *loss) {
    D4J_STATIC_SMEM(float, scratch, [32]);
    float v = 0.0f;
    for (int64_t i = threadIdx.x; i < B; i += blockDim.x) v += row_loss[i];
    v = group_sum<256>(v, scratch);
    if (threadIdx.x == 0) *loss = v * norm;
}

template <int GROUP, bool VEC4>
void launch_rows(const kl_args &a, bool log_target, cudaStream_t stream) {
    const int threads = GROUP == 32 ? kWarpRowsBlock : GROUP;
    const int rows_per_block = threads / GROUP;
    const dim3 grid(static_cast<unsigned>((a.B + rows_per_block - 1) / rows_per_block));
    if (log_target)
        D4J_LAUNCH((kl_div_rows<GROUP, VEC4, true>), grid, dim3(threads), 0, stream, a);
    else
        D4J_LAUNCH((kl_div_rows<GROUP, VEC4, false>), grid, dim3(threads), 0, stream, a);
}

bool aligned16(const void *p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

D4J_IMPL_API int d4j_impl_kl_div(void *stream_ptr, const float *student, const float *teacher, int64_t B, int64_t C,
                                 float T, int reduction, int log_target, float loss_scale, const float *grad_out,
                                 float *row_loss, float *loss, float *grad) {
    if (student == nullptr || teacher == nullptr || row_loss == nullptr || B <= 0 || C <= 0 || !(T > 0.0f))
        return fail("kl_div: null buffer or empty shape or T <= 0");
    if (reduction < D4J_REDUCTION_NONE || reduction > D4J_REDUCTION_MEAN) return fail("kl_div: reduction");
    if (reduction != D4J_REDUCTION_NONE && loss == nullptr) return fail("kl_div: loss is null");
    if (B > 2147483647LL) return fail("kl_div: more than 2^31 - 1 rows");
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    const float norm = reduction == D4J_REDUCTION_BATCHMEAN ? 1.0f / static_cast<float>(B)
                       : reduction == D4J_REDUCTION_MEAN    ? 1.0f / (static_cast<float>(B) * static_cast<float>(C))
                                                            : 1.0f;
    const kl_args a{student, teacher, B, C, 1.0f / T, loss_scale, norm, grad_out,
                    reduction == D4J_REDUCTION_NONE, row_loss, grad};
    const bool vec4 = C % 4 == 0 && aligned16(student) && aligned16(teacher) && (grad == nullptr || aligned16(grad));
    if (C <= kWarpRowMaxC)
        vec4 ? launch_rows<32, true>(a, log_target != 0, stream) : launch_rows<32, false>(a, log_target != 0, stream);
    else
        vec4 ? launch_rows<kBlockRow, true>(a, log_target != 0, stream)
             : launch_rows<kBlockRow, false>(a, log_target != 0, stream);
    if (check_launch("kl_div_rows") != 0) return 1;
    if (reduction == D4J_REDUCTION_NONE) return 0;
    // `norm` is applied to the sum, not to each row, so batchmean's loss is (sum of rows) / B as in PyTorch.
    D4J_LAUNCH(kl_div_reduce, dim3(1), dim3(256), 0, stream, row_loss, B, norm, loss);
    return check_launch("kl_div_reduce");
}
