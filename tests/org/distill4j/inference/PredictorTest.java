package org.distill4j.inference;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.distill4j.Device;
import org.distill4j.Precision;
import org.distill4j.backend.Backend;
import org.distill4j.backend.Backends;
import org.distill4j.nn.ModelFile;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A model file served to many threads: each image gets what the model's own {@code predict} gives it in a batch of
 * the predictor's size, whatever call, batch position or replica it lands in; close waits for running calls.
 */
class PredictorTest {
    // RGB, 5 classes, two blocks, distilled: predict averages two heads.
    private static final VitConfig SMALL = VitConfig.of(16, 4, 3, 5, 32, 2, 1, 2, true);

    @TempDir
    Path dir;

    private Path savedModel(long seed) throws IOException {
        Path file = dir.resolve("model-" + Long.toHexString(seed) + ".safetensors");
        try (Backend cpu = Backends.open(Device.cpu()); VisionTransformer m = new VisionTransformer(cpu, SMALL, 1, seed)) {
            ModelFile.save(file, m);
        }
        return file;
    }

    private static int floats() {
        return SMALL.channels() * SMALL.imageSize() * SMALL.imageSize();
    }

    /** A model of {@code file} on its own backend, to compute what the predictor must return. */
    private record Reference(Backend backend, VisionTransformer model) implements AutoCloseable {
        static Reference open(Path file, Device device, Precision precision, int batch) throws IOException {
            Backend be = Backends.open(device);
            try {
                VisionTransformer m = new VisionTransformer(be, SMALL, batch, 1, precision);
                ModelFile.load(file, m);
                return new Reference(be, m);
            } catch (IOException | RuntimeException e) {
                be.close();
                throw e;
            }
        }

        /**
         * The contract: the model's own {@code predict} on consecutive batches of the {@code n} images, the last
         * padded with zero images.
         */
        float[] logits(float[] images, int n) {
            int size = floats(), c = SMALL.classes(), batch = model.batch();
            float[] out = new float[n * c];
            for (int first = 0; first < n; first += batch) {
                int count = Math.min(batch, n - first);
                float[] chunk = new float[batch * size];
                System.arraycopy(images, first * size, chunk, 0, count * size);
                System.arraycopy(model.predict(chunk), 0, out, first * c, count * c);
            }
            for (float v : out) assertTrue(Float.isFinite(v), "reference logits " + Arrays.toString(out));
            return out;
        }

        @Override
        public void close() {
            model.close();
            backend.close();
        }
    }

    private static float[] images(float[] all, int first, int n) {
        return Arrays.copyOfRange(all, first * floats(), (first + n) * floats());
    }

    @Test
    void aCallIsTheModelsPredictionInBatchesOfTheGivenSize() throws Exception {
        long seed = Check.freshSeed();
        Path file = savedModel(seed);
        int n = 11, batch = 4, size = floats(), c = SMALL.classes();
        float[] all = Check.normal(new Random(seed), n * size, 1.0);
        for (Precision p : new Precision[] {Precision.FP32, Precision.BF16}) {
            try (Reference ref = Reference.open(file, Device.cpu(), p, batch);
                 Predictor pr = Predictor.open(file, Device.cpu(), 2, batch, p)) {
                assertEquals(SMALL, pr.config());
                assertEquals(size, pr.imageFloats());
                // Whole batches and a padded tail, a single image, one image short of a batch, one past it.
                for (int[] call : new int[][] {{0, 11}, {0, 1}, {5, 3}, {2, 4}, {6, 5}, {10, 1}}) {
                    float[] part = images(all, call[0], call[1]), want = ref.logits(part, call[1]);
                    String what = "seed=" + seed + " " + p + " images " + call[0] + ".." + (call[0] + call[1] - 1);
                    assertArrayEquals(want, pr.logits(part, call[1]), what);
                    int[] classes = pr.classes(part, call[1]);
                    for (int i = 0; i < call[1]; i++) {
                        assertEquals(argmax(Arrays.copyOfRange(want, i * c, (i + 1) * c)), classes[i], what);
                    }
                }
                // An array longer than n images: the rest is ignored.
                assertArrayEquals(ref.logits(all, 2), pr.logits(all, 2), "seed=" + seed + " " + p + " n < the array");
                // Image 8 first in the third batch, with zeros beside it or with images 9 and 10: the same bits.
                float[] beside = pr.logits(all, n), alone = pr.logits(all, 9);
                assertArrayEquals(Arrays.copyOfRange(alone, 8 * c, 9 * c), Arrays.copyOfRange(beside, 8 * c, 9 * c),
                        "seed=" + seed + " " + p + " image 8 beside others");
            }
        }
    }

