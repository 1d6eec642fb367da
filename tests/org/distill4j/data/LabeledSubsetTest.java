package org.distill4j.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.HashSet;
import java.util.Random;
import java.util.Set;
import org.distill4j.testing.Check;
import org.distill4j.train.TrainOptions;
import org.junit.jupiter.api.Test;

/** The labeled images of a transfer set: stratified by class, a function of (labels, count, seed) alone. */
class LabeledSubsetTest {
    /** Imbalanced labels: class c holds about (c + 1) parts, the last class none, in a shuffled order. */
    private static int[] imbalanced(Random rng, int n, int classes) {
        int[] labels = new int[n];
        int parts = classes * (classes - 1) / 2;  // classes 0..classes−2 weigh 1..classes−1
        for (int i = 0; i < n; i++) {
            int r = rng.nextInt(parts), c = 0;
            while (r >= c + 1) r -= ++c;
            labels[i] = c;
        }
        return labels;
    }

    @Test
    void everyClassGetsItsShareWithinOneAndTheTotalIsExact() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        for (int trial = 0; trial < 40; trial++) {
            int classes = 2 + rng.nextInt(9), n = classes + rng.nextInt(500);
            int[] labels = trial % 2 == 0 ? imbalanced(rng, n, classes) : uniform(rng, n, classes);
            int count = 1 + rng.nextInt(n);
            int[] got = LabeledSubset.stratified(labels, classes, count, rng.nextLong());
            String what = "n " + n + ", classes " + classes + ", count " + count + " (seed " + seed + ")";
            assertEquals(count, got.length, what);
            int[] perClass = new int[classes], chosen = new int[classes];
            for (int l : labels) perClass[l]++;
            for (int k = 0; k < got.length; k++) {
                assertTrue(got[k] >= 0 && got[k] < n, what + ": index " + got[k]);
                if (k > 0) assertTrue(got[k] > got[k - 1], what + ": ascending, no repeats");
                chosen[labels[got[k]]]++;
            }
            for (int c = 0; c < classes; c++) {
                double share = (double) count * perClass[c] / n;
                assertTrue(Math.abs(chosen[c] - share) < 1, what + ": class " + c + " holds " + perClass[c]
                        + ", share " + share + ", got " + chosen[c]);
            }
        }
    }

    private static int[] uniform(Random rng, int n, int classes) {
        int[] labels = new int[n];
        for (int i = 0; i < n; i++) labels[i] = rng.nextInt(classes);
        return labels;
    }

    @Test
    void theSameSeedGivesTheSameSubsetAndOtherSeedsOthers() {
        int[] labels = uniform(new Random(3), 1000, 10);
        int[] a = LabeledSubset.stratified(labels, 10, 100, 42);
        assertArrayEquals(a, LabeledSubset.stratified(labels.clone(), 10, 100, 42));
        Set<String> seen = new HashSet<>();
        for (long s = 0; s < 20; s++) seen.add(Arrays.toString(LabeledSubset.stratified(labels, 10, 100, s)));
        assertEquals(20, seen.size(), "20 seeds, 20 different subsets of 100 of 1000");
        // Not the first images of each class: a draw, spread over the whole set.
        int[] first = LabeledSubset.stratified(labels, 10, 100, 0);
        assertTrue(first[first.length - 1] > 500, "the subset reaches past the first half: " + Arrays.toString(first));
    }

    @Test
    void allImagesIsTheWholeSetAndOutOfRangeCountsAreRefused() {
        int[] labels = uniform(new Random(5), 50, 4);
        int[] all = LabeledSubset.stratified(labels, 4, 50, 9);
        for (int i = 0; i < 50; i++) assertEquals(i, all[i]);
        for (int bad : new int[] {0, -1, 51}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> LabeledSubset.stratified(labels, 4, bad, 9));
            assertTrue(e.getMessage().contains("number 1 to the training set's 50, got " + bad), e.getMessage());
        }
        assertThrows(IllegalArgumentException.class, () -> LabeledSubset.stratified(new int[] {0, 4}, 4, 1, 0));
    }

    /** Through the options a run resolves: the batch size (and the other settings) do not move the subset. */
    @Test
    void theSubsetIsIndependentOfTheBatchSize() {
        Dataset train = Synthetic.dataset(11, 300, 5, 8, 8);
        TrainOptions o = new TrainOptions().withSeed(7).withLabeled(37);
        int[] ref = o.labeledSubset(train);
        for (int batch : new int[] {1, 16, 64, 300}) {
            assertArrayEquals(ref, o.withBatch(batch).labeledSubset(train), "batch " + batch);
            assertArrayEquals(ref, o.withBatch(batch).withEpochs(3).withLr(5e-3, 0).labeledSubset(train));
        }
        assertArrayEquals(ref, LabeledSubset.stratified(train.labels(), 5, 37, 7), "the run's seed picks it");
        assertTrue(!Arrays.equals(ref, o.withSeed(8).labeledSubset(train)), "another seed, another subset");
        assertEquals(null, new TrainOptions().labeledSubset(train), "no transfer set: every image labeled");
    }
}
