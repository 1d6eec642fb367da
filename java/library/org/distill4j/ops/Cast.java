package org.distill4j.ops;

import java.util.Arrays;
import org.distill4j.Bf16Tensor;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.natives.Distill4jNative;

/**
 * fp32 ↔ bf16 conversions on a backend, element-wise ({@code d4j_cast_bf16} / {@code d4j_cast_f32}): the casts of
 * bf16 mixed precision (issue #18). To bf16: round to nearest, ties to even, as {@code tensor.to(torch.bfloat16)} and
 * CUDA's {@code __float2bfloat16_rn} (subnormals round like normals; a value rounding past the largest finite bf16
 * becomes infinity); a NaN stays a quiet NaN with its sign, the same bits on every backend
 * ({@link Bf16Tensor#fromFloat} is the same rounding on the host). To fp32: exact.
 *
 * <p>Any shapes with equal element counts, on one backend; nothing is allocated. Calls on one backend are not
 * thread-safe.
 */
public final class Cast {
    private Cast() {}

    /**
     * y = bf16(x), WRITTEN.
     *
     * @throws IllegalArgumentException when a tensor is missing or empty, the element counts differ or the backends
     *                                  differ
     * @throws IllegalStateException    when a tensor is closed
     */
    public static void toBf16(Tensor x, Bf16Tensor y) {
        if (x == null) throw new IllegalArgumentException("cast: x is required");
        if (x.isClosed()) throw new IllegalStateException("cast: x tensor is closed");
        check(y, x.backend(), x.numel(), x.shape());
        Backend be = x.backend();
        be.call("cast to bf16",
                () -> Distill4jNative.d4j_cast_bf16(be.kernels(), be.stream(), x.data(), x.numel(), y.data()));
    }

    /**
     * y = x widened to fp32 (exact), WRITTEN.
     *
     * @throws IllegalArgumentException when a tensor is missing or empty, the element counts differ or the backends
     *                                  differ
     * @throws IllegalStateException    when a tensor is closed
     */
    public static void toFloat(Bf16Tensor x, Tensor y) {
        if (x == null) throw new IllegalArgumentException("cast: x is required");
        if (x.isClosed()) throw new IllegalStateException("cast: x tensor is closed");
        if (y == null) throw new IllegalArgumentException("cast: y is required");
        if (y.isClosed()) throw new IllegalStateException("cast: y tensor is closed");
        checkSame(y.numel(), Arrays.toString(y.shape()), y.backend(), x.backend(), x.numel(), x.shape());
        Backend be = x.backend();
        be.call("cast to fp32",
                () -> Distill4jNative.d4j_cast_f32(be.kernels(), be.stream(), x.data(), x.numel(), y.data()));
    }

    private static void check(Bf16Tensor y, Backend be, long numel, long[] shape) {
        if (y == null) throw new IllegalArgumentException("cast: y is required");
        if (y.isClosed()) throw new IllegalStateException("cast: y tensor is closed");
        checkSame(y.numel(), Arrays.toString(y.shape()), y.backend(), be, numel, shape);
    }

    private static void checkSame(long yNumel, String yShape, Backend yBackend, Backend be, long numel, long[] shape) {
        if (numel < 1) throw new IllegalArgumentException("cast: x is empty");
        if (yNumel != numel) {
            throw new IllegalArgumentException("cast: y must have " + numel + " elements as x " + Arrays.toString(shape)
                    + ", got " + yShape);
        }
        if (yBackend != be) {
            throw new IllegalArgumentException("cast: y is on " + yBackend.name() + ", x on " + be.name()
                    + ": copy it over first");
        }
    }
}
