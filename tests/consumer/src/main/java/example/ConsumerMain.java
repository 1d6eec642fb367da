package example;

import java.util.Random;
import org.distill4j.Device;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.Backends;
import org.distill4j.train.Progress;

/**
 * Runs the README's snippets (ReadmeSnippets) through the platform artifact alone (natives extracted from the jars
 * by JavaCPP): the fused KL op checked against a float64 computation written here, the patch embedding against
 * what it does to its prefix tokens. Exit 1 on a mismatch.
 */
public final class ConsumerMain {
    public static void main(String[] args) {
        int b = 8, c = 100;
        float temperature = 4f;
        Random rng = new Random(System.nanoTime());
        float[] student = new float[b * c], teacher = new float[b * c];
        for (int i = 0; i < b * c; i++) {
            student[i] = (float) (3 * rng.nextGaussian());
            teacher[i] = (float) (3 * rng.nextGaussian());
        }
        // The README's snippet, as the README shows it (ReadmeSnippets), on these logits.
        float[] lossAndGrad = ReadmeSnippets.fusedKl(student, teacher, b, c);
        double[] grad = new double[b * c];
        double want = reference(student, teacher, b, c, temperature, grad);
        float got = lossAndGrad[0];
        double gErr = 0, gNorm = 0;
        for (int i = 0; i < grad.length; i++) {
            gErr += (lossAndGrad[1 + i] - grad[i]) * (lossAndGrad[1 + i] - grad[i]);
            gNorm += grad[i] * grad[i];
        }
        double lossErr = Math.abs(got - want) / Math.abs(want), gradErr = Math.sqrt(gErr / gNorm);
        System.out.printf("platform consumer: loss %.6f (float64 %.6f), rel err loss %.2e grad %.2e%n", got, want,
                lossErr, gradErr);
        if (!(lossErr < 1e-5 && gradErr < 1e-5) || lossAndGrad.length != 1 + b * c) fail("KL snippet");
        patchEmbed(rng);
        progressWithoutTheBarLibrary();
        System.out.println("platform consumer: ok");
    }

    /**
     * The progress bar library is an optional dependency of distill4j (the CLI brings it): a user's program without
     * it asks for a bar and gets plain lines, not a NoClassDefFoundError.
     */
    static void progressWithoutTheBarLibrary() {
        try {
            Class.forName("me.tongfei.progressbar.ProgressBar");
            fail("classpath: the optional progress bar library came with distill4j-platform");
        } catch (ClassNotFoundException expected) {
            // what a user of the platform artifact has
        }
        System.setProperty("distill4j.progress", "bar");
        try (Progress progress = Progress.start("consumer progress", 2)) {
            progress.step(4, 0.5, 0.25);
            progress.step(4, 0.5, 0.75);
            if (progress.meanAccuracy() != 0.5) fail("progress means");
        }
    }

    private static void fail(String what) {
        System.out.println("platform consumer: MISMATCH in the " + what);
        System.exit(1);
    }

    /**
     * The README's PatchEmbed snippet (DeiT-Ti, B = 32) on random tensors with zeroed gradients, checked by what the
     * op is defined to do with its prefix tokens: every image's class-token row is cls + pos[0], and d cls is the
     * sum of that row's gradient over the batch.
     */
    static void patchEmbed(Random rng) {
        int b = 32, d = 192, n = 2 + 196;
        try (Backend backend = Backends.open(Device.cpu());
             Tensor images = Tensor.of(backend, random(rng, b * 3 * 224 * 224), b, 3, 224, 224);
             Tensor weight = Tensor.of(backend, random(rng, d * 3 * 16 * 16), d, 3, 16, 16);
             Tensor bias = Tensor.of(backend, random(rng, d), d);
             Tensor pos = Tensor.of(backend, random(rng, n * d), 1, n, d);
             Tensor cls = Tensor.of(backend, random(rng, d), 1, 1, d);
             Tensor dist = Tensor.of(backend, random(rng, d), 1, 1, d);
             Tensor tokens = Tensor.empty(backend, b, n, d);
             Tensor dTokens = Tensor.of(backend, random(rng, b * n * d), b, n, d);
             Tensor dWeight = Tensor.empty(backend, d, 3, 16, 16).zero();
             Tensor dBias = Tensor.empty(backend, d).zero();
             Tensor dPos = Tensor.empty(backend, 1, n, d).zero();
             Tensor dCls = Tensor.empty(backend, 1, 1, d).zero();
             Tensor dDist = Tensor.empty(backend, 1, 1, d).zero()) {
            ReadmeSnippets.patchEmbed(backend, images, weight, bias, pos, cls, dist, tokens, dTokens, dWeight, dBias,
                    dPos, dCls, dDist);
            float[] t = tokens.toArray(), p = pos.toArray(), c = cls.toArray(), dt = dTokens.toArray();
            float[] dc = dCls.toArray();
            double worst = 0;
            for (int j = 0; j < d; j++) {
                double sum = 0;
                for (int i = 0; i < b; i++) {
                    worst = Math.max(worst, Math.abs(t[i * n * d + j] - (c[j] + p[j])));
                    sum += dt[i * n * d + j];
                }
                worst = Math.max(worst, Math.abs(dc[j] - sum) / Math.max(1, Math.abs(sum)));
            }
            System.out.printf("platform consumer: patch embedding snippet, worst prefix-token error %.2e%n", worst);
            if (!(worst < 1e-4)) fail("PatchEmbed snippet");
        }
    }

    static float[] random(Random rng, int n) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) rng.nextGaussian();
        return x;
    }

    /** T² · batchmean KL(q || p) with p, q the softmax at temperature T; its gradient into grad. */
    static double reference(float[] s, float[] t, int b, int c, double temperature, double[] grad) {
        double total = 0;
        for (int r = 0; r < b; r++) {
            double[] lp = logSoftmax(s, r * c, c, temperature), lq = logSoftmax(t, r * c, c, temperature);
            for (int i = 0; i < c; i++) {
                double q = Math.exp(lq[i]);
                total += q * (lq[i] - lp[i]);
                grad[r * c + i] = temperature / b * (Math.exp(lp[i]) - q);
            }
        }
        return temperature * temperature * total / b;
    }

    static double[] logSoftmax(float[] x, int off, int n, double temperature) {
        double max = Double.NEGATIVE_INFINITY, sum = 0;
        for (int i = 0; i < n; i++) max = Math.max(max, x[off + i] / temperature);
        for (int i = 0; i < n; i++) sum += Math.exp(x[off + i] / temperature - max);
        double[] out = new double[n];
        for (int i = 0; i < n; i++) out[i] = x[off + i] / temperature - max - Math.log(sum);
        return out;
    }
}
