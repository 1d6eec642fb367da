package org.distill4j.bench;

import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.distill4j.Device;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.ops.PatchEmbed;
import org.distill4j.reference.Errors;
import org.distill4j.reference.TorchPatchEmbed;

/**
 * {@code bench patch-embed}: the fused patch embedding, forward + backward (weight, bias, position and prefix
 * tokens; no image gradient, as in training), against libtorch's conv2d + flatten/transpose + cat + add chain and
 * its autograd backward on the CPU, in the same run. Distilled (DeiT) layout: two prefix tokens.
 */
public final class PatchEmbedBench {
    private PatchEmbedBench() {}

    /** Shapes {B, Cin, H, W, P, D}: DeiT-Ti at 224² (the target of the issue) and the Fashion-MNIST demo ViT. */
    private static final int[][] SHAPES = {{32, 3, 224, 224, 16, 192}, {128, 1, 28, 28, 4, 96}};

    /** Times every shape and returns one row per shape. */
    public static List<BenchRow> run(Backend backend, int warmup, int runs, PrintStream log) {
        if (backend.device().kind() != Device.Kind.CPU) {
            throw new IllegalArgumentException("bench patch-embed times the cpu backend against libtorch; the GPU "
                    + "comparison (cuDNN) belongs to the CUDA kernel's check script");
        }
        TorchPatchEmbed.setThreads(Timing.referenceThreads(backend));
        List<BenchRow> rows = new ArrayList<>();
        for (int[] s : SHAPES) rows.add(runShape(backend, s[0], s[1], s[2], s[3], s[4], s[5], warmup, runs, log));
        return rows;
    }

    private static BenchRow runShape(Backend backend, int b, int c, int h, int w, int p, int d, int warmup, int runs,
                                     PrintStream log) {
        Random rng = new Random(((long) b * 31 + c) * 31 + h * 7L + p);
        int t = 2 + (h / p) * (w / p);
        float[] images = normal(rng, b * c * h * w, 1), weight = normal(rng, d * c * p * p, 0.02),
                bias = normal(rng, d, 0.02), pos = normal(rng, t * d, 0.02), cls = normal(rng, d, 0.02),
                dist = normal(rng, d, 0.02), dTokens = normal(rng, b * t * d, 1);
        try (PatchEmbed op = PatchEmbed.builder().batch(b).channels(c).image(h, w).patch(p).dim(d).distilled(true)
                     .build(backend);
             Tensor im = Tensor.of(backend, images, op.imagesShape()); Tensor wt = Tensor.of(backend, weight, op.weightShape());
             Tensor bs = Tensor.of(backend, bias, d); Tensor ps = Tensor.of(backend, pos, op.posShape());
             Tensor cl = Tensor.of(backend, cls, op.prefixTokenShape());
             Tensor ds = Tensor.of(backend, dist, op.prefixTokenShape());
             Tensor tokens = Tensor.empty(backend, op.tokensShape());
             Tensor dt = Tensor.of(backend, dTokens, op.tokensShape());
             Tensor dw = Tensor.empty(backend, op.weightShape()); Tensor db = Tensor.empty(backend, d);
             Tensor dp = Tensor.empty(backend, op.posShape()); Tensor dc = Tensor.empty(backend, op.prefixTokenShape());
             Tensor dd = Tensor.empty(backend, op.prefixTokenShape());
             TorchPatchEmbed torch = new TorchPatchEmbed(images, weight, bias, pos, cls, dist, b, c, h, w, p, d, false,
                     false)) {
            Runnable ours = () -> {
                op.forward(im, wt, bs, ps, cl, ds, tokens);
                op.backward(im, wt, dt, dw, db, dp, dc, dd, null);
                backend.synchronize();
            };
            // Accuracy once, from zeroed gradients (they accumulate), against libtorch's fp32 chain.
            for (Tensor g : new Tensor[] {dw, db, dp, dc, dd}) g.copyFrom(new float[(int) g.numel()]);
            ours.run();
            TorchPatchEmbed.Result ref = torch.run(dTokens);
            double err = max(Errors.relative(tokens.toArray(), ref.tokens()), Errors.relative(dw.toArray(), ref.dWeight()),
                    Errors.relative(db.toArray(), ref.dBias()), Errors.relative(dp.toArray(), ref.dPos()),
                    Errors.relative(dc.toArray(), ref.dCls()), Errors.relative(dd.toArray(), ref.dDist()));
            Timing.Pair pair = Timing.alternate(ours, torch::runNoCopy, warmup, runs);
            String shape = "B=" + b + ",C=" + c + ",H=" + h + ",W=" + w + ",P=" + p + ",D=" + d;
            BenchRow row = new BenchRow("patch-embed", backend.device().kind().label(), shape, pair.oursMs(),
                    "libtorch_conv2d_cat_add_backward", pair.referenceMs(), err);
            log.println(row.toLine());
            return row;
        }
    }

    private static double max(double... v) {
        double m = 0;
        for (double x : v) m = Math.max(m, x);
        return m;
    }

    private static float[] normal(Random rng, int n, double std) {
        float[] out = new float[n];
        for (int i = 0; i < n; i++) out[i] = (float) (rng.nextGaussian() * std);
        return out;
    }
}
