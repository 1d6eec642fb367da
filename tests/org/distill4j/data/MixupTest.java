package org.distill4j.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.Random;
import org.apache.commons.math3.distribution.BetaDistribution;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.Test;

/**
 * Mixup/CutMix against their definitions (timm's {@code Mixup}, batch mode): λ's distribution against Apache
 * Commons Math's Beta CDF (Kolmogorov–Smirnov), CutMix's box and corrected λ recomputed from the recorded draw by
 * timm's {@code rand_bbox} formula, mixed pixels against float64, targets by hand.
 */
class MixupTest {
    /** KS statistic of {@code xs} against {@code cdf}. */
    private static double ks(double[] xs, BetaDistribution cdf) {
        double[] s = xs.clone();
        Arrays.sort(s);
        double d = 0;
        for (int i = 0; i < s.length; i++) {
            double f = cdf.cumulativeProbability(s[i]);
            d = Math.max(d, Math.max((i + 1.0) / s.length - f, f - (double) i / s.length));
        }
        return d;
    }

    /**
     * The KS critical value at significance 1e-10 (DKW–Massart: P(D > t) ≤ 2·exp(−2n·t²) for any n), so the eight
     * KS checks here fail a correct sampler less than once in a billion runs (1e-6 each gave up to 8e-6 a run).
     */
    private static double ksCritical(int n) {
        return Math.sqrt(-Math.log(1e-10 / 2) / 2) / Math.sqrt(n);
    }

    @Test
    void lambdaFollowsBetaForMixupAndCutMix() {
        long seed = Check.freshSeed();
        int n = 20_000;
        for (double alpha : new double[] {0.8, 1.0, 2.5}) {
            Mixup mixup = new Mixup(seed, alpha, 0, 1, 0.5), cutmix = new Mixup(seed, 0, alpha, 1, 0.5);
            double[] m = new double[n], c = new double[n];
            for (int i = 0; i < n; i++) {
                Mixup.Params p = mixup.params(i / 100, i % 100, 32, 32), q = cutmix.params(i / 100, i % 100, 32, 32);
                assertFalse(p.cutmix(), "mixup only");
                assertTrue(q.cutmix(), "cutmix only");
                assertEquals(p.lambda(), p.sampledLambda());
                m[i] = p.lambda();
                c[i] = q.sampledLambda();
            }
            BetaDistribution beta = new BetaDistribution(alpha, alpha);
            double dm = ks(m, beta), dc = ks(c, beta);
            String what = "seed=" + seed + " alpha=" + alpha;
            assertTrue(dm < ksCritical(n), what + ": mixup KS " + dm + " >= " + ksCritical(n));
            assertTrue(dc < ksCritical(n), what + ": cutmix KS " + dc + " >= " + ksCritical(n));
        }
    }

    @Test
    void eachModeDrawsFromItsOwnAlphaWhenBothAreOn() {
        long seed = Check.freshSeed();
        Mixup m = new Mixup(seed, 0.3, 3.0, 1, 0.5);
        double[] mix = new double[40_000], cut = new double[40_000];
        int nm = 0, nc = 0;
        for (int i = 0; i < 40_000; i++) {
            Mixup.Params p = m.params(i / 100, i % 100, 32, 32);
            if (p.cutmix()) cut[nc++] = p.sampledLambda();
            else mix[nm++] = p.lambda();
        }
        double dm = ks(Arrays.copyOf(mix, nm), new BetaDistribution(0.3, 0.3));
        double dc = ks(Arrays.copyOf(cut, nc), new BetaDistribution(3.0, 3.0));
        assertTrue(dm < ksCritical(nm), "seed=" + seed + ": mixup's lambda is not Beta(0.3, 0.3): KS " + dm);
        assertTrue(dc < ksCritical(nc), "seed=" + seed + ": cutmix's lambda is not Beta(3, 3): KS " + dc);
    }

