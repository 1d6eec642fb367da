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
import org.distill4j.reference.TorchLayerNorm;
import org.distill4j.testing.Check;
import org.distill4j.testing.Float64Reference;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * LayerNorm against libtorch ({@code native_layer_norm} in float64, gradients by autograd), the accumulation
 * semantics of dx, dWeight and dBias, CPU against the emulated CUDA kernels and CUDA, determinism, bad input.
 *
 * <p>Tolerance 1e-5 relative (‖ours − ref‖/‖ref‖, fp32 against float64): row sums of C ≤ 1000 terms carry
 * ~√C · 2⁻²⁴ ≈ 2e-6; dWeight sums M rows more (also ~1e-6 at M = 2000, in chunk partials). Inputs have a nonzero
 * mean (offset 3) so that a one-pass E[x²] − E[x]² variance would show.
 */
class LayerNormTest {
    private static final double TOL = 1e-5;
    private static Backend cpu;

    @BeforeAll
    static void open() {
        cpu = CpuBackend.open();
    }

    @AfterAll
    static void close() {
        cpu.close();
    }

    record Inputs(int rows, int dim, float[] x, float[] w, float[] b, float[] dy, float[] dx0, float[] dw0, float[] db0) {
        static Inputs random(Random rng, int rows, int dim) {
            float[] x = Check.normal(rng, rows * dim, 2);
            for (int i = 0; i < x.length; i++) x[i] += 3f;
            float[] w = Check.normal(rng, dim, 1), b = Check.normal(rng, dim, 1);
            return new Inputs(rows, dim, x, w, b, Check.normal(rng, rows * dim, 1), Check.normal(rng, rows * dim, 1),
                    Check.normal(rng, dim, 1), Check.normal(rng, dim, 1));
        }
    }

    /** y, mean, rstd, dx, dWeight, dBias after forward + backward, the gradients pre-filled with dx0, dw0, db0. */
    static float[][] run(Backend be, Inputs in, float eps) {
        long m = in.rows(), c = in.dim();
        try (LayerNorm op = LayerNorm.create(be, m, c, eps); Tensor x = Tensor.of(be, in.x(), m, c);
             Tensor w = Tensor.of(be, in.w(), c); Tensor b = Tensor.of(be, in.b(), c); Tensor y = Tensor.empty(be, m, c);
             Tensor mean = Tensor.empty(be, m); Tensor rstd = Tensor.empty(be, m); Tensor dy = Tensor.of(be, in.dy(), m, c);
             Tensor dx = Tensor.of(be, in.dx0(), m, c); Tensor dw = Tensor.of(be, in.dw0(), c);
             Tensor db = Tensor.of(be, in.db0(), c)) {
            op.forward(x, w, b, y, mean, rstd);
            op.backward(x, w, mean, rstd, dy, dx, dw, db);
            return new float[][] {y.toArray(), mean.toArray(), rstd.toArray(), dx.toArray(), dw.toArray(), db.toArray()};
        }
    }

    static final String[] NAMES = {"y", "mean", "rstd", "dx", "dWeight", "dBias"};

    /** libtorch's float64 answer plus the pre-filled gradients (the kernels accumulate), tolerances from its fp32 one. */
    static Float64Reference reference(Inputs in, float eps) {
        return Float64Reference.of(NAMES, torch(in, eps, true), torch(in, eps, false), TOL);
    }

    private static double[][] torch(Inputs in, float eps, boolean float64) {
        TorchLayerNorm.Result r = TorchLayerNorm.compute(in.x(), in.w(), in.b(), in.dy(), in.rows(), in.dim(), eps,
                float64);
        return new double[][] {r.y(), r.mean(), r.rstd(), plus(r.dx(), in.dx0()), plus(r.dWeight(), in.dw0()),
                plus(r.dBias(), in.db0())};
    }

    static double[] plus(double[] a, float[] b) {
        double[] out = a.clone();
        for (int i = 0; i < out.length; i++) out[i] += b[i];
        return out;
    }

