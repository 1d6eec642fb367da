// CUDA on the CPU, for tests only (DESIGN.md, "Testing", 3). Included through native/cuda/common.cuh when the
// .cu files are compiled by g++ -std=c++20 into libdistill4j_cudaemu.so, never under nvcc.
//
// The model, chosen so that ThreadSanitizer and AddressSanitizer can see kernel bugs:
//   - one OS thread per CUDA thread; the threads of a launch run its blocks one after another, and all threads of
//     a block run concurrently, so a static shared array (D4J_STATIC_SMEM) can be plain `static` storage (one
//     copy per kernel, reused by the next block) and launches are serialised by one mutex;
//   - `__syncthreads` is a std::barrier over the block; a thread that returns from the kernel leaves it
//     (arrive_and_drop), as an exited thread no longer counts on hardware;
//   - each warp has its own std::barrier over its live lanes; shuffles, ballots and `__syncwarp` exchange values
//     through it. This is stricter than hardware, on purpose: the mask must be exactly the warp's live lanes
//     (so a full mask on a partial warp, or on a warp some of whose lanes returned early, aborts), every live lane
//     must be at the same warp operation (same intrinsic, same call site, same count). Each violation aborts with
//     a message naming kernel, block and thread. A shuffle reading a lane outside the mask (undefined on hardware)
//     gets all-ones bits: NaN as a float, -1 as an int.
//     The barrier orders all memory, but only `__syncwarp` does on hardware: shuffles and votes move registers.
//     So ThreadSanitizer sees no ordering from them (it is kept blind to their exchange): a lane reading a shared
//     memory slot that another lane of its warp wrote, with only shuffles between, is a race it reports. The
//     values themselves still arrive in lockstep: the read gets the right value, only the sanitizer can tell.
//     The price: a partial-mask operation while the warp's other lanes are still running elsewhere (legal from
//     sm_70 on) waits for them forever; CTest's timeout catches that hang;
//   - atomics are std::atomic_ref (sequentially consistent, so the emulator is blind to missing fences);
//   - dynamic shared memory is malloc'ed per block with exactly the requested size (AddressSanitizer sees an
//     overflow of one byte) and filled with all-ones bytes first: NaN as float/double/half, -1 as an integer.
//     Static shared arrays are filled the same way before every block (each is registered the first time a
//     thread reaches its definition), so a slot the block did not write reads as garbage, never as 0 or as what
//     the previous block left; AddressSanitizer sees their overflows as it does any global's;
//   - devices: kDeviceCount of them (2, so that device bugs can show), a current device per host thread (0 until
//     cudaSetDevice, as CUDA's runtime), every cudaMalloc tagged with the device current at the call. A launch
//     whose pointer arguments point into another device's allocation, a cudaMemset(Async) of another device's
//     memory, and the emulated GEMMs' operands are refused as a card without peer access faults: the message on
//     stderr, cudaErrorIllegalAddress for cudaGetLastError, nothing run. Pointers inside structs and memory not
//     from cudaMalloc (test buffers, host memory) are not checked; streams carry no device here;
//   - launch configurations are checked as the hardware does (at most 1024 threads per block, block z <= 64,
//     grid y,z <= 65535, 48 KiB of dynamic shared memory unless raised with cudaFuncSetAttribute); a bad one
//     runs nothing and leaves cudaErrorInvalidConfiguration for cudaGetLastError.
//   - bf16 (cuda_bf16_emu.h) and the tensor-core instructions of ../tensor_core.cuh (tensor_core_emu.h: mma.sync
//     and ldmatrix as warp collectives, cp.async deferred until its wait_group, on_kernel_return below).
// Not modelled: memory fences, bank conflicts, occupancy, timing; __CUDA_ARCH__ is undefined; the fast-math
// intrinsics (__expf, ...) are the exact functions. The OS threads are pooled and reused across launches (see
// thread_pool): a block then costs little more than its barriers, ~1-5 ms for 256 threads. Under
// ThreadSanitizer every barrier costs in proportion to threads x threads (vector clocks): ~15 ms per 256-thread
// block, but ~1.5 s for one 1024-thread block; keep emulated blocks small where the kernel allows.
#ifndef D4J_CUDA_EMU_H
#define D4J_CUDA_EMU_H

#if defined(__CUDACC__)
#error "cuda_emu.h is for g++ builds; nvcc includes <cuda_runtime.h> through common.cuh"
#endif

#include <math.h>  // expf, logf, fmaxf, isinf, INFINITY, ... in the global namespace, as device code has them

#include <atomic>
#include <barrier>
#include <bit>
#include <cmath>
#include <concepts>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <semaphore>
#include <source_location>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

// ---- Keywords. Device code is ordinary host code here.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __constant__
// Static shared arrays are declared with D4J_STATIC_SMEM (common.cuh), which the emulator poisons before every
// block. A plain `static` cannot be found again to poison it (and g++ ignores section attributes on the static
// locals of templates), so a plain __shared__ does not compile here.
#define __shared__ _Pragma("GCC error \"declare static shared arrays with D4J_STATIC_SMEM (common.cuh)\"")
// __restrict__ is a g++ keyword already.

