package org.distill4j.reference;

/**
 * Exact GELU and its derivative in float64 from the definitions, y = x Φ(x), gelu' = Φ(x) + x φ(x): the oracle of
 * {@code selftest}. Java has no erf: Φ comes from erfc, by its Taylor series of erf below |z| = 2.5 and by the
 * Laplace continued fraction above (both to ~1e-14 relative), taken on the side where Φ is small.
 */
public final class GeluFloat64 {
    private GeluFloat64() {}

    /** y and dx = dy · gelu'(x). */
    public record Result(double[] y, double[] dx) {}

    public static Result compute(float[] x, float[] dy) {
        double[] y = new double[x.length], dx = new double[x.length];
        for (int i = 0; i < x.length; i++) {
            double v = x[i], cdf = cdf(v), pdf = Math.exp(-0.5 * v * v) / Math.sqrt(2 * Math.PI);
            y[i] = v * cdf;
            dx[i] = dy[i] * (cdf + v * pdf);
        }
        return new Result(y, dx);
    }

    /** Φ(x) = erfc(−x/√2)/2. */
    public static double cdf(double x) {
        double half = 0.5 * erfc(Math.abs(x) / Math.sqrt(2));
        return x < 0 ? half : 1 - half;
    }

    /** erfc(z) for z &ge; 0. */
    static double erfc(double z) {
        if (z < 2.5) {
            // erf(z) = 2/√π Σ (-1)^n z^(2n+1) / (n! (2n+1)); terms peak near 40 at z = 2.5: ~1e-15 lost.
            double term = z, sum = z, z2 = z * z;
            for (int n = 1; n < 200 && Math.abs(term) > 1e-17 * Math.abs(sum); n++) {
                term *= -z2 / n;
                sum += term / (2 * n + 1);
            }
            return 1 - 2 / Math.sqrt(Math.PI) * sum;
        }
        // erfc(z) = e^{-z²}/√π · 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + ...)))), evaluated bottom-up.
        double f = z;
        for (int k = 120; k >= 1; k--) f = z + 0.5 * k / f;
        return Math.exp(-z * z) / Math.sqrt(Math.PI) / f;
    }
}
