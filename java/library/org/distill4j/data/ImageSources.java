package org.distill4j.data;

import java.io.IOException;

/** Views of {@link ImageSource}s: the first images, or chosen ones, without copying (copies for a {@link Dataset}). */
public final class ImageSources {
    private ImageSources() {}

    /** The first {@code count} images: {@link Dataset#head} for a dataset, a view otherwise. */
    public static ImageSource head(ImageSource src, int count) {
        if (count < 0 || count > src.size()) {
            throw new IllegalArgumentException("head(" + count + ") of " + src.name() + " (" + src.size() + " images)");
        }
        if (src instanceof Dataset d) return d.head(count);
        int[] idx = new int[count];
        for (int i = 0; i < count; i++) idx[i] = i;
        return new View(src, idx, src.name() + "[:" + count + "]");
    }

    /** The images at {@code indices}, in that order: {@link Dataset#subset} for a dataset, a view otherwise. */
    public static ImageSource subset(ImageSource src, int[] indices) {
        if (src instanceof Dataset d) return d.subset(indices);
        for (int i : indices) {
            if (i < 0 || i >= src.size()) throw new IllegalArgumentException("index " + i + " of " + src.size());
        }
        return new View(src, indices.clone(), src.name() + "[" + indices.length + " of " + src.size() + "]");
    }

    /** Every label, in order (reads no image). */
    public static int[] labels(ImageSource src) {
        if (src instanceof Dataset d) return d.labels().clone();
        int[] labels = new int[src.size()];
        for (int i = 0; i < labels.length; i++) labels[i] = src.label(i);
        return labels;
    }

    private record View(ImageSource src, int[] idx, String name) implements ImageSource {
        @Override
        public int size() {
            return idx.length;
        }

        @Override
        public int channels() {
            return src.channels();
        }

        @Override
        public int height() {
            return src.height();
        }

        @Override
        public int width() {
            return src.width();
        }

        @Override
        public int classes() {
            return src.classes();
        }

        @Override
        public int label(int index) {
            return src.label(idx[index]);
        }

        @Override
        public void copyImage(int index, float[] dst, int offset) throws IOException {
            src.copyImage(idx[index], dst, offset);
        }

        @Override
        public String sampleName(int index) {
            return src.sampleName(idx[index]);
        }

        @Override
        public void copyImageCropped(int index, CropChoice choice, float[] dst, int offset) throws IOException {
            src.copyImageCropped(idx[index], choice, dst, offset);
        }

        @Override
        public Normalization normalization() {
            return src.normalization();
        }
    }
}