// ---- Built-in vector types. may_alias: kernels read float arrays through float4 pointers.
struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};
struct __attribute__((may_alias, aligned(8))) float2 {
    float x, y;
};
struct __attribute__((may_alias, aligned(16))) float4 {
    float x, y, z, w;
};
struct __attribute__((may_alias, aligned(8))) int2 {
    int x, y;
};
struct __attribute__((may_alias, aligned(16))) int4 {
    int x, y, z, w;
};
struct __attribute__((may_alias, aligned(16))) double2 {
    double x, y;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }

// ---- Built-in variables: per OS thread, set by the launcher before each block.
inline thread_local uint3 threadIdx{};
inline thread_local uint3 blockIdx{};
inline thread_local dim3 blockDim{};
inline thread_local dim3 gridDim{};
inline constexpr int warpSize = 32;

// ---- Runtime API subset (the values are CUDA's).
enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorIllegalAddress = 700,
    cudaErrorIllegalState = 401,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901
};
typedef enum cudaError cudaError_t;
struct CUstream_st;
typedef CUstream_st *cudaStream_t;
struct CUgraph_st;
typedef CUgraph_st *cudaGraph_t;
struct CUgraphExec_st;
typedef CUgraphExec_st *cudaGraphExec_t;
enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2
};
enum cudaStreamCaptureStatus { cudaStreamCaptureStatusNone = 0, cudaStreamCaptureStatusActive = 1 };
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
};
enum cudaDeviceAttr {
    cudaDevAttrMaxThreadsPerBlock = 1,
    cudaDevAttrMaxSharedMemoryPerBlock = 8,
    cudaDevAttrWarpSize = 10,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

// ThreadSanitizer's own annotations (libtsan), declared here because g++ ships no header for the first two.
#if defined(__SANITIZE_THREAD__)
extern "C" void AnnotateIgnoreSyncBegin(const char *file, int line);
extern "C" void AnnotateIgnoreSyncEnd(const char *file, int line);
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif

// Hidden: each library (and test program) that includes this header has its own private emulator.
namespace __attribute__((visibility("hidden"))) d4j_emu {

// The emulated devices: compute capability 9.0 (so capability checks pass), few SMs so that kernels sizing
// their grid by the SM count launch few (slow, emulated) blocks.
inline constexpr int kSmCount = 4;
inline constexpr unsigned kMaxThreadsPerBlock = 1024;
inline constexpr size_t kDefaultDynamicSmem = 48 * 1024;
inline constexpr size_t kMaxDynamicSmemOptin = 227 * 1024;

// Like CUDA's, the last error belongs to the host thread that launched.
inline thread_local cudaError_t last_error = cudaSuccess;

// ---- Devices. Two, so that a kernel launched with the wrong device current can be caught (hardware without
// peer access faults on the other device's memory; one emulated device could never tell).
inline constexpr int kDeviceCount = 2;
// Per host thread, 0 until cudaSetDevice, as CUDA's runtime has it.
inline thread_local int current_device = 0;
// Why the last device check on this thread failed ("" when none did), for messages that outlive stderr.
inline thread_local std::string device_error;

// Every live cudaMalloc block: base -> (bytes, device it was allocated on). Never destroyed (a static's destructor
// at exit would race detached pool threads and late frees).
struct allocation {
    size_t bytes;
    int device;
};
inline std::mutex &allocations_mutex = *new std::mutex;
inline std::map<uintptr_t, allocation> &allocations = *new std::map<uintptr_t, allocation>;

// The device whose allocation contains p (one past the end is outside), or -1 for memory not from cudaMalloc.
inline int device_of(const void *p) {
    if (p == nullptr) return -1;
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    std::lock_guard<std::mutex> lock(allocations_mutex);
    auto it = allocations.upper_bound(a);
    if (it == allocations.begin()) return -1;
    --it;
    return a - it->first < (it->second.bytes == 0 ? 1 : it->second.bytes) ? it->second.device : -1;
}

// True when p is not another device's memory; otherwise says so on stderr, records it for device_error and sets
// cudaErrorIllegalAddress, as the fault a card without peer access would report. `what` names the operation and
// the device, `which` the operand ("argument 3").
inline bool on_current_device(const char *what, const char *which, const void *p) {
    const int d = device_of(p);
    if (d < 0 || d == current_device) return true;
    char msg[512];
    std::snprintf(msg, sizeof msg,
                  "%s on device %d, but %s points into memory allocated on device %d (not the device current on "
                  "this host thread: cudaSetDevice missing on this thread?)",
                  what, current_device, which, d);
    std::fprintf(stderr, "d4j-emu: %s\n", msg);
    std::fflush(stderr);
    device_error = msg;
    last_error = cudaErrorIllegalAddress;
    return false;
}

// Highest limit any kernel was given with cudaFuncSetAttribute (not tracked per kernel: a simplification).
inline std::atomic<size_t> dynamic_smem_limit{kDefaultDynamicSmem};

// The static shared arrays (D4J_STATIC_SMEM) that have been reached at least once, poisoned before every block.
struct smem_array {
    void *p;
    size_t bytes;
};
inline std::mutex smem_arrays_mutex;
inline std::vector<smem_array> smem_arrays;

// Runs once per array, the first time any thread reaches its definition (a guarded static initialisation, which
// the block's other threads wait for): poisons it for the block under way too.
inline bool register_static_smem(void *p, size_t bytes) {
    std::lock_guard<std::mutex> lock(smem_arrays_mutex);
    smem_arrays.push_back({p, bytes});
    std::memset(p, 0xff, bytes);
    return true;
}

struct warp_state {
    std::unique_ptr<std::barrier<>> bar;  // over the lanes of this warp still running the kernel
    std::atomic<unsigned> live{0};        // bit per lane that has not returned yet
    // One slot per lane, written before the first barrier of a warp operation, read between its two barriers.
    uint64_t value[32];
    unsigned mask[32];
    uint64_t seq[32];  // how many warp operations the lane has done in this block
    const char *op[32];
    std::source_location site[32];
};

struct launch_state {
    const char *kernel;
    dim3 grid, block;
    size_t smem_bytes;
    unsigned nthreads, nwarps;
    uint64_t nblocks, current = 0;
    std::unique_ptr<std::barrier<>> block_bar;  // __syncthreads
    std::unique_ptr<warp_state[]> warps;
    void *smem = nullptr;

