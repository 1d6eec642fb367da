package org.distill4j.ops;

import java.util.Arrays;
import java.util.Objects;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.natives.Distill4jNative;

/**
 * The AdamW update of one parameter tensor, in place (CPU and CUDA kernels behind {@code d4j_adamw}), with
 * {@code torch.optim.AdamW}'s semantics (no amsgrad, not maximize): decoupled weight decay, bias correction, eps
 * outside the square root. With g = grad · gradScale:
 * <pre>
 *   param *= 1 − lr·weightDecay;   m = β1·m + (1 − β1)·g;   v = β2·v + (1 − β2)·g²
 *   param −= lr / (1 − β1^step) · m / (√v / √(1 − β2^step) + eps)
 * </pre>
 * Defaults are PyTorch's: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01. The moments m and v are
 * caller-owned tensors of the parameter's shape, zeroed before the first step; {@code step} counts from 1.
 *
 * <p>Instances are immutable and thread-safe; the tensors passed to one call must not be used concurrently.
 */
public final class AdamW {
    private final float lr, beta1, beta2, eps, weightDecay;

    private AdamW(Builder b) {
        this.lr = b.lr;
        this.beta1 = b.beta1;
        this.beta2 = b.beta2;
        this.eps = b.eps;
        this.weightDecay = b.weightDecay;
    }

    /** A builder with PyTorch's defaults. */
    public static Builder builder() {
        return new Builder();
    }

    /** The default learning rate. */
    public float lr() {
        return lr;
    }

    /** β1. */
    public float beta1() {
        return beta1;
    }

    /** β2. */
    public float beta2() {
        return beta2;
    }

    /** eps, added to the bias-corrected √v. */
    public float eps() {
        return eps;
    }

    /** The default (decoupled) weight decay. */
    public float weightDecay() {
        return weightDecay;
    }

    /** One step with the configured learning rate and weight decay; see {@link #step(Tensor, Tensor, Tensor, Tensor, long, float, float, Tensor)}. */
    public void step(Tensor param, Tensor grad, Tensor m, Tensor v, long step, Tensor gradScale) {
        step(param, grad, m, v, step, lr, weightDecay, gradScale);
    }

    /**
     * One step, updating param, m and v in place; allocates nothing and reads nothing back to the host.
     *
     * @param param the parameter, any shape
     * @param grad its gradient, same shape and backend (read only)
     * @param m first moment, same shape
     * @param v second moment, same shape
     * @param step the step number, from 1
     * @param lr this step's learning rate (a schedule's value), finite and &ge; 0
     * @param weightDecay this step's weight decay, finite and &ge; 0 (0 for biases and norms, as usual)
     * @param gradScale a [] or [1] tensor multiplying the gradient, read on the device (the clip coefficient of
     *     {@link GradNorm#scale()}), or null for 1
     */
    public void step(Tensor param, Tensor grad, Tensor m, Tensor v, long step, float lr, float weightDecay,
                     Tensor gradScale) {
        Objects.requireNonNull(param, "param");
        if (param.isClosed()) throw new IllegalStateException("adamw: param tensor is closed");
        check("grad", grad, param);
        check("m", m, param);
        check("v", v, param);
        if (gradScale != null) {
            if (gradScale.isClosed()) throw new IllegalStateException("adamw: gradScale tensor is closed");
            if (gradScale.numel() != 1) {
                throw new IllegalArgumentException("adamw: gradScale must hold one element, got shape "
                        + Arrays.toString(gradScale.shape()));
            }
            if (gradScale.backend() != param.backend()) {
                throw new IllegalArgumentException("adamw: gradScale is on " + gradScale.backend().name()
                        + ", param on " + param.backend().name());
            }
        }
        if (step < 1) throw new IllegalArgumentException("adamw: step counts from 1, got " + step);
        if (!(lr >= 0f) || Float.isInfinite(lr)) throw new IllegalArgumentException("adamw: lr must be finite and >= 0, got " + lr);
        if (!(weightDecay >= 0f) || Float.isInfinite(weightDecay)) {
            throw new IllegalArgumentException("adamw: weightDecay must be finite and >= 0, got " + weightDecay);
        }
        Backend backend = param.backend();
        backend.call("adamw",
                () -> Distill4jNative.d4j_adamw(backend.kernels(), backend.stream(), param.data(), grad.data(),
                        m.data(),
                v.data(), param.numel(), lr, beta1, beta2, eps, weightDecay, step,
                gradScale == null ? null : gradScale.data()));
    }

    private static void check(String name, Tensor t, Tensor param) {
        if (t == null) throw new IllegalArgumentException("adamw: " + name + " is required");
        if (t.isClosed()) throw new IllegalStateException("adamw: " + name + " tensor is closed");
        if (!Arrays.equals(t.shape(), param.shape())) {
            throw new IllegalArgumentException("adamw: " + name + " must have the shape of param "
                    + Arrays.toString(param.shape()) + ", got " + Arrays.toString(t.shape()));
        }
        if (t.backend() != param.backend()) {
            throw new IllegalArgumentException("adamw: " + name + " is on " + t.backend().name() + ", param on "
                    + param.backend().name());
        }
    }

    @Override
    public String toString() {
        return "AdamW[lr=" + lr + ", betas=(" + beta1 + ", " + beta2 + "), eps=" + eps + ", weightDecay=" + weightDecay + "]";
    }

    /** Configures an {@link AdamW}. */
    public static final class Builder {
        private float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weightDecay = 0.01f;

        private Builder() {}

        /** Learning rate, finite and &ge; 0 (default 1e-3). */
        public Builder lr(float lr) {
            if (!(lr >= 0f) || Float.isInfinite(lr)) throw new IllegalArgumentException("adamw: lr must be finite and >= 0, got " + lr);
            this.lr = lr;
            return this;
        }

        /** β1 and β2, each in [0, 1) (default 0.9, 0.999). */
        public Builder betas(float beta1, float beta2) {
            if (!(beta1 >= 0f && beta1 < 1f) || !(beta2 >= 0f && beta2 < 1f)) {
                throw new IllegalArgumentException("adamw: betas must be in [0, 1), got (" + beta1 + ", " + beta2 + ")");
            }
            this.beta1 = beta1;
            this.beta2 = beta2;
            return this;
        }

        /** eps, finite and &ge; 0 (default 1e-8). */
        public Builder eps(float eps) {
            if (!(eps >= 0f) || Float.isInfinite(eps)) throw new IllegalArgumentException("adamw: eps must be finite and >= 0, got " + eps);
            this.eps = eps;
            return this;
        }

        /** Decoupled weight decay, finite and &ge; 0 (default 0.01). */
        public Builder weightDecay(float wd) {
            if (!(wd >= 0f) || Float.isInfinite(wd)) {
                throw new IllegalArgumentException("adamw: weightDecay must be finite and >= 0, got " + wd);
            }
            this.weightDecay = wd;
            return this;
        }

        /** The configured optimizer. */
        public AdamW build() {
            return new AdamW(this);
        }
    }
}
