package org.distill4j.data;

import java.util.Arrays;

/**
 * Per-channel normalisation {@code x = (p − mean[c]) / std[c]}, with the pixel {@code p} in [0, 1]: torchvision's
 * {@code Normalize(mean, std)} after {@code ToTensor}.
 */
public record Normalization(float[] mean, float[] std) {
    /** CIFAR-10's training-set statistics (the values torchvision tutorials and timm's CIFAR configs use). */
    public static final Normalization CIFAR10 = new Normalization(new float[] {0.4914f, 0.4822f, 0.4465f},
            new float[] {0.2470f, 0.2435f, 0.2616f});
    /** CIFAR-100's training-set statistics. */
    public static final Normalization CIFAR100 = new Normalization(new float[] {0.5071f, 0.4865f, 0.4409f},
            new float[] {0.2673f, 0.2564f, 0.2762f});
    /** ImageNet's statistics (timm's IMAGENET_DEFAULT_MEAN/STD), the default for image folders. */
    public static final Normalization IMAGENET = new Normalization(new float[] {0.485f, 0.456f, 0.406f},
            new float[] {0.229f, 0.224f, 0.225f});

    public Normalization {
        if (mean.length == 0 || mean.length != std.length) {
            throw new IllegalArgumentException("normalisation needs one mean and one std per channel, got "
                    + mean.length + " and " + std.length);
        }
        for (int c = 0; c < mean.length; c++) {
            if (!Float.isFinite(mean[c]) || !(std[c] > 0) || !Float.isFinite(std[c])) {
                throw new IllegalArgumentException("channel " + c + ": normalisation needs a finite mean and a finite "
                        + "std > 0, got mean " + mean[c] + ", std " + std[c]);
            }
        }
        mean = mean.clone();
        std = std.clone();
    }

    /** The same mean and std for each of {@code channels} channels. */
    public static Normalization uniform(int channels, float mean, float std) {
        float[] m = new float[channels], s = new float[channels];
        Arrays.fill(m, mean);
        Arrays.fill(s, std);
        return new Normalization(m, s);
    }

    /** No normalisation: pixels stay in [0, 1]. */
    public static Normalization identity(int channels) {
        return uniform(channels, 0f, 1f);
    }

    public int channels() {
        return mean.length;
    }

    @Override
    public float[] mean() {
        return mean.clone();
    }

    @Override
    public float[] std() {
        return std.clone();
    }

    /** {@code (p − mean[c]) / std[c]}. */
    public float apply(int channel, float p) {
        return (p - mean[channel]) / std[channel];
    }

    /** A 256-entry table per channel for byte pixels: the same float for the same byte, no division per pixel. */
    float[][] byteTables() {
        float[][] lut = new float[mean.length][256];
        for (int c = 0; c < mean.length; c++) {
            for (int p = 0; p < 256; p++) lut[c][p] = (p / 255f - mean[c]) / std[c];
        }
        return lut;
    }

    /** Checks that this normalisation has {@code channels} channels, naming {@code what} otherwise. */
    Normalization checkChannels(int channels, String what) {
        if (mean.length != channels) {
            throw new IllegalArgumentException(what + " has " + channels + " channels but the normalisation has "
                    + mean.length);
        }
        return this;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Normalization n && Arrays.equals(mean, n.mean) && Arrays.equals(std, n.std);
    }

    @Override
    public int hashCode() {
        return 31 * Arrays.hashCode(mean) + Arrays.hashCode(std);
    }

    @Override
    public String toString() {
        return "mean " + Arrays.toString(mean) + ", std " + Arrays.toString(std);
    }
}
