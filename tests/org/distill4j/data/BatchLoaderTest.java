package org.distill4j.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.NoSuchElementException;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(value = 60, unit = TimeUnit.SECONDS)
class BatchLoaderTest {
    /** Image i is filled with the value i, label i % classes: a batch says which samples it holds. */
    private static Dataset indexed(int n, int classes) {
        int h = 3, w = 2;
        float[] images = new float[n * h * w];
        int[] labels = new int[n];
        for (int i = 0; i < n; i++) {
            Arrays.fill(images, i * h * w, (i + 1) * h * w, i);
            labels[i] = i % classes;
        }
        return new Dataset("indexed", images, labels, 1, h, w, classes, 0f, 1f);
    }

    /** Consumes {@code epochs} epochs, checking every batch's contents, and returns each epoch's order. */
    private static List<int[]> drain(BatchLoader loader, int epochs) {
        Dataset d = loader.dataset();
        int size = d.imageSize();
        List<int[]> orders = new ArrayList<>();
        for (int e = 0; e < epochs; e++) {
            int[] order = new int[loader.batchesPerEpoch() * loader.batchSize()];
            int seen = 0;
            for (int b = 0; b < loader.batchesPerEpoch(); b++) {
                BatchLoader.Batch batch = loader.next();
                assertEquals(b, batch.index());
                for (int i = 0; i < batch.size(); i++) {
                    int idx = batch.indices()[i];
                    assertEquals(idx, batch.images()[i * size], "image " + i + " of " + batch);
                    assertEquals(idx, batch.images()[i * size + size - 1]);
                    assertEquals(d.label(idx), batch.labels()[i]);
                    order[seen++] = idx;
                }
            }
            orders.add(Arrays.copyOf(order, seen));
        }
        return orders;
    }

    @Test
    void everyIndexExactlyOncePerEpochAndOrderChanges() {
        Dataset d = indexed(100, 10);
        try (BatchLoader loader = BatchLoader.builder(d, 10).seed(1).epochs(3).build()) {
            assertEquals(10, loader.batchesPerEpoch());
            List<int[]> orders = drain(loader, 3);
            for (int[] order : orders) {
                int[] sorted = order.clone();
                Arrays.sort(sorted);
                int[] all = new int[100];
                Arrays.setAll(all, i -> i);
                assertArrayEquals(all, sorted, "a permutation of 0..99");
            }
            assertFalse(Arrays.equals(orders.get(0), orders.get(1)));
            assertFalse(Arrays.equals(orders.get(1), orders.get(2)));
            assertArrayEquals(loader.order(2), orders.get(2));
            assertFalse(loader.hasNext());
            assertThrows(NoSuchElementException.class, loader::next);
        }
    }

    @Test
    void sameSeedSameOrderOtherSeedOtherOrder() {
        Dataset d = indexed(64, 4);
        List<int[]> a, b, c;
        try (BatchLoader l = BatchLoader.builder(d, 8).seed(7).epochs(2).build()) {
            a = drain(l, 2);
        }
        try (BatchLoader l = BatchLoader.builder(d, 8).seed(7).epochs(2).build()) {
            b = drain(l, 2);
        }
        try (BatchLoader l = BatchLoader.builder(d, 8).seed(8).epochs(2).build()) {
            c = drain(l, 2);
        }
        assertArrayEquals(a.get(0), b.get(0));
        assertArrayEquals(a.get(1), b.get(1));
        assertFalse(Arrays.equals(a.get(0), c.get(0)));
    }

    @Test
    void resumeReproducesTheUninterruptedRun() {
        Dataset d = Synthetic.dataset(1, 50, 5, 8, 8);
        Augment aug = new Augment(3, 2, true);
        List<float[]> full = new ArrayList<>();
        try (BatchLoader l = BatchLoader.builder(d, 8).seed(5).augment(aug).epochs(3).build()) {
            while (l.hasNext()) {
                full.add(l.next().images().clone());
            }
        }
        assertEquals(3 * 6, full.size());
        // Start at epoch 1, batch 4 without having seen anything before: same batches from there on.
        try (BatchLoader l = BatchLoader.builder(d, 8).seed(5).augment(aug).start(1, 4).epochs(2).build()) {
            int k = 6 + 4;
            while (l.hasNext()) {
                BatchLoader.Batch b = l.next();
                assertArrayEquals(full.get(k), b.images(), "batch " + b);
                k++;
            }
            assertEquals(full.size(), k);
        }
    }

    @Test
    void lastPartialBatchDroppedOrKept() {
        Dataset d = indexed(25, 5);
        try (BatchLoader l = BatchLoader.builder(d, 10).epochs(1).build()) {
            assertEquals(2, l.batchesPerEpoch());
            assertEquals(20, drain(l, 1).get(0).length);
        }
        try (BatchLoader l = BatchLoader.builder(d, 10).dropLast(false).epochs(1).build()) {
            assertEquals(3, l.batchesPerEpoch());
            l.next();
            l.next();
            BatchLoader.Batch last = l.next();
            assertEquals(5, last.size());
            assertEquals(10 * d.imageSize(), last.images().length, "buffers keep the full batch shape");
        }
        try (BatchLoader l = BatchLoader.builder(d, 10).shuffle(false).dropLast(false).epochs(1).build()) {
            int[] order = drain(l, 1).get(0);
            int[] identity = new int[25];
            Arrays.setAll(identity, i -> i);
            assertArrayEquals(identity, order, "no shuffle: dataset order");
        }
        assertThrows(IllegalArgumentException.class, () -> BatchLoader.builder(d, 26).build());
    }

