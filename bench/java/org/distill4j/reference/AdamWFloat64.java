package org.distill4j.reference;

/**
 * One AdamW step in float64, as torch.optim.AdamW writes it (decoupled weight decay, bias correction, eps outside
 * the square root): the oracle of {@code selftest}. Updates param, m and v in place.
 */
public final class AdamWFloat64 {
    private AdamWFloat64() {}

    /**
     * The double a float hyper-parameter stands for: its shortest decimal ("0.999" for 0.999f), as a PyTorch user
     * writes it. 1 − 0.999f is 1.3e-5 away from 1 − 0.999 relatively; the kernels read the floats this way too.
     */
    public static double decimal(float f) {
        return Double.parseDouble(Float.toString(f));
    }

    /** param, m, v updated in place; g = grad · gradScale. */
    public static void step(double[] param, float[] grad, double[] m, double[] v, long step, double lr, double beta1,
                            double beta2, double eps, double weightDecay, double gradScale) {
        double bc1 = 1 - Math.pow(beta1, step), bc2 = 1 - Math.pow(beta2, step);
        for (int i = 0; i < param.length; i++) {
            double g = grad[i] * gradScale;
            param[i] *= 1 - lr * weightDecay;
            m[i] = beta1 * m[i] + (1 - beta1) * g;
            v[i] = beta2 * v[i] + (1 - beta2) * g * g;
            param[i] -= lr / bc1 * m[i] / (Math.sqrt(v[i]) / Math.sqrt(bc2) + eps);
        }
    }
}
