package org.distill4j.reference;

import java.util.Objects;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AbstractTensor;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.distill4j.ops.Reduction;

/**
 * The reference for the fused "log_softmax + KL divergence" op: the same computation written as PyTorch would
 * write it, run by libtorch (CPU) through the JavaCPP preset {@code org.bytedeco:pytorch}, with the gradient
 * taken by autograd.
 *
 * <p>The chain, for student logits {@code zs [B,C]} and teacher logits {@code zt [B,C]}:
 * <pre>
 *   logp   = log_softmax(zs / T, dim=1)
 *   target = softmax(zt / T, dim=1)            (logTarget = false)
 *          = zt, as given: log-probabilities   (logTarget = true; T does not apply to the teacher)
 *   loss   = kl_div(logp, target, reduction, logTarget) * (scaleT2 ? T*T : 1)
 *   grad   = d loss / d zs, by loss.backward(gradOut)
 * </pre>
 * {@code none} gives PyTorch's element-wise [B,C] result summed over dim 1, i.e. one loss per row [B].
 * libtorch's C++ {@code at::kl_div} takes an {@code at::Reduction} (None = 0, Mean = 1, Sum = 2) and has no
 * {@code batchmean}: as in PyTorch's Python {@code kl_div}, batchmean is the {@code Sum} result divided by B.
 *
 * <p>The input tensors are built once by the constructor and reused by every {@link #run}/{@link #runNoCopy};
 * the temporaries of a run live in a {@link PointerScope} closed at its end, and the student's {@code .grad} is
 * reset (set to undefined, like {@code x.grad = None}) before and after each run, so gradients never
 * accumulate and repeated calls do not grow native memory. Not thread-safe: use one instance per thread.
 */
@SuppressWarnings("try") // the PointerScopes are used for their effect, never referenced
public final class TorchKlDiv implements AutoCloseable {

    /** Values of {@code at::Reduction} (ATen/core/Reduction.h); the preset does not export them. */
    private static final long AT_REDUCTION_NONE = 0, AT_REDUCTION_MEAN = 1, AT_REDUCTION_SUM = 2;

    /** Result of {@link #run}: the loss (length 1, or B for {@link Reduction#NONE}) and d loss / d student [B*C]. */
    public record Result(double[] loss, double[] grad) {}

    private final int batch;
    private final int classes;
    private final boolean float64;
    private final ScalarType dtype;
    private Tensor student; // leaf [B,C], requires grad
    private Tensor teacher; // [B,C]

    /**
     * Copies the inputs into libtorch tensors, once.
     *
     * @param student student logits, row-major [batch, classes]
     * @param teacher teacher logits, or teacher log-probabilities for runs with {@code logTarget}, [batch, classes]
     * @param batch   B &ge; 1
     * @param classes C &ge; 1
     * @param float64 run the chain in float64 (the float inputs are widened exactly); float32 otherwise
     */
    public TorchKlDiv(float[] student, float[] teacher, int batch, int classes, boolean float64) {
        Objects.requireNonNull(student, "student");
        Objects.requireNonNull(teacher, "teacher");
        if (batch < 1 || classes < 1) throw new IllegalArgumentException("batch and classes must be >= 1");
        long n = (long) batch * classes;
        if (student.length != n || teacher.length != n) {
            throw new IllegalArgumentException("student and teacher must have batch*classes = " + n + " elements");
        }
        this.batch = batch;
        this.classes = classes;
        this.float64 = float64;
        this.dtype = float64 ? ScalarType.Double : ScalarType.Float;
        // Our own scope: temporaries (TensorOptions, the float copies before widening) die with it. The two kept
        // tensors get an extra reference, so neither this scope nor an outer one of the caller's frees them; close()
        // frees them. (PointerScope.detach() would not do: it releases the reference, freeing them at once.)
        try (PointerScope ignored = new PointerScope()) {
            Tensor s = TorchTensors.toDtype(AbstractTensor.create(student, batch, classes), float64);
            Tensor t = TorchTensors.toDtype(AbstractTensor.create(teacher, batch, classes), float64);
            s.set_requires_grad(true);
            s.retainReference();
            t.retainReference();
            this.student = s;
            this.teacher = t;
        }
    }

    /**
     * Sets libtorch's intra-op thread count ({@code at::set_num_threads}) for the whole process.
     *
     * @param n number of threads, &ge; 1
     */
    public static void setThreads(int n) {
        if (n < 1) throw new IllegalArgumentException("threads must be >= 1");
        torch.set_num_threads(n);
    }

