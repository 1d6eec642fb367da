// Fused log_softmax + KL divergence on the GPU: loss and d loss / d student in one kernel.
// The fewest bytes this can move are 12 per element: read student, read teacher, write the gradient. Which kernel
// runs depends on C (thresholds in launch_held_for):
//   C <= 2048              a warp per row, 8 rows per block, two sweeps: sweep 2 reads the row again and finds it
//                          in L2 only while the rows resident at once fit there (8 C bytes each, 64 warps an SM);
//                          where they do not (C = 2048 on an H100: ~135 MB against 50 MB), up to 20 bytes an
//                          element. Not measured; holding a warp's row would take 128 registers a lane at 2048.
//   2048 < C <= 32768      kl_div_held: a 512-thread block per row reads the row once into registers (and, past
//                          C = 16384, shared memory), reduces max and sum, then writes the gradient and the row loss
//                          from the held values: 12 bytes per element whatever the L2 holds. Past 16384 it needs
//                          128 KB of shared memory a block: sm_80 and sm_90 have it, sm_86/89 (99 KB) do not and
//                          take the two-sweep path there.
//   C > 32768              a 512-thread block per row, two sweeps, as every row past 2048 was before: the same L2
//                          condition, and it failed at C = 32000 on an H100: 20 bytes per element, not 12, so
//                          bench/RESULTS.md's 61 % of copy bandwidth (which counted 12) was about the copy's own.
// Both paths compute the same formulas (row_math) element by element; only where the second sweep's values come
// from differs. Row losses are fixed-order block reductions, and the scalar loss is the sum of the [B] row losses
// in a second, one-block kernel: fixed order, so the loss is deterministic (atomics would not be).
#include "common.cuh"
#include "distill4j_impl.h"
#include "launch.cuh"
#include "reduce.cuh"
#include "tensor_core.cuh"  // cp.async

#include <cstdint>

namespace {

using namespace d4j::cuda;
using d4j::tc::cp_async_ca;
using d4j::tc::cp_async_cg16;
using d4j::tc::cp_async_commit;
using d4j::tc::cp_async_wait_all;

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

// What a row's statistics give every element: log p = (x - ms) - log_ds, kept in two parts as log_softmax does,
// so |logits| ~ 1e4 cost no precision; log q likewise. x, y are the logits already scaled (x = z_s / T; y = z_t / T,
// or the log-target itself). With LOG_TARGET the teacher is log q itself and sum q = d_t e^{m_t} need not be 1
// (autograd: p sum q - q). Both kernels below use it, so the two paths compute the same formulas.
template <bool LOG_TARGET>
struct row_math {
    float ms, log_ds, mt, log_dt_used, q_sum, k;
    bool bad;

    __device__ __forceinline__ row_math(online_sum os, online_sum ot, const kl_args &a, int64_t row) {
        ms = os.m;
        log_ds = logf(os.d);
        const float log_dt = logf(ot.d);
        mt = LOG_TARGET ? 0.0f : ot.m;
        log_dt_used = LOG_TARGET ? 0.0f : log_dt;
        q_sum = LOG_TARGET ? ot.d * expf(ot.m) : 1.0f;
        const float lse_t = ot.m + log_dt;
        // NaN anywhere, +inf, or no finite maximum gives NaN for the row, as PyTorch (and the CPU kernel) do.
        bad = !isfinite(os.m + log_ds) || !(lse_t < INFINITY) || (!LOG_TARGET && lse_t == -INFINITY);
        const float up = a.grad_out == nullptr ? 1.0f : a.grad_out[a.per_row_upstream ? row : 0];
        k = a.loss_scale * a.inv_T * a.norm * up;
    }

    // Adds the element's loss term to acc and returns its gradient.
    __device__ __forceinline__ float term(float x, float y, float &acc) const {
        const float lp = (x - ms) - log_ds, lq = (y - mt) - log_dt_used;
        const float p = expf(lp), q = expf(lq);
        acc += q > 0.0f ? q * (lq - lp) : 0.0f;  // 0 * log 0 = 0 (xlogy)
        return bad ? NAN : k * (p * q_sum - q);
    }
};

// Rows too long to hold on chip (and C <= kWarpRowMaxC, warp per row): two sweeps over global memory.
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
    const row_math<LOG_TARGET> r(os, ot, a, row);
    float *g = a.grad != nullptr ? a.grad + row * a.C : nullptr;

