// The CUDA implementation's housekeeping entries; the kernels live in one file per op.
// Compiled by nvcc into libdistill4j_cuda and by g++ (emu/cuda_emu.h) into libdistill4j_cudaemu.
#include "common.cuh"
#include "distill4j_impl.h"
#include "launch.cuh"

#include <cstdio>
#include <string>

namespace {
thread_local std::string last_error = "no error";
}

int d4j::cuda::fail(const char *message) {
    last_error = message;
    return 1;
}

int d4j::cuda::check_launch(const char *what) {
    const cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) return 0;
    last_error = std::string(what) + ": " + cudaGetErrorString(e);
#if D4J_CUDA_EMU
    // The emulator's reason (which argument, which devices) is worth more than the error code's text.
    if (e == cudaErrorIllegalAddress && !d4j_emu::device_error.empty())
        last_error += " (emulator: " + d4j_emu::device_error + ")";
    d4j_emu::device_error.clear();
#endif
    return 1;
}

D4J_IMPL_API int d4j_impl_init(int device) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) return d4j::cuda::fail((std::string("no usable CUDA device: ") + cudaGetErrorString(e)).c_str());
    if (device < 0 || device >= count) {
        char msg[128];
        std::snprintf(msg, sizeof msg, "CUDA device %d does not exist (%s %d)", device,
                      D4J_CUDA_EMU ? "the emulator has" : "this machine has", count);
        return d4j::cuda::fail(msg);
    }
#ifdef __CUDACC__
    cudaDeviceProp prop{};
    if ((e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess)
        return d4j::cuda::fail(cudaGetErrorString(e));
    // The fat binary holds sm_80, 86, 89, 90 and PTX for newer: older cards have no code to run.
    if (prop.major < 8) {
        // prop.name is up to 256 bytes: build the message as a string (a fixed buffer would truncate, and gcc's
        // -Werror=format-truncation in Release builds says so).
        return d4j::cuda::fail(("CUDA device " + std::to_string(device) + " (" + prop.name + ") has compute capability " +
                                std::to_string(prop.major) + "." + std::to_string(prop.minor) +
                                "; distill4j needs 8.0 or newer").c_str());
    }
#endif
    return d4j_impl_set_device(device);
}

// CUDA's current device belongs to the host thread, and a backend opened on one thread is used from others (Java
// hands a model from thread to thread): the dispatch library calls this before every entry. cudaGetDevice first,
// as PyTorch's c10::cuda::SetDevice does: it reads the runtime's per-thread state (no driver round trip), and,
// unlike a cache of our own, it stays true when other code on the thread (the Java preset, libtorch, the user's)
// sets a device in between.
D4J_IMPL_API int d4j_impl_set_device(int device) {
    int current = -1;
    if (cudaGetDevice(&current) == cudaSuccess && current == device) return 0;
    const cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess) return 0;
    return d4j::cuda::fail(("cudaSetDevice(" + std::to_string(device) + "): " + cudaGetErrorString(e)).c_str());
}

#if D4J_CUDA_EMU
// Memory for the Java cuda-emu backend: the emulator's cudaMalloc, so that each block carries the device current
// at the call and the emulator can catch a launch with another device current (see d4j_impl_malloc).
D4J_IMPL_API void *d4j_impl_malloc(size_t bytes) {
    void *p = nullptr;
    return cudaMalloc(&p, bytes) == cudaSuccess ? p : nullptr;
}

D4J_IMPL_API int d4j_impl_free(void *ptr) {
    const cudaError_t e = cudaFree(ptr);
    return e == cudaSuccess ? 0 : d4j::cuda::fail((std::string("cudaFree: ") + cudaGetErrorString(e)).c_str());
}
#endif

D4J_IMPL_API const char *d4j_impl_last_error(void) { return last_error.c_str(); }

D4J_IMPL_API int d4j_impl_synchronize(void *stream) {
    const cudaError_t e = cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
    return e == cudaSuccess ? 0 : d4j::cuda::fail(cudaGetErrorString(e));
}

// ---- Streams, queued zero/copy and CUDA graphs (distill4j_impl.h). The Java CUDA backend makes its stream and
// copies through the cudart preset; the emulated backend, whose memory is host memory, comes here so that its zero
// and copies are stream work the emulator can capture like a card's.
namespace {
int cuda_fail(const char *what, cudaError_t e) {
    cudaGetLastError();  // a failed runtime call must not read as a failed launch at the next check
    return d4j::cuda::fail((std::string(what) + ": " + cudaGetErrorString(e)).c_str());
}
}  // namespace

D4J_IMPL_API int d4j_impl_stream_create(void **stream) {
    cudaStream_t s = nullptr;
    if (const cudaError_t e = cudaStreamCreate(&s); e != cudaSuccess) return cuda_fail("cudaStreamCreate", e);
    *stream = s;
    return 0;
}

D4J_IMPL_API int d4j_impl_stream_destroy(void *stream) {
    if (const cudaError_t e = cudaStreamDestroy(static_cast<cudaStream_t>(stream)); e != cudaSuccess)
        return cuda_fail("cudaStreamDestroy", e);
    return 0;
}

D4J_IMPL_API int d4j_impl_zero_async(void *stream, void *ptr, size_t bytes) {
    if (const cudaError_t e = cudaMemsetAsync(ptr, 0, bytes, static_cast<cudaStream_t>(stream)); e != cudaSuccess)
        return cuda_fail("cudaMemsetAsync", e);
    return 0;
}

D4J_IMPL_API int d4j_impl_copy_async(void *stream, void *dst, const void *src, size_t bytes) {
    if (const cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, static_cast<cudaStream_t>(stream));
        e != cudaSuccess)
        return cuda_fail("cudaMemcpyAsync", e);
    return 0;
}

D4J_IMPL_API int d4j_impl_graph_begin(void *stream) {
    // Thread-local mode: a cudaMalloc on another thread (another backend, the JVM's other work) must not break this
    // capture, while one on this thread, which the captured step must never make, does.
    if (const cudaError_t e = cudaStreamBeginCapture(static_cast<cudaStream_t>(stream), cudaStreamCaptureModeThreadLocal);
        e != cudaSuccess)
        return cuda_fail("cudaStreamBeginCapture", e);
    return 0;
}

D4J_IMPL_API int d4j_impl_graph_end(void *stream, void **graph) {
    *graph = nullptr;
    cudaGraph_t g = nullptr;
    if (const cudaError_t e = cudaStreamEndCapture(static_cast<cudaStream_t>(stream), &g); e != cudaSuccess) {
        if (g != nullptr) cudaGraphDestroy(g);
        return cuda_fail("cudaStreamEndCapture (the captured work waited for the device, allocated, copied "
                         "synchronously or failed: it cannot be a graph)", e);
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);  // the executable graph is a copy
    if (e != cudaSuccess) return cuda_fail("cudaGraphInstantiate", e);
    *graph = exec;
    return 0;
}

D4J_IMPL_API int d4j_impl_graph_launch(void *stream, void *graph) {
    if (graph == nullptr) return d4j::cuda::fail("graph_launch: null graph");
    if (const cudaError_t e = cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph), static_cast<cudaStream_t>(stream));
        e != cudaSuccess)
        return cuda_fail("cudaGraphLaunch", e);
    return 0;
}

D4J_IMPL_API int d4j_impl_graph_destroy(void *graph) {
    if (graph == nullptr) return 0;
    if (const cudaError_t e = cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph)); e != cudaSuccess)
        return cuda_fail("cudaGraphExecDestroy", e);
    return 0;
}
