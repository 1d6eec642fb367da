package org.distill4j.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.data.Dataset;
import org.distill4j.data.ImageSource;
import org.distill4j.data.SampleList;
import org.distill4j.data.Synthetic;
import org.distill4j.io.Safetensors;
import org.distill4j.io.SafetensorsFormatException;
import org.distill4j.io.TensorData;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.testing.Check;
import org.distill4j.testing.ModelParameters;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Teacher logits computed elsewhere ({@link SoftLabels#external}): a run from them trains the same bits as a run from
 * the same logits computed here, on in-memory and streamed data alike, and every mismatch with the training set is
 * refused before training, naming it.
 */
class ExternalLogitsTest {
    private static final VitConfig STUDENT = VitConfig.of(16, 4, 1, 4, 64, 1, 2, 2, true);
    private static final int BATCH = 16;
    private static final PrintStream QUIET = new PrintStream(OutputStream.nullOutputStream());

    static {
        System.setProperty("distill4j.progress", "off");
    }

    @TempDir
    Path dir;

    /** Every image's logits from {@code soft}, [n, classes]. */
    private static float[] all(SoftLabels soft) {
        int n = soft.images();
        int[] idx = new int[n];
        for (int i = 0; i < n; i++) idx[i] = i;
        float[] out = new float[n * soft.classes()];
        soft.copy(idx, out);
        return out;
    }

    /** A logits file as a user's script would write it: the tensors, and the sample list's digest (or none). */
    private Path file(String name, Map<String, TensorData> tensors, String samples) throws IOException {
        Path f = dir.resolve(name);
        Map<String, String> meta = new LinkedHashMap<>();
        if (samples != null) meta.put(SoftLabels.SAMPLES_KEY, samples);
        Safetensors.write(f, tensors, meta);
        return f;
    }

    private static float[] train(Backend be, ImageSource train, ImageSource test, TrainOptions o,
            TrainingRun.TeacherLogits teacher) {
        try (VisionTransformer student = new VisionTransformer(be, STUDENT, BATCH, 3)) {
            TrainingRun.builder(student, train, test).options(o).log(QUIET).workers(2).teacher(teacher).run();
            return ModelParameters.of(student);
        }
    }

    @Test
    void externalLogitsTrainTheSameBitsAsTheTeachersOwnOnMemoryAndStreamedData() throws IOException {
        long seed = Check.freshSeed();
        Dataset train = Synthetic.dataset(seed, 64, 4, 16, 16), test = Synthetic.dataset(seed + 1, 32, 4, 16, 16);
        try (Backend be = CpuBackend.open();
             VisionTransformer teacher = new VisionTransformer(be, STUDENT.withDistilled(false), BATCH, 9)) {
            SoftLabels here = SoftLabels.compute(teacher, train, "t");
            float[] logits = all(here);
            Path f = file("logits.safetensors", Map.of("logits", new TensorData(new long[] {64, 4}, logits)),
                    SampleList.of(train).digest());
            SoftLabels external = SoftLabels.external(f, train);
            assertEquals(64, external.images());
            assertArrayEquals(logits, all(external));
            StreamedTrainingTest.Streamed streamed = new StreamedTrainingTest.Streamed(train);
            // A streamed source of the same images has its own sample list (names, no pixel digest).
            Path fs = file("streamed.safetensors", Map.of("logits", new TensorData(new long[] {64, 4}, logits)),
                    SampleList.of(streamed).digest());
            for (Distillation mode : new Distillation[] {Distillation.SOFT, Distillation.HARD}) {
                TrainOptions o = new TrainOptions().withEpochs(2).withBatch(BATCH).withAugment(false).withSeed(5)
                        .withDistillation(mode, 0.5, 3.0);
                float[] want = train(be, train, test, o, here);
                assertArrayEquals(want, train(be, train, test, o, external), mode + ": in memory");
                assertArrayEquals(want, train(be, streamed, new StreamedTrainingTest.Streamed(test), o,
                        SoftLabels.external(fs, streamed)), mode + ": streamed");
            }
        }
    }

    @Test
    void topKLogitsAreRebuiltAsTheCacheDoes() throws IOException {
        long seed = Check.freshSeed();
        Dataset train = Synthetic.dataset(seed, 40, 6, 16, 16);
        try (Backend be = CpuBackend.open();
             VisionTransformer teacher = new VisionTransformer(be, STUDENT.withDistilled(false).withClasses(6),
                     BATCH, 9)) {
            SoftLabels here = SoftLabels.compute(teacher, train, "t");
            Path cache = dir.resolve("cache.safetensors");
            here.save(cache, "key", 2);
            // The same top-2 tensors, written as a user would with the sample list's digest.
            var read = Safetensors.read(cache);
            Map<String, TensorData> tensors = new LinkedHashMap<>();
            tensors.put("topk_logprobs", read.tensors().get("topk_logprobs"));
            tensors.put("topk_classes", read.tensors().get("topk_classes"));
            Path f = file("top2.safetensors", tensors, SampleList.of(train).digest());
            SoftLabels external = SoftLabels.external(f, train);
            assertArrayEquals(all(SoftLabels.load(cache, "key", train)), all(external));
            assertTrue(external.describe().startsWith("top-2 teacher logits from "), external.describe());
        }
    }

    @Test
    void mismatchesAreRefusedBeforeTrainingNamingThem() throws IOException {
        long seed = Check.freshSeed();
        Dataset train = Synthetic.dataset(seed, 32, 4, 16, 16), test = Synthetic.dataset(seed + 1, 16, 4, 16, 16);
        Dataset other = Synthetic.dataset(seed + 2, 32, 4, 16, 16);
        String digest = SampleList.of(train).digest();
        float[] ok = Check.normal(new java.util.Random(seed), 32 * 4, 2);
        TensorData good = new TensorData(new long[] {32, 4}, ok);

        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> SoftLabels.external(file("none.safetensors", Map.of("logits", good), null), train));
        assertTrue(e.getMessage().contains("no distill4j.samples metadata"), e.getMessage());

        e = assertThrows(IllegalArgumentException.class, () -> SoftLabels.external(file("other.safetensors",
                Map.of("logits", good), SampleList.of(other).digest()), train));
        assertTrue(e.getMessage().contains("not the training set's") && e.getMessage().contains(digest.substring(0, 12)),
                e.getMessage());

        SafetensorsFormatException f = assertThrows(SafetensorsFormatException.class, () -> SoftLabels.external(
                file("short.safetensors", Map.of("logits", new TensorData(new long[] {31, 4}, new float[124])), digest),
                train));
        assertTrue(f.getMessage().contains("[31, 4], expected [32, 4]"), f.getMessage());
        f = assertThrows(SafetensorsFormatException.class, () -> SoftLabels.external(
                file("classes.safetensors", Map.of("logits", new TensorData(new long[] {32, 5}, new float[160])),
                        digest), train));
        assertTrue(f.getMessage().contains("expected [32, 4]"), f.getMessage());

        float[] nan = ok.clone();
        nan[4 * 7 + 2] = Float.NaN;
        e = assertThrows(IllegalArgumentException.class, () -> SoftLabels.external(file("nan.safetensors",
                Map.of("logits", new TensorData(new long[] {32, 4}, nan)), digest), train));
        assertTrue(e.getMessage().contains("image 7, class 2 has logit NaN"), e.getMessage());

        SoftLabels external = SoftLabels.external(file("good.safetensors", Map.of("logits", good), digest), train);
        TrainOptions soft = new TrainOptions().withEpochs(1).withBatch(BATCH).withSeed(5)
                .withDistillation(Distillation.SOFT, 0.5, 2.0);
        e = assertThrows(IllegalArgumentException.class, () -> external.checkFor(train, soft));
        assertTrue(e.getMessage().contains("train without augmentation") && !e.getMessage().contains("live"),
                e.getMessage());
        TrainOptions plain = soft.withAugment(false);
        external.checkFor(train, plain);
        // The run's own training set, after a limit, is another list: refused when the run starts.
        try (Backend be = CpuBackend.open(); VisionTransformer student = new VisionTransformer(be, STUDENT, BATCH, 3)) {
            e = assertThrows(IllegalArgumentException.class, () -> TrainingRun.builder(student, train, test)
                    .options(plain.withLimits(16, 0)).log(QUIET).teacher(external).run());
            assertTrue(e.getMessage().contains("cover 32 images") || e.getMessage().contains("sample list"),
                    e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> TrainingRun.builder(student, other, test)
                    .options(plain).log(QUIET).teacher(external).run());
            assertTrue(e.getMessage().contains("follow the sample list"), e.getMessage());
            assertFalse(e.getMessage().contains("null"), e.getMessage());
        }
    }
}
