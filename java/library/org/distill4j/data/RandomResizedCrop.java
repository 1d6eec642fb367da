package org.distill4j.data;

import java.util.SplittableRandom;

/**
 * torchvision's {@code RandomResizedCrop(size, scale, ratio)}, DeiT's and timm's training crop: a box covering a
 * random fraction of the image's area (uniform in {@code scale}) with a random aspect ratio (log-uniform in
 * {@code ratio}), resized to the output size.
 *
 * <p>The box is torchvision's {@code get_params}: up to 10 attempts of (area, aspect), each side rounded half to even
 * (Python's {@code round}), the first box that fits taken at a uniform position; when none fits, the whole image
 * cropped in the centre to the nearest allowed aspect ratio. The resize is Pillow's antialiased bilinear filter
 * ({@link Resize#resize}); timm's DeiT recipe interpolates bicubic, so pixels differ from DeiT's slightly, the boxes
 * not at all in distribution.
 *
 * <p>Randomness is a pure function of (seed, epoch, index), on a stream of its own (so adding this crop changes no
 * other augmentation's draws): resuming and any worker count give the same boxes.
 */
public final class RandomResizedCrop {
    /** Separates this crop's random stream from the other augmentations' of the same (seed, epoch, index). */
    static final long STREAM = 0x5252_4344L;

    private final long seed;
    private final double minScale, maxScale, minRatio, maxRatio;

    /** A crop box in source pixels: rows {@code top .. top+height}, columns {@code left .. left+width}. */
    public record Box(int top, int left, int height, int width) {}

    /**
     * A crop of area fraction in [{@code minScale}, {@code maxScale}] and aspect ratio (width / height) in
     * [{@code minRatio}, {@code maxRatio}], both ranges closed and non-empty.
     */
    public RandomResizedCrop(long seed, double minScale, double maxScale, double minRatio, double maxRatio) {
        if (!(minScale > 0 && minScale <= maxScale && maxScale <= 1)) {
            throw new IllegalArgumentException("crop scale must satisfy 0 < min <= max <= 1, got " + minScale + ", "
                    + maxScale);
        }
        if (!(minRatio > 0 && minRatio <= maxRatio && Double.isFinite(maxRatio))) {
            throw new IllegalArgumentException("crop aspect ratio must satisfy 0 < min <= max < inf, got " + minRatio
                    + ", " + maxRatio);
        }
        this.seed = seed;
        this.minScale = minScale;
        this.maxScale = maxScale;
        this.minRatio = minRatio;
        this.maxRatio = maxRatio;
    }

    /** torchvision's and DeiT's defaults: scale 0.08–1, ratio 3/4–4/3. */
    public static RandomResizedCrop standard(long seed) {
        return new RandomResizedCrop(seed, 0.08, 1.0, 3.0 / 4, 4.0 / 3);
    }

    /** The box of sample {@code index} in {@code epoch} for an {@code h}×{@code w} image. */
    public Box box(int epoch, int index, int h, int w) {
        if (h <= 0 || w <= 0) throw new IllegalArgumentException("image of " + h + "×" + w);
        SplittableRandom rng = new SplittableRandom(Seeds.of(seed, STREAM, epoch, index));
        double area = (double) h * w, logLo = Math.log(minRatio), logHi = Math.log(maxRatio);
        for (int attempt = 0; attempt < 10; attempt++) {
            double target = area * (minScale + (maxScale - minScale) * rng.nextDouble());
            double aspect = Math.exp(logLo + (logHi - logLo) * rng.nextDouble());
            double bw = Math.rint(Math.sqrt(target * aspect)), bh = Math.rint(Math.sqrt(target / aspect));
            if (bw > 0 && bw <= w && bh > 0 && bh <= h) {
                int ch = (int) bh, cw = (int) bw;
                int top = rng.nextInt(h - ch + 1), left = rng.nextInt(w - cw + 1);
                return new Box(top, left, ch, cw);
            }
        }
        // torchvision's fallback: the whole image, narrowed to the nearest ratio in range, centred. A side that
        // rounds to 0 pixels (a 1-pixel image and a ratio of 2) is kept at 1: torchvision would fail on that box.
        double inRatio = (double) w / h;
        int ch = h, cw = w;
        if (inRatio < minRatio) {
            ch = Math.max(1, (int) Math.rint(w / minRatio));
        } else if (inRatio > maxRatio) {
            cw = Math.max(1, (int) Math.rint(h * maxRatio));
        }
        return new Box((h - ch) / 2, (w - cw) / 2, ch, cw);
    }

    /**
     * Writes sample {@code index}'s crop for {@code epoch} of the [C, h, w] image at {@code src[srcOffset ..]},
     * resized to [C, outH, outW], into {@code out} at {@code offset}. {@code src} and {@code out} must not overlap.
     */
    public void apply(float[] src, int srcOffset, int channels, int h, int w, int epoch, int index, float[] out,
            int offset, int outH, int outW) {
        cropAndResize(src, srcOffset, channels, h, w, box(epoch, index, h, w), out, offset, outH, outW);
    }

    /** Writes {@code box} of the [C, h, w] image at {@code src[srcOffset ..]}, resized to [C, outH, outW]. */
    public static void cropAndResize(float[] src, int srcOffset, int channels, int h, int w, Box box, float[] out,
            int offset, int outH, int outW) {
        if (box.top() < 0 || box.left() < 0 || box.height() <= 0 || box.width() <= 0
                || box.top() + box.height() > h || box.left() + box.width() > w) {
            throw new IllegalArgumentException(box + " is not inside the " + h + "×" + w + " image");
        }
        float[] crop = new float[channels * box.height() * box.width()];
        for (int c = 0; c < channels; c++) {
            for (int y = 0; y < box.height(); y++) {
                System.arraycopy(src, srcOffset + (c * h + box.top() + y) * w + box.left(), crop,
                        (c * box.height() + y) * box.width(), box.width());
            }
        }
        float[] resized = Resize.resize(crop, channels, box.height(), box.width(), outH, outW);
        System.arraycopy(resized, 0, out, offset, channels * outH * outW);
    }

    @Override
    public String toString() {
        return "random resized crop (scale " + minScale + "-" + maxScale + ", ratio " + minRatio + "-" + maxRatio + ")";
    }
}
