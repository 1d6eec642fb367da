package org.distill4j.ops;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.natives.Distill4jNative;
import org.distill4j.reference.TorchAttention;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Multi-head attention against libtorch ({@code scaled_dot_product_attention} on q, k, v split from the same qkv,
 * d qkv by autograd, in float64 so that only our error shows), CPU against the emulated CUDA kernels and against
 * CUDA, bad input, determinism and allocation behaviour.
 *
 * <p>Tolerance 1e-5 relative (‖ours − ref‖/‖ref‖, fp32 against float64). The fp32 sums have Dh = 64 (scores) and
 * N = 257 (P·V, dV, dQ, dK) terms, √n · 2⁻²⁴ ≈ 1e-6; the subtle part is exp(s − lse) at large scores: an absolute
 * error δ in a score of magnitude |s| ≤ 80 is ≈ 80 · 2⁻²⁴ ≈ 5e-6 and becomes a relative error δ in the
 * probability. Spread over a row it averages out: observed ≤ ~3e-6 at scores up to ±80, ~1e-6 at ordinary ones.
 * The emulated-CUDA and CUDA comparisons use the same bound.
 *
 * <p>Large-magnitude cases (scores up to ±80) get 5e-5. The backward's dS = P ∘ (dP − D) with D = rowsum(dO ∘ O)
 * (FlashAttention's form, not autograd's rowsum(P ∘ dP)): dP and D each carry an absolute rounding error of about
 * 2⁻²⁴ · |dO| · |v| · √Dh, while near-one-hot rows make the true dP − D, hence dQ and dK, small. That error is then
 * multiplied by scale · |k| (or |q|), which the rescaling has made large. The worst case is N = 1: dQ = dK = 0
 * exactly, and what is measured is that rounding against ‖dV‖ alone: observed ~2e-5.
 */
class AttentionTest {
    private static final double TOL = 1e-5, TOL_LARGE = 5e-5;
    private static Backend cpu;

    @BeforeAll
    static void open() {
        cpu = CpuBackend.open();
    }

    @AfterAll
    static void close() {
        cpu.close();
    }

    /** A shape: B, H, N, Dh. */
    record Shape(int b, int h, int n, int dh) {
        Attention op(Backend be) {
            return Attention.builder().batch(b).heads(h).tokens(n).headDim(dh).build(be);
        }

        int qkvSize() {
            return 3 * b * n * h * dh;
        }

        int outSize() {
            return b * n * h * dh;
        }

        @Override
        public String toString() {
            return "B=" + b + " H=" + h + " N=" + n + " Dh=" + dh;
        }
    }

    /**
     * Random qkv and dOut. With {@code maxScore} > 0 the q and k parts are rescaled (each by the square root of
     * the factor) so that the largest |scale · q·k| over every (b, h, i, j) is exactly maxScore: softmax rows close
     * to one-hot, the regime where a careless exp(s − max) or a float lse loses digits.
     */
    record Inputs(float[] qkv, float[] dOut) {
        static Inputs random(Shape s, Random rng, double maxScore) {
            float[] qkv = Check.normal(rng, s.qkvSize(), 1), dOut = Check.normal(rng, s.outSize(), 1);
            if (maxScore > 0) {
                double max = maxAbsScore(s, qkv);
                int ld = 3 * s.h() * s.dh(), qk = 2 * s.h() * s.dh();
                double f = Math.sqrt(maxScore / max);
                for (int row = 0; row < s.b() * s.n(); row++) {
                    for (int c = 0; c < qk; c++) qkv[row * ld + c] = (float) (qkv[row * ld + c] * f);
                }
            }
            return new Inputs(qkv, dOut);
        }
    }

    static double maxAbsScore(Shape s, float[] qkv) {
        int ld = 3 * s.h() * s.dh();
        double scale = 1 / Math.sqrt(s.dh()), max = 0;
        for (int b = 0; b < s.b(); b++) {
            for (int h = 0; h < s.h(); h++) {
                for (int i = 0; i < s.n(); i++) {
                    for (int j = 0; j < s.n(); j++) {
                        int q = (b * s.n() + i) * ld + h * s.dh(), k = (b * s.n() + j) * ld + (s.h() + h) * s.dh();
                        double acc = 0;
                        for (int d = 0; d < s.dh(); d++) acc += (double) qkv[q + d] * qkv[k + d];
                        max = Math.max(max, Math.abs(acc * scale));
                    }
                }
            }
        }
        return max;
    }

