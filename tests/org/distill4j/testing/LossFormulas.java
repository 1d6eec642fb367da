package org.distill4j.testing;

/**
 * The loss terms of a training step in float64, written from their definitions: the references the trainer's
 * tests hold {@code Trainer}'s loss and logit gradients to.
 */
public final class LossFormulas {
    private LossFormulas() {}

    /** softmax(scale · z[row]) over {@code classes} logits. */
    public static double[] softmax(float[] z, int row, int classes, double scale) {
        double max = Double.NEGATIVE_INFINITY, sum = 0;
        for (int c = 0; c < classes; c++) max = Math.max(max, z[row * classes + c] * scale);
        double[] p = new double[classes];
        for (int c = 0; c < classes; c++) sum += p[c] = Math.exp(z[row * classes + c] * scale - max);
        for (int c = 0; c < classes; c++) p[c] /= sum;
        return p;
    }

    /**
     * Adds w·CE(p, t) to loss[0] and its gradient w·(p·Σt − t) to grad's row (p − t for a distribution);
     * CE = −Σ t log p.
     */
    public static void addCe(double[] p, double[] t, double w, int row, double[] loss, double[] grad) {
        double ce = 0, sum = 0;
        for (double v : t) sum += v;
        for (int c = 0; c < p.length; c++) {
            if (t[c] > 0) ce -= t[c] * Math.log(p[c]);
            grad[row * p.length + c] += w * (p[c] * sum - t[c]);
        }
        loss[0] += w * ce;
    }

    /** The first index of z[row]'s maximum. */
    public static int argmax(float[] z, int row, int classes) {
        int best = 0;
        for (int c = 1; c < classes; c++) if (z[row * classes + c] > z[row * classes + best]) best = c;
        return best;
    }
}