    @ParameterizedTest(name = "M={0} C={1}")
    @CsvSource({"1, 2", "1, 192", "3, 7", "5, 33", "17, 96", "64, 100", "197, 192", "1584, 384", "300, 1000"})
    void matchesLibtorchWithAutograd(int rows, int dim) {
        long seed = Check.freshSeed();
        Inputs in = Inputs.random(new Random(seed), rows, dim);
        reference(in, 1e-6f).assertClose(run(cpu, in, 1e-6f), "seed=" + seed + " M=" + rows + " C=" + dim);
    }

    /**
     * C = 1: every xhat is 0, so y = bias and the true dx is 0 (dx keeps its pre-fill). Not compared with libtorch
     * here: its float64 backward forms dx as a·g + b·x + c with b ∝ rstd³ = 1e9, whose rounding leaves ~1e-5 where
     * the answer is 0. Ours is exact: x − mean = 0, and g = dy·w is rounded before g − mean(g) (never fused into
     * it, which would leave rstd · ulp(g), rstd = 1/√eps = 1000 here).
     */
    @Test
    void rowsOfOneFeature() {
        long seed = Check.freshSeed();
        Inputs in = Inputs.random(new Random(seed), 5, 1);
        float[][] r = run(cpu, in, 1e-6f);
        for (int m = 0; m < 5; m++) {
            assertEquals(in.b()[0], r[0][m], "y = bias, seed=" + seed);
            assertEquals(in.x()[m], r[1][m], "mean = x");
            assertEquals(1000f, r[2][m], 1e-2f, "rstd = 1/sqrt(eps)");
            assertEquals(in.dx0()[m], r[3][m], "dx += 0 exactly, seed=" + seed);
        }
        double db = in.db0()[0];
        for (float d : in.dy()) db += d;
        assertEquals(db, r[5][0], 1e-5, "dBias += sum dy");
        assertEquals(in.dw0()[0], r[4][0], "dWeight += sum dy * 0");
    }

    @Test
    void gradientsAccumulateAndEpsIsUsed() {
        long seed = Check.freshSeed();
        Inputs in = Inputs.random(new Random(seed), 9, 40);
        // A large eps changes every output: an op that ignored it would fail against libtorch.
        reference(in, 0.5f).assertClose(run(cpu, in, 0.5f), "seed=" + seed + " eps=0.5");
        // The accumulated part is exactly what a zero start gives plus the pre-fill, to fp32 rounding.
        Inputs zero = new Inputs(in.rows(), in.dim(), in.x(), in.w(), in.b(), in.dy(), new float[in.x().length],
                new float[in.dim()], new float[in.dim()]);
        float[][] z = run(cpu, zero, 1e-6f), a = run(cpu, in, 1e-6f);
        float[][] pre = {in.dx0(), in.dw0(), in.db0()};
        for (int k = 0; k < 3; k++) {
            for (int i = 0; i < pre[k].length; i++) {
                assertEquals(z[3 + k][i] + pre[k][i], a[3 + k][i], 1e-5 * (1 + Math.abs(a[3 + k][i])),
                        NAMES[3 + k] + "[" + i + "] seed=" + seed);
            }
        }
        try (LayerNorm op = LayerNorm.create(cpu, 1, 1)) {
            assertEquals(1e-6f, op.eps());
        }
    }

    @Test
    void resultsAreTheSameBitsRunToRun() {
        Inputs in = Inputs.random(new Random(Check.freshSeed()), 1000, 192);
        float[][] a = run(cpu, in, 1e-6f), b = run(cpu, in, 1e-6f);
        for (int i = 0; i < a.length; i++) assertArrayEquals(a[i], b[i], NAMES[i]);
    }

    @Test
    void tokenShapedTensorsAreAccepted() {
        long seed = Check.freshSeed();
        Inputs in = Inputs.random(new Random(seed), 2 * 5, 24);
        try (LayerNorm op = LayerNorm.create(cpu, 10, 24); Tensor x = Tensor.of(cpu, in.x(), 2, 5, 24);
             Tensor w = Tensor.of(cpu, in.w(), 24); Tensor b = Tensor.of(cpu, in.b(), 24);
             Tensor y = Tensor.empty(cpu, 2, 5, 24); Tensor mean = Tensor.empty(cpu, 2, 5);
             Tensor rstd = Tensor.empty(cpu, 2, 5)) {
            op.forward(x, w, b, y, mean, rstd);
            Float64Reference want = reference(in, 1e-6f);
            assertTrue(Check.relErr(y.toArray(), want.want()[0]) <= want.tol()[0], "seed=" + seed);
        }
    }

