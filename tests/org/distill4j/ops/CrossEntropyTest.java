package org.distill4j.ops;

import static org.distill4j.ops.KlDivTest.assertMessage;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import java.util.stream.Stream;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AbstractTensor;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Fused softmax + cross-entropy against libtorch (F.cross_entropy with label smoothing + autograd, in float64), with
 * class indices and with probability targets, argmax against torch.argmax, and CPU against the emulated CUDA kernels.
 */
@SuppressWarnings("try")
class CrossEntropyTest {
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

    /** Row losses, loss and gradient of one call, copied to the host. */
    record Out(float[] rows, float[] loss, float[] grad) {}

    static Out run(Backend be, CrossEntropy op, float[] x, float[] y, int b, int c) {
        return call(be, x, y, b, c, new long[] {b}, op::compute);
    }

    static Out runSoft(Backend be, CrossEntropy op, float[] x, float[] t, int b, int c) {
        return call(be, x, t, b, c, new long[] {b, c}, op::computeSoft);
    }

    /** CrossEntropy.compute or computeSoft, as one signature. */
    interface CeCall {
        void apply(Tensor logits, Tensor target, Tensor rows, Tensor loss, Tensor grad);
    }

    private static Out call(Backend be, float[] x, float[] target, int b, int c, long[] targetShape, CeCall op) {
        try (Tensor xt = Tensor.of(be, x, b, c); Tensor tt = Tensor.of(be, target, targetShape);
             Tensor rows = Tensor.empty(be, b); Tensor loss = Tensor.empty(be); Tensor grad = Tensor.empty(be, b, c)) {
            op.apply(xt, tt, rows, loss, grad);
            return new Out(rows.toArray(), loss.toArray(), grad.toArray());
        }
    }

    /** libtorch, float64: rows = cross_entropy(x, y, reduction='none', label_smoothing) * scale; loss = rows.mean(). */
    static double[][] torchRef(float[] x, float[] y, int b, int c, double eps, double scale) {
        long[] labels = new long[b];
        for (int i = 0; i < b; i++) labels[i] = (long) y[i];
        try (PointerScope ignored = new PointerScope()) {
            return torchCe(x, AbstractTensor.create(labels, b), b, c, eps, scale);
        }
    }

    /** libtorch, float64, probability targets: cross_entropy(x, t, reduction='none', label_smoothing) * scale. */
    static double[][] torchSoftRef(float[] x, float[] t, int b, int c, double eps, double scale) {
        try (PointerScope ignored = new PointerScope()) {
            return torchCe(x, AbstractTensor.create(t, b, c).to(ScalarType.Double), b, c, eps, scale);
        }
    }

    /** {rows, [loss], d loss / d x} of F.cross_entropy against {@code target} (indices or distributions). */
    private static double[][] torchCe(float[] x, org.bytedeco.pytorch.Tensor target, int b, int c, double eps,
                                      double scale) {
        org.bytedeco.pytorch.Tensor logits = AbstractTensor.create(x, b, c).to(ScalarType.Double);
        logits.set_requires_grad(true);
        org.bytedeco.pytorch.Tensor rows = torch.cross_entropy_loss(logits, target, new TensorOptional(), 0, -100, eps)
                .mul(new Scalar(scale));
        org.bytedeco.pytorch.Tensor loss = rows.mean();
        loss.backward();
        double[] r = new double[b], l = new double[1], g = new double[b * c];
        rows.contiguous().data_ptr_double().get(r);
        l[0] = loss.item_double();
        logits.grad().contiguous().data_ptr_double().get(g);
        return new double[][] {r, l, g};
    }

