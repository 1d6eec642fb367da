package org.distill4j.train;

import java.util.Locale;

/**
 * A training step whose loss or global gradient norm is NaN or infinite. {@link Trainer#step} throws it before
 * AdamW runs, so the parameters, the optimizer moments and the step count are those of the last good step.
 */
public final class NonFiniteException extends ArithmeticException {
    private static final long serialVersionUID = 1L;

    private final long step;
    private final double loss, gradNorm;

    /**
     * @param step     the step that failed, counted from 1 over the whole run
     * @param loss     its loss (both terms, weighted)
     * @param gradNorm its global L2 gradient norm
     */
    public NonFiniteException(long step, double loss, double gradNorm) {
        this(String.format(Locale.ROOT, "step %d: the %s (loss %s, gradient norm %s); the model was not updated",
                step, Double.isFinite(loss) ? "gradient norm is not finite" : "loss is not finite", loss, gradNorm),
                step, loss, gradNorm);
    }

    private NonFiniteException(String message, long step, double loss, double gradNorm) {
        super(message);
        this.step = step;
        this.loss = loss;
        this.gradNorm = gradNorm;
    }

    /** The same failure with {@code prefix} and {@code suffix} around its message (the run's name, its files). */
    public NonFiniteException withContext(String prefix, String suffix) {
        NonFiniteException e = new NonFiniteException(prefix + getMessage() + suffix, step, loss, gradNorm);
        e.initCause(this);
        return e;
    }

    /** The step that failed, counted from 1 over the whole run. */
    public long step() {
        return step;
    }

    /** The step's loss. */
    public double loss() {
        return loss;
    }

    /** The step's global gradient norm. */
    public double gradNorm() {
        return gradNorm;
    }
}
