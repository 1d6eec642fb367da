package org.distill4j.cli;

import java.util.Locale;
import java.util.Map;
import java.util.Random;
import java.util.TreeSet;
import java.util.concurrent.Callable;
import org.distill4j.Device;
import org.distill4j.IntTensor;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.Backends;
import org.distill4j.ops.AdamW;
import org.distill4j.ops.Attention;
import org.distill4j.ops.CrossEntropy;
import org.distill4j.ops.Gelu;
import org.distill4j.ops.KlDiv;
import org.distill4j.ops.LayerNorm;
import org.distill4j.ops.Linear;
import org.distill4j.ops.PatchEmbed;
import org.distill4j.ops.Reduction;
import org.distill4j.ops.TokenRows;
import org.distill4j.reference.AdamWFloat64;
import org.distill4j.reference.AttentionFloat64;
import org.distill4j.reference.CrossEntropyFloat64;
import org.distill4j.reference.Errors;
import org.distill4j.reference.GeluFloat64;
import org.distill4j.reference.KlDivFloat64;
import org.distill4j.reference.LayerNormFloat64;
import org.distill4j.reference.LinearFloat64;
import org.distill4j.reference.PatchEmbedFloat64;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code ./distill4j selftest}: fresh random cases on a backend, each against the float64 oracle and, for
 * cuda and cuda-emu, against the CPU backend; the max relative error per case; exit 1 on any failure.
 */
@Command(name = "selftest", mixinStandardHelpOptions = true,
        description = "Run fresh random cases of an op on a backend against float64 and the CPU backend.")
final class SelftestCommand implements Callable<Integer> {
    private static final double TOL = 1e-5;

    /** The cases of one op: runs them on {@code be} (and against {@code cpu} when not null); returns the failures. */
    private interface Cases {
        int run(Backend be, Backend cpu, Random rng, boolean small);
    }

    /** The ops by name. {@code small}: the emulated CUDA backend runs one OS thread per CUDA thread. */
    private static final Map<String, Cases> OPS = Map.ofEntries(Map.entry("kl", SelftestCommand::klCases),
            Map.entry("patch-embed", SelftestCommand::patchEmbedCases),
            Map.entry("attention", SelftestCommand::attentionCases),
            Map.entry("cross-entropy", SelftestCommand::crossEntropyCases),
            Map.entry("adamw", SelftestCommand::adamwCases),
            Map.entry("layernorm", SelftestCommand::layerNormCases), Map.entry("gelu", SelftestCommand::geluCases),
            Map.entry("linear", SelftestCommand::linearCases),
            Map.entry("token-rows", SelftestCommand::tokenRowsCases), Map.entry("vit", VitSelftest::cases));

    @Option(names = "--backend", defaultValue = "cpu", description = "cpu, cuda-emu or cuda (default ${DEFAULT-VALUE})")
    String backend;

    @Option(names = "--op", defaultValue = "kl", description = "kl, patch-embed, attention, layernorm, gelu, "
            + "cross-entropy, adamw, linear, token-rows or vit (default ${DEFAULT-VALUE})")
    String op;

    @Option(names = "--seed", description = "seed of the random cases (default: fresh)")
    Long seed;

    @Override
    public Integer call() {
        Device device = Device.parse(backend);
        Cases cases = OPS.get(op);
        if (cases == null) {
            throw new IllegalArgumentException("unknown op '" + op + "': expected one of "
                    + String.join(", ", new TreeSet<>(OPS.keySet())));
        }
        String noTorch = op.equals("vit") ? Libtorch.unavailableReason() : null;
        if (noTorch != null) throw new IllegalStateException("selftest --op vit needs libtorch: " + noTorch);
        long s = seed != null ? seed : System.nanoTime();
        System.out.println("selftest op=" + op + " backend=" + device + " seed=" + s);
        try (Backend be = Backends.open(device);
             Backend cpu = device.kind() == Device.Kind.CPU ? null : Backends.open(Device.cpu())) {
            int failures = cases.run(be, cpu, new Random(s), device.kind() == Device.Kind.CUDA_EMU);
            System.out.println(failures == 0 ? "selftest passed" : "selftest FAILED: " + failures + " case(s)");
            return failures == 0 ? 0 : 1;
        }
    }

