package org.distill4j.train;

import static org.distill4j.testing.LossFormulas.addCe;
import static org.distill4j.testing.LossFormulas.argmax;
import static org.distill4j.testing.LossFormulas.softmax;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;
import org.distill4j.Device;
import org.distill4j.backend.Backend;
import org.distill4j.backend.Backends;
import org.distill4j.backend.CpuBackend;
import org.distill4j.data.Dataset;
import org.distill4j.data.Mixup;
import org.distill4j.data.Synthetic;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.testing.Check;
import org.distill4j.testing.ModelParameters;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * DeiT's batch-level recipe in training (issue #17): Mixup/CutMix — {@link Trainer#stepMixed}'s loss and gradients
 * against a float64 reference written here from the definition (cross-entropy on the mixed, smoothed targets; the
 * distillation terms unchanged), the teacher seeing the mixed images — and random erasing: runs that use them,
 * resume bit for bit and refuse what cannot be mixed or erased.
 */
class DeitRecipeTrainingTest {
    private static final VitConfig SMALL = VitConfig.of(16, 4, 1, 4, 64, 1, 2, 2, true);
    private static final int B = 8, C = 4;
    private static final PrintStream QUIET = new PrintStream(OutputStream.nullOutputStream());

    @TempDir
    Path dir;

    static {
        System.setProperty("distill4j.progress", "off");
    }

    private static TrainOptions options(int epochs) {
        return new TrainOptions().withEpochs(epochs).withBatch(16).withLr(3e-3, 1e-4).withWarmupEpochs(0.5)
                .withAugment(false).withSeed(7);
    }

    /** Row i of the mixed targets, smoothed: (1 − eps)·t_i + eps/C. */
    private static double[] smoothed(float[] targets, int i, double eps) {
        double[] t = new double[C];
        for (int c = 0; c < C; c++) t[c] = (1 - eps) * targets[i * C + c] + eps / C;
        return t;
    }

    /** {loss, d/d class logits, d/d distillation logits} of a mixed batch, in float64. */
    private static double[][] reference(Distillation mode, double alpha, double temp, double eps, float[] z, float[] zd,
                                        float[] teacher, float[] targets) {
        double[] loss = new double[1], gz = new double[B * C], gzd = new double[B * C];
        for (int i = 0; i < B; i++) {
            double[] t = smoothed(targets, i, eps);
            addCe(softmax(z, i, C, 1), t, (mode == Distillation.NONE ? 0.5 : 1 - alpha) / B, i, loss, gz);
            switch (mode) {
                case NONE: // both heads learn the mixed targets
                    addCe(softmax(zd, i, C, 1), t, 0.5 / B, i, loss, gzd);
                    break;
                case HARD: { // the teacher's argmax on the mixed image, unsmoothed
                    double[] y = new double[C];
                    y[argmax(teacher, i, C)] = 1;
                    addCe(softmax(zd, i, C, 1), y, alpha / B, i, loss, gzd);
                    break;
                }
                case SOFT: {
                    double[] p = softmax(zd, i, C, 1 / temp), q = softmax(teacher, i, C, 1 / temp);
                    double kl = 0;
                    for (int c = 0; c < C; c++) {
                        kl += q[c] * (Math.log(q[c]) - Math.log(p[c]));
                        gzd[i * C + c] += alpha / B * temp * (p[c] - q[c]);
                    }
                    loss[0] += alpha / B * temp * temp * kl;
                    break;
                }
                default:
                    throw new AssertionError(mode);
            }
        }
        return new double[][] {loss, gz, gzd};
    }

