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
import org.distill4j.IntTensor;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.natives.Distill4jNative;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Fused softmax + cross-entropy against libtorch (F.cross_entropy with label smoothing + autograd, in float64), with
 * int32 class indices (torch's int64 targets) and with probability targets, argmax against torch.argmax (ties, NaN),
 * on the CPU and the emulated CUDA kernels; bad labels at the API edge and below it.
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

    static Out run(Backend be, CrossEntropy op, float[] x, int[] y, int b, int c) {
        try (Tensor xt = Tensor.of(be, x, b, c); IntTensor yt = IntTensor.of(be, y, b);
             Tensor rows = Tensor.empty(be, b); Tensor loss = Tensor.empty(be); Tensor grad = Tensor.empty(be, b, c)) {
            op.compute(xt, yt, rows, loss, grad);
            return new Out(rows.toArray(), loss.toArray(), grad.toArray());
        }
    }

    static Out runSoft(Backend be, CrossEntropy op, float[] x, float[] t, int b, int c) {
        try (Tensor xt = Tensor.of(be, x, b, c); Tensor tt = Tensor.of(be, t, b, c);
             Tensor rows = Tensor.empty(be, b); Tensor loss = Tensor.empty(be); Tensor grad = Tensor.empty(be, b, c)) {
            op.computeSoft(xt, tt, rows, loss, grad);
            return new Out(rows.toArray(), loss.toArray(), grad.toArray());
        }
    }

    /** libtorch, float64: rows = cross_entropy(x, y, reduction='none', label_smoothing) * scale; loss = rows.mean(). */
    static double[][] torchRef(float[] x, int[] y, int b, int c, double eps, double scale) {
        long[] labels = new long[b];  // torch's class-index targets are int64
        for (int i = 0; i < b; i++) labels[i] = y[i];
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

    /** Random labels; rows 0 and 1 take the last two classes (the top of the range, where a bound is off by one). */
    static int[] labels(Random rng, int b, int c) {
        int[] y = new int[b];
        for (int i = 0; i < b; i++) y[i] = i < 2 ? Math.max(0, c - 1 - i) : rng.nextInt(c);
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
        float[] x = Check.normal(rng, b * c, 3);
        int[] y = labels(rng, b, c);
        for (float eps : new float[] {0f, 0.1f, 1f}) {
            for (float scale : new float[] {1f, 0.35f}) {
                double[][] ref = torchRef(x, y, b, c, eps, scale);
                CrossEntropy op = CrossEntropy.builder().labelSmoothing(eps).lossScale(scale).build();
                String what = String.format("seed=%d B=%d C=%d eps=%s scale=%s", seed, b, c, eps, scale);
                for (Backend be : new Backend[] {cpu, emu}) {
                    Out ours = run(be, op, x, y, b, c);
                    String on = what + " on " + be.device();
                    assertTrue(Check.relErr(ours.rows(), ref[0]) <= TOL, on + ": rows " + Check.relErr(ours.rows(), ref[0]));
                    assertTrue(Check.relErr(ours.loss(), ref[1]) <= TOL, on + ": loss " + Check.relErr(ours.loss(), ref[1]));
                    assertTrue(Check.relErr(ours.grad(), ref[2]) <= TOL, on + ": grad " + Check.relErr(ours.grad(), ref[2]));
                }
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
        float[] x = Check.normal(rng, b * c, 5), t = new float[b * c];
        int[] y = labels(rng, b, c);
        for (int i = 0; i < b; i++) t[i * c + y[i]] = 1f;
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
        int[] y = labels(rng, b, c);
        for (float eps : new float[] {0f, 0.1f}) {
            double[][] ref = torchRef(x, y, b, c, eps, 2.0);
            Out ours = run(cpu, CrossEntropy.builder().labelSmoothing(eps).lossScale(2f).build(), x, y, b, c);
            String what = "seed=" + seed + " eps=" + eps;
            assertTrue(Check.relErr(ours.loss(), ref[1]) <= TOL, what + ": loss " + Check.relErr(ours.loss(), ref[1]));
            assertTrue(Check.relErr(ours.grad(), ref[2]) <= TOL, what + ": grad " + Check.relErr(ours.grad(), ref[2]));
        }
    }

    /**
     * torch.argmax on fresh inputs with many ties (the first index wins) and NaN (torch takes NaN as the maximum: the
     * first NaN's index), then the indices fed back as labels, as hard distillation does, against F.cross_entropy
     * with torch's own argmax as its targets.
     */
    @Test
    void argmaxMatchesTorchIncludingTiesAndNaN() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        for (int[] shape : new int[][] {{1, 1}, {9, 7}, {33, 100}, {4, 4099}, {3, 70000}}) {
            int b = shape[0], c = shape[1];
            float[] x = new float[b * c];
            for (int i = 0; i < x.length; i++) x[i] = rng.nextInt(4);  // many ties
            if (b > 3) {
                x[2 * c + c / 2] = Float.NaN;  // row 2: the first NaN wins
                x[2 * c + c - 1] = Float.NaN;
                x[3 * c] = Float.NaN;
            }
            if (c > 1) x[(b - 1) * c + c - 1] = 4;  // the last row's only maximum in its last column
            long[] ref = new long[b];
            try (PointerScope ignored = new PointerScope()) {
                org.bytedeco.pytorch.Tensor t = AbstractTensor.create(x, b, c);
                torch.argmax(t, new LongOptional(1), false).contiguous().data_ptr_long().get(ref);
            }
            int[] want = new int[b];
            for (int i = 0; i < b; i++) want[i] = Math.toIntExact(ref[i]);
            float[] z = Check.normal(rng, b * c, 2);
            double[][] ceRef = torchRef(z, want, b, c, 0, 1);
            for (Backend be : new Backend[] {cpu, emu}) {
                String what = "seed=" + seed + " B=" + b + " C=" + c + " on " + be.device();
                try (Tensor xt = Tensor.of(be, x, b, c); IntTensor idx = IntTensor.of(be, new int[b], b);
                     Tensor zt = Tensor.of(be, z, b, c); Tensor rows = Tensor.empty(be, b);
                     Tensor loss = Tensor.empty(be)) {
                    CrossEntropy.argmax(xt, idx);
                    assertArrayEquals(want, idx.toArray(), what);
                    CrossEntropy.builder().build().compute(zt, idx, rows, loss, null);
                    assertTrue(Check.relErr(loss.toArray(), ceRef[1]) <= TOL, what + ": CE on the argmax");
                }
            }
        }
    }

    /** Labels at the top of a large class count (C = 70000), against libtorch on both backends. */
    @Test
    void labelsNearTheTopOfALargeClassCountMatchLibtorch() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        int b = 3, c = 70000;
        float[] x = Check.normal(rng, b * c, 3);
        int[] y = {c - 1, c - 2, rng.nextInt(c)};
        double[][] ref = torchRef(x, y, b, c, 0.1, 1);
        for (Backend be : new Backend[] {cpu, emu}) {
            Out ours = run(be, CrossEntropy.builder().labelSmoothing(0.1f).build(), x, y, b, c);
            String what = "seed=" + seed + " on " + be.device();
            assertTrue(Check.relErr(ours.rows(), ref[0]) <= TOL, what + ": rows " + Check.relErr(ours.rows(), ref[0]));
            assertTrue(Check.relErr(ours.grad(), ref[2]) <= TOL, what + ": grad " + Check.relErr(ours.grad(), ref[2]));
        }
    }

    /**
     * Below the Java check (a raw Distill4jNative call, as an op written against the C ABI makes it), a bad label is
     * never an index: the CPU kernel refuses the call, naming row and label (an IllegalStateException through
     * Backend.call); the emulated CUDA kernel, as on a GPU, writes NaN into that row's loss and gradient, and the
     * mean; the other rows are as before.
     */
    @Test
    void kernelsGuardBadLabelsBelowTheJavaCheck() {
        Random rng = new Random(Check.freshSeed());
        int b = 3, c = 5;
        float[] x = Check.normal(rng, b * c, 1);
        for (int bad : new int[] {c, c + 1, -1, Integer.MAX_VALUE, Integer.MIN_VALUE}) {
            for (Backend be : new Backend[] {cpu, emu}) {
                try (Tensor xt = Tensor.of(be, x, b, c); IntTensor yt = IntTensor.of(be, new int[] {0, bad, 2}, b);
                     Tensor rows = Tensor.empty(be, b); Tensor loss = Tensor.empty(be);
                     Tensor grad = Tensor.empty(be, b, c)) {
                    rows.copyFrom(new float[] {-3f, -3f, -3f});
                    Runnable raw = () -> be.call("cross_entropy", () -> Distill4jNative.d4j_cross_entropy(
                            be.kernels(), be.stream(), xt.data(), yt.data(), b, c, 0f, 1f, rows.data(), loss.data(),
                            grad.data()));
                    if (be == cpu) {
                        assertMessage(IllegalStateException.class, "label " + bad + " at row 1 is not a class index "
                                + "in [0, 5)", raw::run);
                        assertArrayEquals(new float[] {-3f, -3f, -3f}, rows.toArray(), "nothing written");
                    } else {
                        raw.run();
                        float[] r = rows.toArray(), g = grad.toArray();
                        assertTrue(Float.isNaN(r[1]) && Float.isNaN(loss.toArray()[0]), "label " + bad + ": NaN row");
                        for (int j = 0; j < c; j++) assertTrue(Float.isNaN(g[c + j]), "NaN gradient row");
                        assertTrue(Float.isFinite(r[0]) && Float.isFinite(r[2]) && Float.isFinite(g[0])
                                && Float.isFinite(g[2 * c]), "label " + bad + ": other rows finite");
                    }
                }
            }
        }
    }

    @Test
    void nanLogitsGiveNanRowAsInPyTorch() {
        Random rng = new Random(Check.freshSeed());
        int b = 3, c = 17;
        float[] x = Check.normal(rng, b * c, 1);
        int[] y = labels(rng, b, c);
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
        float[] x = Check.normal(rng, b * c, 4);
        int[] y = labels(rng, b, c);
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
                float[] x = Check.normal(rng, b * c, 4);
                int[] y = labels(rng, b, c);
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
                try (Tensor xt = Tensor.of(cuda, x, b, c); IntTensor idx = IntTensor.empty(cuda, b);
                     Tensor xc = Tensor.of(cpu, x, b, c); IntTensor idc = IntTensor.empty(cpu, b)) {
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
        float[] x = Check.normal(rng, 4 * 5, 1);
        int[] y = labels(rng, 4, 5);
        Out full = run(cpu, CrossEntropy.builder().build(), x, y, 4, 5);
        try (Tensor xt = Tensor.of(cpu, x, 4, 5); IntTensor yt = IntTensor.of(cpu, y, 4); Tensor rows = Tensor.empty(cpu, 4)) {
            CrossEntropy.builder().build().compute(xt, yt, rows, null, null);
            assertArrayEquals(full.rows(), rows.toArray());
        }
    }

    @Test
    void badInputIsAClearException() {
        CrossEntropy ce = CrossEntropy.builder().build();
        try (Tensor x = Tensor.of(cpu, new float[6], 2, 3); Tensor rows = Tensor.empty(cpu, 2);
             Tensor v = Tensor.empty(cpu, 6); IntTensor y2 = IntTensor.of(cpu, new int[] {0, 2}, 2);
             IntTensor y3 = IntTensor.empty(cpu, 3); IntTensor y23 = IntTensor.empty(cpu, 2, 3);
             IntTensor onEmu = IntTensor.of(emu, new int[2], 2);
             Tensor emuX = Tensor.of(emu, new float[6], 2, 3); Tensor emuRows = Tensor.empty(emu, 2)) {
            for (int bad : new int[] {3, 4, -1, -100, Integer.MAX_VALUE, Integer.MIN_VALUE}) {
                try (IntTensor y = IntTensor.of(cpu, new int[] {0, bad}, 2)) {
                    assertMessage(IllegalArgumentException.class, "label " + bad + " at row 1 is not a class index in [0, 3)",
                            () -> ce.compute(x, y, rows, null, null));
                }
                try (IntTensor y = IntTensor.of(emu, new int[] {bad, 0}, 2)) {
                    assertMessage(IllegalArgumentException.class, "label " + bad + " at row 0 is not a class index",
                            () -> ce.compute(emuX, y, emuRows, null, null));
                }
                assertMessage(IllegalArgumentException.class, "label " + bad + " at row 2 is not a class index in [0, 3)",
                        () -> CrossEntropy.checkLabels(new int[] {2, 0, bad}, 3));
            }
            CrossEntropy.checkLabels(new int[] {0, 1, 2}, 3);  // every class, the top one included, passes
            assertMessage(IllegalArgumentException.class, "labels must have shape [2], got [3]",
                    () -> ce.compute(x, y3, rows, null, null));
            assertMessage(IllegalArgumentException.class, "labels must have shape [2], got [2, 3]",
                    () -> ce.compute(x, y23, rows, null, null));
            assertMessage(IllegalArgumentException.class, "logits must be [B, C], got [6]",
                    () -> ce.compute(v, y3, rows, null, null));
            assertMessage(IllegalArgumentException.class, "cuda-emu", () -> ce.compute(x, onEmu, rows, null, null));
            assertMessage(IllegalArgumentException.class, "labels is required", () -> ce.compute(x, null, rows, null, null));
            assertMessage(IllegalArgumentException.class, "rowLoss is required", () -> ce.compute(x, y2, null, null, null));
            assertMessage(IllegalArgumentException.class, "index must have shape [2]", () -> CrossEntropy.argmax(x, y3));
            assertMessage(IllegalArgumentException.class, "index is on cuda-emu", () -> CrossEntropy.argmax(x, onEmu));
            assertMessage(IllegalArgumentException.class, "cross_entropy_soft: targets must have shape [2, 3], got [2]",
                    () -> ce.computeSoft(x, rows, rows, null, null));
            assertMessage(IllegalArgumentException.class, "cross_entropy_soft: targets is on cuda-emu",
                    () -> ce.computeSoft(x, emuX, rows, null, null));
            assertMessage(IllegalArgumentException.class, "cross_entropy_soft: grad must have shape [2, 3], got [6]",
                    () -> ce.computeSoft(x, x, rows, null, v));
            Tensor closed = Tensor.empty(cpu, 2, 3);
            closed.close();
            assertMessage(IllegalStateException.class, "closed", () -> ce.compute(closed, y2, rows, null, null));
            IntTensor closedLabels = IntTensor.empty(cpu, 2);
            closedLabels.close();
            closedLabels.close();  // twice is harmless
            assertMessage(IllegalStateException.class, "labels tensor is closed",
                    () -> ce.compute(x, closedLabels, rows, null, null));
            assertMessage(IllegalStateException.class, "is closed", closedLabels::data);
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
