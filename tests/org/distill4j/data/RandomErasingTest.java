package org.distill4j.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import java.util.SplittableRandom;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.Test;

/**
 * Random erasing against timm's {@code RandomErasing._erase}, rewritten here from timm's code as plain steps and fed
 * the same seeded stream (so every box is checked, not only its statistics), and the erased pixels' N(0, 1).
 */
class RandomErasingTest {
    /** timm's loop: erase if random() <= p; 10 attempts of area, log-aspect; randint bounds inclusive. */
    private static int[] timmBox(long seed, int epoch, int index, int h, int w, double p) {
        SplittableRandom rng = new SplittableRandom(Seeds.of(seed, RandomErasing.STREAM, epoch, index));
        if (rng.nextDouble() > p) return null;
        double minArea = 0.02, maxArea = 1 / 3.0, lo = Math.log(0.3), hi = Math.log(1 / 0.3);
        for (int attempt = 0; attempt < 10; attempt++) {
            double target = (minArea + (maxArea - minArea) * rng.nextDouble()) * h * w;  // random.uniform
            double aspect = Math.exp(lo + (hi - lo) * rng.nextDouble());
            long eh = (long) Math.rint(Math.sqrt(target * aspect)), ew = (long) Math.rint(Math.sqrt(target / aspect));
            if (ew < w && eh < h) {
                int top = rng.nextInt((int) (h - eh) + 1), left = rng.nextInt((int) (w - ew) + 1);
                return new int[] {top, left, (int) eh, (int) ew};
            }
        }
        return null;
    }

    @Test
    void boxesAreTimmsForEverySample() {
        long seed = Check.freshSeed();
        for (int[] hw : new int[][] {{224, 224}, {28, 28}, {32, 17}, {3, 3}, {1, 1}}) {
            RandomErasing e = new RandomErasing(seed, 0.6);
            int erased = 0;
            long area = 0;
            for (int i = 0; i < 3000; i++) {
                int[] want = timmBox(seed, 2, i, hw[0], hw[1], 0.6);
                RandomErasing.Box got = e.box(2, i, hw[0], hw[1]);
                String what = "seed=" + seed + " " + hw[0] + "x" + hw[1] + " sample " + i;
                if (want == null) {
                    assertEquals(RandomErasing.Box.NONE, got, what);
                    continue;
                }
                erased++;
                area += (long) got.height() * got.width();
                assertEquals(new RandomErasing.Box(want[0], want[1], want[2], want[3]), got, what);
                assertTrue(got.top() + got.height() <= hw[0] && got.left() + got.width() <= hw[1], what);
            }
            if (hw[0] >= 28) {  // attempts rarely all fail on a real image: about 60 % erased
                assertEquals(0.6 * 3000, erased, 6 * Math.sqrt(3000 * 0.6 * 0.4), "seed=" + seed + " " + hw[0]);
            }
            // As in timm, a box rounded to 0 x 0 is accepted and erases nothing: all a 1x1 image can get.
            if (hw[0] == 1) assertEquals(0, area, "a 1x1 image keeps its pixel");
        }
        assertEquals(RandomErasing.Box.NONE, new RandomErasing(seed, 0).box(0, 0, 224, 224));
    }

    @Test
    void erasedPixelsAreStandardNormalAndTheRestIsUntouched() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        RandomErasing e = new RandomErasing(seed, 1.0);
        int c = 3, h = 32, w = 32, size = c * h * w, offset = 5;
        double sum = 0, sumSq = 0;
        long n = 0;
        for (int i = 0; i < 200; i++) {
            float[] img = Check.normal(rng, offset + size + 2, 5), orig = img.clone();
            RandomErasing.Box b = e.apply(img, offset, c, h, w, 1, i);
            assertEquals(e.box(1, i, h, w), b, "apply erases the box it draws");
            float[] again = orig.clone();
            e.apply(again, offset, c, h, w, 1, i);
            assertArrayEquals(img, again, "the same sample and epoch erase the same bits");
            for (int k = 0; k < img.length; k++) {
                int p = k - offset, ch = p / (h * w), y = (p / w) % h, x = p % w;
                boolean in = p >= 0 && p < size && y >= b.top() && y < b.top() + b.height() && x >= b.left()
                        && x < b.left() + b.width();
                if (in) {
                    sum += img[k];
                    sumSq += (double) img[k] * img[k];
                    n++;
                } else {
                    assertEquals(orig[k], img[k], "seed=" + seed + " sample " + i + " channel " + ch + " outside");
                }
            }
        }
        double mean = sum / n, var = sumSq / n - mean * mean;
        assertTrue(n > 10_000, "erased values: " + n);
        assertEquals(0, mean, 6 / Math.sqrt(n), "seed=" + seed + ": mean of the erased values");
        assertEquals(1, var, 6 * Math.sqrt(2.0 / n), "seed=" + seed + ": variance of the erased values");
    }

    @Test
    void badInputIsAClearException() {
        assertThrows(IllegalArgumentException.class, () -> new RandomErasing(0, -0.1));
        assertThrows(IllegalArgumentException.class, () -> new RandomErasing(0, Double.NaN));
        assertThrows(IllegalArgumentException.class, () -> new RandomErasing(0, 0.5).box(0, 0, 0, 4));
        IllegalArgumentException ex = assertThrows(IllegalArgumentException.class,
                () -> new RandomErasing(0, 0.5).apply(new float[10], 0, 1, 4, 4, 0, 0));
        assertTrue(ex.getMessage().contains("does not fit in 10"), ex.getMessage());
    }
}
