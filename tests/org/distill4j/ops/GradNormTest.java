package org.distill4j.ops;

import static org.distill4j.ops.KlDivTest.assertMessage;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AbstractTensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** Global gradient norm and clip coefficient against torch.nn.utils.clip_grad_norm_ (float64), CPU vs cuda-emu. */
@SuppressWarnings("try")
class GradNormTest {
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

    /** {norm, scale} from torch::nn::utils::clip_grad_norm_ over float64 parameters holding these gradients. */
    static double[] torchClip(float[][] grads, double maxNorm) {
        try (PointerScope ignored = new PointerScope()) {
            TensorVector params = new TensorVector();
            List<org.bytedeco.pytorch.Tensor> keep = new ArrayList<>();
            for (float[] g : grads) {
                org.bytedeco.pytorch.Tensor p = torch.zeros(g.length).to(ScalarType.Double);
                p.set_requires_grad(true);
                p.mutable_grad().put(AbstractTensor.create(g, g.length).to(ScalarType.Double));
                params.push_back(p);
                keep.add(p);
            }
            double norm = torch.clip_grad_norm_(params, maxNorm, 2.0, false);
            // The coefficient clip_grad_norm_ applied: the clipped gradient over the original, where one is nonzero.
            double scale = 1;
            for (int k = 0; k < grads.length; k++) {
                double[] clipped = new double[grads[k].length];
                keep.get(k).grad().contiguous().data_ptr_double().get(clipped);
                for (int i = 0; i < clipped.length; i++) {
                    if (grads[k][i] != 0) {
                        scale = clipped[i] / grads[k][i];
                        return new double[] {norm, scale};
                    }
                }
            }
            return new double[] {norm, scale};
        }
    }

    static float[] ours(Backend be, float[][] grads, float maxNorm) {
        List<Tensor> ts = new ArrayList<>();
        try (GradNorm gn = new GradNorm(be, maxNorm)) {
            for (float[] g : grads) ts.add(Tensor.of(be, g, g.length));
            gn.compute(ts);
            return new float[] {gn.normValue(), gn.scaleValue(), gn.sumSquares().toArray()[0]};
        } finally {
            for (Tensor t : ts) t.close();
        }
    }

    static float[][] randomGrads(Random rng) {
        int[] sizes = {1, 192, 37, 100003, 4099, 1};
        float[][] g = new float[sizes.length][];
        for (int i = 0; i < sizes.length; i++) g[i] = Check.normal(rng, sizes[i], 0.01 + rng.nextDouble());
        return g;
    }

    @Test
    void matchesClipGradNorm() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        float[][] g = randomGrads(rng);
        double total = torchClip(g, 1e30)[0];
        for (double maxNorm : new double[] {total / 3, total * 2}) {
            double[] ref = torchClip(g, maxNorm);
            float[] got = ours(cpu, g, (float) maxNorm);
            String what = "seed=" + seed + " maxNorm=" + maxNorm;
            assertEquals(ref[0], got[0], TOL * ref[0], what + ": norm");
            assertEquals(ref[1], got[1], TOL * ref[1], what + ": scale");
            assertEquals(ref[0] * ref[0], got[2], TOL * ref[0] * ref[0], what + ": sum of squares");
        }
        assertEquals(1f, ours(cpu, g, (float) (total * 2))[1], "no clipping below the threshold");
    }

    @Test
    void emulatedCudaKernelMatchesCpuKernelAndIsDeterministic() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        float[][] g = {Check.normal(rng, 1, 1), Check.normal(rng, 5000, 1), Check.normal(rng, 33, 3)};
        float[] want = ours(cpu, g, 2f), got = ours(emu, g, 2f), again = ours(emu, g, 2f);
        for (int i = 0; i < 3; i++) {
            assertEquals(want[i], got[i], 1e-6 * Math.abs(want[i]), "seed=" + seed + " output " + i);
            assertEquals(got[i], again[i], 0f, "the same bits on every run");
        }
        assertEquals(want[0], ours(cpu, g, 2f)[0], 0f, "CPU: the same bits on every run");
    }

    @Test
    void cudaKernelMatchesCpuKernel() {
        try (Backend cuda = Check.cudaOrSkip()) {
            long seed = Check.freshSeed();
            Random rng = new Random(seed);
            float[][] g = randomGrads(rng);
            float[] want = ours(cpu, g, 1f), got = ours(cuda, g, 1f);
            for (int i = 0; i < 3; i++) assertEquals(want[i], got[i], 1e-6 * Math.abs(want[i]), "seed=" + seed);
            assertEquals(got[0], ours(cuda, g, 1f)[0], 0f, "the same bits on every run");
        }
    }

    @Test
    void emptyListGivesZeroNormAndNoClipping() {
        try (GradNorm gn = new GradNorm(cpu, 1f)) {
            gn.compute(List.of());
            assertEquals(0f, gn.normValue());
            assertEquals(1f, gn.scaleValue());
        }
    }

    @Test
    void badInputIsAClearException() {
        assertMessage(IllegalArgumentException.class, "maxNorm must be > 0, got 0.0", () -> new GradNorm(cpu, 0f));
        assertMessage(IllegalArgumentException.class, "maxNorm must be > 0, got NaN", () -> new GradNorm(cpu, Float.NaN));
        try (GradNorm gn = new GradNorm(cpu, 1f); Tensor onEmu = Tensor.empty(emu, 3); Tensor ok = Tensor.empty(cpu, 3)) {
            assertMessage(IllegalArgumentException.class, "grads[1] is on cuda-emu", () -> gn.compute(List.of(ok, onEmu)));
            Tensor closed = Tensor.empty(cpu, 2);
            closed.close();
            assertMessage(IllegalStateException.class, "grads[0] is closed", () -> gn.compute(List.of(closed)));
        }
    }
}