    @Test
    void buffersAreRecycledNotReallocated() {
        Dataset d = indexed(40, 2);
        try (BatchLoader l = BatchLoader.builder(d, 4).epochs(2).build()) {
            List<BatchLoader.Batch> seen = new ArrayList<>();
            while (l.hasNext()) {
                BatchLoader.Batch b = l.next();
                if (seen.stream().noneMatch(s -> s == b)) {
                    seen.add(b);
                }
            }
            assertEquals(2, seen.size(), "double buffering: two batch objects for 20 batches");
        }
    }

    @Test
    void consumerDoesNotWaitWhenTheProducerIsAhead() throws InterruptedException {
        Dataset d = indexed(400, 2);
        try (BatchLoader l = BatchLoader.builder(d, 10).epochs(1).build()) {
            l.next();
            long waited = l.waitNanos();
            for (int i = 1; i < l.batchesPerEpoch(); i++) {
                Thread.sleep(5); // a "training step" much slower than filling a batch of 10 tiny images
                l.next();
            }
            assertTrue(l.waitNanos() - waited < TimeUnit.MILLISECONDS.toNanos(150),
                    "waited " + (l.waitNanos() - waited) / 1e6 + " ms over 39 steps");
        }
    }

    @Test
    void producerExceptionSurfacesInConsumer() {
        Dataset d = indexed(40, 2);
        RuntimeException boom = new RuntimeException("boom");
        try (BatchLoader l = BatchLoader.builder(d, 4).epochs(3).transform(b -> {
            if (b.epoch() == 1 && b.index() == 3) {
                throw boom;
            }
        }).build()) {
            for (int i = 0; i < 10 + 3; i++) {
                l.next();
            }
            IllegalStateException e = assertThrows(IllegalStateException.class, l::next);
            assertSame(boom, e.getCause());
            assertTrue(e.getMessage().contains("epoch 1 batch 3"), e.getMessage());
            // Asking again gives the same answer instead of hanging.
            e = assertThrows(IllegalStateException.class, l::next);
            assertSame(boom, e.getCause());
        }
    }

    @Test
    void checkedAndErrorThrowablesSurfaceToo() {
        Dataset d = indexed(8, 2);
        try (BatchLoader l = BatchLoader.builder(d, 4).transform(b -> {
            throw new java.io.IOException("disk gone");
        }).build()) {
            IllegalStateException e = assertThrows(IllegalStateException.class, l::next);
            assertInstanceOf(java.io.IOException.class, e.getCause());
        }
    }

    @Test
    void closeStopsTheThreadEvenWhenTheProducerIsBlocked() throws InterruptedException {
        Dataset d = indexed(100, 2);
        BatchLoader l = BatchLoader.builder(d, 10).build(); // unbounded epochs: the producer fills and blocks
        Thread t = l.thread();
        assertTrue(t.isAlive());
        assertTrue(t.isDaemon());
        l.next();
        Thread.sleep(50);
        l.close();
        assertFalse(t.isAlive(), "producer thread ended");
        assertThrows(IllegalStateException.class, l::next);
        assertFalse(l.hasNext());
        l.close(); // idempotent
    }

    @Test
    void closeStopsAProducerBlockedInsideATransform() throws InterruptedException {
        Dataset d = indexed(100, 2);
        CountDownLatch entered = new CountDownLatch(1);
        BatchLoader l = BatchLoader.builder(d, 10).transform(b -> {
            entered.countDown();
            Thread.sleep(60_000); // interrupted by close()
        }).build();
        assertTrue(entered.await(10, TimeUnit.SECONDS));
        l.close();
        assertFalse(l.thread().isAlive());
    }

    @Test
    void interruptedConsumerGetsAnExceptionAndKeepsItsFlag() throws InterruptedException {
        Dataset d = indexed(100, 2);
        CountDownLatch never = new CountDownLatch(1);
        try (BatchLoader l = BatchLoader.builder(d, 10).transform(b -> never.await()).build()) {
            Thread.currentThread().interrupt();
            IllegalStateException e = assertThrows(IllegalStateException.class, l::next);
            assertInstanceOf(InterruptedException.class, e.getCause());
            assertTrue(Thread.interrupted(), "flag restored (and cleared here)");
        }
    }

    @Test
    void ordersDependOnlyOnSeedAndEpoch() {
        int[] e5 = BatchLoader.order(1000, 3, 5, true);
        assertArrayEquals(e5, BatchLoader.order(1000, 3, 5, true));
        assertNotEquals(Arrays.toString(e5), Arrays.toString(BatchLoader.order(1000, 3, 4, true)));
        // The naive seed ^ epoch would make these two equal.
        assertFalse(Arrays.equals(BatchLoader.order(1000, 0, 1, true), BatchLoader.order(1000, 1, 0, true)));
    }
}
