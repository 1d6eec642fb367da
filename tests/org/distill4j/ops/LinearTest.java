package org.distill4j.ops;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.Random;
import java.util.stream.Stream;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.reference.TorchLinear;
import org.distill4j.testing.Check;
import org.distill4j.testing.Float64Reference;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The linear op against libtorch ({@code F.linear(x, W, b) + residual}, gradients by autograd, in float64 so that
 * only our error shows), CPU against the emulated CUDA kernels and against CUDA, accumulation, bad input.
 *
 * <p>Tolerance 1e-5 relative (‖ours − ref‖/‖ref‖): the longest fp32 sums are K = 768 terms (y), N = 1000 (dx) and
 * M = 1584 (dWeight, dBias in double); expected ≈ √n · 2⁻²⁴ ≤ 3e-6, observed around 1e-7.
 */
class LinearTest {
    private static final double TOL = 1e-5;
    private static Backend cpu;
    private static Backend emu;

    @BeforeAll
    static void open() {
        cpu = CpuBackend.open();
        emu = CpuBackend.openCudaEmulator();
    }

    @AfterAll
    static void close() {
        cpu.close();
        emu.close();
    }

    /** x is [lead..., K]: M = product of lead. */
    record Shape(long[] lead, int k, int n, boolean bias, boolean residual) {
        int m() {
            return (int) Arrays.stream(lead).reduce(1, (a, b) -> a * b);
        }

        long[] xShape() {
            return concat(lead, k);
        }

        long[] yShape() {
            return concat(lead, n);
        }

        static long[] concat(long[] lead, long last) {
            long[] s = Arrays.copyOf(lead, lead.length + 1);
            s[lead.length] = last;
            return s;
        }

        @Override
        public String toString() {
            return "x=" + Arrays.toString(xShape()) + " N=" + n + (bias ? " +bias" : "") + (residual ? " +residual" : "");
        }
    }

    static Shape shape(int m, int k, int n, boolean bias, boolean residual) {
        return new Shape(new long[] {m}, k, n, bias, residual);
    }

    /** Inputs; dWeight0/dBias0 random to check accumulation, dx0 random to check that dx is overwritten. */
    record Inputs(float[] x, float[] weight, float[] bias, float[] residual, float[] dy, float[] dWeight0,
                  float[] dBias0, float[] dx0) {
        static Inputs random(Shape s, Random rng) {
            int m = s.m(), k = s.k(), n = s.n();
            return new Inputs(Check.normal(rng, m * k, 1), Check.normal(rng, n * k, 1 / Math.sqrt(k)),
                    s.bias() ? Check.normal(rng, n, 0.5) : null, s.residual() ? Check.normal(rng, m * n, 1) : null,
                    Check.normal(rng, m * n, 1), Check.normal(rng, n * k, 1), s.bias() ? Check.normal(rng, n, 1) : null,
                    Check.normal(rng, m * k, 100));
        }
    }

    /** y, dx (null when skipped), dWeight, dBias (null without bias) after a forward and {@code backwards} backwards. */
    static float[][] run(Backend be, Shape s, Inputs in, boolean inputGrad, int backwards) {
        try (Tensor x = Tensor.of(be, in.x(), s.xShape()); Tensor w = Tensor.of(be, in.weight(), s.n(), s.k());
             Tensor b = s.bias() ? Tensor.of(be, in.bias(), s.n()) : null;
             Tensor r = s.residual() ? Tensor.of(be, in.residual(), s.yShape()) : null;
             Tensor y = Tensor.empty(be, s.yShape()); Tensor dy = Tensor.of(be, in.dy(), s.yShape());
             Tensor dx = inputGrad ? Tensor.of(be, in.dx0(), s.xShape()) : null;
             Tensor dw = Tensor.of(be, in.dWeight0(), s.n(), s.k());
             Tensor db = s.bias() ? Tensor.of(be, in.dBias0(), s.n()) : null) {
            Linear.forward(x, w, b, r, y);
            for (int i = 0; i < backwards; i++) Linear.backward(x, w, dy, dx, dw, db);
            return new float[][] {y.toArray(), dx == null ? null : dx.toArray(), dw.toArray(),
                    db == null ? null : db.toArray()};
        }
    }

    /** libtorch's float64 answer, tolerances from its fp32 one (y of one element can cancel to near 0). */
    static Float64Reference reference(Shape s, Inputs in, boolean inputGrad, int times) {
        return Float64Reference.of(NAMES, torch(s, in, inputGrad, times, true), torch(s, in, inputGrad, times, false),
                TOL);
    }

