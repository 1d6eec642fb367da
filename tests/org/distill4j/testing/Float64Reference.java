package org.distill4j.testing;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.distill4j.reference.Errors;

/**
 * A reference's float64 outputs and, per output, the tolerance a float32 kernel is held to: {@code floor}, or 4× the
 * error of the same reference computed in float32 where that is larger. Some fresh random inputs are badly
 * conditioned for any float32 code (a nearly constant LayerNorm row, a 1×1 product whose terms cancel); those are not
 * ours to refuse, only to handle no worse than PyTorch does. A null output means "not computed" in both. Every
 * comparison fails on NaN: the error is +inf unless NaN faces NaN ({@link Errors#relative}), and the tolerance is
 * always finite.
 */
public record Float64Reference(String[] names, double[][] want, double[] tol) {

    /** The tolerances from the same reference's float64 and float32 answers (arrays aligned with {@code names}). */
    public static Float64Reference of(String[] names, double[][] float64, double[][] float32, double floor) {
        if (names.length != float64.length || float32.length != float64.length) {
            throw new IllegalArgumentException("names, float64 and float32 outputs differ in count");
        }
        double[] tol = new double[float64.length];
        for (int i = 0; i < tol.length; i++) {
            double reference32 = float64[i] == null ? 0 : Errors.relative(float32[i], float64[i]);
            // A float32 answer with NaN or infinities (error +inf) says nothing of the conditioning: the floor holds,
            // else the tolerance would be infinite and the check could not fail.
            tol[i] = Double.isFinite(reference32) ? Math.max(floor, 4 * reference32) : floor;
        }
        return new Float64Reference(names, float64, tol);
    }

    /** Asserts each of {@code got} within its tolerance, and null exactly where the reference's output is. */
    public void assertClose(float[][] got, String what) {
        assertEquals(want.length, got.length, what + ": output count");
        for (int i = 0; i < want.length; i++) {
            assertEquals(want[i] == null, got[i] == null, what + ": " + names[i] + " presence");
            if (want[i] == null) continue;
            double err = Errors.relative(got[i], want[i]);
            assertTrue(err <= tol[i], what + ": " + names[i] + " rel err " + err + " (tolerance " + tol[i] + ")");
        }
    }
}