    float acc = 0.0f;
    if constexpr (VEC4) {
        const float4 *s4 = reinterpret_cast<const float4 *>(s), *t4 = reinterpret_cast<const float4 *>(t);
        for (int64_t i = lane; i < a.C / 4; i += GROUP) {
            const float4 sv = s4[i], tv = t4[i];
            float4 gv;
            gv.x = r.term(sv.x * inv_T, tv.x * t_scale, acc);
            gv.y = r.term(sv.y * inv_T, tv.y * t_scale, acc);
            gv.z = r.term(sv.z * inv_T, tv.z * t_scale, acc);
            gv.w = r.term(sv.w * inv_T, tv.w * t_scale, acc);
            // Evict-first: the gradient is not read again here, so it should not push the rows out of L2.
            if (g != nullptr) __stcs(reinterpret_cast<float4 *>(g) + i, gv);
        }
    } else {
        for (int64_t i = lane; i < a.C; i += GROUP) {
            const float gv = r.term(s[i] * inv_T, t[i] * t_scale, acc);
            if (g != nullptr) __stcs(g + i, gv);
        }
    }
    acc = group_sum<GROUP>(acc, scratch);
    if (lane == 0) a.row_loss[row] = r.bad ? NAN : a.loss_scale * acc;
}

// ---- The row held on chip: one 512-thread block per row reads student and teacher once, keeps them, and writes
// the gradient from what it kept: 12 bytes per element cross the memory bus, whatever the L2 holds.
// Thread `lane` owns slots j = 0 .. RV + SV - 1 of four elements each: slots j < RV in registers (float4 rs[],
// rt[], indices fixed at compile time so they stay registers), the others in dynamic shared memory. Only the
// owner ever reads its slots, so no barrier guards them (the reductions have their own).
// Element of slot j, component c: with VEC4, 4 * (j * 512 + lane) + c (one coalesced 16-byte load per slot);
// otherwise (4 * j + c) * 512 + lane (consecutive lanes read consecutive floats). Past C a slot holds -inf, which
// online_add skips and whose q = 0 adds no loss; its gradient is not stored.
// Capacity 4 * 512 * (RV + SV) elements. The instantiations (launch_held_for): registers only up to C = 16384
// (RV = 2, 4, 8: 16, 32, 64 registers of data a thread); then RV = 8 plus SV = 8 slots in shared memory
// (8 * 2 * 512 * 16 B = 128 KB; opt-in limits: 163 KB sm_80, 99 KB sm_86/89, 227 KB sm_90), up to C = 32768.
// RV = 8 is the most that fits: ptxas (CUDA 13, -O3) gives the kernels 46-56 (<2,0>), 64-84 (<4,0>), 96-128
// (<8,0>) and 99-128 (<8,8>) registers over sm_80/86/89/90 with no spill, and <10,6> (which would have fitted
// sm_86/89's shared memory) spilled ~600 bytes at the 128-register cap of __launch_bounds__(512, 1).
// Occupancy: <2,0> runs 2 blocks an SM (one block's reductions overlap the other's loads), <4,0> one or two
// (64 registers or more), the others one block, 16 warps, an SM. What hides latency there is the loads each thread has in flight at once: all RV + SV slot pairs
// are issued before the first exp (up to 16 float4 pairs, 256 KB an SM at C = 32000), the shared-memory ones by
// cp.async so that they hold no registers. The cost is a bubble per row while the block reduces and before the
// next block's loads start; whether that keeps it under 85 % of copy bandwidth is for bench/gpu/check_kl.py on a
// card to say. A row held by one block is bounded by one SM's storage (8 * 32768 B is its whole register file);
// longer rows would need a cluster sharing the row through distributed shared memory (sm_90 only, not emulated).
constexpr int kHeldThreads = 512;

template <bool VEC4>
__device__ __forceinline__ int held_index(int j, int c, int lane) {
    return VEC4 ? 4 * (j * kHeldThreads + lane) + c : (4 * j + c) * kHeldThreads + lane;
}

// Loads slot j into (sv, tv), scaled (x / T, and y / T unless LOG_TARGET); -inf past the row's end.
template <bool VEC4>
__device__ __forceinline__ void held_load(const float *s, const float *t, int C, int j, int lane, float inv_T,
                                          float t_scale, float4 &sv, float4 &tv) {
    if constexpr (VEC4) {
        const int i = j * kHeldThreads + lane;
        if (4 * i < C) {
            const float4 a = reinterpret_cast<const float4 *>(s)[i], b = reinterpret_cast<const float4 *>(t)[i];
            sv = make_float4(a.x * inv_T, a.y * inv_T, a.z * inv_T, a.w * inv_T);
            tv = make_float4(b.x * t_scale, b.y * t_scale, b.z * t_scale, b.w * t_scale);
        } else {
            sv = tv = make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
        }
    } else {
        float *sp = &sv.x, *tp = &tv.x;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const int e = held_index<false>(j, c, lane);
            sp[c] = e < C ? s[e] * inv_T : -INFINITY;
            tp[c] = e < C ? t[e] * t_scale : -INFINITY;
        }
    }
}

