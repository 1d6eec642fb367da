package org.distill4j.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.data.Augment;
import org.distill4j.data.RandAugment;
import org.distill4j.data.Dataset;
import org.distill4j.data.ImageSource;
import org.distill4j.data.Synthetic;
import org.distill4j.io.Safetensors;
import org.distill4j.io.SafetensorsFormatException;
import org.distill4j.io.SafetensorsReader;
import org.distill4j.io.TensorData;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * FKD's cached views: the image the student is shown in an epoch is, bit for bit, the view the cache holds the
 * teacher's logits of, and those logits are the teacher's on that view (recomputed here); the cache refuses any
 * other augmentation.
 */
class AugmentViewsTest {
    private static final VitConfig STUDENT = VitConfig.of(16, 4, 1, 4, 64, 1, 2, 2, true);
    private static final int BATCH = 16;
    private static final PrintStream QUIET = new PrintStream(OutputStream.nullOutputStream());

    static {
        System.setProperty("distill4j.progress", "off");
    }

    @TempDir
    Path dir;

    /** Records, per (epoch, image), the image the run shows the student and the logits it hands the loss. */
    private static final class Recording implements TrainingRun.TeacherLogits {
        final SoftLabels stored;
        final Map<String, float[]> images = new HashMap<>(), logits = new HashMap<>();
        int batches;

        Recording(SoftLabels stored) {
            this.stored = stored;
        }

        @Override
        public VisionTransformer model() {
            return null;
        }

        @Override
        public void checkFor(ImageSource train, TrainOptions options) {
            stored.checkFor(train, options);
        }

        @Override
        public void logits(float[] batch, int[] indices, int epoch, float[] out) {
            stored.logits(batch, indices, epoch, out);
            int c = out.length / indices.length, size = batch.length / indices.length;
            for (int i = 0; i < indices.length; i++) {
                images.put(epoch + " " + indices[i], Arrays.copyOfRange(batch, i * size, (i + 1) * size));
                logits.put(epoch + " " + indices[i], Arrays.copyOfRange(out, i * c, (i + 1) * c));
            }
            batches++;
        }

        @Override
        public String describe() {
            return stored.describe();
        }
    }

    @Test
    void theImageShownIsTheStoredViewAndItsLogitsAreTheTeachers() throws IOException {
        checkStoredViews(null);
    }

    /** The same with DeiT's RandAugment after the crop and flip: a view's draw is replayed with it. */
    @Test
    void storedViewsReplayRandAugment() throws IOException {
        checkStoredViews("rand-m9-mstd0.5-inc1");
    }

