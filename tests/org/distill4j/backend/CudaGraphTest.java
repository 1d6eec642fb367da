package org.distill4j.backend;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.distill4j.Device;
import org.distill4j.IntTensor;
import org.distill4j.Tensor;
import org.distill4j.ops.CrossEntropy;
import org.distill4j.ops.Gelu;
import org.distill4j.ops.Linear;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.Test;

/**
 * {@link CudaGraph} on the emulated CUDA backend (and on a card when there is one): a captured sequence of ops runs
 * nothing while captured, replays what the same calls do uncaptured bit for bit on whatever inputs are in place at
 * each replay, and what CUDA refuses inside a capture (waits, host copies, host writes) throws and leaves the
 * backend usable. The uncaptured results are checked against float64 so that two runs doing nothing alike fail.
 */
class CudaGraphTest {
    private static final int M = 9, K = 20, N = 70, C = 7;

    /** The ops of the sequence and their outputs. */
    private static final class Step implements AutoCloseable {
        final Tensor x, w, b, y, act, copy, dw, db, dx, logits, rows, loss, grad;
        final IntTensor labels;

        Step(Backend be, Tensor x, Tensor w, Tensor b, Tensor logits, IntTensor labels) {
            this.x = x;
            this.w = w;
            this.b = b;
            this.logits = logits;
            this.labels = labels;
            y = Tensor.empty(be, M, N);
            act = Tensor.empty(be, M, N);
            copy = Tensor.empty(be, M, N);
            dw = Tensor.empty(be, N, K);
            db = Tensor.empty(be, N);
            dx = Tensor.empty(be, M, K);
            rows = Tensor.empty(be, M);
            loss = Tensor.empty(be);
            grad = Tensor.empty(be, M, C);
        }

        void run() {
            dw.zero();
            db.zero();
            Linear.forward(x, w, b, null, y);
            Gelu.forward(y, act);
            act.copyTo(copy);
            Linear.backward(x, w, act, dx, dw, db);
            CrossEntropy.builder().labelSmoothing(0.1f).build().compute(logits, labels, rows, loss, grad);
        }

        float[][] outputs() {
            return new float[][] {y.toArray(), act.toArray(), copy.toArray(), dw.toArray(), db.toArray(),
                dx.toArray(), rows.toArray(), loss.toArray(), grad.toArray()};
        }

        void poison() {
            for (Tensor t : new Tensor[] {y, act, copy, dw, db, dx, rows, loss, grad}) {
                float[] v = new float[(int) t.numel()];
                java.util.Arrays.fill(v, -4321f);
                t.copyFrom(v);
            }
        }

        @Override
        public void close() {
            for (Tensor t : new Tensor[] {y, act, copy, dw, db, dx, rows, loss, grad}) t.close();
        }
    }

    @Test
    void replaysTheUncapturedSequenceOnTheEmulator() {
        try (Backend be = Backends.open(Device.cudaEmu())) {
            replaysTheUncapturedSequence(be);
        }
    }

    @Test
    void replaysTheUncapturedSequenceOnAGpu() {
        try (Backend be = Check.cudaOrSkip()) {
            replaysTheUncapturedSequence(be);
        }
    }

