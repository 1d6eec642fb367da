package org.distill4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.bytedeco.javacpp.Pointer;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.ops.Gelu;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.Test;

/**
 * Single-threaded objects (model, trainer, backend) refuse a second thread instead of mixing its results with the
 * first's (issue #15).
 */
class ThreadConfinementTest {
    private static final VitConfig SMALL = VitConfig.of(16, 4, 1, 4, 64, 1, 2, 2, true);
    private static final int BATCH = 8;

    @Test
    void aSecondThreadIsRefusedWhileTheFirstIsInside() throws Exception {
        ThreadConfinement c = new ThreadConfinement("the object");
        CountDownLatch inside = new CountDownLatch(1), done = new CountDownLatch(1);
        Thread holder = new Thread(() -> {
            c.enter();
            try {
                inside.countDown();
                done.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            } finally {
                c.exit();
            }
        }, "holder");
        holder.start();
        assertTrue(inside.await(10, TimeUnit.SECONDS));
        ConcurrentUseException e = assertThrows(ConcurrentUseException.class, c::enter);
        assertTrue(e.getMessage().contains("the object was called from thread '" + Thread.currentThread().getName()
                + "' while thread 'holder' was using it"), e.getMessage());
        done.countDown();
        holder.join();
        // Free again: this thread enters, and nested calls of one thread pass.
        c.enter();
        c.enter();
        c.exit();
        c.exit();
        assertThrows(IllegalStateException.class, c::exit);
    }

    /**
     * The backend itself: while one thread is inside a kernel call, an op or close() from another thread is refused
     * (close would free what the kernel reads); once it is out, another thread may use it.
     */
    @Test
    void aBackendRefusesASecondThreadWhileAKernelCallIsInside() throws Exception {
        try (Backend be = CpuBackend.open();
             Tensor x = Tensor.of(be, new float[] {-1f, 0f, 2f}, 3);
             Tensor y = Tensor.empty(be, 3)) {
            CountDownLatch inside = new CountDownLatch(1), done = new CountDownLatch(1);
            Thread holder = new Thread(() -> be.call("a held call", () -> {
                inside.countDown();
                try {
                    done.await();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                return 0;
            }), "holder");
            holder.start();
            assertTrue(inside.await(10, TimeUnit.SECONDS));
            ConcurrentUseException op = assertThrows(ConcurrentUseException.class, () -> Gelu.forward(x, y));
            assertTrue(op.getMessage().contains(be.name() + " was called from thread '"
                    + Thread.currentThread().getName() + "' while thread 'holder' was using it"), op.getMessage());
            assertThrows(ConcurrentUseException.class, be::close);
            done.countDown();
            holder.join();
            Gelu.forward(x, y);  // the backend was not closed, and this thread may use it now
            float[] out = y.toArray();
            assertEquals(0f, out[1]);
            assertTrue(out[2] > 1.9f && out[0] < 0f, Arrays.toString(out));
        }
    }

    @Test
    void twoThreadsPredictingOnOneModelNeverGetEachOthersOutputs() throws Exception {
        long seed = Check.freshSeed();
        int size = SMALL.channels() * SMALL.imageSize() * SMALL.imageSize();
        float[][] images = new float[2][BATCH * size];
        Random rng = new Random(seed);
        for (float[] x : images) for (int i = 0; i < x.length; i++) x[i] = (float) rng.nextGaussian();
        try (Backend be = CpuBackend.open(); VisionTransformer m = new VisionTransformer(be, SMALL, BATCH, seed)) {
            float[][] expected = {m.predict(images[0]), m.predict(images[1])};
            AtomicInteger refused = new AtomicInteger(), served = new AtomicInteger();
            ExecutorService pool = Executors.newFixedThreadPool(2);
            try {
                List<Future<?>> runs = new ArrayList<>();
                for (int t = 0; t < 2; t++) {
                    final int which = t;
                    runs.add(pool.submit(() -> {
                        for (int k = 0; k < 200; k++) {
                            try {
                                // Before the guard, 85 of 400 outputs were the other thread's (or a mix).
                                assertArrayEquals(expected[which], m.predict(images[which]), "seed " + seed);
                                served.incrementAndGet();
                            } catch (ConcurrentUseException e) {
                                refused.incrementAndGet();
                            }
                        }
                        return null;
                    }));
                }
                for (Future<?> f : runs) f.get(120, TimeUnit.SECONDS);
            } finally {
                pool.shutdownNow();
            }
            assertEquals(400, served.get() + refused.get());
            System.out.println("predict from 2 threads: " + served.get() + " served, " + refused.get() + " refused");
        }
    }

    @Test
    void theLiveAllocationCountIsExactUnderConcurrency() throws Exception {
        try (Backend be = CpuBackend.open()) {
            long before = be.liveAllocations();
            ExecutorService pool = Executors.newFixedThreadPool(2);
            try {
                List<Future<?>> runs = new ArrayList<>();
                for (int t = 0; t < 2; t++) {
                    runs.add(pool.submit(() -> {
                        for (int k = 0; k < 20_000; k++) {
                            Pointer p = be.allocate(16);
                            be.free(p);
                        }
                        return null;
                    }));
                }
                for (Future<?> f : runs) f.get(120, TimeUnit.SECONDS);
            } finally {
                pool.shutdownNow();
            }
            assertEquals(before, be.liveAllocations(), "2 threads x 20,000 allocate/free");
        }
    }
}
