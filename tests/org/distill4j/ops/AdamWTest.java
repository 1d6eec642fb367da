package org.distill4j.ops;

import static org.distill4j.ops.KlDivTest.assertMessage;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AbstractTensor;
import org.bytedeco.pytorch.AdamWOptions;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.reference.AdamWFloat64;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * AdamW over several steps against libtorch's own optimizer (torch::optim::AdamW, float64), with weight decay and
 * a gradient scale; the moments against the float64 formula; CPU against the emulated CUDA kernel.
 */
@SuppressWarnings("try")
class AdamWTest {
    private static final double TOL = 1e-5;
    private static final int STEPS = 6;
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

    /** param, m, v after {@code grads.length} steps of ours from {@code p0} (m = v = 0), grad scale {@code scale}. */
    static float[][] runOurs(Backend be, AdamW opt, float[] p0, float[][] grads, float[] scale) {
        int n = p0.length;
        try (Tensor p = Tensor.of(be, p0, n); Tensor g = Tensor.empty(be, n); Tensor m = Tensor.empty(be, n).zero();
             Tensor v = Tensor.empty(be, n).zero(); Tensor s = scale == null ? null : Tensor.empty(be, 1)) {
            for (int k = 0; k < grads.length; k++) {
                g.copyFrom(grads[k]);
                if (s != null) s.copyFrom(new float[] {scale[k]});
                opt.step(p, g, m, v, k + 1, s);
            }
            return new float[][] {p.toArray(), m.toArray(), v.toArray()};
        }
    }

    /** torch::optim::AdamW in float64 over the same gradients (each times its scale, as clip_grad_norm_ does). */
    static double[] runTorch(AdamW opt, float[] p0, float[][] grads, float[] scale) {
        int n = p0.length;
        try (PointerScope ignored = new PointerScope()) {
            org.bytedeco.pytorch.Tensor p = AbstractTensor.create(p0, n).to(ScalarType.Double);
            p.set_requires_grad(true);
            // The hyper-parameters as a PyTorch user writes them (0.999, not 0.999f widened): see AdamWFloat64.decimal.
            AdamWOptions o = new AdamWOptions(AdamWFloat64.decimal(opt.lr()));
            DoublePointer betas = o.betas();  // a std::tuple<double, double>: find which slot holds beta1 (0.9)
            int first = betas.get(0) == 0.9 ? 0 : 1;
            betas.put(first, AdamWFloat64.decimal(opt.beta1()));
            betas.put(1 - first, AdamWFloat64.decimal(opt.beta2()));
            o.eps().put(AdamWFloat64.decimal(opt.eps()));
            o.weight_decay().put(AdamWFloat64.decimal(opt.weightDecay()));
            org.bytedeco.pytorch.AdamW torchOpt = new org.bytedeco.pytorch.AdamW(new TensorVector(p), o);
            for (int k = 0; k < grads.length; k++) {
                double[] g = new double[n];
                for (int i = 0; i < n; i++) g[i] = (double) grads[k][i] * (scale == null ? 1 : scale[k]);
                p.mutable_grad().put(AbstractTensor.create(g, n));
                torchOpt.step();
            }
            double[] out = new double[n];
            p.contiguous().data_ptr_double().get(out);
            return out;
        }
    }

    static float[][] grads(Random rng, int steps, int n) {
        float[][] g = new float[steps][];
        for (int k = 0; k < steps; k++) g[k] = Check.normal(rng, n, 0.5);
        return g;
    }