    private void checkStoredViews(String randAugment) throws IOException {
        long seed = Check.freshSeed();
        Dataset train = Synthetic.dataset(seed, 64, 4, 16, 16), test = Synthetic.dataset(seed + 1, 32, 4, 16, 16);
        TrainOptions o = new TrainOptions().withEpochs(3).withBatch(BATCH).withSeed(5).withAugmentViews(2)
                .withDistillation(Distillation.SOFT, 0.5, 2.0).withRandAugment(randAugment);
        try (Backend be = CpuBackend.open();
             VisionTransformer teacher = new VisionTransformer(be, STUDENT.withDistilled(false), BATCH, 9)) {
            SoftLabels views = SoftLabels.computeViews(teacher, train, o.augmentation(), "t");
            assertEquals(2, views.views());
            assertEquals(64, views.images());
            Recording rec = new Recording(views);
            try (VisionTransformer s = new VisionTransformer(be, STUDENT, BATCH, 3)) {
                TrainingRun.Result r = TrainingRun.builder(s, train, test).options(o).log(QUIET).teacher(rec).run();
                assertTrue(Double.isFinite(r.epochs().get(2).trainLoss()));
            }
            assertEquals(3 * 64 / BATCH, rec.batches);
            // Each view, made here from its definition (the crop and flip of epoch v) and run through the teacher in
            // batches of the data's order, as the cache was: the run showed exactly these images and handed the
            // loss exactly these logits, epoch 2 repeating view 0.
            Augment augment = new Augment(5, 2, true).withRandAugment(randAugment == null ? null
                    : new RandAugment(5, randAugment));
            int size = train.imageSize();
            float[] batch = new float[BATCH * size], out = new float[BATCH * 4];
            int differ = 0;
            for (int v = 0; v < 2; v++) {
                for (int start = 0; start < 64; start += BATCH) {
                    for (int r = 0; r < BATCH; r++) augment.apply(train, start + r, v, batch, r * size);
                    teacher.forward(batch);
                    teacher.logits().copyTo(out);
                    for (int r = 0; r < BATCH; r++) {
                        int i = start + r;
                        float[] image = Arrays.copyOfRange(batch, r * size, (r + 1) * size);
                        float[] want = Arrays.copyOfRange(out, r * 4, (r + 1) * 4);
                        for (int epoch : v == 0 ? new int[] {0, 2} : new int[] {1}) {
                            assertArrayEquals(image, rec.images.get(epoch + " " + i), "epoch " + epoch + " image " + i);
                            assertArrayEquals(want, rec.logits.get(epoch + " " + i), "epoch " + epoch + " image " + i);
                        }
                        if (v == 1 && !Arrays.equals(image, rec.images.get("0 " + i))) differ++;
                    }
                }
            }
            assertTrue(differ > 32, "seed=" + seed + ": views 0 and 1 differ for " + differ + " of 64 images");

            // Saved and loaded: the same logits; another augmentation finds no cache.
            Path file = dir.resolve("views.safetensors");
            views.save(file, "key", 0);
            SoftLabels loaded = SoftLabels.loadViews(file, "key", train, o.augmentation());
            float[] a = new float[4 * 4], b = new float[4 * 4];
            int[] idx = {0, 9, 33, 63};
            for (int e = 0; e < 2; e++) {
                views.logits(null, idx, e, a);
                loaded.logits(null, idx, e, b);
                assertArrayEquals(a, b, "view " + e);
            }
            assertNull(SoftLabels.loadViews(file, "key", train, o.withAugmentViews(3).augmentation()));
            assertNull(SoftLabels.loadViews(file, "key", train, o.withSeed(6).augmentation()));
            assertNull(SoftLabels.loadViews(file, "key", train,
                    o.withRandAugment(randAugment == null ? "rand-m9-mstd0.5-inc1" : null).augmentation()));
            assertNull(SoftLabels.loadViews(file, "other", train, o.augmentation()));
        }
    }

