package org.distill4j.ops;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.reference.KlDivFloat64;
import org.distill4j.reference.TorchKlDiv;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The fused KL op against libtorch (log_softmax + kl_div + autograd, in float64 so that only our error shows),
 * against a float64 oracle where PyTorch returns NaN by convention, and CPU against the emulated CUDA kernels.
 */
class KlDivTest {
    private static final double TOL = 1e-5;
    private static final float[] TEMPERATURES = {1f, 4f};
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

    /** Loss and gradient of one call, copied to the host. */
    record Out(float[] loss, float[] grad) {}

    static Out run(Backend be, KlDiv op, float[] s, float[] t, int b, int c, float[] upstream) {
        try (Tensor st = Tensor.of(be, s, b, c); Tensor tt = Tensor.of(be, t, b, c);
             Tensor up = upstream == null ? null
                     : op.reduction() == Reduction.NONE ? Tensor.of(be, upstream, b) : Tensor.of(be, upstream);
             Tensor loss = op.reduction() == Reduction.NONE ? Tensor.empty(be, b) : Tensor.empty(be);
             Tensor grad = Tensor.empty(be, b, c); Tensor rows = Tensor.empty(be, b)) {
            op.compute(st, tt, up, loss, grad, rows);
            return new Out(loss.toArray(), grad.toArray());
        }
    }

    static KlDiv op(float temperature, Reduction r, boolean logTarget, boolean scaleT2) {
        return KlDiv.builder().temperature(temperature).reduction(r).logTarget(logTarget)
                .scaleBySquaredTemperature(scaleT2).build();
    }

    /** Teacher log-probabilities at temperature T, for the logTarget cases (computed in float64). */
    static float[] logSoftmax(float[] x, int b, int c, float temperature) {
        float[] out = new float[x.length];
        for (int r = 0; r < b; r++) {
            double max = Double.NEGATIVE_INFINITY, sum = 0;
            for (int i = 0; i < c; i++) max = Math.max(max, x[r * c + i] / (double) temperature);
            for (int i = 0; i < c; i++) sum += Math.exp(x[r * c + i] / (double) temperature - max);
            for (int i = 0; i < c; i++) out[r * c + i] = (float) (x[r * c + i] / (double) temperature - max - Math.log(sum));
        }
        return out;
    }

    static Stream<Arguments> shapes() {
        List<Arguments> out = new ArrayList<>();
        for (int c : new int[] {1, 10, 1000, 32001}) {
            for (int b : new int[] {1, 7, 256}) out.add(Arguments.of(b, c));
        }
        return out.stream();
    }

    @ParameterizedTest(name = "B={0} C={1}")
    @MethodSource("shapes")
    void matchesLibtorchForEveryReductionTargetAndTemperature(int b, int c) {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        float[] s = Check.normal(rng, b * c, 3), t = Check.normal(rng, b * c, 3);
        for (float temperature : TEMPERATURES) {
            float[] tLog = logSoftmax(t, b, c, temperature);
            for (boolean logTarget : new boolean[] {false, true}) {
                float[] teacher = logTarget ? tLog : t;
                try (TorchKlDiv torch = new TorchKlDiv(s, teacher, b, c, true)) {
                    for (Reduction r : Reduction.values()) {
                        boolean scaleT2 = rng.nextBoolean();
                        float[] upstream = rng.nextBoolean() ? null
                                : Check.normal(rng, r == Reduction.NONE ? b : 1, 1);
                        TorchKlDiv.Result ref = torch.run(temperature, r, logTarget, scaleT2, upstream);
                        Out ours = run(cpu, op(temperature, r, logTarget, scaleT2), s, teacher, b, c, upstream);
                        String what = String.format("seed=%d B=%d C=%d T=%s %s logTarget=%s T2=%s upstream=%s",
                                seed, b, c, temperature, r, logTarget, scaleT2, upstream != null);
                        assertTrue(Check.relErr(ours.loss(), ref.loss()) <= TOL,
                                what + ": loss rel err " + Check.relErr(ours.loss(), ref.loss()));
                        assertTrue(Check.relErr(ours.grad(), ref.grad()) <= TOL,
                                what + ": grad rel err " + Check.relErr(ours.grad(), ref.grad()));
                    }
                }
            }
        }
    }

