package org.distill4j.ops;

import java.util.Arrays;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.natives.Distill4jNative;

/**
 * GELU in its exact (erf) form, as {@code torch.nn.GELU()} (approximate='none'):
 * {@code y = x · Φ(x) = x/2 · (1 + erf(x/√2))}, element-wise; its gradient {@code dx = dy · (Φ(x) + x·φ(x))}.
 * CPU and CUDA kernels behind the same C entries, {@code d4j_gelu_*}. The kernels take Φ from erfc where it is
 * small, so y keeps its relative precision (≤ ~1e-6) for negative x too, where 1 + erf cancels.
 *
 * <p>Any shapes with equal element counts; nothing is allocated. Calls on one backend are not thread-safe.
 */
public final class Gelu {
    private Gelu() {}

    /**
     * y = gelu(x), overwritten. y may be x itself (in place).
     *
     * @throws IllegalArgumentException when a tensor is missing, the element counts differ or the backends differ
     */
    public static void forward(Tensor x, Tensor y) {
        Backend be = check("x", x, null);
        check("y", y, x);
        be.call("gelu forward",
                () -> Distill4jNative.d4j_gelu_forward(be.kernels(), be.stream(), x.data(), x.numel(), y.data()));
    }

    /**
     * dx = dy · gelu'(x), WRITTEN (not accumulated). dx may be dy itself (in place).
     *
     * @param x  the forward's input
     * @param dy upstream gradient
     * @param dx output
     */
    public static void backward(Tensor x, Tensor dy, Tensor dx) {
        Backend be = check("x", x, null);
        check("dy", dy, x);
        check("dx", dx, x);
        if (dx == x && dx != dy) throw new IllegalArgumentException("gelu: dx must not be x (x is read for every element)");
        be.call("gelu backward",
                () -> Distill4jNative.d4j_gelu_backward(be.kernels(), be.stream(), x.data(), dy.data(), x.numel(),
                dx.data()));
    }

    private static Backend check(String name, Tensor t, Tensor like) {
        if (t == null) throw new IllegalArgumentException("gelu: " + name + " is required");
        if (t.isClosed()) throw new IllegalStateException("gelu: " + name + " tensor is closed");
        if (like == null) {
            if (t.numel() < 1) throw new IllegalArgumentException("gelu: " + name + " is empty");
            return t.backend();
        }
        if (t.numel() != like.numel()) {
            throw new IllegalArgumentException("gelu: " + name + " must have " + like.numel() + " elements as x "
                    + Arrays.toString(like.shape()) + ", got " + Arrays.toString(t.shape()));
        }
        if (t.backend() != like.backend()) {
            throw new IllegalArgumentException("gelu: " + name + " is on " + t.backend().name()
                    + ", x on " + like.backend().name() + ": copy it over first");
        }
        return t.backend();
    }
}
