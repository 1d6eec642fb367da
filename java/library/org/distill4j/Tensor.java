package org.distill4j;

import java.util.Arrays;
import java.util.Objects;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.Pointer;
import org.distill4j.backend.Backend;

/**
 * A contiguous float32 buffer in a backend's memory (host for cpu, device for cuda), with its shape.
 *
 * <p>Memory is freed by {@link #close()}, never by the garbage collector: closing twice is harmless, and any use
 * of a closed tensor throws {@link IllegalStateException}. A rank-0 tensor (shape {@code []}) holds one scalar.
 *
 * <p>A {@linkplain #view view} is a tensor over a contiguous part of another tensor's memory: it owns none, so
 * closing it frees nothing, and it refuses every use once the tensor it was cut from is closed (as the backend
 * reuses that memory, a stale view would read or write someone else's buffer).
 */
public final class Tensor implements AutoCloseable {
    private final Backend backend;
    private final long[] shape;
    private final long numel;
    private final Throwable site;
    private final Tensor owner;  // the tensor whose memory a view uses (never itself a view); null when not a view
    private final long start;    // a view's first element in owner
    private FloatPointer data;

    private Tensor(Backend backend, long[] shape) {
        this.backend = Objects.requireNonNull(backend, "backend");
        this.shape = shape.clone();
        long n = elements(this.shape, Float.BYTES, "a tensor");
        FloatPointer p = new FloatPointer(backend.allocate(n * Float.BYTES));
        this.data = p.capacity(n).limit(n);
        this.numel = n;
        this.owner = null;
        this.start = 0;
        // Where it was allocated, with -Ddistill4j.debug.allocations=true: a stack trace per tensor, so only on demand.
        this.site = Boolean.getBoolean("distill4j.debug.allocations") ? new Throwable() : null;
        backend.adopt(this);
    }

    /** A view of {@code n} elements of {@code owner}'s memory from element {@code start} (checked by the caller). */
    private Tensor(Tensor owner, long start, long[] shape, long n) {
        this.backend = owner.backend;
        this.shape = shape;
        this.numel = n;
        this.owner = owner;
        this.start = start;
        // Its own address (position 0): code that positions data() relative to 0 works on a view as on a tensor.
        this.data = owner.data().getPointer(start).capacity(n).limit(n);
        this.site = null;
    }

    /**
     * The element count of {@code shape}, checked: no negative dimension, no byte count past 2^63 at
     * {@code elementBytes} an element. Shared by {@link IntTensor} and {@link Bf16Tensor}; {@code kind} names the
     * tensor in the message ("a tensor", "an int tensor").
     */
    static long elements(long[] shape, int elementBytes, String kind) {
        long n = 1;
        boolean empty = false, tooLarge = false;
        for (long d : shape) {
            if (d < 0) throw new IllegalArgumentException("negative dimension in shape " + Arrays.toString(shape));
            if (d == 0) {
                empty = true;
            } else if (n > Long.MAX_VALUE / elementBytes / d) {
                tooLarge = true;
            } else {
                n *= d;
            }
        }
        if (empty) {
            n = 0;
        } else if (tooLarge) {
            throw new MemoryLimitException(kind + " of shape " + Arrays.toString(shape)
                    + " would need more than 2^63 bytes", Long.MAX_VALUE, Long.MAX_VALUE);
        }
        return n;
    }

    /** A tensor of the given shape with uninitialised contents. */
    public static Tensor empty(Backend backend, long... shape) {
        return new Tensor(backend, Objects.requireNonNull(shape, "shape"));
    }

    /** A tensor of the given shape holding a copy of {@code values} (row-major, length = product of shape). */
    public static Tensor of(Backend backend, float[] values, long... shape) {
        Tensor t = new Tensor(backend, Objects.requireNonNull(shape, "shape"));
        try {
            t.copyFrom(values);
        } catch (RuntimeException e) {
            t.close();
            throw e;
        }
        return t;
    }

    /**
     * A tensor of shape {@code shape} over elements {@code [offset, offset + numel(shape))} of this one's memory,
     * row-major: writes through either are seen by the other. The view owns no memory ({@link #close()} on it frees
     * nothing) and throws {@link IllegalStateException} on any use after this tensor (or the tensor this one is a
     * view of) is closed. Its address is this tensor's plus {@code 4·offset} bytes: backends allocate 64-byte
     * aligned memory, so an offset that is a multiple of 16 keeps that alignment (kernels that load float4 check
     * for 16 bytes and otherwise take a slower path).
     *
     * @throws IllegalArgumentException when the elements are not all inside this tensor
     * @throws IllegalStateException when this tensor is closed
     */
    public Tensor view(long offset, long... shape) {
        Objects.requireNonNull(shape, "shape");
        long[] s = shape.clone();
        long n = elements(s, Float.BYTES, "a tensor");
        data();  // closed (or its owner closed): refused
        if (offset < 0 || offset > numel - n) {
            throw new IllegalArgumentException("a view of " + n + " elements " + Arrays.toString(s) + " at offset "
                    + offset + " does not fit in tensor " + Arrays.toString(this.shape) + " (" + numel + " elements)");
        }
        return owner != null ? new Tensor(owner, start + offset, s, n) : new Tensor(this, offset, s, n);
    }

    /** The backend that owns this tensor's memory. */
    public Backend backend() {
        return backend;
    }