    /** Runs the KL cases and returns how many failed. {@code small}: keep the emulator's work short. */
    private static int klCases(Backend be, Backend cpu, Random rng, boolean small) {
        int[][] shapes = small ? new int[][] {{1, 1}, {5, 10}, {9, 37}, {3, 1000}, {2, 4099}}
                : new int[][] {{1, 1}, {7, 10}, {64, 1000}, {16, 32001}, {4, 4099}};
        int failures = 0;
        for (int[] shape : shapes) {
            int b = shape[0], c = shape[1];
            float[] s = normal(rng, b * c), t = normal(rng, b * c);
            for (float temperature : new float[] {1f, 4f}) {
                for (Reduction r : Reduction.values()) {
                    KlDiv kl = KlDiv.builder().temperature(temperature).reduction(r).build();
                    float[][] ours = run(be, kl, s, t, b, c);
                    KlDivFloat64.Result ref = KlDivFloat64.compute(s, t, b, c, temperature, r, false, true, null);
                    double err = Math.max(Errors.relative(ours[0], ref.loss()), Errors.relative(ours[1], ref.grad()));
                    String vsCpu = "";
                    if (cpu != null) {
                        float[][] base = run(cpu, kl, s, t, b, c);
                        double e = Math.max(Errors.relative(ours[0], base[0]), Errors.relative(ours[1], base[1]));
                        err = Math.max(err, e);
                        vsCpu = String.format(Locale.ROOT, "  vs_cpu=%.2e", e);
                    }
                    boolean ok = err <= TOL;
                    failures += ok ? 0 : 1;
                    System.out.printf(Locale.ROOT, "  %-4s kl B=%d C=%d T=%s %-9s max_rel_err=%.2e%s%n", ok ? "ok" : "FAIL",
                            b, c, temperature, r.torchName(), err, vsCpu);
                }
            }
        }
        return failures;
    }

    private static float[][] run(Backend be, KlDiv kl, float[] s, float[] t, int b, int c) {
        boolean none = kl.reduction() == Reduction.NONE;
        try (Tensor st = Tensor.of(be, s, b, c); Tensor tt = Tensor.of(be, t, b, c);
             Tensor loss = none ? Tensor.empty(be, b) : Tensor.empty(be); Tensor grad = Tensor.empty(be, b, c);
             Tensor rows = Tensor.empty(be, b)) {
            kl.compute(st, tt, null, loss, grad, rows);
            return new float[][] {loss.toArray(), grad.toArray()};
        }
    }

    /**
     * Runs the patch-embedding cases (forward, and backward with the image gradient, from zeroed parameter
     * gradients) and returns how many failed. Shapes {B, Cin, H, W, P, D, prefix tokens}.
     */
    private static int patchEmbedCases(Backend be, Backend cpu, Random rng, boolean small) {
        // Emulated: a few dozen blocks per launch at most, whatever the kernel's tiling (B*N <= ~100 patch rows).
        int[][] shapes = small ? new int[][] {{1, 1, 28, 28, 7, 32, 1}, {2, 3, 32, 48, 8, 32, 2}, {2, 1, 28, 28, 4, 32, 0},
                {1, 3, 32, 32, 4, 64, 2}}
                : new int[][] {{1, 1, 28, 28, 7, 32, 1}, {5, 3, 32, 32, 4, 32, 2}, {2, 3, 32, 48, 8, 192, 2},
                {3, 1, 28, 28, 4, 32, 0}, {2, 3, 224, 224, 16, 192, 2}};
        int failures = 0;
        for (int[] s : shapes) {
            int b = s[0], c = s[1], h = s[2], w = s[3], p = s[4], d = s[5], prefix = s[6];
            int t = prefix + (h / p) * (w / p);
            float[][] in = {normal(rng, b * c * h * w), normal(rng, d * c * p * p), normal(rng, d), normal(rng, t * d),
                    prefix >= 1 ? normal(rng, d) : null, prefix == 2 ? normal(rng, d) : null, normal(rng, b * t * d)};
            float[][] ours = runPatchEmbed(be, in, s);
            PatchEmbedFloat64.Result ref = PatchEmbedFloat64.compute(in[0], in[1], in[2], in[3], in[4], in[5], in[6], b,
                    c, h, w, p, d);
            double[][] want = {ref.tokens(), ref.dWeight(), ref.dBias(), ref.dPos(), ref.dCls(), ref.dDist(),
                    ref.dImages()};
            double err = 0;
            for (int i = 0; i < want.length; i++) if (want[i] != null) err = Math.max(err, Errors.relative(ours[i], want[i]));
            String vsCpu = "";
            if (cpu != null) {
                float[][] base = runPatchEmbed(cpu, in, s);
                double e = 0;
                for (int i = 0; i < base.length; i++) if (base[i] != null) e = Math.max(e, Errors.relative(ours[i], base[i]));
                err = Math.max(err, e);
                vsCpu = String.format(Locale.ROOT, "  vs_cpu=%.2e", e);
            }
            boolean ok = err <= TOL;
            failures += ok ? 0 : 1;
            System.out.printf(Locale.ROOT, "  %-4s patch-embed B=%d C=%d H=%d W=%d P=%d D=%d prefix=%d max_rel_err=%.2e%s%n",
                    ok ? "ok" : "FAIL", b, c, h, w, p, d, prefix, err, vsCpu);
        }
        return failures;
    }

