package org.distill4j.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.SplittableRandom;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.Test;

/**
 * The random resized crop against torchvision's {@code RandomResizedCrop.get_params}, rewritten here from
 * torchvision's code as plain steps and fed the same seeded stream (so every box is checked, not only its
 * statistics); the statistics on their own; the crop's pixels; flip after crop.
 */
class RandomResizedCropTest {
    /** torchvision: 10 attempts of (area uniform, log-ratio uniform), round(), randint inclusive; else centre. */
    private static int[] torchvisionBox(long seed, int epoch, int index, int h, int w, double[] scale, double[] ratio) {
        SplittableRandom rng = new SplittableRandom(Seeds.of(seed, RandomResizedCrop.STREAM, epoch, index));
        double area = h * w, lo = Math.log(ratio[0]), hi = Math.log(ratio[1]);
        for (int attempt = 0; attempt < 10; attempt++) {
            double target = area * (scale[0] + (scale[1] - scale[0]) * rng.nextDouble());
            double aspect = Math.exp(lo + (hi - lo) * rng.nextDouble());
            // Python's round() rounds half to even, as Math.rint.
            long cw = (long) Math.rint(Math.sqrt(target * aspect)), ch = (long) Math.rint(Math.sqrt(target / aspect));
            if (0 < cw && cw <= w && 0 < ch && ch <= h) {
                int top = rng.nextInt((int) (h - ch) + 1), left = rng.nextInt((int) (w - cw) + 1);
                return new int[] {top, left, (int) ch, (int) cw};
            }
        }
        double in = (double) w / h;
        int cw = w, ch = h;
        // torchvision's sides, except that it would return an empty box where one rounds to 0 (and then fail).
        if (in < ratio[0]) ch = Math.max(1, (int) Math.rint(w / ratio[0]));
        else if (in > ratio[1]) cw = Math.max(1, (int) Math.rint(h * ratio[1]));
        return new int[] {(h - ch) / 2, (w - cw) / 2, ch, cw};
    }

    @Test
    void boxesAreTorchvisionsForEverySample() {
        long seed = Check.freshSeed();
        double[][][] ranges = {{{0.08, 1}, {3 / 4.0, 4 / 3.0}}, {{0.5, 0.5}, {2, 2}}, {{0.9, 1}, {0.1, 10}}};
        for (double[][] r : ranges) {
            RandomResizedCrop crop = new RandomResizedCrop(seed, r[0][0], r[0][1], r[1][0], r[1][1]);
            for (int[] hw : new int[][] {{224, 224}, {375, 500}, {28, 28}, {32, 17}, {100, 20}, {3, 3}, {1, 1}}) {
                for (int i = 0; i < 2000; i++) {
                    int[] want = torchvisionBox(seed, 3, i, hw[0], hw[1], r[0], r[1]);
                    RandomResizedCrop.Box got = crop.box(3, i, hw[0], hw[1]);
                    String what = "seed=" + seed + " " + crop + " " + hw[0] + "x" + hw[1] + " sample " + i;
                    assertEquals(new RandomResizedCrop.Box(want[0], want[1], want[2], want[3]), got, what);
                    assertTrue(got.top() >= 0 && got.left() >= 0 && got.height() > 0 && got.width() > 0
                            && got.top() + got.height() <= hw[0] && got.left() + got.width() <= hw[1], what);
                }
            }
        }
    }

    @Test
    void fallbackIsTheCentredBoxOfTheNearestRatio() {
        // No box of at least 90 % of a 100×20 image has an aspect ratio ≥ 3/4: every attempt fails, and torchvision
        // keeps the full width with height round(20 / 0.75) = 27, centred: top (100 − 27) // 2 = 36.
        RandomResizedCrop tall = new RandomResizedCrop(Check.freshSeed(), 0.9, 1, 3 / 4.0, 4 / 3.0);
        for (int i = 0; i < 50; i++) assertEquals(new RandomResizedCrop.Box(36, 0, 27, 20), tall.box(0, i, 100, 20));
        // Transposed: 20×100, width round(20 · 4/3) = 27, left (100 − 27) // 2 = 36.
        for (int i = 0; i < 50; i++) assertEquals(new RandomResizedCrop.Box(0, 36, 20, 27), tall.box(0, i, 20, 100));
    }

