package org.distill4j.bench;

import java.util.Arrays;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;

/**
 * Times two runnables in the same process, alternating A B A B after a warm-up, and reports each median: a
 * ratio taken this way holds when the machine's speed drifts, an absolute time does not.
 */
public final class Timing {
    private Timing() {}

    /**
     * Threads for libtorch, the CPU reference: the most our CPU kernels use ({@link CpuBackend#threads()}:
     * OMP_NUM_THREADS, else the affinity mask capped by the cgroup quota), so that both sides get the same CPUs;
     * beside a GPU backend, the processors the JVM sees.
     */
    public static int referenceThreads(Backend backend) {
        return backend instanceof CpuBackend cpu ? cpu.threads() : Runtime.getRuntime().availableProcessors();
    }

    /** Median milliseconds of ours and of the reference. */
    public record Pair(double oursMs, double referenceMs) {
        /** reference / ours: above 1 means ours is faster. */
        public double speedup() {
            return referenceMs / oursMs;
        }
    }

    /**
     * Runs both {@code warmup} times, then {@code runs} times alternating, and returns the medians.
     * Each runnable must finish its work (synchronise its device) before returning.
     */
    public static Pair alternate(Runnable ours, Runnable reference, int warmup, int runs) {
        for (int i = 0; i < warmup; i++) {
            ours.run();
            reference.run();
        }
        double[] a = new double[runs], b = new double[runs];
        for (int i = 0; i < runs; i++) {
            a[i] = millis(ours);
            b[i] = millis(reference);
        }
        return new Pair(median(a), median(b));
    }

    private static double millis(Runnable r) {
        long t0 = System.nanoTime();
        r.run();
        return (System.nanoTime() - t0) / 1e6;
    }

    private static double median(double[] v) {
        double[] s = v.clone();
        Arrays.sort(s);
        return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    }
}
