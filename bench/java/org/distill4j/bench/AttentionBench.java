package org.distill4j.bench;

import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.distill4j.Device;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.ops.Attention;
import org.distill4j.reference.Errors;
import org.distill4j.reference.TorchAttention;

/**
 * {@code bench attention}: multi-head self-attention, forward + backward (d qkv), against libtorch's
 * {@code scaled_dot_product_attention} on q, k, v split from the same qkv, and its autograd backward, on the CPU
 * in the same run.
 */
public final class AttentionBench {
    private AttentionBench() {}

    /** Shapes {B, H, N, Dh}: DeiT-Ti's attention at B=32 (the target of the issue), and at B=8. */
    private static final int[][] SHAPES = {{32, 3, 198, 64}, {8, 3, 198, 64}};

    /** Times every shape and returns one row per shape. */
    public static List<BenchRow> run(Backend backend, int warmup, int runs, PrintStream log) {
        if (backend.device().kind() != Device.Kind.CPU) {
            throw new IllegalArgumentException("bench attention times the cpu backend against libtorch; the GPU "
                    + "comparison belongs to the CUDA kernel's check script");
        }
        TorchAttention.setThreads(Timing.referenceThreads(backend));
        List<BenchRow> rows = new ArrayList<>();
        for (int[] s : SHAPES) rows.add(runShape(backend, s[0], s[1], s[2], s[3], warmup, runs, log));
        return rows;
    }

    private static BenchRow runShape(Backend backend, int b, int h, int n, int dh, int warmup, int runs,
                                     PrintStream log) {
        Random rng = new Random(((long) b * 31 + h) * 31 + n * 7L + dh);
        // qkv of unit variance: scores of a few units, as after a LayerNorm and a trained qkv linear.
        float[] qkv = normal(rng, 3 * b * n * h * dh, 1), dOut = normal(rng, b * n * h * dh, 1);
        try (Attention op = Attention.builder().batch(b).tokens(n).heads(h).headDim(dh).build(backend);
             Tensor x = Tensor.of(backend, qkv, op.qkvShape()); Tensor out = Tensor.empty(backend, op.outShape());
             Tensor lse = Tensor.empty(backend, op.lseShape()); Tensor dO = Tensor.of(backend, dOut, op.outShape());
             Tensor dx = Tensor.empty(backend, op.qkvShape());
             TorchAttention torch = new TorchAttention(qkv, b, n, h, dh, op.scale(), false)) {
            Runnable ours = () -> {
                op.forward(x, out, lse);
                op.backward(x, out, lse, dO, dx);
                backend.synchronize();
            };
            ours.run();
            TorchAttention.Result ref = torch.run(dOut);
            double err = Math.max(Errors.relative(out.toArray(), ref.out()), Errors.relative(dx.toArray(), ref.dQkv()));
            Timing.Pair pair = Timing.alternate(ours, torch::runNoCopy, warmup, runs);
            String shape = "B=" + b + ",H=" + h + ",N=" + n + ",Dh=" + dh;
            BenchRow row = new BenchRow("attention", backend.device().kind().label(), shape, pair.oursMs(),
                    "libtorch_sdpa_backward", pair.referenceMs(), err);
            log.println(row.toLine());
            return row;
        }
    }

    private static float[] normal(Random rng, int n, double std) {
        float[] out = new float[n];
        for (int i = 0; i < n; i++) out[i] = (float) (rng.nextGaussian() * std);
        return out;
    }
}
