// Kernels with the bugs the emulated tests exist to catch, each beside its correct version:
//
//   emu_bugs sync_ok | missing_sync           shared memory read from another thread's slot, with and without
//                                              the __syncthreads between write and read (ThreadSanitizer)
//   emu_bugs syncwarp_ok | missing_syncwarp    the same within a warp, with a shuffle between write and read and
//                                              with and without the __syncwarp (ThreadSanitizer)
//   emu_bugs bounds_smem_ok | oob_smem         neighbour sum reading one past the dynamic shared memory
//   emu_bugs bounds_global_ok | oob_global     copy reading one past a global (malloc'ed) array (AddressSanitizer)
//   emu_bugs read_written_ok | unwritten_slot  block sum of per-warp partials in a static shared array, reading
//                                              one slot no warp wrote (the emulator's poison: any build)
//
// The correct modes exit 1 on a wrong result. The buggy modes always exit 0 by themselves: only the sanitizer or
// the poison can make them fail, so CTest (PASS_REGULAR_EXPRESSION on the sanitizer's report, or on "result
// WRONG") measures that, nothing else.
#include "common.cuh"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

constexpr int kThreads = 128;

// Each thread publishes its value and reads its right neighbour's. Without the barrier the read races with the
// neighbour's write (on hardware it would read stale shared memory from whatever ran before).
template <bool SYNC>
__global__ void shared_exchange(const float *in, float *out) {
    D4J_STATIC_SMEM(float, slot, [kThreads]);
    const int t = static_cast<int>(threadIdx.x);
    slot[t] = in[blockIdx.x * kThreads + t];
    if (SYNC) __syncthreads();
    out[blockIdx.x * kThreads + t] = slot[(t + 1) % kThreads];
}

// attention.cu's P exchange: each lane writes its slot, the warp reduces a register by shuffles, then each lane
// reads its neighbour's slot. A shuffle moves registers only: without the __syncwarp the read races with the
// neighbour's write on hardware, whatever the emulator's lockstep makes of it.
template <bool SYNC>
__global__ void warp_exchange(const float *in, float *out) {
    D4J_STATIC_SMEM(float, slot, [kThreads]);
    const int t = static_cast<int>(threadIdx.x), lane = t % 32;
    const float v = in[blockIdx.x * kThreads + t];
    slot[t] = v;
    float sum = v;
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (SYNC) __syncwarp();
    out[blockIdx.x * kThreads + t] = sum + slot[t - lane + (lane + 1) % 32];
}

// One partial per warp through a static shared array of 32 slots, then the first warp adds them up (reduce.cuh's
// block sum). The buggy version takes `lane <= warps` for `lane < warps`: one slot that no warp of any block
// writes, zero in a zero-filled array.
template <bool BOUND>
__global__ void block_total(const float *in, float *out) {
    D4J_STATIC_SMEM(float, partial, [32]);
    const int t = static_cast<int>(threadIdx.x), lane = t % 32, warps = kThreads / 32;
    float v = in[blockIdx.x * kThreads + t];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) partial[t / 32] = v;
    __syncthreads();
    if (t < 32) {
        v = (BOUND ? lane < warps : lane <= warps) ? partial[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (t == 0) out[blockIdx.x] = v;
    }
}

// out[i] = in[i] + in[i + 1] through dynamic shared memory of exactly n floats; the buggy version forgets that
// the last thread has no right neighbour.
template <bool GUARD>
__global__ void neighbour_sum(const float *in, int n, float *out) {
    D4J_DYNAMIC_SMEM(float, buf);
    const int t = static_cast<int>(threadIdx.x);
    if (t < n) buf[t] = in[t];
    __syncthreads();
    if (t < n) out[t] = buf[t] + ((!GUARD || t + 1 < n) ? buf[t + 1] : 0.0f);
}

// out[i] = in[i + 1], the buggy version without the bound on the last element.
template <bool GUARD>
__global__ void shifted_copy(const float *in, int n, float *out) {
    const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n) out[i] = (!GUARD || i + 1 < n) ? in[i + 1] : 0.0f;
}

float *filled(int n) {
    // Exactly n floats, so that AddressSanitizer's redzone starts right after the last one.
    float *p = static_cast<float *>(std::malloc(sizeof(float) * static_cast<size_t>(n)));
    for (int i = 0; i < n; ++i) p[i] = static_cast<float>(i % 17);
    return p;
}

int report(const char *mode, bool buggy, bool correct) {
    std::printf("%s: result %s\n", mode, correct ? "correct" : "WRONG");
    if (buggy) {
        std::printf("%s: the bug ran to completion (no sanitizer, or the sanitizer missed it)\n", mode);
        return 0;
    }
    return correct ? 0 : 1;
}

