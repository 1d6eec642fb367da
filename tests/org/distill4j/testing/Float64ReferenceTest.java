package org.distill4j.testing;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;
import org.opentest4j.AssertionFailedError;

/** The comparison the op tests rely on cannot be switched off by a NaN on either side. */
class Float64ReferenceTest {
    private static final String[] NAMES = {"y"};
    private static final double[][] WANT = {{1.0, 2.0, 3.0}};

    @Test
    void aNonFiniteFloat32ReferenceLeavesTheFloor() {
        Float64Reference r = Float64Reference.of(NAMES, WANT, new double[][] {{1.0, Double.NaN, 3.0}}, 1e-5);
        assertEquals(1e-5, r.tol()[0]);
        r = Float64Reference.of(NAMES, WANT, new double[][] {{1.0, Double.POSITIVE_INFINITY, 3.0}}, 1e-5);
        assertEquals(1e-5, r.tol()[0]);
        assertThrows(AssertionFailedError.class, () -> Float64Reference.of(NAMES, WANT,
                new double[][] {{1.0, Double.NaN, 3.0}}, 1e-5).assertClose(new float[][] {{1f, 2.5f, 3f}}, "off"));
    }

    @Test
    void aNanOutputFails() {
        Float64Reference r = Float64Reference.of(NAMES, WANT, new double[][] {{1.0, 2.0, 3.0}}, 1e-5);
        r.assertClose(new float[][] {{1f, 2f, 3f}}, "exact");
        assertThrows(AssertionFailedError.class, () -> r.assertClose(new float[][] {{1f, Float.NaN, 3f}}, "nan"));
        assertThrows(AssertionFailedError.class, () -> r.assertClose(new float[][] {{Float.NaN, Float.NaN, Float.NaN}},
                "all nan"));
    }
}