    // Fresh barriers, all lanes live, freshly poisoned shared memory: runs while every thread of the launch
    // waits between two blocks (or before the first), so nothing else touches this state.
    void start_block() {
        block_bar = std::make_unique<std::barrier<>>(static_cast<std::ptrdiff_t>(nthreads));
        for (unsigned w = 0; w < nwarps; ++w) {
            unsigned lanes = nthreads - w * 32 < 32 ? nthreads - w * 32 : 32;
            warps[w].bar = std::make_unique<std::barrier<>>(static_cast<std::ptrdiff_t>(lanes));
            warps[w].live.store(lanes == 32 ? 0xffffffffu : (1u << lanes) - 1, std::memory_order_relaxed);
        }
        std::free(smem);
        smem = std::malloc(smem_bytes);  // exact size, even 0, so that AddressSanitizer sees any overflow
        if (smem == nullptr && smem_bytes != 0) {
            std::fprintf(stderr, "d4j-emu: kernel %s: out of memory for %zu bytes of shared memory\n", kernel,
                         smem_bytes);
            std::abort();
        }
        if (smem_bytes != 0) std::memset(smem, 0xff, smem_bytes);
        std::lock_guard<std::mutex> lock(smem_arrays_mutex);
        for (const smem_array &a : smem_arrays) std::memset(a.p, 0xff, a.bytes);
    }
};

struct thread_ctx {
    launch_state *launch;
    warp_state *warp;
    unsigned lane;
    uint64_t seq;
};
inline thread_local thread_ctx *tls = nullptr;
// Called when this thread returns from a kernel, if set (tensor_core_emu.h: its cp.async copies still pending).
inline thread_local void (*on_kernel_return)() = nullptr;

[[noreturn]] inline void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
inline void fail(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (tls != nullptr) {
        std::fprintf(stderr, "d4j-emu: kernel %s, block (%u,%u,%u), thread (%u,%u,%u): %s\n", tls->launch->kernel,
                     blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z, msg);
    } else {
        std::fprintf(stderr, "d4j-emu: %s\n", msg);
    }
    std::fflush(stderr);
    std::abort();
}

inline thread_ctx &ctx(const char *op) {
    if (tls == nullptr) fail("%s called outside an emulated kernel", op);
    return *tls;
}

inline void *dynamic_smem() { return ctx("dynamic shared memory").launch->smem; }

// While alive, ThreadSanitizer neither sees this thread's memory accesses nor learns any ordering from its
// synchronisation: what happens inside is invisible to it.
struct tsan_blind {
#if defined(__SANITIZE_THREAD__)
    tsan_blind() {
        __tsan_ignore_thread_begin();
        AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
    }
    ~tsan_blind() {
        AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
        __tsan_ignore_thread_end();
    }
#endif
};

// A warp operation: publish this lane's value, wait for the other live lanes, check that the warp is converged
// on the same operation with the same mask, let `read` combine the published values, and wait again so that no
// lane overwrites its slot before everyone has read.
// The two barriers order all memory, but on hardware only __syncwarp does: a shuffle or a vote exchanges
// registers. So for those (orders_memory false) ThreadSanitizer is kept blind to the whole exchange, and a shared
// memory slot written by one lane and read by another with only a shuffle between them is a race it reports.
template <typename R, typename F>
R warp_collective(unsigned mask, uint64_t mine, const char *op, const std::source_location &site, F read,
                  bool orders_memory = false) {
    std::optional<tsan_blind> blind;
    if (!orders_memory) blind.emplace();
    thread_ctx &c = ctx(op);
    warp_state &w = *c.warp;
    w.value[c.lane] = mine;
    w.mask[c.lane] = mask;
    w.seq[c.lane] = ++c.seq;
    w.op[c.lane] = op;
    w.site[c.lane] = site;
    w.bar->arrive_and_wait();
    unsigned live = w.live.load(std::memory_order_relaxed);
    if (mask != live) {
        launch_state &L = *c.launch;
        fail("%s at %s:%u: mask 0x%08x, but the live lanes of warp %u are 0x%08x (block of %u threads%s). "
             "The emulator requires the mask to name exactly the lanes that have not returned",
             op, site.file_name(), site.line(), mask, static_cast<unsigned>(c.warp - L.warps.get()), live,
             L.nthreads, L.nthreads % 32 != 0 ? ", not a multiple of 32: the last warp is partial" : "");
    }
    for (unsigned l = 0; l < 32; ++l) {
        if (!(live >> l & 1u)) continue;
        bool same_site = w.site[l].line() == site.line() && w.site[l].column() == site.column() &&
                         std::strcmp(w.site[l].file_name(), site.file_name()) == 0;
        if (w.seq[l] != c.seq || w.op[l] != op || !same_site) {
            fail("warp diverged: lane %u is at %s (%s:%u, warp operation #%llu), lane %u at %s (%s:%u, #%llu); "
                 "every live lane must reach the same warp operation",
                 c.lane, op, site.file_name(), site.line(), static_cast<unsigned long long>(c.seq), l, w.op[l],
                 w.site[l].file_name(), w.site[l].line(), static_cast<unsigned long long>(w.seq[l]));
        }
    }
    R result = read(static_cast<const uint64_t *>(w.value), c.lane, mask);
    w.bar->arrive_and_wait();
    return result;
}

template <typename T>
uint64_t to_bits(T v) {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "warp shuffles move at most 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    return bits;
}
template <typename T>
T from_bits(uint64_t bits) {
    T v;
    std::memcpy(&v, &bits, sizeof(T));
    return v;
}

// `source(lane)` is the lane to read, or -1 for "my own value" (a source outside the lane's width segment).
template <typename T, typename Source>
T shuffle(unsigned mask, T var, int width, const char *op, const std::source_location &site, Source source) {
    if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
        fail("%s at %s:%u: width %d is not a power of 2 in [1, 32]", op, site.file_name(), site.line(), width);
    }
    uint64_t bits = warp_collective<uint64_t>(
        mask, to_bits(var), op, site, [&](const uint64_t *values, unsigned lane, unsigned m) {
            int src = source(static_cast<int>(lane));
            if (src < 0) return values[lane];
            // Undefined on hardware; all-ones bits (NaN, -1) make any use of the value show.
            if (!(m >> src & 1u)) return ~uint64_t{0};
            return values[src];
        });
    return from_bits<T>(bits);
}

// The OS threads that play CUDA threads. Creating a thread costs ~60 us, ~1.6 ms under ThreadSanitizer, far
// more than running a small block, so threads are created once (grown to the largest block seen) and reused by
// every launch. They are detached and never stopped: at exit they sleep on their semaphores.
class thread_pool {
public:
    // Runs job(i) for i in [0, n) on n different threads and returns when all have finished.
    void run(unsigned n, const std::function<void(unsigned)> &job) {
        while (workers_.size() < n) {
            workers_.push_back(std::make_unique<worker>());
            std::thread(&thread_pool::work, this, static_cast<unsigned>(workers_.size() - 1), workers_.back().get())
                .detach();
        }
        std::latch done(n);
        job_ = &job;  // published to the workers by the semaphore releases below
        done_ = &done;
        for (unsigned i = 0; i < n; ++i) workers_[i]->go.release();
        done.wait();
    }

private:
    struct worker {
        std::binary_semaphore go{0};
    };
    void work(unsigned index, worker *self) {
        for (;;) {
            self->go.acquire();
            std::latch *done = done_;  // read before counting down: the launcher may return right after
            (*job_)(index);
            done->count_down();
        }
    }
    std::vector<std::unique_ptr<worker>> workers_;
    const std::function<void(unsigned)> *job_ = nullptr;
    std::latch *done_ = nullptr;
};

// ---- Streams and CUDA graphs. A stream is a token (work runs when it is queued); a stream under capture queues
// nothing: each operation issued to it (a launch, cudaMemsetAsync, cudaMemcpyAsync, an emulated GEMM) is appended
// to the graph as a closure holding its arguments by value, as a captured node holds them, and replaying the graph
// runs the closures in order. What CUDA refuses during a capture is refused here too, so that code which would
// break a capture on a card breaks it here: a capture on the legacy (null) stream, and, from the capturing thread
// (cudaStreamCaptureModeThreadLocal's rule; the only mode emulated), the calls that wait for or allocate device
// memory: cudaStreamSynchronize, cudaDeviceSynchronize, cudaMalloc, cudaFree, cudaMemcpy, cudaMemset. Each fails
// with cudaErrorStreamCaptureUnsupported and invalidates the capture (cudaStreamEndCapture then fails with
// cudaErrorStreamCaptureInvalidated and gives no graph). Not modelled: events, several streams joined into one
// capture, graph updates.
struct stream_state {
    int device;  // current at cudaStreamCreate (not checked at launch: see the devices note above)
};
struct capture_state {
    std::vector<std::function<void()>> ops;
    bool invalidated = false;
};
inline std::mutex &capture_mutex = *new std::mutex;
inline std::map<cudaStream_t, capture_state> &captures = *new std::map<cudaStream_t, capture_state>;
// The stream this host thread is capturing, or null.
inline thread_local cudaStream_t capturing = nullptr;

// Runs `op` now, or appends it to the graph being captured on `stream`.
inline void enqueue(cudaStream_t stream, std::function<void()> op) {
    if (stream != nullptr) {
        std::unique_lock<std::mutex> lock(capture_mutex);
        if (auto it = captures.find(stream); it != captures.end()) {
            it->second.ops.push_back(std::move(op));
            return;
        }
    }
    op();
}

inline bool is_capturing(cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(capture_mutex);
    return stream != nullptr && captures.count(stream) != 0;
}

// True (and the capture invalidated, the reason on stderr) when this thread is capturing: `call` may not run.
inline bool unsafe_during_capture(const char *call) {
    if (capturing == nullptr) return false;
    {
        std::lock_guard<std::mutex> lock(capture_mutex);
        if (auto it = captures.find(capturing); it != captures.end()) it->second.invalidated = true;
    }
    std::fprintf(stderr, "d4j-emu: %s called while this thread captures a CUDA graph: not allowed, the capture "
                         "is invalidated\n", call);
    std::fflush(stderr);
    return true;
}

// The hardware's limits on a launch configuration.
inline bool valid_config(dim3 grid, dim3 block, size_t smem_bytes) {
    uint64_t nthreads = uint64_t{block.x} * block.y * block.z;
    uint64_t nblocks = uint64_t{grid.x} * grid.y * grid.z;
    return nthreads >= 1 && nthreads <= kMaxThreadsPerBlock && block.x <= 1024 && block.y <= 1024 && block.z <= 64 &&
           nblocks >= 1 && grid.x <= 0x7fffffffu && grid.y <= 65535 && grid.z <= 65535 &&
           smem_bytes <= dynamic_smem_limit.load();
}

// Runs `body` (one call of the kernel) on block-size threads, block after block. Not reentrant: a kernel may not
// launch a kernel.
inline void run(const char *kernel, dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()> &body) {
    if (tls != nullptr) fail("kernel %s launched from inside a kernel (dynamic parallelism is not emulated)", kernel);
    if (!valid_config(grid, block, smem_bytes)) {
        last_error = cudaErrorInvalidConfiguration;
        return;
    }
    uint64_t nthreads = uint64_t{block.x} * block.y * block.z;
    uint64_t nblocks = uint64_t{grid.x} * grid.y * grid.z;
    // `__shared__` arrays are static and the pool is shared: one launch at a time. Both live forever (never
    // destroyed at exit, when detached workers may still reference the pool).
    static std::mutex &launch_mutex = *new std::mutex;
    static thread_pool &pool = *new thread_pool;
    std::lock_guard<std::mutex> lock(launch_mutex);

    launch_state L;
    L.kernel = kernel;
    L.grid = grid;
    L.block = block;
    L.smem_bytes = smem_bytes;
    L.nthreads = static_cast<unsigned>(nthreads);
    L.nwarps = (L.nthreads + 31) / 32;
    L.nblocks = nblocks;
    L.warps = std::make_unique<warp_state[]>(L.nwarps);
    L.start_block();
    // Between two blocks every thread waits here; the last one to arrive prepares the next block.
    auto next_block = [&L]() noexcept {
        if (++L.current < L.nblocks) L.start_block();
    };
    std::barrier between(static_cast<std::ptrdiff_t>(L.nthreads), next_block);

    pool.run(L.nthreads, [&](unsigned tid) {
        threadIdx = {tid % block.x, tid / block.x % block.y, tid / (block.x * block.y)};
        blockDim = block;
        gridDim = grid;
        thread_ctx c{&L, &L.warps[tid / 32], tid % 32, 0};
        tls = &c;
        for (uint64_t b = 0; b < nblocks; ++b) {
            blockIdx = {static_cast<unsigned>(b % grid.x), static_cast<unsigned>(b / grid.x % grid.y),
                        static_cast<unsigned>(b / (uint64_t{grid.x} * grid.y))};
            c.seq = 0;
            body();
            if (on_kernel_return != nullptr) on_kernel_return();
            // Returned from the kernel: this thread no longer counts at the block's or its warp's barriers.
            c.warp->live.fetch_and(~(1u << c.lane), std::memory_order_relaxed);
            c.warp->bar->arrive_and_drop();
            L.block_bar->arrive_and_drop();
            between.arrive_and_wait();
        }
        tls = nullptr;
    });
    std::free(L.smem);
    L.smem = nullptr;
}

// Kernel arguments are evaluated once, by the launching thread, as `<<<>>>` does; each emulated thread calls
// the kernel with its own copies of them (kernels may modify their by-value parameters).
// Pointer arguments are checked against the device current on the launching thread first (on_current_device).
// Under capture the launch is checked now (devices, configuration: the errors a card reports at the launch) and
// run at each replay with the arguments of this call.
template <typename Call, typename... Args>
void launch(dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream, const char *kernel, Call call,
            Args... args) {
    const std::string what = std::string("kernel ") + kernel + " launched";
    int index = 0;
    auto same_device = [&](const auto &arg) {
        ++index;
        if constexpr (std::is_pointer_v<std::decay_t<decltype(arg)>>)
            return on_current_device(what.c_str(), ("argument " + std::to_string(index)).c_str(),
                                     static_cast<const void *>(arg));
        else
            return true;
    };
    if (!(same_device(args) && ...)) return;
    if (!valid_config(grid, block, smem_bytes)) {
        last_error = cudaErrorInvalidConfiguration;
        return;
    }
    enqueue(stream, [=, params = std::tuple<Args...>(args...)] {
        run(kernel, grid, block, smem_bytes, [&] { std::apply(call, params); });
    });
}

}  // namespace d4j_emu