    private static void replaysTheUncapturedSequence(Backend be) {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        String what = be.device() + " (seed " + seed + ")";
        assertTrue(be.capturesGraphs(), what);
        try (Tensor x = Tensor.of(be, Check.normal(rng, M * K, 1), M, K);
             Tensor w = Tensor.of(be, Check.normal(rng, N * K, 0.3), N, K);
             Tensor b = Tensor.of(be, Check.normal(rng, N, 1), N);
             Tensor logits = Tensor.of(be, Check.normal(rng, M * C, 2), M, C);
             IntTensor labels = IntTensor.of(be, randomLabels(rng), M);
             Step eager = new Step(be, x, w, b, logits, labels);
             Step graphed = new Step(be, x, w, b, logits, labels)) {
            eager.run();  // also creates what a capture may not (cuBLASLt workspace, the bias-gradient scratch)
            float[][] first = eager.outputs();
            assertTrue(Check.relErr(first[0], linear(x.toArray(), w.toArray(), b.toArray())) <= 1e-5,
                    what + ": uncaptured y = x Wᵀ + b against float64");
            graphed.poison();
            float[][] poisoned = graphed.outputs();
            try (CudaGraph graph = CudaGraph.capture(be, graphed::run)) {
                assertFalse(be.capturing(), what);
                for (int i = 0; i < poisoned.length; i++) {
                    assertArrayEquals(poisoned[i], graphed.outputs()[i], what + ": output " + i + " before replay");
                }
                for (int round = 0; round < 3; round++) {
                    if (round > 0) {  // the next batch, written into the same tensors
                        x.copyFrom(Check.normal(rng, M * K, 1));
                        logits.copyFrom(Check.normal(rng, M * C, 2));
                        labels.copyFrom(randomLabels(rng));
                        eager.run();
                    }
                    graph.replay();
                    float[][] want = eager.outputs(), got = graphed.outputs();
                    for (int i = 0; i < want.length; i++) {
                        assertArrayEquals(want[i], got[i], what + ": replay " + round + ", output " + i);
                    }
                }
                graph.replay();  // again on the same inputs: the zeroing is part of the graph, no accumulation
                float[][] want = eager.outputs(), got = graphed.outputs();
                for (int i = 0; i < want.length; i++) assertArrayEquals(want[i], got[i], what + ": second replay");
            }
        }
    }

    @Test
    void whatCudaRefusesInACaptureThrowsAndLeavesTheBackendUsable() {
        try (Backend be = Backends.open(Device.cudaEmu()); Tensor x = Tensor.of(be, new float[] {1, -2, 3}, 3);
             Tensor y = Tensor.empty(be, 3)) {
            String waits = "while its stream is being captured into a CUDA graph";
            assertMessage(IllegalStateException.class, waits, () -> CudaGraph.capture(be, () -> {
                Gelu.forward(x, y);
                y.toArray();  // a host read: a wait for the device
            }));
            assertFalse(be.capturing(), "the capture ended with the exception");
            assertMessage(IllegalStateException.class, waits, () -> CudaGraph.capture(be, () -> x.copyFrom(
                    new float[] {4, 5, 6})));
            assertMessage(IllegalStateException.class, waits, () -> CudaGraph.capture(be, be::synchronize));
            assertMessage(IllegalStateException.class, "already capturing", () -> CudaGraph.capture(be,
                    () -> CudaGraph.capture(be, () -> {})));
            assertFalse(be.capturing());
            assertArrayEquals(new float[] {1, -2, 3}, x.toArray(), "the refused host write did not happen");
            Gelu.forward(x, y);  // runs at once again
            float[] g = y.toArray();
            assertTrue(g[0] > 0.84f && g[0] < 0.85f && g[1] < 0 && g[2] > 2.99f, java.util.Arrays.toString(g));

            CudaGraph graph = CudaGraph.capture(be, () -> Gelu.forward(x, y));
            graph.close();
            graph.close();  // harmless
            assertMessage(IllegalStateException.class, "closed", graph::replay);
        }
    }

    @Test
    void theCpuBackendCapturesNothing() {
        try (Backend be = Backends.open(Device.cpu())) {
            assertFalse(be.capturesGraphs());
            assertMessage(UnsupportedOperationException.class, "cpu cannot capture CUDA graphs",
                    () -> CudaGraph.capture(be, () -> {}));
        }
    }

    private static int[] randomLabels(Random rng) {
        int[] l = new int[M];
        for (int i = 0; i < M; i++) l[i] = rng.nextInt(C);
        return l;
    }

    private static double[] linear(float[] x, float[] w, float[] b) {
        double[] y = new double[M * N];
        for (int m = 0; m < M; m++) {
            for (int n = 0; n < N; n++) {
                double s = b[n];
                for (int k = 0; k < K; k++) s += (double) x[m * K + k] * w[n * K + k];
                y[m * N + n] = s;
            }
        }
        return y;
    }

    static void assertMessage(Class<? extends Throwable> type, String part, org.junit.jupiter.api.function.Executable run) {
        Throwable t = assertThrows(type, run);
        assertTrue(t.getMessage() != null && t.getMessage().contains(part), "message '" + t.getMessage()
                + "' lacks '" + part + "'");
    }
}
