package org.distill4j.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.distill4j.Device;
import org.distill4j.nn.Parameter;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.Test;

/**
 * A backend used from threads other than the one that opened it, on a device other than 0: CUDA's current device
 * belongs to the host thread, so every call must make the backend's device current first (distill4j.h, "Threads
 * and devices"). Run on the emulated CUDA kernels, whose emulator has two devices, a current device per thread and
 * memory tagged with its device: a kernel launched with the wrong device current on memory of the other fails, as a
 * card without peer access faults. The model's logits and every parameter gradient are compared with the CPU
 * backend's on the same parameters and batch (within 1e-4 relative, VisionTransformerTest's bound for the same
 * comparison), fresh random inputs each run.
 */
class DeviceThreadsTest {
    private static final double TOL = 1e-4;
    // One encoder block, dim 64, 2 heads: every op of the model, small enough to emulate quickly.
    private static final VitConfig CONFIG = VitConfig.of(28, 7, 1, 10, 64, 1, 2, 2, true);
    private static final int BATCH = 2;

    /** What one run of the model produced: logits, distillation logits, every gradient (parameter order). */
    private record Outputs(float[] logits, float[] distLogits, List<float[]> grads) {}

    /** The inputs of one comparison and the CPU backend's outputs for them. */
    private record Case(long seed, float[][] params, float[] images, float[] dLogits, float[] dDist, Outputs cpu) {}

