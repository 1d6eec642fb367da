package org.distill4j.data;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;
import java.util.HexFormat;

/**
 * An in-memory image classification dataset: {@code n} images of {@code channels × height × width} floats,
 * already normalised, stored contiguously ([n, C, H, W], the layout the patch embedding reads), and one class index
 * per image.
 *
 * <p>Normalisation is {@code x = (p − mean) / std} with the pixel {@code p} scaled to [0, 1], as torchvision's
 * {@code ToTensor} followed by {@code Normalize(mean, std)}. The dataset keeps {@code mean} and {@code std} so that
 * augmentation can pad with the value a black (0) pixel has after normalisation, as torchvision does when it pads
 * before normalising.
 *
 * <p>The arrays are shared, not copied: treat them as read-only.
 */
public final class Dataset implements ImageSource {
    private final String name;
    private final float[] images;
    private final int[] labels;
    private final int n;
    private final int channels;
    private final int height;
    private final int width;
    private final int classes;
    private final float mean;
    private final float std;
    private final Normalization normalization;
    private volatile String digest;  // computed on first use; the arrays are read-only by contract

    /**
     * A dataset over {@code images} ([n, C, H, W], normalised) and {@code labels} (each in 0..classes−1).
     * {@code mean}/{@code std} are the normalisation that was applied (0 and 1 when the data is synthetic).
     */
    public Dataset(String name, float[] images, int[] labels, int channels, int height, int width, int classes,
            float mean, float std) {
        this(name, images, labels, channels, height, width, classes, checked(mean, std, channels));
    }

    private static Normalization checked(float mean, float std, int channels) {
        if (!(std > 0) || !Float.isFinite(mean)) {
            throw new IllegalArgumentException("normalisation needs a finite mean and std > 0, got mean " + mean
                    + ", std " + std);
        }
        return Normalization.uniform(Math.max(channels, 1), mean, std);
    }

    /**
     * A dataset normalised per channel ({@code normalization} has one mean and std per channel), e.g. CIFAR or an
     * image folder materialised by {@link StreamLoader#materialize}.
     */
    public Dataset(String name, float[] images, int[] labels, int channels, int height, int width, int classes,
            Normalization normalization) {
        if (channels <= 0 || height <= 0 || width <= 0) {
            throw new IllegalArgumentException("image shape must be positive, got " + channels + "×" + height + "×"
                    + width);
        }
        if (classes <= 0) {
            throw new IllegalArgumentException("classes must be positive, got " + classes);
        }
        normalization.checkChannels(channels, name);
        int n = labels.length;
        long expected = (long) n * channels * height * width;
        if (images.length != expected) {
            throw new IllegalArgumentException(n + " labels need " + expected + " floats of images ("
                    + channels + "×" + height + "×" + width + " each), got " + images.length);
        }
        for (int i = 0; i < n; i++) {
            if (labels[i] < 0 || labels[i] >= classes) {
                throw new IllegalArgumentException("label " + labels[i] + " at index " + i + " is outside 0.."
                        + (classes - 1));
            }
        }
        this.name = name;
        this.images = images;
        this.labels = labels;
        this.n = n;
        this.channels = channels;
        this.height = height;
        this.width = width;
        this.classes = classes;
        this.normalization = normalization;
        this.mean = normalization.mean()[0];
        this.std = normalization.std()[0];
    }

    /**
     * A dataset from unsigned-byte pixels ([n, C, H, W]), normalised as {@code (p/255 − mean)/std}.
     */
    public static Dataset fromPixels(byte[] pixels, int[] labels, int n, int channels, int height, int width,
            int classes, float mean, float std) {
        return fromPixels("idx", pixels, labels, n, channels, height, width, classes, mean, std);
    }

    /** As {@link #fromPixels(byte[], int[], int, int, int, int, int, float, float)}, with a name for logs. */
    public static Dataset fromPixels(String name, byte[] pixels, int[] labels, int n, int channels, int height,
            int width, int classes, float mean, float std) {
        if (labels.length != n) {
            throw new IllegalArgumentException("n = " + n + " but " + labels.length + " labels");
        }
        if (pixels.length != (long) n * channels * height * width) {
            throw new IllegalArgumentException("n = " + n + " images of " + channels + "×" + height + "×" + width
                    + " need " + (long) n * channels * height * width + " bytes, got " + pixels.length);
        }
        // One table for the 256 possible values: the same float for the same byte, and no division per pixel.
        float[] lut = new float[256];
        for (int p = 0; p < 256; p++) {
            lut[p] = (p / 255f - mean) / std;
        }
        float[] images = new float[pixels.length];
        for (int i = 0; i < pixels.length; i++) {
            images[i] = lut[pixels[i] & 0xff];
        }
        return new Dataset(name, images, labels, channels, height, width, classes, mean, std);
    }