int run_sync(const char *mode, bool sync) {
    const int blocks = 2, n = blocks * kThreads;
    float *in = filled(n), *out = filled(n);
    if (sync)
        D4J_LAUNCH(shared_exchange<true>, blocks, kThreads, 0, nullptr, in, out);
    else
        D4J_LAUNCH(shared_exchange<false>, blocks, kThreads, 0, nullptr, in, out);
    bool ok = D4J_CHECK_LAUNCH() == cudaSuccess;
    for (int b = 0; b < blocks; ++b)
        for (int t = 0; t < kThreads; ++t) ok = ok && out[b * kThreads + t] == in[b * kThreads + (t + 1) % kThreads];
    std::free(in);
    std::free(out);
    return report(mode, !sync, ok);
}

int run_syncwarp(const char *mode, bool sync) {
    const int blocks = 2, n = blocks * kThreads;
    float *in = filled(n), *out = filled(n);
    if (sync)
        D4J_LAUNCH(warp_exchange<true>, blocks, kThreads, 0, nullptr, in, out);
    else
        D4J_LAUNCH(warp_exchange<false>, blocks, kThreads, 0, nullptr, in, out);
    bool ok = D4J_CHECK_LAUNCH() == cudaSuccess;
    for (int w = 0; w < n / 32; ++w) {
        float sum = 0.0f;  // small integers: exact in any order
        for (int l = 0; l < 32; ++l) sum += in[w * 32 + l];
        for (int l = 0; l < 32; ++l) ok = ok && out[w * 32 + l] == sum + in[w * 32 + (l + 1) % 32];
    }
    std::free(in);
    std::free(out);
    return report(mode, !sync, ok);
}

int run_total(const char *mode, bool bound) {
    const int blocks = 3, n = blocks * kThreads;
    float *in = filled(n), *out = filled(blocks);
    if (bound)
        D4J_LAUNCH(block_total<true>, blocks, kThreads, 0, nullptr, in, out);
    else
        D4J_LAUNCH(block_total<false>, blocks, kThreads, 0, nullptr, in, out);
    bool ok = D4J_CHECK_LAUNCH() == cudaSuccess;
    for (int b = 0; b < blocks; ++b) {
        float sum = 0.0f;
        for (int t = 0; t < kThreads; ++t) sum += in[b * kThreads + t];
        ok = ok && out[b] == sum;
    }
    std::free(in);
    std::free(out);
    return report(mode, !bound, ok);
}

int run_smem(const char *mode, bool guard) {
    const int n = 100;  // not a multiple of anything: the overflow is one float past an exact allocation
    float *in = filled(n), *out = filled(n);
    const size_t smem = sizeof(float) * n;
    if (guard)
        D4J_LAUNCH(neighbour_sum<true>, 1, kThreads, smem, nullptr, in, n, out);
    else
        D4J_LAUNCH(neighbour_sum<false>, 1, kThreads, smem, nullptr, in, n, out);
    bool ok = D4J_CHECK_LAUNCH() == cudaSuccess;
    for (int i = 0; i < n; ++i) ok = ok && out[i] == in[i] + (i + 1 < n ? in[i + 1] : 0.0f);
    std::free(in);
    std::free(out);
    return report(mode, !guard, ok);
}

int run_global(const char *mode, bool guard) {
    const int n = 300;
    float *in = filled(n), *out = filled(n);
    if (guard)
        D4J_LAUNCH(shifted_copy<true>, 3, kThreads, 0, nullptr, in, n, out);
    else
        D4J_LAUNCH(shifted_copy<false>, 3, kThreads, 0, nullptr, in, n, out);
    bool ok = D4J_CHECK_LAUNCH() == cudaSuccess;
    for (int i = 0; i < n; ++i) ok = ok && out[i] == (i + 1 < n ? in[i + 1] : 0.0f);
    std::free(in);
    std::free(out);
    return report(mode, !guard, ok);
}

}  // namespace

int main(int argc, char **argv) {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "sync_ok") return run_sync(argv[1], true);
    if (mode == "missing_sync") return run_sync(argv[1], false);
    if (mode == "syncwarp_ok") return run_syncwarp(argv[1], true);
    if (mode == "missing_syncwarp") return run_syncwarp(argv[1], false);
    if (mode == "read_written_ok") return run_total(argv[1], true);
    if (mode == "unwritten_slot") return run_total(argv[1], false);
    if (mode == "bounds_smem_ok") return run_smem(argv[1], true);
    if (mode == "oob_smem") return run_smem(argv[1], false);
    if (mode == "bounds_global_ok") return run_global(argv[1], true);
    if (mode == "oob_global") return run_global(argv[1], false);
    std::fprintf(stderr, "usage: emu_bugs sync_ok|missing_sync|syncwarp_ok|missing_syncwarp|read_written_ok|"
                         "unwritten_slot|bounds_smem_ok|oob_smem|bounds_global_ok|oob_global\n");
    return 2;
}