    /** Out, lse and dQkv of one forward + backward. */
    static float[][] run(Backend be, Shape s, Inputs in) {
        try (Attention op = s.op(be); Tensor qkv = Tensor.of(be, in.qkv(), op.qkvShape());
             Tensor out = Tensor.empty(be, op.outShape()); Tensor lse = Tensor.empty(be, op.lseShape());
             Tensor dOut = Tensor.of(be, in.dOut(), op.outShape()); Tensor dQkv = Tensor.empty(be, op.qkvShape())) {
            op.forward(qkv, out, lse);
            op.backward(qkv, out, lse, dOut, dQkv);
            return new float[][] {out.toArray(), lse.toArray(), dQkv.toArray()};
        }
    }

    static final String[] NAMES = {"out", "lse", "dQkv"};

    static void assertClose(float[][] got, double[][] want, String what, double tol) {
        for (int i = 0; i < want.length; i++) {
            if (want[i] == null) continue;
            double err = Check.relErr(got[i], want[i]);
            assertTrue(err <= tol, what + ": " + NAMES[i] + " rel err " + err);
        }
    }

    static void assertClose(float[][] got, float[][] want, String what, double tol) {
        for (int i = 0; i < want.length; i++) {
            double err = Check.relErr(got[i], want[i]);
            assertTrue(err <= tol, what + ": " + NAMES[i] + " rel err " + err);
        }
    }

    /** The grid of the issue: N × Dh; B, H and the input magnitude vary inside each case. */
    static Stream<Arguments> grid() {
        List<Arguments> out = new ArrayList<>();
        for (int n : new int[] {1, 7, 50, 197, 198, 257}) {
            for (int dh : new int[] {32, 64}) out.add(Arguments.of(n, dh));
        }
        return out.stream();
    }

    @ParameterizedTest(name = "N={0} Dh={1}")
    @MethodSource("grid")
    void matchesLibtorchSdpaWithAutograd(int n, int dh) {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        for (int b : new int[] {1, 4}) {
            for (int h : new int[] {1, 3, 6}) {
                for (double maxScore : new double[] {0, 80}) {
                    Shape s = new Shape(b, h, n, dh);
                    Inputs in = Inputs.random(s, rng, maxScore);
                    // libtorch has no lse output: ours is checked by the selftest's float64 oracle and, below,
                    // through the backward, which would be off without it.
                    double[][] want;
                    try (TorchAttention torch = new TorchAttention(in.qkv(), b, n, h, dh, 1 / Math.sqrt(dh), true)) {
                        TorchAttention.Result r = torch.run(in.dOut());
                        want = new double[][] {r.out(), null, r.dQkv()};
                    }
                    assertClose(run(cpu, s, in), want, "seed=" + seed + " " + s + " maxScore=" + maxScore,
                            maxScore > 0 ? TOL_LARGE : TOL);
                }
            }
        }
    }

    @Test
    void customScaleAndSplitShapeMatchLibtorch() {
        long seed = Check.freshSeed();
        Shape s = new Shape(2, 3, 50, 32);
        Inputs in = Inputs.random(s, new Random(seed), 0);
        float scale = 0.37f;
        try (Attention op = Attention.builder().batch(2).heads(3).tokens(50).headDim(32).scale(scale).build(cpu);
             Tensor qkv = Tensor.of(cpu, in.qkv(), op.qkvSplitShape()); Tensor out = Tensor.empty(cpu, op.outShape());
             Tensor lse = Tensor.empty(cpu, op.lseShape()); Tensor dOut = Tensor.of(cpu, in.dOut(), op.outShape());
             Tensor dQkv = Tensor.empty(cpu, op.qkvSplitShape());
             TorchAttention torch = new TorchAttention(in.qkv(), 2, 50, 3, 32, scale, true)) {
            assertEquals(scale, op.scale());
            op.forward(qkv, out, lse);
            op.backward(qkv, out, lse, dOut, dQkv);
            TorchAttention.Result r = torch.run(in.dOut());
            assertClose(new float[][] {out.toArray(), null, dQkv.toArray()}, new double[][] {r.out(), null, r.dQkv()},
                    "seed=" + seed + " scale=" + scale, TOL);
        }
    }

    @Test
    void resultsAreTheSameBitsRunToRun() {
        Shape s = new Shape(4, 3, 198, 64);
        Inputs in = Inputs.random(s, new Random(Check.freshSeed()), 0);
        float[][] a = run(cpu, s, in), b = run(cpu, s, in);
        for (int i = 0; i < a.length; i++) assertArrayEquals(a[i], b[i], NAMES[i]);
    }

