package org.distill4j.data;

import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * Training-time geometric augmentation: a crop, then a random horizontal flip. The crop is either a shift with
 * padding, what ViT recipes keep for small grey images (torchvision {@code RandomCrop(size, padding=pad)} +
 * {@code RandomHorizontalFlip()}), or a {@link RandomResizedCrop}, DeiT's ({@link #resizedCrop}). DeiT's
 * {@link RandAugment} may follow them ({@link #withRandAugment}), as in timm's transform (crop, flip, RandAugment).
 *
 * <p>The crop pads the image by {@code pad} pixels on each side and cuts a window of the original size at a random
 * offset: equivalently the image moves by (dy, dx) ∈ [−pad, pad]² and the uncovered border is filled. The fill is
 * a black pixel ({@link Dataset#black()}, the value 0 takes after normalisation), as torchvision pads with 0 before
 * {@code Normalize}; for data normalised with mean 0 this is plain zero padding.
 *
 * <p>Randomness is a pure function of (seed, view, index), the view being the epoch or FKD's view of it
 * ({@link #withViews}): every sample's crop, flip and RandAugment draw can be recomputed, so
 * resuming at any batch reproduces the uninterrupted run exactly, and the batch loader's thread count or order of
 * work cannot change results.
 */
public final class Augment {
    private final long seed;
    private final int pad;
    private final boolean flip;
    private final RandomResizedCrop crop;  // null: the padded crop (pad may be 0)
    private final int views;               // > 0: epoch e shows view e mod views (FKD); 0: a new view every epoch
    private final RandAugment randAugment; // null: none

    /** The crop and flip of one sample. */
    public record Params(int dy, int dx, boolean flipped) {}

    /**
     * Random crop with {@code pad} pixels of padding (0 disables it; 2 or 4 are usual for 28×28) and, when
     * {@code flip}, horizontal flip with probability ½.
     */
    public Augment(long seed, int pad, boolean flip) {
        if (pad < 0) {
            throw new IllegalArgumentException("pad must be >= 0, got " + pad);
        }
        this.seed = seed;
        this.pad = pad;
        this.flip = flip;
        this.crop = null;
        this.views = 0;
        this.randAugment = null;
    }

    private Augment(long seed, int pad, boolean flip, RandomResizedCrop crop, int views, RandAugment randAugment) {
        this.seed = seed;
        this.pad = pad;
        this.flip = flip;
        this.crop = crop;
        this.views = views;
        this.randAugment = randAugment;
    }

    /**
     * {@code crop} (seeded on its own) and, when {@code flip}, horizontal flip with probability ½ after it, as
     * torchvision's {@code RandomResizedCrop} + {@code RandomHorizontalFlip()}; the flip is drawn from {@code seed}.
     */
    public static Augment resizedCrop(long seed, RandomResizedCrop crop, boolean flip) {
        if (crop == null) throw new IllegalArgumentException("no crop given");
        return new Augment(seed, 0, flip, crop, 0, null);
    }

    /**
     * This augmentation limited to {@code views} fixed views per image, as FKD (Shen and Xing 2022) caches them:
     * epoch e shows view e mod views, so a teacher's logits of every view can be computed once and replayed
     * ({@code SoftLabels.computeViews}). 0 turns the limit off.
     */
    public Augment withViews(int views) {
        if (views < 0) throw new IllegalArgumentException("views must be >= 0, got " + views);
        return new Augment(seed, pad, flip, crop, views, randAugment);
    }

    /**
     * This augmentation followed by {@code randAugment} (seeded on its own; null: none), applied to each image
     * after the crop and flip, keyed by the same (view, index); its draw is part of a view, so FKD's views replay it.
     */
    public Augment withRandAugment(RandAugment randAugment) {
        return new Augment(seed, pad, flip, crop, views, randAugment);
    }

    /** The RandAugment after the crop and flip, or null. */
    public RandAugment randAugment() {
        return randAugment;
    }

    /** The views per image (0: unlimited, a new view every epoch). */
    public int views() {
        return views;
    }

    /** The view epoch {@code epoch} shows: the key of its randomness. */
    public int view(int epoch) {
        return views > 0 ? Math.floorMod(epoch, views) : epoch;
    }

    /** The identity: no crop, no flip (evaluation). */
    public static Augment none() {
        return new Augment(0, 0, false);
    }

    /** Whether this augmentation changes anything. */
    public boolean isIdentity() {
        return pad == 0 && !flip && crop == null && randAugment == null;
    }

    /** The random resized crop, or null when the crop is the padded one. */
    public RandomResizedCrop resizedCrop() {
        return crop;
    }

    /** The crop offset and flip of sample {@code index} in {@code epoch}. */
    public Params params(int epoch, int index) {
        if (isIdentity()) {
            return new Params(0, 0, false);
        }
        SplittableRandom rng = new SplittableRandom(Seeds.of(seed, view(epoch), index));
        int dy = pad == 0 ? 0 : rng.nextInt(2 * pad + 1) - pad;
        int dx = pad == 0 ? 0 : rng.nextInt(2 * pad + 1) - pad;
        boolean flipped = flip && rng.nextBoolean();
        return new Params(dy, dx, flipped);
    }

    /**
     * Writes augmented image {@code index} of {@code data} for {@code epoch} into {@code out} at {@code offset}
     * ({@link Dataset#imageSize()} floats).
     */
    public void apply(Dataset data, int index, int epoch, float[] out, int offset) {
        int c = data.channels();
        float[] fill = new float[c];
        for (int k = 0; k < c; k++) fill[k] = data.black(k);
        apply(data.images(), index * data.imageSize(), c, data.height(), data.width(), fill, index, epoch, out, offset);
        randAugment(out, offset, c, data.height(), data.width(), data.normalization(), index, epoch);
    }

    /**
     * Applies sample {@code index}'s RandAugment for {@code epoch}'s view, in place, to the cropped and flipped
     * [channels, h, w] image at {@code img[offset ..]}, normalised with {@code norm}; nothing without one.
     */
    public void randAugment(float[] img, int offset, int channels, int h, int w, Normalization norm, int index,
            int epoch) {
        if (randAugment != null) randAugment.apply(img, offset, channels, h, w, norm, view(epoch), index);
    }

    /**
     * Writes the augmented image {@code src[srcOffset ..]} ([C, H, W], already decoded and normalised; sample
     * {@code index} of its dataset) for {@code epoch} into {@code out} at {@code offset}; {@code fill[c]} is the
     * padding of channel c ({@link ImageSource#black}). {@code src} and {@code out} must not overlap. The crop and
     * flip only: {@link #randAugment(float[], int, int, int, int, Normalization, int, int)},
     * which needs the normalisation, follows.
     */
    public void apply(float[] src, int srcOffset, int channels, int h, int w, float[] fill, int index, int epoch,
            float[] out, int offset) {
        if (pad >= h || pad >= w) {
            throw new IllegalArgumentException("pad " + pad + " must be smaller than the image (" + h + "×" + w + ")");
        }
        Params p = params(epoch, index);
        int plane = h * w;
        if (crop != null) {
            crop.apply(src, srcOffset, channels, h, w, view(epoch), index, out, offset, h, w);
            flip(out, offset, channels, h, w, index, epoch);
            return;
        }
        if (p.dy() == 0 && p.dx() == 0 && !p.flipped()) {
            System.arraycopy(src, srcOffset, out, offset, channels * plane);
            return;
        }
        for (int c = 0; c < channels; c++) {
            int s = srcOffset + c * plane;
            int d = offset + c * plane;
            for (int y = 0; y < h; y++) {
                // Output (y, x) shows padded-image pixel (y + pad + dy, x + pad + dx), i.e. source (y + dy, x + dx);
                // a flip mirrors the output row afterwards, as torchvision flips after cropping.
                int sy = y + p.dy();
                int row = d + y * w;
                if (sy < 0 || sy >= h) {
                    Arrays.fill(out, row, row + w, fill[c]);
                    continue;
                }
                int srcRow = s + sy * w;
                for (int x = 0; x < w; x++) {
                    int sx = x + p.dx();
                    float v = sx < 0 || sx >= w ? fill[c] : src[srcRow + sx];
                    out[row + (p.flipped() ? w - 1 - x : x)] = v;
                }
            }
        }
    }

    /**
     * Mirrors the [C, h, w] image at {@code img[offset ..]} in place when sample {@code index}'s flip for
     * {@code epoch} says so: the flip after a crop that was made elsewhere ({@link ImageSource#copyImageCropped}).
     */
    public void flip(float[] img, int offset, int channels, int h, int w, int index, int epoch) {
        if (!params(epoch, index).flipped()) return;
        for (int row = 0; row < channels * h; row++) {
            for (int a = offset + row * w, b = a + w - 1; a < b; a++, b--) {
                float t = img[a];
                img[a] = img[b];
                img[b] = t;
            }
        }
    }

    /**
     * Writes the augmented images {@code order[from .. from+count)} of {@code data} for {@code epoch} into the
     * preallocated batch {@code out} ([count, C, H, W] from offset 0).
     */
    public void apply(Dataset data, int[] order, int from, int count, int epoch, float[] out) {
        int size = data.imageSize();
        if (out.length < (long) count * size) {
            throw new IllegalArgumentException("batch buffer of " + out.length + " floats is too small for " + count
                    + " images of " + size);
        }
        for (int i = 0; i < count; i++) {
            apply(data, order[from + i], epoch, out, i * size);
        }
    }

    public long seed() {
        return seed;
    }

    public int pad() {
        return pad;
    }

    public boolean flip() {
        return flip;
    }

    @Override
    public String toString() {
        if (isIdentity()) return "no augmentation";
        return (crop != null ? crop.toString() : "crop(pad " + pad + ")") + (flip ? " + hflip" : "")
                + (randAugment == null ? "" : " + RandAugment " + randAugment.config()
                        + (randAugment.seed() == seed ? "" : " (seed " + randAugment.seed() + ")"))
                + ", seed " + seed
                + (views > 0 ? ", " + views + " views" : "");
    }
}