// ---- Synchronisation.
inline void __syncthreads() { d4j_emu::ctx("__syncthreads").launch->block_bar->arrive_and_wait(); }
// Blocks run one after another with a barrier between them and atomics are sequentially consistent, so there is
// nothing left for a fence to order (the emulator cannot find missing fences).
inline void __threadfence() {}
inline void __threadfence_block() {}

inline void __syncwarp(unsigned mask = 0xffffffffu, std::source_location site = std::source_location::current()) {
    d4j_emu::warp_collective<int>(
        mask, 0, "__syncwarp", site, [](const uint64_t *, unsigned, unsigned) { return 0; }, true);
}
inline unsigned __activemask() { return d4j_emu::ctx("__activemask").warp->live.load(std::memory_order_relaxed); }

// ---- Warp shuffles and votes (any trivially copyable type of at most 8 bytes).
template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize,
              std::source_location site = std::source_location::current()) {
    return d4j_emu::shuffle(mask, var, width, "__shfl_sync", site,
                            [&](int lane) { return (lane & ~(width - 1)) | (src_lane & (width - 1)); });
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                 std::source_location site = std::source_location::current()) {
    return d4j_emu::shuffle(mask, var, width, "__shfl_up_sync", site, [&](int lane) {
        return static_cast<unsigned>(lane & (width - 1)) >= delta ? lane - static_cast<int>(delta) : -1;
    });
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                   std::source_location site = std::source_location::current()) {
    return d4j_emu::shuffle(mask, var, width, "__shfl_down_sync", site, [&](int lane) {
        return static_cast<unsigned>(lane & (width - 1)) + delta < static_cast<unsigned>(width)
                   ? lane + static_cast<int>(delta)
                   : -1;
    });
}
// A source in a later width segment yields the caller's own value; earlier segments are readable (CUDA's rule).
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                  std::source_location site = std::source_location::current()) {
    return d4j_emu::shuffle(mask, var, width, "__shfl_xor_sync", site, [&](int lane) {
        int src = lane ^ lane_mask;
        return src >= ((lane / width) + 1) * width || src > 31 ? -1 : src;
    });
}
inline unsigned __ballot_sync(unsigned mask, int predicate,
                              std::source_location site = std::source_location::current()) {
    return d4j_emu::warp_collective<unsigned>(mask, predicate != 0, "__ballot_sync", site,
                                              [](const uint64_t *values, unsigned, unsigned m) {
                                                  unsigned ballot = 0;
                                                  for (unsigned l = 0; l < 32; ++l)
                                                      if ((m >> l & 1u) && values[l] != 0) ballot |= 1u << l;
                                                  return ballot;
                                              });
}
inline int __any_sync(unsigned mask, int predicate, std::source_location site = std::source_location::current()) {
    return __ballot_sync(mask, predicate, site) != 0;
}
inline int __all_sync(unsigned mask, int predicate, std::source_location site = std::source_location::current()) {
    return __ballot_sync(mask, predicate, site) == mask;
}

