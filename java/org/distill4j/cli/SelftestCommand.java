package org.distill4j.cli;

import java.util.Locale;
import java.util.Map;
import java.util.Random;
import java.util.TreeSet;
import java.util.concurrent.Callable;
import org.distill4j.Device;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.Backends;
import org.distill4j.ops.AdamW;
import org.distill4j.ops.Attention;
import org.distill4j.ops.CrossEntropy;
import org.distill4j.ops.KlDiv;
import org.distill4j.ops.PatchEmbed;
import org.distill4j.ops.Reduction;
import org.distill4j.reference.AdamWFloat64;
import org.distill4j.reference.AttentionFloat64;
import org.distill4j.reference.CrossEntropyFloat64;
import org.distill4j.reference.Errors;
import org.distill4j.reference.KlDivFloat64;
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
    private static final Map<String, Cases> OPS = Map.of("kl", SelftestCommand::klCases,
            "patch-embed", SelftestCommand::patchEmbedCases, "attention", SelftestCommand::attentionCases,
            "cross-entropy", SelftestCommand::crossEntropyCases, "adamw", SelftestCommand::adamwCases);

    @Option(names = "--backend", defaultValue = "cpu", description = "cpu, cuda-emu or cuda (default ${DEFAULT-VALUE})")
    String backend;

    @Option(names = "--op", defaultValue = "kl", description = "kl, patch-embed, attention, cross-entropy or adamw (default ${DEFAULT-VALUE})")
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
            float[] x = normal(rng, b * c), y = new float[b];
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
    private static float[][] runCrossEntropy(Backend be, CrossEntropy ce, float[] x, float[] y, int b, int c) {
        try (Tensor xt = Tensor.of(be, x, b, c); Tensor yt = Tensor.of(be, y, b); Tensor rows = Tensor.empty(be, b);
             Tensor loss = Tensor.empty(be); Tensor grad = Tensor.empty(be, b, c)) {
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
}
