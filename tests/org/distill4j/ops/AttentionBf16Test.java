package org.distill4j.ops;

import static org.distill4j.ops.AttentionTest.assertMessage;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AbstractTensor;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.distill4j.Bf16Tensor;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.natives.Distill4jNative;
import org.distill4j.reference.TorchAttention;
import org.distill4j.testing.Check;
import org.distill4j.testing.TorchBf16;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The bf16 attention op (CPU kernel, emulated CUDA kernel, CUDA where there is one) against libtorch in float64:
 * {@code scaled_dot_product_attention} on q, k, v split from qkv and d qkv by autograd ({@link TorchAttention}), and
 * the log-sum-exp of the scaled scores with libtorch ops, all on the bf16 values libtorch rounded the random inputs
 * to, so that only the kernels' own roundings show.
 *
 * <p>Bounds from the stated roundings (as bench/gpu/check_attention_bf16.py; native/tests/attention_bf16_emu.cpp
 * checks every element against a tighter per-element bound and a model of the roundings): out carries P rounded to
 * bf16 before P V and the output rounded once, each at most 2⁻⁸ relative (8 significant bits), so
 * ‖out − ref‖/‖ref‖ ≤ 2·2⁻⁸, fp32 terms far below. lse is fp32 from exact bf16 products: 1e-5 relative, 5e-5 where
 * the largest |score| passes 20 (as the fp32 {@link AttentionTest}). The backward runs from our out and lse with a
 * bf16 dOut, against the exact gradient of sum(dOut ∘ out): P and dS rounded to bf16 before their products, the bf16
 * out inside D = rowsum(dOut ∘ out), dqkv rounded once: ‖dqkv − ref‖/‖ref‖ ≤ 4·2⁻⁸. Every output is pre-filled with
 * NaN, so an element not written fails (every comparison fails on NaN).
 */
@SuppressWarnings("try")
class AttentionBf16Test {
    private static final double OUT_TOL = 2 * 0x1p-8, DQKV_TOL = 4 * 0x1p-8;
    private static final double LSE_TOL = 1e-5, LSE_TOL_LARGE = 5e-5, LARGE_SCORE = 20;
    private static final short NAN16 = (short) 0x7fc0;
    private static Backend cpu, emu;

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