// ---- Atomics: std::atomic_ref, sequentially consistent; they return the old value as CUDA's do.
template <typename T>
T atomicAdd(T *address, std::type_identity_t<T> v) {
    return std::atomic_ref<T>(*address).fetch_add(v);
}
template <typename T>
T atomicSub(T *address, std::type_identity_t<T> v) {
    return std::atomic_ref<T>(*address).fetch_sub(v);
}
template <typename T>
T atomicExch(T *address, std::type_identity_t<T> v) {
    return std::atomic_ref<T>(*address).exchange(v);
}
template <std::integral T>
T atomicCAS(T *address, std::type_identity_t<T> compare, std::type_identity_t<T> v) {
    std::atomic_ref<T>(*address).compare_exchange_strong(compare, v);
    return compare;  // the old value, whether or not it was replaced
}
template <std::integral T>
T atomicMax(T *address, std::type_identity_t<T> v) {
    std::atomic_ref<T> a(*address);
    T old = a.load();
    while (old < v && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}
template <std::integral T>
T atomicMin(T *address, std::type_identity_t<T> v) {
    std::atomic_ref<T> a(*address);
    T old = a.load();
    while (old > v && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}

// ---- Loads and stores with cache hints: plain accesses here.
template <typename T>
T __ldg(const T *p) { return *p; }
template <typename T>
T __ldcs(const T *p) { return *p; }
template <typename T>
T __ldcg(const T *p) { return *p; }
template <typename T>
T __ldlu(const T *p) { return *p; }
template <typename T>
void __stcs(T *p, std::type_identity_t<T> v) { *p = v; }
template <typename T>
void __stcg(T *p, std::type_identity_t<T> v) { *p = v; }
template <typename T>
void __stwt(T *p, std::type_identity_t<T> v) { *p = v; }

// ---- Math intrinsics (exact versions of the fast ones) and device overloads that host code lacks.
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __exp2f(float x) { return std::exp2(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fmul_rn(float x, float y) { return x * y; }  // this build has no -mfma: nothing to keep unfused
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline int __popc(unsigned x) { return std::popcount(x); }
inline int __popcll(unsigned long long x) { return std::popcount(x); }
inline int __clz(int x) { return std::countl_zero(static_cast<unsigned>(x)); }
inline int __ffs(int x) { return x == 0 ? 0 : std::countr_zero(static_cast<unsigned>(x)) + 1; }
// CUDA's device min/max overloads (same-type ones; mixed types are ambiguous here: cast at the call).
#define D4J_EMU_MINMAX(T)                               \
    inline T min(T a, T b) { return b < a ? b : a; } \
    inline T max(T a, T b) { return a < b ? b : a; }
D4J_EMU_MINMAX(int)
D4J_EMU_MINMAX(unsigned)
D4J_EMU_MINMAX(long)
D4J_EMU_MINMAX(unsigned long)
D4J_EMU_MINMAX(long long)
D4J_EMU_MINMAX(unsigned long long)
#undef D4J_EMU_MINMAX
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

// ---- Host API.
inline cudaError_t cudaGetLastError() {
    cudaError_t e = d4j_emu::last_error;
    d4j_emu::last_error = cudaSuccess;
    return e;
}
inline cudaError_t cudaPeekAtLastError() { return d4j_emu::last_error; }
inline const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "cudaSuccess";
        case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
        case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
        case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
        case cudaErrorNoDevice: return "cudaErrorNoDevice";
        case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
        case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
        case cudaErrorIllegalState: return "cudaErrorIllegalState";
        case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
        case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    }
    return "cudaErrorUnknown";
}
inline const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorMemoryAllocation: return "out of memory";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        case cudaErrorNoDevice: return "no CUDA-capable device is detected";
        case cudaErrorInvalidDevice: return "invalid device ordinal";
        case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
        case cudaErrorIllegalState: return "the resource is not in a valid state";
        case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
        case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    }
    return "unknown error";
}
// Launches run synchronously: there is never anything to wait for, but waiting is refused during a capture.
inline cudaError_t cudaStreamSynchronize(cudaStream_t) {
    return d4j_emu::unsafe_during_capture("cudaStreamSynchronize") ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() {
    return d4j_emu::unsafe_during_capture("cudaDeviceSynchronize") ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
inline cudaError_t cudaGetDeviceCount(int *count) {
    *count = d4j_emu::kDeviceCount;
    return cudaSuccess;
}
// The current device of the calling host thread only, as CUDA's runtime.
inline cudaError_t cudaSetDevice(int device) {
    if (device < 0 || device >= d4j_emu::kDeviceCount) return cudaErrorInvalidDevice;
    d4j_emu::current_device = device;
    return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int *device) {
    *device = d4j_emu::current_device;
    return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device) {
    if (device < 0 || device >= d4j_emu::kDeviceCount) return cudaErrorInvalidDevice;
    switch (attr) {
        case cudaDevAttrMaxThreadsPerBlock: *value = static_cast<int>(d4j_emu::kMaxThreadsPerBlock); break;
        case cudaDevAttrMaxSharedMemoryPerBlock: *value = static_cast<int>(d4j_emu::kDefaultDynamicSmem); break;
        case cudaDevAttrWarpSize: *value = warpSize; break;
        case cudaDevAttrMultiProcessorCount: *value = d4j_emu::kSmCount; break;
        case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
        case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
        case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(d4j_emu::kMaxDynamicSmemOptin); break;
        default: return cudaErrorInvalidValue;
    }
    return cudaSuccess;
}
template <typename Kernel>
cudaError_t cudaFuncSetAttribute(Kernel *, cudaFuncAttribute attr, int value) {
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
        static_cast<size_t>(value) > d4j_emu::kMaxDynamicSmemOptin)
        return cudaErrorInvalidValue;
    size_t v = static_cast<size_t>(value), cur = d4j_emu::dynamic_smem_limit.load();
    while (cur < v && !d4j_emu::dynamic_smem_limit.compare_exchange_weak(cur, v)) {
    }
    return cudaSuccess;
}
// "Device" memory is host memory of exactly the requested size (AddressSanitizer sees overflows), 256-byte
// aligned as cudaMalloc's, tagged with the calling thread's current device.
inline cudaError_t cudaMalloc(void **ptr, size_t bytes) {
    *ptr = nullptr;
    if (d4j_emu::unsafe_during_capture("cudaMalloc")) return cudaErrorStreamCaptureUnsupported;
    if (posix_memalign(ptr, 256, bytes == 0 ? 1 : bytes) != 0) {
        *ptr = nullptr;
        return cudaErrorMemoryAllocation;
    }
    std::lock_guard<std::mutex> lock(d4j_emu::allocations_mutex);
    d4j_emu::allocations[reinterpret_cast<uintptr_t>(*ptr)] = {bytes, d4j_emu::current_device};
    return cudaSuccess;
}
template <typename T>
cudaError_t cudaMalloc(T **ptr, size_t bytes) {
    return cudaMalloc(reinterpret_cast<void **>(ptr), bytes);
}
// As CUDA's, from any device (unified addressing finds the owner); a pointer cudaMalloc did not return is an error.
inline cudaError_t cudaFree(void *ptr) {
    if (ptr == nullptr) return cudaSuccess;
    if (d4j_emu::unsafe_during_capture("cudaFree")) return cudaErrorStreamCaptureUnsupported;
    {
        std::lock_guard<std::mutex> lock(d4j_emu::allocations_mutex);
        if (d4j_emu::allocations.erase(reinterpret_cast<uintptr_t>(ptr)) == 0) return cudaErrorInvalidValue;
    }
    std::free(ptr);
    return cudaSuccess;
}
// Refused on another device's memory, as a kernel would be. cudaMemcpy is not checked: with unified addressing
// CUDA finds each side's device from the pointer and copies between devices (through the host without peer access).
inline cudaError_t cudaMemsetAsync(void *ptr, int value, size_t bytes, cudaStream_t stream = nullptr) {
    if (!d4j_emu::on_current_device("cudaMemset", "its destination", ptr)) return cudaErrorIllegalAddress;
    if (bytes != 0) d4j_emu::enqueue(stream, [=] { std::memset(ptr, value, bytes); });
    return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind,
                                   cudaStream_t stream = nullptr) {
    if (bytes != 0) d4j_emu::enqueue(stream, [=] { std::memmove(dst, src, bytes); });
    return cudaSuccess;
}
inline cudaError_t cudaMemset(void *ptr, int value, size_t bytes) {
    if (d4j_emu::unsafe_during_capture("cudaMemset")) return cudaErrorStreamCaptureUnsupported;
    return cudaMemsetAsync(ptr, value, bytes);
}
inline cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    if (d4j_emu::unsafe_during_capture("cudaMemcpy")) return cudaErrorStreamCaptureUnsupported;
    return cudaMemcpyAsync(dst, src, bytes, kind);
}