    private static int argmax(float[] v) {
        int best = 0;
        for (int i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
        return best;
    }

    private record Call(int first, int n, float[] got) {}

    @Test
    void manyThreadsEachGetTheirOwnCallsResult() throws Exception {
        for (Device device : new Device[] {Device.cpu(), Device.cudaEmu()}) {
            long seed = Check.freshSeed();
            Path file = savedModel(seed);
            Random rng = new Random(seed);
            int pool = 12, batch = 3, threads = 5;
            int calls = device.kind() == Device.Kind.CPU ? 8 : 2;  // the emulator runs a thread per CUDA thread
            float[] all = Check.normal(rng, pool * floats(), 1.0);
            List<Call> made = Collections.synchronizedList(new ArrayList<>());
            ExecutorService ex = Executors.newFixedThreadPool(threads);
            try (Predictor pr = Predictor.open(file, device, 2, batch)) {
                List<Future<?>> futures = new ArrayList<>();
                for (int t = 0; t < threads; t++) {
                    long s = rng.nextLong();
                    futures.add(ex.submit(() -> {
                        Random r = new Random(s);
                        for (int k = 0; k < calls; k++) {
                            int n = 1 + r.nextInt(7), first = r.nextInt(pool - n + 1);
                            made.add(new Call(first, n, pr.logits(images(all, first, n), n)));
                        }
                        return null;
                    }));
                }
                for (Future<?> f : futures) f.get(10, TimeUnit.MINUTES);
            } finally {
                ex.shutdownNow();
            }
            assertEquals(threads * calls, made.size(), device.toString());
            try (Reference ref = Reference.open(file, device, Precision.FP32, batch)) {
                for (Call k : made) {
                    assertArrayEquals(ref.logits(images(all, k.first, k.n), k.n), k.got, "seed=" + seed + " "
                            + device + " images " + k.first + ".." + (k.first + k.n - 1));
                }
            }
        }
    }

    @Test
    void closeWaitsForTheRunningCallsAndRefusesTheRest() throws Exception {
        long seed = Check.freshSeed();
        Path file = savedModel(seed);
        int n = 9, batch = 2, threads = 4;  // 5 batches a call: close lands inside one
        float[] all = Check.normal(new Random(seed), n * floats(), 1.0);
        float[] want;
        try (Reference ref = Reference.open(file, Device.cpu(), Precision.FP32, batch)) {
            want = ref.logits(all, n);
        }
        AtomicInteger finished = new AtomicInteger(), refused = new AtomicInteger();
        ExecutorService ex = Executors.newFixedThreadPool(threads);
        Predictor pr = Predictor.open(file, Device.cpu(), 1, batch);
        try {
            List<Future<?>> futures = new ArrayList<>();
            for (int t = 0; t < threads; t++) {
                futures.add(ex.submit(() -> {
                    while (true) {
                        float[] got;
                        try {
                            got = pr.logits(all, n);
                        } catch (IllegalStateException e) {
                            // The predictor's refusal, not the freed model's ("the model ... is closed").
                            assertTrue(e.getMessage().startsWith("the predictor of "), e.getMessage());
                            refused.incrementAndGet();
                            return null;
                        }
                        assertArrayEquals(want, got, "seed=" + seed + " a call that ran while closing");
                        finished.incrementAndGet();
                    }
                }));
            }
            while (finished.get() < 3 && futures.stream().noneMatch(Future::isDone)) Thread.sleep(5);
            pr.close();
            for (Future<?> f : futures) f.get(5, TimeUnit.MINUTES);
        } finally {
            ex.shutdownNow();
        }
        assertEquals(threads, refused.get());
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> pr.logits(all, 1));
        assertTrue(e.getMessage().startsWith("the predictor of "), e.getMessage());
        pr.close();  // twice: harmless
    }

    @Test
    void badInputIsAClearException() throws Exception {
        Path file = savedModel(7);
        int size = floats();
        try (Predictor pr = Predictor.open(file, Device.cpu(), 1, 2)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> pr.logits(new float[size], 0));
            assertTrue(e.getMessage().contains("n must be >= 1, got 0"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> pr.logits(new float[2 * size - 1], 2));
            assertTrue(e.getMessage().contains("2 images of " + size + " floats need " + 2 * size + ", got "
                    + (2 * size - 1)), e.getMessage());
            float[] bad = new float[3 * size];
            bad[size + 5] = Float.NaN;
            e = assertThrows(IllegalArgumentException.class, () -> pr.logits(bad, 3));
            assertTrue(e.getMessage().contains("image 1 holds NaN at element 5"), e.getMessage());
            bad[size + 5] = 0;
            bad[2 * size + size - 1] = Float.NEGATIVE_INFINITY;
            e = assertThrows(IllegalArgumentException.class, () -> pr.classes(bad, 3));
            assertTrue(e.getMessage().contains("image 2 holds -Infinity at element " + (size - 1)), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> pr.logits(null, 1));
            // The predictor still works after refusing.
            assertEquals(2 * SMALL.classes(), pr.logits(new float[2 * size], 2).length);
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Predictor.open(file, Device.cpu(), 0, 2));
        assertTrue(e.getMessage().contains("replicas must be >= 1, got 0"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Predictor.open(file, Device.cpu(), 1, 0));
        assertTrue(e.getMessage().contains("batch must be >= 1, got 0"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Predictor.open(file, Device.cpu(), 1, 3_000_000));
        assertTrue(e.getMessage().contains("a batch of 3000000 images") && e.getMessage().contains("2304000000 floats"),
                e.getMessage());
        assertThrows(NoSuchFileException.class, () -> Predictor.open(dir.resolve("missing.safetensors"), Device.cpu(),
                1, 1));
        Path notAModel = Files.write(dir.resolve("text.safetensors"), "not a model".getBytes());
        assertThrows(IOException.class, () -> Predictor.open(notAModel, Device.cpu(), 2, 1));
    }
}
