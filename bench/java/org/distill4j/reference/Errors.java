package org.distill4j.reference;

/** How far a result is from its reference: the measure used by tests, selftest and the benchmarks. */
public final class Errors {
    private Errors() {}

    /**
     * ‖got − ref‖₂ / ‖ref‖₂ over the finite entries (the plain norm of the difference when ref is all zeros).
     * NaN must face NaN and an infinity the same infinity, else the error is infinite.
     */
    public static double relative(float[] got, double[] ref) {
        return relative(got.length, i -> got[i], ref);
    }

    /** {@link #relative(float[], double[])} of a result held in doubles (e.g. libtorch's float32 answer, widened). */
    public static double relative(double[] got, double[] ref) {
        return relative(got.length, i -> got[i], ref);
    }

    private static double relative(int n, java.util.function.IntToDoubleFunction got, double[] ref) {
        if (n != ref.length) {
            throw new IllegalArgumentException("length " + n + " vs reference " + ref.length);
        }
        double diff = 0, norm = 0;
        for (int i = 0; i < n; i++) {
            double g = got.applyAsDouble(i);
            boolean finite = Double.isFinite(g) && Double.isFinite(ref[i]);
            if (!finite) {
                boolean same = Double.isNaN(g) ? Double.isNaN(ref[i]) : g == ref[i];
                if (!same) return Double.POSITIVE_INFINITY;
                continue;
            }
            double d = g - ref[i];
            diff += d * d;
            norm += ref[i] * ref[i];
        }
        return norm == 0 ? Math.sqrt(diff) : Math.sqrt(diff / norm);
    }

    /** {@link #relative(float[], double[])} against a float reference. */
    public static double relative(float[] got, float[] ref) {
        double[] r = new double[ref.length];
        for (int i = 0; i < r.length; i++) r[i] = ref[i];
        return relative(got, r);
    }
}