    /** Tokens, dWeight, dBias, dPos, dCls, dDist, dImages (null where absent) of one forward + backward. */
    private static float[][] runPatchEmbed(Backend be, float[][] in, int[] s) {
        int b = s[0], c = s[1], h = s[2], w = s[3], p = s[4], d = s[5], prefix = s[6];
        try (PatchEmbed op = PatchEmbed.builder().batch(b).channels(c).image(h, w).patch(p).dim(d).prefixTokens(prefix)
                     .build(be);
             Tensor images = Tensor.of(be, in[0], op.imagesShape()); Tensor weight = Tensor.of(be, in[1], op.weightShape());
             Tensor bias = Tensor.of(be, in[2], d); Tensor pos = Tensor.of(be, in[3], op.posShape());
             Tensor cls = in[4] == null ? null : Tensor.of(be, in[4], op.prefixTokenShape());
             Tensor dist = in[5] == null ? null : Tensor.of(be, in[5], op.prefixTokenShape());
             Tensor dTokens = Tensor.of(be, in[6], op.tokensShape()); Tensor tokens = Tensor.empty(be, op.tokensShape());
             Tensor dWeight = zeros(be, op.weightShape()); Tensor dBias = zeros(be, d); Tensor dPos = zeros(be, op.posShape());
             Tensor dCls = cls == null ? null : zeros(be, op.prefixTokenShape());
             Tensor dDist = dist == null ? null : zeros(be, op.prefixTokenShape());
             Tensor dImages = Tensor.empty(be, op.imagesShape())) {
            op.forward(images, weight, bias, pos, cls, dist, tokens);
            op.backward(images, weight, dTokens, dWeight, dBias, dPos, dCls, dDist, dImages);
            return new float[][] {tokens.toArray(), dWeight.toArray(), dBias.toArray(), dPos.toArray(),
                    dCls == null ? null : dCls.toArray(), dDist == null ? null : dDist.toArray(), dImages.toArray()};
        }
    }

    /**
     * Runs the attention cases (forward, and backward to d qkv) and returns how many failed. Shapes {B, H, N, Dh}:
     * N = 1, odd and ViT lengths (197, 198, 257). The float64 oracle materialises N×N per head: small shapes only.
     */
    private static int attentionCases(Backend be, Backend cpu, Random rng, boolean small) {
        // Emulated: a few dozen blocks per launch (B·H·ceil(N / query block) of them for a FlashAttention kernel).
        int[][] shapes = small ? new int[][] {{1, 1, 1, 32}, {1, 2, 7, 64}, {2, 3, 50, 32}, {1, 1, 198, 64}}
                : new int[][] {{1, 1, 1, 32}, {2, 3, 7, 64}, {4, 3, 50, 32}, {2, 6, 197, 64}, {1, 3, 198, 32},
                {1, 2, 257, 64}};
        int failures = 0;
        for (int[] s : shapes) {
            int b = s[0], h = s[1], n = s[2], dh = s[3];
            float[] qkv = normal(rng, 3 * b * n * h * dh), dOut = normal(rng, b * n * h * dh);
            double scale = 1.0 / Math.sqrt(dh);
            float[][] ours = runAttention(be, qkv, dOut, s);
            AttentionFloat64.Result ref = AttentionFloat64.compute(qkv, dOut, b, n, h, dh, (float) scale);
            double err = Math.max(Errors.relative(ours[0], ref.out()), Math.max(Errors.relative(ours[1], ref.lse()),
                    Errors.relative(ours[2], ref.dQkv())));
            String vsCpu = "";
            if (cpu != null) {
                float[][] base = runAttention(cpu, qkv, dOut, s);
                double e = 0;
                for (int i = 0; i < base.length; i++) e = Math.max(e, Errors.relative(ours[i], base[i]));
                err = Math.max(err, e);
                vsCpu = String.format(Locale.ROOT, "  vs_cpu=%.2e", e);
            }
            boolean ok = err <= TOL;
            failures += ok ? 0 : 1;
            System.out.printf(Locale.ROOT, "  %-4s attention B=%d H=%d N=%d Dh=%d max_rel_err=%.2e%s%n",
                    ok ? "ok" : "FAIL", b, h, n, dh, err, vsCpu);
        }
        return failures;
    }

