package org.distill4j.ops;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.Random;
import java.util.stream.Stream;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AbstractTensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.distill4j.Bf16Tensor;
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
import org.junit.jupiter.params.provider.MethodSource;

/**
 * GELU with bf16 outputs ({@code d4j_gelu_forward_bf16}, {@code d4j_gelu_backward_bf16}: the fp32 value rounded
 * once) against libtorch: {@code gelu(x, "none")} in float64 and dx by autograd (below x = −5, where libtorch's
 * float64 loses digits, {@link GeluFloat64}, as {@link GeluTest} does), rounded to bf16 by libtorch's own
 * {@code .to(torch.bfloat16)}.
 *
 * <p>Bound: |ours − bf16(ref)| ≤ one bf16 ulp of bf16(ref) (+ 1e-7·|dy| for dx). Our fp32 value is within 1e-6
 * relative of the reference (GeluTest's bound), far below half a bf16 ulp (2^-9 relative), yet where the reference
 * lies within that distance of a rounding midpoint the two round to neighbours: one ulp. libtorch converts float64
 * to bf16 through float (a second rounding), which near a midpoint can also move its answer by one ulp the other
 * way, still within the bound. The 1e-7·|dy| term is GeluTest's absolute floor (gelu' crosses 0 near x = −0.75,
 * and underflows in float near x = −13). y is compared where it is a normal float, as in GeluTest; below that the
 * bf16 y must be no larger than the smallest normal. Every comparison fails on NaN; NaN in x gives NaN out, with
 * its sign. Also: the bf16 output equals libtorch's bf16 rounding of our own fp32 output bit for bit (the same
 * value rounded once: one kernel instead of GELU then a cast), on the CPU, the emulated CUDA kernel and CUDA where
 * there is one; bad arguments are refused without a crash.
 */
@SuppressWarnings("try") // the PointerScope is used for its effect
class GeluBf16Test {
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

    static Stream<String> backends() {
        return Stream.of("cpu", "cuda-emu");
    }

    /** libtorch's {@code torch.tensor(v, dtype=float64).to(torch.bfloat16)}, as bits. */
    static short[] torchBf16(double[] v) {
        try (PointerScope ignored = new PointerScope()) {
            org.bytedeco.pytorch.Tensor t =
                    AbstractTensor.create(v, v.length).to(ScalarType.BFloat16).contiguous().view(ScalarType.Short);
            short[] out = new short[v.length];
            t.data_ptr_short().get(out);
            return out;
        }
    }

    static double[] widen(float[] f) {
        double[] d = new double[f.length];
        for (int i = 0; i < f.length; i++) d[i] = f[i];
        return d;
    }

    /** fp32 y, dx and bf16 y, dx of one backend. */
    record Outputs(float[] y32, float[] dx32, short[] y, short[] dx) {}

    static Outputs run(Backend be, float[] x, float[] dy) {
        int n = x.length;
        try (Tensor xt = Tensor.of(be, x, n); Tensor dyt = Tensor.of(be, dy, n); Tensor y32 = Tensor.empty(be, n);
             Tensor dx32 = Tensor.empty(be, n); Bf16Tensor y = Bf16Tensor.empty(be, n);
             Bf16Tensor dx = Bf16Tensor.empty(be, n)) {
            short[] fill = new short[n];
            Arrays.fill(fill, (short) 0xffff);  // a NaN no input here produces: an unwritten element fails
            y.copyFrom(fill);
            dx.copyFrom(fill);
            Gelu.forward(xt, y32);
            Gelu.backward(xt, dyt, dx32);
            assertEquals(0, Distill4jNative.d4j_gelu_forward_bf16(be.kernels(), be.stream(), xt.data(), n, y.data()));
            assertEquals(0, Distill4jNative.d4j_gelu_backward_bf16(be.kernels(), be.stream(), xt.data(), dyt.data(), n,
                    dx.data()));
            return new Outputs(y32.toArray(), dx32.toArray(), y.toArray(), dx.toArray());
        }
    }

    /** GeluTest's inputs, exact bf16 ties in y (x in [8, 16): Φ is 1.0f, y = x) and in dx (x ≥ 7: dx = dy). */
    static float[][] inputs(Random rng, int n) {
        float[] x = GeluTest.inputs(rng, n), dy = Check.normal(rng, n, 1);
        for (int k = 0; k < 128 && 1800 + 256 <= n; k++) {
            x[1800 + k] = 8f + (2 * k + 1) / 32f;
            x[1928 + k] = 7f + k / 16f;
            dy[1928 + k] = (k % 2 == 1 ? -1f : 1f) * (1f + (2 * (k / 2) + 1) / 256f);
        }
        return new float[][] {x, dy};
    }

    static double bf16Ulp(short b) {
        return Math.ulp(Math.abs(Bf16Tensor.toFloat(b))) * 65536.0;
    }

