package org.distill4j.reference;

import org.distill4j.ops.Reduction;

/**
 * The KL distillation loss and its gradient in float64, straight from the definitions: the oracle of
 * {@code selftest} and of the cases where PyTorch's answer is NaN by its own convention (0·(-inf)).
 *
 * <p>log p = log_softmax(zs/T); log q = log_softmax(zt/T) (or zt itself when logTarget);
 * row loss = Σ q (log q − log p) with terms where q = 0 taken as 0; gradient = scale/T · (p·Σq − q) · norm · upstream.
 */
public final class KlDivFloat64 {
    private KlDivFloat64() {}

    /** Loss (length 1, or B for NONE) and gradient [B*C]. */
    public record Result(double[] loss, double[] grad) {}

    /**
     * Computes the loss and gradient.
     *
     * @param upstream null for 1; length 1 for the reductions, B for NONE
     */
    public static Result compute(float[] student, float[] teacher, int batch, int classes, double temperature,
                                 Reduction reduction, boolean logTarget, boolean scaleT2, float[] upstream) {
        double scale = scaleT2 ? temperature * temperature : 1.0;
        double norm = switch (reduction) {
            case BATCHMEAN -> 1.0 / batch;
            case MEAN -> 1.0 / ((double) batch * classes);
            case SUM, NONE -> 1.0;
        };
        double[] rows = new double[batch];
        double[] grad = new double[batch * classes];
        double[] logp = new double[classes];
        double[] logq = new double[classes];
        for (int b = 0; b < batch; b++) {
            int off = b * classes;
            logSoftmax(student, off, classes, temperature, logp);
            if (logTarget) {
                for (int c = 0; c < classes; c++) logq[c] = teacher[off + c];
            } else {
                logSoftmax(teacher, off, classes, temperature, logq);
            }
            double loss = 0, qSum = 0;
            for (int c = 0; c < classes; c++) {
                double q = Math.exp(logq[c]);
                qSum += q;
                if (q > 0) loss += q * (logq[c] - logp[c]);
            }
            rows[b] = scale * loss;
            double up = upstream == null ? 1.0 : upstream[reduction == Reduction.NONE ? b : 0];
            double k = scale / temperature * norm * up;
            for (int c = 0; c < classes; c++) grad[off + c] = k * (Math.exp(logp[c]) * qSum - Math.exp(logq[c]));
        }
        if (reduction == Reduction.NONE) return new Result(rows, grad);
        double sum = 0;
        for (double r : rows) sum += r;
        return new Result(new double[] {sum * norm}, grad);
    }

    private static void logSoftmax(float[] x, int off, int n, double temperature, double[] out) {
        double max = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < n; i++) max = Math.max(max, x[off + i] / temperature);
        double sum = 0;
        for (int i = 0; i < n; i++) sum += Math.exp(x[off + i] / temperature - max);
        double lse = max + Math.log(sum);
        for (int i = 0; i < n; i++) out[i] = x[off + i] / temperature - lse;
    }
}
