package org.distill4j.train;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.nn.Parameter;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.ops.AdamW;
import org.distill4j.ops.CrossEntropy;
import org.distill4j.ops.GradNorm;
import org.distill4j.ops.KlDiv;

/**
 * One training step on device memory, DeiT's recipe: the teacher's forward (no gradient, its own buffers) or
 * stored teacher logits, the student's forward, loss = (1 − α)·CE(class head, labels) + α·distill, backward,
 * global gradient-norm clipping, AdamW at the schedule's learning rate. Every buffer (the optimizer's moments
 * included) is allocated by the constructor; {@link #step} allocates nothing on the backend.
 *
 * <ul>
 *   <li>{@link Distillation#NONE}: CE on the labels; a student with a distillation head trains both heads on the
 *       labels, each weighted ½.</li>
 *   <li>{@link Distillation#SOFT}: distill = T²·KL(softmax(teacher/T) ‖ softmax(dist head/T)), batchmean (the KL
 *       definition; DeiT's code divides by B·C instead, its issue #61).</li>
 *   <li>{@link Distillation#HARD}: distill = CE(dist head, argmax teacher).</li>
 * </ul>
 * The teacher's logits are its class head. Label smoothing applies to the true labels only.
 *
 * <p>Before AdamW touches anything, each step reads the loss and the global gradient norm (computed even without
 * clipping): when either is not finite the step throws {@link NonFiniteException} and leaves the parameters, the
 * moments and the step count as they were, so the caller still holds the last good model (as PyTorch's
 * {@code clip_grad_norm_(…, error_if_nonfinite=True)}, which also refuses before the optimizer runs).
 *
 * <p>Not thread-safe: a {@link #step} from a second thread while another thread is inside one throws {@link
 * org.distill4j.ConcurrentUseException}.
 */
public final class Trainer implements AutoCloseable {
    private final VisionTransformer student, teacher;
    private final Backend backend;
    private final TrainOptions options;
    private final LrSchedule schedule;
    private final List<Parameter> params;
    private final List<Tensor> grads = new ArrayList<>(), m = new ArrayList<>(), v = new ArrayList<>();
    private final List<Tensor> owned = new ArrayList<>();
    private final Tensor labels, teacherLogits, hardLabels, clsRows, clsLoss, distRows, distLoss, alpha;
    private final CrossEntropy clsCe, distCe;
    private final KlDiv kl;
    private final AdamW adamw;
    private final GradNorm norm;
    private final boolean clipping;
    private final float[] hostLogits, hostLabels, hostScalar = new float[1];
    private final org.distill4j.ThreadConfinement confinement;
    private long step;
    private boolean closed;

    /** What one step reports: the loss (both terms, weighted) and how many class-head predictions were right. */
    public record StepResult(double loss, int correct) {}