    @Test
    void probabilityAndSwitchAreHonoured() {
        long seed = Check.freshSeed();
        int n = 20_000;
        Mixup m = new Mixup(seed, 0.8, 1.0, 0.6, 0.3);
        int mixed = 0, cut = 0;
        for (int i = 0; i < n; i++) {
            Mixup.Params p = m.params(i / 50, i % 50, 28, 28);
            if (p != Mixup.Params.NONE) mixed++;
            if (p.cutmix()) cut++;
        }
        // Binomial counts within 6 standard deviations of their means.
        assertEquals(0.6 * n, mixed, 6 * Math.sqrt(n * 0.6 * 0.4), "seed=" + seed + ": batches mixed");
        assertEquals(0.3 * mixed, cut, 6 * Math.sqrt(mixed * 0.3 * 0.7), "seed=" + seed + ": CutMix share");
        assertEquals(Mixup.Params.NONE, new Mixup(seed, 0.8, 1.0, 0, 0.5).params(0, 0, 28, 28));
        assertEquals(Mixup.Params.NONE, new Mixup(seed, 0, 0, 1, 0.5).params(0, 0, 28, 28));
        assertFalse(new Mixup(seed, 0, 0, 1, 0.5).isEnabled());
    }

    @Test
    void drawsArePureFunctionsOfSeedEpochAndBatch() {
        long seed = Check.freshSeed();
        Mixup a = Mixup.deit(seed), b = Mixup.deit(seed);
        assertEquals(a.params(3, 17, 224, 224), b.params(3, 17, 224, 224));
        int differ = 0;
        for (int i = 0; i < 20; i++) {
            if (!a.params(3, i, 224, 224).equals(a.params(4, i, 224, 224))) differ++;
        }
        assertTrue(differ >= 19, "epochs draw independently: " + differ + " of 20 differ");
    }

    @Test
    void cutMixBoxAndLambdaFollowTimmsFormula() {
        long seed = Check.freshSeed();
        for (int[] hw : new int[][] {{28, 28}, {32, 32}, {224, 224}, {7, 13}, {1, 1}}) {
            int h = hw[0], w = hw[1];
            Mixup m = new Mixup(seed, 0, 1.0, 1, 0.5);
            boolean[] rows = new boolean[h], cols = new boolean[w];
            for (int i = 0; i < 5000; i++) {  // every centre row and column is drawn (224 of them: all but surely)
                Mixup.Params p = m.params(0, i, h, w);
                // timm rand_bbox: cut = int(size * sqrt(1 - lam)); bounds clip(c -+ cut // 2, 0, size).
                double r = Math.sqrt(1 - p.sampledLambda());
                int cutH = (int) (h * r), cutW = (int) (w * r);
                String what = "seed=" + seed + " " + h + "x" + w + " batch " + i + ": " + p;
                assertTrue(p.centerY() >= 0 && p.centerY() < h && p.centerX() >= 0 && p.centerX() < w, what);
                rows[p.centerY()] = true;
                cols[p.centerX()] = true;
                assertEquals(Math.max(0, p.centerY() - cutH / 2), p.top(), what);
                assertEquals(Math.min(h, p.centerY() + cutH / 2), p.bottom(), what);
                assertEquals(Math.max(0, p.centerX() - cutW / 2), p.left(), what);
                assertEquals(Math.min(w, p.centerX() + cutW / 2), p.right(), what);
                double area = (double) (p.bottom() - p.top()) * (p.right() - p.left());
                assertEquals(1 - area / (h * w), p.lambda(), 1e-15, what);
            }
            for (int y = 0; y < h; y++) assertTrue(rows[y], "row " + y + " of " + h + " never a centre");
            for (int x = 0; x < w; x++) assertTrue(cols[x], "column " + x + " of " + w + " never a centre");
        }
    }