    @Test
    void areaAspectAndPositionHaveTheirDistributions() {
        // On 1000×1000 with scale ≤ 0.5 and ratio ≤ 4/3 no attempt is rejected (sides < √(0.5e6 · 4/3) < 817), so
        // the area fraction is uniform on [0.1, 0.5] and log(aspect) on ±log(4/3), up to rounding to whole pixels.
        long seed = Check.freshSeed();
        RandomResizedCrop crop = new RandomResizedCrop(seed, 0.1, 0.5, 3 / 4.0, 4 / 3.0);
        int n = 20_000;
        double sumA = 0, sumA2 = 0, sumL = 0, sumL2 = 0, sumPos = 0, half = Math.log(4 / 3.0);
        for (int i = 0; i < n; i++) {
            RandomResizedCrop.Box b = crop.box(1, i, 1000, 1000);
            double a = b.height() * (double) b.width() / 1e6, l = Math.log((double) b.width() / b.height());
            assertTrue(a > 0.1 - 0.002 && a < 0.5 + 0.002, "seed=" + seed + " area " + a);
            assertTrue(Math.abs(l) < half + 0.01, "seed=" + seed + " log aspect " + l);
            sumA += a;
            sumA2 += a * a;
            sumL += l;
            sumL2 += l * l;
            sumPos += (b.top() + 0.5) / (1001 - b.height());
        }
        double meanA = sumA / n, varA = sumA2 / n - meanA * meanA, meanL = sumL / n, varL = sumL2 / n - meanL * meanL;
        assertEquals(0.3, meanA, 6 * Math.sqrt(0.4 * 0.4 / 12 / n) + 1e-4, "seed=" + seed + " mean area");
        assertEquals(0.4 * 0.4 / 12, varA, 0.1 * 0.4 * 0.4 / 12, "seed=" + seed + " area variance");
        assertEquals(0, meanL, 6 * Math.sqrt(4 * half * half / 12 / n), "seed=" + seed + " mean log aspect");
        assertEquals(4 * half * half / 12, varL, 0.1 * 4 * half * half / 12, "seed=" + seed + " log aspect variance");
        assertEquals(0.5, sumPos / n, 6 * Math.sqrt(1 / 12.0 / n), "seed=" + seed + " vertical position");
    }

    @Test
    void theCropIsTheBoxesPixelsResized() {
        // Image pixel (c, y, x) = 10000 c + 100 y + x: at the box's own size the output is exactly the box.
        int c = 2, h = 9, w = 13;
        float[] img = new float[3 + c * h * w];
        for (int ch = 0; ch < c; ch++) {
            for (int y = 0; y < h; y++) {
                for (int x = 0; x < w; x++) img[3 + (ch * h + y) * w + x] = 10000 * ch + 100 * y + x;
            }
        }
        RandomResizedCrop.Box box = new RandomResizedCrop.Box(2, 5, 4, 6);
        float[] out = new float[c * 4 * 6];
        RandomResizedCrop.cropAndResize(img, 3, c, h, w, box, out, 0, 4, 6);
        for (int ch = 0; ch < c; ch++) {
            for (int y = 0; y < 4; y++) {
                for (int x = 0; x < 6; x++) assertEquals(10000 * ch + 100 * (y + 2) + x + 5, out[(ch * 4 + y) * 6 + x]);
            }
        }
        // Resized to any size, a box of constant pixels in an image of other values stays that constant exactly
        // where it is (the filter's weights are normalised): a pixel from outside the box would show.
        float[] marked = img.clone();
        for (int ch = 0; ch < c; ch++) {
            for (int y = 0; y < 4; y++) for (int x = 0; x < 6; x++) marked[3 + (ch * h + y + 2) * w + x + 5] = 7 + ch;
        }
        for (int[] to : new int[][] {{2, 3}, {1, 1}, {8, 5}, {13, 20}}) {
            float[] resized = new float[c * to[0] * to[1]];
            RandomResizedCrop.cropAndResize(marked, 3, c, h, w, box, resized, 0, to[0], to[1]);
            for (int k = 0; k < resized.length; k++) {
                assertEquals(7 + k / (to[0] * to[1]), resized[k], 1e-5, to[0] + "x" + to[1] + " value " + k);
            }
        }
        assertThrows(IllegalArgumentException.class, () -> RandomResizedCrop.cropAndResize(img, 3, c, h, w,
                new RandomResizedCrop.Box(6, 0, 4, 4), out, 0, 4, 4));
    }