    @Test
    void extremeLogitsMatchLibtorch() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        int b = 9, c = 333;
        float[] s = new float[b * c], t = new float[b * c];
        for (int i = 0; i < s.length; i++) {
            s[i] = (float) ((rng.nextDouble() * 2 - 1) * 1e4);
            t[i] = (float) ((rng.nextDouble() * 2 - 1) * 1e4);
        }
        for (int i = 0; i < t.length; i += 7) t[i] = Float.NEGATIVE_INFINITY;  // q = 0 there
        for (int col = 0; col < c; col++) t[3 * c + col] = col == 5 ? 0f : Float.NEGATIVE_INFINITY;  // one-hot row
        for (float temperature : TEMPERATURES) {
            try (TorchKlDiv torch = new TorchKlDiv(s, t, b, c, true)) {
                for (Reduction r : Reduction.values()) {
                    TorchKlDiv.Result ref = torch.run(temperature, r, false, true, null);
                    Out ours = run(cpu, op(temperature, r, false, true), s, t, b, c, null);
                    String what = "seed=" + seed + " T=" + temperature + " " + r;
                    assertTrue(Check.relErr(ours.loss(), ref.loss()) <= TOL, what + ": loss");
                    assertTrue(Check.relErr(ours.grad(), ref.grad()) <= TOL, what + ": grad");
                }
            }
        }
    }

    @Test
    void zeroTimesMinusInfinityIsZeroWherePyTorchGivesNaN() {
        // -inf in student and teacher at the same places, and a one-hot log-target: PyTorch computes 0*(-inf) = NaN
        // there; the limit is 0. The float64 oracle takes the limit.
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        int b = 5, c = 40;
        float[] s = Check.normal(rng, b * c, 2), t = Check.normal(rng, b * c, 2);
        for (int i = 0; i < s.length; i += 3) s[i] = t[i] = Float.NEGATIVE_INFINITY;
        float[] oneHotLog = new float[b * c];
        java.util.Arrays.fill(oneHotLog, Float.NEGATIVE_INFINITY);
        for (int r = 0; r < b; r++) oneHotLog[r * c + 1 + r] = 0f;
        for (Reduction r : Reduction.values()) {
            KlDivFloat64.Result ref = KlDivFloat64.compute(s, t, b, c, 2.0, r, false, true, null);
            Out ours = run(cpu, op(2f, r, false, true), s, t, b, c, null);
            assertTrue(Check.relErr(ours.loss(), ref.loss()) <= TOL, "seed=" + seed + " " + r + " shared -inf: loss");
            assertTrue(Check.relErr(ours.grad(), ref.grad()) <= TOL, "seed=" + seed + " " + r + " shared -inf: grad");
            KlDivFloat64.Result refHot = KlDivFloat64.compute(s, oneHotLog, b, c, 2.0, r, true, true, null);
            Out hot = run(cpu, op(2f, r, true, true), s, oneHotLog, b, c, null);
            for (float v : hot.loss()) assertFalse(Float.isNaN(v), "one-hot log-target gave NaN");
            assertTrue(Check.relErr(hot.loss(), refHot.loss()) <= TOL, "seed=" + seed + " " + r + " one-hot: loss");
            assertTrue(Check.relErr(hot.grad(), refHot.grad()) <= TOL, "seed=" + seed + " " + r + " one-hot: grad");
        }
    }

    @Test
    void nanLogitsGiveNanLossAsInPyTorch() {
        Random rng = new Random(Check.freshSeed());
        int b = 3, c = 17;
        float[] s = Check.normal(rng, b * c, 1), t = Check.normal(rng, b * c, 1);
        s[c + 4] = Float.NaN;  // row 1
        Out mean = run(cpu, op(1f, Reduction.BATCHMEAN, false, true), s, t, b, c, null);
        assertTrue(Float.isNaN(mean.loss()[0]));
        Out rows = run(cpu, op(1f, Reduction.NONE, false, true), s, t, b, c, null);
        assertTrue(Float.isNaN(rows.loss()[1]));
        assertFalse(Float.isNaN(rows.loss()[0]) || Float.isNaN(rows.loss()[2]), "NaN leaked into other rows");
        try (TorchKlDiv torch = new TorchKlDiv(s, t, b, c, true)) {
            assertTrue(Double.isNaN(torch.run(1f, Reduction.BATCHMEAN, false, true, null).loss()[0]),
                    "libtorch itself gives NaN here");
        }
    }

    static Stream<Arguments> emulatedShapes() {
        // Warp-per-row (C <= 2048), the row held on chip by a block (2048 < C <= 32768: registers only at 4099,
        // registers and shared memory at 16385 and 32000) and two sweeps past it (32772); float4 and scalar paths,
        // partial last block.
        return Stream.of(Arguments.of(1, 1), Arguments.of(9, 10), Arguments.of(7, 1000), Arguments.of(3, 37),
                Arguments.of(2, 4099), Arguments.of(1, 16385), Arguments.of(2, 32000), Arguments.of(1, 32772));
    }

    @ParameterizedTest(name = "C={0}")
    @ValueSource(ints = {17, 4099, 32000, 32772})
    void nanRowStaysInItsRowOnEveryEmulatedPath(int c) {
        // Warp, held in registers, held in registers and shared memory, two sweeps: a NaN in row 1's last element
        // (the last slot a thread holds) makes row 1's loss and whole gradient NaN and leaves rows 0 and 2 as the
        // float64 definition has them.
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        int b = 3;
        float[] s = Check.normal(rng, b * c, 3), t = Check.normal(rng, b * c, 3);
        s[c + c - 1] = Float.NaN;
        Out rows = run(emu, op(2f, Reduction.NONE, false, true), s, t, b, c, null);
        KlDivFloat64.Result ref = KlDivFloat64.compute(s, t, b, c, 2f, Reduction.NONE, false, true, null);
        String what = "seed=" + seed + " C=" + c;
        assertTrue(Float.isNaN(rows.loss()[1]), what + ": row 1 loss");
        for (int i = c; i < 2 * c; i++) assertTrue(Float.isNaN(rows.grad()[i]), what + ": row 1 grad " + (i - c));
        for (int r : new int[] {0, 2}) {
            float[] got = java.util.Arrays.copyOfRange(rows.grad(), r * c, (r + 1) * c);
            double[] want = java.util.Arrays.copyOfRange(ref.grad(), r * c, (r + 1) * c);
            assertTrue(Check.relErr(got, want) <= TOL, what + ": row " + r + " grad");
            assertTrue(Check.relErr(new float[] {rows.loss()[r]}, new double[] {ref.loss()[r]}) <= TOL,
                    what + ": row " + r + " loss");
        }
        assertTrue(Float.isNaN(run(emu, op(2f, Reduction.BATCHMEAN, false, true), s, t, b, c, null).loss()[0]),
                what + ": batchmean loss");
    }

    @ParameterizedTest(name = "B={0} C={1}")
    @MethodSource("emulatedShapes")
    void emulatedCudaKernelMatchesCpuKernel(int b, int c) {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        float[] s = Check.normal(rng, b * c, 4), t = Check.normal(rng, b * c, 4);
        if (c > 3) t[2] = Float.NEGATIVE_INFINITY;
        for (float temperature : TEMPERATURES) {
            float[] tLog = logSoftmax(t, b, c, temperature);
            for (boolean logTarget : new boolean[] {false, true}) {
                for (Reduction r : Reduction.values()) {
                    float[] upstream = Check.normal(rng, r == Reduction.NONE ? b : 1, 1);
                    KlDiv kl = op(temperature, r, logTarget, true);
                    float[] teacher = logTarget ? tLog : t;
                    // Each kernel against the float64 definition, not against each other: two fp32 sums of 32000
                    // exp terms in different orders may each be within TOL of the truth and 2 TOL apart.
                    KlDivFloat64.Result ref = KlDivFloat64.compute(s, teacher, b, c, temperature, r, logTarget, true,
                            upstream);
                    for (Backend be : new Backend[] {cpu, emu}) {
                        Out got = run(be, kl, s, teacher, b, c, upstream);
                        String what = "seed=" + seed + " B=" + b + " C=" + c + " " + kl + " on " + be.device();
                        assertTrue(Check.relErr(got.loss(), ref.loss()) <= TOL, what + ": loss "
                                + Check.relErr(got.loss(), ref.loss()));
                        assertTrue(Check.relErr(got.grad(), ref.grad()) <= TOL, what + ": grad "
                                + Check.relErr(got.grad(), ref.grad()));
                    }
                }
            }
        }
    }

    @Test
    void cudaKernelMatchesCpuKernel() {
        try (Backend cuda = Check.cudaOrSkip()) {
            long seed = Check.freshSeed();
            Random rng = new Random(seed);
            // Every path: warp rows, held in registers (8193), held with shared memory (32000, 32001: two sweeps
            // on cards without 128 KB of opt-in shared memory), two sweeps (32772).
            for (int[] shape : new int[][] {{1, 1}, {7, 10}, {256, 1000}, {16, 8193}, {64, 32001}, {33, 32000},
                    {16, 32772}}) {
                int b = shape[0], c = shape[1];
                float[] s = Check.normal(rng, b * c, 4), t = Check.normal(rng, b * c, 4);
                for (Reduction r : Reduction.values()) {
                    KlDiv kl = op(4f, r, false, true);
                    Out want = run(cpu, kl, s, t, b, c, null);
                    Out got = run(cuda, kl, s, t, b, c, null);
                    assertTrue(Check.relErr(got.loss(), want.loss()) <= TOL, "seed=" + seed + " " + kl + ": loss");
                    assertTrue(Check.relErr(got.grad(), want.grad()) <= TOL, "seed=" + seed + " " + kl + ": grad");
                }
            }
        }
    }

    @Test
    void convenienceFormAllocatesAndCloses() {
        Random rng = new Random(Check.freshSeed());
        float[] s = Check.normal(rng, 4 * 5, 1), t = Check.normal(rng, 4 * 5, 1);
        long before = cpu.liveAllocations();
        try (Tensor st = Tensor.of(cpu, s, 4, 5); Tensor tt = Tensor.of(cpu, t, 4, 5);
             KlDiv.Result res = KlDiv.builder().temperature(2f).build().compute(st, tt)) {
            KlDivFloat64.Result ref = KlDivFloat64.compute(s, t, 4, 5, 2, Reduction.BATCHMEAN, false, true, null);
            assertEquals(ref.loss()[0], res.lossValue(), 1e-5 * Math.abs(ref.loss()[0]));
            assertTrue(Check.relErr(res.grad().toArray(), ref.grad()) <= TOL);
        }
        assertEquals(before, cpu.liveAllocations(), "the result and its workspace were freed");
    }

    @Test
    void badInputIsAClearException() {
        KlDiv kl = KlDiv.builder().build();
        try (Tensor a = Tensor.empty(cpu, 2, 3); Tensor b = Tensor.empty(cpu, 2, 4); Tensor v = Tensor.empty(cpu, 6);
             Tensor e = Tensor.empty(cpu, 0, 3); Tensor e2 = Tensor.empty(cpu, 0, 3);
             Tensor onEmu = Tensor.empty(emu, 2, 3)) {
            assertMessage(IllegalArgumentException.class, "[2, 3] and teacher [2, 4]", () -> kl.compute(a, b));
            assertMessage(IllegalArgumentException.class, "must be [B, C], got [6]", () -> kl.compute(v, v));
            assertMessage(IllegalArgumentException.class, "B = 0, C = 3", () -> kl.compute(e, e2));
            assertMessage(IllegalArgumentException.class, "cuda-emu", () -> kl.compute(a, onEmu));
            // Two backends of one device: the message tells them apart (it used to read "on cpu and teacher on cpu").
            try (Backend other = CpuBackend.open(); Tensor there = Tensor.empty(other, 2, 3)) {
                assertMessage(IllegalArgumentException.class, "student is on " + cpu.name() + " and teacher on "
                        + other.name(), () -> kl.compute(a, there));
                assertFalse(cpu.name().equals(other.name()), cpu.name());
            }
            Tensor closed = Tensor.empty(cpu, 2, 3);
            closed.close();
            closed.close();  // harmless
            assertMessage(IllegalStateException.class, "closed", () -> kl.compute(a, closed));
            assertMessage(IllegalStateException.class, "closed", closed::toArray);
            try (Tensor loss = Tensor.empty(cpu, 2); Tensor grad = Tensor.empty(cpu, 2, 3);
                 Tensor rows = Tensor.empty(cpu, 2)) {
                assertMessage(IllegalArgumentException.class, "loss must have shape []",
                        () -> kl.compute(a, a, null, loss, grad, rows));
            }
        }
        for (float t : new float[] {0f, -1f, Float.NaN, Float.POSITIVE_INFINITY}) {
            assertMessage(IllegalArgumentException.class, "temperature must be finite and > 0, got " + t,
                    () -> KlDiv.builder().temperature(t));
        }
    }

    static void assertMessage(Class<? extends Throwable> type, String part, org.junit.jupiter.api.function.Executable run) {
        Throwable e = assertThrows(type, run);
        assertTrue(e.getMessage().contains(part), "message '" + e.getMessage() + "' lacks '" + part + "'");
    }
}