// ---- Streams and graphs (see "Streams and CUDA graphs" above).
struct CUstream_st {
    d4j_emu::stream_state state;
};
struct CUgraph_st {
    std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
    std::vector<std::function<void()>> ops;
};
inline cudaError_t cudaStreamCreate(cudaStream_t *stream) {
    *stream = new CUstream_st{{d4j_emu::current_device}};
    return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    if (stream == nullptr) return cudaErrorInvalidValue;
    {
        std::lock_guard<std::mutex> lock(d4j_emu::capture_mutex);
        if (d4j_emu::captures.count(stream) != 0) return cudaErrorIllegalState;
    }
    delete stream;
    return cudaSuccess;
}
inline cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
    // The legacy stream synchronises with every other stream: CUDA cannot capture it.
    if (stream == nullptr) return cudaErrorStreamCaptureUnsupported;
    if (mode != cudaStreamCaptureModeThreadLocal) return cudaErrorInvalidValue;  // the only mode emulated
    if (d4j_emu::capturing != nullptr) return cudaErrorIllegalState;            // one capture per thread here
    std::lock_guard<std::mutex> lock(d4j_emu::capture_mutex);
    if (!d4j_emu::captures.emplace(stream, d4j_emu::capture_state{}).second) return cudaErrorIllegalState;
    d4j_emu::capturing = stream;
    return cudaSuccess;
}
inline cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus *status) {
    *status = d4j_emu::is_capturing(stream) ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
    return cudaSuccess;
}
inline cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph) {
    *graph = nullptr;
    if (d4j_emu::capturing != stream) return cudaErrorIllegalState;  // not capturing, or another thread's capture
    d4j_emu::capture_state done;
    {
        std::lock_guard<std::mutex> lock(d4j_emu::capture_mutex);
        auto it = d4j_emu::captures.find(stream);
        done = std::move(it->second);
        d4j_emu::captures.erase(it);
    }
    d4j_emu::capturing = nullptr;
    if (done.invalidated) return cudaErrorStreamCaptureInvalidated;
    *graph = new CUgraph_st{std::move(done.ops)};
    return cudaSuccess;
}
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags = 0) {
    *exec = nullptr;
    if (graph == nullptr || flags != 0) return cudaErrorInvalidValue;
    *exec = new CUgraphExec_st{graph->ops};
    return cudaSuccess;
}
inline cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    delete graph;
    return cudaSuccess;
}
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    delete exec;
    return cudaSuccess;
}
// Replays the captured work in capture order (queued into a capture of `stream` if that stream is capturing, as
// a child graph would be: not needed, so refused).
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
    if (exec == nullptr) return cudaErrorInvalidValue;
    {
        std::lock_guard<std::mutex> lock(d4j_emu::capture_mutex);
        if (d4j_emu::captures.count(stream) != 0) return cudaErrorStreamCaptureUnsupported;
    }
    // A replayed launch that fails (another device's memory) leaves its error, as it would at its first launch.
    const cudaError_t before = d4j_emu::last_error;
    d4j_emu::last_error = cudaSuccess;
    for (const auto &op : exec->ops) op();
    const cudaError_t e = d4j_emu::last_error;
    if (e == cudaSuccess) d4j_emu::last_error = before;
    return e;
}


#include "cuda_bf16_emu.h"  // __nv_bfloat16 and its conversions, as <cuda_bf16.h> has them
#endif