    @Test
    void augmentCropsThenFlipsAndIsAPureFunctionOfSeedEpochIndex() {
        long seed = Check.freshSeed();
        Dataset d = Synthetic.dataset(seed, 40, 10, 16, 16);
        RandomResizedCrop crop = RandomResizedCrop.standard(seed + 1);
        Augment aug = Augment.resizedCrop(seed, crop, true);
        int size = d.imageSize(), flips = 0;
        for (int i = 0; i < d.size(); i++) {
            float[] got = new float[size], again = new float[size], want = new float[size];
            aug.apply(d, i, 2, got, 0);
            aug.apply(d, i, 2, again, 0);
            assertArrayEquals(got, again, "seed=" + seed + " image " + i);
            crop.apply(d.images(), i * size, 1, 16, 16, 2, i, want, 0, 16, 16);
            boolean flipped = aug.params(2, i).flipped();
            if (flipped) flips++;
            for (int y = 0; y < 16; y++) {
                for (int x = 0; x < 16; x++) {
                    assertEquals(want[y * 16 + (flipped ? 15 - x : x)], got[y * 16 + x], "seed=" + seed + " " + i);
                }
            }
        }
        // Both branches checked above (all 40 alike: 2^-39); the rate over 4000 draws, within 6 sd (chance 2e-9):
        // (5, 35) of the 40 alone failed a fair coin 1.4e-6 of runs.
        assertTrue(flips > 0 && flips < 40, "seed=" + seed + ": flips " + flips + " of 40");
        int draws = 4000, flipped = 0;
        for (int i = 0; i < draws; i++) if (aug.params(2, i).flipped()) flipped++;
        assertEquals(draws / 2.0, flipped, 6 * Math.sqrt(draws / 4.0), "seed=" + seed + ": flips of " + draws);
        // One image may draw the same crop in two epochs (the whole 16x16 image, say, and the same flip), so the
        // check counts over all 40: a crop that ignored the epoch would make every one of them equal.
        int same = 0;
        for (int i = 0; i < d.size(); i++) {
            float[] first = new float[size], other = new float[size];
            aug.apply(d, i, 2, first, 0);
            aug.apply(d, i, 3, other, 0);
            if (Arrays.equals(first, other)) same++;
        }
        assertTrue(same < 10, "seed=" + seed + ": another epoch, another crop, but " + same + " of 40 equal");
    }

    @Test
    void badRangesAreAClearException() {
        double[][] bad = {{0, 1, 0.75, 1.33}, {0.5, 0.4, 0.75, 1.33}, {0.1, 1.1, 0.75, 1.33}, {Double.NaN, 1, 1, 1},
            {0.1, 1, 0, 1}, {0.1, 1, 2, 1}, {0.1, 1, 1, Double.POSITIVE_INFINITY}, {0.1, 1, Double.NaN, 1}};
        for (double[] b : bad) {
            assertThrows(IllegalArgumentException.class, () -> new RandomResizedCrop(0, b[0], b[1], b[2], b[3]),
                    Arrays.toString(b));
        }
        assertThrows(IllegalArgumentException.class, () -> RandomResizedCrop.standard(0).box(0, 0, 0, 5));
        assertThrows(IllegalArgumentException.class, () -> Augment.resizedCrop(0, null, true));
    }
}
