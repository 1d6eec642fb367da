package org.distill4j;

import java.util.Arrays;
import java.util.Objects;
import org.bytedeco.javacpp.IntPointer;
import org.distill4j.backend.Backend;

/**
 * A contiguous int32 buffer in a backend's memory, with its shape: class indices, the labels of
 * {@link org.distill4j.ops.CrossEntropy#compute} and the output of {@link org.distill4j.ops.CrossEntropy#argmax}.
 *
 * <p>A class of its own rather than a dtype on {@link Tensor}: every op takes float32 tensors, and a dtype field would
 * make each of them check it; here the type system does. It has what indices need and no more: allocate, copy from
 * and to {@code int[]}, close. Ownership is {@link Tensor}'s: memory is freed by {@link #close()}, never by the
 * garbage collector; closing twice is harmless; any use of a closed buffer throws {@link IllegalStateException}; a
 * buffer still open when its backend closes is freed then (and counted in the backend's warning).
 */
public final class IntTensor implements AutoCloseable {
    private final Backend backend;
    private final long[] shape;
    private final long numel;
    private final Throwable site;
    private IntPointer data;

    private IntTensor(Backend backend, long[] shape) {
        this.backend = Objects.requireNonNull(backend, "backend");
        this.shape = shape.clone();
        long n = Tensor.elements(this.shape, Integer.BYTES, "an int tensor");
        this.numel = n;
        IntPointer p = new IntPointer(backend.allocate(n * Integer.BYTES));
        this.data = p.capacity(n).limit(n);
        this.site = Boolean.getBoolean("distill4j.debug.allocations") ? new Throwable() : null;
        backend.adopt(this);
    }

    /** An int tensor of the given shape with uninitialised contents. */
    public static IntTensor empty(Backend backend, long... shape) {
        return new IntTensor(backend, Objects.requireNonNull(shape, "shape"));
    }

    /** An int tensor of the given shape holding a copy of {@code values} (row-major, length = product of shape). */
    public static IntTensor of(Backend backend, int[] values, long... shape) {
        IntTensor t = new IntTensor(backend, Objects.requireNonNull(shape, "shape"));
        try {
            t.copyFrom(values);
        } catch (RuntimeException e) {
            t.close();
            throw e;
        }
        return t;
    }

    /** The backend that owns this buffer's memory. */
    public Backend backend() {
        return backend;
    }

    /** A copy of the shape. */
    public long[] shape() {
        return shape.clone();
    }

    /** Size of dimension {@code i}. */
    public long size(int i) {
        return shape[i];
    }

    /** Number of dimensions. */
    public int rank() {
        return shape.length;
    }

    /** Number of elements (1 for a scalar). */
    public long numel() {
        return numel;
    }

    /** Whether {@link #close()} was called. */
    public boolean isClosed() {
        return data == null;
    }

    /**
     * The native buffer, for ops and backends. Valid until {@link #close()}; never free it yourself.
     *
     * @throws IllegalStateException if the buffer is closed
     */
    public IntPointer data() {
        if (data == null) throw new IllegalStateException("int tensor " + Arrays.toString(shape) + " is closed");
        return data;
    }

    /** Overwrites the contents with {@code values} (length must equal {@link #numel()}). */
    public IntTensor copyFrom(int[] values) {
        Objects.requireNonNull(values, "values");
        if (values.length != numel) {
            throw new IllegalArgumentException("array of length " + values.length + " does not fit int tensor "
                    + Arrays.toString(shape) + " (" + numel + " elements)");
        }
        IntPointer dst = data();
        if (backend.isHostMemory()) {
            backend.synchronize();  // a host write waits as a copy would (and is refused during a graph capture)
            dst.put(values);
        } else {
            try (IntPointer staging = new IntPointer(values)) {
                backend.copyFromHost(staging, dst, numel * Integer.BYTES);
            }
        }
        return this;
    }

    /** The contents as a new array (waits for queued work). */
    public int[] toArray() {
        int[] out = new int[Math.toIntExact(numel)];
        copyTo(out);
        return out;
    }

    /** Copies the contents into {@code out} (length must equal {@link #numel()}); waits for queued work. */
    public void copyTo(int[] out) {
        Objects.requireNonNull(out, "out");
        if (out.length != numel) {
            throw new IllegalArgumentException("array of length " + out.length + " cannot receive int tensor "
                    + Arrays.toString(shape) + " (" + numel + " elements)");
        }
        IntPointer src = data();
        backend.synchronize();
        if (backend.isHostMemory()) {
            src.get(out);
        } else {
            try (IntPointer staging = new IntPointer(numel)) {
                backend.copyToHost(src, staging, numel * Integer.BYTES);
                staging.get(out);
            }
        }
    }

    /** Frees the memory. Closing twice is harmless. */
    @Override
    public void close() {
        if (data != null) {
            backend.free(data);
            data = null;
            backend.disown(this);
        }
    }

    /** As {@link Tensor#allocationSite()}: where it was allocated, with {@code -Ddistill4j.debug.allocations=true}. */
    public String allocationSite() {
        if (site == null) return null;
        for (StackTraceElement e : site.getStackTrace()) {
            if (!e.getClassName().equals(IntTensor.class.getName())) return e.toString();
        }
        return "?";
    }

    @Override
    public String toString() {
        return "IntTensor" + Arrays.toString(shape) + (data == null ? " (closed)" : " on " + backend.device());
    }
}
