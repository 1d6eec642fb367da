package org.distill4j.reference;

/**
 * Cross-entropy with label smoothing and its gradient in float64, from the definition: the oracle of
 * {@code selftest}. log p = log_softmax(x); row loss = scale · ((1 − eps)(−log p_y) + eps/C Σ_c (−log p_c));
 * loss = mean of the rows; gradient = scale/B · (p − ((1 − eps) onehot + eps/C)).
 */
public final class CrossEntropyFloat64 {
    private CrossEntropyFloat64() {}

    /** Row losses [B], the loss [1] and the gradient [B*C]. */
    public record Result(double[] rowLoss, double[] loss, double[] grad) {}

    /** Computes the row losses, their mean and the gradient; labels are class indices. */
    public static Result compute(float[] logits, int[] labels, int batch, int classes, double eps, double scale) {
        double[] rows = new double[batch], grad = new double[batch * classes];
        double total = 0;
        for (int b = 0; b < batch; b++) {
            int off = b * classes, y = labels[b];
            double max = Double.NEGATIVE_INFINITY, sum = 0;
            for (int c = 0; c < classes; c++) max = Math.max(max, logits[off + c]);
            for (int c = 0; c < classes; c++) sum += Math.exp(logits[off + c] - max);
            double lse = max + Math.log(sum), smooth = 0;
            for (int c = 0; c < classes; c++) {
                smooth += lse - logits[off + c];
                double target = (c == y ? 1 - eps : 0) + eps / classes;
                grad[off + c] = scale / batch * (Math.exp(logits[off + c] - lse) - target);
            }
            rows[b] = scale * ((1 - eps) * (lse - logits[off + y]) + eps * smooth / classes);
            total += rows[b];
        }
        return new Result(rows, new double[] {total / batch}, grad);
    }
}