// Issues slot j's copy into shared memory (raw logits; scaled when read back), with no registers involved, so all
// of a thread's shared-memory slots are in flight at once. Past the row's end it stores -inf instead.
template <bool VEC4>
__device__ __forceinline__ void held_copy(const float *s, const float *t, int C, int j, int lane, float4 *ks,
                                          float4 *kt) {
    if constexpr (VEC4) {
        const int i = j * kHeldThreads + lane;
        if (4 * i < C) {
            cp_async_cg16(ks, reinterpret_cast<const float4 *>(s) + i);
            cp_async_cg16(kt, reinterpret_cast<const float4 *>(t) + i);
        } else {
            *ks = *kt = make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
        }
    } else {
        float *sp = &ks->x, *tp = &kt->x;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const int e = held_index<false>(j, c, lane);
            if (e < C) {
                cp_async_ca<4>(sp + c, s + e);
                cp_async_ca<4>(tp + c, t + e);
            } else {
                sp[c] = tp[c] = -INFINITY;
            }
        }
    }
}

__device__ __forceinline__ float4 scaled(float4 v, float k) { return make_float4(v.x * k, v.y * k, v.z * k, v.w * k); }

template <int RV, int SV, bool VEC4, bool LOG_TARGET>
__global__ void __launch_bounds__(kHeldThreads, 1) kl_div_held(kl_args a) {
    D4J_STATIC_SMEM(float, scratch, [64]);
    D4J_DYNAMIC_SMEM(float4, kept);  // [SV][2][kHeldThreads]: a slot's student float4, then its teacher float4
    const int64_t row = blockIdx.x;  // the grid is exactly B blocks
    const int lane = static_cast<int>(threadIdx.x), C = static_cast<int>(a.C);
    const float *s = a.student + row * a.C, *t = a.teacher + row * a.C;
    const float inv_T = a.inv_T, t_scale = LOG_TARGET ? 1.0f : a.inv_T;
    auto ks = [&](int j) { return kept + (2 * j) * kHeldThreads + lane; };
    auto kt = [&](int j) { return kept + (2 * j + 1) * kHeldThreads + lane; };

    // Every load is issued before any exp: the shared-memory slots by cp.async (no registers held while in
    // flight), then the register slots; RV + SV pairs of loads in flight per thread.
    for (int j = 0; j < SV; ++j) held_copy<VEC4>(s, t, C, RV + j, lane, ks(j), kt(j));
    if constexpr (SV > 0) cp_async_commit();
    float4 rs[RV], rt[RV];
#pragma unroll
    for (int j = 0; j < RV; ++j) held_load<VEC4>(s, t, C, j, lane, inv_T, t_scale, rs[j], rt[j]);
    online_sum mine_s{-INFINITY, 0.0f}, mine_t{-INFINITY, 0.0f};
    auto add4 = [&](const float4 &sv, const float4 &tv) {
        online_add(mine_s, sv.x), online_add(mine_s, sv.y), online_add(mine_s, sv.z), online_add(mine_s, sv.w);
        online_add(mine_t, tv.x), online_add(mine_t, tv.y), online_add(mine_t, tv.z), online_add(mine_t, tv.w);
    };
#pragma unroll
    for (int j = 0; j < RV; ++j) add4(rs[j], rt[j]);
    if constexpr (SV > 0) {
        cp_async_wait_all();  // this thread's own copies: visible to it without a barrier
        // One slot at a time: unrolled, ptxas would hoist every shared load into registers and spill.
#pragma unroll 1
        for (int j = 0; j < SV; ++j) add4(scaled(*ks(j), inv_T), scaled(*kt(j), t_scale));
    }
    // The row's statistics: every thread gets the block's merge (fixed order), and uses only those from here on.
    const online_sum row_s = group_online<kHeldThreads>(mine_s, scratch);
    const online_sum row_t = group_online<kHeldThreads>(mine_t, scratch);
    const row_math<LOG_TARGET> r(row_s, row_t, a, row);
    float *g = a.grad != nullptr ? a.grad + row * a.C : nullptr;

    float acc = 0.0f;
    auto emit = [&](int j, const float4 &sv, const float4 &tv) {
        float4 gv;
        gv.x = r.term(sv.x, tv.x, acc);
        gv.y = r.term(sv.y, tv.y, acc);
        gv.z = r.term(sv.z, tv.z, acc);
        gv.w = r.term(sv.w, tv.w, acc);
        if (g == nullptr) return;
        if constexpr (VEC4) {
            const int i = j * kHeldThreads + lane;
            // Evict-first: nothing reads the gradient back here.
            if (4 * i < C) __stcs(reinterpret_cast<float4 *>(g) + i, gv);
        } else {
            const float *gp = &gv.x;
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                const int e = held_index<false>(j, c, lane);
                if (e < C) __stcs(g + e, gp[c]);
            }
        }
    };
