package org.distill4j.data;

import java.io.IOException;

/**
 * Labeled images read one at a time, in any order, from any thread: what a {@link StreamLoader} batches. An
 * in-memory {@link Dataset} is one; {@link Cifar} and {@link ImageFolder} read their files on demand, so memory is
 * bounded by the loader's queue, not by the dataset.
 *
 * <p>Every image comes out {@code [C, H, W]}, normalised per channel as {@code (p − mean_c)/std_c} with the pixel
 * {@code p} in [0, 1] (torchvision's {@code ToTensor} + {@code Normalize}). {@link #copyImage} is a pure function of
 * the index: the same index gives the same floats on every call and thread, which is what makes a stream's batches
 * independent of its worker count.
 */
public interface ImageSource {
    /** Number of images. */
    int size();

    int channels();

    int height();

    int width();

    /** Number of classes; every label lies in 0..classes−1. */
    int classes();

    /** Label of image {@code index}, without reading the image. */
    int label(int index);

    /**
     * Writes image {@code index} ({@code channels × height × width} floats, normalised) into {@code dst} at
     * {@code offset}. Safe to call from several threads at once.
     *
     * @throws BadImageException when this one image cannot be decoded (the others may be fine)
     * @throws IOException when the source cannot be read at all
     */
    void copyImage(int index, float[] dst, int offset) throws IOException;

    /** A name for logs. */
    String name();

    /** Floats per image. */
    default int imageSize() {
        return channels() * height() * width();
    }

    /** The per-channel normalisation the images come out with. */
    Normalization normalization();

    /** The value a black (0) pixel of {@code channel} takes after normalisation: the padding value of crops. */
    default float black(int channel) {
        return normalization().apply(channel, 0f);
    }
}
