package org.distill4j.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(value = 60, unit = TimeUnit.SECONDS)
class StreamLoaderTest {
    /**
     * Image i holds i·1000 + position in channel 0 and its negation in channel 1 (two channels, black −0.5 and
     * −0.25), label i % classes; decodes are counted, may sleep a random while (so workers finish out of order), and
     * the indices in {@code bad} fail as undecodable files.
     */
    static final class Counting implements ImageSource {
        final int n, classes, h = 4, w = 3;
        final AtomicInteger decodes = new AtomicInteger();
        final Set<Integer> bad;
        final int maxSleepMicros;

        Counting(int n, int classes, int maxSleepMicros, Set<Integer> bad) {
            this.n = n;
            this.classes = classes;
            this.maxSleepMicros = maxSleepMicros;
            this.bad = bad;
        }

        @Override
        public int size() {
            return n;
        }

        @Override
        public int channels() {
            return 2;
        }

        @Override
        public int height() {
            return h;
        }

        @Override
        public int width() {
            return w;
        }

        @Override
        public int classes() {
            return classes;
        }

        @Override
        public int label(int index) {
            return index % classes;
        }

        @Override
        public void copyImage(int index, float[] dst, int offset) throws IOException {
            decodes.incrementAndGet();
            if (maxSleepMicros > 0) {
                try {
                    TimeUnit.MICROSECONDS.sleep(ThreadLocalRandom.current().nextInt(maxSleepMicros));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IOException("interrupted", e);
                }
            }
            if (bad.contains(index)) throw new BadImageException(Path.of("img" + index + ".png"), "corrupt");
            for (int p = 0; p < h * w; p++) {
                dst[offset + p] = index * 1000 + p;
                dst[offset + h * w + p] = -(index * 1000 + p);
            }
        }

        @Override
        public String name() {
            return "counting";
        }

        @Override
        public Normalization normalization() {
            return new Normalization(new float[] {0.5f, 0.25f}, new float[] {1f, 1f});
        }
    }

    private record Seen(float[] images, int[] labels, int[] indices, int size, int epoch, int index) {}

    private static List<Seen> drain(StreamLoader loader) {
        List<Seen> out = new ArrayList<>();
        while (loader.hasNext()) {
            BatchLoader.Batch b = loader.next();
            out.add(new Seen(b.images().clone(), Arrays.copyOf(b.labels(), b.size()),
                    Arrays.copyOf(b.indices(), b.size()), b.size(), b.epoch(), b.index()));
        }
        return out;
    }

    private static List<Seen> run(ImageSource src, int workers, int prefetch) {
        try (StreamLoader loader = StreamLoader.builder(src, 7).seed(11).dropLast(false).epochs(3).workers(workers)
                .prefetch(prefetch).augment(new Augment(5, 1, true)).build()) {
            return drain(loader);
        }
    }

    @Test
    void sameBatchesWhateverTheWorkerCount() {
        Counting src = new Counting(40, 3, 300, Set.of());
        List<Seen> one = run(src, 1, 2), three = run(src, 3, 2), four = run(src, 4, 6);
        assertEquals(3 * 6, one.size(), "3 epochs of ⌈40/7⌉ batches");
        for (List<Seen> other : List.of(three, four)) {
            for (int k = 0; k < one.size(); k++) {
                Seen a = one.get(k), b = other.get(k);
                assertEquals(a.epoch(), b.epoch());
                assertEquals(a.index(), b.index());
                assertEquals(a.size(), b.size());
                assertArrayEquals(a.indices(), b.indices(), "batch " + k);
                assertArrayEquals(a.labels(), b.labels(), "batch " + k);
                assertArrayEquals(Arrays.copyOf(a.images(), a.size() * 24), Arrays.copyOf(b.images(), b.size() * 24),
                        "batch " + k);
            }
        }
        // Each epoch is a permutation of all 40 images (the last batch holds 40 − 5·7 = 5), and epochs differ.
        for (int e = 0; e < 3; e++) {
            int[] seen = new int[40];
            for (Seen s : one.subList(e * 6, e * 6 + 6)) for (int i : s.indices()) seen[i]++;
            for (int i = 0; i < 40; i++) assertEquals(1, seen[i], "epoch " + e + " image " + i);
        }
        assertEquals(5, one.get(5).size());
        assertFalse(Arrays.equals(one.get(0).indices(), one.get(6).indices()));
    }

    @Test
    void augmentedImagesAreTheSourceImagesShiftedAndPaddedPerChannel() {
        Counting src = new Counting(21, 4, 0, Set.of());
        Augment aug = new Augment(5, 1, true);
        List<Seen> batches;
        try (StreamLoader loader = StreamLoader.builder(src, 7).seed(2).epochs(1).workers(2).augment(aug).build()) {
            batches = drain(loader);
        }
        int h = 4, w = 3;
        for (Seen s : batches) {
            for (int i = 0; i < s.size(); i++) {
                int idx = s.indices()[i];
                Augment.Params p = aug.params(s.epoch(), idx);
                for (int y = 0; y < h; y++) {
                    for (int x = 0; x < w; x++) {
                        int ox = p.flipped() ? w - 1 - x : x, sy = y + p.dy(), sx = x + p.dx();
                        boolean inside = sy >= 0 && sy < h && sx >= 0 && sx < w;
                        float want0 = inside ? idx * 1000 + sy * w + sx : -0.5f;
                        float want1 = inside ? -(idx * 1000 + sy * w + sx) : -0.25f;
                        assertEquals(want0, s.images()[i * 24 + y * w + ox], "image " + idx + " (" + y + "," + x + ")");
                        assertEquals(want1, s.images()[i * 24 + 12 + y * w + ox]);
                    }
                }
                assertEquals(idx % 4, s.labels()[i]);
            }
        }
    }

