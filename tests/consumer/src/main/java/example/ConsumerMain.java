package example;

import java.util.Random;
import org.distill4j.Device;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.Backends;
import org.distill4j.ops.KlDiv;
import org.distill4j.ops.Reduction;

/**
 * Calls the fused KL op through the platform artifact alone (natives extracted from the jars by JavaCPP) and checks
 * the loss and the gradient against a float64 computation written here. Exit 1 on a mismatch.
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
        KlDiv kl = KlDiv.builder().temperature(temperature).reduction(Reduction.BATCHMEAN).build();
        try (Backend cpu = Backends.open(Device.cpu());
             Tensor s = Tensor.of(cpu, student, b, c);
             Tensor t = Tensor.of(cpu, teacher, b, c);
             KlDiv.Result r = kl.compute(s, t)) {
            double[] grad = new double[b * c];
            double want = reference(student, teacher, b, c, temperature, grad);
            float got = r.lossValue();
            float[] g = r.grad().toArray();
            double gErr = 0, gNorm = 0;
            for (int i = 0; i < g.length; i++) {
                gErr += (g[i] - grad[i]) * (g[i] - grad[i]);
                gNorm += grad[i] * grad[i];
            }
            double lossErr = Math.abs(got - want) / Math.abs(want), gradErr = Math.sqrt(gErr / gNorm);
            System.out.printf("platform consumer: loss %.6f (float64 %.6f), rel err loss %.2e grad %.2e%n", got, want,
                    lossErr, gradErr);
            if (!(lossErr < 1e-5 && gradErr < 1e-5)) {
                System.out.println("platform consumer: MISMATCH");
                System.exit(1);
            }
            System.out.println("platform consumer: ok");
        }
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