    /** The first {@code count} items (copies), e.g. a quick subset for a smoke run. */
    public Dataset head(int count) {
        if (count < 0 || count > n) {
            throw new IllegalArgumentException("head(" + count + ") of a dataset of " + n);
        }
        return new Dataset(name + "[:" + count + "]", Arrays.copyOf(images, count * imageSize()),
                Arrays.copyOf(labels, count), channels, height, width, classes, normalization);
    }

    /** The items at {@code indices}, in that order (copies): e.g. the labeled images of a transfer set. */
    public Dataset subset(int[] indices) {
        int size = imageSize();
        float[] im = new float[indices.length * size];
        int[] lab = new int[indices.length];
        for (int k = 0; k < indices.length; k++) {
            int i = indices[k];
            if (i < 0 || i >= n) throw new IllegalArgumentException("index " + i + " of a dataset of " + n);
            System.arraycopy(images, i * size, im, k * size, size);
            lab[k] = labels[i];
        }
        return new Dataset(name + "[" + indices.length + " of " + n + "]", im, lab, channels, height, width, classes,
                normalization);
    }

    /**
     * SHA-256 (hex) of the image shape, the class count, the labels and every image value: what soft labels computed
     * on this dataset record, so that they are never paired with other images (a subset, another split, other
     * preprocessing). Computed on first use, about a second per 200 MB of images.
     */
    public String digest() {
        String d = digest;
        if (d != null) return d;
        MessageDigest md;
        try {
            md = MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("the JDK has no SHA-256", e);
        }
        ByteBuffer buf = ByteBuffer.allocate(1 << 16).order(ByteOrder.LITTLE_ENDIAN);
        buf.putInt(n).putInt(channels).putInt(height).putInt(width).putInt(classes);
        for (int label : labels) {
            if (buf.remaining() < Integer.BYTES) flush(md, buf);
            buf.putInt(label);
        }
        for (float v : images) {
            if (buf.remaining() < Float.BYTES) flush(md, buf);
            buf.putFloat(v);
        }
        flush(md, buf);
        d = HexFormat.of().formatHex(md.digest());
        digest = d;
        return d;
    }

    private static void flush(MessageDigest md, ByteBuffer buf) {
        md.update(buf.array(), 0, buf.position());
        buf.clear();
    }

    /** Number of images. */
    public int size() {
        return n;
    }

    /** Floats per image: channels × height × width. */
    @Override
    public int imageSize() {
        return channels * height * width;
    }

    /** Copies image {@code index} into {@code dst} at {@code offset}. */
    @Override
    public void copyImage(int index, float[] dst, int offset) {
        System.arraycopy(images, index * imageSize(), dst, offset, imageSize());
    }

    /** Channel 0's {@link #black(int)}: {@code −mean/std}, the padding value of crops of one-channel data. */
    public float black() {
        return (0f - mean) / std; // the same float as a 0 byte through fromPixels, and +0 (not -0) when mean = 0
    }

    /** The value a black (0) pixel of {@code channel} has after normalisation. */
    @Override
    public float black(int channel) {
        return normalization.apply(channel, 0f);
    }

    /** The normalisation that was applied, per channel. */
    @Override
    public Normalization normalization() {
        return normalization;
    }

    /** How many images of each class. */
    public int[] classCounts() {
        int[] counts = new int[classes];
        for (int label : labels) {
            counts[label]++;
        }
        return counts;
    }

    /** A name for logs ("fashion-mnist/train", "synthetic", …). */
    public String name() {
        return name;
    }

    /** The images, [n, C, H, W], normalised; shared, do not modify. */
    public float[] images() {
        return images;
    }

    /** The class indices, one per image; shared, do not modify. */
    public int[] labels() {
        return labels;
    }

    /** Label of image {@code index}. */
    public int label(int index) {
        return labels[index];
    }

    public int channels() {
        return channels;
    }

    public int height() {
        return height;
    }

    public int width() {
        return width;
    }

    /** Number of classes; every label lies in 0..classes−1. */
    public int classes() {
        return classes;
    }

    /** The normalisation mean (in [0, 1] pixel units); channel 0's when it differs per channel. */
    public float mean() {
        return mean;
    }

    /** The normalisation standard deviation (in [0, 1] pixel units); channel 0's when it differs per channel. */
    public float std() {
        return std;
    }

    @Override
    public String toString() {
        return name + ": " + n + " images " + channels + "×" + height + "×" + width + ", " + classes + " classes";
    }
}
