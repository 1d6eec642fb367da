// Checks the CUDA emulator (native/cuda/emu/cuda_emu.h) itself: small kernels written as ordinary CUDA, run on
// the CPU and compared with plain loops. Integer data (or floats holding small integers) make every comparison
// exact. Runs in the normal, ThreadSanitizer and AddressSanitizer builds.
//
//   emu_selfcheck                 all checks; exit 1 on any mismatch
//   emu_selfcheck bad_mask        a full-mask shuffle on a partial warp: the emulator must abort and say why
//   emu_selfcheck diverged        lanes of one warp at different warp operations: must abort and say why
#include "common.cuh"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr unsigned kFull = 0xffffffffu;

// Tree reduction in static shared memory: every step reads slots other threads wrote before the barrier.
template <int BLOCK>
__global__ void block_sum(const int *in, int n, int *out) {
    D4J_STATIC_SMEM(int, partial, [BLOCK]);
    int i = static_cast<int>(blockIdx.x) * BLOCK + static_cast<int>(threadIdx.x);
    partial[threadIdx.x] = i < n ? in[i] : 0;
    __syncthreads();
    for (int stride = BLOCK / 2; stride > 0; stride /= 2) {
        if (static_cast<int>(threadIdx.x) < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

// Every shuffle flavour and the votes, one warp's worth of results per lane.
struct warp_results {
    int *down_sum, *xor_sum, *bcast, *scan, *seg_xor, *seg_bcast;
    float *xor_sum_f;
    unsigned *ballot;
    int *any, *all;
};
__global__ void warp_ops(const int *in, warp_results r) {
    int gid = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
    int lane = static_cast<int>(threadIdx.x % 32);
    int v = in[gid];
    int down = v;
    for (int o = 16; o > 0; o /= 2) down += __shfl_down_sync(kFull, down, o);
    int x = v;
    for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(kFull, x, o);
    float xf = static_cast<float>(v) * 0.5f;
    for (int o = 16; o > 0; o /= 2) xf += __shfl_xor_sync(kFull, xf, o);
    int b = __shfl_sync(kFull, v, 7);
    int s = v;  // inclusive prefix sum
    for (int o = 1; o < 32; o *= 2) {
        int t = __shfl_up_sync(kFull, s, o);
        if (lane >= o) s += t;
    }
    int seg = v;  // sums over segments of 8 lanes
    for (int o = 4; o > 0; o /= 2) seg += __shfl_xor_sync(kFull, seg, o, 8);
    int seg_b = __shfl_sync(kFull, v, 11, 8);  // lane 3 of the lane's own 8-lane segment
    unsigned ballot = __ballot_sync(kFull, v % 3 == 0);
    int any = __any_sync(kFull, v == 1000);
    int all = __all_sync(kFull, v >= 0);
    __syncwarp();
    r.down_sum[gid] = down;
    r.xor_sum[gid] = x;
    r.xor_sum_f[gid] = xf;
    r.bcast[gid] = b;
    r.scan[gid] = s;
    r.seg_xor[gid] = seg;
    r.seg_bcast[gid] = seg_b;
    r.ballot[gid] = ballot;
    r.any[gid] = any;
    r.all[gid] = all;
}

__global__ void atomics(const int *in, int n, int *isum, float *fsum, int *imax, int *imin) {
    for (int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); i < n;
         i += static_cast<int>(gridDim.x * blockDim.x)) {
        atomicAdd(isum, in[i]);
        atomicAdd(fsum, static_cast<float>(in[i]));
        atomicMax(imax, in[i]);
        atomicMin(imin, in[i]);
    }
}

// A 3-D block over dynamic shared memory: checks the poison, the index decomposition, and reads of other
// threads' slots after the barrier (the block is reversed through shared memory).
__global__ void dyn_reverse(float *out, int *not_poisoned) {
    D4J_DYNAMIC_SMEM(float, buf);
    int nt = static_cast<int>(blockDim.x * blockDim.y * blockDim.z);
    int t = static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
    int block = static_cast<int>(blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z));
    if (!isnan(buf[t]) || !isnan(buf[nt + t])) atomicAdd(not_poisoned, 1);
    __syncthreads();  // everyone has looked at the poison before anyone overwrites it
    buf[t] = static_cast<float>(t + 1000 * block);
    __syncthreads();
    out[block * nt + t] = buf[nt - 1 - t];
}

// Static shared arrays, two in one kernel: each thread finds its slots poisoned, then leaves a number there for
// the next block (or launch) to find if the poison were not renewed.
__global__ void static_poison(int *not_poisoned) {
    D4J_STATIC_SMEM(float, f, [64]);
    D4J_STATIC_SMEM(double, d, [64]);
    const int t = static_cast<int>(threadIdx.x);
    if (!isnan(f[t]) || !isnan(d[t])) atomicAdd(not_poisoned, 1);
    f[t] = 1.0f;
    d[t] = 2.0;
}

// The same memory seen as another type by another kernel.
__global__ void dyn_double(double *out) {
    D4J_DYNAMIC_SMEM(double, buf);
    buf[threadIdx.x] = 0.25 * threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = buf[(threadIdx.x + 1) % blockDim.x];
}

// Threads past `live` return at once; the others still meet at __syncthreads (exited threads stop counting).
// Then a partial-warp reduction with the exact mask of the live lanes.
__global__ void early_exit(int live, int *out, int *warp_sums) {
    D4J_STATIC_SMEM(int, slot, [128]);
    int t = static_cast<int>(threadIdx.x);
    if (t >= live) return;
    slot[t] = t * t;
    __syncthreads();
    out[t] = slot[live - 1 - t];
    int first = t / 32 * 32;
    int lanes = live - first < 32 ? live - first : 32;
    unsigned mask = lanes == 32 ? kFull : (1u << lanes) - 1;
    int v = t;
    for (int o = 16; o > 0; o /= 2) {
        int other = __shfl_down_sync(mask, v, o);
        if (t % 32 + o < lanes) v += other;
    }
    if (t % 32 == 0) warp_sums[t / 32] = v;
}

__global__ void count_threads(int *count) { atomicAdd(count, 1); }

__global__ void bad_mask_kernel(int *out) {
    // 48 threads: warp 1 has 16 lanes, so the full mask names lanes that do not exist.
    out[threadIdx.x] = __shfl_xor_sync(kFull, static_cast<int>(threadIdx.x), 1);
}

__global__ void diverged_kernel(int *out) {
    int v = static_cast<int>(threadIdx.x);
    if (threadIdx.x == 5) v += __shfl_xor_sync(kFull, v, 1);  // lane 5 alone: the others are at the next one
    v += __shfl_xor_sync(kFull, v, 2);
    out[threadIdx.x] = v;
}

int failures = 0;

void expect(bool ok, const char *what) {
    std::printf("%-58s %s\n", what, ok ? "ok" : "FAILED");
    if (!ok) ++failures;
}

double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void check_block_sum(std::mt19937 &rng) {
    constexpr int kBlock = 256;
    const int n = 1000, blocks = (n + kBlock - 1) / kBlock;
    std::vector<int> in(n), out(blocks, -1);
    for (int &v : in) v = static_cast<int>(rng() % 1000) - 500;
    double t0 = now_ms();
    D4J_LAUNCH(block_sum<kBlock>, blocks, kBlock, 0, nullptr, in.data(), n, out.data());
    double t1 = now_ms();
    bool ok = D4J_CHECK_LAUNCH() == cudaSuccess;
    for (int b = 0; b < blocks; ++b) {
        int ref = 0;
        for (int i = b * kBlock; i < n && i < (b + 1) * kBlock; ++i) ref += in[i];
        ok = ok && out[b] == ref;
    }
    std::printf("  (block_sum: %d blocks of %d threads, %.1f ms per block)\n", blocks, kBlock, (t1 - t0) / blocks);
    expect(ok, "block reduction in static shared memory + __syncthreads");
}

void check_warp_ops(std::mt19937 &rng) {
    const int blocks = 2, threads = 64, n = blocks * threads;
    std::vector<int> in(n), down(n), xs(n), bc(n), scan(n), segx(n), segb(n), any(n), all(n);
    std::vector<float> xf(n);
    std::vector<unsigned> ballot(n);
    for (int &v : in) v = static_cast<int>(rng() % 100);
    in[70] = 1000;  // in the third warp only: __any_sync is true there and false elsewhere
    warp_results r{down.data(), xs.data(), bc.data(), scan.data(), segx.data(), segb.data(),
                   xf.data(),   ballot.data(), any.data(), all.data()};
    D4J_LAUNCH(warp_ops, blocks, threads, 0, nullptr, in.data(), r);
    bool ok = D4J_CHECK_LAUNCH() == cudaSuccess;
    bool ok_down = true, ok_xor = true, ok_bc = true, ok_scan = true, ok_seg = true, ok_vote = true;
    for (int w = 0; w < n / 32; ++w) {
        const int *v = &in[w * 32];
        int sum = 0;
        unsigned bal = 0;
        bool has1000 = false;
        for (int l = 0; l < 32; ++l) {
            sum += v[l];
            if (v[l] % 3 == 0) bal |= 1u << l;
            has1000 = has1000 || v[l] == 1000;
        }
        ok_down = ok_down && down[w * 32] == sum;
        int prefix = 0;
        for (int l = 0; l < 32; ++l) {
            int g = w * 32 + l, seg = l / 8 * 8, seg_sum = 0;
            prefix += v[l];
            for (int k = seg; k < seg + 8; ++k) seg_sum += v[k];
            ok_xor = ok_xor && xs[g] == sum && xf[g] == 0.5f * static_cast<float>(sum);
            ok_bc = ok_bc && bc[g] == v[7];
            ok_scan = ok_scan && scan[g] == prefix;
            ok_seg = ok_seg && segx[g] == seg_sum && segb[g] == v[seg + 3];
            ok_vote = ok_vote && ballot[g] == bal && any[g] == (has1000 ? 1 : 0) && all[g] == 1;
        }
    }
    expect(ok && ok_down, "__shfl_down_sync warp sum");
    expect(ok_xor, "__shfl_xor_sync warp sum (int and float)");
    expect(ok_bc, "__shfl_sync broadcast");
    expect(ok_scan, "__shfl_up_sync inclusive scan");
    expect(ok_seg, "width 8: __shfl_xor_sync and __shfl_sync per segment");
    expect(ok_vote, "__ballot_sync, __any_sync, __all_sync");
}

void check_atomics(std::mt19937 &rng) {
    const int n = 3000;
    std::vector<int> in(n);
    for (int &v : in) v = static_cast<int>(rng() % 2001) - 1000;
    int isum = 0, imax = -2000000, imin = 2000000;
    float fsum = 0.0f;
    D4J_LAUNCH(atomics, 3, 128, 0, nullptr, in.data(), n, &isum, &fsum, &imax, &imin);
    bool ok = D4J_CHECK_LAUNCH() == cudaSuccess;
    int rsum = 0, rmax = -2000000, rmin = 2000000;
    for (int v : in) {
        rsum += v;
        rmax = v > rmax ? v : rmax;
        rmin = v < rmin ? v : rmin;
    }
    // |partial sums| stay below 2^24, so float addition in any order is exact.
    expect(ok && isum == rsum && fsum == static_cast<float>(rsum), "atomicAdd int and float (grid-stride loop)");
    expect(imax == rmax && imin == rmin, "atomicMax, atomicMin int");
}

void check_dynamic_smem() {
    const dim3 block(8, 4, 3), grid(2, 2, 1);
    const int nt = 96, nb = 4;
    std::vector<float> out(nt * nb, -1.0f);
    int not_poisoned = 0;
    D4J_LAUNCH(dyn_reverse, grid, block, 2 * nt * sizeof(float), nullptr, out.data(), &not_poisoned);
    bool ok = D4J_CHECK_LAUNCH() == cudaSuccess;
    for (int b = 0; b < nb; ++b)
        for (int t = 0; t < nt; ++t) ok = ok && out[b * nt + t] == static_cast<float>(nt - 1 - t + 1000 * b);
    expect(ok, "dynamic shared memory, 3-D block and grid indices");
    expect(not_poisoned == 0, "dynamic shared memory is NaN-poisoned before each block");
    std::vector<double> d(40, -1.0);
    D4J_LAUNCH(dyn_double, 1, 40, 40 * sizeof(double), nullptr, d.data());
    ok = D4J_CHECK_LAUNCH() == cudaSuccess;
    for (int t = 0; t < 40; ++t) ok = ok && d[t] == 0.25 * ((t + 1) % 40);
    expect(ok, "dynamic shared memory as another type (double)");
}

void check_static_smem() {
    int not_poisoned = 0;
    for (int launch = 0; launch < 2; ++launch) D4J_LAUNCH(static_poison, 3, 64, 0, nullptr, &not_poisoned);
    expect(D4J_CHECK_LAUNCH() == cudaSuccess && not_poisoned == 0,
           "static shared memory is NaN-poisoned before each block");
}

void check_early_exit() {
    const int live = 77;  // warps of 32, 32 and 13 live lanes in a block of 128
    std::vector<int> out(128, -1), sums(3, -1);
    D4J_LAUNCH(early_exit, 1, 128, 0, nullptr, live, out.data(), sums.data());
    bool ok = D4J_CHECK_LAUNCH() == cudaSuccess;
    for (int t = 0; t < live; ++t) ok = ok && out[t] == (live - 1 - t) * (live - 1 - t);
    for (int t = live; t < 128; ++t) ok = ok && out[t] == -1;
    for (int w = 0; w < 3; ++w) {
        int ref = 0;
        for (int t = w * 32; t < live && t < (w + 1) * 32; ++t) ref += t;
        ok = ok && sums[w] == ref;
    }
    expect(ok, "early return: __syncthreads and partial-warp shuffles");
}

void check_launch_errors() {
    int count = 0;
    D4J_LAUNCH(count_threads, 1, 1025, 0, nullptr, &count);
    bool ok = D4J_CHECK_LAUNCH() == cudaErrorInvalidConfiguration && cudaGetLastError() == cudaSuccess;
    D4J_LAUNCH(count_threads, 1, dim3(1, 1, 65), 0, nullptr, &count);
    ok = ok && D4J_CHECK_LAUNCH() == cudaErrorInvalidConfiguration;
    D4J_LAUNCH(count_threads, 0, 32, 0, nullptr, &count);
    ok = ok && D4J_CHECK_LAUNCH() == cudaErrorInvalidConfiguration;
    D4J_LAUNCH(count_threads, 1, 32, 64 * 1024, nullptr, &count);
    ok = ok && D4J_CHECK_LAUNCH() == cudaErrorInvalidConfiguration;
    expect(ok && count == 0, "bad launch configurations run nothing, report the error");
    D4J_LAUNCH(count_threads, 2, dim3(8, 16, 8), 0, nullptr, &count);
    expect(D4J_CHECK_LAUNCH() == cudaSuccess && count == 2048, "1024 threads per block is allowed");
}

// Two devices, a current device per host thread, allocations tagged with theirs (cuda_emu.h, "devices").
__global__ void add_one(int *p, int n) {
    const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n) p[i] += 1;
}

