package org.distill4j.train;

/** Top-1 counting on host copies of logits. */
public final class Metrics {
    private Metrics() {}

    /**
     * How many of the first {@code rows} rows of {@code logits} [rows·classes] have their maximum (first on ties) at
     * the label.
     */
    public static int correct(float[] logits, float[] labels, int classes, int rows) {
        int ok = 0;
        for (int r = 0; r < rows; r++) {
            int best = 0;
            for (int c = 1; c < classes; c++) {
                if (logits[r * classes + c] > logits[r * classes + best]) best = c;
            }
            if (best == (int) labels[r]) ok++;
        }
        return ok;
    }

    /** {@link #correct(float[], float[], int, int)} over every row of the labels. */
    public static int correct(float[] logits, float[] labels, int classes) {
        return correct(logits, labels, classes, labels.length);
    }
}
