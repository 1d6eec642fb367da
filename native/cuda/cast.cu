// fp32 <-> bf16 casts (d4j_impl_cast_bf16 / d4j_impl_cast_f32 in distill4j_impl.h), element-wise with a
// grid-stride loop. The conversions are CUDA's own: __float2bfloat16_rn (cvt.rn.bf16.f32 from sm_80 on; the emulator's
// copy under g++, checked bit for bit against NVIDIA's) and __bfloat162float (exact). Only NaN is handled here: the
// ISA promises just "a NaN" and NVIDIA's conversion returns 0x7FFF whatever the sign; the contract keeps the sign
// and the payload's upper bits with the quiet bit set, as x86's VCVTNEPS2BF16 does, so that every backend gives the
// same bits.
//
// A cast moves 6 bytes per element and computes nothing: it runs at memory bandwidth, and 16-byte loads (4 floats
// in, 4 bf16 = 8 bytes out, or the reverse) issue a quarter of the memory instructions of scalar ones. They need
// both pointers aligned to their vector's size; any buffer from cudaMalloc is, and so is a view at an offset that is
// a multiple of 4 elements. Otherwise (a view at an odd offset) the whole array takes the scalar loop: peeling a
// head would align one pointer only, and the two need not become aligned together.
#include "common.cuh"
#include "distill4j_impl.h"
#include "launch.cuh"
#include "tensor_core.cuh"

#include <cstdint>

namespace {

constexpr int kThreads = 256;
// Grid-stride beyond: ~30 waves of 132 SMs. The emulator runs 8 blocks (one OS thread per CUDA thread; the result
// does not depend on the grid), so that its tests reach the loop's later turns.
constexpr int64_t kMaxBlocks = D4J_CUDA_EMU ? 8 : 4096;

using d4j::tc::bf16_rn;

__device__ __forceinline__ float to_f32(uint16_t h) { return __bfloat162float(__ushort_as_bfloat16(h)); }

// VEC: x 16-byte and y 8-byte aligned; elements [0, 4 (n / 4)) in vectors, the rest (fewer than 4) one by one.
template <bool VEC>
__global__ void __launch_bounds__(kThreads) cast_bf16(const float *x, int64_t n, uint16_t *y) {
    const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
    int64_t done = 0;
    if (VEC) {
        const int64_t n4 = n / 4;
        for (int64_t i = first; i < n4; i += stride) {
            const float4 v = reinterpret_cast<const float4 *>(x)[i];
            int2 o;
            o.x = static_cast<int>(static_cast<uint32_t>(bf16_rn(v.x)) | static_cast<uint32_t>(bf16_rn(v.y)) << 16);
            o.y = static_cast<int>(static_cast<uint32_t>(bf16_rn(v.z)) | static_cast<uint32_t>(bf16_rn(v.w)) << 16);
            reinterpret_cast<int2 *>(y)[i] = o;
        }
        done = 4 * n4;
    }
    for (int64_t i = done + first; i < n; i += stride) y[i] = bf16_rn(x[i]);
}

// VEC: x 8-byte and y 16-byte aligned.
template <bool VEC>
__global__ void __launch_bounds__(kThreads) cast_f32(const uint16_t *x, int64_t n, float *y) {
    const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
    int64_t done = 0;
    if (VEC) {
        const int64_t n4 = n / 4;
        for (int64_t i = first; i < n4; i += stride) {
            const int2 v = reinterpret_cast<const int2 *>(x)[i];
            const uint32_t a = static_cast<uint32_t>(v.x), b = static_cast<uint32_t>(v.y);
            reinterpret_cast<float4 *>(y)[i] = make_float4(to_f32(static_cast<uint16_t>(a)), to_f32(a >> 16),
                                                           to_f32(static_cast<uint16_t>(b)), to_f32(b >> 16));
        }
        done = 4 * n4;
    }
    for (int64_t i = done + first; i < n; i += stride) y[i] = to_f32(x[i]);
}

// Blocks for n elements, 4 per thread: enough threads for the vector loop, the scalar tail is at most 3.
dim3 grid_for(int64_t n) {
    const int64_t per_block = 4 * int64_t{kThreads};
    const int64_t blocks = (n + per_block - 1) / per_block;
    return dim3(static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks));
}

bool aligned(const void *p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace

D4J_IMPL_API int d4j_impl_cast_bf16(void *stream, const float *x, int64_t n, uint16_t *y) {
    if (x == nullptr || y == nullptr || n <= 0) return d4j::cuda::fail("cast_bf16: null buffer or n <= 0");
    const cudaStream_t s = static_cast<cudaStream_t>(stream);
    if (aligned(x, 16) && aligned(y, 8))
        D4J_LAUNCH(cast_bf16<true>, grid_for(n), dim3(kThreads), 0, s, x, n, y);
    else
        D4J_LAUNCH(cast_bf16<false>, grid_for(n), dim3(kThreads), 0, s, x, n, y);
    return d4j::cuda::check_launch("cast_bf16");
}

D4J_IMPL_API int d4j_impl_cast_f32(void *stream, const uint16_t *x, int64_t n, float *y) {
    if (x == nullptr || y == nullptr || n <= 0) return d4j::cuda::fail("cast_f32: null buffer or n <= 0");
    const cudaStream_t s = static_cast<cudaStream_t>(stream);
    if (aligned(x, 8) && aligned(y, 16))
        D4J_LAUNCH(cast_f32<true>, grid_for(n), dim3(kThreads), 0, s, x, n, y);
    else
        D4J_LAUNCH(cast_f32<false>, grid_for(n), dim3(kThreads), 0, s, x, n, y);
    return d4j::cuda::check_launch("cast_f32");
}
