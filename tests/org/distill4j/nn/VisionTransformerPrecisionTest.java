package org.distill4j.nn;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Map;
import java.util.Random;
import org.distill4j.Precision;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.reference.VitCheck;
import org.distill4j.testing.Check;
import org.distill4j.testing.CountingBackend;
import org.junit.jupiter.api.Test;

/**
 * The mixed-precision model (TF32, BF16) against libtorch's float64 ViT on the same parameters, on the CPU backend
 * and the emulated CUDA kernels.
 *
 * <p>Bounds from the arithmetic, normwise relative (as {@link VitCheck}): each rounding of an operand to a format of
 * unit roundoff u (bf16 2^-8, tf32 2^-11; round to nearest, so |δ| ≤ u relative) perturbs what it feeds by at most u
 * relative; to first order the perturbations of a path add, through layers whose gain is about 1 (VitCheck's random
 * parameters have std 1/√fan_in, LayerNorm renormalises). So an output may be off by (roundings on its path)·u: the
 * fp32 kernels' own error (≤ 1e-4, VisionTransformerTest) is far below it. Counted per block for BF16, forward:
 * LN1 output, qkv weight, qkv, P (attention), attention output, proj weight, LN2 output, fc1 weight, GELU output,
 * fc2 weight (10); head: its input and weight (2). Backward adds per block the upstream gradients of fc2, fc1 and
 * proj, the attention's dout and its dS and dP (6), and the heads' upstream gradient (1). TF32 rounds only the GEMM
 * operands: forward 8 per block + 2, backward again as many (each backward GEMM rounds its two operands).
 *
 * <p>And the rounding must have happened: a model that silently computed fp32 would be within the fp32 bound, so
 * the worst error must exceed VisionTransformerTest's 1e-4.
 */
class VisionTransformerPrecisionTest {
    private static final double BF16_U = 0x1p-8, TF32_U = 0x1p-11, FP32_TOL = 1e-4;
    private static final VitConfig DISTILLED = VitConfig.of(28, 7, 1, 10, 64, 2, 2, 4, true);

    @Test
    void bf16OnTheCpuMatchesLibtorchWithinItsRoundings() {
        compare(DISTILLED, 3, CpuBackend.open(), Precision.BF16);
    }

    @Test
    void bf16OnEmulatedCudaMatchesLibtorchWithinItsRoundings() {
        compare(VitConfig.of(28, 7, 1, 10, 64, 1, 2, 2, true), 2, CpuBackend.openCudaEmulator(), Precision.BF16);
    }

    @Test
    void bf16PlainModelWithRgbImagesAndOddClasses() {
        compare(VitConfig.of(32, 8, 3, 7, 64, 1, 1, 2, false), 2, CpuBackend.open(), Precision.BF16);
    }

    @Test
    void tf32OnTheCpuMatchesLibtorchWithinItsRoundings() {
        compare(DISTILLED, 3, CpuBackend.open(), Precision.TF32);
    }

    @Test
    void tf32OnEmulatedCudaMatchesLibtorchWithinItsRoundings() {
        compare(VitConfig.of(28, 7, 1, 10, 64, 1, 2, 2, true), 2, CpuBackend.openCudaEmulator(), Precision.TF32);
    }

    @Test
    void bf16OnCudaMatchesLibtorchWithinItsRoundings() {
        compare(DISTILLED, 3, Check.cudaOrSkip(), Precision.BF16);
    }

    /**
     * Emulated CUDA against the CPU backend, both in BF16: the same roundings at the same places of values that
     * differ only by the order of fp32 sums, so a rounding may land on the other side (≤ u each): the same counts
     * bound the difference. TF32 alike.
     */
    @Test
    void emulatedCudaMatchesTheCpuBackendInEachMixedPrecision() {
        try (Backend cpu = CpuBackend.open(); Backend emu = CpuBackend.openCudaEmulator()) {
            VitConfig config = VitConfig.of(28, 7, 1, 10, 64, 1, 2, 2, true);
            for (Precision p : new Precision[] {Precision.BF16, Precision.TF32}) {
                double[] bounds = bounds(config, p);
                VisionTransformerTest.compareBackends(config, 2, cpu, emu, p, bounds[0], bounds[1]);
            }
        }
    }

