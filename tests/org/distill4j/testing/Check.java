package org.distill4j.testing;

import java.util.Random;
import org.distill4j.Device;
import org.distill4j.backend.Backend;
import org.distill4j.backend.Backends;
import org.distill4j.reference.Errors;
import org.junit.jupiter.api.Assumptions;

/** Test helpers: fresh random data, relative errors, and the backends a test compares. */
public final class Check {
    private Check() {}

    /**
     * A fresh seed per call (printed by the tests that use it), or the one given by the system property
     * {@code distill4j.test.seed}, to replay a failure: {@code mvn test -Dtest=X -Ddistill4j.test.seed=N}.
     */
    public static long freshSeed() {
        String fixed = System.getProperty("distill4j.test.seed");
        if (fixed != null) return Long.parseLong(fixed.trim());
        return System.nanoTime() ^ Thread.currentThread().getId() * 0x9E3779B97F4A7C15L;
    }

    /** n normal values of standard deviation {@code std}. */
    public static float[] normal(Random rng, int n, double std) {
        float[] out = new float[n];
        for (int i = 0; i < n; i++) out[i] = (float) (rng.nextGaussian() * std);
        return out;
    }

    /** See {@link Errors#relative(float[], double[])}. */
    public static double relErr(float[] got, double[] ref) {
        return Errors.relative(got, ref);
    }

    /** See {@link Errors#relative(float[], float[])}. */
    public static double relErr(float[] got, float[] ref) {
        return Errors.relative(got, ref);
    }

    /** Opens cuda:0, or skips the test (visibly, with the reason) when this machine cannot run CUDA. */
    public static Backend cudaOrSkip() {
        String why = Backends.cudaUnavailableReason(0);
        Assumptions.assumeTrue(why == null, "no GPU here, CPU-vs-CUDA case skipped: " + why);
        return Backends.open(Device.cuda(0));
    }
}
