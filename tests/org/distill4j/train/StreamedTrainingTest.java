package org.distill4j.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.util.concurrent.atomic.AtomicInteger;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.data.Dataset;
import org.distill4j.data.ImageSource;
import org.distill4j.data.Normalization;
import org.distill4j.data.Synthetic;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.testing.ModelParameters;
import org.junit.jupiter.api.Test;

/**
 * A run over streamed data (decoded on worker threads by StreamLoader) trains the same bits as the same run over the
 * in-memory Dataset (BatchLoader): same batches, same augmentation, same evaluation.
 */
class StreamedTrainingTest {
    private static final VitConfig STUDENT = VitConfig.of(16, 4, 1, 4, 64, 1, 2, 2, true);
    private static final int BATCH = 16;
    private static final PrintStream QUIET = new PrintStream(OutputStream.nullOutputStream());

    static {
        System.setProperty("distill4j.progress", "off");
    }

    /** The images of a dataset read one at a time, as a file-backed source would: not a Dataset, so streamed. */
    record Streamed(Dataset d, AtomicInteger reads) implements ImageSource {
        Streamed(Dataset d) {
            this(d, new AtomicInteger());
        }

        @Override
        public int size() {
            return d.size();
        }

        @Override
        public int channels() {
            return d.channels();
        }

        @Override
        public int height() {
            return d.height();
        }

        @Override
        public int width() {
            return d.width();
        }

        @Override
        public int classes() {
            return d.classes();
        }

        @Override
        public int label(int index) {
            return d.label(index);
        }

        @Override
        public void copyImage(int index, float[] dst, int offset) throws IOException {
            reads.incrementAndGet();
            d.copyImage(index, dst, offset);
        }

        @Override
        public String name() {
            return "streamed " + d.name();
        }

        @Override
        public Normalization normalization() {
            return d.normalization();
        }
    }

    private static float[] train(Backend be, ImageSource train, ImageSource test, TrainOptions options,
            TrainingRun.TeacherLogits teacher, double[] accuracy) {
        try (VisionTransformer student = new VisionTransformer(be, STUDENT, BATCH, 3)) {
            TrainingRun.Builder b = TrainingRun.builder(student, train, test).options(options).log(QUIET).workers(3);
            if (teacher != null) b.teacher(teacher);
            TrainingRun.Result r = b.run();
            accuracy[0] = r.test().average();
            accuracy[1] = r.epochs().get(r.epochs().size() - 1).trainLoss();
            return ModelParameters.of(student);
        }
    }

    @Test
    void streamedAndInMemoryRunsTrainTheSameBits() {
        Dataset train = Synthetic.dataset(11, 80, 4, 16, 16), test = Synthetic.dataset(12, 40, 4, 16, 16);
        TrainOptions options = new TrainOptions().withEpochs(2).withBatch(BATCH).withAugment(true).withSeed(5)
                .withLimits(72, 36);
        try (Backend be = CpuBackend.open()) {
            double[] a = new double[2], b = new double[2];
            Streamed st = new Streamed(train), se = new Streamed(test);
            float[] mem = train(be, train, test, options, null, a);
            float[] streamed = train(be, st, se, options, null, b);
            assertArrayEquals(mem, streamed, "parameters after 2 epochs");
            assertEquals(a[0], b[0], "test accuracy");
            assertEquals(a[1], b[1], "train loss");
            assertTrue(st.reads().get() > 0 && se.reads().get() > 0, "the streamed run read through the source");
            // A transfer set with a live teacher: labeled subset chosen from the streamed labels, the same.
            try (VisionTransformer teacher = new VisionTransformer(be, STUDENT.withDistilled(false), BATCH, 9)) {
                TrainOptions soft = options.withDistillation(Distillation.SOFT, 0.5, 4.0).withLabeled(20);
                float[] m2 = train(be, train, test, soft, SoftLabels.live(teacher, "t"), a);
                float[] s2 = train(be, new Streamed(train), new Streamed(test), soft, SoftLabels.live(teacher, "t"), b);
                assertArrayEquals(m2, s2, "distilled on a transfer set");
                assertEquals(a[0], b[0]);
            }
        }
    }

    @Test
    void storedSoftLabelsNeedAnInMemoryDataset() {
        Dataset train = Synthetic.dataset(1, 32, 4, 16, 16), test = Synthetic.dataset(2, 16, 4, 16, 16);
        try (Backend be = CpuBackend.open();
             VisionTransformer teacher = new VisionTransformer(be, STUDENT.withDistilled(false), BATCH, 1);
             VisionTransformer student = new VisionTransformer(be, STUDENT, BATCH, 2)) {
            SoftLabels stored = SoftLabels.compute(teacher, train, "t");
            TrainOptions soft = new TrainOptions().withEpochs(1).withBatch(BATCH).withAugment(false)
                    .withDistillation(Distillation.SOFT, 0.5, 4.0);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> TrainingRun.builder(student,
                    new Streamed(train), test).teacher(stored).options(soft).log(QUIET).run());
            assertTrue(e.getMessage().contains("streamed") && e.getMessage().contains("SoftLabels.live"),
                    e.getMessage());
        }
    }
}
