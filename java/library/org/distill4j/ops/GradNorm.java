package org.distill4j.ops;

import java.util.List;
import java.util.Objects;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.natives.Distill4jNative;

/**
 * Global gradient-norm clipping without a host round trip, as {@code torch.nn.utils.clip_grad_norm_(grads,
 * maxNorm)} (L2 norm): the sum of squares over every gradient tensor accumulates into a device scalar, in list
 * order (reproducible bits); then norm = √sum and scale = min(1, maxNorm / (norm + 1e-6)) are formed on the device.
 * The gradients are not touched: pass {@link #scale()} to {@link AdamW} as its {@code gradScale}, which multiplies
 * the gradient as it reads it (the same product clip_grad_norm_ writes in place).
 *
 * <p>The trainer passes one tensor, the model's whole {@linkplain org.distill4j.nn.VisionTransformer#gradientBuffer()
 * gradient buffer} (its gaps hold zeros): one sum-of-squares call a step whatever the parameter count.
 *
 * <p>Owns three scalars on its backend, allocated once; close it to free them. Nothing is copied to the host
 * unless {@link #normValue()} or {@link #scaleValue()} is called. Used from one thread at a time.
 */
public final class GradNorm implements AutoCloseable {
    private final Backend backend;
    private final float maxNorm;
    private final Tensor sumSquares, norm, scale;

    /**
     * @param backend where the gradients live
     * @param maxNorm the clipping threshold, &gt; 0 (+∞ computes the norm without clipping)
     */
    public GradNorm(Backend backend, float maxNorm) {
        this.backend = Objects.requireNonNull(backend, "backend");
        if (!(maxNorm > 0f)) throw new IllegalArgumentException("grad_norm: maxNorm must be > 0, got " + maxNorm);
        this.maxNorm = maxNorm;
        Tensor s = null, n = null;
        try {
            s = Tensor.empty(backend);
            n = Tensor.empty(backend);
            this.scale = Tensor.empty(backend);
        } catch (RuntimeException | Error e) {
            if (s != null) s.close();
            if (n != null) n.close();
            throw e;
        }
        this.sumSquares = s;
        this.norm = n;
    }

    /** The clipping threshold. */
    public float maxNorm() {
        return maxNorm;
    }

    /**
     * Computes the sum of squares over {@code grads} (in list order), the norm and the clip coefficient, on the
     * device; allocates nothing and does not synchronise.
     *
     * @param grads gradient tensors on this backend, any shapes; an empty list gives norm 0, scale 1
     */
    public void compute(List<Tensor> grads) {
        Objects.requireNonNull(grads, "grads");
        for (int i = 0; i < grads.size(); i++) {
            Tensor g = grads.get(i);
            if (g == null) throw new IllegalArgumentException("grad_norm: grads[" + i + "] is null");
            if (g.isClosed()) throw new IllegalStateException("grad_norm: grads[" + i + "] is closed");
            if (g.backend() != backend) {
                throw new IllegalArgumentException("grad_norm: grads[" + i + "] is on " + g.backend().name()
                        + ", this op on " + backend.name());
            }
        }
        if (grads.isEmpty()) sumSquares.zero();
        for (int i = 0; i < grads.size(); i++) {
            Tensor g = grads.get(i);
            int accumulate = i == 0 ? 0 : 1;
            backend.call("sum_squares", () -> Distill4jNative.d4j_sum_squares(backend.kernels(), backend.stream(),
                    g.data(), g.numel(), accumulate, sumSquares.data()));
        }
        backend.call("clip_scale",
                () -> Distill4jNative.d4j_clip_scale(backend.kernels(), backend.stream(), sumSquares.data(), maxNorm,
                norm.data(), scale.data()));
    }

    /** The device scalar [] holding the last sum of squares. */
    public Tensor sumSquares() {
        return sumSquares;
    }

    /** The device scalar [] holding the last total norm. */
    public Tensor norm() {
        return norm;
    }

    /** The device scalar [] holding the last clip coefficient, min(1, maxNorm / (norm + 1e-6)). */
    public Tensor scale() {
        return scale;
    }

    /** The last total norm, copied to the host (synchronises). */
    public float normValue() {
        return norm.toArray()[0];
    }

    /** The last clip coefficient, copied to the host (synchronises). */
    public float scaleValue() {
        return scale.toArray()[0];
    }

    @Override
    public void close() {
        sumSquares.close();
        norm.close();
        scale.close();
    }
}