    @Test
    void matchesTheInMemoryBatchLoaderOnTheSameData() throws IOException {
        Counting src = new Counting(30, 5, 0, Set.of());
        Dataset mem = StreamLoader.materialize(src, 3);
        for (int i = 0; i < 30; i++) {
            assertEquals(i % 5, mem.label(i));
            assertEquals(i * 1000 + 11, mem.images()[i * 24 + 11]);
            assertEquals(-(i * 1000), mem.images()[i * 24 + 12]);
        }
        assertEquals(-0.25f, mem.black(1));
        // The padded crop, and the resized crop (which the stream asks the source for, then flips).
        for (Augment aug : List.of(new Augment(9, 1, true),
                Augment.resizedCrop(9, new RandomResizedCrop(3, 0.2, 1, 0.5, 2), true))) {
            List<Seen> streamed;
            try (StreamLoader s = StreamLoader.builder(src, 4).seed(7).epochs(2).workers(3).augment(aug).build()) {
                streamed = drain(s);
            }
            try (BatchLoader b = BatchLoader.builder(mem, 4).seed(7).epochs(2).augment(aug).build()) {
                for (Seen s : streamed) {
                    BatchLoader.Batch m = b.next();
                    assertArrayEquals(Arrays.copyOf(m.indices(), 4), s.indices());
                    assertArrayEquals(Arrays.copyOf(m.images(), 96), Arrays.copyOf(s.images(), 96), aug.toString());
                }
                assertFalse(b.hasNext());
            }
        }
    }

    @Test
    void memoryIsBoundedByTheQueueNotTheDataset() throws InterruptedException {
        // 10,000 images, batches of 4, prefetch 2, 3 workers: at most max(consumed, 1) + prefetch batches are ever
        // decoded.
        Counting src = new Counting(10_000, 10, 0, Set.of());
        int b = 4, prefetch = 2;
        try (StreamLoader loader = StreamLoader.builder(src, b).prefetch(prefetch).workers(3).build()) {
            assertEquals((long) (prefetch + 1) * b * 24, loader.bufferFloats());
            for (int consumed = 0; consumed <= 5; consumed++) {
                if (consumed > 0) loader.next();
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
                // Buffers: prefetch + 1; all are filled before the first next(), then one is held by the consumer.
                int bound = (Math.max(consumed, 1) + prefetch) * b;
                // The workers fill every free buffer ahead (prefetch really happens) and not one image more.
                while (src.decodes.get() < bound && System.nanoTime() < deadline) Thread.sleep(5);
                Thread.sleep(100);
                assertEquals(bound, src.decodes.get(), "decoded images after consuming " + consumed + " batches");
            }
        }
    }

    @Test
    void aBadImageStopsTheStreamAtItsBatchNamingTheFile() {
        Counting src = new Counting(20, 2, 0, Set.of(6));
        try (StreamLoader loader = StreamLoader.builder(src, 4).shuffle(false).workers(3).epochs(1).build()) {
            BatchLoader.Batch first = loader.next(); // images 0..3 are fine
            assertArrayEquals(new int[] {0, 1, 2, 3}, Arrays.copyOf(first.indices(), 4));
            IllegalStateException e = assertThrows(IllegalStateException.class, loader::next); // 4..7 holds image 6
            assertInstanceOf(BadImageException.class, e.getCause());
            assertTrue(e.getMessage().contains("img6.png") && e.getMessage().contains("epoch 0 batch 1"),
                    e.getMessage());
            assertThrows(IllegalStateException.class, loader::next, "stays failed");
        }
    }

    @Test
    void skipBadImagesTakesTheNextGoodImageLogsOnceAndCounts() {
        Counting src = new Counting(20, 3, 0, Set.of(6, 7, 19));
        ByteArrayOutputStream log = new ByteArrayOutputStream();
        List<Seen> seen;
        try (StreamLoader loader = StreamLoader.builder(src, 4).shuffle(false).workers(2).epochs(2)
                .skipBadImages(new PrintStream(log, true, StandardCharsets.UTF_8)).build()) {
            seen = drain(loader);
            assertEquals(3, loader.badImages());
        }
        // Order 0..19: batch 1 wants 4, 5, 6, 7 → 6 and 7 are replaced by the next good ones of the order, 8 and 8;
        // batch 4 wants 16..19 → 19 wraps around to image 0.
        assertArrayEquals(new int[] {4, 5, 8, 8}, seen.get(1).indices());
        assertArrayEquals(new int[] {4 % 3, 5 % 3, 8 % 3, 8 % 3}, seen.get(1).labels(), "the replacement's label");
        assertArrayEquals(new int[] {16, 17, 18, 0}, seen.get(4).indices());
        assertEquals(8000f, seen.get(1).images()[2 * 24]);
        String text = log.toString(StandardCharsets.UTF_8);
        for (String f : new String[] {"img6.png", "img7.png", "img19.png"}) {
            assertEquals(1, text.split(f, -1).length - 1, f + " logged once over two epochs: " + text);
        }
    }

    @Test
    void closeEndsTheWorkers() throws InterruptedException {
        Counting src = new Counting(1000, 10, 100, Set.of());
        StreamLoader loader = StreamLoader.builder(src, 8).workers(3).build();
        loader.next();
        loader.close();
        for (Thread t : loader.threads()) {
            t.join(5000);
            assertFalse(t.isAlive(), t.getName());
        }
        assertThrows(IllegalStateException.class, loader::next);
    }
}
