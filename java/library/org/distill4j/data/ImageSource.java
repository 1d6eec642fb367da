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

    /** Chooses a crop box for an image as decoded, {@code height}×{@code width} pixels. */
    @FunctionalInterface
    interface CropChoice {
        RandomResizedCrop.Box box(int height, int width);
    }

    /**
     * Writes image {@code index} as {@link #copyImage} does, but cropped to the box {@code choice} picks and resized
     * to this source's size: a {@link RandomResizedCrop} of the image. A source that decodes files larger than its
     * output (an {@link ImageFolder}) crops the image as decoded, before any resize, as torchvision does; the
     * others crop their output. Safe to call from several threads at once.
     *
     * @throws BadImageException when this one image cannot be decoded
     * @throws IOException when the source cannot be read at all
     */
    default void copyImageCropped(int index, CropChoice choice, float[] dst, int offset) throws IOException {
        float[] full = new float[imageSize()];
        copyImage(index, full, 0);
        int h = height(), w = width();
        RandomResizedCrop.cropAndResize(full, 0, channels(), h, w, choice.box(h, w), dst, offset, h, w);
    }

    /**
     * Which file or record image {@code index} is, for a {@link SampleList}: stable across runs and machines, no tab
     * or line break. The default, {@code #index}, suits a source whose images are identified by their index alone.
     */
    default String sampleName(int index) {
        return "#" + index;
    }

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
