package org.distill4j.backend;

import static org.bytedeco.cuda.global.cudart.cudaDevAttrComputeCapabilityMajor;
import static org.bytedeco.cuda.global.cudart.cudaDevAttrComputeCapabilityMinor;
import static org.bytedeco.cuda.global.cudart.cudaDeviceGetAttribute;
import static org.bytedeco.cuda.global.cudart.cudaFree;
import static org.bytedeco.cuda.global.cudart.cudaGetDeviceCount;
import static org.bytedeco.cuda.global.cudart.cudaGetErrorString;
import static org.bytedeco.cuda.global.cudart.cudaMalloc;
import static org.bytedeco.cuda.global.cudart.cudaMemGetInfo;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyAsync;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyDeviceToDevice;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyDeviceToHost;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyHostToDevice;
import static org.bytedeco.cuda.global.cudart.cudaMemsetAsync;
import static org.bytedeco.cuda.global.cudart.cudaSetDevice;
import static org.bytedeco.cuda.global.cudart.cudaStreamCreate;
import static org.bytedeco.cuda.global.cudart.cudaStreamDestroy;
import static org.bytedeco.cuda.global.cudart.cudaStreamSynchronize;

import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.cuda.global.cudart;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.SizeTPointer;
import org.distill4j.Device;
import org.distill4j.MemoryLimitException;
import org.distill4j.Precision;
import org.distill4j.natives.Distill4jNative;

/**
 * Device memory and one stream through the {@code org.bytedeco:cuda} preset, kernels from libdistill4j_cuda.
 *
 * <p>One CUDA runtime per process: the preset loads libcudart.so.13 first, and libdistill4j_cuda links the same
 * shared libcudart, so the dynamic loader hands it the copy already loaded (same soname): pointers and streams
 * from either side are valid on the other.
 *
 * <p>CUDA's current device belongs to the host thread, and a backend is used from whichever thread holds it: every
 * runtime call here first makes this backend's device current on the calling thread ({@code useDevice}, through
 * the dispatch library's {@code d4j_backend_use_device}: a cudaGetDevice when it already is), as every kernel call
 * does in the dispatch library. Without it, a backend opened for cuda:1 on one thread would allocate and copy on
 * device 0 from another.
 */
public final class CudaBackend extends NativeBackend {
    private CUstream_st stream;
    private final int capability;  // compute capability as 10 * major + minor: 90 for an H100

    private CudaBackend(Device device) {
        super(device);
        String why = unavailableReason(device.index());
        if (why != null) throw new BackendUnavailableException("CUDA backend unavailable: " + why);
        checkCuda(cudaSetDevice(device.index()), "cudaSetDevice");
        openKernels("cuda");
        useDevice();
        int[] major = new int[1], minor = new int[1];
        checkCuda(cudaDeviceGetAttribute(major, cudaDevAttrComputeCapabilityMajor, device.index()),
                "cudaDeviceGetAttribute(major)");
        checkCuda(cudaDeviceGetAttribute(minor, cudaDevAttrComputeCapabilityMinor, device.index()),
                "cudaDeviceGetAttribute(minor)");
        this.capability = 10 * major[0] + minor[0];
        CUstream_st s = new CUstream_st();
        checkCuda(cudaStreamCreate(s), "cudaStreamCreate");
        this.stream = s;
    }

    /** The device's compute capability as 10 × major + minor (80 for an A100, 90 for an H100). */
    public int computeCapability() {
        return capability;
    }

    /** TF32 and BF16 need the tensor cores of compute capability 8.0 (Ampere) or newer. */
    @Override
    public String unsupported(Precision precision) {
        if (precision == Precision.FP32 || capability >= 80) return null;
        return "precision " + precision.cliName() + " needs tensor cores with " + precision.cliName()
                + " (compute capability 8.0 or newer); " + device() + " has " + capability / 10 + "." + capability % 10;
    }

    /** Opens CUDA device {@code index}; throws {@link BackendUnavailableException} naming what is missing. */
    public static CudaBackend open(int index) {
        return new CudaBackend(Device.cuda(index));
    }

