package org.distill4j.ops;

import java.util.Arrays;
import java.util.Objects;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.natives.Distill4jNative;

/**
 * Fused log_softmax + KL divergence with temperature: the distillation loss and its gradient with respect to the
 * student logits, computed in one pass over the rows (CPU and CUDA kernels behind the same C entry,
 * {@code d4j_kl_div}).
 *
 * <p>With p = softmax(student / T) and q = softmax(teacher / T) (or q = exp(teacher) when {@code logTarget}, the
 * teacher then being log-probabilities to which T is not applied), the row loss is
 * {@code sum_c q (log q - log p)} with 0·log 0 = 0, multiplied by T² unless disabled (Hinton et al.), and reduced
 * as PyTorch's {@code kl_div} does (default {@link Reduction#BATCHMEAN}). The gradient is
 * {@code scale/T · (p·Σq − q)} times the reduction's normalisation and the upstream gradient.
 *
 * <p>PyTorch equivalence: {@code kl_div(log_softmax(zs/T, 1), softmax(zt/T, 1), reduction) * T*T}. One difference:
 * where q = 0 and log p = -inf, or with {@code logTarget} where log q = -inf, PyTorch computes 0·(-inf) = NaN;
 * this op uses the limit 0.
 *
 * <p>Instances are immutable and thread-safe; the tensors passed to one call must not be used concurrently.
 */
public final class KlDiv {
    private final float temperature;
    private final Reduction reduction;
    private final boolean logTarget;
    private final boolean scaleBySquaredTemperature;

    private KlDiv(Builder b) {
        this.temperature = b.temperature;
        this.reduction = b.reduction;
        this.logTarget = b.logTarget;
        this.scaleBySquaredTemperature = b.scaleBySquaredTemperature;
    }

    /** A builder with T = 1, batchmean, logits as teacher input and T² scaling on. */
    public static Builder builder() {
        return new Builder();
    }

    /** The temperature T. */
    public float temperature() {
        return temperature;
    }

    /** The reduction over the batch. */
    public Reduction reduction() {
        return reduction;
    }

    /** Whether the teacher input is log-probabilities rather than logits. */
    public boolean logTarget() {
        return logTarget;
    }

    /** Whether loss and gradient are multiplied by T². */
    public boolean scaleBySquaredTemperature() {
        return scaleBySquaredTemperature;
    }

    /**
     * Computes loss and gradient into new tensors on the inputs' backend.
     *
     * @param student logits [B, C]
     * @param teacher logits (or log-probabilities with {@code logTarget}) [B, C], same backend
     * @return the loss (shape [] , or [B] for {@link Reduction#NONE}) and d loss / d student [B, C]; close it
     */
    public Result compute(Tensor student, Tensor teacher) {
        checkInputs(student, teacher);
        Backend backend = student.backend();
        long b = student.size(0), c = student.size(1);
        Tensor loss = null, grad = null, rows = null;
        try {
            loss = reduction == Reduction.NONE ? Tensor.empty(backend, b) : Tensor.empty(backend);
            grad = Tensor.empty(backend, b, c);
            rows = reduction == Reduction.NONE ? null : Tensor.empty(backend, b);
            compute(student, teacher, null, loss, grad, rows);
            return new Result(loss, grad);
        } catch (RuntimeException | Error e) {
            if (loss != null) loss.close();
            if (grad != null) grad.close();
            throw e;
        } finally {
            if (rows != null) rows.close();
        }
    }

    /**
     * Computes into caller-owned tensors: the allocation-free form for training loops.
     *
     * @param student logits [B, C]
     * @param teacher logits or log-probabilities [B, C]
     * @param upstream upstream gradient, or null for 1: shape [] for the reductions, [B] for NONE
     * @param loss output: shape [] for the reductions, [B] for NONE
     * @param grad output d loss / d student [B, C], or null to compute the loss only
     * @param rowWorkspace [B] scratch for the per-row losses; ignored (may be null) for NONE
     */
    public void compute(Tensor student, Tensor teacher, Tensor upstream, Tensor loss, Tensor grad, Tensor rowWorkspace) {
        checkInputs(student, teacher);
        long b = student.size(0), c = student.size(1);
        boolean none = reduction == Reduction.NONE;
        long[] lossShape = none ? new long[] {b} : new long[0];
        checkOperand("loss", loss, lossShape, student);
        if (upstream != null) checkOperand("upstream", upstream, lossShape, student);
        if (grad != null) checkOperand("grad", grad, new long[] {b, c}, student);
        Tensor rows = none ? loss : rowWorkspace;
        if (!none) checkOperand("rowWorkspace", rowWorkspace, new long[] {b}, student);
        Backend backend = student.backend();
        backend.call("kl_div",
                () -> Distill4jNative.d4j_kl_div(backend.kernels(), backend.stream(), student.data(), teacher.data(), b,
                c, temperature, reduction.nativeCode(), logTarget ? 1 : 0,
                scaleBySquaredTemperature ? temperature * temperature : 1.0f,
                upstream == null ? null : upstream.data(), rows.data(), none ? null : loss.data(),
                grad == null ? null : grad.data()));
    }