    /**
     * @param student    the model trained; its batch size is the step's
     * @param teacher    a model with the same class count and batch size, or null (no teacher, or teacher logits
     *                   passed to each {@link #step})
     * @param options    hyper-parameters; a distillation mode other than NONE needs a distilled student
     * @param totalSteps steps of the whole run (the schedule's length)
     */
    public Trainer(VisionTransformer student, VisionTransformer teacher, TrainOptions options, long totalSteps) {
        this.student = Objects.requireNonNull(student, "student");
        this.teacher = teacher;
        this.options = Objects.requireNonNull(options, "options");
        this.backend = student.backend();
        this.confinement = new org.distill4j.ThreadConfinement("Trainer of " + student);
        int b = student.batch(), c = student.config().classes();
        Distillation mode = options.distillation();
        if (mode != Distillation.NONE && !student.config().distilled()) {
            throw new IllegalArgumentException(mode + " distillation needs a student with a distillation token and "
                    + "head (a distilled config); " + student.config().name() + " has none");
        }
        if (teacher != null) {
            if (teacher.config().classes() != c) {
                throw new IllegalArgumentException("the teacher predicts " + teacher.config().classes()
                        + " classes, the student " + c + ": they must agree");
            }
            if (teacher.batch() != b || teacher.backend() != backend) {
                throw new IllegalArgumentException("the teacher must be allocated for the student's batch size (" + b
                        + ") on the student's backend");
            }
        }
        long warmup = Math.min(totalSteps - 1, Math.round(options.warmupEpochs() * totalSteps / options.epochs()));
        this.schedule = new LrSchedule(options.lr(), options.minLr(), Math.max(0, warmup), totalSteps);
        this.params = student.parameters();
        this.clsCe = CrossEntropy.builder().labelSmoothing((float) options.labelSmoothing())
                .lossScale((float) (mode == Distillation.NONE ? (student.config().distilled() ? 0.5 : 1.0)
                        : 1 - options.alpha())).build();
        this.distCe = mode == Distillation.NONE
                ? CrossEntropy.builder().labelSmoothing((float) options.labelSmoothing()).lossScale(0.5f).build()
                : CrossEntropy.builder().lossScale((float) options.alpha()).build();
        this.kl = KlDiv.builder().temperature((float) options.temperature()).reduction(options.softReduction()).build();
        this.adamw = AdamW.builder().lr((float) options.lr()).weightDecay((float) options.weightDecay()).build();
        boolean ok = false;
        GradNorm gn = null;
        try {
            labels = tensor(b);
            teacherLogits = mode == Distillation.NONE ? null : tensor(b, c);
            hardLabels = mode == Distillation.HARD ? tensor(b) : null;
            clsRows = tensor(b);
            clsLoss = tensor();
            distRows = tensor(b);
            distLoss = tensor().zero();
            alpha = tensor().copyFrom(new float[] {(float) options.alpha()});
            for (Parameter p : params) {
                grads.add(p.grad());
                m.add(tensor(p.shape()).zero());
                v.add(tensor(p.shape()).zero());
            }
            // Without clipping the norm is still formed (maxNorm +inf): it is how a non-finite gradient is caught.
            gn = new GradNorm(backend, options.clipNorm() > 0 ? (float) options.clipNorm() : Float.POSITIVE_INFINITY);
            ok = true;
        } finally {
            if (!ok) owned.forEach(Tensor::close);
        }
        this.norm = gn;
        this.clipping = options.clipNorm() > 0;
        this.hostLogits = new float[b * c];
        this.hostLabels = new float[b];
    }

    private Tensor tensor(long... shape) {
        Tensor t = Tensor.empty(backend, shape);
        owned.add(t);
        return t;
    }

    /**
     * One step on a batch.
     *
     * @param images        [B, C, H, W] of the student's shape, row-major
     * @param batchLabels   [B] class indices, each in 0..classes−1 ({@code Dataset.labels()}, {@code Batch.labels()})
     * @param batchTeacher  [B, classes] teacher logits when they come from a file, else null (the teacher model
     *                      runs, or there is no distillation)
     * @throws NonFiniteException when the loss or the gradient norm is NaN or infinite; nothing was updated
     */
    public StepResult step(float[] images, int[] batchLabels, float[] batchTeacher) {
        confinement.enter();
        try {
            checkOpen();
            if (batchLabels.length != hostLabels.length) {
                throw new IllegalArgumentException(batchLabels.length + " labels for a batch of " + hostLabels.length);
            }
            for (int i = 0; i < batchLabels.length; i++) hostLabels[i] = batchLabels[i];
            return step(images, hostLabels, batchTeacher);
    
        } finally {
            confinement.exit();
        }
    }