    /**
     * Top-k views (FKD's storage): for every view and image the k classes kept are the teacher's largest, each holding
     * its log-probability (float64 log-softmax of the stored logits, rounded once to float), and the other C − k share
     * the rest of the mass evenly; the loaded rows are log-probabilities (their exponentials sum to 1).
     */
    @Test
    void topKViewsKeepTheTeachersLargestClassesAndSpreadTheRest() throws IOException {
        long seed = Check.freshSeed();
        Dataset train = Synthetic.dataset(seed, 48, 4, 16, 16);
        TrainOptions o = new TrainOptions().withEpochs(2).withBatch(BATCH).withSeed(7).withAugmentViews(3)
                .withDistillation(Distillation.SOFT, 0.5, 2.0);
        int c = 4, k = 2;
        try (Backend be = CpuBackend.open();
             VisionTransformer teacher = new VisionTransformer(be, STUDENT.withDistilled(false), BATCH, 11)) {
            SoftLabels views = SoftLabels.computeViews(teacher, train, o.augmentation(), "t");
            Path file = dir.resolve("top2.safetensors");
            views.save(file, "key", k);
            try (SafetensorsReader reader = SafetensorsReader.open(file)) {
                assertArrayEquals(new long[] {3, 48, k}, reader.header().tensors().get("view_topk_logprobs").shape());
                assertFalse(reader.header().tensors().containsKey("view_logits"));
            }
            SoftLabels loaded = SoftLabels.loadViews(file, "key", train, o.augmentation());
            assertTrue(loaded.describe().startsWith("top-2 teacher logits of 3 augmented views"), loaded.describe());
            int[] all = new int[48];
            for (int i = 0; i < 48; i++) all[i] = i;
            float[] full = new float[48 * c], got = new float[48 * c];
            for (int v = 0; v < 3; v++) {
                views.logits(null, all, v, full);
                loaded.logits(null, all, v, got);
                for (int i = 0; i < 48; i++) {
                    double max = Double.NEGATIVE_INFINITY, sum = 0;
                    for (int j = 0; j < c; j++) max = Math.max(max, full[i * c + j]);
                    for (int j = 0; j < c; j++) sum += Math.exp(full[i * c + j] - max);
                    double lse = max + Math.log(sum);
                    Integer[] order = {0, 1, 2, 3};
                    final int row = i;
                    Arrays.sort(order, (a, b) -> Double.compare(full[row * c + b], full[row * c + a]));
                    double mass = 0, total = 0;
                    for (int j = 0; j < k; j++) {
                        float want = (float) (full[i * c + order[j]] - lse);
                        assertEquals(want, got[i * c + order[j]], 0.0, "view " + v + " image " + i);
                        mass += Math.exp(want);
                    }
                    float rest = (float) Math.log((1 - mass) / (c - k));
                    for (int j = k; j < c; j++) {
                        assertEquals(rest, got[i * c + order[j]], 0.0, "view " + v + " image " + i + ", " + order[j]);
                    }
                    for (int j = 0; j < c; j++) total += Math.exp(got[i * c + j]);
                    assertEquals(1.0, total, 1e-6, "view " + v + " image " + i);
                }
            }
            // A file for this teacher, data and augmentation whose top-k tensors cover other images: named, not read.
            Path bad = dir.resolve("bad.safetensors");
            TensorData zeros = new TensorData(new long[] {3, 47, k}, new float[3 * 47 * k]);
            Safetensors.write(bad, Map.of("view_topk_logprobs", zeros, "view_topk_classes", zeros),
                    Map.of("teacher", "key", "dataset", train.digest(), "augment", o.augmentation().toString()));
            SafetensorsFormatException e = assertThrows(SafetensorsFormatException.class,
                    () -> SoftLabels.loadViews(bad, "key", train, o.augmentation()));
            assertTrue(e.getMessage().contains("view_topk_logprobs/view_topk_classes [3, 48] + [k < 4]"),
                    e.getMessage());
        }
    }

    @Test
    void viewsServeOnlyTheAugmentationTheyWereMadeWith() {
        long seed = Check.freshSeed();
        Dataset train = Synthetic.dataset(seed, 32, 4, 16, 16);
        TrainOptions o = new TrainOptions().withEpochs(2).withBatch(BATCH).withSeed(5).withAugmentViews(2)
                .withDistillation(Distillation.SOFT, 0.5, 2.0);
        try (Backend be = CpuBackend.open();
             VisionTransformer teacher = new VisionTransformer(be, STUDENT.withDistilled(false), BATCH, 9)) {
            SoftLabels views = SoftLabels.computeViews(teacher, train, o.augmentation(), "t");
            views.checkFor(train, o);
            for (TrainOptions other : new TrainOptions[] {o.withAugmentViews(3), o.withAugmentViews(0), o.withSeed(6),
                o.withAugment(false), o.withResizedCrop(0.5, 1, 0.75, 4 / 3.0),
                o.withRandAugment("rand-m9-mstd0.5-inc1")}) {
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                        () -> views.checkFor(train, other));
                assertTrue(e.getMessage().contains("hold the views of crop(pad 2) + hflip, seed 5, 2 views"),
                        e.getMessage());
            }
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> views.checkFor(train, o.withMixup(0.8, 0, 1, 0.5)));
            assertTrue(e.getMessage().contains("mixes images"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> views.checkFor(train, o.withRandomErasing(0.25)));
            assertTrue(e.getMessage().contains("erases images"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class,
                    () -> SoftLabels.computeViews(teacher, train, new Augment(5, 2, true), "t"));
            assertTrue(e.getMessage().contains("fixed views"), e.getMessage());
            assertFalse(views.describe().isEmpty());
        }
    }
}