    private static void checkInputs(Tensor student, Tensor teacher) {
        Objects.requireNonNull(student, "student");
        Objects.requireNonNull(teacher, "teacher");
        if (student.isClosed() || teacher.isClosed()) {
            throw new IllegalStateException("kl_div: " + (student.isClosed() ? "student" : "teacher") + " tensor is closed");
        }
        if (student.rank() != 2) {
            throw new IllegalArgumentException("kl_div: student must be [B, C], got " + Arrays.toString(student.shape()));
        }
        if (!Arrays.equals(student.shape(), teacher.shape())) {
            throw new IllegalArgumentException("kl_div: student " + Arrays.toString(student.shape())
                    + " and teacher " + Arrays.toString(teacher.shape()) + " differ in shape");
        }
        if (student.size(0) == 0 || student.size(1) == 0) {
            throw new IllegalArgumentException("kl_div: empty input, B = " + student.size(0) + ", C = " + student.size(1));
        }
        if (student.backend() != teacher.backend()) {
            throw new IllegalArgumentException("kl_div: student is on " + student.backend().name() + " and teacher on "
                    + teacher.backend().name() + ": copy one over first");
        }
    }

    private static void checkOperand(String name, Tensor t, long[] shape, Tensor student) {
        if (t == null) throw new IllegalArgumentException("kl_div: " + name + " is required");
        if (t.isClosed()) throw new IllegalStateException("kl_div: " + name + " tensor is closed");
        if (!Arrays.equals(t.shape(), shape)) {
            throw new IllegalArgumentException("kl_div: " + name + " must have shape " + Arrays.toString(shape)
                    + ", got " + Arrays.toString(t.shape()));
        }
        if (t.backend() != student.backend()) {
            throw new IllegalArgumentException("kl_div: " + name + " is on " + t.backend().name() + ", the inputs on "
                    + student.backend().name());
        }
    }

    @Override
    public String toString() {
        return "KlDiv[T=" + temperature + ", " + reduction.torchName() + (logTarget ? ", logTarget" : "")
                + (scaleBySquaredTemperature ? ", T^2" : "") + "]";
    }

    /** Loss and gradient from {@link #compute(Tensor, Tensor)}; closing it closes both. */
    public static final class Result implements AutoCloseable {
        private final Tensor loss;
        private final Tensor grad;

        Result(Tensor loss, Tensor grad) {
            this.loss = loss;
            this.grad = grad;
        }

        /** The loss: shape [] for the reductions, [B] for NONE. */
        public Tensor loss() {
            return loss;
        }

        /** d loss / d student logits, [B, C]. */
        public Tensor grad() {
            return grad;
        }

        /** The scalar loss, copied to the host (reductions other than NONE). */
        public float lossValue() {
            if (loss.rank() != 0) throw new IllegalStateException("reduction none gives one loss per row: use loss()");
            return loss.toArray()[0];
        }

        @Override
        public void close() {
            loss.close();
            grad.close();
        }
    }

    /** Configures a {@link KlDiv}. */
    public static final class Builder {
        private float temperature = 1.0f;
        private Reduction reduction = Reduction.BATCHMEAN;
        private boolean logTarget;
        private boolean scaleBySquaredTemperature = true;

        private Builder() {}

        /** Temperature T &gt; 0, finite. */
        public Builder temperature(float t) {
            if (!(t > 0.0f) || Float.isInfinite(t)) {
                throw new IllegalArgumentException("kl_div: temperature must be finite and > 0, got " + t);
            }
            this.temperature = t;
            return this;
        }

        /** The reduction (default batchmean). */
        public Builder reduction(Reduction r) {
            this.reduction = Objects.requireNonNull(r, "reduction");
            return this;
        }

        /** Whether the teacher input is log-probabilities (default false: logits). */
        public Builder logTarget(boolean b) {
            this.logTarget = b;
            return this;
        }

        /** Whether loss and gradient are multiplied by T² (default true). */
        public Builder scaleBySquaredTemperature(boolean b) {
            this.scaleBySquaredTemperature = b;
            return this;
        }

        /** The configured op. */
        public KlDiv build() {
            return new KlDiv(this);
        }
    }
}
