package org.distill4j.ops;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.natives.Distill4jNative;
import org.distill4j.reference.GeluFloat64;
import org.distill4j.reference.TorchGelu;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Exact GELU against libtorch ({@code gelu(x, "none")} in float64, dx by autograd), element by element: y to
 * 1e-6 relative (negative x included, where 1 + erf cancels); dx to 1e-6 relative plus an absolute 1e-7·|dy|
 * floor (gelu' crosses 0 at x ≈ −0.75, where no float result has a relative error). libtorch computes
 * x/2 (1 + erf(x/√2)) even in float64, so below x = −5 (Φ &lt; 3e-7) its own answer loses digits (at x = −8.4 it
 * is 40 % off): there each element is compared with {@link GeluFloat64} (Φ from erfc) instead, down to where y
 * leaves the normal floats. Then CPU against the emulated CUDA kernel and CUDA, in place backward, bad input.
 */
class GeluTest {
    private static final double REL = 1e-6;
    private static Backend cpu;

    @BeforeAll
    static void open() {
        cpu = CpuBackend.open();
    }

    @AfterAll
    static void close() {
        cpu.close();
    }

    /** y and dx of forward + backward (dx written into a separate tensor). */
    static float[][] run(Backend be, float[] x, float[] dy) {
        try (Tensor xt = Tensor.of(be, x, x.length); Tensor y = Tensor.empty(be, x.length);
             Tensor dyt = Tensor.of(be, dy, dy.length); Tensor dx = Tensor.of(be, new float[x.length], x.length)) {
            Gelu.forward(xt, y);
            Gelu.backward(xt, dyt, dx);
            return new float[][] {y.toArray(), dx.toArray()};
        }
    }

    /** Inputs of standard deviation 4 (both tails well covered), plus a sweep of [-14, 14] in steps of 1/64. */
    static float[] inputs(Random rng, int n) {
        float[] x = Check.normal(rng, n, 4);
        for (int i = 0; i < Math.min(n, 14 * 128 + 1); i++) x[i] = -14f + i / 64f;
        return x;
    }

    static void assertElementwise(float[][] got, float[] x, float[] dy, String what) {
        TorchGelu.Result torch = TorchGelu.compute(x, dy);
        GeluFloat64.Result exact = GeluFloat64.compute(x, dy);
        for (int i = 0; i < x.length; i++) {
            if (x[i] >= -5f && Math.abs(exact.y()[i] - torch.y()[i]) > 1e-9 * Math.abs(torch.y()[i])) {
                throw new AssertionError("the float64 oracle disagrees with libtorch at x = " + x[i]);
            }
            TorchGelu.Result ref = x[i] >= -5f ? torch : new TorchGelu.Result(exact.y(), exact.dx());
            double y = ref.y()[i];
            if (Math.abs(y) >= Float.MIN_NORMAL) {
                assertTrue(Math.abs(got[0][i] - y) <= REL * Math.abs(y), what + ": y[" + i + "] = " + got[0][i]
                        + ", torch " + y);
            }
            double dx = ref.dx()[i];
            assertTrue(Math.abs(got[1][i] - dx) <= REL * Math.abs(dx) + 1e-7 * Math.abs(dy[i]), what + ": dx[" + i
                    + "] = " + got[1][i] + ", torch " + dx);
        }
    }

    @ParameterizedTest(name = "n={0}")
    @ValueSource(ints = {1, 7, 33, 1000, 4097, 100_003})
    void matchesLibtorchElementwise(int n) {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        float[] x = inputs(rng, n), dy = Check.normal(rng, n, 1);
        assertElementwise(run(cpu, x, dy), x, dy, "seed=" + seed + " n=" + n);
    }

    @Test
    void backwardInPlaceOverDy() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        float[] x = inputs(rng, 3000), dy = Check.normal(rng, 3000, 1);
        float[] separate = run(cpu, x, dy)[1];
        try (Tensor xt = Tensor.of(cpu, x, 3000); Tensor g = Tensor.of(cpu, dy, 3, 1000)) {
            Gelu.backward(xt, g, g);
            assertArrayEquals(separate, g.toArray(), "seed=" + seed);
        }
    }

    @Test
    void specialValues() {
        float[] x = {0f, -0f, Float.NaN, Float.POSITIVE_INFINITY, 30f, -30f, Float.MIN_VALUE};
        float[][] r = run(cpu, x, new float[] {1, 1, 1, 1, 1, 1, 1});
        assertEquals(0f, r[0][0]);
        assertEquals(0.5f, r[1][0]);  // gelu'(0) = Φ(0)
        assertTrue(Float.isNaN(r[0][2]) && Float.isNaN(r[1][2]), "NaN propagates");
        assertEquals(Float.POSITIVE_INFINITY, r[0][3]);
        assertEquals(30f, r[0][4]);
        assertEquals(1f, r[1][4]);
        assertEquals(0f, r[0][5], 0f);
        assertEquals(0f, r[1][5], 0f);
    }

    @ParameterizedTest(name = "n={0}")
    @ValueSource(ints = {1, 33, 3000, 9001})
    void emulatedCudaKernelMatchesLibtorchAndCpu(int n) {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        float[] x = inputs(rng, n), dy = Check.normal(rng, n, 1);
        try (Backend emu = CpuBackend.openCudaEmulator()) {
            float[][] got = run(emu, x, dy);
            assertElementwise(got, x, dy, "emu seed=" + seed + " n=" + n);
            float[][] base = run(cpu, x, dy);
            assertTrue(Check.relErr(got[0], base[0]) <= REL && Check.relErr(got[1], base[1]) <= REL, "vs cpu");
        }
    }

    @Test
    void cudaKernelMatchesLibtorch() {
        try (Backend cuda = Check.cudaOrSkip()) {
            long seed = Check.freshSeed();
            Random rng = new Random(seed);
            for (int n : new int[] {1, 37, 6528 * 1536 + 3}) {
                float[] x = inputs(rng, n), dy = Check.normal(rng, n, 1);
                float[][] got = run(cuda, x, dy);
                assertElementwise(got, x, dy, "cuda seed=" + seed + " n=" + n);
            }
        }
    }

    @Test
    void badInputIsAClearException() {
        try (Tensor x = Tensor.empty(cpu, 4, 8); Tensor y = Tensor.empty(cpu, 32); Tensor y31 = Tensor.empty(cpu, 31);
             Backend other = CpuBackend.open(); Tensor elsewhere = Tensor.empty(other, 4, 8)) {
            assertMessage(IllegalArgumentException.class, "y must have 32 elements as x [4, 8], got [31]",
                    () -> Gelu.forward(x, y31));
            assertMessage(IllegalArgumentException.class, "x is required", () -> Gelu.forward(null, y));
            assertMessage(IllegalArgumentException.class, "dy is on", () -> Gelu.backward(x, elsewhere, y));
            assertMessage(IllegalArgumentException.class, "dx must not be x", () -> Gelu.backward(x, y, x));
            Gelu.forward(x.zero(), y);  // shapes may differ when the element counts agree
            Tensor closed = Tensor.empty(cpu, 32);
            closed.close();
            assertMessage(IllegalStateException.class, "dx tensor is closed", () -> Gelu.backward(x, y, closed));
        }
    }

    @Test
    void nativeEntriesRejectMisuseWithoutCrashing() {
        try (Tensor x = Tensor.empty(cpu, 8)) {
            assertNotEquals(0, Distill4jNative.d4j_gelu_forward(cpu.kernels(), cpu.stream(), null, 8, x.data()));
            assertNotEquals(0, Distill4jNative.d4j_gelu_backward(cpu.kernels(), cpu.stream(), x.data(), x.data(), 0,
                    x.data()));
        }
    }

    static void assertMessage(Class<? extends Throwable> type, String part, org.junit.jupiter.api.function.Executable run) {
        Throwable e = assertThrows(type, run);
        assertTrue(e.getMessage().contains(part), "message '" + e.getMessage() + "' lacks '" + part + "'");
    }
}
