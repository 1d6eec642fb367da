package org.distill4j.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.data.Dataset;
import org.distill4j.data.Synthetic;
import org.distill4j.nn.ModelFile;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.api.io.TempDir;

/**
 * Mistakes a user makes with the training API (issue #15): each used to train silently on something else or to end
 * in a raw exception from deep inside; each is now refused before the first step, saying what to do.
 */
class TrainingRunMisuseTest {
    private static final VitConfig STUDENT = VitConfig.of(16, 4, 1, 4, 64, 1, 2, 2, true);
    private static final VitConfig TEACHER = STUDENT.withDistilled(false);
    private static final int BATCH = 16;
    private static final PrintStream QUIET = new PrintStream(OutputStream.nullOutputStream());

    @TempDir
    Path dir;

    static {
        System.setProperty("distill4j.progress", "off");
    }

    private static TrainOptions soft() {
        return new TrainOptions().withEpochs(1).withBatch(BATCH).withAugment(false)
                .withDistillation(Distillation.SOFT, 0.5, 4.0);
    }

    private static void refused(String expected, Executable call) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call);
        assertTrue(e.getMessage().contains(expected), "message: " + e.getMessage());
    }

    @Test
    void optionsForAnotherBatchSizeAreRefused() {
        Dataset train = Synthetic.dataset(1, 64, 4, 16, 16), test = Synthetic.dataset(2, 32, 4, 16, 16);
        try (Backend be = CpuBackend.open(); VisionTransformer student = new VisionTransformer(be, STUDENT, BATCH, 3)) {
            TrainOptions options = new TrainOptions().withEpochs(1).withBatch(2 * BATCH);
            refused("allocated for " + BATCH, () -> TrainingRun.builder(student, train, test).options(options)
                    .log(QUIET).run());
        }
    }

    @Test
    void softLabelsOfOtherImagesAreRefusedBeforeTheFirstStep() {
        long seed = Check.freshSeed();
        Dataset train = Synthetic.dataset(seed, 64, 4, 16, 16), test = Synthetic.dataset(seed + 1, 32, 4, 16, 16);
        try (Backend be = CpuBackend.open();
             VisionTransformer teacher = new VisionTransformer(be, TEACHER, BATCH, 1);
             VisionTransformer student = new VisionTransformer(be, STUDENT, BATCH, 2)) {
            // Fewer images than the training set: used to fail in the middle of epoch 1 with arraycopy's message.
            SoftLabels half = SoftLabels.compute(teacher, train.head(32), "t");
            refused("cover 32 images", () -> TrainingRun.builder(student, train, test).teacher(half).options(soft())
                    .log(QUIET).run());
            // As many images, but other ones (another split, other preprocessing): used to train on them.
            SoftLabels other = SoftLabels.compute(teacher, Synthetic.dataset(seed + 2, 64, 4, 16, 16), "t");
            refused("other images", () -> TrainingRun.builder(student, train, test).teacher(other).options(soft())
                    .log(QUIET).run());
            // Stored logits of unaugmented images with augmentation on: refused, pointing to a live teacher.
            SoftLabels right = SoftLabels.compute(teacher, train, "t");
            refused("SoftLabels.live", () -> TrainingRun.builder(student, train, test).teacher(right)
                    .options(soft().withAugment(true)).log(QUIET).run());
            // Another class count: refused by name, not by an index error.
            Dataset five = Synthetic.dataset(seed, 64, 5, 16, 16);
            try (VisionTransformer student5 = new VisionTransformer(be, STUDENT.withClasses(5), BATCH, 2)) {
                refused("4 classes per image", () -> TrainingRun.builder(student5, five,
                        Synthetic.dataset(seed, 32, 5, 16, 16)).teacher(right).options(soft()).log(QUIET).run());
            }
            // The right ones pass the checks and train.
            TrainingRun.Result r = TrainingRun.builder(student, train, test).teacher(right).options(soft())
                    .log(QUIET).run();
            assertTrue(Double.isFinite(r.epochs().get(0).trainLoss()), "seed " + seed);
            refused("do not distill", () -> TrainingRun.builder(student, train, test).teacher(right)
                    .options(soft().withDistillation(Distillation.NONE, 0, 1)).log(QUIET).run());
        }
    }

    @Test
    void softLabelsCopyNamesAnImageTheyDoNotCover() {
        Dataset data = Synthetic.dataset(5, 16, 4, 16, 16);
        try (Backend be = CpuBackend.open(); VisionTransformer teacher = new VisionTransformer(be, TEACHER, BATCH, 1)) {
            SoftLabels soft = SoftLabels.compute(teacher, data, "t");
            IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class,
                    () -> soft.copy(new int[] {3, 16}, new float[8]));
            assertTrue(e.getMessage().contains("image 16 of soft labels for 16 images"), e.getMessage());
        }
    }

    @Test
    void badLabelsAreRefusedNamingRowAndValue() {
        long seed = Check.freshSeed();
        Dataset data = Synthetic.dataset(seed, BATCH, 4, 16, 16);
        TrainOptions options = new TrainOptions().withBatch(BATCH);
        try (Backend be = CpuBackend.open();
             VisionTransformer m = new VisionTransformer(be, STUDENT, BATCH, seed);
             Trainer trainer = new Trainer(m, null, options, 10)) {
            refused("3 labels for a batch of " + BATCH, () -> trainer.step(data.images(), new int[] {0, 1, 2}, null));
            int[] bad = data.labels().clone();
            for (int label : new int[] {4, -1, Integer.MAX_VALUE}) {
                bad[5] = label;
                refused("label " + label + " at row 5 is not a class index in [0, 4)",
                        () -> trainer.step(data.images(), bad, null));
            }
            assertEquals(0, trainer.steps(), "nothing was stepped");
            assertTrue(Double.isFinite(trainer.step(data.images(), data.labels(), null).loss()), "seed " + seed);
        }
    }

    @Test
    void aMissingModelFileSaysWhereTheCliWritesModels() {
        try (Backend be = CpuBackend.open(); VisionTransformer teacher = new VisionTransformer(be, TEACHER, BATCH, 1)) {
            Path missing = dir.resolve("teacher.safetensors");
            NoSuchFileException e = assertThrows(NoSuchFileException.class, () -> ModelFile.load(missing, teacher));
            assertTrue(e.getMessage().startsWith(missing + ": no such model file")
                    && e.getMessage().contains("DIR/model.safetensors"), e.getMessage());
        }
    }
}