    /**
     * One step on a batch, with the labels in the device format.
     *
     * @param images        [B, C, H, W] of the student's shape, row-major
     * @param batchLabels   [B] class indices as floats
     * @param batchTeacher  [B, classes] teacher logits when they come from a file, else null (the teacher model
     *                      runs, or there is no distillation)
     * @throws NonFiniteException when the loss or the gradient norm is NaN or infinite; nothing was updated
     */
    public StepResult step(float[] images, float[] batchLabels, float[] batchTeacher) {
        confinement.enter();
        try {
            checkOpen();
            Distillation mode = options.distillation();
            CrossEntropy.checkLabels(batchLabels, student.config().classes());
            labels.copyFrom(batchLabels);
            student.input().copyFrom(images);
            if (mode != Distillation.NONE) {
                if (batchTeacher != null) {
                    teacherLogits.copyFrom(batchTeacher);
                } else if (teacher != null) {
                    student.input().copyTo(teacher.input());
                    teacher.forward();
                    teacher.logits().copyTo(teacherLogits);
                } else {
                    throw new IllegalArgumentException(mode + " distillation needs a teacher model or its logits");
                }
            }
            student.zeroGrad();
            student.forward();
            clsCe.compute(student.logits(), labels, clsRows, clsLoss, student.logitsGrad());
            if (student.config().distilled()) {
                switch (mode) {
                    case NONE:
                        distCe.compute(student.distLogits(), labels, distRows, distLoss, student.distLogitsGrad());
                        break;
                    case SOFT:
                        kl.compute(student.distLogits(), teacherLogits, alpha, distLoss, student.distLogitsGrad(),
                                distRows);
                        break;
                    case HARD:
                        CrossEntropy.argmax(teacherLogits, hardLabels);
                        distCe.compute(student.distLogits(), hardLabels, distRows, distLoss, student.distLogitsGrad());
                        break;
                    default:
                        throw new AssertionError(mode);
                }
            }
            student.backward();
            norm.compute(grads);
            // Read before the update (the step's one wait for the device): the losses, the gradient norm, the logits.
            clsLoss.copyTo(hostScalar);
            double loss = hostScalar[0];
            distLoss.copyTo(hostScalar);
            // The KL op's loss is T²·KL; α reaches only its gradient (as the upstream gradient). CE's lossScale
            // scales both.
            loss += (mode == Distillation.SOFT ? options.alpha() : 1.0) * hostScalar[0];
            norm.norm().copyTo(hostScalar);
            double gradNorm = hostScalar[0];
            student.logits().copyTo(hostLogits);
            if (!Double.isFinite(loss) || !Double.isFinite(gradNorm)) {
                throw new NonFiniteException(step + 1, loss, gradNorm);
            }
            step++;
            float lr = (float) schedule.at(step - 1);
            float wd = (float) options.weightDecay();
            for (int i = 0; i < params.size(); i++) {
                Parameter p = params.get(i);
                adamw.step(p.value(), p.grad(), m.get(i), v.get(i), step, lr, p.weightDecay() ? wd : 0f,
                        clipping ? norm.scale() : null);
            }
            return new StepResult(loss, Metrics.correct(hostLogits, batchLabels, student.config().classes()));
    
        } finally {
            confinement.exit();
        }
    }

    /** Steps taken so far (restored by {@link #restore}). */
    public long steps() {
        return step;
    }

    /** The learning-rate schedule. */
    public LrSchedule schedule() {
        return schedule;
    }

    /** The student. */
    public VisionTransformer student() {
        return student;
    }

    /** AdamW's first moments, one per student parameter, in parameter order. */
    public List<Tensor> firstMoments() {
        return java.util.Collections.unmodifiableList(m);
    }

    /** AdamW's second moments, one per student parameter, in parameter order. */
    public List<Tensor> secondMoments() {
        return java.util.Collections.unmodifiableList(v);
    }

    /** Sets the step counter (after loading moments and parameters from a checkpoint). */
    public void restore(long steps) {
        if (steps < 0) throw new IllegalArgumentException("steps must be >= 0, got " + steps);
        this.step = steps;
    }

    /** Frees the optimizer state and loss buffers (not the models). Closing twice is harmless. */
    @Override
    public void close() {
        if (closed) return;
        closed = true;
        owned.forEach(Tensor::close);
        norm.close();
    }

    private void checkOpen() {
        if (closed) throw new IllegalStateException("the trainer is closed");
    }
}