    /**
     * The kernels' parameter-gradient passes (layernorm.cu): M = 20, 32 one pass over the per-warp slices; 33, 70
     * groups of 32 slices, the last one short; 300 ten groups (norm_act_emu takes W to its cap of 1024 warps,
     * which costs seconds more here). 2C = 2 to 2000: one to 32 column tiles of 64, whole (192, 384) or with a
     * partial last one. Two runs give the same bits.
     */
    @ParameterizedTest(name = "M={0} C={1}")
    @CsvSource({"1, 1", "1, 37", "7, 96", "32, 37", "33, 100", "70, 192", "20, 1000", "300, 65"})
    void emulatedCudaKernelMatchesCpuKernel(int rows, int dim) {
        long seed = Check.freshSeed();
        Inputs in = Inputs.random(new Random(seed), rows, dim);
        try (Backend emu = CpuBackend.openCudaEmulator()) {
            float[][] got = run(emu, in, 1e-6f), want = run(cpu, in, 1e-6f);
            for (int i = 0; i < got.length; i++) {
                double err = Check.relErr(got[i], want[i]);
                assertTrue(err <= TOL, "seed=" + seed + " M=" + rows + " C=" + dim + ": " + NAMES[i] + " " + err);
            }
            reference(in, 1e-6f).assertClose(got, "emu seed=" + seed);
            float[][] again = run(emu, in, 1e-6f);
            for (int i = 0; i < got.length; i++) assertArrayEquals(got[i], again[i], "emu run to run " + NAMES[i]);
        }
    }

    @Test
    void cudaKernelMatchesCpuKernel() {
        try (Backend cuda = Check.cudaOrSkip()) {
            long seed = Check.freshSeed();
            Random rng = new Random(seed);
            for (int[] s : new int[][] {{1, 1}, {6528, 384}, {1584, 192}, {3136, 96}, {5, 33}, {64, 4000}}) {
                Inputs in = Inputs.random(rng, s[0], s[1]);
                float[][] got = run(cuda, in, 1e-6f), want = run(cpu, in, 1e-6f);
                for (int i = 0; i < got.length; i++) {
                    double err = Check.relErr(got[i], want[i]);
                    assertTrue(err <= TOL, "seed=" + seed + " M=" + s[0] + " C=" + s[1] + ": " + NAMES[i] + " " + err);
                }
                float[][] again = run(cuda, in, 1e-6f);
                for (int i = 0; i < got.length; i++) assertArrayEquals(got[i], again[i], "cuda run to run " + NAMES[i]);
            }
        }
    }

    @Test
    void forwardAndBackwardAllocateNothing() {
        Inputs in = Inputs.random(new Random(Check.freshSeed()), 50, 64);
        long before = cpu.liveAllocations();
        try (LayerNorm op = LayerNorm.create(cpu, 50, 64); Tensor x = Tensor.of(cpu, in.x(), 50, 64);
             Tensor w = Tensor.of(cpu, in.w(), 64); Tensor b = Tensor.of(cpu, in.b(), 64);
             Tensor y = Tensor.empty(cpu, 50, 64); Tensor mean = Tensor.empty(cpu, 50); Tensor rstd = Tensor.empty(cpu, 50);
             Tensor dx = Tensor.empty(cpu, 50, 64).zero(); Tensor dw = Tensor.empty(cpu, 64).zero();
             Tensor db = Tensor.empty(cpu, 64).zero()) {
            long steady = cpu.liveAllocations();
            for (int i = 0; i < 10; i++) {
                op.forward(x, w, b, y, mean, rstd);
                op.backward(x, w, mean, rstd, y, dx, dw, db);
            }
            assertEquals(steady, cpu.liveAllocations(), "forward/backward allocated");
        }
        assertEquals(before, cpu.liveAllocations(), "the op's workspace and the tensors were freed");
    }

