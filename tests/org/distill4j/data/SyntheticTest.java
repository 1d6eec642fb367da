package org.distill4j.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import org.junit.jupiter.api.Test;

class SyntheticTest {
    @Test
    void shapeLabelsAndDeterminism() {
        Dataset a = Synthetic.dataset(1, 103, 10, 16, 12);
        assertEquals(103, a.size());
        assertEquals(1, a.channels());
        assertEquals(16, a.height());
        assertEquals(12, a.width());
        assertEquals(10, a.classes());
        assertEquals(103 * 16 * 12, a.images().length);
        int[] counts = a.classCounts();
        assertTrue(Arrays.stream(counts).allMatch(c -> c == 10 || c == 11), Arrays.toString(counts));
        Dataset b = Synthetic.dataset(1, 103, 10, 16, 12);
        assertArrayEquals(a.images(), b.images());
        assertArrayEquals(a.labels(), b.labels());
        Dataset c = Synthetic.dataset(2, 103, 10, 16, 12);
        assertFalse(Arrays.equals(a.images(), c.images()));
        assertEquals(0f, a.black());
    }

    /** Nearest class mean, fitted on one seed and scored on another: the data is learnable and generalises. */
    @Test
    void nearestClassMeanGeneralisesAcrossSeeds() {
        int classes = 10, h = 28, w = 28, size = h * w;
        Dataset train = Synthetic.dataset(11, 2000, classes, h, w);
        Dataset test = Synthetic.dataset(12, 500, classes, h, w);
        double[][] means = new double[classes][size];
        int[] counts = train.classCounts();
        for (int i = 0; i < train.size(); i++) {
            for (int k = 0; k < size; k++) {
                means[train.label(i)][k] += train.images()[i * size + k] / counts[train.label(i)];
            }
        }
        int correct = 0;
        for (int i = 0; i < test.size(); i++) {
            int best = -1;
            double bestDist = Double.MAX_VALUE;
            for (int c = 0; c < classes; c++) {
                double dist = 0;
                for (int k = 0; k < size; k++) {
                    double d = test.images()[i * size + k] - means[c][k];
                    dist += d * d;
                }
                if (dist < bestDist) {
                    bestDist = dist;
                    best = c;
                }
            }
            correct += best == test.label(i) ? 1 : 0;
        }
        double acc = correct / (double) test.size();
        assertTrue(acc > 0.9, "nearest-class-mean accuracy " + acc);
    }
}
