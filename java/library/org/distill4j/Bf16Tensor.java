package org.distill4j;

import java.util.Arrays;
import java.util.Objects;
import org.bytedeco.javacpp.ShortPointer;
import org.distill4j.backend.Backend;

/**
 * A contiguous bf16 buffer in a backend's memory, with its shape: the activations of bf16 mixed precision (issue #18),
 * each value stored as its 16 bits (the upper half of the IEEE binary32 word, as CUDA's {@code __nv_bfloat16} and
 * {@code torch.bfloat16} store it), so {@link #data()} is a {@link ShortPointer} of bit patterns.
 *
 * <p>A class of its own rather than a dtype on {@link Tensor}: every fp32 op would have to check a dtype field; here
 * the type system does, and a bf16 op ({@link org.distill4j.ops.AttentionBf16}) takes only these. It has what bf16
 * activations need and no more: allocate, copy from and to {@code short[]} bits, read widened to floats (exact),
 * close; {@link org.distill4j.ops.Cast} converts to and from fp32 tensors on the backend. Ownership is
 * {@link Tensor}'s: memory is freed by {@link #close()}, never by the garbage collector; closing twice is harmless;
 * any use of a closed buffer throws {@link IllegalStateException}; a buffer still open when its backend closes is
 * freed then (and counted in the backend's warning).
 */
public final class Bf16Tensor implements AutoCloseable {
    private final Backend backend;
    private final long[] shape;
    private final long numel;
    private final Throwable site;
    private ShortPointer data;

    private Bf16Tensor(Backend backend, long[] shape) {
        this.backend = Objects.requireNonNull(backend, "backend");
        this.shape = shape.clone();
        long n = Tensor.elements(this.shape, Short.BYTES, "a bf16 tensor");
        this.numel = n;
        ShortPointer p = new ShortPointer(backend.allocate(n * Short.BYTES));
        this.data = p.capacity(n).limit(n);
        this.site = Boolean.getBoolean("distill4j.debug.allocations") ? new Throwable() : null;
        backend.adopt(this);
    }

    /** A bf16 tensor of the given shape with uninitialised contents. */
    public static Bf16Tensor empty(Backend backend, long... shape) {
        return new Bf16Tensor(backend, Objects.requireNonNull(shape, "shape"));
    }

    /**
     * A bf16 tensor of the given shape holding a copy of {@code bits} (bf16 bit patterns, row-major, length =
     * product of shape).
     */
    public static Bf16Tensor of(Backend backend, short[] bits, long... shape) {
        Bf16Tensor t = new Bf16Tensor(backend, Objects.requireNonNull(shape, "shape"));
        try {
            t.copyFrom(bits);
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
    public ShortPointer data() {
        if (data == null) throw new IllegalStateException("bf16 tensor " + Arrays.toString(shape) + " is closed");
        return data;
    }

    /** Overwrites the contents with {@code bits}, bf16 bit patterns (length must equal {@link #numel()}). */
    public Bf16Tensor copyFrom(short[] bits) {
        Objects.requireNonNull(bits, "bits");
        if (bits.length != numel) {
            throw new IllegalArgumentException("array of length " + bits.length + " does not fit bf16 tensor "
                    + Arrays.toString(shape) + " (" + numel + " elements)");
        }
        ShortPointer dst = data();
        if (backend.isHostMemory()) {
            backend.synchronize();  // a host write waits as a copy would (and is refused during a graph capture)
            dst.put(bits);
        } else {
            try (ShortPointer staging = new ShortPointer(bits)) {
                backend.copyFromHost(staging, dst, numel * Short.BYTES);
            }
        }
        return this;
    }

    /** The contents as a new array of bf16 bit patterns (waits for queued work). */
    public short[] toArray() {
        short[] out = new short[Math.toIntExact(numel)];
        copyTo(out);
        return out;
    }

    /** The contents widened to floats on the host, exactly (every bf16 value is a float); waits for queued work. */
    public float[] toFloats() {
        short[] bits = toArray();
        float[] out = new float[bits.length];
        for (int i = 0; i < bits.length; i++) out[i] = toFloat(bits[i]);
        return out;
    }

    /**
     * Copies the contents, bf16 bit patterns, into {@code out} (length must equal {@link #numel()}); waits for
     * queued work.
     */
    public void copyTo(short[] out) {
        Objects.requireNonNull(out, "out");
        if (out.length != numel) {
            throw new IllegalArgumentException("array of length " + out.length + " cannot receive bf16 tensor "
                    + Arrays.toString(shape) + " (" + numel + " elements)");
        }
        ShortPointer src = data();
        backend.synchronize();
        if (backend.isHostMemory()) {
            src.get(out);
        } else {
            try (ShortPointer staging = new ShortPointer(numel)) {
                backend.copyToHost(src, staging, numel * Short.BYTES);
                staging.get(out);
            }
        }
    }

    /**
     * {@code f} rounded to bf16 on the host, as {@link org.distill4j.ops.Cast#toBf16} rounds on a backend: to nearest,
     * ties to even (subnormals alike; past the largest finite value to infinity); a NaN stays a quiet NaN with its
     * sign (its upper 16 bits with the quiet bit 0x0040 set). For tests and for preparing inputs.
     */
    public static short fromFloat(float f) {
        int u = Float.floatToRawIntBits(f);
        if ((u & 0x7fffffff) > 0x7f800000) return (short) ((u >>> 16) | 0x0040);
        return (short) ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16);
    }

    /** The float of bf16 bit pattern {@code bits}: exact (its 16 bits become the float's upper half). */
    public static float toFloat(short bits) {
        return Float.intBitsToFloat((bits & 0xffff) << 16);
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
            if (!e.getClassName().equals(Bf16Tensor.class.getName())) return e.toString();
        }
        return "?";
    }

    @Override
    public String toString() {
        return "Bf16Tensor" + Arrays.toString(shape) + (data == null ? " (closed)" : " on " + backend.device());
    }
}