    /** libtorch's current intra-op thread count ({@code at::get_num_threads}). */
    public static int threads() {
        return torch.get_num_threads();
    }

    /** Batch size B. */
    public int batch() {
        return batch;
    }

    /** Number of classes C. */
    public int classes() {
        return classes;
    }

    /** Whether the chain runs in float64. */
    public boolean isFloat64() {
        return float64;
    }

    /**
     * Runs the forward chain and autograd's backward, and copies the results out.
     *
     * @param temperature T &gt; 0
     * @param reduction   PyTorch's reduction
     * @param logTarget   the teacher tensor holds log-probabilities (T is then not applied to it)
     * @param scaleT2     multiply the loss (hence the gradient) by T*T
     * @param gradOut     upstream gradient: null for ones, length 1 for the reductions, length B for NONE
     * @return the loss (length 1, or B for NONE) and the gradient w.r.t. the student logits [B*C], as double
     */
    public Result run(float temperature, Reduction reduction, boolean logTarget, boolean scaleT2, float[] gradOut) {
        checkOpen();
        try (PointerScope ignored = new PointerScope()) {
            resetGrad();
            Tensor loss = forward(temperature, reduction, logTarget, scaleT2);
            backward(loss, reduction, gradOut);
            double[] l = TorchTensors.copyOut(loss, float64);
            double[] g = TorchTensors.copyOut(student.grad(), float64);
            resetGrad();
            return new Result(l, g);
        }
    }

    /**
     * The same chain as {@link #run} with ones as the upstream gradient, results left in libtorch: what a
     * benchmark times. libtorch on the CPU is eager, so the forward and backward have finished on return.
     */
    public void runNoCopy(float temperature, Reduction reduction, boolean logTarget, boolean scaleT2) {
        checkOpen();
        try (PointerScope ignored = new PointerScope()) {
            resetGrad();
            Tensor loss = forward(temperature, reduction, logTarget, scaleT2);
            backward(loss, reduction, null);
            resetGrad();
        }
    }

    /** Frees the input tensors (and the student's gradient). Idempotent. */
    @Override
    public void close() {
        if (student != null) {
            resetGrad();
            student.deallocate();
            student = null;
        }
        if (teacher != null) {
            teacher.deallocate();
            teacher = null;
        }
    }

    // ---------------------------------------------------------------------------------------------------------

    private Tensor forward(float temperature, Reduction reduction, boolean logTarget, boolean scaleT2) {
        if (!(temperature > 0) || Float.isInfinite(temperature)) {
            throw new IllegalArgumentException("temperature must be finite and > 0: " + temperature);
        }
        Objects.requireNonNull(reduction, "reduction");
        Scalar t = new Scalar((double) temperature);
        Tensor logp = torch.log_softmax(student.div(t), 1);
        Tensor target = logTarget ? teacher : torch.softmax(teacher.div(t), 1);
        Tensor loss = switch (reduction) {
            case NONE -> torch.kl_div(logp, target, AT_REDUCTION_NONE, logTarget).sum(1);
            case SUM -> torch.kl_div(logp, target, AT_REDUCTION_SUM, logTarget);
            case MEAN -> torch.kl_div(logp, target, AT_REDUCTION_MEAN, logTarget);
            case BATCHMEAN -> torch.kl_div(logp, target, AT_REDUCTION_SUM, logTarget).div(new Scalar((double) batch));
        };
        if (scaleT2) loss = loss.mul(new Scalar((double) temperature * (double) temperature));
        return loss;
    }

    private void backward(Tensor loss, Reduction reduction, float[] gradOut) {
        Tensor g;
        if (reduction == Reduction.NONE) {
            if (gradOut == null) {
                g = torch.ones_like(loss);
            } else {
                if (gradOut.length != batch) throw new IllegalArgumentException("gradOut must have length B for NONE");
                g = TorchTensors.toDtype(AbstractTensor.create(gradOut, batch), float64);
            }
        } else {
            if (gradOut != null && gradOut.length != 1) {
                throw new IllegalArgumentException("gradOut must have length 1 for a reduction");
            }
            double v = gradOut == null ? 1.0 : gradOut[0];
            g = torch.scalar_tensor(new Scalar(v), new TensorOptions(dtype)); // shape [], like the loss
        }
        loss.backward(g, new BoolOptional(), false, new TensorArrayRefOptional());
    }

    /** Sets the student's gradient to undefined (Python's {@code x.grad = None}), freeing its storage. */
    private void resetGrad() {
        if (student != null && student.grad().defined()) student.mutable_grad().reset();
    }

    private void checkOpen() {
        if (student == null) throw new IllegalStateException("closed");
    }
}