void check_devices() {
    int count = 0, current = -1, other_thread = -1;
    bool ok = cudaGetDeviceCount(&count) == cudaSuccess && count == 2 && cudaGetDevice(&current) == cudaSuccess &&
              current == 0 && cudaSetDevice(2) == cudaErrorInvalidDevice && cudaSetDevice(-1) == cudaErrorInvalidDevice;
    ok = ok && cudaSetDevice(1) == cudaSuccess && cudaGetDevice(&current) == cudaSuccess && current == 1;
    std::thread([&] { cudaGetDevice(&other_thread); }).join();
    expect(ok && other_thread == 0, "two devices; the current one is per host thread, 0 on a new thread");

    // This thread is on device 1: memory allocated now belongs to it.
    int *p1 = nullptr;
    ok = cudaMalloc(&p1, 64 * sizeof(int)) == cudaSuccess && reinterpret_cast<uintptr_t>(p1) % 256 == 0;
    for (int i = 0; i < 64; ++i) p1[i] = i;
    D4J_LAUNCH(add_one, 1, 64, 0, nullptr, p1, 64);
    ok = ok && D4J_CHECK_LAUNCH() == cudaSuccess && p1[0] == 1 && p1[63] == 64;
    ok = ok && cudaMemset(p1 + 10, 0, sizeof(int)) == cudaSuccess && p1[10] == 0;
    expect(ok, "a launch and a memset on the current device's memory (256-byte aligned) run");

    // Device 0 current: the same pointers are another device's memory, interior ones too.
    cudaSetDevice(0);
    D4J_LAUNCH(add_one, 1, 64, 0, nullptr, p1 + 5, 59);
    ok = D4J_CHECK_LAUNCH() == cudaErrorIllegalAddress && p1[5] == 6 && !d4j_emu::device_error.empty();
    d4j_emu::device_error.clear();
    ok = ok && cudaMemset(p1, 0, sizeof(int)) == cudaErrorIllegalAddress && p1[0] == 1;
    cudaGetLastError();
    d4j_emu::device_error.clear();
    // Memory not from cudaMalloc (host buffers) is not checked, nor one past the end of an allocation.
    std::vector<int> host(64, 0);
    D4J_LAUNCH(add_one, 1, 64, 0, nullptr, host.data(), 64);
    ok = ok && D4J_CHECK_LAUNCH() == cudaSuccess && host[63] == 1;
    D4J_LAUNCH(add_one, 1, 1, 0, nullptr, p1 + 64, 0);
    ok = ok && D4J_CHECK_LAUNCH() == cudaSuccess;
    expect(ok, "another device's memory: the launch and the memset run nothing, report cudaErrorIllegalAddress");

    // cudaFree from any device (unified addressing); a pointer cudaMalloc did not return is refused.
    ok = cudaFree(host.data()) == cudaErrorInvalidValue && cudaFree(p1) == cudaSuccess && cudaFree(p1) == cudaErrorInvalidValue;
    expect(ok, "cudaFree from another device; a foreign or freed pointer is an error");
}

}  // namespace