    /** Out, lse and d qkv of one forward + backward. */
    private static float[][] runAttention(Backend be, float[] qkv, float[] dOut, int[] s) {
        try (Attention op = Attention.builder().batch(s[0]).heads(s[1]).tokens(s[2]).headDim(s[3]).build(be);
             Tensor x = Tensor.of(be, qkv, op.qkvShape()); Tensor dO = Tensor.of(be, dOut, op.outShape());
             Tensor out = Tensor.empty(be, op.outShape()); Tensor lse = Tensor.empty(be, op.lseShape());
             Tensor dx = Tensor.empty(be, op.qkvShape())) {
            op.forward(x, out, lse);
            op.backward(x, out, lse, dO, dx);
            return new float[][] {out.toArray(), lse.toArray(), dx.toArray()};
        }
    }

    /** Runs the cross-entropy cases (loss, row losses, gradient; label smoothing) and returns how many failed. */
    private static int crossEntropyCases(Backend be, Backend cpu, Random rng, boolean small) {
        int[][] shapes = small ? new int[][] {{1, 1}, {9, 10}, {3, 37}, {2, 4099}}
                : new int[][] {{1, 1}, {7, 10}, {256, 1000}, {16, 32001}, {4096, 10}};
        int failures = 0;
        for (int[] shape : shapes) {
            int b = shape[0], c = shape[1];
            float[] x = normal(rng, b * c);
            int[] y = new int[b];
            for (int i = 0; i < b; i++) y[i] = rng.nextInt(c);
            for (float eps : new float[] {0f, 0.1f}) {
                CrossEntropy ce = CrossEntropy.builder().labelSmoothing(eps).lossScale(0.5f).build();
                float[][] ours = runCrossEntropy(be, ce, x, y, b, c);
                CrossEntropyFloat64.Result ref = CrossEntropyFloat64.compute(x, y, b, c, eps, 0.5);
                double err = Math.max(Errors.relative(ours[0], ref.rowLoss()),
                        Math.max(Errors.relative(ours[1], ref.loss()), Errors.relative(ours[2], ref.grad())));
                String vsCpu = "";
                if (cpu != null) {
                    float[][] base = runCrossEntropy(cpu, ce, x, y, b, c);
                    double e = 0;
                    for (int i = 0; i < base.length; i++) e = Math.max(e, Errors.relative(ours[i], base[i]));
                    err = Math.max(err, e);
                    vsCpu = String.format(Locale.ROOT, "  vs_cpu=%.2e", e);
                }
                boolean ok = err <= TOL;
                failures += ok ? 0 : 1;
                System.out.printf(Locale.ROOT, "  %-4s cross-entropy B=%d C=%d eps=%s max_rel_err=%.2e%s%n",
                        ok ? "ok" : "FAIL", b, c, eps, err, vsCpu);
            }
        }
        return failures;
    }

    /** Row losses, loss and gradient of one call. */
    private static float[][] runCrossEntropy(Backend be, CrossEntropy ce, float[] x, int[] y, int b, int c) {
        try (Tensor xt = Tensor.of(be, x, b, c); IntTensor yt = IntTensor.of(be, y, b);
             Tensor rows = Tensor.empty(be, b); Tensor loss = Tensor.empty(be); Tensor grad = Tensor.empty(be, b, c)) {
            ce.compute(xt, yt, rows, loss, grad);
            return new float[][] {rows.toArray(), loss.toArray(), grad.toArray()};
        }
    }