    /** The device of the owning backend. */
    public Device device() {
        return backend.device();
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

    /** Whether {@link #close()} was called (on a view: on it or on the tensor it is a view of). */
    public boolean isClosed() {
        return data == null || (owner != null && owner.data == null);
    }

    /** Whether this tensor is a {@linkplain #view view} of another's memory. */
    public boolean isView() {
        return owner != null;
    }

    /**
     * The native buffer, for ops and backends. Valid until {@link #close()}; never free it yourself.
     *
     * @throws IllegalStateException if the tensor is closed
     */
    public FloatPointer data() {
        if (data == null) throw new IllegalStateException("tensor " + Arrays.toString(shape) + " is closed");
        if (owner != null && owner.data == null) {
            throw new IllegalStateException("view " + Arrays.toString(shape) + " of tensor "
                    + Arrays.toString(owner.shape) + ": that tensor is closed");
        }
        return data;
    }

    /** Overwrites the contents with {@code values} (length must equal {@link #numel()}). */
    public Tensor copyFrom(float[] values) {
        Objects.requireNonNull(values, "values");
        if (values.length != numel) {
            throw new IllegalArgumentException("array of length " + values.length + " does not fit tensor "
                    + Arrays.toString(shape) + " (" + numel + " elements)");
        }
        FloatPointer dst = data();
        if (backend.isHostMemory()) {
            backend.synchronize();  // a host write waits as a copy would (and is refused during a graph capture)
            dst.put(values);
        } else {
            try (FloatPointer staging = new FloatPointer(values)) {
                backend.copyFromHost(staging, dst, numel * Float.BYTES);
            }
        }
        return this;
    }

    /**
     * Overwrites elements {@code [offset, offset + count)} with {@code values[from, from + count)}: a part at a time,
     * so a tensor larger than a Java array (or than the heap) can be filled from a file or a generator. A device
     * tensor receives them through a host staging buffer of {@code count} floats.
     */
    public Tensor copyFrom(long offset, float[] values, int from, int count) {
        Objects.requireNonNull(values, "values");
        Objects.checkFromIndexSize(from, count, values.length);
        if (count == 0) return this;
        if (offset < 0 || offset > numel - count) {
            throw new IllegalArgumentException("elements [" + offset + ", " + offset + " + " + count
                    + ") are not all in tensor " + Arrays.toString(shape) + " (" + numel + " elements)");
        }
        FloatPointer dst = new FloatPointer(data()).position(offset);
        if (backend.isHostMemory()) {
            backend.synchronize();  // a host write waits as a copy would (and is refused during a graph capture)
            dst.put(values, from, count);
        } else {
            try (FloatPointer staging = new FloatPointer(count)) {
                staging.put(values, from, count);
                backend.copyFromHost(staging, dst, (long) count * Float.BYTES);
            }
        }
        return this;
    }

    /** The contents as a new array (waits for queued work). */
    public float[] toArray() {
        float[] out = new float[Math.toIntExact(numel)];
        copyTo(out);
        return out;
    }

    /** Copies the contents into {@code out} (length must equal {@link #numel()}); waits for queued work. */
    public void copyTo(float[] out) {
        Objects.requireNonNull(out, "out");
        if (out.length != numel) {
            throw new IllegalArgumentException("array of length " + out.length + " cannot receive tensor "
                    + Arrays.toString(shape) + " (" + numel + " elements)");
        }
        FloatPointer src = data();
        backend.synchronize();
        if (backend.isHostMemory()) {
            src.get(out);
        } else {
            try (FloatPointer staging = new FloatPointer(numel)) {
                backend.copyToHost(src, staging, numel * Float.BYTES);
                staging.get(out);
            }
        }
    }

    /**
     * Copies the contents into {@code destination}, which may live on another device; shapes must have the same
     * number of elements.
     */
    public void copyTo(Tensor destination) {
        Objects.requireNonNull(destination, "destination");
        if (destination.numel != numel) {
            throw new IllegalArgumentException("cannot copy tensor " + Arrays.toString(shape) + " into "
                    + Arrays.toString(destination.shape) + ": element counts differ");
        }
        Pointer src = data(), dst = destination.data();
        long bytes = numel * Float.BYTES;
        Backend other = destination.backend;
        if (other == backend) {
            backend.copy(src, dst, bytes);
        } else if (backend.isHostMemory()) {
            other.synchronize();
            other.copyFromHost(src, dst, bytes);
        } else if (other.isHostMemory()) {
            backend.copyToHost(src, dst, bytes);
        } else {  // device to another device's memory: through the host, correct whatever peer access exists
            destination.copyFrom(toArray());
        }
    }

    /** Sets every element to 0 (queued on the backend's stream). */
    public Tensor zero() {
        backend.zero(data(), numel * Float.BYTES);
        return this;
    }

    /** Frees the memory (a view's: none; the tensor it is a view of stays open). Closing twice is harmless. */
    @Override
    public void close() {
        if (owner != null) {
            data = null;
        } else if (data != null) {
            backend.free(data);
            data = null;
            backend.disown(this);
        }
    }

    /**
     * The method that allocated this tensor (e.g. {@code VisionTransformer.<init>} for a model's buffers: a model
     * left open), with {@code -Ddistill4j.debug.allocations=true}; null without it.
     */
    public String allocationSite() {
        if (site == null) return null;
        for (StackTraceElement e : site.getStackTrace()) {
            if (!e.getClassName().equals(Tensor.class.getName())) return e.toString();
        }
        return "?";
    }

    @Override
    public String toString() {
        return "Tensor" + Arrays.toString(shape) + (isClosed() ? " (closed)" : " on " + backend.device())
                + (owner != null ? " (view at " + start + ")" : "");
    }
}
