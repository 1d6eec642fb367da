package org.distill4j.train;

/** Top-1 counting on host copies of logits. */
public final class Metrics {
    private Metrics() {}

    /**
     * How many of the first {@code rows} rows of {@code logits} [rows·classes] have their maximum (first on ties) at
     * the label.
     */
    public static int correct(float[] logits, int[] labels, int classes, int rows) {
        int ok = 0;
        for (int r = 0; r < rows; r++) {
            if (best(logits, r, classes) == labels[r]) ok++;
        }
        return ok;
    }

    /** {@link #correct(float[], int[], int, int)} over every row of the labels. */
    public static int correct(float[] logits, int[] labels, int classes) {
        return correct(logits, labels, classes, labels.length);
    }

    /** {@link #correct(float[], int[], int)} over the rows where {@code counted} is true (every row when null). */
    public static int correct(float[] logits, int[] labels, int classes, boolean[] counted) {
        if (counted == null) return correct(logits, labels, classes);
        int ok = 0;
        for (int r = 0; r < labels.length; r++) {
            if (counted[r] && best(logits, r, classes) == labels[r]) ok++;
        }
        return ok;
    }

    private static int best(float[] logits, int r, int classes) {
        int best = 0;
        for (int c = 1; c < classes; c++) {
            if (logits[r * classes + c] > logits[r * classes + best]) best = c;
        }
        return best;
    }
}