    static void assertMatches(Outputs got, float[] x, float[] dy, String what) {
        TorchGelu.Result torch = TorchGelu.compute(x, dy);
        GeluFloat64.Result exact = GeluFloat64.compute(x, dy);
        int n = x.length;
        double[] ry = new double[n], rdx = new double[n];
        for (int i = 0; i < n; i++) {
            boolean t = x[i] >= -5f || Float.isNaN(x[i]);
            ry[i] = t ? torch.y()[i] : exact.y()[i];
            rdx[i] = t ? torch.dx()[i] : exact.dx()[i];
        }
        short[] wantY = torchBf16(ry), wantDx = torchBf16(rdx);
        short[] ourY = torchBf16(widen(got.y32())), ourDx = torchBf16(widen(got.dx32()));
        for (int i = 0; i < n; i++) {
            String at = what + ": i = " + i + ", x = " + x[i] + ", dy = " + dy[i];
            if (Float.isNaN(x[i])) {
                short q = (short) ((Float.floatToRawIntBits(x[i]) >>> 16) | 0x0040);
                assertTrue(got.y()[i] == q && got.dx()[i] == q, at + ": NaN in, its quiet bits out");
                continue;
            }
            // libtorch's NaN bits differ by path (0x7FC0 or 0xFFFF): NaN-ness is what its rounding says there.
            assertTrue(got.y()[i] == ourY[i] || Float.isNaN(Bf16Tensor.toFloat(ourY[i]))
                    && Float.isNaN(Bf16Tensor.toFloat(got.y()[i])), at + ": y is not bf16 of the fp32 y");
            assertTrue(got.dx()[i] == ourDx[i] || Float.isNaN(Bf16Tensor.toFloat(ourDx[i]))
                    && Float.isNaN(Bf16Tensor.toFloat(got.dx()[i])), at + ": dx is not bf16 of the fp32 dx");
            float y = Bf16Tensor.toFloat(got.y()[i]), wy = Bf16Tensor.toFloat(wantY[i]);
            if (Math.abs(ry[i]) >= Float.MIN_NORMAL) {
                assertTrue(Math.abs(y - wy) <= bf16Ulp(wantY[i]), at + ": y " + y + ", libtorch " + wy);
            } else {
                assertTrue(Math.abs(y) <= Float.MIN_NORMAL, at + ": tiny y " + y);
            }
            float d = Bf16Tensor.toFloat(got.dx()[i]), wd = Bf16Tensor.toFloat(wantDx[i]);
            assertTrue(Math.abs(d - wd) <= bf16Ulp(wantDx[i]) + 1e-7 * Math.abs(dy[i]),
                    at + ": dx " + d + ", libtorch " + wd);
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("backends")
    void matchesLibtorchRoundedToBf16(String name) {
        Backend be = name.equals("cpu") ? cpu : emu;
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        // 1; 7 (the CPU's scalar tail only); 4097 (a 4096 block and one element); 9001 (emulated grid-stride turns).
        for (int n : new int[] {1, 7, 33, 3000, 4097, 9001}) {
            float[][] in = inputs(rng, n);
            assertMatches(run(be, in[0], in[1]), in[0], in[1], name + " seed=" + seed + " n=" + n);
        }
    }

    @Test
    void specialValues() {
        float[] x = {Float.NaN, Float.intBitsToFloat(0xff812345), Float.POSITIVE_INFINITY, 0f, -0f, 30f, -30f, 1e20f,
                     -1e20f, 8f + 1f / 32f, 8f + 3f / 32f};
        float[] dy = new float[x.length];
        Arrays.fill(dy, 1f);
        for (String name : new String[] {"cpu", "cuda-emu"}) {
            Outputs o = run(name.equals("cpu") ? cpu : emu, x, dy);
            assertEquals((short) 0x7fc0, o.y()[0], name);
            assertEquals((short) 0xffc1, o.y()[1], name + ": a signalling NaN's sign and upper payload, quieted");
            assertEquals((short) 0x7f80, o.y()[2], name);
            assertEquals((short) 0x0000, o.y()[3], name);
            assertEquals((short) 0x3f00, o.dx()[3], name + ": gelu'(0) = 1/2");
            assertEquals((short) 0x41f0, o.y()[5], name);
            assertEquals(0f, Bf16Tensor.toFloat(o.y()[6]), 0f, name);
            assertEquals((short) 0x3f80, o.dx()[5], name);
            assertEquals(Bf16Tensor.fromFloat(1e20f), o.y()[7], name);
            assertEquals((short) 0x4100, o.y()[9], name + ": a tie, kept part even: down");
            assertEquals((short) 0x4102, o.y()[10], name + ": a tie, kept part odd: up");
        }
    }

    @Test
    void cudaKernelMatchesLibtorch() {
        try (Backend cuda = Check.cudaOrSkip()) {
            long seed = Check.freshSeed();
            Random rng = new Random(seed);
            for (int n : new int[] {1, 37, 6528 * 1536 + 3}) {
                float[][] in = inputs(rng, n);
                assertMatches(run(cuda, in[0], in[1]), in[0], in[1], "cuda seed=" + seed + " n=" + n);
            }
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("backends")
    void nativeEntriesRejectMisuseWithoutCrashing(String name) {
        Backend be = name.equals("cpu") ? cpu : emu;
        try (Tensor x = Tensor.empty(be, 8); Bf16Tensor y = Bf16Tensor.empty(be, 8)) {
            assertNotEquals(0, Distill4jNative.d4j_gelu_forward_bf16(be.kernels(), be.stream(), null, 8, y.data()));
            assertNotEquals(0, Distill4jNative.d4j_gelu_forward_bf16(be.kernels(), be.stream(), x.data(), 8, null));
            assertNotEquals(0, Distill4jNative.d4j_gelu_forward_bf16(be.kernels(), be.stream(), x.data(), 0, y.data()));
            assertNotEquals(0, Distill4jNative.d4j_gelu_forward_bf16(be.kernels(), be.stream(), x.data(), -5,
                    y.data()));
            assertNotEquals(0, Distill4jNative.d4j_gelu_backward_bf16(be.kernels(), be.stream(), x.data(), null, 8,
                    y.data()));
            assertNotEquals(0, Distill4jNative.d4j_gelu_backward_bf16(be.kernels(), be.stream(), x.data(), x.data(), 8,
                    null));
            assertNotEquals(0, Distill4jNative.d4j_gelu_backward_bf16(be.kernels(), be.stream(), x.data(), x.data(), 0,
                    y.data()));
        }
    }
}
