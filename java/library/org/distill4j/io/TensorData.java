package org.distill4j.io;

import java.util.Arrays;
import java.util.Objects;

/**
 * A host tensor as read from or written to a file: a shape and its values, row-major.
 *
 * <p>The shape is copied; the values are not (checkpoints hold arrays of many megabytes), so the caller should
 * not change the array while a writer uses it.
 */
public record TensorData(long[] shape, float[] values) {
    public TensorData {
        Objects.requireNonNull(shape, "shape");
        Objects.requireNonNull(values, "values");
        shape = shape.clone();
        long n = 1;
        for (long d : shape) {
            if (d < 0) throw new IllegalArgumentException("negative dimension in shape " + Arrays.toString(shape));
            n = Math.multiplyExact(n, d);
        }
        if (n != values.length) {
            throw new IllegalArgumentException("shape " + Arrays.toString(shape) + " holds " + n
                    + " elements but " + values.length + " values were given");
        }
    }

    /** A copy of the shape. */
    @Override
    public long[] shape() {
        return shape.clone();
    }

    /** The values themselves (not a copy). */
    @Override
    public float[] values() {
        return values;
    }

    public int numel() {
        return values.length;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof TensorData t && Arrays.equals(shape, t.shape) && Arrays.equals(values, t.values);
    }

    @Override
    public int hashCode() {
        return 31 * Arrays.hashCode(shape) + Arrays.hashCode(values);
    }

    @Override
    public String toString() {
        return "TensorData" + Arrays.toString(shape);
    }
}
