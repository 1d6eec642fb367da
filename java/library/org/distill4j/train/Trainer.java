package org.distill4j.train;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import org.distill4j.IntTensor;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CudaGraph;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.ops.AdamW;
import org.distill4j.ops.CrossEntropy;
import org.distill4j.ops.KlDiv;
import org.distill4j.ops.Reduction;

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
 * The teacher's logits are its class head. Label smoothing applies to the true labels only (or to their Mixup/CutMix
 * mixtures: {@link #stepMixed}).
 *
 * <p><b>Transfer sets</b> ({@link TrainOptions#withLabeled}; Hinton et al. 2015, section 2). {@link
 * #step(float[], int[], boolean[], float[])} is told which images of the batch keep their true labels (m<sub>i</sub>
 * = 1) and which only the teacher labels (m<sub>i</sub> = 0). Over a batch of B images the loss is
 * <pre>
 *   loss = (1/B) Σ_i [ m_i·(1 − α)·CE_i + α·D_i ]
 * </pre>
 * with CE<sub>i</sub> the class head's cross-entropy on image i's label and D<sub>i</sub> its distillation term
 * (T²·KL<sub>i</sub>, over C more with the mean reduction, for SOFT; the distillation head's CE on the teacher's
 * argmax for HARD): a labeled image weighs exactly as in a fully labeled run, an unlabeled one keeps its
 * α·D<sub>i</sub> and nothing else, and the normalisation is the whole batch B, not its labeled count. So an image's
 * weight never depends on which images share its batch (a batch without a labeled image is an ordinary step; the
 * batch loss is an unbiased estimate of the epoch's mean whatever the batch size), α means the same for every image,
 * and with every image labeled the loss is the usual one. In NONE mode an unlabeled image contributes nothing (both
 * heads' CE terms are masked). The label given for an unlabeled image is ignored but must be a class index.
 *
 * <p>Before AdamW touches anything, each step reads the loss and the global gradient norm (computed even without
 * clipping): when either is not finite the step throws {@link NonFiniteException} and leaves the parameters, the
 * moments and the step count as they were, so the caller still holds the last good model (as PyTorch's
 * {@code clip_grad_norm_(…, error_if_nonfinite=True)}, which also refuses before the optimizer runs). With
 * {@link TrainOptions#withSkipNonFinite} such a step is skipped instead (the same nothing-applied, reported by its
 * {@link StepResult#skipped} and counted by {@link #skippedSteps}) until too many come in a row.
 *
 * <p>With {@link TrainOptions#withCudaGraph} a step's device work (everything between its uploads and its reads:
 * the teacher's forward, the student's forward, the losses, the backward, the gradient norm) is replayed from a
 * {@link CudaGraph}, one per kind of step (labels, mask, Mixup targets; teacher model or logits from a file),
 * captured at that kind's second step; AdamW is launched after it, as without. The results are the same bits.
 *
 * <p>Not thread-safe: a {@link #step} from a second thread while another thread is inside one throws {@link
 * org.distill4j.ConcurrentUseException}.
 */
public final class Trainer implements AutoCloseable {
    private final VisionTransformer student, teacher;
    private final Backend backend;
    private final TrainOptions options;
    private final LrSchedule schedule;
    private final List<Tensor> owned = new ArrayList<>();
    private final Tensor teacherLogits, clsRows, clsLoss, distRows, distLoss, alpha;
    private final IntTensor labels, hardLabels;
    private final CrossEntropy clsCe, distCe;
    private final KlDiv kl, maskedCe;
    private final Tensor ceTarget, ceWeight;
    private final float[] hostTarget, hostWeight, hostRows;
    private final float logOn, logOff;
    private final double targetEntropy;
    private final FlatAdamW optimizer;
    private final float[] hostLogits, hostScalar = new float[1];
    private final int batch;
    private final org.distill4j.ThreadConfinement confinement;
    // With TrainOptions.withCudaGraph: one graph per kind of step (the kernels a step queues depend on whether it
    // has a label mask, Mixup targets, teacher logits from a file), captured at its second step; `warm` marks the
    // kinds whose first step ran as usual (it creates what a capture may not: cuBLAS handles, workspaces).
    private final CudaGraph[] graphs = new CudaGraph[8];
    private final boolean[] warm = new boolean[8];
    private long step;
    private long skipped;
    private int skippedInARow;
    private boolean closed;

    /**
     * What one step reports: the loss (both terms, weighted), how many class-head predictions of labeled images were
     * right, and how many images of the batch were labeled (all of them unless a step was given a mask). A skipped
     * step ({@link TrainOptions#withSkipNonFinite}) reports its non-finite loss, 0 correct of 0 labeled, and
     * {@code skipped}: nothing of it was applied and it belongs in no average.
     */
    public record StepResult(double loss, int correct, int labeled, boolean skipped) {}

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
        if (options.cudaGraph() && !backend.capturesGraphs()) {
            throw new IllegalArgumentException("CUDA graphs need a backend that captures them (cuda, cuda-emu); "
                    + "the student is on " + backend.device());
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
        this.clsCe = CrossEntropy.builder().labelSmoothing((float) options.labelSmoothing())
                .lossScale((float) (mode == Distillation.NONE ? (student.config().distilled() ? 0.5 : 1.0)
                        : 1 - options.alpha())).build();
        this.distCe = mode == Distillation.NONE
                ? CrossEntropy.builder().labelSmoothing((float) options.labelSmoothing()).lossScale(0.5f).build()
                : CrossEntropy.builder().lossScale((float) options.alpha()).build();
        this.kl = KlDiv.builder().temperature((float) options.temperature()).reduction(options.softReduction()).build();
        // The CE kernel reduces over the whole batch and takes no per-row weight; the KL op with no reduction takes a
        // per-row upstream gradient. Against the log-target log q = log((1 − eps)·onehot + eps/C) its row loss is
        // CE_eps − H(q), H(q) one constant added back on the host, and its gradient is CE's (p − q): the masked
        // cross-entropy of a transfer set without a kernel of its own.
        this.maskedCe = KlDiv.builder().temperature(1f).reduction(Reduction.NONE).logTarget(true)
                .scaleBySquaredTemperature(false).build();
        double eps = options.labelSmoothing(), on = 1 - eps + eps / c, off = eps / c;
        this.logOn = (float) Math.log(on);
        this.logOff = (float) Math.log(off);  // -inf without smoothing: the op takes 0·log 0 as 0
        this.targetEntropy = -(on * Math.log(on) + (off > 0 ? (c - 1) * off * Math.log(off) : 0));
        AdamW adamw = AdamW.builder().lr((float) options.lr()).weightDecay((float) options.weightDecay()).build();
        boolean ok = false;
        FlatAdamW opt = null;
        IntTensor lab = null, hard = null;
        try {
            lab = IntTensor.empty(backend, b);
            hard = mode == Distillation.HARD ? IntTensor.empty(backend, b) : null;
            teacherLogits = mode == Distillation.NONE ? null : tensor(b, c);
            clsRows = tensor(b);
            clsLoss = tensor();
            distRows = tensor(b);
            distLoss = tensor().zero();
            alpha = tensor().copyFrom(new float[] {(float) options.alpha()});
            ceTarget = tensor(b, c);
            ceWeight = tensor(b);
            opt = new FlatAdamW(student, adamw, (float) options.weightDecay(), (float) options.clipNorm());
            ok = true;
        } finally {
            if (!ok) {
                owned.forEach(Tensor::close);
                if (lab != null) lab.close();
                if (hard != null) hard.close();
            }
        }
        this.optimizer = opt;
        this.labels = lab;
        this.hardLabels = hard;
        this.batch = b;
        this.hostLogits = new float[b * c];
        this.hostTarget = new float[b * c];
        this.hostWeight = new float[b];
        this.hostRows = new float[b];
    }

    private Tensor tensor(long... shape) {
        Tensor t = Tensor.empty(backend, shape);
        owned.add(t);
        return t;
    }

    /**
     * One step on a batch whose images all keep their labels.
     *
     * @param images        [B, C, H, W] of the student's shape, row-major
     * @param batchLabels   [B] class indices, each in 0..classes−1 ({@code Dataset.labels()}, {@code Batch.labels()})
     * @param batchTeacher  [B, classes] teacher logits when they come from a file, else null (the teacher model
     *                      runs, or there is no distillation)
     * @throws NonFiniteException when the loss or the gradient norm is NaN or infinite (beyond the steps
     *     {@link TrainOptions#withSkipNonFinite} lets be skipped); nothing was updated
     */
    public StepResult step(float[] images, int[] batchLabels, float[] batchTeacher) {
        return step(images, batchLabels, null, batchTeacher);
    }

    /**
     * One step on a batch of a transfer set: image i's true label counts only where {@code labeled[i]} (the loss
     * of the class Javadoc); null: all do.
     *
     * @param images        [B, C, H, W] of the student's shape, row-major
     * @param batchLabels   [B] class indices, each in 0..classes−1; those of unlabeled images are ignored
     * @param labeled       [B] whether each image keeps its label, or null for all
     * @param batchTeacher  [B, classes] teacher logits when they come from a file, else null (the teacher model
     *                      runs, or there is no distillation)
     * @throws NonFiniteException when the loss or the gradient norm is NaN or infinite (beyond the steps
     *     {@link TrainOptions#withSkipNonFinite} lets be skipped); nothing was updated
     */
    public StepResult step(float[] images, int[] batchLabels, boolean[] labeled, float[] batchTeacher) {
        confinement.enter();
        try {
            checkOpen();
            return run(images, checkCount(batchLabels), labeled, null, batchTeacher);
        } finally {
            confinement.exit();
        }
    }

    /**
     * One step on a Mixup/CutMix batch ({@link org.distill4j.data.Mixup}): the class head's cross-entropy (and,
     * without distillation, the distillation head's) takes each image's target distribution instead of its label,
     * with the label smoothing applied to it ({@link CrossEntropy#computeSoft}); the teacher runs on the mixed
     * images, as in DeiT. Not for transfer sets: an unlabeled image has no label to mix.
     *
     * @param images        [B, C, H, W] of the student's shape, row-major, already mixed
     * @param batchLabels   [B] each image's own class index, against which the training accuracy is counted
     * @param targets       [B, classes] the target distributions ({@link org.distill4j.data.Mixup#targets})
     * @param batchTeacher  [B, classes] teacher logits when they come from a file, else null
     * @throws NonFiniteException when the loss or the gradient norm is NaN or infinite (beyond the steps
     *     {@link TrainOptions#withSkipNonFinite} lets be skipped); nothing was updated
     */
    public StepResult stepMixed(float[] images, int[] batchLabels, float[] targets, float[] batchTeacher) {
        confinement.enter();
        try {
            checkOpen();
            if (targets == null || targets.length != hostTarget.length) {
                throw new IllegalArgumentException("targets must be " + batch + " x "
                        + student.config().classes() + " floats, got " + (targets == null ? "null" : targets.length));
            }
            return run(images, checkCount(batchLabels), null, targets, batchTeacher);
        } finally {
            confinement.exit();
        }
    }

    /** The class indices, their count checked (they are uploaded as they are: int32 is the kernels' format). */
    private int[] checkCount(int[] batchLabels) {
        Objects.requireNonNull(batchLabels, "batchLabels");
        if (batchLabels.length != batch) {
            throw new IllegalArgumentException(batchLabels.length + " labels for a batch of " + batch);
        }
        return batchLabels;
    }

    private StepResult run(float[] images, int[] batchLabels, boolean[] labeled, float[] targets,
            float[] batchTeacher) {
        Distillation mode = options.distillation();
        int c = student.config().classes();
        CrossEntropy.checkLabels(batchLabels, c);
        if (labeled != null && labeled.length != batchLabels.length) {
            throw new IllegalArgumentException(labeled.length + " labeled flags for a batch of " + batchLabels.length);
        }
        // Uploads first: a step's inputs always land in the same tensors, which is what lets a graph replay it.
        labels.copyFrom(batchLabels);
        student.input().copyFrom(images);
        boolean fileTeacher = false;
        if (mode != Distillation.NONE) {
            if (batchTeacher != null) {
                teacherLogits.copyFrom(batchTeacher);
                fileTeacher = true;
            } else if (teacher == null) {
                throw new IllegalArgumentException(mode + " distillation needs a teacher model or its logits");
            }
        }
        if (labeled != null) {
            // Per-row weights m_i·scale/B: the CE kernel's lossScale/B for a labeled row, 0 for an unlabeled one.
            float w = clsCe.lossScale() / batchLabels.length;
            java.util.Arrays.fill(hostTarget, logOff);
            for (int i = 0; i < batchLabels.length; i++) {
                hostWeight[i] = labeled[i] ? w : 0f;
                hostTarget[i * c + batchLabels[i]] = logOn;
            }
            ceTarget.copyFrom(hostTarget);
            ceWeight.copyFrom(hostWeight);
        }
        if (targets != null) ceTarget.copyFrom(targets);  // Mixup's distributions (never with a transfer set's mask)
        boolean masked = labeled != null, mixed = targets != null, runTeacher = mode != Distillation.NONE && !fileTeacher;
        int kind = (masked ? 1 : 0) | (mixed ? 2 : 0) | (runTeacher ? 4 : 0);
        if (graphs[kind] != null) {
            graphs[kind].replay();
        } else if (!options.cudaGraph() || !warm[kind]) {
            deviceWork(masked, mixed, runTeacher);
            warm[kind] = true;
        } else {
            graphs[kind] = CudaGraph.capture(backend, () -> deviceWork(masked, mixed, runTeacher));
            graphs[kind].replay();
        }
        boolean maskedDist = masked && student.config().distilled() && mode == Distillation.NONE;
        // Read before the update (the step's one wait for the device): the losses, the gradient norm, the logits.
        double loss;
        if (labeled != null) {
            loss = maskedLoss(clsRows);
        } else {
            clsLoss.copyTo(hostScalar);
            loss = hostScalar[0];
        }
        if (maskedDist) {
            loss += maskedLoss(distRows);
        } else {
            distLoss.copyTo(hostScalar);
            // The KL op's loss is T²·KL; α reaches only its gradient (as the upstream gradient). CE's lossScale
            // scales both.
            loss += (mode == Distillation.SOFT ? options.alpha() : 1.0) * hostScalar[0];
        }
        optimizer.norm().norm().copyTo(hostScalar);
        double gradNorm = hostScalar[0];
        student.logits().copyTo(hostLogits);
        if (!Double.isFinite(loss) || !Double.isFinite(gradNorm)) {
            if (skippedInARow >= options.skipNonFinite()) {
                throw new NonFiniteException(step + 1, loss, gradNorm);
            }
            skippedInARow++;
            skipped++;
            return new StepResult(loss, 0, 0, true);
        }
        skippedInARow = 0;
        step++;
        optimizer.update(step, (float) schedule.at(step - 1));
        int count = batchLabels.length;
        if (labeled != null) {
            count = 0;
            for (boolean l : labeled) count += l ? 1 : 0;
        }
        return new StepResult(loss, Metrics.correct(hostLogits, batchLabels, c, labeled), count, false);
    }

    /**
     * Everything a step queues on the device between its uploads and its reads (a graph's content): the teacher's
     * forward, the student's forward, the losses and their gradients, the backward, the gradient norm. No host
     * access: it must be capturable.
     */
    private void deviceWork(boolean masked, boolean mixed, boolean runTeacher) {
        Distillation mode = options.distillation();
        if (runTeacher) {
            student.input().copyTo(teacher.input());
            teacher.forward();
            teacher.logits().copyTo(teacherLogits);
        }
        student.zeroGrad();
        student.forward();
        if (masked) {
            maskedCe.compute(student.logits(), ceTarget, ceWeight, clsRows, student.logitsGrad(), null);
        } else if (mixed) {
            clsCe.computeSoft(student.logits(), ceTarget, clsRows, clsLoss, student.logitsGrad());
        } else {
            clsCe.compute(student.logits(), labels, clsRows, clsLoss, student.logitsGrad());
        }
        if (student.config().distilled()) {
            switch (mode) {
                case NONE:
                    if (masked) { // distCe's scale is clsCe's here (½ each): the same weights
                        maskedCe.compute(student.distLogits(), ceTarget, ceWeight, distRows, student.distLogitsGrad(),
                                null);
                    } else if (mixed) {
                        distCe.computeSoft(student.distLogits(), ceTarget, distRows, distLoss,
                                student.distLogitsGrad());
                    } else {
                        distCe.compute(student.distLogits(), labels, distRows, distLoss, student.distLogitsGrad());
                    }
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
        optimizer.computeNorm();
    }

    /**
     * Σ_i w_i·(row_i + H(q)) of the masked cross-entropy's row losses: CE_eps of each row, weighted. An unlabeled
     * row's 0 weight keeps a NaN (0·NaN): a broken forward pass is caught whatever the mask.
     */
    private double maskedLoss(Tensor rows) {
        rows.copyTo(hostRows);
        double sum = 0;
        for (int i = 0; i < hostRows.length; i++) sum += (double) hostWeight[i] * (hostRows[i] + targetEntropy);
        return sum;
    }

    /**
     * Steps skipped so far because their loss or gradient norm was not finite ({@link TrainOptions#withSkipNonFinite});
     * not part of {@link #steps}. Counted by this trainer (a resumed run counts from 0).
     */
    public long skippedSteps() {
        return skipped;
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

    /** AdamW's first moments, one per student parameter, in parameter order (views of one buffer). */
    public List<Tensor> firstMoments() {
        return optimizer.firstMoments();
    }

    /** AdamW's second moments, one per student parameter, in parameter order (views of one buffer). */
    public List<Tensor> secondMoments() {
        return optimizer.secondMoments();
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
        for (CudaGraph g : graphs) {
            if (g != null) g.close();  // before the buffers they replay into
        }
        owned.forEach(Tensor::close);
        optimizer.close();
        labels.close();
        if (hardLabels != null) hardLabels.close();
    }

    private void checkOpen() {
        if (closed) throw new IllegalStateException("the trainer is closed");
    }
}
