package org.distill4j.data;

import java.util.SplittableRandom;

/**
 * Generated image classification data for tests and smoke runs: learnable, small, and the same on every machine.
 *
 * <p>Each class has a prototype: a random pattern of ±1 values constant over 4×4 blocks (so a patch embedding sees
 * it as a per-patch signal) plus a class-specific bright stripe. An image is its class's prototype, shifted by up
 * to one pixel, plus Gaussian noise of standard deviation {@value #NOISE}. A linear classifier reaches high accuracy
 * quickly; a ViT learns it within a few hundred steps, yet the noise keeps it from being trivially memorised.
 *
 * <p>The prototypes depend only on (classes, height, width), not on {@code seed}: two calls with different seeds
 * draw different samples from the same distribution, so they form a train/test split. {@code seed} decides the
 * labels (balanced, shuffled), the shifts and the noise.
 */
public final class Synthetic {
    /** Standard deviation of the additive noise. */
    public static final float NOISE = 0.5f;
    private static final int BLOCK = 4;
    private static final long PROTOTYPE_SEED = 0x5eed_d15711L;

    private Synthetic() {}

    /** {@code n} single-channel images of {@code h × w} in {@code classes} classes, balanced. */
    public static Dataset dataset(long seed, int n, int classes, int h, int w) {
        if (n < 0 || classes < 1 || h < 1 || w < 1) {
            throw new IllegalArgumentException("synthetic dataset needs n >= 0, classes >= 1, h, w >= 1; got n = " + n
                    + ", classes = " + classes + ", " + h + "×" + w);
        }
        float[][] prototypes = prototypes(classes, h, w);
        SplittableRandom rng = new SplittableRandom(Seeds.of(seed, 0x5a5a));
        int[] labels = new int[n];
        for (int i = 0; i < n; i++) {
            labels[i] = i % classes;
        }
        for (int i = n - 1; i > 0; i--) {
            int j = rng.nextInt(i + 1);
            int t = labels[i];
            labels[i] = labels[j];
            labels[j] = t;
        }
        float[] images = new float[n * h * w];
        for (int i = 0; i < n; i++) {
            float[] proto = prototypes[labels[i]];
            int dy = rng.nextInt(3) - 1;
            int dx = rng.nextInt(3) - 1;
            int base = i * h * w;
            for (int y = 0; y < h; y++) {
                int sy = Math.floorMod(y + dy, h);
                for (int x = 0; x < w; x++) {
                    int sx = Math.floorMod(x + dx, w);
                    images[base + y * w + x] = proto[sy * w + sx] + NOISE * (float) rng.nextGaussian();
                }
            }
        }
        return new Dataset("synthetic(seed " + seed + ")", images, labels, 1, h, w, classes, 0f, 1f);
    }

    private static float[][] prototypes(int classes, int h, int w) {
        SplittableRandom rng = new SplittableRandom(Seeds.of(PROTOTYPE_SEED, classes, h, w));
        int by = (h + BLOCK - 1) / BLOCK;
        int bx = (w + BLOCK - 1) / BLOCK;
        float[][] protos = new float[classes][h * w];
        for (int c = 0; c < classes; c++) {
            float[] blocks = new float[by * bx];
            for (int b = 0; b < blocks.length; b++) {
                blocks[b] = rng.nextBoolean() ? 1f : -1f;
            }
            // A stripe whose row depends on the class: structure a human can see in a dump, and extra signal.
            int stripe = (int) ((long) c * h / classes);
            for (int y = 0; y < h; y++) {
                for (int x = 0; x < w; x++) {
                    float v = blocks[(y / BLOCK) * bx + x / BLOCK];
                    protos[c][y * w + x] = y == stripe ? 2f : v;
                }
            }
        }
        return protos;
    }
}