    /** Runs the AdamW cases (a few steps with weight decay and a gradient scale) and returns how many failed. */
    private static int adamwCases(Backend be, Backend cpu, Random rng, boolean small) {
        int[] sizes = small ? new int[] {1, 33, 4099} : new int[] {1, 1001, 1 << 20};
        int steps = 4;
        int failures = 0;
        AdamW opt = AdamW.builder().lr(1e-2f).weightDecay(0.05f).build();
        for (int n : sizes) {
            float[] p0 = normal(rng, n), scale = new float[steps];
            float[][] g = new float[steps][];
            for (int k = 0; k < steps; k++) {
                g[k] = normal(rng, n);
                scale[k] = 0.25f + 0.75f * rng.nextFloat();
            }
            double[][] ref = {new double[n], new double[n], new double[n]};
            for (int i = 0; i < n; i++) ref[0][i] = p0[i];
            for (int k = 0; k < steps; k++) {
                AdamWFloat64.step(ref[0], g[k], ref[1], ref[2], k + 1, AdamWFloat64.decimal(opt.lr()),
                        AdamWFloat64.decimal(opt.beta1()), AdamWFloat64.decimal(opt.beta2()),
                        AdamWFloat64.decimal(opt.eps()), AdamWFloat64.decimal(opt.weightDecay()), scale[k]);
            }
            float[][] ours = runAdamW(be, opt, p0, g, scale);
            double err = 0;
            for (int i = 0; i < 3; i++) err = Math.max(err, Errors.relative(ours[i], ref[i]));
            String vsCpu = "";
            if (cpu != null) {
                float[][] base = runAdamW(cpu, opt, p0, g, scale);
                double e = 0;
                for (int i = 0; i < 3; i++) e = Math.max(e, Errors.relative(ours[i], base[i]));
                err = Math.max(err, e);
                vsCpu = String.format(Locale.ROOT, "  vs_cpu=%.2e", e);
            }
            boolean ok = err <= TOL;
            failures += ok ? 0 : 1;
            System.out.printf(Locale.ROOT, "  %-4s adamw n=%d steps=%d max_rel_err=%.2e%s%n", ok ? "ok" : "FAIL", n, steps,
                    err, vsCpu);
        }
        return failures;
    }

    /** param, m, v after the steps. */
    private static float[][] runAdamW(Backend be, AdamW opt, float[] p0, float[][] g, float[] scale) {
        int n = p0.length;
        try (Tensor p = Tensor.of(be, p0, n); Tensor gt = Tensor.empty(be, n); Tensor m = zeros(be, n);
             Tensor v = zeros(be, n); Tensor s = Tensor.empty(be)) {
            for (int k = 0; k < g.length; k++) {
                gt.copyFrom(g[k]);
                s.copyFrom(new float[] {scale[k]});
                opt.step(p, gt, m, v, k + 1, s);
            }
            return new float[][] {p.toArray(), m.toArray(), v.toArray()};
        }
    }

    private static Tensor zeros(Backend be, long... shape) {
        Tensor t = Tensor.empty(be, shape);
        return t.copyFrom(new float[Math.toIntExact(t.numel())]);
    }

    private static float[] normal(Random rng, int n) {
        float[] out = new float[n];
        for (int i = 0; i < n; i++) out[i] = (float) (rng.nextGaussian() * 3);
        return out;
    }

    /** Runs the LayerNorm cases (forward, backward from zeroed gradients) and returns how many failed. {M, C}. */
    private static int layerNormCases(Backend be, Backend cpu, Random rng, boolean small) {
        // Emulated: one warp per row, so M / 8 blocks per launch.
        int[][] shapes = small ? new int[][] {{1, 1}, {3, 33}, {50, 96}, {17, 1000}}
                : new int[][] {{1, 1}, {7, 33}, {197, 192}, {1584, 384}, {6528, 96}, {64, 3000}};
        int failures = 0;
        for (int[] s : shapes) {
            int m = s[0], c = s[1];
            float[] x = normal(rng, m * c), w = normal(rng, c), b = normal(rng, c), dy = normal(rng, m * c);
            float[][] ours = runLayerNorm(be, x, w, b, dy, m, c);
            LayerNormFloat64.Result ref = LayerNormFloat64.compute(x, w, b, dy, m, c, LayerNorm.DEFAULT_EPS);
            double[][] want = {ref.y(), ref.mean(), ref.rstd(), ref.dx(), ref.dWeight(), ref.dBias()};
            double err = 0;
            for (int i = 0; i < want.length; i++) {
                // C = 1: the true dx is 0, and ours is rounding of order rstd · ulp (a relative error of 1).
                if (i == 3 && c == 1) continue;
                err = Math.max(err, Errors.relative(ours[i], want[i]));
            }
            String vsCpu = "";
            if (cpu != null) {
                float[][] base = runLayerNorm(cpu, x, w, b, dy, m, c);
                double e = 0;
                for (int i = 0; i < base.length; i++) if (!(i == 3 && c == 1)) e = Math.max(e, Errors.relative(ours[i], base[i]));
                err = Math.max(err, e);
                vsCpu = String.format(Locale.ROOT, "  vs_cpu=%.2e", e);
            }
            boolean ok = err <= TOL;
            failures += ok ? 0 : 1;
            System.out.printf(Locale.ROOT, "  %-4s layernorm M=%d C=%d max_rel_err=%.2e%s%n", ok ? "ok" : "FAIL", m, c,
                    err, vsCpu);
        }
        return failures;
    }