    /**
     * Targets as Mixup makes them (rows 0 mod 3: lambda and 1 - lambda on two classes), random distributions (1 mod
     * 3), and rows that do not sum to 1 (2 mod 3: times 0.6 or 1.7), which PyTorch accepts.
     */
    static float[] targets(Random rng, int b, int c) {
        float[] t = new float[b * c];
        for (int i = 0; i < b; i++) {
            if (i % 3 == 0) {
                float lam = rng.nextFloat();
                t[i * c + rng.nextInt(c)] += lam;
                t[i * c + rng.nextInt(c)] += 1 - lam;
            } else {
                double sum = 0;
                for (int j = 0; j < c; j++) sum += t[i * c + j] = rng.nextFloat();
                double want = i % 3 == 1 ? 1 : rng.nextBoolean() ? 0.6 : 1.7;
                for (int j = 0; j < c; j++) t[i * c + j] = (float) (t[i * c + j] * want / sum);
            }
        }
        return t;
    }

    static float[] labels(Random rng, int b, int c) {
        float[] y = new float[b];
        for (int i = 0; i < b; i++) y[i] = rng.nextInt(c);
        return y;
    }

    static Stream<Arguments> shapes() {
        return Stream.of(Arguments.of(1, 1), Arguments.of(7, 10), Arguments.of(3, 37), Arguments.of(64, 1000),
                Arguments.of(5, 32001));
    }

    @ParameterizedTest(name = "B={0} C={1}")
    @MethodSource("shapes")
    void matchesLibtorchWithLabelSmoothingAndLossScale(int b, int c) {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        float[] x = Check.normal(rng, b * c, 3), y = labels(rng, b, c);
        for (float eps : new float[] {0f, 0.1f, 1f}) {
            for (float scale : new float[] {1f, 0.35f}) {
                double[][] ref = torchRef(x, y, b, c, eps, scale);
                Out ours = run(cpu, CrossEntropy.builder().labelSmoothing(eps).lossScale(scale).build(), x, y, b, c);
                String what = String.format("seed=%d B=%d C=%d eps=%s scale=%s", seed, b, c, eps, scale);
                assertTrue(Check.relErr(ours.rows(), ref[0]) <= TOL, what + ": rows " + Check.relErr(ours.rows(), ref[0]));
                assertTrue(Check.relErr(ours.loss(), ref[1]) <= TOL, what + ": loss " + Check.relErr(ours.loss(), ref[1]));
                assertTrue(Check.relErr(ours.grad(), ref[2]) <= TOL, what + ": grad " + Check.relErr(ours.grad(), ref[2]));
            }
        }
    }

    @ParameterizedTest(name = "B={0} C={1}")
    @MethodSource("shapes")
    void probabilityTargetsMatchLibtorch(int b, int c) {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        float[] x = Check.normal(rng, b * c, 3), t = targets(rng, b, c);
        for (float eps : new float[] {0f, 0.1f, 1f}) {
            for (float scale : new float[] {1f, 0.35f}) {
                double[][] ref = torchSoftRef(x, t, b, c, eps, scale);
                CrossEntropy op = CrossEntropy.builder().labelSmoothing(eps).lossScale(scale).build();
                String what = String.format("seed=%d B=%d C=%d eps=%s scale=%s", seed, b, c, eps, scale);
                for (Backend be : new Backend[] {cpu, emu}) {
                    Out ours = runSoft(be, op, x, t, b, c);
                    String on = what + " on " + be.device();
                    assertTrue(Check.relErr(ours.rows(), ref[0]) <= TOL, on + ": rows " + Check.relErr(ours.rows(), ref[0]));
                    assertTrue(Check.relErr(ours.loss(), ref[1]) <= TOL, on + ": loss " + Check.relErr(ours.loss(), ref[1]));
                    assertTrue(Check.relErr(ours.grad(), ref[2]) <= TOL, on + ": grad " + Check.relErr(ours.grad(), ref[2]));
                }
            }
        }
    }

