package org.distill4j.backend;

import java.util.function.IntSupplier;
import org.bytedeco.javacpp.Pointer;
import org.distill4j.Device;
import org.distill4j.natives.Distill4jNative;

/**
 * Memory, a stream and the kernels of one device. Obtained from {@link Backends#open(org.distill4j.Device)};
 * closing it frees the tensors still open (and logs their count; their allocation sites with
 * {@code -Ddistill4j.debug.allocations=true}), then releases the stream and the kernel library handle. Close
 * tensors yourself as soon as they are not needed (a {@link org.distill4j.TensorScope} helps): the garbage collector
 * never frees native memory.
 *
 * <p>A backend is used from one thread at a time, as a CUDA stream is: work is queued in call order. A kernel
 * call ({@link #call}) or {@link #close()} from a second thread while another thread is inside a kernel call throws
 * {@link org.distill4j.ConcurrentUseException} (successive use from different threads is fine).
 *
 * <p>Two layers. Everyday code uses {@link org.distill4j.Tensor} (shapes checked, memory owned) and the ops of
 * {@code org.distill4j.ops}. The methods that take or return JavaCPP types — {@link #allocate}, {@link #free}, the
 * copies, {@link #zero}, {@link #stream}, {@link #kernels}, {@link #call} and {@code Tensor.data()} — are the
 * advanced layer, for writing a new op against the C ABI ({@code Distill4jNative}, {@code native/include/
 * distill4j.h}): raw device memory, no shapes, nothing freed for you.
 */
public interface Backend extends AutoCloseable {
    /** The device this backend runs on. */
    Device device();

    /**
     * How messages name this backend instance, e.g. {@code cpu backend @1b6d3586}: two backends of one device are
     * told apart (tensors of one cannot be used with the other).
     */
    default String name() {
        return device() + " backend @" + Integer.toHexString(System.identityHashCode(this));
    }

    /**
     * Takes ownership of {@code tensor} until it is closed: closing the backend frees every tensor still open (and
     * says how many). Called by {@link org.distill4j.Tensor} when it allocates, not by users.
     */
    default void adopt(org.distill4j.Tensor tensor) {}

    /** {@code tensor} was closed and is no longer this backend's to free. Called by Tensor, not by users. */
    default void disown(org.distill4j.Tensor tensor) {}

    /** As {@link #adopt(org.distill4j.Tensor)}, for an int32 buffer. Called by IntTensor, not by users. */
    default void adopt(org.distill4j.IntTensor tensor) {}

    /** As {@link #disown(org.distill4j.Tensor)}, for an int32 buffer. Called by IntTensor, not by users. */
    default void disown(org.distill4j.IntTensor tensor) {}

    /** As {@link #adopt(org.distill4j.Tensor)}, for a bf16 buffer. Called by Bf16Tensor, not by users. */
    default void adopt(org.distill4j.Bf16Tensor tensor) {}

    /** As {@link #disown(org.distill4j.Tensor)}, for a bf16 buffer. Called by Bf16Tensor, not by users. */
    default void disown(org.distill4j.Bf16Tensor tensor) {}

    /**
     * Null when this backend computes {@code precision}; otherwise why not, naming the device (a CUDA card without
     * bf16 tensor cores). Every backend computes {@link org.distill4j.Precision#FP32}.
     */
    default String unsupported(org.distill4j.Precision precision) {
        return null;
    }

    /**
     * Whether this backend can record its stream's work into a CUDA graph ({@link CudaGraph}): cuda and cuda-emu;
     * not cpu.
     */
    default boolean capturesGraphs() {
        return false;
    }

    /**
     * Whether a {@link CudaGraph} capture is under way on this backend: kernel calls are recorded, not run, and
     * waits for the device or host copies throw.
     */
    default boolean capturing() {
        return false;
    }

    /** Whether tensor memory is host memory the JVM may read directly (cpu, cuda-emu). */
    boolean isHostMemory();

    /**
     * Bytes of this backend's memory free now: for cpu the host's available memory (Linux {@code MemAvailable},
     * within the container's cgroup limit; swap not counted), for cuda the device's free memory
     * ({@code cudaMemGetInfo}); {@link Long#MAX_VALUE} when the system does not say. Models check their size
     * against it before allocating anything.
     */
    long availableBytes();

    /**
     * Allocates {@code bytes} of this backend's memory, uninitialised, and counts it live.
     *
     * @throws org.distill4j.MemoryLimitException when the memory is not there (a large host allocation is checked
     *     against {@link #availableBytes()} first, since Linux's overcommit would let it succeed and kill the
     *     process later)
     */
    Pointer allocate(long bytes);

    /** Frees memory from {@link #allocate}. */
    void free(Pointer memory);

    /** Copies {@code bytes} from host memory into this backend's memory. */
    void copyFromHost(Pointer hostSource, Pointer destination, long bytes);

    /** Copies {@code bytes} from this backend's memory into host memory; returns when the copy is done. */
    void copyToHost(Pointer source, Pointer hostDestination, long bytes);

    /** Copies {@code bytes} within this backend's memory. */
    void copy(Pointer source, Pointer destination, long bytes);

    /** Sets {@code bytes} of this backend's memory to zero (queued on the stream for cuda). */
    void zero(Pointer destination, long bytes);

    /** The stream kernels are queued on ({@code cudaStream_t}; a null pointer for host backends). */
    Pointer stream();

    /** Waits until everything queued on the stream has finished. */
    void synchronize();

    /** The native kernel table ({@code d4j_backend*}) for {@link Distill4jNative} calls (advanced layer). */
    Distill4jNative.d4j_backend kernels();

    /**
     * Runs one native kernel call of op {@code what} (it returns the C ABI's status) and {@link #check checks} its
     * status, one thread at a time: the advanced layer's way to call a kernel, as every op does.
     *
     * @throws org.distill4j.ConcurrentUseException when another thread is inside a call on this backend
     */
    default void call(String what, IntSupplier kernelCall) {
        check(kernelCall.getAsInt(), what);
    }

    /** Number of allocations not yet freed: a training loop must keep it flat. */
    long liveAllocations();

    /** Throws {@link IllegalStateException} with the native message when {@code status} is nonzero. */
    default void check(int status, String what) {
        if (status != 0) {
            throw new IllegalStateException(what + " failed on " + device() + ": "
                    + NativeLibraries.cString(Distill4jNative.d4j_backend_last_error(kernels())));
        }
    }

    /** Releases the stream and the kernel library handle. Closing twice is harmless. */
    @Override
    void close();
}
