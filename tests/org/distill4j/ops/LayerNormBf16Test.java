package org.distill4j.ops;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.Random;
import java.util.stream.Stream;
import org.distill4j.Bf16Tensor;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.natives.Distill4jNative;
import org.distill4j.reference.TorchLayerNorm;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * LayerNorm's forward with a bf16 y ({@code d4j_layernorm_forward_bf16}: each y the fp32 value rounded once; mean
 * and rstd fp32) against libtorch's {@code layer_norm} in float64, rounded to bf16 by libtorch's own
 * {@code .to(torch.bfloat16)}.
 *
 * <p>Bound, element by element: |ours − bf16(ref)| ≤ one bf16 ulp + e, e = 1e-5·(|w|(|x̂| + rstd·|mean|) + |b|).
 * e is LayerNormTest's 1e-5 relative fp32 tolerance taken per element over the magnitudes that enter y (x − mean
 * cancels, so the mean's rounding scales with |mean|·rstd; y = x̂w + b can cancel to near 0, where no relative
 * bound holds). Our fp32 y lies within e of the reference; where e is far below half a bf16 ulp its rounding is
 * bf16(ref) or, when a rounding midpoint lies within e of ref, the neighbour across it: one ulp (libtorch's
 * float64 → bf16 goes through float, a second rounding that near a midpoint can move its answer by one ulp too).
 * Also: the bf16 y is libtorch's bf16 of our own fp32 y bit for bit (one rounding, fused), mean and rstd are the
 * fp32 forward's bits; a row holding a NaN comes out NaN; bad arguments are refused.
 */
class LayerNormBf16Test {
    private static final float EPS = 1e-6f;
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

    record Outputs(float[] y32, float[] mean32, float[] rstd32, short[] y, float[] mean, float[] rstd) {}

    static Outputs run(Backend be, float[] x, float[] w, float[] b, int m, int c) {
        try (Tensor xt = Tensor.of(be, x, m, c); Tensor wt = Tensor.of(be, w, c); Tensor bt = Tensor.of(be, b, c);
             Tensor y32 = Tensor.empty(be, m, c); Tensor mean32 = Tensor.empty(be, m);
             Tensor rstd32 = Tensor.empty(be, m);
             Bf16Tensor y = Bf16Tensor.empty(be, m, c); Tensor mean = Tensor.empty(be, m);
             Tensor rstd = Tensor.empty(be, m)) {
            short[] fill = new short[m * c];
            Arrays.fill(fill, (short) 0xffff);  // an unwritten element fails
            y.copyFrom(fill);
            assertEquals(0, Distill4jNative.d4j_layernorm_forward(be.kernels(), be.stream(), xt.data(), wt.data(),
                    bt.data(), m, c, EPS, y32.data(), mean32.data(), rstd32.data()));
            assertEquals(0, Distill4jNative.d4j_layernorm_forward_bf16(be.kernels(), be.stream(), xt.data(), wt.data(),
                    bt.data(), m, c, EPS, y.data(), mean.data(), rstd.data()));
            return new Outputs(y32.toArray(), mean32.toArray(), rstd32.toArray(), y.toArray(), mean.toArray(),
                    rstd.toArray());
        }
    }

    static void check(Backend be, Random rng, int m, int c, boolean nanRow, String what) {
        float[] x = Check.normal(rng, m * c, 2), w = Check.normal(rng, c, 1), b = Check.normal(rng, c, 1);
        for (int i = 0; i < x.length; i++) x[i] += 3f;  // a mean far from 0
        if (nanRow) x[c / 2] = Float.NaN;
        Outputs got = run(be, x, w, b, m, c);
        assertArrayEquals(got.mean32(), got.mean(), what + ": mean");
        assertArrayEquals(got.rstd32(), got.rstd(), what + ": rstd");
        TorchLayerNorm.Result ref = TorchLayerNorm.compute(x, w, b, new float[m * c], m, c, EPS);
        short[] want = GeluBf16Test.torchBf16(ref.y()), ours = GeluBf16Test.torchBf16(GeluBf16Test.widen(got.y32()));
        for (int r = 0; r < m; r++) {
            for (int j = 0; j < c; j++) {
                int i = r * c + j;
                String at = what + ": row " + r + " col " + j;
                float y = Bf16Tensor.toFloat(got.y()[i]), wy = Bf16Tensor.toFloat(want[i]);
                if (nanRow && r == 0) {
                    assertTrue(Float.isNaN(y), at + ": NaN row gave " + y);
                    continue;
                }
                assertEquals(ours[i], got.y()[i], at + ": not bf16 of the fp32 y");
                double xhat = (x[i] - ref.mean()[r]) * ref.rstd()[r];
                double e = 1e-5 * (Math.abs(w[j]) * (Math.abs(xhat) + ref.rstd()[r] * Math.abs(ref.mean()[r]))
                        + Math.abs(b[j]));
                double ulp = Math.max(GeluBf16Test.bf16Ulp(want[i]), GeluBf16Test.bf16Ulp(got.y()[i]));
                assertTrue(Math.abs(y - wy) <= ulp + e, at + ": y " + y + ", libtorch " + wy + " (e " + e + ")");
            }
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("backends")
    void matchesLibtorchRoundedToBf16(String name) {
        Backend be = name.equals("cpu") ? cpu : emu;
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        // Rows: one, a partial block of 8 warps, several; C below, at and past the CPU's vector of 8 and 32 lanes.
        for (int m : new int[] {1, 9, 70}) {
            for (int c : new int[] {1, 7, 8, 33, 192, 300}) {
                check(be, rng, m, c, false, name + " seed=" + seed + " M=" + m + " C=" + c);
            }
        }
        check(be, rng, 9, 33, true, name + " seed=" + seed + " NaN row");
    }

    @Test
    void cudaKernelMatchesLibtorch() {
        try (Backend cuda = Check.cudaOrSkip()) {
            long seed = Check.freshSeed();
            Random rng = new Random(seed);
            for (int[] mc : new int[][] {{1, 1}, {9, 33}, {1576, 192}}) {
                check(cuda, rng, mc[0], mc[1], false, "cuda seed=" + seed + " M=" + mc[0] + " C=" + mc[1]);
            }
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("backends")
    void nativeEntryRejectsMisuseWithoutCrashing(String name) {
        Backend be = name.equals("cpu") ? cpu : emu;
        try (Tensor f = Tensor.empty(be, 8); Bf16Tensor y = Bf16Tensor.empty(be, 8)) {
            assertNotEquals(0, Distill4jNative.d4j_layernorm_forward_bf16(be.kernels(), be.stream(), f.data(), f.data(),
                    f.data(), 0, 4, EPS, y.data(), f.data(), f.data()));
            assertNotEquals(0, Distill4jNative.d4j_layernorm_forward_bf16(be.kernels(), be.stream(), f.data(), f.data(),
                    f.data(), 2, 4, -1f, y.data(), f.data(), f.data()));
            assertNotEquals(0, Distill4jNative.d4j_layernorm_forward_bf16(be.kernels(), be.stream(), f.data(), f.data(),
                    f.data(), 2, 4, EPS, null, f.data(), f.data()));
            assertNotEquals(0, Distill4jNative.d4j_layernorm_forward_bf16(be.kernels(), be.stream(), null, f.data(),
                    f.data(), 2, 4, EPS, y.data(), f.data(), f.data()));
        }
    }
}