    @Test
    void oneHotTargetsGiveTheLabelsAnswer() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        int b = 9, c = 333;
        float[] x = Check.normal(rng, b * c, 5), y = labels(rng, b, c), t = new float[b * c];
        for (int i = 0; i < b; i++) t[i * c + (int) y[i]] = 1f;
        CrossEntropy op = CrossEntropy.builder().labelSmoothing(0.1f).lossScale(0.5f).build();
        for (Backend be : new Backend[] {cpu, emu}) {
            Out hard = run(be, op, x, y, b, c), soft = runSoft(be, op, x, t, b, c);
            String what = "seed=" + seed + " on " + be.device();
            assertTrue(Check.relErr(soft.rows(), hard.rows()) <= TOL, what + ": rows");
            assertTrue(Check.relErr(soft.grad(), hard.grad()) <= TOL, what + ": grad");
        }
    }

    @Test
    void softTargetSpecialValuesAsInPyTorch() {
        Random rng = new Random(Check.freshSeed());
        int b = 3, c = 17;
        float[] x = Check.normal(rng, b * c, 1), t = targets(rng, b, c);
        x[c + 4] = Float.NaN;
        t[2 * c + 1] = Float.NaN;
        double[][] ref = torchSoftRef(x, t, b, c, 0, 1);
        assertTrue(Double.isNaN(ref[0][1]) && Double.isNaN(ref[0][2]) && !Double.isNaN(ref[0][0]),
                "libtorch itself gives NaN rows here");
        for (Backend be : new Backend[] {cpu, emu}) {
            Out out = runSoft(be, CrossEntropy.builder().build(), x, t, b, c);
            assertTrue(Float.isNaN(out.rows()[1]) && Float.isNaN(out.rows()[2]) && Float.isNaN(out.grad()[c])
                    && Float.isNaN(out.grad()[2 * c]) && Float.isNaN(out.loss()[0]), "NaN rows on " + be.device());
            assertTrue(Check.relErr(new float[] {out.rows()[0]}, new double[] {ref[0][0]}) <= TOL,
                    "row 0 unaffected on " + be.device());
        }
    }

    @Test
    void largeLogitsMatchLibtorch() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        int b = 9, c = 333;
        float[] x = new float[b * c];
        for (int i = 0; i < x.length; i++) x[i] = (float) ((rng.nextDouble() * 2 - 1) * 1e4);
        float[] y = labels(rng, b, c);
        for (float eps : new float[] {0f, 0.1f}) {
            double[][] ref = torchRef(x, y, b, c, eps, 2.0);
            Out ours = run(cpu, CrossEntropy.builder().labelSmoothing(eps).lossScale(2f).build(), x, y, b, c);
            String what = "seed=" + seed + " eps=" + eps;
            assertTrue(Check.relErr(ours.loss(), ref[1]) <= TOL, what + ": loss " + Check.relErr(ours.loss(), ref[1]));
            assertTrue(Check.relErr(ours.grad(), ref[2]) <= TOL, what + ": grad " + Check.relErr(ours.grad(), ref[2]));
        }
    }

    @Test
    void argmaxMatchesTorchIncludingTiesAndNaN() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        for (int[] shape : new int[][] {{1, 1}, {9, 7}, {33, 100}, {4, 4099}}) {
            int b = shape[0], c = shape[1];
            float[] x = new float[b * c];
            for (int i = 0; i < x.length; i++) x[i] = rng.nextInt(4);  // many ties
            if (b > 3) {
                x[2 * c + c / 2] = Float.NaN;  // row 2: the first NaN wins
                x[2 * c + c - 1] = Float.NaN;
                x[3 * c] = Float.NaN;
            }
            long[] ref = new long[b];
            try (PointerScope ignored = new PointerScope()) {
                org.bytedeco.pytorch.Tensor t = AbstractTensor.create(x, b, c);
                torch.argmax(t, new LongOptional(1), false).contiguous().data_ptr_long().get(ref);
            }
            float[] want = new float[b];
            for (int i = 0; i < b; i++) want[i] = ref[i];
            for (Backend be : new Backend[] {cpu, emu}) {
                try (Tensor xt = Tensor.of(be, x, b, c); Tensor idx = Tensor.empty(be, b)) {
                    CrossEntropy.argmax(xt, idx);
                    assertArrayEquals(want, idx.toArray(), "seed=" + seed + " B=" + b + " C=" + c + " on " + be.device());
                }
            }
        }
    }

    @Test
    void nanLogitsGiveNanRowAsInPyTorch() {
        Random rng = new Random(Check.freshSeed());
        int b = 3, c = 17;
        float[] x = Check.normal(rng, b * c, 1), y = labels(rng, b, c);
        x[c + 4] = Float.NaN;
        for (Backend be : new Backend[] {cpu, emu}) {
            Out out = run(be, CrossEntropy.builder().build(), x, y, b, c);
            assertTrue(Float.isNaN(out.rows()[1]) && Float.isNaN(out.loss()[0]) && Float.isNaN(out.grad()[c]));
            assertFalse(Float.isNaN(out.rows()[0]) || Float.isNaN(out.rows()[2]) || Float.isNaN(out.grad()[0]),
                    "NaN leaked into other rows");
        }
        assertTrue(Double.isNaN(torchRef(x, y, b, c, 0, 1)[1][0]), "libtorch itself gives NaN here");
    }

    static Stream<Arguments> emulatedShapes() {
        // Warp-per-row (short rows) and block-per-row kernels, float4 and scalar paths, partial last block.
        return Stream.of(Arguments.of(1, 1), Arguments.of(9, 10), Arguments.of(7, 1000), Arguments.of(3, 37),
                Arguments.of(2, 4099), Arguments.of(2, 32000), Arguments.of(300, 3));
    }

    @ParameterizedTest(name = "B={0} C={1}")
    @MethodSource("emulatedShapes")
    void emulatedCudaKernelMatchesCpuKernel(int b, int c) {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        float[] x = Check.normal(rng, b * c, 4), y = labels(rng, b, c);
        for (float eps : new float[] {0f, 0.1f}) {
            CrossEntropy op = CrossEntropy.builder().labelSmoothing(eps).lossScale(0.7f).build();
            Out want = run(cpu, op, x, y, b, c);
            Out got = run(emu, op, x, y, b, c);
            String what = "seed=" + seed + " " + op;
            assertTrue(Check.relErr(got.rows(), want.rows()) <= TOL, what + ": rows");
            assertTrue(Check.relErr(got.loss(), want.loss()) <= TOL, what + ": loss");
            assertTrue(Check.relErr(got.grad(), want.grad()) <= TOL, what + ": grad");
            Out again = run(emu, op, x, y, b, c);
            assertArrayEquals(got.loss(), again.loss(), "the loss is deterministic");
        }
    }

    @Test
    void cudaKernelMatchesCpuKernel() {
        try (Backend cuda = Check.cudaOrSkip()) {
            long seed = Check.freshSeed();
            Random rng = new Random(seed);
            for (int[] shape : new int[][] {{1, 1}, {7, 10}, {256, 1000}, {64, 32001}, {33, 32000}, {4096, 10}}) {
                int b = shape[0], c = shape[1];
                float[] x = Check.normal(rng, b * c, 4), y = labels(rng, b, c);
                CrossEntropy op = CrossEntropy.builder().labelSmoothing(0.1f).build();
                Out want = run(cpu, op, x, y, b, c), got = run(cuda, op, x, y, b, c);
                assertTrue(Check.relErr(got.loss(), want.loss()) <= TOL, "seed=" + seed + " B=" + b + " C=" + c + ": loss");
                assertTrue(Check.relErr(got.grad(), want.grad()) <= TOL, "seed=" + seed + " B=" + b + " C=" + c + ": grad");
                float[] t = targets(rng, b, c);
                Out softWant = runSoft(cpu, op, x, t, b, c), softGot = runSoft(cuda, op, x, t, b, c);
                assertTrue(Check.relErr(softGot.rows(), softWant.rows()) <= TOL, "seed=" + seed + " B=" + b + " C=" + c
                        + ": soft rows");
                assertTrue(Check.relErr(softGot.grad(), softWant.grad()) <= TOL, "seed=" + seed + " B=" + b + " C=" + c
                        + ": soft grad");
                try (Tensor xt = Tensor.of(cuda, x, b, c); Tensor idx = Tensor.empty(cuda, b);
                     Tensor xc = Tensor.of(cpu, x, b, c); Tensor idc = Tensor.empty(cpu, b)) {
                    CrossEntropy.argmax(xt, idx);
                    CrossEntropy.argmax(xc, idc);
                    assertArrayEquals(idc.toArray(), idx.toArray());
                }
            }
        }
    }

    @Test
    void lossAndGradMayBeSkipped() {
        Random rng = new Random(Check.freshSeed());
        float[] x = Check.normal(rng, 4 * 5, 1), y = labels(rng, 4, 5);
        Out full = run(cpu, CrossEntropy.builder().build(), x, y, 4, 5);
        try (Tensor xt = Tensor.of(cpu, x, 4, 5); Tensor yt = Tensor.of(cpu, y, 4); Tensor rows = Tensor.empty(cpu, 4)) {
            CrossEntropy.builder().build().compute(xt, yt, rows, null, null);
            assertArrayEquals(full.rows(), rows.toArray());
        }
    }

    @Test
    void badInputIsAClearException() {
        CrossEntropy ce = CrossEntropy.builder().build();
        try (Tensor x = Tensor.of(cpu, new float[6], 2, 3); Tensor rows = Tensor.empty(cpu, 2);
             Tensor v = Tensor.empty(cpu, 6); Tensor y3 = Tensor.empty(cpu, 3); Tensor onEmu = Tensor.of(emu, new float[2], 2);
             Tensor emuX = Tensor.of(emu, new float[6], 2, 3); Tensor emuRows = Tensor.empty(emu, 2)) {
            for (float bad : new float[] {3f, -1f, 0.5f, Float.NaN}) {
                try (Tensor y = Tensor.of(cpu, new float[] {0f, bad}, 2)) {
                    assertMessage(IllegalArgumentException.class, "label " + bad + " at row 1 is not a class index in [0, 3)",
                            () -> ce.compute(x, y, rows, null, null));
                }
                try (Tensor y = Tensor.of(emu, new float[] {bad, 0f}, 2)) {
                    assertMessage(IllegalArgumentException.class, "at row 0", () -> ce.compute(emuX, y, emuRows, null, null));
                }
                assertMessage(IllegalArgumentException.class, "not a class index",
                        () -> CrossEntropy.checkLabels(new float[] {bad}, 3));
            }
            assertMessage(IllegalArgumentException.class, "labels must have shape [2], got [3]",
                    () -> ce.compute(x, y3, rows, null, null));
            assertMessage(IllegalArgumentException.class, "logits must be [B, C], got [6]",
                    () -> ce.compute(v, y3, rows, null, null));
            assertMessage(IllegalArgumentException.class, "cuda-emu", () -> ce.compute(x, onEmu, rows, null, null));
            assertMessage(IllegalArgumentException.class, "rowLoss is required", () -> ce.compute(x, rows, null, null, null));
            assertMessage(IllegalArgumentException.class, "index must have shape [2]", () -> CrossEntropy.argmax(x, y3));
            assertMessage(IllegalArgumentException.class, "cross_entropy_soft: targets must have shape [2, 3], got [2]",
                    () -> ce.computeSoft(x, rows, rows, null, null));
            assertMessage(IllegalArgumentException.class, "cross_entropy_soft: targets is on cuda-emu",
                    () -> ce.computeSoft(x, emuX, rows, null, null));
            assertMessage(IllegalArgumentException.class, "cross_entropy_soft: grad must have shape [2, 3], got [6]",
                    () -> ce.computeSoft(x, x, rows, null, v));
            Tensor closed = Tensor.empty(cpu, 2, 3);
            closed.close();
            assertMessage(IllegalStateException.class, "closed", () -> ce.compute(closed, rows, rows, null, null));
        }
        for (float eps : new float[] {-0.1f, 1.5f, Float.NaN}) {
            assertMessage(IllegalArgumentException.class, "labelSmoothing must be in [0, 1], got " + eps,
                    () -> CrossEntropy.builder().labelSmoothing(eps));
        }
        assertMessage(IllegalArgumentException.class, "lossScale must be finite",
                () -> CrossEntropy.builder().lossScale(Float.POSITIVE_INFINITY));
        assertEquals(0f, CrossEntropy.builder().build().labelSmoothing());
    }
}
