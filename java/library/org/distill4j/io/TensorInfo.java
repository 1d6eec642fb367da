package org.distill4j.io;

/**
 * One entry of a safetensors header, validated: its data lies at {@code [begin, end)} of the data buffer, and
 * {@code end - begin} equals the element count times the dtype's size.
 */
public record TensorInfo(String name, SafetensorsDtype dtype, long[] shape, long begin, long end) {
    public TensorInfo {
        shape = shape.clone();
    }

    /** A copy of the shape. */
    @Override
    public long[] shape() {
        return shape.clone();
    }

    /** Number of elements (1 for a scalar). */
    public long numel() {
        long n = 1;
        for (long d : shape) n *= d; // cannot overflow: checked when the header was read
        return n;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof TensorInfo t && name.equals(t.name) && dtype == t.dtype
                && java.util.Arrays.equals(shape, t.shape) && begin == t.begin && end == t.end;
    }

    @Override
    public int hashCode() {
        return java.util.Objects.hash(name, dtype, java.util.Arrays.hashCode(shape), begin, end);
    }

    @Override
    public String toString() {
        return name + ": " + dtype + java.util.Arrays.toString(shape) + " @[" + begin + ", " + end + ")";
    }
}