    @Test
    void badInputIsAClearException() {
        assertMessage(IllegalArgumentException.class, "rows and dim must be >= 1, got rows=0",
                () -> LayerNorm.create(cpu, 0, 8));
        assertMessage(IllegalArgumentException.class, "dim=0", () -> LayerNorm.create(cpu, 4, 0));
        assertMessage(IllegalArgumentException.class, "eps must be finite and >= 0",
                () -> LayerNorm.create(cpu, 4, 8, -1f));
        assertMessage(IllegalArgumentException.class, "eps must be finite and >= 0",
                () -> LayerNorm.create(cpu, 4, 8, Float.NaN));
        try (LayerNorm op = LayerNorm.create(cpu, 4, 8); Tensor x = Tensor.empty(cpu, 4, 8);
             Tensor xT = Tensor.empty(cpu, 8, 4); Tensor w = Tensor.empty(cpu, 8); Tensor w9 = Tensor.empty(cpu, 9);
             Tensor y = Tensor.empty(cpu, 4, 8); Tensor mean = Tensor.empty(cpu, 4); Tensor mean5 = Tensor.empty(cpu, 5);
             Tensor rstd = Tensor.empty(cpu, 4); Backend other = CpuBackend.open();
             Tensor elsewhere = Tensor.empty(other, 4, 8)) {
            assertMessage(IllegalArgumentException.class, "x must have 4 rows of 8 (last dimension 8), got [8, 4]",
                    () -> op.forward(xT, w, w, y, mean, rstd));
            assertMessage(IllegalArgumentException.class, "weight must have shape [8], got [9]",
                    () -> op.forward(x, w9, w, y, mean, rstd));
            assertMessage(IllegalArgumentException.class, "bias is required", () -> op.forward(x, w, null, y, mean, rstd));
            assertMessage(IllegalArgumentException.class, "mean must have 4 elements (one per row), got [5]",
                    () -> op.forward(x, w, w, y, mean5, rstd));
            assertMessage(IllegalArgumentException.class, "y is on", () -> op.forward(x, w, w, elsewhere, mean, rstd));
            assertMessage(IllegalArgumentException.class, "y must not be the same tensor as x",
                    () -> op.forward(x, w, w, x, mean, rstd));
            assertMessage(IllegalArgumentException.class, "dx must not be the same tensor as dy",
                    () -> op.backward(x, w, mean, rstd, y, y, w, w));
            assertMessage(IllegalArgumentException.class, "dBias must have shape [8], got [9]",
                    () -> op.backward(x, w, mean, rstd, y, x, w, w9));
            Tensor closed = Tensor.empty(cpu, 4);
            closed.close();
            assertMessage(IllegalStateException.class, "rstd tensor is closed",
                    () -> op.forward(x, w, w, y, mean, closed));
            LayerNorm shut = LayerNorm.create(cpu, 4, 8);
            shut.close();
            shut.close();
            assertMessage(IllegalStateException.class, "is closed", () -> shut.forward(x, w, w, y, mean, rstd));
        }
    }

    @Test
    void nativeEntriesRejectMisuseWithoutCrashing() {
        assertTrue(Distill4jNative.d4j_layernorm_workspace(cpu.kernels(), 0, 8) < 0);
        try (Tensor x = Tensor.empty(cpu, 4, 8); Tensor s = Tensor.empty(cpu, 8)) {
            assertNotEquals(0, Distill4jNative.d4j_layernorm_forward(cpu.kernels(), cpu.stream(), x.data(), s.data(),
                    null, 4, 8, 1e-6f, x.data(), s.data(), s.data()));
            assertNotEquals(0, Distill4jNative.d4j_layernorm_backward(cpu.kernels(), cpu.stream(), x.data(), s.data(),
                    s.data(), s.data(), x.data(), 4, 8, x.data(), s.data(), s.data(), null));
        }
    }

    static void assertMessage(Class<? extends Throwable> type, String part, org.junit.jupiter.api.function.Executable run) {
        Throwable e = assertThrows(type, run);
        assertTrue(e.getMessage().contains(part), "message '" + e.getMessage() + "' lacks '" + part + "'");
    }
}