#pragma unroll
    for (int j = 0; j < RV; ++j) emit(j, rs[j], rt[j]);
#pragma unroll 1
    for (int j = 0; j < SV; ++j) emit(RV + j, scaled(*ks(j), inv_T), scaled(*kt(j), t_scale));
    acc = group_sum<kHeldThreads>(acc, scratch);
    if (threadIdx.x == 0) a.row_loss[row] = r.bad ? NAN : a.loss_scale * acc;
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

template <int RV, int SV>
constexpr int64_t held_capacity() {
    return 4LL * kHeldThreads * (RV + SV);
}

// One block per row, B blocks. The shared-memory instantiation needs the opt-in above 48 KB, set per call (a
// cheap driver call; the attribute is per device, so a cache would need one per device). Returns false, launching
// nothing, where the device cannot give the block its shared memory (sm_86/89: 99 KB): the caller then sweeps
// twice. The emulator reports sm_90's 227 KB, so no emulated test reaches that return.
template <int RV, int SV, bool VEC4>
bool launch_held(const kl_args &a, bool log_target, cudaStream_t stream) {
    constexpr size_t smem = static_cast<size_t>(SV) * 2 * kHeldThreads * sizeof(float4);
    const dim3 grid(static_cast<unsigned>(a.B)), block(kHeldThreads);
    if constexpr (SV > 0) {
        int device = 0, optin = 0;
        // 256 bytes of static scratch count against the same limit.
        if (cudaGetDevice(&device) != cudaSuccess ||
            cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess ||
            static_cast<size_t>(optin) < smem + 64 * sizeof(float)) {
            (void)cudaGetLastError();  // a failed query must not read as a failed launch
            return false;
        }
        auto kernel = log_target ? kl_div_held<RV, SV, VEC4, true> : kl_div_held<RV, SV, VEC4, false>;
        if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)) !=
            cudaSuccess) {
            (void)cudaGetLastError();
            return false;
        }
    }
    if (log_target)
        D4J_LAUNCH((kl_div_held<RV, SV, VEC4, true>), grid, block, smem, stream, a);
    else
        D4J_LAUNCH((kl_div_held<RV, SV, VEC4, false>), grid, block, smem, stream, a);
    return true;
}

// The smallest held instantiation whose capacity covers C (so the fewest -inf slots and registers), or false
// where C is beyond all of them (or the device lacks the shared memory): the caller then sweeps twice.
// Thresholds on C: (2048, 4096] <2,0>; (4096, 8192] <4,0>; (8192, 16384] <8,0>; (16384, 32768] <8,8>.
template <bool VEC4>
bool launch_held_for(const kl_args &a, bool log_target, cudaStream_t stream) {
    if (a.C <= held_capacity<2, 0>()) return launch_held<2, 0, VEC4>(a, log_target, stream);
    if (a.C <= held_capacity<4, 0>()) return launch_held<4, 0, VEC4>(a, log_target, stream);
    if (a.C <= held_capacity<8, 0>()) return launch_held<8, 0, VEC4>(a, log_target, stream);
    if (a.C <= held_capacity<8, 8>()) return launch_held<8, 8, VEC4>(a, log_target, stream);
    return false;
}

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
    const bool lt = log_target != 0;
    if (C <= kWarpRowMaxC)
        vec4 ? launch_rows<32, true>(a, lt, stream) : launch_rows<32, false>(a, lt, stream);
    else if (!(vec4 ? launch_held_for<true>(a, lt, stream) : launch_held_for<false>(a, lt, stream)))
        vec4 ? launch_rows<kBlockRow, true>(a, lt, stream) : launch_rows<kBlockRow, false>(a, lt, stream);
    if (check_launch("kl_div_rows / kl_div_held") != 0) return 1;
    if (reduction == D4J_REDUCTION_NONE) return 0;
    // `norm` is applied to the sum, not to each row, so batchmean's loss is (sum of rows) / B as in PyTorch.
    D4J_LAUNCH(kl_div_reduce, dim3(1), dim3(256), 0, stream, row_loss, B, norm, loss);
    return check_launch("kl_div_reduce");
}
