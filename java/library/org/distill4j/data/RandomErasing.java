package org.distill4j.data;

import java.util.Objects;
import java.util.SplittableRandom;

/**
 * Random erasing (Zhong et al. 2020) as timm's {@code RandomErasing} in DeiT's setting ({@code --reprob 0.25
 * --remode pixel --recount 1}): with probability {@code prob}, one rectangle of a normalised image is replaced by
 * values drawn from N(0, 1), independently per pixel and channel.
 *
 * <p>The rectangle, as timm draws it: up to 10 attempts of an area uniform in [0.02, 1/3] of the image and a
 * log-uniform aspect ratio in [0.3, 1/0.3]; h = round(√(area·ratio)), w = round(√(area/ratio)); the first attempt
 * with h &lt; H and w &lt; W is placed at a uniform top-left corner in [0, H − h] × [0, W − w]. When all 10 fail the
 * image is left alone.
 *
 * <p>The draw is a pure function of (seed, epoch, sample index), like {@link Augment}'s, so resuming reproduces it
 * and the loader's threads cannot change it. Instances are immutable and thread-safe.
 */
public final class RandomErasing {
    static final long STREAM = 0x7265707262L;  // "reprb": independent of Augment's and Mixup's draws
    private static final double MIN_AREA = 0.02, MAX_AREA = 1.0 / 3, LOG_MIN_ASPECT = Math.log(0.3);

    private final long seed;
    private final double prob;

    /**
     * The rectangle of one image, or {@link #NONE}.
     *
     * @param top first erased row
     * @param left first erased column
     * @param height erased rows (0: nothing erased)
     * @param width erased columns
     */
    public record Box(int top, int left, int height, int width) {
        /** Nothing erased. */
        public static final Box NONE = new Box(0, 0, 0, 0);
    }

    /** Erases with probability {@code prob} in [0, 1] (timm {@code --reprob}; DeiT 0.25; 0 turns it off). */
    public RandomErasing(long seed, double prob) {
        if (!(prob >= 0 && prob <= 1)) {
            throw new IllegalArgumentException("random erasing probability must be in [0, 1], got " + prob);
        }
        this.seed = seed;
        this.prob = prob;
    }

    /** Whether any image can be erased. */
    public boolean isEnabled() {
        return prob > 0;
    }

    /** The rectangle of sample {@code index} in {@code epoch}, for an image of {@code height} × {@code width}. */
    public Box box(int epoch, int index, int height, int width) {
        return draw(new SplittableRandom(Seeds.of(seed, STREAM, epoch, index)), height, width);
    }

    private Box draw(SplittableRandom rng, int height, int width) {
        if (height <= 0 || width <= 0) {
            throw new IllegalArgumentException("random erasing: image size must be positive, got " + height + "x"
                    + width);
        }
        // timm skips when random() > probability: erases with probability prob.
        if (!isEnabled() || rng.nextDouble() > prob) return Box.NONE;
        double area = (double) height * width;
        for (int attempt = 0; attempt < 10; attempt++) {
            double target = (MIN_AREA + (MAX_AREA - MIN_AREA) * rng.nextDouble()) * area;
            double ratio = Math.exp(LOG_MIN_ASPECT + (-2 * LOG_MIN_ASPECT) * rng.nextDouble());
            // Python's round() is half-to-even, as rint.
            int h = (int) Math.rint(Math.sqrt(target * ratio)), w = (int) Math.rint(Math.sqrt(target / ratio));
            if (w < width && h < height) {
                int top = rng.nextInt(height - h + 1), left = rng.nextInt(width - w + 1);
                return new Box(top, left, h, w);
            }
        }
        return Box.NONE;
    }

    /**
     * Erases sample {@code index} of {@code epoch}, an image of [channels, height, width] floats at
     * {@code images[offset]}, in place: its {@link #box} gets N(0, 1) values from the same seeded stream.
     *
     * @return the rectangle erased ({@link Box#NONE} when none)
     */
    public Box apply(float[] images, int offset, int channels, int height, int width, int epoch, int index) {
        Objects.requireNonNull(images, "images");
        if (channels <= 0 || offset < 0 || offset + (long) channels * height * width > images.length) {
            throw new IllegalArgumentException("random erasing: an image of " + channels + "x" + height + "x" + width
                    + " floats at offset " + offset + " does not fit in " + images.length);
        }
        SplittableRandom rng = new SplittableRandom(Seeds.of(seed, STREAM, epoch, index));
        Box b = draw(rng, height, width);
        for (int c = 0; c < channels; c++) {
            for (int y = b.top(); y < b.top() + b.height(); y++) {
                int row = offset + (c * height + y) * width;
                for (int x = b.left(); x < b.left() + b.width(); x++) images[row + x] = (float) rng.nextGaussian();
            }
        }
        return b;
    }

    @Override
    public String toString() {
        return "RandomErasing[prob=" + prob + ", pixel, 1]";
    }
}