    @Test
    void mixupMixesEachImageWithItsMirrorAsFloat64Does() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        for (int b : new int[] {1, 2, 5, 8}) {
            int c = 3, h = 4, w = 5, size = c * h * w, offset = 7;
            float[] x = Check.normal(rng, offset + b * size + 3, 2), orig = x.clone();
            double lam = rng.nextDouble();
            Mixup.apply(x, offset, b, c, h, w, new Mixup.Params(false, lam, lam, 0, 0, 0, 0, 0, 0));
            for (int i = 0; i < b; i++) {
                for (int k = 0; k < size; k++) {
                    double want = lam * orig[offset + i * size + k] + (1 - lam) * orig[offset + (b - 1 - i) * size + k];
                    double got = x[offset + i * size + k];
                    assertEquals(want, got, 1e-6 * (1 + Math.abs(want)), "seed=" + seed + " B=" + b + " image " + i);
                }
            }
            assertArrayEquals(Arrays.copyOf(orig, offset), Arrays.copyOf(x, offset), "before the batch: untouched");
            assertArrayEquals(Arrays.copyOfRange(orig, offset + b * size, orig.length),
                    Arrays.copyOfRange(x, offset + b * size, x.length), "after the batch: untouched");
        }
    }

    @Test
    void cutMixSwapsTheBoxWithTheMirrorAndNothingElse() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        int b = 5, c = 2, h = 6, w = 7, size = c * h * w;
        float[] x = Check.normal(rng, b * size, 1), orig = x.clone();
        Mixup.Params p = new Mixup.Params(true, 1 - 6.0 / 42, 0.7, 2, 3, 1, 3, 2, 5);
        Mixup.apply(x, 0, b, c, h, w, p);
        for (int i = 0; i < b; i++) {
            for (int ch = 0; ch < c; ch++) {
                for (int y = 0; y < h; y++) {
                    for (int xx = 0; xx < w; xx++) {
                        boolean in = y >= 1 && y < 3 && xx >= 2 && xx < 5;
                        int k = (ch * h + y) * w + xx, from = (in ? b - 1 - i : i) * size + k;
                        assertEquals(orig[from], x[i * size + k], "image " + i + " c" + ch + " y" + y + " x" + xx);
                    }
                }
            }
        }
        float[] y = orig.clone();
        Mixup.apply(y, 0, b, c, h, w, Mixup.Params.NONE);
        assertArrayEquals(orig, y, "NONE leaves the batch alone");
    }

    @Test
    void targetsPutLambdaOnTheOwnLabelAndTheRestOnTheMirrors() {
        int[] labels = {2, 0, 1, 2};
        Mixup.Params p = new Mixup.Params(false, 0.75, 0.75, 0, 0, 0, 0, 0, 0);
        float[] t = new float[4 * 3];
        Arrays.fill(t, Float.NaN);
        Mixup.targets(labels, 3, p, t);
        float[] want = {
            0, 0, 1,              // own 2 (0.75) + mirror's 2 (0.25)
            0.75f, 0.25f, 0,      // own 0, mirror (row 2) 1
            0.25f, 0.75f, 0,      // own 1, mirror (row 1) 0
            0, 0, 1};             // own 2, mirror (row 0) 2
        assertArrayEquals(want, t);
    }

    @Test
    void badInputIsAClearException() {
        assertThrows(IllegalArgumentException.class, () -> new Mixup(0, -0.1, 1, 1, 0.5));
        assertThrows(IllegalArgumentException.class, () -> new Mixup(0, Double.NaN, 1, 1, 0.5));
        assertThrows(IllegalArgumentException.class, () -> new Mixup(0, 0.8, 1, 1.5, 0.5));
        assertThrows(IllegalArgumentException.class, () -> new Mixup(0, 0.8, 1, 1, Double.NaN));
        assertThrows(IllegalArgumentException.class, () -> Mixup.deit(0).params(0, 0, 0, 28));
        Mixup.Params box = new Mixup.Params(true, 0.5, 0.5, 20, 20, 10, 30, 10, 30);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Mixup.apply(new float[4 * 28 * 28], 0, 4, 1, 28, 28, box));
        assertTrue(e.getMessage().contains("outside 28x28"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Mixup.apply(new float[100], 0, 2, 1, 8, 8, box));
        assertTrue(e.getMessage().contains("do not fit in 100"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> Mixup.targets(new int[] {0, 3}, 3, Mixup.Params.NONE, new float[6]));
        assertTrue(e.getMessage().contains("label 3 at row 1"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Mixup.targets(new int[] {0}, 3, Mixup.Params.NONE, new float[4]));
    }
}