    @Test
    void mixedStepMatchesTheFormulaInEveryMode() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        try (Backend be = CpuBackend.open()) {
            for (Distillation mode : Distillation.values()) {
                for (double eps : new double[] {0, 0.1}) {
                    double lam = rng.nextDouble();
                    checkStep(be, mode, eps, new Mixup.Params(false, lam, lam, 0, 0, 0, 0, 0, 0), rng, seed);
                    Mixup.Params box = new Mixup.Params(true, 1 - 16.0 / 256, 0.6, 8, 8, 6, 10, 6, 10);
                    checkStep(be, mode, eps, box, rng, seed);
                }
            }
        }
    }

    /** The same through the CUDA kernels, emulated on the CPU: the soft-target cross-entropy in the model's step. */
    @Test
    void mixedStepMatchesTheFormulaOnTheEmulatedCudaKernels() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        try (Backend be = Backends.open(Device.cudaEmu())) {
            for (Distillation mode : new Distillation[] {Distillation.NONE, Distillation.SOFT}) {
                checkStep(be, mode, 0.1, new Mixup.Params(false, 0.3, 0.3, 0, 0, 0, 0, 0, 0), rng, seed);
            }
        }
    }

    private static void checkStep(Backend be, Distillation mode, double eps, Mixup.Params p, Random rng, long seed) {
        double alpha = 0.3, temp = 2.5;
        Dataset train = Synthetic.dataset(seed, B, C, 16, 16);
        float[] images = new float[B * 256];
        for (int i = 0; i < B; i++) train.copyImage(i, images, i * 256);
        Mixup.apply(images, 0, B, 1, 16, 16, p);
        int[] labels = new int[B];
        for (int i = 0; i < B; i++) labels[i] = rng.nextInt(C);
        float[] targets = new float[B * C];
        Mixup.targets(labels, C, p, targets);
        float[] teacher = Check.normal(rng, B * C, 3);
        TrainOptions o = options(1).withLabelSmoothing(eps).withDistillation(mode, alpha, temp)
                .withMixup(0.8, 1.0, 1, 0.5);
        String what = be.name() + " " + mode + " eps " + eps + " " + p + " (seed " + seed + ")";
        try (VisionTransformer student = new VisionTransformer(be, SMALL, B, rng.nextLong());
             Trainer trainer = new Trainer(student, null, o, 10)) {
            Trainer.StepResult r = trainer.stepMixed(images, labels, targets, teacher);
            float[] z = student.logits().toArray(), zd = student.distLogits().toArray();
            double[][] want = reference(mode, alpha, temp, eps, z, zd, teacher, targets);
            double lossErr = Math.abs(r.loss() - want[0][0]) / Math.max(1e-3, Math.abs(want[0][0]));
            assertTrue(lossErr <= 2e-5, what + ": loss " + r.loss() + " vs " + want[0][0]);
            double e1 = Check.relErr(student.logitsGrad().toArray(), want[1]);
            double e2 = Check.relErr(student.distLogitsGrad().toArray(), want[2]);
            assertTrue(e1 <= 2e-5, what + ": class-head gradient rel err " + e1);
            assertTrue(e2 <= 2e-5, what + ": distillation-head gradient rel err " + e2);
            int correct = 0;
            for (int i = 0; i < B; i++) if (argmax(z, i, C) == labels[i]) correct++;
            assertEquals(B, r.labeled(), what);
            assertEquals(correct, r.correct(), what + ": accuracy against each image's own label");
        }
    }

    @Test
    void theTeacherSeesTheMixedImages() {
        long seed = Check.freshSeed();
        Dataset train = Synthetic.dataset(seed, B, C, 16, 16);
        float[] images = new float[B * 256];
        for (int i = 0; i < B; i++) train.copyImage(i, images, i * 256);
        Mixup.Params p = new Mixup.Params(true, 1 - 16.0 / 256, 0.6, 8, 8, 6, 10, 6, 10);
        Mixup.apply(images, 0, B, 1, 16, 16, p);
        int[] labels = new int[B];
        float[] targets = new float[B * C];
        Mixup.targets(labels, C, p, targets);
        try (Backend be = CpuBackend.open(); VisionTransformer student = new VisionTransformer(be, SMALL, B, 1);
             VisionTransformer teacher = new VisionTransformer(be, SMALL.withDistilled(false), B, 2);
             Trainer trainer = new Trainer(student, teacher,
                     options(1).withDistillation(Distillation.SOFT, 0.5, 2).withMixup(0.8, 1.0, 1, 0.5), 10)) {
            trainer.stepMixed(images, labels, targets, null);
            assertArrayEquals(images, teacher.input().toArray(), "seed=" + seed);
        }
    }

    /**
     * Parameters after the same run {@code o} straight, without what it tests ({@code without}), and stopped after
     * epoch 1 and resumed from its checkpoint by a student of other initial weights.
     */
    private float[][] threeRuns(Backend be, TrainingRun.TeacherLogits live, Dataset train, Dataset test, TrainOptions o,
                                TrainOptions without, Path ckpt) throws Exception {
        float[][] out = new float[3][];
        try (VisionTransformer s = new VisionTransformer(be, SMALL, 16, 5)) {
            TrainingRun.builder(s, train, test).options(o).teacher(live).log(QUIET).run();
            out[0] = ModelParameters.of(s);
        }
        try (VisionTransformer s = new VisionTransformer(be, SMALL, 16, 5)) {
            TrainingRun.builder(s, train, test).options(without).teacher(live).log(QUIET).run();
            out[1] = ModelParameters.of(s);
        }
        try (VisionTransformer s = new VisionTransformer(be, SMALL, 16, 5)) {
            TrainingRun.builder(s, train, test).options(o).teacher(live).checkpoint(ckpt).stopAfter(1).log(QUIET).run();
        }
        try (VisionTransformer s = new VisionTransformer(be, SMALL, 16, 99)) {
            TrainingRun.builder(s, train, test).options(o).teacher(live).resumeFrom(ckpt).log(QUIET).run();
            out[2] = ModelParameters.of(s);
        }
        return out;
    }

    @Test
    void runsMixAndResumeBitForBit() throws Exception {
        Dataset train = Synthetic.dataset(61, 96, C, 16, 16), test = Synthetic.dataset(62, 32, C, 16, 16);
        TrainOptions o = options(3).withDistillation(Distillation.SOFT, 0.5, 2).withMixup(0.8, 1.0, 1, 0.5);
        Path ckpt = dir.resolve("c.safetensors");
        try (Backend be = CpuBackend.open();
             VisionTransformer teacher = new VisionTransformer(be, SMALL.withDistilled(false), 16, 1)) {
            TrainingRun.TeacherLogits live = SoftLabels.live(teacher, "t");
            float[][] runs = threeRuns(be, live, train, test, o, o.withMixup(0, 0, 1, 0.5), ckpt);
            assertFalse(Arrays.equals(runs[0], runs[1]), "Mixup/CutMix changes the run");
            assertArrayEquals(runs[0], runs[2], "a mixed run resumes bit for bit");
            try (VisionTransformer s = new VisionTransformer(be, SMALL, 16, 5)) {
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                        () -> TrainingRun.builder(s, train, test).options(o.withMixup(0.2, 1.0, 1, 0.5)).teacher(live)
                                .resumeFrom(ckpt).log(QUIET).run());
                assertTrue(e.getMessage().contains("mixup 0.8, cutmix 1.0 (prob 1.0, switch 0.5)"), e.getMessage());
            }
        }
    }

    @Test
    void randomErasingChangesTheRunResumesExactlyAndRefusesCachedLogits() throws Exception {
        Dataset train = Synthetic.dataset(81, 64, C, 16, 16), test = Synthetic.dataset(82, 16, C, 16, 16);
        TrainOptions o = options(2).withDistillation(Distillation.SOFT, 0.5, 2).withRandomErasing(0.5);
        try (Backend be = CpuBackend.open();
             VisionTransformer teacher = new VisionTransformer(be, SMALL.withDistilled(false), 16, 1)) {
            TrainingRun.TeacherLogits live = SoftLabels.live(teacher, "t");
            float[][] runs = threeRuns(be, live, train, test, o, o.withRandomErasing(0), dir.resolve("e.safetensors"));
            assertFalse(Arrays.equals(runs[0], runs[1]), "random erasing changes the run");
            assertArrayEquals(runs[0], runs[2], "an erasing run resumes bit for bit");
            try (VisionTransformer s = new VisionTransformer(be, SMALL, 16, 5)) {
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                        () -> TrainingRun.builder(s, train, test).options(o).log(QUIET)
                                .teacher(SoftLabels.compute(teacher, train, "t")).run());
                assertTrue(e.getMessage().contains("this run erases parts of them"), e.getMessage());
            }
        }
        assertThrows(IllegalArgumentException.class, () -> new TrainOptions().withRandomErasing(1.5));
    }

    @Test
    void randAugmentChangesTheRunResumesExactlyAndIsPartOfTheSettings() throws Exception {
        Dataset train = Synthetic.dataset(91, 64, C, 16, 16), test = Synthetic.dataset(92, 16, C, 16, 16);
        TrainOptions o = options(2).withAugment(true).withDistillation(Distillation.SOFT, 0.5, 2)
                .withRandAugment("rand-m9-mstd0.5-inc1");
        Path ckpt = dir.resolve("ra.safetensors");
        try (Backend be = CpuBackend.open();
             VisionTransformer teacher = new VisionTransformer(be, SMALL.withDistilled(false), 16, 1)) {
            TrainingRun.TeacherLogits live = SoftLabels.live(teacher, "t");
            float[][] runs = threeRuns(be, live, train, test, o, o.withRandAugment(null), ckpt);
            for (float v : runs[0]) assertTrue(Float.isFinite(v), "finite parameters");
            assertFalse(Arrays.equals(runs[0], runs[1]), "RandAugment changes the run");
            assertArrayEquals(runs[0], runs[2], "a RandAugment run resumes bit for bit");
            try (VisionTransformer s = new VisionTransformer(be, SMALL, 16, 5)) {
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                        () -> TrainingRun.builder(s, train, test).options(o.withRandAugment("rand-m5-inc1"))
                                .teacher(live).resumeFrom(ckpt).log(QUIET).run());
                assertTrue(e.getMessage().contains("RandAugment rand-m9-mstd0.5-inc1"), e.getMessage());
                e = assertThrows(IllegalArgumentException.class, () -> TrainingRun.builder(s, train, test).options(o)
                        .log(QUIET).teacher(SoftLabels.compute(teacher, train, "t")).run());
                assertTrue(e.getMessage().contains("augments them"), e.getMessage());
            }
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new TrainOptions().withRandAugment("rand-m9-x"));
        assertTrue(e.getMessage().contains("section 'x'"), e.getMessage());
        assertNull(new TrainOptions().withRandAugment("").randAugment());
        assertNull(o.withAugment(false).augmentation().randAugment(), "RandAugment applies while augment is on");
        assertFalse(o.withAugment(false).toString().contains("RandAugment"), o.withAugment(false).toString());
    }

    @Test
    void whatCannotBeMixedIsRefused() {
        Dataset train = Synthetic.dataset(71, 64, C, 16, 16), test = Synthetic.dataset(72, 16, C, 16, 16);
        try (Backend be = CpuBackend.open(); VisionTransformer student = new VisionTransformer(be, SMALL, 16, 2);
             VisionTransformer teacher = new VisionTransformer(be, SMALL.withDistilled(false), 16, 1)) {
            TrainOptions mixed = options(1).withDistillation(Distillation.SOFT, 0.5, 2).withMixup(0.8, 0, 1, 0.5);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> TrainingRun.builder(student, train, test).options(mixed.withLabeled(16)).log(QUIET)
                            .teacher(SoftLabels.live(teacher, "t")).run());
            assertTrue(e.getMessage().startsWith("Mixup/CutMix cannot mix a transfer set"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> TrainingRun.builder(student, train, test)
                    .options(mixed).log(QUIET).teacher(SoftLabels.compute(teacher, train, "t")).run());
            assertTrue(e.getMessage().contains("this run mixes them (Mixup/CutMix)"), e.getMessage());
            try (Trainer trainer = new Trainer(student, null, mixed, 10)) {
                e = assertThrows(IllegalArgumentException.class,
                        () -> trainer.stepMixed(new float[16 * 256], new int[16], new float[3], new float[16 * C]));
                assertEquals("targets must be 16 x 4 floats, got 3", e.getMessage());
            }
        }
        assertThrows(IllegalArgumentException.class, () -> new TrainOptions().withMixup(-1, 0, 1, 0.5));
        assertThrows(IllegalArgumentException.class, () -> new TrainOptions().withMixup(0.8, 1, 2, 0.5));
    }
}
