package org.distill4j.ops;

import java.util.Arrays;
import java.util.Objects;
import org.bytedeco.javacpp.IntPointer;
import org.distill4j.IntTensor;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.natives.Distill4jNative;

/**
 * Fused softmax + cross-entropy: the classification loss and its gradient with respect to the logits in one pass
 * over each row (llm.c's fused classifier; CPU and CUDA kernels behind {@code d4j_cross_entropy}), the same with
 * probability targets ({@link #computeSoft}, for Mixup and CutMix; {@code d4j_cross_entropy_soft}), and
 * {@link #argmax}.
 *
 * <p>PyTorch equivalence: {@code loss = F.cross_entropy(logits, labels, label_smoothing=eps) * lossScale} (reduction
 * {@code mean}, no class weights, no ignore index); the gradient is {@code lossScale/B · (softmax − target)} with
 * {@code target = (1 − eps)·onehot + eps/C}. Labels and argmax indices are int32 ({@link IntTensor}), as PyTorch's
 * are integers (int64 there; int32 covers every class count the kernels take, C &lt; 2³¹). PyTorch's default
 * {@code ignore_index} −100 is an out-of-range label here.
 *
 * <p>Labels are checked to be in [0, C) when the backend's memory is host memory (cpu, cuda-emu): an
 * {@link IllegalArgumentException} names the first bad row and its value. On cuda they live in device memory and
 * are NOT checked here (reading them back would cost a synchronisation every step): the caller checks its host copy
 * of the batch with {@link #checkLabels(int[], long)} before uploading it. Below that check the kernels never use a
 * bad label as an index: the CPU kernel refuses the call (an {@link IllegalStateException} naming row and label),
 * and the CUDA kernel, which cannot report without a synchronisation, writes NaN into that row's loss and gradient
 * (so the mean loss is NaN, and the trainer stops with its non-finite error).
 *
 * <p>Instances are immutable and thread-safe; the tensors passed to one call must not be used concurrently.
 */
public final class CrossEntropy {
    private final float labelSmoothing;
    private final float lossScale;

    private CrossEntropy(Builder b) {
        this.labelSmoothing = b.labelSmoothing;
        this.lossScale = b.lossScale;
    }

    /** A builder with no label smoothing and loss scale 1. */
    public static Builder builder() {
        return new Builder();
    }

    /** The label smoothing eps, in [0, 1]. */
    public float labelSmoothing() {
        return labelSmoothing;
    }

    /** The factor applied to the loss and the gradient. */
    public float lossScale() {
        return lossScale;
    }

    /**
     * Computes row losses, their mean and the gradient into caller-owned tensors; allocates nothing.
     *
     * @param logits [B, C]
     * @param labels [B], int32 class indices in [0, C)
     * @param rowLoss output [B]: lossScale times each row's loss
     * @param loss output [] (their mean, the loss), or null to skip it
     * @param grad output d loss / d logits [B, C], WRITTEN, or null to compute the loss only
     */
    public void compute(Tensor logits, IntTensor labels, Tensor rowLoss, Tensor loss, Tensor grad) {
        checkMatrix("cross_entropy", "logits", logits);
        long b = logits.size(0), c = logits.size(1);
        checkIndices("cross_entropy", "labels", labels, b, logits);
        checkOperand("cross_entropy", "rowLoss", rowLoss, new long[] {b}, logits);
        if (loss != null) checkOperand("cross_entropy", "loss", loss, new long[0], logits);
        if (grad != null) checkOperand("cross_entropy", "grad", grad, new long[] {b, c}, logits);
        Backend backend = logits.backend();
        // Host memory: the labels are read here, unless the call is being captured into a CUDA graph (the labels
        // of a replay are not there yet; the kernel's own guard still holds).
        if (backend.isHostMemory() && !backend.capturing()) {
            backend.synchronize();
            checkLabels(labels.data(), b, c);
        }
        backend.call("cross_entropy",
                () -> Distill4jNative.d4j_cross_entropy(backend.kernels(), backend.stream(), logits.data(),
                labels.data(), b, c, labelSmoothing, lossScale, rowLoss.data(), loss == null ? null : loss.data(),
                grad == null ? null : grad.data()));
    }

    /**
     * The same with probability targets, as Mixup and CutMix make them: {@code F.cross_entropy(logits, targets,
     * label_smoothing=eps) * lossScale} with a float {@code targets} [B, C] (reduction {@code mean}, over B). With
     * {@code t' = (1 − eps)·targets + eps/C}, a row's loss is {@code Σ_c t'_c · (−log_softmax(logits)_c)} and the
     * gradient is {@code lossScale/B · (softmax · Σ_c t'_c − t')}. As in PyTorch, a target row need not sum to 1 and
     * targets are not checked: a NaN target gives a NaN row. Allocates nothing.
     *
     * @param logits [B, C]
     * @param targets [B, C], the target distribution of each row
     * @param rowLoss output [B]: lossScale times each row's loss
     * @param loss output [] (their mean, the loss), or null to skip it
     * @param grad output d loss / d logits [B, C], WRITTEN, or null to compute the loss only
     */
    public void computeSoft(Tensor logits, Tensor targets, Tensor rowLoss, Tensor loss, Tensor grad) {
        checkMatrix("cross_entropy_soft", "logits", logits);
        long b = logits.size(0), c = logits.size(1);
        checkOperand("cross_entropy_soft", "targets", targets, new long[] {b, c}, logits);
        checkOperand("cross_entropy_soft", "rowLoss", rowLoss, new long[] {b}, logits);
        if (loss != null) checkOperand("cross_entropy_soft", "loss", loss, new long[0], logits);
        if (grad != null) checkOperand("cross_entropy_soft", "grad", grad, new long[] {b, c}, logits);
        Backend backend = logits.backend();
        backend.call("cross_entropy_soft",
                () -> Distill4jNative.d4j_cross_entropy_soft(backend.kernels(), backend.stream(), logits.data(),
                targets.data(), b, c, labelSmoothing, lossScale, rowLoss.data(), loss == null ? null : loss.data(),
                grad == null ? null : grad.data()));
    }

