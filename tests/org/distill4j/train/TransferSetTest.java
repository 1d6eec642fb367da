package org.distill4j.train;

import static org.distill4j.testing.LossFormulas.addCe;
import static org.distill4j.testing.LossFormulas.argmax;
import static org.distill4j.testing.LossFormulas.softmax;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.Random;
import org.distill4j.Device;
import org.distill4j.backend.Backend;
import org.distill4j.backend.Backends;
import org.distill4j.backend.CpuBackend;
import org.distill4j.data.Dataset;
import org.distill4j.data.LabeledSubset;
import org.distill4j.data.Synthetic;
import org.distill4j.io.SafetensorsReader;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.ops.Reduction;
import org.distill4j.testing.Check;
import org.distill4j.testing.ModelParameters;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Transfer sets (issue #16 item 2): the per-image loss weighting of {@link Trainer} against a float64 reference
 * written here from the formula, and the runs around it: scratch training on the labeled images alone, labels of
 * unlabeled images never read, soft labels covering every image, checkpoints that record the labeled images.
 */
class TransferSetTest {
    private static final VitConfig SMALL = VitConfig.of(16, 4, 1, 4, 64, 1, 2, 2, true);
    private static final int B = 8, C = 4;
    private static final PrintStream QUIET = new PrintStream(OutputStream.nullOutputStream());

    @TempDir
    Path dir;

    static {
        System.setProperty("distill4j.progress", "off");
    }

    private static Dataset data(long seed, int n) {
        return Synthetic.dataset(seed, n, C, 16, 16);
    }

    private static TrainOptions options(int epochs) {
        return new TrainOptions().withEpochs(epochs).withBatch(16).withLr(3e-3, 1e-4).withWarmupEpochs(0.5)
                .withAugment(false).withSeed(7);
    }

    // ---- the per-image weighting, in float64 ----

    /** (1 − eps)·onehot(y) + eps/C. */
    private static double[] target(int y, double eps) {
        double[] t = new double[C];
        for (int c = 0; c < C; c++) t[c] = (c == y ? 1 - eps : 0) + eps / C;
        return t;
    }

    /**
     * loss = (1/B) Σ_i [m_i·(1 − α)·CE_i + α·D_i] (SOFT, HARD), (1/B) Σ_i m_i·½·(CE_i + CE_dist,i) (NONE, a distilled
     * student training both heads on labels): returns {loss, d/d class logits..., d/d dist logits...}.
     */
    private static double[][] reference(Distillation mode, double alpha, double temp, Reduction red, double eps,
                                        float[] z, float[] zd, float[] teacher, int[] labels, boolean[] m) {
        double[] loss = new double[1], gz = new double[B * C], gzd = new double[B * C];
        for (int i = 0; i < B; i++) {
            double[] t = target(labels[i], eps);
            double clsWeight = mode == Distillation.NONE ? 0.5 : 1 - alpha;
            if (m[i]) addCe(softmax(z, i, C, 1), t, clsWeight / B, i, loss, gz);
            switch (mode) {
                case NONE:
                    if (m[i]) addCe(softmax(zd, i, C, 1), t, 0.5 / B, i, loss, gzd);
                    break;
                case HARD: // the teacher's argmax as a label, never smoothed, for every image
                    addCe(softmax(zd, i, C, 1), target(argmax(teacher, i, C), 0), alpha / B, i, loss, gzd);
                    break;
                case SOFT: {
                    double[] p = softmax(zd, i, C, 1 / temp), q = softmax(teacher, i, C, 1 / temp);
                    double norm = alpha / B / (red == Reduction.MEAN ? C : 1), kl = 0;
                    for (int c = 0; c < C; c++) {
                        kl += q[c] * (Math.log(q[c]) - Math.log(p[c]));
                        gzd[i * C + c] += norm * temp * (p[c] - q[c]);  // d(T²·KL)/dz = T·(p − q)
                    }
                    loss[0] += norm * temp * temp * kl;
                    break;
                }
                default:
                    throw new AssertionError(mode);
            }
        }
        return new double[][] {loss, gz, gzd};
    }

    private static final boolean[] MIXED = {true, false, false, true, false, true, false, false};

    @Test
    void perImageWeightingMatchesTheFormulaInEveryMode() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        boolean[][] masks = {
            MIXED,  // labeled and unlabeled images in one batch
            {false, false, false, false, false, false, false, false},  // a batch the teacher alone labels
            {true, true, true, true, true, true, true, true}};
        try (Backend be = CpuBackend.open()) {
            for (Distillation mode : Distillation.values()) {
                for (Reduction red : reductions(mode)) {
                    for (double eps : new double[] {0, 0.1}) {
                        for (boolean[] m : masks) checkStep(be, mode, red, eps, m, rng, seed);
                    }
                }
            }
        }
    }

    /**
     * The same on the CUDA kernels (emulated on the CPU, seconds a step): the masked cross-entropy's per-row path
     * there, on the class head (SOFT) and on both heads (NONE); HARD adds nothing of the mask's.
     */
    @Test
    void perImageWeightingMatchesTheFormulaOnTheEmulatedCudaKernels() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        try (Backend be = Backends.open(Device.cudaEmu())) {
            for (Distillation mode : new Distillation[] {Distillation.NONE, Distillation.SOFT}) {
                checkStep(be, mode, Reduction.BATCHMEAN, 0.1, MIXED, rng, seed);
            }
        }
    }

    private static Reduction[] reductions(Distillation mode) {
        return mode == Distillation.SOFT ? new Reduction[] {Reduction.BATCHMEAN, Reduction.MEAN}
                : new Reduction[] {Reduction.BATCHMEAN};
    }

    /** One step of a fresh student on random labels and teacher logits, held to {@link #reference}. */
    private static void checkStep(Backend be, Distillation mode, Reduction red, double eps, boolean[] m, Random rng,
                                  long seed) {
        double alpha = 0.3, temp = 2.5;
        Dataset train = data(seed, B);
        float[] images = new float[B * 256];
        for (int i = 0; i < B; i++) train.copyImage(i, images, i * 256);
        int[] labels = new int[B];
        for (int i = 0; i < B; i++) labels[i] = rng.nextInt(C);
        float[] teacher = Check.normal(rng, B * C, 3);
        TrainOptions o = options(1).withLabelSmoothing(eps).withSoftReduction(red).withDistillation(mode, alpha, temp);
        String what = be.name() + " " + mode + " " + red.torchName() + " eps " + eps + " mask "
                + java.util.Arrays.toString(m) + " (seed " + seed + ")";
        try (VisionTransformer student = new VisionTransformer(be, SMALL, B, rng.nextLong());
             Trainer trainer = new Trainer(student, null, o, 10)) {
            Trainer.StepResult r = trainer.step(images, labels, m.clone(), teacher);
            float[] z = student.logits().toArray(), zd = student.distLogits().toArray();
            double[][] want = reference(mode, alpha, temp, red, eps, z, zd, teacher, labels, m);
            double lossErr = Math.abs(r.loss() - want[0][0]) / Math.max(1e-3, Math.abs(want[0][0]));
            assertTrue(lossErr <= 2e-5, what + ": loss " + r.loss() + " vs " + want[0][0]);
            float[] gz = student.logitsGrad().toArray(), gzd = student.distLogitsGrad().toArray();
            double e1 = Check.relErr(gz, want[1]), e2 = Check.relErr(gzd, want[2]);
            assertTrue(e1 <= 2e-5, what + ": class-head gradient rel err " + e1);
            assertTrue(e2 <= 2e-5, what + ": distillation-head gradient rel err " + e2);
            int labeled = 0, correct = 0;
            for (int i = 0; i < B; i++) {
                if (!m[i]) {
                    for (int c = 0; c < C; c++) {
                        assertEquals(0f, gz[i * C + c], 0f, what + ": unlabeled row " + i);
                        if (mode == Distillation.NONE) assertEquals(0f, gzd[i * C + c], 0f, what);
                    }
                    continue;
                }
                labeled++;
                if (argmax(z, i, C) == labels[i]) correct++;
            }
            assertEquals(labeled, r.labeled(), what + ": labeled images counted");
            assertEquals(correct, r.correct(), what + ": accuracy over labeled images only");
        }
    }

    @Test
    void aMaskOfTheWrongLengthIsRefused() {
        try (Backend be = CpuBackend.open();
             VisionTransformer student = new VisionTransformer(be, SMALL, B, 1);
             Trainer trainer = new Trainer(student, null, options(1), 10)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> trainer.step(new float[B * 256], new int[B], new boolean[B - 1], null));
            assertTrue(e.getMessage().contains("7 labeled flags for a batch of 8"), e.getMessage());
        }
    }

    // ---- runs ----

    /** Scratch training with a transfer set is training on its labeled images alone: the same bits. */
    @Test
    void scratchTrainingSeesOnlyTheLabeledImages() {
        Dataset train = data(21, 128), test = data(22, 32);
        TrainOptions o = options(2).withLabeled(48);
        int[] subset = LabeledSubset.stratified(train.labels(), C, 48, 7);
        try (Backend be = CpuBackend.open()) {
            float[] viaOption, viaSubset;
            TrainingRun.Result r;
            try (VisionTransformer m = new VisionTransformer(be, SMALL, 16, 3)) {
                r = TrainingRun.builder(m, train, test).options(o).log(QUIET).run();
                viaOption = ModelParameters.of(m);
            }
            try (VisionTransformer m = new VisionTransformer(be, SMALL, 16, 3)) {
                TrainingRun.builder(m, train.subset(subset), test).options(options(2)).log(QUIET).run();
                viaSubset = ModelParameters.of(m);
            }
            assertArrayEquals(viaSubset, viaOption);
            assertEquals(48, r.trainImages());
            assertEquals(48, r.labeled());
            assertEquals("48 stratified by class, seed 7", r.labeledSubset());
            // Fewer labeled images than a batch: nothing to train on, said so.
            try (VisionTransformer m = new VisionTransformer(be, SMALL, 16, 3)) {
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                        () -> TrainingRun.builder(m, train, test).options(options(1).withLabeled(10)).log(QUIET).run());
                assertTrue(e.getMessage().contains("only 10 images are labeled and trained on without a teacher, "
                        + "fewer than one batch of 16"), e.getMessage());
            }
        }
    }

    /**
     * A distillation run reads the labels of its labeled images only: changing an unlabeled image's label changes
     * no bit of the result, changing a labeled one's does. The soft labels cover every image.
     */
    @Test
    void unlabeledImagesTeachThroughTheTeacherOnly() {
        Dataset train = data(31, 96), test = data(32, 32);
        int[] list = {3, 10, 17, 40, 41, 42, 77, 90, 95};
        boolean[] isListed = new boolean[96];
        for (int i : list) isListed[i] = true;
        int[] relabeled = train.labels().clone(), labeledChanged = train.labels().clone();
        for (int i = 0; i < 96; i++) if (!isListed[i]) relabeled[i] = (relabeled[i] + 1 + i % 3) % C;
        labeledChanged[40] = (labeledChanged[40] + 1) % C;
        Dataset other = new Dataset("relabeled", train.images(), relabeled, 1, 16, 16, C, 0f, 1f);
        Dataset changed = new Dataset("changed", train.images(), labeledChanged, 1, 16, 16, C, 0f, 1f);
        try (Backend be = CpuBackend.open();
             VisionTransformer teacher = new VisionTransformer(be, SMALL.withDistilled(false), 16, 1)) {
            for (Distillation mode : new Distillation[] {Distillation.SOFT, Distillation.HARD}) {
                TrainOptions o = options(2).withDistillation(mode, 0.4, 2).withLabeledIndices(list);
                float[][] params = new float[3][];
                TrainingRun.Result[] results = new TrainingRun.Result[3];
                Dataset[] sets = {train, other, changed};
                for (int k = 0; k < 3; k++) {
                    try (VisionTransformer s = new VisionTransformer(be, SMALL, 16, 5)) {
                        results[k] = TrainingRun.builder(s, sets[k], test).options(o).log(QUIET)
                                .teacher(SoftLabels.compute(teacher, sets[k], "t")).run();
                        params[k] = ModelParameters.of(s);
                    }
                }
                assertArrayEquals(params[0], params[1], mode + ": labels of unlabeled images must not matter");
                for (int e = 0; e < 2; e++) {
                    assertEquals(results[0].epochs().get(e).trainLoss(), results[1].epochs().get(e).trainLoss());
                    assertEquals(results[0].epochs().get(e).trainAccuracy(),
                            results[1].epochs().get(e).trainAccuracy(), "accuracy over labeled images only");
                }
                assertFalse(java.util.Arrays.equals(params[0], params[2]), mode + ": a labeled image's label counts");
                assertEquals(96, results[0].trainImages());
                assertEquals(list.length, results[0].labeled());
                assertTrue(results[0].labeledSubset().startsWith("list of 9, sha256 "), results[0].labeledSubset());
                // Soft labels of the labeled images alone do not cover the transfer set: refused.
                try (VisionTransformer s = new VisionTransformer(be, SMALL, 16, 5)) {
                    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                            () -> TrainingRun.builder(s, train, test).options(o).log(QUIET)
                                    .teacher(SoftLabels.compute(teacher, train.subset(list), "t")).run());
                    assertTrue(e.getMessage().contains("cover 9 images; the training set"), e.getMessage());
                }
            }
        }
    }

    @Test
    void checkpointsRecordTheLabeledImagesAndResumeExactlyOnlyWithThem() throws Exception {
        Dataset train = data(41, 96), test = data(42, 32);
        TrainOptions o = options(3).withDistillation(Distillation.SOFT, 0.5, 2).withLabeled(30);
        Path ckpt = dir.resolve("c.safetensors");
        try (Backend be = CpuBackend.open();
             VisionTransformer teacher = new VisionTransformer(be, SMALL.withDistilled(false), 16, 1)) {
            SoftLabels soft = SoftLabels.compute(teacher, train, "t");
            float[] straight, resumed;
            try (VisionTransformer s = new VisionTransformer(be, SMALL, 16, 5)) {
                TrainingRun.builder(s, train, test).options(o).teacher(soft).log(QUIET).run();
                straight = ModelParameters.of(s);
            }
            try (VisionTransformer s = new VisionTransformer(be, SMALL, 16, 5)) {
                TrainingRun.builder(s, train, test).options(o).teacher(soft).checkpoint(ckpt).stopAfter(1).log(QUIET)
                        .run();
            }
            try (SafetensorsReader reader = SafetensorsReader.open(ckpt)) {
                assertEquals("30 stratified by class, seed 7", reader.header().metadata().get("distill4j.labeled"));
            }
            try (VisionTransformer s = new VisionTransformer(be, SMALL, 16, 99)) {
                TrainingRun.Result r = TrainingRun.builder(s, train, test).options(o).teacher(soft).resumeFrom(ckpt)
                        .log(QUIET).run();
                resumed = ModelParameters.of(s);
                assertEquals(3, r.epochs().size());
            }
            assertArrayEquals(straight, resumed, "a transfer-set run resumes bit for bit");
            TrainOptions[] others = {o.withLabeled(31), o.withDistillation(Distillation.SOFT, 0.5, 2).withSeed(8),
                options(3).withDistillation(Distillation.SOFT, 0.5, 2)};
            String[] asks = {"31 stratified by class, seed 7", "30 stratified by class, seed 8", "all"};
            for (int k = 0; k < others.length; k++) {
                TrainOptions other = others[k];
                try (VisionTransformer s = new VisionTransformer(be, SMALL, 16, 5)) {
                    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                            () -> TrainingRun.builder(s, train, test).options(other).teacher(soft).resumeFrom(ckpt)
                                    .log(QUIET).run());
                    assertTrue(e.getMessage().contains("its labeled images were 30 stratified by class, seed 7; this "
                            + "run asks for " + asks[k] + " (resume with the same labeled images and seed)"),
                            e.getMessage());
                }
            }
        }
    }

    @Test
    void badTransferSetsAreRefusedWithAClearMessage() {
        for (int bad : new int[] {0, -5}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> new TrainOptions().withLabeled(bad));
            assertEquals("the labeled images must number >= 1, got " + bad, e.getMessage());
        }
        assertEquals("the list of labeled images is empty", assertThrows(IllegalArgumentException.class,
                () -> new TrainOptions().withLabeledIndices(new int[0])).getMessage());
        assertEquals("labeled image index -1 is negative", assertThrows(IllegalArgumentException.class,
                () -> new TrainOptions().withLabeledIndices(new int[] {4, -1})).getMessage());
        assertEquals("labeled image index 3 is listed twice", assertThrows(IllegalArgumentException.class,
                () -> new TrainOptions().withLabeledIndices(new int[] {3, 1, 3})).getMessage());
        Dataset train = data(51, 64), test = data(52, 16);
        try (Backend be = CpuBackend.open();
             VisionTransformer student = new VisionTransformer(be, SMALL, 16, 2);
             VisionTransformer five = new VisionTransformer(be, SMALL.withDistilled(false).withClasses(5), 16, 1)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> TrainingRun.builder(student, train, test).options(options(1).withLabeled(65)).log(QUIET)
                            .run());
            assertEquals("cannot keep the labels of 65 images: the training set has 64", e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> TrainingRun.builder(student, train, test)
                    .options(options(1).withLimits(32, 0).withLabeledIndices(new int[] {0, 32})).log(QUIET).run());
            assertEquals("labeled image index 32 is outside the training set of 32 images", e.getMessage());
            TrainOptions soft = options(1).withAugment(true).withDistillation(Distillation.SOFT, 0.5, 2)
                    .withLabeled(16);
            e = assertThrows(IllegalArgumentException.class, () -> TrainingRun.builder(student, train, test)
                    .options(soft).teacher(SoftLabels.live(five, "five")).log(QUIET).run());
            assertTrue(e.getMessage().contains("the teacher five predicts 5 classes; the training set"),
                    e.getMessage());
        }
    }
}
