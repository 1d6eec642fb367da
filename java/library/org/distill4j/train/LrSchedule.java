package org.distill4j.train;

/**
 * Learning rate per step: linear warm-up from 0 to {@code peak} over {@code warmupSteps}, then a cosine decay to
 * {@code floor} at {@code totalSteps} (timm's and DeiT's schedule, per step rather than per epoch).
 */
public final class LrSchedule {
    private final double peak, floor;
    private final long warmupSteps, totalSteps;

    /**
     * @throws IllegalArgumentException unless 0 &le; floor &le; peak, peak finite and positive, 0 &le; warm-up &lt;
     *     total
     */
    public LrSchedule(double peak, double floor, long warmupSteps, long totalSteps) {
        if (!(peak > 0) || !Double.isFinite(peak) || !(floor >= 0) || floor > peak) {
            throw new IllegalArgumentException("learning rates must satisfy 0 <= floor <= peak, peak finite > 0; got peak "
                    + peak + ", floor " + floor);
        }
        if (totalSteps < 1 || warmupSteps < 0 || warmupSteps >= totalSteps) {
            throw new IllegalArgumentException("need 0 <= warm-up steps < total steps, got " + warmupSteps + " and "
                    + totalSteps);
        }
        this.peak = peak;
        this.floor = floor;
        this.warmupSteps = warmupSteps;
        this.totalSteps = totalSteps;
    }

    /** The rate of step {@code step} (0-based); {@code floor} past the end. */
    public double at(long step) {
        if (step < warmupSteps) return peak * (step + 1) / warmupSteps;
        if (step >= totalSteps) return floor;
        double progress = (double) (step - warmupSteps) / (totalSteps - warmupSteps);
        return floor + 0.5 * (peak - floor) * (1 + Math.cos(Math.PI * progress));
    }

    /** Steps in the schedule. */
    public long totalSteps() {
        return totalSteps;
    }

    @Override
    public String toString() {
        return "warm-up " + warmupSteps + " steps to " + peak + ", cosine to " + floor + " at step " + totalSteps;
    }
}
