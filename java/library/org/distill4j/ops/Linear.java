package org.distill4j.ops;

import java.util.Arrays;
import org.bytedeco.javacpp.FloatPointer;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.natives.Distill4jNative;

/**
 * A linear layer with PyTorch's {@code nn.Linear} layout, {@code y = x Wᵀ + b}, optionally fused with the residual
 * add of a ViT block ({@code y = x Wᵀ + b + residual}, the block output written once). The GEMMs are library
 * calls: OpenBLAS on the CPU, cuBLAS on CUDA ({@code d4j_linear_*}).
 *
 * <p>Shapes: x [..., K] of any rank ≥ 1, its rows being the M = numel/K vectors; weight [N, K]; bias [N];
 * y and residual [..., N] with x's leading dimensions. The backward writes dx (an activation gradient, shape of x)
 * and ACCUMULATES dweight and dbias (parameter gradients, +=); the residual's gradient is dy itself.
 *
 * <p>PyTorch equivalence: {@code y = F.linear(x, weight, bias) + residual}.
 *
 * <p>Stateless: no workspace, nothing allocated per call.
 */
public final class Linear {
    private Linear() {}

    /**
     * Writes {@code y = x Wᵀ + bias + residual}.
     *
     * @param x        input [..., K]
     * @param weight   [N, K]
     * @param bias     [N], or null for none
     * @param residual [..., N] (the shape of y), or null for none; not y itself
     * @param y        output [..., N] (x's leading dimensions), overwritten
     */
    public static void forward(Tensor x, Tensor weight, Tensor bias, Tensor residual, Tensor y) {
        Shape s = shape(x, weight);
        long[] outShape = s.outShape(x);
        operand("y", y, outShape, x);
        if (bias != null) operand("bias", bias, new long[] {s.n}, x);
        if (residual != null) {
            operand("residual", residual, outShape, x);
            if (residual == y) throw new IllegalArgumentException("linear: residual may not be y itself (in place)");
        }
        if (y == x) throw new IllegalArgumentException("linear: y may not be x itself");
        Backend backend = x.backend();
        backend.call("linear forward " + s,
                () -> Distill4jNative.d4j_linear_forward(backend.kernels(), backend.stream(), x.data(), weight.data(),
                data(bias), data(residual), s.m, s.k, s.n, y.data(), 0));
    }

    /**
     * Back-propagates {@code dy}: {@code dx = dy W} (written), {@code dweight += dyᵀ x},
     * {@code dbias += Σ_rows dy}.
     *
     * @param x       the forward's input [..., K]
     * @param weight  [N, K]
     * @param dy      upstream gradient [..., N]
     * @param dx      = d/dx [..., K], overwritten; null to skip it (the first layer)
     * @param dweight [N, K], accumulated
     * @param dbias   [N], accumulated; null when the layer has no bias
     */
    public static void backward(Tensor x, Tensor weight, Tensor dy, Tensor dx, Tensor dweight, Tensor dbias) {
        Shape s = shape(x, weight);
        operand("dy", dy, s.outShape(x), x);
        if (dx != null) {
            operand("dx", dx, x.shape(), x);
            if (dx == dy || dx == weight) throw new IllegalArgumentException("linear: dx may not be dy or weight");
        }
        operand("dweight", dweight, new long[] {s.n, s.k}, x);
        if (dweight == x || dweight == dy || dweight == weight) {
            throw new IllegalArgumentException("linear: dweight must be its own tensor");
        }
        if (dbias != null) operand("dbias", dbias, new long[] {s.n}, x);
        Backend backend = x.backend();
        backend.call("linear backward " + s,
                () -> Distill4jNative.d4j_linear_backward(backend.kernels(), backend.stream(), x.data(),
                weight.data(), dy.data(), s.m, s.k, s.n, data(dx), dweight.data(), data(dbias), 0));
    }

    /** The output shape of {@code x} through a layer with {@code outFeatures} outputs: [..., outFeatures]. */
    public static long[] outputShape(Tensor x, long outFeatures) {
        long[] out = x.shape();
        if (out.length == 0) throw new IllegalArgumentException("linear: x must have rank >= 1");
        out[out.length - 1] = outFeatures;
        return out;
    }

    private record Shape(long m, long k, long n) {
        long[] outShape(Tensor x) {
            return outputShape(x, n);
        }

        @Override
        public String toString() {
            return "M=" + m + ", K=" + k + ", N=" + n;
        }
    }

    private static Shape shape(Tensor x, Tensor weight) {
        open("x", x);
        open("weight", weight);
        if (x.rank() < 1) throw new IllegalArgumentException("linear: x must have rank >= 1, got a scalar");
        if (weight.rank() != 2) {
            throw new IllegalArgumentException("linear: weight must be [N, K] (out, in), got "
                    + Arrays.toString(weight.shape()));
        }
        long k = x.size(x.rank() - 1), n = weight.size(0);
        if (weight.size(1) != k) {
            throw new IllegalArgumentException("linear: weight " + Arrays.toString(weight.shape()) + " does not take x "
                    + Arrays.toString(x.shape()) + ": its second dimension must be x's last, " + k);
        }
        if (x.numel() == 0 || n == 0) {
            throw new IllegalArgumentException("linear: empty operand, x " + Arrays.toString(x.shape()) + ", weight "
                    + Arrays.toString(weight.shape()));
        }
        if (x.backend() != weight.backend()) {
            throw new IllegalArgumentException("linear: weight is on " + weight.backend().name()
                    + " and x on " + x.backend().name() + ": copy one over first");
        }
        long m = x.numel() / k;
        if (m > Integer.MAX_VALUE || k > Integer.MAX_VALUE || n > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("linear: M=" + m + ", K=" + k + ", N=" + n + " exceeds a BLAS call's 2^31");
        }
        return new Shape(m, k, n);
    }

    private static void open(String name, Tensor t) {
        if (t == null) throw new IllegalArgumentException("linear: " + name + " is required");
        if (t.isClosed()) throw new IllegalStateException("linear: " + name + " tensor is closed");
    }

    private static void operand(String name, Tensor t, long[] shape, Tensor x) {
        open(name, t);
        if (!Arrays.equals(t.shape(), shape)) {
            throw new IllegalArgumentException("linear: " + name + " must have shape " + Arrays.toString(shape)
                    + ", got " + Arrays.toString(t.shape()));
        }
        if (t.backend() != x.backend()) {
            throw new IllegalArgumentException("linear: " + name + " is on " + t.backend().name()
                    + ", x on " + x.backend().name() + ": copy it over first");
        }
    }

    private static FloatPointer data(Tensor t) {
        return t == null ? null : t.data();
    }
}