    /** y, mean, rstd, dx, dWeight, dBias of one forward + backward (gradients from zero). */
    private static float[][] runLayerNorm(Backend be, float[] x, float[] w, float[] b, float[] dy, int m, int c) {
        try (LayerNorm op = LayerNorm.create(be, m, c); Tensor xt = Tensor.of(be, x, m, c); Tensor wt = Tensor.of(be, w, c);
             Tensor bt = Tensor.of(be, b, c); Tensor y = Tensor.empty(be, m, c); Tensor mean = Tensor.empty(be, m);
             Tensor rstd = Tensor.empty(be, m); Tensor dyt = Tensor.of(be, dy, m, c); Tensor dx = zeros(be, m, c);
             Tensor dw = zeros(be, c); Tensor db = zeros(be, c)) {
            op.forward(xt, wt, bt, y, mean, rstd);
            op.backward(xt, wt, mean, rstd, dyt, dx, dw, db);
            return new float[][] {y.toArray(), mean.toArray(), rstd.toArray(), dx.toArray(), dw.toArray(), db.toArray()};
        }
    }

    /** Runs the GELU cases (forward and backward, inputs of std 3) and returns how many failed. */
    private static int geluCases(Backend be, Backend cpu, Random rng, boolean small) {
        int[] sizes = small ? new int[] {1, 7, 1000, 9001} : new int[] {1, 7, 1000, 100_003, 6528 * 1536};
        int failures = 0;
        for (int n : sizes) {
            float[] x = normal(rng, n), dy = normal(rng, n);
            float[][] ours = runGelu(be, x, dy);
            GeluFloat64.Result ref = GeluFloat64.compute(x, dy);
            double err = Math.max(Errors.relative(ours[0], ref.y()), Errors.relative(ours[1], ref.dx()));
            String vsCpu = "";
            if (cpu != null) {
                float[][] base = runGelu(cpu, x, dy);
                double e = Math.max(Errors.relative(ours[0], base[0]), Errors.relative(ours[1], base[1]));
                err = Math.max(err, e);
                vsCpu = String.format(Locale.ROOT, "  vs_cpu=%.2e", e);
            }
            boolean ok = err <= TOL;
            failures += ok ? 0 : 1;
            System.out.printf(Locale.ROOT, "  %-4s gelu n=%d max_rel_err=%.2e%s%n", ok ? "ok" : "FAIL", n, err, vsCpu);
        }
        return failures;
    }

    private static float[][] runGelu(Backend be, float[] x, float[] dy) {
        try (Tensor xt = Tensor.of(be, x, x.length); Tensor y = Tensor.empty(be, x.length);
             Tensor g = Tensor.of(be, dy, dy.length)) {
            Gelu.forward(xt, y);
            Gelu.backward(xt, g, g);  // in place, as a training step does it
            return new float[][] {y.toArray(), g.toArray()};
        }
    }

