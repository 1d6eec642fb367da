// Reductions over a group of threads that owns one row: a warp (GROUP == 32, shuffles only) or a whole block
// (GROUP == blockDim.x, a multiple of 32: one partial per warp through shared memory). Every thread of the
// group gets the result. The order of additions is fixed, so results are the same bits on every run.
#ifndef D4J_CUDA_REDUCE_CUH
#define D4J_CUDA_REDUCE_CUH

namespace d4j::cuda {

constexpr unsigned kFullMask = 0xffffffffu;

// A running softmax denominator: d = sum exp(x - m) over the values seen, m their maximum (Milakov & Gimelshein).
struct online_sum {
    float m, d;
};

__device__ __forceinline__ void online_add(online_sum &o, float x) {
    if (x > o.m) {
        o.d = o.d * expf(o.m - x) + 1.0f;  // exp(-inf) = 0 when o is still empty
        o.m = x;
    } else if (x != -INFINITY) {  // -inf adds nothing, and -inf - -inf would be NaN; NaN still falls through
        o.d += expf(x - o.m);
    }
}

__device__ __forceinline__ online_sum online_merge(online_sum a, online_sum b) {
    const float m = fmaxf(a.m, b.m);
    if (m == -INFINITY) return {m, a.d + b.d};  // both empty
    return {m, a.d * expf(a.m - m) + b.d * expf(b.m - m)};  // a NaN in d survives: fmaxf alone would drop it
}

template <int GROUP>
__device__ __forceinline__ float group_sum(float v, float *scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
    if constexpr (GROUP > 32) {
        const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
        __syncthreads();  // the previous reduction's readers are done with scratch
        if (lane == 0) scratch[warp] = v;
        __syncthreads();
        v = lane < GROUP / 32 ? scratch[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
    }
    return v;
}

template <int GROUP>
__device__ __forceinline__ online_sum group_online(online_sum v, float *scratch) {
    for (int o = 16; o > 0; o >>= 1)
        v = online_merge(v, {__shfl_xor_sync(kFullMask, v.m, o), __shfl_xor_sync(kFullMask, v.d, o)});
    if constexpr (GROUP > 32) {
        const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
        __syncthreads();
        if (lane == 0) scratch[warp] = v.m, scratch[32 + warp] = v.d;
        __syncthreads();
        v = lane < GROUP / 32 ? online_sum{scratch[lane], scratch[32 + lane]} : online_sum{-INFINITY, 0.0f};
        for (int o = 16; o > 0; o >>= 1)
            v = online_merge(v, {__shfl_xor_sync(kFullMask, v.m, o), __shfl_xor_sync(kFullMask, v.d, o)});
    }
    return v;
}

}  // namespace d4j::cuda
#endif