    private static double[][] torch(Shape s, Inputs in, boolean inputGrad, int times, boolean float64) {
        try (TorchLinear torch = new TorchLinear(in.x(), in.weight(), in.bias(), in.residual(), s.m(), s.k(), s.n(),
                float64)) {
            TorchLinear.Result r = torch.run(in.dy());
            return new double[][] {r.y(), inputGrad ? r.dx() : null, accumulated(in.dWeight0(), r.dWeight(), times),
                    s.bias() ? accumulated(in.dBias0(), r.dBias(), times) : null};
        }
    }

    static double[] accumulated(float[] initial, double[] grad, int times) {
        double[] out = new double[grad.length];
        for (int i = 0; i < out.length; i++) out[i] = initial[i] + times * grad[i];
        return out;
    }

    static final String[] NAMES = {"y", "dx", "dWeight", "dBias"};

    static void assertClose(float[][] got, float[][] want, String what) {
        for (int i = 0; i < NAMES.length; i++) {
            assertEquals(want[i] == null, got[i] == null, what + ": " + NAMES[i] + " presence");
            if (want[i] == null) continue;
            double err = Check.relErr(got[i], want[i]);
            assertTrue(err <= TOL, what + ": " + NAMES[i] + " rel err " + err);
        }
    }

    static Stream<Arguments> shapes() {
        return Stream.of(Arguments.of(shape(1, 1, 1, true, true)), Arguments.of(shape(1, 192, 1000, true, false)),
                Arguments.of(shape(8, 192, 1000, true, false)), Arguments.of(shape(7, 13, 5, false, false)),
                Arguments.of(shape(33, 97, 65, true, true)), Arguments.of(shape(3, 1, 17, false, true)),
                Arguments.of(new Shape(new long[] {2, 198}, 192, 576, true, false)),
                Arguments.of(new Shape(new long[] {2, 198}, 768, 192, true, true)),
                Arguments.of(new Shape(new long[] {3, 51}, 96, 288, true, false)),
                Arguments.of(new Shape(new long[] {2, 5, 7}, 31, 47, true, true)),
                Arguments.of(shape(1584, 192, 192, true, true)));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("shapes")
    void matchesLibtorchWithEveryGradient(Shape s) {
        long seed = Check.freshSeed();
        System.out.println("LinearTest seed=" + seed + " " + s);
        Inputs in = Inputs.random(s, new Random(seed));
        reference(s, in, true, 1).assertClose(run(cpu, s, in, true, 1), "seed=" + seed + " " + s);
    }

    @Test
    void parameterGradientsAccumulateInputGradientIsWrittenOrSkipped() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        for (Shape s : new Shape[] {shape(37, 24, 40, true, false), shape(5, 64, 3, true, true)}) {
            Inputs in = Inputs.random(s, rng);
            // Two backwards: dWeight, dBias = initial + 2 grad; dx (prefilled with noise) = 1 grad.
            reference(s, in, true, 2).assertClose(run(cpu, s, in, true, 2), "seed=" + seed + " two backwards " + s);
            // dx null: the parameter gradients alone.
            reference(s, in, false, 1).assertClose(run(cpu, s, in, false, 1), "seed=" + seed + " dx null " + s);
        }
    }