    @Test
    void matchesLibtorchOptimizerOverSeveralSteps() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        for (int n : new int[] {1, 17, 10007}) {
            float[] p0 = Check.normal(rng, n, 1);
            float[][] g = grads(rng, STEPS, n);
            float[] scale = new float[STEPS];
            for (int k = 0; k < STEPS; k++) scale[k] = 0.2f + 0.8f * rng.nextFloat();
            AdamW[] opts = {AdamW.builder().build(), AdamW.builder().lr(1e-2f).weightDecay(0.1f).build(),
                    AdamW.builder().lr(3e-3f).betas(0.8f, 0.99f).eps(1e-6f).weightDecay(0f).build()};
            for (AdamW opt : opts) {
                for (float[] sc : new float[][] {null, scale}) {
                    double[] ref = runTorch(opt, p0, g, sc);
                    float[] ours = runOurs(cpu, opt, p0, g, sc)[0];
                    String what = "seed=" + seed + " n=" + n + " " + opt + " scaled=" + (sc != null);
                    double err = Check.relErr(ours, ref);
                    assertTrue(err <= TOL, what + ": param rel err " + err);
                    // The update itself, not only the parameter it is added to (p0 dominates the norm above):
                    // ‖Δours − Δref‖ ≤ 1e-4 ‖Δref‖ + STEPS ‖ulp(p)‖. The second term is the fp32 parameter's own
                    // rounding, half an ulp a step; it dominates where random steps nearly cancel (n = 1).
                    double diff = 0, norm = 0, ulps = 0;
                    for (int i = 0; i < n; i++) {
                        double dRef = ref[i] - p0[i], e = (ours[i] - p0[i]) - dRef;
                        diff += e * e;
                        norm += dRef * dRef;
                        double u = STEPS * Math.ulp(Math.max(Math.abs(p0[i]), Math.abs(ours[i])));
                        ulps += u * u;
                    }
                    double allowed = 1e-4 * Math.sqrt(norm) + Math.sqrt(ulps);
                    assertTrue(Math.sqrt(diff) <= allowed, what + ": update error " + Math.sqrt(diff) + " > " + allowed);
                }
            }
        }
    }

    @Test
    void momentsMatchTheFloat64Formula() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        int n = 1000;
        float[] p0 = Check.normal(rng, n, 1);
        float[][] g = grads(rng, STEPS, n);
        AdamW opt = AdamW.builder().lr(1e-2f).weightDecay(0.05f).build();
        double[] p = new double[n], m = new double[n], v = new double[n];
        for (int i = 0; i < n; i++) p[i] = p0[i];
        for (int k = 0; k < STEPS; k++) {
            AdamWFloat64.step(p, g[k], m, v, k + 1, AdamWFloat64.decimal(opt.lr()), AdamWFloat64.decimal(opt.beta1()),
                    AdamWFloat64.decimal(opt.beta2()), AdamWFloat64.decimal(opt.eps()),
                    AdamWFloat64.decimal(opt.weightDecay()), 0.5);
        }
        float[] half = new float[STEPS];
        java.util.Arrays.fill(half, 0.5f);
        float[][] ours = runOurs(cpu, opt, p0, g, half);
        assertTrue(Check.relErr(ours[0], p) <= TOL, "seed=" + seed + ": param");
        assertTrue(Check.relErr(ours[1], m) <= TOL, "seed=" + seed + ": m");
        assertTrue(Check.relErr(ours[2], v) <= TOL, "seed=" + seed + ": v");
    }

    @Test
    void emulatedCudaKernelMatchesCpuKernel() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        for (int n : new int[] {1, 33, 4099}) {
            float[] p0 = Check.normal(rng, n, 1);
            float[][] g = grads(rng, 3, n);
            float[] scale = {0.5f, 1f, 0.25f};
            AdamW opt = AdamW.builder().lr(1e-2f).weightDecay(0.1f).build();
            for (float[] sc : new float[][] {null, scale}) {
                float[][] want = runOurs(cpu, opt, p0, g, sc), got = runOurs(emu, opt, p0, g, sc);
                assertSameSteps(got, want, opt, p0, g, sc, "seed=" + seed + " n=" + n);
            }
        }
    }

    /**
     * Two kernels' parameters, m and v after the same steps agree within 1e-6 of the size of the terms each output
     * sums, not of the output itself: the kernels may contract b1·m + (1 − b1)·g into an FMA or not (the CPU one
     * does, the emulated one does not), and where random steps cancel (n = 1) a difference of an ulp of the terms is
     * any fraction of the result. Terms: m sums (1 − b1)·b1^k·|g·s|; v is a sum of squares (no cancellation); the
     * parameter is p0 plus one update a step of size lr·(|m̂|/(√v̂ + eps) + wd·|p|) ≤ 2·lr here (by Cauchy–Schwarz
     * |m̂|/√v̂ ≤ 1.01 over three steps with these betas, and wd·|p| &lt; 1).
     */
    private static void assertSameSteps(float[][] got, float[][] want, AdamW opt, float[] p0, float[][] g,
                                        float[] scale, String what) {
        int n = p0.length, steps = g.length;
        double[][] size = new double[3][n];
        for (int i = 0; i < n; i++) {
            double m = 0;
            for (int k = 0; k < steps; k++) {
                m = opt.beta1() * m + (1 - opt.beta1()) * Math.abs(g[k][i] * (scale == null ? 1 : scale[k]));
            }
            size[0][i] = Math.abs(p0[i]) + 2.0 * opt.lr() * steps;
            size[1][i] = m;
            size[2][i] = Math.abs(want[2][i]);
        }
        String[] names = {"param", "m", "v"};
        for (int o = 0; o < 3; o++) {
            double diff = 0, norm = 0;
            for (int i = 0; i < n; i++) {
                double e = (double) got[o][i] - want[o][i];
                diff += e * e;
                norm += size[o][i] * size[o][i];
            }
            double err = Math.sqrt(diff / norm);
            assertTrue(err <= 1e-6, what + " " + names[o] + ": error " + err + " of the terms' size");
        }
    }

    @Test
    void cudaKernelMatchesCpuKernel() {
        try (Backend cuda = Check.cudaOrSkip()) {
            long seed = Check.freshSeed();
            Random rng = new Random(seed);
            for (int n : new int[] {1, 1001, 1 << 20}) {
                float[] p0 = Check.normal(rng, n, 1);
                float[][] g = grads(rng, 3, n);
                AdamW opt = AdamW.builder().lr(1e-2f).build();
                float[] sc = {0.5f, 1f, 0.3f};
                float[][] want = runOurs(cpu, opt, p0, g, sc), got = runOurs(cuda, opt, p0, g, sc);
                assertSameSteps(got, want, opt, p0, g, sc, "seed=" + seed + " n=" + n);
            }
        }
    }

    @Test
    void badInputIsAClearException() {
        AdamW opt = AdamW.builder().build();
        try (Tensor p = Tensor.empty(cpu, 2, 3); Tensor g = Tensor.empty(cpu, 2, 3); Tensor m = Tensor.empty(cpu, 2, 3);
             Tensor v = Tensor.empty(cpu, 2, 3); Tensor wrong = Tensor.empty(cpu, 6); Tensor s2 = Tensor.empty(cpu, 2);
             Tensor onEmu = Tensor.empty(emu, 2, 3)) {
            assertMessage(IllegalArgumentException.class, "grad must have the shape of param [2, 3], got [6]",
                    () -> opt.step(p, wrong, m, v, 1, null));
            assertMessage(IllegalArgumentException.class, "m is on cuda-emu", () -> opt.step(p, g, onEmu, v, 1, null));
            assertMessage(IllegalArgumentException.class, "step counts from 1, got 0", () -> opt.step(p, g, m, v, 0, null));
            assertMessage(IllegalArgumentException.class, "gradScale must hold one element",
                    () -> opt.step(p, g, m, v, 1, s2));
            assertMessage(IllegalArgumentException.class, "lr must be finite and >= 0",
                    () -> opt.step(p, g, m, v, 1, Float.NaN, 0f, null));
            assertMessage(IllegalArgumentException.class, "v is required", () -> opt.step(p, g, m, null, 1, null));
        }
        assertMessage(IllegalArgumentException.class, "betas must be in [0, 1)", () -> AdamW.builder().betas(0.9f, 1f));
        assertMessage(IllegalArgumentException.class, "eps must be finite", () -> AdamW.builder().eps(-1f));
        assertMessage(IllegalArgumentException.class, "weightDecay must be finite",
                () -> AdamW.builder().weightDecay(Float.NaN));
        AdamW d = AdamW.builder().build();
        assertArrayEquals(new float[] {1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f},
                new float[] {d.lr(), d.beta1(), d.beta2(), d.eps(), d.weightDecay()}, "PyTorch's defaults");
    }
}
