package org.distill4j.backend;

import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerPointer;
import org.bytedeco.openblas.global.openblas_nolapack;
import org.distill4j.Device;
import org.distill4j.MemoryLimitException;
import org.distill4j.natives.Distill4jNative;

/**
 * Host memory with host-side kernels: the C++/OpenMP kernels ({@link Device#cpu()}) with OpenBLAS for GEMMs, or
 * the CUDA kernels run by the emulator ({@link Device#cudaEmu()}, tests only). Memory is 64-byte aligned and freed
 * deterministically. The emulated backend takes its memory from the emulator (through the dispatch library, with
 * the backend's device current), which tags every block with its device: a kernel then launched with another
 * device current fails, as it would on a card.
 */
public final class CpuBackend extends NativeBackend {
    // Smaller allocations are not worth reading /proc/meminfo for: a model checks its total before it allocates.
    private static final long CHECKED_ALLOCATION = 64L << 20;
    private final boolean emulated;
    // cpu: none (a null pointer). cuda-emu: an emulated stream, so that its work can be captured into a graph as a
    // card's (the emulator refuses the legacy null stream, as CUDA does).
    private Pointer stream = new Pointer();

    private CpuBackend(Device device, String library) {
        super(device);
        // The CPU kernels call OpenBLAS's sgemm from the preset's library, found in the process by soname.
        Loader.load(openblas_nolapack.class);
        // One thread pool per process: the kernels split their GEMMs over their own OpenMP threads and call a
        // single-threaded OpenBLAS per block. With OpenBLAS's threads as well, each pool's workers spin-wait after
        // their work and steal the cores the other needs next (2 cores: patch_embed backward 2-4x slower).
        // This library (the preset's nolapack build) is only ours: libtorch loads its own libopenblas.so.0.
        openblas_nolapack.blas_set_num_threads(1);
        this.emulated = device.kind() == Device.Kind.CUDA_EMU;
        openKernels(library);
        if (emulated) {
            try (PointerPointer<Pointer> s = new PointerPointer<>(1)) {
                call("stream_create", () -> Distill4jNative.d4j_stream_create(kernels(), s));
                this.stream = s.get(0);
            }
        }
    }

    /** The CPU kernels (libdistill4j_cpu). */
    public static CpuBackend open() {
        return new CpuBackend(Device.cpu(), "cpu");
    }

    /** The CUDA kernels on the CPU (libdistill4j_cudaemu): for tests and selftest, far slower than {@link #open}. */
    public static CpuBackend openCudaEmulator() {
        return openCudaEmulator(0);
    }

    /** The same on emulated device {@code index} (0 or 1, {@link Device#cudaEmu(int)}). */
    public static CpuBackend openCudaEmulator(int index) {
        return new CpuBackend(Device.cudaEmu(index), "cudaemu");
    }

    /**
     * The most threads the CPU kernels run with: {@code OMP_NUM_THREADS} when set, else the CPUs this process may
     * run on (its affinity mask) capped by its cgroup CPU quota, rounded up. While other processes keep those CPUs
     * busy the kernels use fewer, down to 1, unless {@code OMP_NUM_THREADS} is set; results are the same bits with
     * any count. Decided once per process. 1 for the emulated CUDA backend.
     */
    public int threads() {
        return Distill4jNative.d4j_backend_threads(kernels());
    }

    @Override
    public boolean isHostMemory() {
        return true;
    }

    @Override
    public long availableBytes() {
        return HostMemory.available();
    }

    @Override
    public Pointer allocate(long bytes) {
        if (bytes < 0) throw new IllegalArgumentException("negative allocation: " + bytes + " bytes");
        if (bytes >= CHECKED_ALLOCATION) {
            long available = availableBytes();
            if (bytes > available) {
                throw new MemoryLimitException("an allocation of " + MemoryLimitException.formatBytes(bytes)
                        + " does not fit the " + MemoryLimitException.formatBytes(available)
                        + " of host memory available", bytes, available);
            }
        }
        Pointer p = emulated ? Distill4jNative.d4j_backend_alloc(kernels(), bytes)
                : Distill4jNative.d4j_host_alloc(bytes);
        if (p == null || p.isNull()) {
            throw new MemoryLimitException("host allocation of " + MemoryLimitException.formatBytes(bytes)
                    + " failed", bytes, availableBytes());
        }
        allocated();
        return p.capacity(bytes).limit(bytes);
    }

    @Override
    public void free(Pointer memory) {
        if (memory == null || memory.isNull()) return;
        if (!emulated) {
            Distill4jNative.d4j_host_free(memory);
        } else if (Distill4jNative.d4j_backend_free(kernels(), memory) != 0) {
            throw new IllegalStateException("free on " + device() + ": "
                    + Distill4jNative.d4j_backend_last_error(kernels()).getString());
        }
        freed();
    }

    // The emulated backend's copies and zeroing are stream work of the emulator (recorded when captured, as on a
    // card); the CPU backend's are plain memory operations.
    @Override
    public void copyFromHost(Pointer hostSource, Pointer destination, long bytes) {
        checkNotCapturing("copyFromHost");
        if (emulated) {
            copyAsync(destination, hostSource, bytes);
        } else {
            Pointer.memcpy(destination, hostSource, bytes);
        }
    }

    @Override
    public void copyToHost(Pointer source, Pointer hostDestination, long bytes) {
        checkNotCapturing("copyToHost");
        if (emulated) {
            copyAsync(hostDestination, source, bytes);
        } else {
            Pointer.memcpy(hostDestination, source, bytes);
        }
    }

    @Override
    public void copy(Pointer source, Pointer destination, long bytes) {
        if (emulated) {
            copyAsync(destination, source, bytes);
        } else {
            Pointer.memcpy(destination, source, bytes);
        }
    }

    private void copyAsync(Pointer destination, Pointer source, long bytes) {
        // Not confined as kernel calls are (CudaBackend's copies are not either): a loader thread may fill a tensor.
        check(Distill4jNative.d4j_copy_async(kernels(), stream, destination, source, bytes), "copy");
    }

    @Override
    public void zero(Pointer destination, long bytes) {
        if (emulated) {
            check(Distill4jNative.d4j_zero_async(kernels(), stream, destination, bytes), "zero");
        } else {
            Pointer.memset(destination, 0, bytes);
        }
    }

    @Override
    public Pointer stream() {
        return stream;
    }

    @Override
    public void synchronize() {
        // Host kernels (and the emulator's) have returned when their call returns; a capture still refuses a wait.
        checkNotCapturing("synchronize");
    }

    @Override
    void releaseResources() {
        // cpu: no stream, host kernels run on the calling thread.
        if (emulated && !stream.isNull()) {
            Distill4jNative.d4j_stream_destroy(kernels(), stream);
            stream = new Pointer();
        }
    }
}