    @Test
    void nanPropagatesToItsHeadOnly() {
        Shape s = new Shape(2, 2, 7, 32);
        Inputs in = Inputs.random(s, new Random(Check.freshSeed()), 0);
        int ld = 3 * s.h() * s.dh();
        in.qkv()[(s.n() + 3) * ld + (s.h() + 1) * s.dh() + 5] = Float.NaN;  // b = 1, key row 3, head 1
        float[][] r = run(cpu, s, in);
        int ldo = s.h() * s.dh();
        for (int b = 0; b < s.b(); b++) {
            for (int n = 0; n < s.n(); n++) {
                for (int h = 0; h < s.h(); h++) {
                    boolean poisoned = b == 1 && h == 1;
                    float o = r[0][(b * s.n() + n) * ldo + h * s.dh()];
                    assertEquals(poisoned, Float.isNaN(o), "out b=" + b + " n=" + n + " h=" + h);
                    assertEquals(poisoned, Float.isNaN(r[1][(b * s.h() + h) * s.n() + n]), "lse");
                    assertEquals(poisoned, Float.isNaN(r[2][(b * s.n() + n) * ld + h * s.dh()]), "dq");
                }
            }
        }
    }

    static Stream<Arguments> emulatedShapes() {
        // A few dozen blocks per launch: the emulator runs one OS thread per CUDA thread.
        return Stream.of(Arguments.of(new Shape(1, 1, 1, 32)), Arguments.of(new Shape(1, 2, 7, 64)),
                Arguments.of(new Shape(2, 3, 50, 32)), Arguments.of(new Shape(1, 1, 198, 64)),
                Arguments.of(new Shape(1, 2, 257, 32)));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("emulatedShapes")
    void emulatedCudaKernelMatchesCpuKernel(Shape s) {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        try (Backend emu = CpuBackend.openCudaEmulator()) {
            for (double maxScore : new double[] {0, 80}) {
                Inputs in = Inputs.random(s, rng, maxScore);
                assertClose(run(emu, s, in), run(cpu, s, in), "seed=" + seed + " " + s + " maxScore=" + maxScore,
                        maxScore > 0 ? TOL_LARGE : TOL);
            }
        }
    }

    @Test
    void cudaKernelMatchesCpuKernel() {
        try (Backend cuda = Check.cudaOrSkip()) {
            long seed = Check.freshSeed();
            Random rng = new Random(seed);
            for (Shape s : new Shape[] {new Shape(32, 3, 198, 64), new Shape(4, 6, 197, 64), new Shape(2, 3, 257, 32),
                    new Shape(3, 1, 1, 32), new Shape(1, 3, 50, 64)}) {
                for (double maxScore : new double[] {0, 80}) {
                    Inputs in = Inputs.random(s, rng, maxScore);
                    assertClose(run(cuda, s, in), run(cpu, s, in), "seed=" + seed + " " + s + " maxScore=" + maxScore,
                            maxScore > 0 ? TOL_LARGE : TOL);
                }
            }
        }
    }

    @Test
    void forwardAndBackwardAllocateNothing() {
        Shape s = new Shape(2, 3, 50, 64);
        Inputs in = Inputs.random(s, new Random(Check.freshSeed()), 0);
        long before = cpu.liveAllocations();
        try (Attention op = s.op(cpu); Tensor qkv = Tensor.of(cpu, in.qkv(), op.qkvShape());
             Tensor out = Tensor.empty(cpu, op.outShape()); Tensor lse = Tensor.empty(cpu, op.lseShape());
             Tensor dOut = Tensor.of(cpu, in.dOut(), op.outShape()); Tensor dQkv = Tensor.empty(cpu, op.qkvShape())) {
            long steady = cpu.liveAllocations();
            for (int i = 0; i < 20; i++) {
                op.forward(qkv, out, lse);
                op.backward(qkv, out, lse, dOut, dQkv);
            }
            assertEquals(steady, cpu.liveAllocations(), "forward/backward allocated");
        }
        assertEquals(before, cpu.liveAllocations(), "the op's workspace and the tensors were freed");
    }

    @Test
    void badInputIsAClearException() {
        assertMessage(IllegalArgumentException.class, "head dim 48 is not supported: 32 or 64",
                () -> Attention.builder().batch(2).tokens(50).heads(4).headDim(48).build(cpu));
        assertMessage(IllegalArgumentException.class, "every size must be set and >= 1, got B=0",
                () -> Attention.builder().batch(0).tokens(50).heads(3).headDim(64).build(cpu));
        assertMessage(IllegalArgumentException.class, "N=0",
                () -> Attention.builder().batch(2).tokens(0).heads(3).headDim(64).build(cpu));
        assertMessage(IllegalArgumentException.class, "H=0",
                () -> Attention.builder().batch(2).tokens(50).heads(0).headDim(64).build(cpu));
        assertMessage(IllegalArgumentException.class, "embedding dim 190 does not split into 3 heads",
                () -> Attention.builder().dim(190, 3));
        assertMessage(IllegalArgumentException.class, "scale must be finite",
                () -> Attention.builder().scale(Float.NaN));
        try (Attention op = new Shape(2, 3, 7, 32).op(cpu);
             Tensor qkv = Tensor.empty(cpu, 2, 7, 288); Tensor qkv4 = Tensor.empty(cpu, 2, 7, 384);
             Tensor qkvN = Tensor.empty(cpu, 2, 8, 288); Tensor split = Tensor.empty(cpu, 2, 7, 3, 3, 32);
             Tensor splitBad = Tensor.empty(cpu, 2, 7, 3, 4, 24);
             Tensor out = Tensor.empty(cpu, 2, 7, 96); Tensor out2 = Tensor.empty(cpu, 2, 7, 128);
             Tensor lse = Tensor.empty(cpu, 2, 3, 7); Tensor lseT = Tensor.empty(cpu, 2, 7, 3);
             Tensor dQkv = Tensor.empty(cpu, 2, 7, 288);
             Backend other = CpuBackend.open(); Tensor lseElsewhere = Tensor.empty(other, 2, 3, 7)) {
            assertMessage(IllegalArgumentException.class, "qkv must have 288 = 3 x 3 heads x 32 columns",
                    () -> op.forward(qkv4, out, lse));
            assertMessage(IllegalArgumentException.class, "qkv must have shape [2, 7, 288], got [2, 8, 288]",
                    () -> op.forward(qkvN, out, lse));
            assertMessage(IllegalArgumentException.class, "qkv must have shape [2, 7, 288], got [2, 7, 3, 4, 24]",
                    () -> op.forward(splitBad, out, lse));
            assertMessage(IllegalArgumentException.class, "out must have shape [2, 7, 96], got [2, 7, 128]",
                    () -> op.forward(qkv, out2, lse));
            assertMessage(IllegalArgumentException.class, "lse must have shape [2, 3, 7], got [2, 7, 3]",
                    () -> op.forward(qkv, out, lseT));
            assertMessage(IllegalArgumentException.class, "lse is on",
                    () -> op.forward(qkv, out, lseElsewhere));
            op.forward(split, out, lse);  // the [B, N, 3, H, Dh] view is accepted
            // Saved tensors that do not belong to this op's shape.
            assertMessage(IllegalArgumentException.class, "lse must have shape [2, 3, 7], got [2, 7, 3]",
                    () -> op.backward(qkv, out, lseT, out, dQkv));
            assertMessage(IllegalArgumentException.class, "out must have shape [2, 7, 96], got [2, 7, 128]",
                    () -> op.backward(qkv, out2, lse, out, dQkv));
            assertMessage(IllegalArgumentException.class, "dOut must have shape [2, 7, 96], got [2, 7, 128]",
                    () -> op.backward(qkv, out, lse, out2, dQkv));
            assertMessage(IllegalArgumentException.class, "dQkv must have 288 = 3 x 3 heads x 32 columns",
                    () -> op.backward(qkv, out, lse, out, qkv4));
            assertMessage(IllegalArgumentException.class, "dOut is required",
                    () -> op.backward(qkv, out, lse, null, dQkv));
            Tensor closed = Tensor.empty(cpu, 2, 3, 7);
            closed.close();
            assertMessage(IllegalStateException.class, "lse tensor is closed", () -> op.forward(qkv, out, closed));
            Attention shut = new Shape(2, 3, 7, 32).op(cpu);
            shut.close();
            shut.close();  // harmless
            assertMessage(IllegalStateException.class, "is closed", () -> shut.forward(qkv, out, lse));
        }
    }

    @Test
    void nativeEntriesRejectMisuseWithoutCrashing() {
        // Below the Java checks: the C entries validate their own arguments (another binding may call them).
        assertTrue(Distill4jNative.d4j_attention_workspace(cpu.kernels(), 0, 7, 3, 32) < 0);
        try (Tensor qkv = Tensor.empty(cpu, 2, 7, 288); Tensor out = Tensor.empty(cpu, 2, 7, 96);
             Tensor lse = Tensor.empty(cpu, 2, 3, 7)) {
            assertNotEquals(0, Distill4jNative.d4j_attention_forward(cpu.kernels(), cpu.stream(), qkv.data(), 2, 0, 3,
                    32, 1f, out.data(), lse.data(), null));
            assertNotEquals(0, Distill4jNative.d4j_attention_forward(cpu.kernels(), cpu.stream(), null, 2, 7, 3, 32, 1f,
                    out.data(), lse.data(), null));
            assertNotEquals(0, Distill4jNative.d4j_attention_backward(cpu.kernels(), cpu.stream(), qkv.data(),
                    out.data(), lse.data(), null, 2, 7, 3, 32, 1f, qkv.data(), null));
        }
    }

    static void assertMessage(Class<? extends Throwable> type, String part, org.junit.jupiter.api.function.Executable run) {
        Throwable e = assertThrows(type, run);
        assertTrue(e.getMessage().contains(part), "message '" + e.getMessage() + "' lacks '" + part + "'");
    }
}