int main(int argc, char **argv) {
    std::string mode = argc > 1 ? argv[1] : "";
    // The emulator abort()s on misuse; CTest counts a death by signal as a failure before it looks at the
    // output, so the death checks turn SIGABRT (after the message is printed) into exit status 3.
    if (mode == "bad_mask" || mode == "diverged") std::signal(SIGABRT, [](int) { std::_Exit(3); });
    if (mode == "bad_mask") {
        std::vector<int> out(48);
        D4J_LAUNCH(bad_mask_kernel, 1, 48, 0, nullptr, out.data());
        std::printf("bad_mask: the emulator did not abort\n");
        return 0;
    }
    if (mode == "diverged") {
        std::vector<int> out(32);
        D4J_LAUNCH(diverged_kernel, 1, 32, 0, nullptr, out.data());
        std::printf("diverged: the emulator did not abort\n");
        return 0;
    }
    if (!mode.empty()) {
        std::fprintf(stderr, "usage: emu_selfcheck [bad_mask|diverged]\n");
        return 2;
    }
    unsigned seed = static_cast<unsigned>(std::chrono::system_clock::now().time_since_epoch().count());
    if (const char *s = std::getenv("D4J_SEED")) seed = static_cast<unsigned>(std::strtoul(s, nullptr, 10));
    std::printf("emu_selfcheck seed %u (set D4J_SEED to repeat)\n", seed);
    std::mt19937 rng(seed);
    check_block_sum(rng);
    check_warp_ops(rng);
    check_atomics(rng);
    check_dynamic_smem();
    check_static_smem();
    check_early_exit();
    check_launch_errors();
    check_devices();
    std::printf("%s\n", failures == 0 ? "all passed" : "FAILURES");
    return failures == 0 ? 0 : 1;
}