    static Stream<Arguments> emulatedShapes() {
        // Small: the emulated epilogue kernels run one OS thread per CUDA thread (the GEMMs are host OpenBLAS).
        return Stream.of(Arguments.of(shape(1, 1, 1, true, true)), Arguments.of(shape(8, 192, 1000, true, false)),
                Arguments.of(shape(7, 13, 5, false, false)), Arguments.of(shape(33, 97, 65, true, true)),
                Arguments.of(new Shape(new long[] {2, 51}, 96, 288, true, true)),
                Arguments.of(shape(300, 40, 33, true, false)));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("emulatedShapes")
    void emulatedCudaMatchesCpuAndLibtorch(Shape s) {
        long seed = Check.freshSeed();
        Inputs in = Inputs.random(s, new Random(seed));
        String what = "seed=" + seed + " " + s;
        float[][] onEmu = run(emu, s, in, true, 2);
        assertClose(onEmu, run(cpu, s, in, true, 2), what + " emu vs cpu");
        reference(s, in, true, 2).assertClose(onEmu, what + " emu vs libtorch");
        reference(s, in, false, 1).assertClose(run(emu, s, in, false, 1), what + " emu, dx null");
    }

    @Test
    void cudaMatchesCpu() {
        try (Backend cuda = Check.cudaOrSkip()) {
            long seed = Check.freshSeed();
            Random rng = new Random(seed);
            for (Shape s : new Shape[] {shape(1584, 192, 576, true, false), shape(1584, 768, 192, true, true),
                    shape(6528, 96, 288, true, false), shape(8, 192, 1000, true, false), shape(7, 13, 5, false, true)}) {
                Inputs in = Inputs.random(s, rng);
                assertClose(run(cuda, s, in, true, 2), run(cpu, s, in, true, 2), "seed=" + seed + " cuda " + s);
                reference(s, in, false, 1).assertClose(run(cuda, s, in, false, 1), "seed=" + seed + " cuda dx null " + s);
            }
        }
    }

    @Test
    void badInputIsAClearException() {
        try (Tensor x = Tensor.empty(cpu, 4, 8); Tensor w = Tensor.empty(cpu, 6, 8); Tensor w7 = Tensor.empty(cpu, 6, 7);
             Tensor b = Tensor.empty(cpu, 6); Tensor b5 = Tensor.empty(cpu, 5); Tensor y = Tensor.empty(cpu, 4, 6);
             Tensor y5 = Tensor.empty(cpu, 5, 6); Tensor dx = Tensor.empty(cpu, 4, 8); Tensor dw = Tensor.empty(cpu, 6, 8);
             Tensor wRank3 = Tensor.empty(cpu, 1, 6, 8); Tensor scalar = Tensor.empty(cpu);
             Tensor empty = Tensor.empty(cpu, 0, 8); Tensor bOnEmu = Tensor.empty(emu, 6)) {
            assertMessage(IllegalArgumentException.class, "weight [6, 7] does not take x [4, 8]",
                    () -> Linear.forward(x, w7, b, null, y));
            assertMessage(IllegalArgumentException.class, "weight must be [N, K]",
                    () -> Linear.forward(x, wRank3, b, null, y));
            assertMessage(IllegalArgumentException.class, "bias must have shape [6], got [5]",
                    () -> Linear.forward(x, w, b5, null, y));
            assertMessage(IllegalArgumentException.class, "y must have shape [4, 6], got [5, 6]",
                    () -> Linear.forward(x, w, b, null, y5));
            assertMessage(IllegalArgumentException.class, "residual must have shape [4, 6], got [5, 6]",
                    () -> Linear.forward(x, w, b, y5, y));
            assertMessage(IllegalArgumentException.class, "residual may not be y itself",
                    () -> Linear.forward(x, w, b, y, y));
            assertMessage(IllegalArgumentException.class, "x must have rank >= 1",
                    () -> Linear.forward(scalar, w, b, null, y));
            assertMessage(IllegalArgumentException.class, "empty operand",
                    () -> Linear.forward(empty, w, b, null, y));
            assertMessage(IllegalArgumentException.class, "bias is on cuda-emu",
                    () -> Linear.forward(x, w, bOnEmu, null, y));
            assertMessage(IllegalArgumentException.class, "y is required", () -> Linear.forward(x, w, b, null, null));
            assertMessage(IllegalArgumentException.class, "dy must have shape [4, 6], got [5, 6]",
                    () -> Linear.backward(x, w, y5, dx, dw, b));
            assertMessage(IllegalArgumentException.class, "dweight must have shape [6, 8], got [6, 7]",
                    () -> Linear.backward(x, w, y, dx, w7, b));
            assertMessage(IllegalArgumentException.class, "dx must have shape [4, 8], got [4, 6]",
                    () -> Linear.backward(x, w, y, y, dw, b));
            assertMessage(IllegalArgumentException.class, "dweight is required",
                    () -> Linear.backward(x, w, y, dx, null, b));
            Tensor closed = Tensor.empty(cpu, 4, 8);
            closed.close();
            assertMessage(IllegalStateException.class, "x tensor is closed", () -> Linear.forward(closed, w, b, null, y));
        }
    }

    static void assertMessage(Class<? extends Throwable> type, String part, org.junit.jupiter.api.function.Executable run) {
        Throwable e = assertThrows(type, run);
        assertTrue(e.getMessage().contains(part), "message '" + e.getMessage() + "' lacks '" + part + "'");
    }
}