    /**
     * Null when CUDA device {@code index} can be used here; otherwise what is missing: the driver (libcuda.so.1),
     * the runtime (libcudart.so.13), or the device.
     */
    static String unavailableReason(int index) {
        String driver = NativeLibraries.probe("libcuda.so.1");
        if (driver != null) return "no NVIDIA driver: libcuda.so.1 cannot be loaded (" + driver + ")";
        try {
            Loader.load(cudart.class);
        } catch (Throwable e) {  // UnsatisfiedLinkError, or NoClassDefFoundError when the preset's natives are absent
            return "no CUDA 13 runtime: libcudart.so.13 cannot be loaded (" + e.getMessage()
                    + "); install the CUDA 13 runtime or add org.bytedeco:cuda-redist";
        }
        int[] count = new int[1];
        int status = cudaGetDeviceCount(count);
        if (status != 0) return "cudaGetDeviceCount: " + cudaGetErrorString(status).getString();
        if (index >= count[0]) return "CUDA device " + index + " does not exist (this machine has " + count[0] + ")";
        return null;
    }

    /** Makes this backend's device current on the calling thread, for the runtime calls that follow. */
    private void useDevice() {
        if (Distill4jNative.d4j_backend_use_device(kernels()) != 0) {
            throw new IllegalStateException("cannot make " + device() + " current on thread '"
                    + Thread.currentThread().getName() + "': "
                    + Distill4jNative.d4j_backend_last_error(kernels()).getString());
        }
    }

    private void checkCuda(int status, String what) {
        if (status != 0) throw new IllegalStateException(what + " on " + device() + ": " + cudaGetErrorString(status).getString());
    }

    @Override
    public boolean isHostMemory() {
        return false;
    }

    /** The device's free memory (cudaMemGetInfo: one driver call, no synchronisation). */
    @Override
    public long availableBytes() {
        useDevice();  // cudaMemGetInfo reports the current device
        try (SizeTPointer free = new SizeTPointer(1); SizeTPointer total = new SizeTPointer(1)) {
            checkCuda(cudaMemGetInfo(free, total), "cudaMemGetInfo");
            return free.get();
        }
    }

    @Override
    public Pointer allocate(long bytes) {
        if (bytes < 0) throw new IllegalArgumentException("negative allocation: " + bytes + " bytes");
        useDevice();
        Pointer p = new Pointer();
        int status = cudaMalloc(p, Math.max(bytes, 1));
        if (status != 0) {
            // cudaMalloc fails cleanly (no overcommit on a GPU): report what was asked and what was free.
            String why = cudaGetErrorString(status).getString();
            cudart.cudaGetLastError(); // clears the sticky error of a failed allocation for later calls
            long free = availableBytes();
            throw new MemoryLimitException("cudaMalloc of " + MemoryLimitException.formatBytes(bytes) + " on "
                    + device() + " failed (" + why + "); " + MemoryLimitException.formatBytes(free) + " free",
                    bytes, free);
        }
        allocated();
        return p.capacity(bytes).limit(bytes);
    }

    @Override
    public void free(Pointer memory) {
        if (memory == null || memory.isNull()) return;
        useDevice();
        checkCuda(cudaFree(memory), "cudaFree");
        freed();
    }

    @Override
    public void copyFromHost(Pointer hostSource, Pointer destination, long bytes) {
        checkNotCapturing("copyFromHost");
        useDevice();
        checkCuda(cudaMemcpyAsync(destination, hostSource, bytes, cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync");
        // The host buffer may be reused by the caller as soon as we return.
        checkCuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    }

    @Override
    public void copyToHost(Pointer source, Pointer hostDestination, long bytes) {
        checkNotCapturing("copyToHost");
        useDevice();
        checkCuda(cudaMemcpyAsync(hostDestination, source, bytes, cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
        checkCuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    }

    @Override
    public void copy(Pointer source, Pointer destination, long bytes) {
        useDevice();
        checkCuda(cudaMemcpyAsync(destination, source, bytes, cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync");
    }

    @Override
    public void zero(Pointer destination, long bytes) {
        useDevice();
        checkCuda(cudaMemsetAsync(destination, 0, bytes, stream), "cudaMemsetAsync");
    }

    @Override
    public Pointer stream() {
        return stream;
    }

    @Override
    public void synchronize() {
        checkNotCapturing("synchronize");
        useDevice();
        checkCuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    }

    @Override
    void releaseResources() {
        useDevice();
        cudaStreamSynchronize(stream);
        cudaStreamDestroy(stream);
    }
}