    /**
     * Writes the column of each row's maximum into {@code index}, as {@code torch.argmax(x, dim=1)} gives it: the
     * first of equal maxima, and the first NaN where a row holds one (torch takes NaN as the maximum). The indices
     * are what {@link #compute} takes as labels (hard distillation feeds the teacher's argmax straight back).
     *
     * @param x [B, C]
     * @param index output [B], int32, same backend
     */
    public static void argmax(Tensor x, IntTensor index) {
        checkMatrix("argmax", "x", x);
        checkIndices("argmax", "index", index, x.size(0), x);
        Backend backend = x.backend();
        backend.call("argmax",
                () -> Distill4jNative.d4j_argmax(backend.kernels(), backend.stream(), x.data(), x.size(0), x.size(1),
                index.data()));
    }

    /**
     * Throws {@link IllegalArgumentException}, naming the first bad row and its value, unless every label is in
     * [0, classes): the check a caller runs on its host copy of a batch bound for a cuda backend.
     */
    public static void checkLabels(int[] labels, long classes) {
        Objects.requireNonNull(labels, "labels");
        for (int i = 0; i < labels.length; i++) checkLabel(labels[i], i, classes);
    }

    private static void checkLabels(IntPointer labels, long b, long classes) {
        for (long i = 0; i < b; i++) checkLabel(labels.get(i), i, classes);
    }

    private static void checkLabel(int l, long i, long classes) {
        if (l < 0 || l >= classes) {
            throw new IllegalArgumentException("cross_entropy: label " + l + " at row " + i
                    + " is not a class index in [0, " + classes + ")");
        }
    }

    private static void checkMatrix(String op, String name, Tensor t) {
        Objects.requireNonNull(t, name);
        if (t.isClosed()) throw new IllegalStateException(op + ": " + name + " tensor is closed");
        if (t.rank() != 2) {
            throw new IllegalArgumentException(op + ": " + name + " must be [B, C], got " + Arrays.toString(t.shape()));
        }
        if (t.size(0) == 0 || t.size(1) == 0) {
            throw new IllegalArgumentException(op + ": empty input, B = " + t.size(0) + ", C = " + t.size(1));
        }
    }

    private static void checkOperand(String op, String name, Tensor t, long[] shape, Tensor first) {
        if (t == null) throw new IllegalArgumentException(op + ": " + name + " is required");
        if (t.isClosed()) throw new IllegalStateException(op + ": " + name + " tensor is closed");
        if (!Arrays.equals(t.shape(), shape)) {
            throw new IllegalArgumentException(op + ": " + name + " must have shape " + Arrays.toString(shape)
                    + ", got " + Arrays.toString(t.shape()));
        }
        if (t.backend() != first.backend()) {
            throw new IllegalArgumentException(op + ": " + name + " is on " + t.backend().name() + ", the logits on "
                    + first.backend().name());
        }
    }

    private static void checkIndices(String op, String name, IntTensor t, long b, Tensor first) {
        if (t == null) throw new IllegalArgumentException(op + ": " + name + " is required");
        if (t.isClosed()) throw new IllegalStateException(op + ": " + name + " tensor is closed");
        if (t.rank() != 1 || t.size(0) != b) {
            throw new IllegalArgumentException(op + ": " + name + " must have shape [" + b + "], got "
                    + Arrays.toString(t.shape()));
        }
        if (t.backend() != first.backend()) {
            throw new IllegalArgumentException(op + ": " + name + " is on " + t.backend().name() + ", the logits on "
                    + first.backend().name());
        }
    }

    @Override
    public String toString() {
        return "CrossEntropy[labelSmoothing=" + labelSmoothing + ", lossScale=" + lossScale + "]";
    }

    /** Configures a {@link CrossEntropy}. */
    public static final class Builder {
        private float labelSmoothing;
        private float lossScale = 1f;

        private Builder() {}

        /** Label smoothing eps in [0, 1] (default 0), as PyTorch's {@code label_smoothing}. */
        public Builder labelSmoothing(float eps) {
            if (!(eps >= 0f && eps <= 1f)) {
                throw new IllegalArgumentException("cross_entropy: labelSmoothing must be in [0, 1], got " + eps);
            }
            this.labelSmoothing = eps;
            return this;
        }

        /** Finite factor for loss and gradient (default 1): the (1 − α) weight of DeiT's loss, for instance. */
        public Builder lossScale(float s) {
            if (!Float.isFinite(s)) throw new IllegalArgumentException("cross_entropy: lossScale must be finite, got " + s);
            this.lossScale = s;
            return this;
        }

        /** The configured op. */
        public CrossEntropy build() {
            return new CrossEntropy(this);
        }
    }
}
