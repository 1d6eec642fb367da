package org.distill4j.bench;

import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import org.distill4j.Device;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.ops.Linear;
import org.distill4j.reference.Errors;
import org.distill4j.reference.TorchLinear;

/**
 * {@code bench linear}: the linear op with bias, forward + backward (dx, dW, db), against libtorch's
 * {@code F.linear} + autograd on the CPU, in the same run; prints GFLOP/s (6·M·K·N per step) of both.
 */
public final class LinearBench {
    private LinearBench() {}

    /** Shapes {M, K, N}: DeiT-Ti at B=8 (M = 8·198: qkv, proj, fc1, fc2), the heads, the demo ViT (M = 128·51). */
    private static final int[][] SHAPES = {{1584, 192, 576}, {1584, 192, 192}, {1584, 192, 768}, {1584, 768, 192},
            {8, 192, 1000}, {6528, 96, 288}, {6528, 96, 96}, {6528, 96, 384}, {6528, 384, 96}};

    /** Times every shape and returns one row per shape. */
    public static List<BenchRow> run(Backend backend, int warmup, int runs, PrintStream log) {
        if (backend.device().kind() != Device.Kind.CPU) {
            throw new IllegalArgumentException("bench linear times the cpu backend against libtorch; the GPU "
                    + "comparison belongs to the CUDA kernel's check script");
        }
        TorchLinear.setThreads(Timing.referenceThreads(backend));
        List<BenchRow> rows = new ArrayList<>();
        for (int[] s : SHAPES) rows.add(runShape(backend, s[0], s[1], s[2], warmup, runs, log));
        return rows;
    }

    private static BenchRow runShape(Backend backend, int m, int k, int n, int warmup, int runs, PrintStream log) {
        Random rng = new Random(((long) m * 31 + k) * 31 + n);
        float[] x = normal(rng, m * k, 1), w = normal(rng, n * k, 0.05), b = normal(rng, n, 0.05),
                dy = normal(rng, m * n, 1);
        try (Tensor xt = Tensor.of(backend, x, m, k); Tensor wt = Tensor.of(backend, w, n, k);
             Tensor bt = Tensor.of(backend, b, n); Tensor y = Tensor.empty(backend, m, n);
             Tensor dyt = Tensor.of(backend, dy, m, n); Tensor dx = Tensor.empty(backend, m, k);
             Tensor dw = Tensor.empty(backend, n, k); Tensor db = Tensor.empty(backend, n);
             TorchLinear torch = new TorchLinear(x, w, b, null, m, k, n, false)) {
            Runnable ours = () -> {
                Linear.forward(xt, wt, bt, null, y);
                Linear.backward(xt, wt, dyt, dx, dw, db);
                backend.synchronize();
            };
            dw.copyFrom(new float[n * k]);
            db.copyFrom(new float[n]);
            ours.run();
            TorchLinear.Result ref = torch.run(dy);
            double err = Math.max(Math.max(Errors.relative(y.toArray(), ref.y()), Errors.relative(dx.toArray(), ref.dx())),
                    Math.max(Errors.relative(dw.toArray(), ref.dWeight()), Errors.relative(db.toArray(), ref.dBias())));
            Timing.Pair pair = Timing.alternate(ours, torch::runNoCopy, warmup, runs);
            double gflop = 6.0 * m * k * n / 1e9;
            String shape = "M=" + m + ",K=" + k + ",N=" + n;
            BenchRow row = new BenchRow("linear", backend.device().kind().label(), shape, pair.oursMs(),
                    "libtorch_linear_backward", pair.referenceMs(), err);
            log.println(row.toLine() + String.format(Locale.ROOT, "  ours %.1f GFLOP/s, libtorch %.1f GFLOP/s",
                    gflop / pair.oursMs() * 1e3, gflop / pair.referenceMs() * 1e3));
            return row;
        }
    }

    private static float[] normal(Random rng, int n, double std) {
        float[] out = new float[n];
        for (int i = 0; i < n; i++) out[i] = (float) (rng.nextGaussian() * std);
        return out;
    }
}