    private static Case newCase() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        float[] images = Check.normal(rng, BATCH * CONFIG.channels() * CONFIG.imageSize() * CONFIG.imageSize(), 1.0);
        float[] dLogits = Check.normal(rng, BATCH * CONFIG.classes(), 1.0);
        float[] dDist = Check.normal(rng, BATCH * CONFIG.classes(), 1.0);
        try (Backend cpu = CpuBackend.open(); VisionTransformer m = new VisionTransformer(cpu, CONFIG, BATCH, seed)) {
            float[][] params = new float[m.parameters().size()][];
            for (int i = 0; i < params.length; ++i) params[i] = m.parameters().get(i).value().toArray();
            return new Case(seed, params, images, dLogits, dDist, run(m, images, dLogits, dDist));
        }
    }

    private static Outputs run(VisionTransformer m, float[] images, float[] dLogits, float[] dDist) {
        m.zeroGrad();
        m.forward(images);
        m.logitsGrad().copyFrom(dLogits);
        m.distLogitsGrad().copyFrom(dDist);
        m.backward();
        List<float[]> grads = new ArrayList<>();
        for (Parameter p : m.parameters()) grads.add(p.grad().toArray());
        return new Outputs(m.logits().toArray(), m.distLogits().toArray(), grads);
    }

    /** Builds the model on {@code backend} with the case's parameters, on the calling thread. */
    private static VisionTransformer build(Backend backend, Case c) {
        VisionTransformer m = new VisionTransformer(backend, CONFIG, BATCH, c.seed() + 1);
        for (int i = 0; i < c.params().length; ++i) m.parameters().get(i).value().copyFrom(c.params()[i]);
        return m;
    }

    private static void assertMatchesCpu(Outputs got, Case c, String what) {
        String where = what + " (seed " + c.seed() + ")";
        double worst = Check.relErr(got.logits(), c.cpu().logits());
        assertTrue(worst <= TOL, "logits: rel err " + worst + ", " + where);
        double e = Check.relErr(got.distLogits(), c.cpu().distLogits());
        assertTrue(e <= TOL, "dist logits: rel err " + e + ", " + where);
        worst = Math.max(worst, e);
        for (int i = 0; i < got.grads().size(); ++i) {
            e = Check.relErr(got.grads().get(i), c.cpu().grads().get(i));
            assertTrue(e <= TOL, "gradient " + i + ": rel err " + e + ", " + where);
            worst = Math.max(worst, e);
        }
        System.out.println("DeviceThreadsTest " + where + ": max rel err " + worst + " over logits and "
                + got.grads().size() + " gradients");
    }

    private static <T> T on(ExecutorService thread, Callable<T> task) throws Exception {
        try {
            return thread.submit(task).get();
        } catch (ExecutionException e) {
            throw e.getCause() instanceof Exception ex ? ex : new RuntimeException(e.getCause());
        }
    }

    private static void close(VisionTransformer m) {
        Backend backend = m.backend();
        m.close();
        backend.close();
    }

    /**
     * The case: cuda-emu:1 opened on one thread, a model built there and run on another. Beside it a second
     * model on the same backend built on a third thread (its memory allocated where the backend was never opened:
     * the allocations must switch to device 1 too), also run on the other thread; then both again where they began.
     */
    @Test
    void emulatedDevice1BuiltOnOneThreadRunsOnAnother() throws Exception {
        Case c = newCase();
        ExecutorService opener = Executors.newSingleThreadExecutor(), builder = Executors.newSingleThreadExecutor(),
                runner = Executors.newSingleThreadExecutor();
        List<VisionTransformer> models = new ArrayList<>();
        Backend backend = on(opener, () -> Backends.open(Device.cudaEmu(1)));
        try {
            models.add(on(opener, () -> build(backend, c)));
            models.add(on(builder, () -> build(backend, c)));
            String[] where = {"built on the thread that opened it", "built on a third thread"};
            for (int i = 0; i < 2; ++i) {
                VisionTransformer m = models.get(i);
                Outputs got = on(runner, () -> run(m, c.images(), c.dLogits(), c.dDist()));
                assertMatchesCpu(got, c, "cuda-emu:1 " + where[i] + ", run on another");
                // Back on the thread that built it, after the other: each call sets the device again.
                got = on(i == 0 ? opener : builder, () -> run(m, c.images(), c.dLogits(), c.dDist()));
                assertMatchesCpu(got, c, "cuda-emu:1 " + where[i] + ", run there again");
            }
        } finally {
            on(runner, () -> {
                for (VisionTransformer m : models) m.close();
                backend.close();
                return null;
            });
            opener.shutdownNow();
            builder.shutdownNow();
            runner.shutdownNow();
        }
    }

    @Test
    void twoEmulatedDevicesRunConcurrentlyFromTwoThreads() throws Exception {
        Case c = newCase();
        ExecutorService builders = Executors.newFixedThreadPool(2), runners = Executors.newFixedThreadPool(2);
        List<VisionTransformer> models = new ArrayList<>();
        try {
            for (int d = 0; d < 2; ++d) {
                Device device = Device.cudaEmu(d);
                models.add(on(builders, () -> build(Backends.open(device), c)));
            }
            List<Future<Outputs>> results = new ArrayList<>();
            for (VisionTransformer m : models) {
                // Two rounds each, at the same time: the two threads' calls interleave.
                results.add(runners.submit(() -> {
                    run(m, c.images(), c.dLogits(), c.dDist());
                    return run(m, c.images(), c.dLogits(), c.dDist());
                }));
            }
            for (int d = 0; d < 2; ++d) {
                Outputs got;
                try {
                    got = results.get(d).get();
                } catch (ExecutionException e) {
                    throw e.getCause() instanceof Exception ex ? ex : new RuntimeException(e.getCause());
                }
                assertMatchesCpu(got, c, models.get(d).backend().device() + ", concurrently with the other device");
            }
        } finally {
            for (VisionTransformer m : models) close(m);
            builders.shutdownNow();
            runners.shutdownNow();
        }
    }

    @Test
    void deviceIndicesOutOfRangeAreClearErrors() {
        assertEquals(Device.cudaEmu(1), Device.parse("cuda-emu:1"));
        assertEquals(Device.cudaEmu(), Device.cudaEmu(0));
        assertEquals("cuda-emu:1", Device.cudaEmu(1).toString());
        assertEquals("cuda-emu", Device.cudaEmu(0).toString());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Device.cudaEmu(2));
        assertTrue(e.getMessage().contains("0 or 1"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Device.parse("cuda-emu:-1"));
        // Below the Java check, the native library refuses too, naming the device and the count.
        BackendUnavailableException n = assertThrows(BackendUnavailableException.class,
                () -> NativeLibraries.open("cudaemu", 5));
        assertTrue(n.getMessage().contains("CUDA device 5 does not exist (the emulator has 2)"), n.getMessage());
        // A real card that is not there: the reason names it (or what is missing before it).
        String why = Backends.cudaUnavailableReason(64);
        assertTrue(why != null && (why.contains("CUDA device 64 does not exist") || why.contains("libcuda.so.1")
                || why.contains("libcudart.so.13") || why.contains("cudaGetDeviceCount")), String.valueOf(why));
        BackendUnavailableException u = assertThrows(BackendUnavailableException.class,
                () -> Backends.open(Device.cuda(64)));
        assertTrue(u.getMessage().contains(why), u.getMessage());
    }
}
