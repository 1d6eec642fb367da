package org.distill4j.train;

import java.util.Arrays;
import org.distill4j.data.BatchLoader;
import org.distill4j.data.Dataset;
import org.distill4j.data.ImageSource;
import org.distill4j.data.ImageSources;
import org.distill4j.data.StreamLoader;
import org.distill4j.nn.VisionTransformer;

/**
 * Top-1 accuracy of a model on a dataset, in batches of the model's size (the last one padded with black images
 * whose rows are not counted): of the class head, of the distillation head, and of their average (DeiT's
 * prediction; the class head alone for a model without a distillation head).
 */
public final class Evaluator {
    private Evaluator() {}

    /** Accuracies in [0, 1]; {@code distHead} is NaN for a model without a distillation head. */
    public record Accuracy(double classHead, double distHead, double average, int images) {}

    /**
     * Evaluates {@code model} on the first {@code limit} images of {@code data} (0: all); a source other than an
     * in-memory {@link Dataset} is decoded on {@code workers} threads ({@link StreamLoader}), in order.
     */
    public static Accuracy evaluate(VisionTransformer model, ImageSource data, int limit, int workers) {
        return evaluate(model, data, limit, workers, null);
    }

    /**
     * As {@link #evaluate(VisionTransformer, ImageSource, int, int)}; with {@code badImages} non-null an undecodable
     * image is logged there and replaced by the next one ({@link StreamLoader.Builder#skipBadImages}).
     */
    public static Accuracy evaluate(VisionTransformer model, ImageSource data, int limit, int workers,
            java.io.PrintStream badImages) {
        if (data instanceof Dataset d) return evaluate(model, d, limit);
        check(model, data);
        int n = limit > 0 ? Math.min(limit, data.size()) : data.size();
        int b = model.batch(), size = data.imageSize();
        Tally tally = new Tally(model);
        StreamLoader.Builder sb = StreamLoader.builder(ImageSources.head(data, n), b).shuffle(false).dropLast(false)
                .epochs(1).workers(workers);
        if (badImages != null) sb.skipBadImages(badImages);
        try (StreamLoader loader = sb.build()) {
            while (loader.hasNext()) {
                BatchLoader.Batch batch = loader.next();
                int rows = batch.size();
                float[] images = batch.images();
                int[] labels = batch.labels();
                if (rows < b) Arrays.fill(images, rows * size, b * size, data.black(0));
                model.forward(images);
                tally.add(labels, rows);
            }
        }
        return tally.result(n);
    }

    private static void check(VisionTransformer model, ImageSource data) {
        if (data.channels() != model.config().channels() || data.height() != model.config().imageSize()
                || data.width() != model.config().imageSize()) {
            throw new IllegalArgumentException("dataset " + data.name() + " has " + data.channels() + "x"
                    + data.height() + "x" + data.width() + " images, the model expects " + model.config().channels()
                    + "x" + model.config().imageSize() + "x" + model.config().imageSize());
        }
        if (data.classes() != model.config().classes()) {
            throw new IllegalArgumentException("dataset " + data.name() + " has " + data.classes()
                    + " classes, the model predicts " + model.config().classes());
        }
    }

    /** Evaluates {@code model} on the first {@code limit} images of {@code data} (0: all). */
    public static Accuracy evaluate(VisionTransformer model, Dataset data, int limit) {
        check(model, data);
        int n = limit > 0 ? Math.min(limit, data.size()) : data.size();
        int b = model.batch(), size = data.imageSize();
        float[] images = new float[b * size];
        int[] labels = new int[b];
        Tally tally = new Tally(model);
        for (int start = 0; start < n; start += b) {
            int rows = Math.min(b, n - start);
            for (int r = 0; r < rows; r++) {
                data.copyImage(start + r, images, r * size);
                labels[r] = data.label(start + r);
            }
            if (rows < b) Arrays.fill(images, rows * size, b * size, data.black());
            model.forward(images);
            tally.add(labels, rows);
        }
        return tally.result(n);
    }

    /** Right predictions of the class head, the distillation head and their average (DeiT's), batch by batch. */
    private static final class Tally {
        private final VisionTransformer model;
        private final int classes;
        private final boolean distilled;
        private final float[] cls, dist, avg;
        private long okCls, okDist, okAvg;

        Tally(VisionTransformer model) {
            this.model = model;
            this.classes = model.config().classes();
            this.distilled = model.config().distilled();
            int size = model.batch() * classes;
            this.cls = new float[size];
            this.dist = new float[size];
            this.avg = new float[size];
        }

        /** Scores the first {@code rows} outputs of the model's last forward against {@code labels}. */
        void add(int[] labels, int rows) {
            model.logits().copyTo(cls);
            okCls += Metrics.correct(cls, labels, classes, rows);
            if (distilled) {
                model.distLogits().copyTo(dist);
                okDist += Metrics.correct(dist, labels, classes, rows);
                for (int i = 0; i < avg.length; i++) avg[i] = 0.5f * (cls[i] + dist[i]);
                okAvg += Metrics.correct(avg, labels, classes, rows);
            }
        }

        Accuracy result(int n) {
            double a = (double) okCls / n;
            return distilled ? new Accuracy(a, (double) okDist / n, (double) okAvg / n, n)
                    : new Accuracy(a, Double.NaN, a, n);
        }
    }
}
