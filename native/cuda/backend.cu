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
    return 1;
}

D4J_IMPL_API int d4j_impl_init(int device) {
#ifdef __CUDACC__
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) return d4j::cuda::fail((std::string("no usable CUDA device: ") + cudaGetErrorString(e)).c_str());
    if (device < 0 || device >= count) {
        char msg[128];
        std::snprintf(msg, sizeof msg, "CUDA device %d does not exist (this machine has %d)", device, count);
        return d4j::cuda::fail(msg);
    }
    cudaDeviceProp prop{};
    if ((e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess || (e = cudaSetDevice(device)) != cudaSuccess)
        return d4j::cuda::fail(cudaGetErrorString(e));
    // The fat binary holds sm_80, 86, 89, 90 and PTX for newer: older cards have no code to run.
    if (prop.major < 8) {
        // prop.name is up to 256 bytes: build the message as a string (a fixed buffer would truncate, and gcc's
        // -Werror=format-truncation in Release builds says so).
        return d4j::cuda::fail(("CUDA device " + std::to_string(device) + " (" + prop.name + ") has compute capability " +
                                std::to_string(prop.major) + "." + std::to_string(prop.minor) +
                                "; distill4j needs 8.0 or newer").c_str());
    }
    return 0;
#else
    return device == 0 ? 0 : d4j::cuda::fail("the emulated CUDA backend has one device, 0");
#endif
}

D4J_IMPL_API const char *d4j_impl_last_error(void) { return last_error.c_str(); }

D4J_IMPL_API int d4j_impl_synchronize(void *stream) {
    const cudaError_t e = cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
    return e == cudaSuccess ? 0 : d4j::cuda::fail(cudaGetErrorString(e));
}