    /** Needs no libtorch: what the GPU check runs from Java ({@code bench/gpu/check_java.sh}). */
    @Test
    void cudaMatchesTheCpuBackendInEachMixedPrecision() {
        try (Backend cuda = Check.cudaOrSkip(); Backend cpu = CpuBackend.open()) {
            for (Precision p : new Precision[] {Precision.BF16, Precision.TF32}) {
                double[] bounds = bounds(DISTILLED, p);
                VisionTransformerTest.compareBackends(DISTILLED, 3, cpu, cuda, p, bounds[0], bounds[1]);
            }
        }
    }

    /** The memory count of each precision is what its constructor allocates, byte for byte. */
    @Test
    void bytesNeededIsExactForEveryPrecision() {
        try (CountingBackend be = new CountingBackend()) {
            for (VitConfig config : new VitConfig[] {DISTILLED, VitConfig.of(16, 4, 3, 7, 96, 3, 3, 3, true),
                    VitConfig.of(8, 8, 1, 1, 32, 1, 1, 1, false)}) {
                for (Precision p : Precision.values()) {
                    for (int batch : new int[] {1, 5}) {
                        long expected = VisionTransformer.bytesNeeded(be, config, batch, p);
                        be.allocatedBytes = 0;
                        try (VisionTransformer m = new VisionTransformer(be, config, batch, 1, p)) {
                            assertEquals(expected, be.allocatedBytes, m + ": bytes allocated");
                            assertEquals(p, m.precision());
                        }
                        assertEquals(0, be.liveAllocations());
                    }
                }
            }
        }
    }

    @Test
    void unknownPrecisionNamesAreRefused() {
        assertEquals(Precision.BF16, Precision.parse(" BF16"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Precision.parse("fp16"));
        assertEquals("unknown precision 'fp16': expected fp32, tf32 or bf16", e.getMessage());
    }

    /** {logits bound, gradient bound}: the roundings on their paths (the class comment) times u. */
    private static double[] bounds(VitConfig config, Precision precision) {
        int depth = config.depth();
        double u = precision == Precision.BF16 ? BF16_U : TF32_U;
        long forward = precision == Precision.BF16 ? 10L * depth + 2 : 8L * depth + 2;
        long backward = precision == Precision.BF16 ? 6L * depth + 1 : 8L * depth + 2;
        return new double[] {forward * u, (forward + backward) * u};
    }

    private static void compare(VitConfig config, int batch, Backend backend, Precision precision) {
        long seed = Check.freshSeed();
        double[] bounds = bounds(config, precision);
        double logitsBound = bounds[0], gradBound = bounds[1];
        System.out.println("VisionTransformerPrecisionTest " + precision + " " + config + " B=" + batch + " on "
                + backend.device() + " seed " + seed + ": bounds " + logitsBound + " (logits), " + gradBound
                + " (gradients)");
        try (backend; VisionTransformer model = new VisionTransformer(backend, config, batch, seed, precision)) {
            VitCheck.Result r = VitCheck.run(model, new Random(seed));
            for (Map.Entry<String, Double> e : r.errors().entrySet()) {
                double bound = e.getKey().endsWith("logits") ? logitsBound : gradBound;
                assertTrue(e.getValue() <= bound, e.getKey() + ": rel err " + e.getValue() + " > " + bound
                        + " (seed " + seed + ")");
            }
            assertTrue(r.worst() > FP32_TOL, "no output is further from float64 than fp32 gets: were the "
                    + precision + " roundings applied? worst " + r.worst() + " (" + r.worstName() + ")");
            System.out.println("  max rel err over " + r.errors().size() + " outputs and gradients: " + r.worst()
                    + " (" + r.worstName() + ")");
        }
    }
}
