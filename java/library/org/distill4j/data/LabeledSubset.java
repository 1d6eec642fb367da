package org.distill4j.data;

import java.util.Objects;
import java.util.SplittableRandom;

/**
 * Which training images keep their true labels in a transfer set (Hinton et al. 2015, section 2: the teacher labels
 * the rest): a subset stratified by class, drawn from a seed.
 *
 * <p>Class c, holding n<sub>c</sub> of the n images, gets its exact share count·n<sub>c</sub>/n floored, and the
 * images still missing go one each to the classes with the largest remainders (ties to the lower class): every class
 * is within one image of its share and the total is exactly {@code count} (the largest-remainder method, in integer
 * arithmetic). Within class c the images are the first of a permutation of that class drawn from (seed, c) alone, so
 * the subset depends on the labels, the count and the seed, never on the batch size or the training order.
 */
public final class LabeledSubset {
    // Keeps these draws apart from the loader's and the augmentation's, which key Seeds with (seed, epoch, ...).
    private static final long TAG = 0x1abe1ed5_0b5e7L;

    private LabeledSubset() {}

    /**
     * The indices, ascending, of {@code count} images chosen per class as described above.
     *
     * @param labels  one class index in 0..classes−1 per image
     * @param count   images to keep, 1..labels.length
     * @throws IllegalArgumentException when count is outside 1..labels.length or a label outside 0..classes−1
     */
    public static int[] stratified(int[] labels, int classes, int count, long seed) {
        Objects.requireNonNull(labels, "labels");
        int n = labels.length;
        if (count < 1 || count > n) {
            throw new IllegalArgumentException("the labeled images must number 1 to the training set's " + n
                    + ", got " + count);
        }
        if (classes < 1) throw new IllegalArgumentException("classes must be >= 1, got " + classes);
        int[] perClass = new int[classes];
        for (int i = 0; i < n; i++) {
            if (labels[i] < 0 || labels[i] >= classes) {
                throw new IllegalArgumentException("label " + labels[i] + " at index " + i + " is outside 0.."
                        + (classes - 1));
            }
            perClass[labels[i]]++;
        }
        int[] quota = new int[classes];
        long[] remainder = new long[classes];
        int given = 0;
        for (int c = 0; c < classes; c++) {
            long exact = (long) count * perClass[c];  // share = exact / n
            quota[c] = (int) (exact / n);
            remainder[c] = exact % n;
            given += quota[c];
        }
        // A positive remainder means share < perClass[c] (count < n), so the extra image exists in the class.
        for (; given < count; given++) {
            int best = -1;
            for (int c = 0; c < classes; c++) {
                if (remainder[c] > 0 && (best < 0 || remainder[c] > remainder[best])) best = c;
            }
            quota[best]++;
            remainder[best] = 0;
        }
        int[][] members = new int[classes][];
        for (int c = 0; c < classes; c++) members[c] = new int[perClass[c]];
        int[] filled = new int[classes];
        for (int i = 0; i < n; i++) members[labels[i]][filled[labels[i]]++] = i;
        boolean[] keep = new boolean[n];
        for (int c = 0; c < classes; c++) {
            int[] m = members[c];
            SplittableRandom rng = new SplittableRandom(Seeds.of(seed, TAG, c));
            for (int i = 0; i < quota[c]; i++) {  // the first quota[c] steps of a Fisher–Yates shuffle
                int j = i + rng.nextInt(m.length - i);
                int t = m[i];
                m[i] = m[j];
                m[j] = t;
                keep[m[i]] = true;
            }
        }
        int[] out = new int[count];
        for (int i = 0, k = 0; i < n; i++) {
            if (keep[i]) out[k++] = i;
        }
        return out;
    }
}