    /** A shape: B, H, N, Dh. */
    record Shape(int b, int h, int n, int dh) {
        AttentionBf16 op(Backend be) {
            return AttentionBf16.builder().batch(b).heads(h).tokens(n).headDim(dh).build(be);
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

    /** bf16 inputs (bits, and the same values as floats), libtorch's rounding of fresh N(0, 1) values. */
    record Inputs(short[] qkv, float[] qkvF, short[] dOut, float[] dOutF) {
        /** With qkScale != 1 the q and k columns are multiplied by it before rounding (larger scores). */
        static Inputs random(Shape s, Random rng, double qkScale) {
            float[] qkv = Check.normal(rng, s.qkvSize(), 1), dOut = Check.normal(rng, s.outSize(), 1);
            int ld = 3 * s.h() * s.dh(), qk = 2 * s.h() * s.dh();
            for (int row = 0; row < s.b() * s.n(); row++) {
                for (int c = 0; c < qk; c++) qkv[row * ld + c] = (float) (qkv[row * ld + c] * qkScale);
            }
            short[] q = TorchBf16.round(qkv), d = TorchBf16.round(dOut);
            return new Inputs(q, TorchBf16.widen(q), d, TorchBf16.widen(d));
        }
    }

    /** Our out, lse and dqkv (as floats) of one forward and backward, into NaN-filled outputs. */
    static float[][] run(Backend be, Shape s, Inputs in) {
        try (Bf16Tensor qkv = Bf16Tensor.of(be, in.qkv(), s.b(), s.n(), 3L * s.h() * s.dh());
             Bf16Tensor out = Bf16Tensor.of(be, nan16(s.outSize()), s.b(), s.n(), (long) s.h() * s.dh());
             Tensor lse = Tensor.of(be, nan32(s.b() * s.h() * s.n()), s.b(), s.h(), s.n());
             Bf16Tensor dOut = Bf16Tensor.of(be, in.dOut(), s.b(), s.n(), (long) s.h() * s.dh());
             Bf16Tensor dQkv = Bf16Tensor.of(be, nan16(s.qkvSize()), s.b(), s.n(), 3, s.h(), s.dh())) {
            AttentionBf16 op = s.op(be);
            op.forward(qkv, out, lse);
            op.backward(qkv, out, lse, dOut, dQkv);
            return new float[][] {out.toFloats(), lse.toArray(), dQkv.toFloats()};
        }
    }

    static short[] nan16(int n) {
        short[] a = new short[n];
        Arrays.fill(a, NAN16);
        return a;
    }

    static float[] nan32(int n) {
        float[] a = new float[n];
        Arrays.fill(a, Float.NaN);
        return a;
    }

    /** libtorch, float64: the scaled scores' log-sum-exp [B, H, N] and their largest magnitude. */
    static double[][] torchLse(float[] qkvF, Shape s, double scale) {
        try (PointerScope ignored = new PointerScope()) {
            org.bytedeco.pytorch.Tensor t = AbstractTensor.create(qkvF, s.b(), s.n(), 3, s.h(), s.dh())
                    .to(ScalarType.Double).permute(2, 0, 3, 1, 4);
            org.bytedeco.pytorch.Tensor q = t.select(0, 0), k = t.select(0, 1);
            org.bytedeco.pytorch.Tensor scores = q.matmul(k.transpose(-2, -1)).mul(new Scalar(scale));
            org.bytedeco.pytorch.Tensor lse = scores.logsumexp(-1).contiguous();
            double[] out = new double[s.b() * s.h() * s.n()];
            lse.data_ptr_double().get(out);
            double[] max = new double[1];
            scores.abs().max().contiguous().data_ptr_double().get(max);
            return new double[][] {out, max};
        }
    }

    /** Compares one run with libtorch's float64 results on the same bf16 inputs; returns the three errors. */
    static double[] check(float[][] got, Shape s, Inputs in, float scale, String what) {
        double[] out, dQkv;
        try (TorchAttention torch = new TorchAttention(in.qkvF(), s.b(), s.n(), s.h(), s.dh(), scale, true)) {
            TorchAttention.Result r = torch.run(in.dOutF());
            out = r.out();
            dQkv = r.dQkv();
        }
        double[][] lse = torchLse(in.qkvF(), s, scale);
        double lseTol = lse[1][0] > LARGE_SCORE ? LSE_TOL_LARGE : LSE_TOL;
        double eOut = Check.relErr(got[0], out), eLse = Check.relErr(got[1], lse[0]), eD = Check.relErr(got[2], dQkv);
        String msg = what + String.format(": max |score| %.1f, rel err out %.3g (bound %.3g), lse %.3g (bound %.3g), "
                + "dqkv %.3g (bound %.3g)", lse[1][0], eOut, OUT_TOL, eLse, lseTol, eD, DQKV_TOL);
        System.out.println(msg);
        assertTrue(eOut <= OUT_TOL && eLse <= lseTol && eD <= DQKV_TOL, msg);
        return new double[] {eOut, eLse, eD};
    }

    /** The grid: N 1, 17 (one partial key tile), 65 (a second tile), 198 (ViT); Dh 32 and 64; H 1..3. */
    static Stream<Arguments> grid() {
        List<Arguments> out = new ArrayList<>();
        int i = 0;
        for (String be : new String[] {"cpu", "cuda-emu"}) {
            for (int n : new int[] {1, 17, 65, 198}) {
                for (int dh : new int[] {32, 64}) {
                    int h = 1 + i % 3, b = 1 + (i / 3) % 2;
                    // The emulator runs one OS thread per CUDA thread: its largest cases get one batch and head.
                    if (be.equals("cuda-emu") && n == 198) b = h = 1;
                    out.add(Arguments.of(be, new Shape(b, h, n, dh)));
                    i++;
                }
            }
        }
        return out.stream();
    }

    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("grid")
    void matchesLibtorchFloat64OnBf16Inputs(String backend, Shape s) {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        Backend be = backend.equals("cpu") ? cpu : emu;
        Inputs in = Inputs.random(s, rng, 1);
        check(run(be, s, in), s, in, s.op(be).scale(), "seed=" + seed + " " + backend + " " + s);
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("backendNames")
    void largeScoresCustomScaleAndSplitShape(String backend) {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        Backend be = backend.equals("cpu") ? cpu : emu;
        // q and k × 3: scores up to ~60 with Dh = 64, softmax rows near one-hot (new maxima of very different size).
        Shape s = new Shape(1, 2, 70, 64);
        Inputs in = Inputs.random(s, rng, 3);
        float[][] got = run(be, s, in);
        check(got, s, in, s.op(be).scale(), "seed=" + seed + " " + backend + " " + s + " q, k x 3");
        // A scale of the user's, and qkv given as [B, N, 3, H, Dh].
        float scale = 0.37f;
        Shape t = new Shape(2, 2, 33, 32);
        Inputs in2 = Inputs.random(t, rng, 1);
        AttentionBf16 op = AttentionBf16.builder().batch(2).heads(2).tokens(33).headDim(32).scale(scale).build(be);
        assertEquals(scale, op.scale());
        try (Bf16Tensor qkv = Bf16Tensor.of(be, in2.qkv(), op.qkvSplitShape());
             Bf16Tensor out = Bf16Tensor.of(be, nan16(t.outSize()), op.outShape());
             Tensor lse = Tensor.of(be, nan32(2 * 2 * 33), op.lseShape());
             Bf16Tensor dOut = Bf16Tensor.of(be, in2.dOut(), op.outShape());
             Bf16Tensor dQkv = Bf16Tensor.of(be, nan16(t.qkvSize()), op.qkvShape())) {
            op.forward(qkv, out, lse);
            op.backward(qkv, out, lse, dOut, dQkv);
            check(new float[][] {out.toFloats(), lse.toArray(), dQkv.toFloats()}, t, in2, scale,
                    "seed=" + seed + " " + backend + " " + t + " scale " + scale);
            // Same inputs, same bits (no atomics).
            short[] o1 = out.toArray(), d1 = dQkv.toArray();
            op.forward(qkv, out, lse);
            op.backward(qkv, out, lse, dOut, dQkv);
            assertArrayEquals(o1, out.toArray(), "out run to run");
            assertArrayEquals(d1, dQkv.toArray(), "dqkv run to run");
        }
    }

    static Stream<String> backendNames() {
        return Stream.of("cpu", "cuda-emu");
    }

    @Test
    void cudaMatchesLibtorch() {
        try (Backend cuda = Check.cudaOrSkip()) {
            long seed = Check.freshSeed();
            Random rng = new Random(seed);
            for (Shape s : new Shape[] {new Shape(8, 3, 198, 64), new Shape(2, 3, 1, 64), new Shape(3, 2, 65, 32),
                    new Shape(2, 1, 1000, 64)}) {
                Inputs in = Inputs.random(s, rng, 1);
                check(run(cuda, s, in), s, in, s.op(cuda).scale(), "seed=" + seed + " cuda " + s);
            }
        }
    }

    @Test
    void badInputIsAClearException() {
        assertMessage(IllegalArgumentException.class, "head dim 48 is not supported: 32 or 64",
                () -> AttentionBf16.builder().batch(2).tokens(50).heads(4).headDim(48).build(cpu));
        assertMessage(IllegalArgumentException.class, "head dim 128 is not supported: 32 or 64",
                () -> AttentionBf16.builder().batch(2).tokens(50).heads(4).headDim(128).build(cpu));
        assertMessage(IllegalArgumentException.class, "every size must be set and >= 1, got B=0",
                () -> AttentionBf16.builder().batch(0).tokens(50).heads(3).headDim(64).build(cpu));
        assertMessage(IllegalArgumentException.class, "N=-1",
                () -> AttentionBf16.builder().batch(2).heads(3).headDim(64).build(cpu));
        assertMessage(IllegalArgumentException.class, "B and H must be at most 65535",
                () -> AttentionBf16.builder().batch(65536).tokens(1).heads(1).headDim(32).build(cpu));
        assertMessage(IllegalArgumentException.class, "B and H must be at most 65535",
                () -> AttentionBf16.builder().batch(1).tokens(1).heads(65536).headDim(32).build(cpu));
        assertMessage(IllegalArgumentException.class, "N at most 2^24",
                () -> AttentionBf16.builder().batch(1).tokens((1L << 24) + 1).heads(1).headDim(32).build(cpu));
        assertMessage(IllegalArgumentException.class, "scale must be finite and nonzero",
                () -> AttentionBf16.builder().scale(Float.POSITIVE_INFINITY));
        AttentionBf16 op = new Shape(2, 3, 7, 32).op(cpu);
        try (Bf16Tensor qkv = Bf16Tensor.empty(cpu, 2, 7, 288); Bf16Tensor qkv4 = Bf16Tensor.empty(cpu, 2, 7, 384);
             Bf16Tensor qkvN = Bf16Tensor.empty(cpu, 2, 8, 288); Bf16Tensor split = Bf16Tensor.empty(cpu, 2, 7, 3, 3, 32);
             Bf16Tensor out = Bf16Tensor.empty(cpu, 2, 7, 96); Bf16Tensor out2 = Bf16Tensor.empty(cpu, 2, 7, 128);
             Tensor lse = Tensor.empty(cpu, 2, 3, 7); Tensor lseT = Tensor.empty(cpu, 2, 7, 3);
             Bf16Tensor dQkv = Bf16Tensor.empty(cpu, 2, 7, 288);
             Backend other = CpuBackend.open(); Tensor lseElsewhere = Tensor.empty(other, 2, 3, 7);
             Bf16Tensor outElsewhere = Bf16Tensor.empty(other, 2, 7, 96)) {
            // Zeroed inputs: the accepted calls below compute on defined values.
            qkv.copyFrom(new short[2 * 7 * 288]);
            split.copyFrom(new short[2 * 7 * 288]);
            assertMessage(IllegalArgumentException.class, "qkv must have 288 = 3 x 3 heads x 32 columns",
                    () -> op.forward(qkv4, out, lse));
            assertMessage(IllegalArgumentException.class, "qkv must have shape [2, 7, 288], got [2, 8, 288]",
                    () -> op.forward(qkvN, out, lse));
            assertMessage(IllegalArgumentException.class, "out must have shape [2, 7, 96], got [2, 7, 128]",
                    () -> op.forward(qkv, out2, lse));
            assertMessage(IllegalArgumentException.class, "lse must have shape [2, 3, 7], got [2, 7, 3]",
                    () -> op.forward(qkv, out, lseT));
            assertMessage(IllegalArgumentException.class, "lse is on", () -> op.forward(qkv, out, lseElsewhere));
            assertMessage(IllegalArgumentException.class, "out is on", () -> op.forward(qkv, outElsewhere, lse));
            assertMessage(IllegalArgumentException.class, "qkv is required", () -> op.forward(null, out, lse));
            assertMessage(IllegalArgumentException.class, "lse is required", () -> op.forward(qkv, out, null));
            op.forward(split, out, lse);  // the [B, N, 3, H, Dh] view is accepted
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
            Bf16Tensor closedQkv = Bf16Tensor.empty(cpu, 2, 7, 288);
            closedQkv.close();
            assertMessage(IllegalStateException.class, "qkv tensor is closed", () -> op.forward(closedQkv, out, lse));
            assertMessage(IllegalStateException.class, "dQkv tensor is closed",
                    () -> op.backward(qkv, out, lse, out, closedQkv));
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("backendNames")
    void nativeEntriesRejectMisuseWithoutCrashing(String backend) {
        // Below the Java checks: the C entries validate their own arguments (another binding may call them).
        Backend be = backend.equals("cpu") ? cpu : emu;
        try (Bf16Tensor qkv = Bf16Tensor.empty(be, 2, 7, 432); Bf16Tensor out = Bf16Tensor.empty(be, 2, 7, 144);
             Tensor lse = Tensor.empty(be, 2, 3, 7)) {
            int status = Distill4jNative.d4j_attention_bf16_forward(be.kernels(), be.stream(), qkv.data(), 2, 7, 3, 48,
                    1f, out.data(), lse.data());
            assertNotEquals(0, status);
            assertMessage(IllegalStateException.class, "head dim 48 is not supported: 32 or 64",
                    () -> be.check(status, "attention bf16 forward"));
            assertNotEquals(0, Distill4jNative.d4j_attention_bf16_forward(be.kernels(), be.stream(), qkv.data(), 2, 0,
                    3, 32, 1f, out.data(), lse.data()));
            assertNotEquals(0, Distill4jNative.d4j_attention_bf16_forward(be.kernels(), be.stream(), null, 2, 7, 3, 32,
                    1f, out.data(), lse.data()));
            assertNotEquals(0, Distill4jNative.d4j_attention_bf16_forward(be.kernels(), be.stream(), qkv.data(), 2, 7,
                    3, 32, Float.NaN, out.data(), lse.data()));
            assertNotEquals(0, Distill4jNative.d4j_attention_bf16_backward(be.kernels(), be.stream(), qkv.data(),
                    out.data(), lse.data(), null, 2, 7, 3, 32, 1f, qkv.data()));
            assertNotEquals(0, Distill4jNative.d4j_attention_bf16_backward(be.kernels(), be.stream(), qkv.data(),
                    out.data(), lse.data(), out.data(), 2, 7, 3, 48, 1f, qkv.data()));
        }
    }
}
