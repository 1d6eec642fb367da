// Included first by every .cu in native/cuda. The same sources build two libraries:
//   nvcc -> libdistill4j_cuda.so     (<cuda_runtime.h>, real launches)
//   g++  -> libdistill4j_cudaemu.so  (emu/cuda_emu.h: every CUDA thread an OS thread; tests only)
// so kernels use the macros below instead of the few constructs g++ cannot parse (or the emulator could not poison),
// and otherwise plain CUDA (__global__, threadIdx, __syncthreads, __shfl_*_sync, atomicAdd, float4, ...).
//
//   D4J_LAUNCH(kernel, grid, block, smem_bytes, stream, args...)
//       kernel<<<grid, block, smem_bytes, stream>>>(args...). Emulated: runs on the CPU before returning.
//       A template kernel with several template arguments needs parentheses for the preprocessor:
//       D4J_LAUNCH((kl_rows<256, true>), ...).
//   D4J_DYNAMIC_SMEM(T, name)
//       T *name = the block's dynamic shared memory (16-byte aligned). Every kernel may pick its own T.
//   D4J_STATIC_SMEM(T, name, dims)
//       __shared__ T name dims, e.g. D4J_STATIC_SMEM(float, scratch, [64]). Emulated: poisoned (all-ones bytes,
//       NaN as a float) before every block, as dynamic shared memory is; a plain __shared__ does not compile there.
//   D4J_CHECK_LAUNCH()
//       cudaError_t of the launches since the last check (cudaGetLastError; clears it): after a launch,
//       `if (cudaError_t e = D4J_CHECK_LAUNCH(); e != cudaSuccess) ...`.
//   D4J_CUDA_EMU
//       1 under the emulator, 0 under nvcc, for the rare code that must differ.
#ifndef D4J_CUDA_COMMON_CUH
#define D4J_CUDA_COMMON_CUH

#if defined(__CUDACC__)

#include <cuda_runtime.h>

#define D4J_CUDA_EMU 0
#define D4J_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
    kernel<<<(grid), (block), (smem_bytes), (stream)>>>(__VA_ARGS__)
// One extern array of bytes for every kernel (nvcc rejects one extern __shared__ name declared with two types).
#define D4J_DYNAMIC_SMEM(T, name)                               \
    extern __shared__ __align__(16) unsigned char d4j_smem[]; \
    T *name = reinterpret_cast<T *>(d4j_smem)
#define D4J_STATIC_SMEM(T, name, dims) __shared__ T name dims
#define D4J_CHECK_LAUNCH() cudaGetLastError()

#else

#include "emu/cuda_emu.h"

#define D4J_CUDA_EMU 1
// The generic lambda lets template kernels deduce their arguments as `<<<>>>` does; #kernel names the kernel in
// the emulator's error messages.
#define D4J_LAUNCH(kernel, grid, block, smem_bytes, stream, ...)                                           \
    ::d4j_emu::launch((grid), (block), (smem_bytes), (stream), #kernel,                                    \
                      [](auto... d4j_args) { kernel(d4j_args...); } __VA_OPT__(, ) __VA_ARGS__)
#define D4J_DYNAMIC_SMEM(T, name) T *name = static_cast<T *>(::d4j_emu::dynamic_smem())
// One array per kernel (per template instance), shared by the block's threads (blocks never overlap), found again
// through its registration, made the first time a thread gets here.
#define D4J_STATIC_SMEM(T, name, dims) \
    static T name dims;                \
    [[maybe_unused]] static const bool d4j_smem_##name = ::d4j_emu::register_static_smem(name, sizeof name)
#define D4J_CHECK_LAUNCH() cudaGetLastError()

#endif

#endif