    /**
     * Runs the linear cases (forward with bias and residual where given, backward from zeroed parameter gradients)
     * and returns how many failed. Shapes {M, K, N, bias, residual}.
     */
    private static int linearCases(Backend be, Backend cpu, Random rng, boolean small) {
        int[][] shapes = small ? new int[][] {{1, 1, 1, 1, 1}, {8, 192, 100, 1, 0}, {33, 97, 65, 1, 1}, {7, 13, 5, 0, 0}}
                : new int[][] {{1, 1, 1, 1, 1}, {8, 192, 1000, 1, 0}, {33, 97, 65, 1, 1}, {7, 13, 5, 0, 0},
                {396, 192, 576, 1, 0}, {396, 768, 192, 1, 1}};
        int failures = 0;
        for (int[] s : shapes) {
            int m = s[0], k = s[1], n = s[2];
            float[][] in = {normal(rng, m * k), normal(rng, n * k), s[3] == 1 ? normal(rng, n) : null,
                    s[4] == 1 ? normal(rng, m * n) : null, normal(rng, m * n)};
            float[][] ours = runLinear(be, in, m, k, n);
            LinearFloat64.Result ref = LinearFloat64.compute(in[0], in[1], in[2], in[3], in[4], m, k, n);
            double[][] want = {ref.y(), ref.dx(), ref.dWeight(), ref.dBias()};
            double err = 0;
            for (int i = 0; i < want.length; i++) if (want[i] != null) err = Math.max(err, Errors.relative(ours[i], want[i]));
            String vsCpu = "";
            if (cpu != null) {
                float[][] base = runLinear(cpu, in, m, k, n);
                double e = 0;
                for (int i = 0; i < base.length; i++) if (base[i] != null) e = Math.max(e, Errors.relative(ours[i], base[i]));
                err = Math.max(err, e);
                vsCpu = String.format(Locale.ROOT, "  vs_cpu=%.2e", e);
            }
            boolean ok = err <= TOL;
            failures += ok ? 0 : 1;
            System.out.printf(Locale.ROOT, "  %-4s linear M=%d K=%d N=%d%s%s max_rel_err=%.2e%s%n", ok ? "ok" : "FAIL",
                    m, k, n, s[3] == 1 ? " +bias" : "", s[4] == 1 ? " +residual" : "", err, vsCpu);
        }
        return failures;
    }

    /** y, dx, dWeight, dBias (null without bias) of one forward + backward. */
    private static float[][] runLinear(Backend be, float[][] in, int m, int k, int n) {
        try (Tensor x = Tensor.of(be, in[0], m, k); Tensor w = Tensor.of(be, in[1], n, k);
             Tensor b = in[2] == null ? null : Tensor.of(be, in[2], n);
             Tensor r = in[3] == null ? null : Tensor.of(be, in[3], m, n); Tensor dy = Tensor.of(be, in[4], m, n);
             Tensor y = Tensor.empty(be, m, n); Tensor dx = Tensor.empty(be, m, k); Tensor dw = zeros(be, n, k);
             Tensor db = b == null ? null : zeros(be, n)) {
            Linear.forward(x, w, b, r, y);
            Linear.backward(x, w, dy, dx, dw, db);
            return new float[][] {y.toArray(), dx.toArray(), dw.toArray(), db == null ? null : db.toArray()};
        }
    }

    /** Token-rows cases (exact copies: any difference fails). Shapes {B, T, D, prefix}. */
    private static int tokenRowsCases(Backend be, Backend cpu, Random rng, boolean small) {
        int[][] shapes = {{1, 1, 1, 1}, {3, 7, 5, 2}, {2, 198, 192, 2}, {4, 50, 33, 1}};
        int failures = 0;
        for (int[] s : shapes) {
            int b = s[0], t = s[1], d = s[2], p = s[3];
            float[] tokens = normal(rng, b * t * d), dRows = normal(rng, p * b * d);
            double[] wantRows = new double[p * b * d], wantGrad = new double[b * t * d];
            for (int i = 0; i < p; i++) {
                for (int j = 0; j < b; j++) {
                    for (int e = 0; e < d; e++) {
                        wantRows[(i * b + j) * d + e] = tokens[(j * t + i) * d + e];
                        wantGrad[(j * t + i) * d + e] = dRows[(i * b + j) * d + e];
                    }
                }
            }
            try (Tensor x = Tensor.of(be, tokens, b, t, d); Tensor rows = Tensor.empty(be, p, b, d);
                 Tensor dr = Tensor.of(be, dRows, p, b, d); Tensor dx = Tensor.of(be, normal(rng, b * t * d), b, t, d)) {
                TokenRows.forward(x, p, rows);
                TokenRows.backward(dr, p, dx);
                double err = Math.max(Errors.relative(rows.toArray(), wantRows), Errors.relative(dx.toArray(), wantGrad));
                boolean ok = err == 0;
                failures += ok ? 0 : 1;
                System.out.printf(Locale.ROOT, "  %-4s token-rows B=%d T=%d D=%d prefix=%d max_rel_err=%.2e%n",
                        ok ? "ok" : "FAIL", b, t, d, p, err);
            }
        }
        return failures;
    }}
