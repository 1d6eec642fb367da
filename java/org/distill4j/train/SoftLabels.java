package org.distill4j.train;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import org.distill4j.data.Dataset;
import org.distill4j.io.Safetensors;
import org.distill4j.io.SafetensorsFormatException;
import org.distill4j.io.SafetensorsReader;
import org.distill4j.io.TensorData;
import org.distill4j.io.TensorInfo;
import org.distill4j.nn.VisionTransformer;

/**
 * A teacher's logits for every training image, computed once (when the images are not augmented, the teacher sees
 * the same inputs every epoch) and reused by later epochs and runs: a safetensors file with {@code logits} [N, C],
 * or with top-k, {@code topk_logprobs} [N, k] and {@code topk_classes} [N, k], where the mass outside the k classes is
 * spread evenly over the other C − k (each gets (1 − Σ top-k p) / (C − k)); then the stored logits are log-probabilities,
 * which the KL op softens with T exactly as logits (softmax(log p / T) = softmax(z / T) when nothing was dropped).
 * The metadata names the teacher file and the dataset, so a cache is never reused for another pair.
 */
public final class SoftLabels implements TrainingRun.TeacherLogits {
    private final float[] logits;
    private final int classes;
    private final String source;

    private SoftLabels(float[] logits, int classes, String source) {
        this.logits = logits;
        this.classes = classes;
        this.source = source;
    }

    /** Runs {@code teacher} over every image of {@code data} (no augmentation), in batches of its size. */
    public static SoftLabels compute(VisionTransformer teacher, Dataset data, String teacherName) {
        int b = teacher.batch(), c = teacher.config().classes(), size = data.imageSize(), n = data.size();
        float[] out = new float[n * c], images = new float[b * size], batch = new float[b * c];
        for (int start = 0; start < n; start += b) {
            int rows = Math.min(b, n - start);
            for (int r = 0; r < rows; r++) data.copyImage(start + r, images, r * size);
            if (rows < b) Arrays.fill(images, rows * size, b * size, data.black());
            teacher.forward(images);
            teacher.logits().copyTo(batch);
            System.arraycopy(batch, 0, out, start * c, rows * c);
        }
        return new SoftLabels(out, c, "soft labels computed once from " + teacherName);
    }

    /** Writes the logits (all classes when {@code topk} is 0 or &ge; C). */
    public void save(Path file, String teacherKey, String datasetKey, int topk) throws IOException {
        int n = logits.length / classes;
        Map<String, TensorData> t = new LinkedHashMap<>();
        Map<String, String> meta = new LinkedHashMap<>();
        meta.put("distill4j.kind", "soft-labels");
        meta.put("teacher", teacherKey);
        meta.put("dataset", datasetKey);
        if (topk <= 0 || topk >= classes) {
            t.put("logits", new TensorData(new long[] {n, classes}, logits));
        } else {
            float[] lp = new float[n * topk], cls = new float[n * topk];
            for (int i = 0; i < n; i++) {
                double max = Double.NEGATIVE_INFINITY, sum = 0;
                for (int c = 0; c < classes; c++) max = Math.max(max, logits[i * classes + c]);
                for (int c = 0; c < classes; c++) sum += Math.exp(logits[i * classes + c] - max);
                double lse = max + Math.log(sum);
                Integer[] order = new Integer[classes];
                for (int c = 0; c < classes; c++) order[c] = c;
                final int row = i;
                Arrays.sort(order, (a, b) -> Float.compare(logits[row * classes + b], logits[row * classes + a]));
                for (int k = 0; k < topk; k++) {
                    lp[i * topk + k] = (float) (logits[i * classes + order[k]] - lse);
                    cls[i * topk + k] = order[k];
                }
            }
            t.put("topk_logprobs", new TensorData(new long[] {n, topk}, lp));
            t.put("topk_classes", new TensorData(new long[] {n, topk}, cls));
        }
        Safetensors.write(file, t, meta);
    }

    /**
     * Loads a cache written by {@link #save} for this teacher and dataset, or returns null when the file is absent
     * or was made for another pair (the caller recomputes it). The shapes are checked on the header before anything
     * is read, so only the tensors expected, of the size expected, reach the Java heap.
     */
    public static SoftLabels load(Path file, String teacherKey, String datasetKey, int n, int classes)
            throws IOException {
        if (!java.nio.file.Files.exists(file)) return null;
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            Map<String, String> meta = reader.header().metadata();
            if (!teacherKey.equals(meta.get("teacher")) || !datasetKey.equals(meta.get("dataset"))) return null;
            Map<String, TensorInfo> tensors = reader.header().tensors();
            TensorInfo full = tensors.get("logits");
            if (full != null) {
                if (!Arrays.equals(full.shape(), new long[] {n, classes})) {
                    throw new SafetensorsFormatException(file, "logits " + Arrays.toString(full.shape())
                            + ", expected [" + n + ", " + classes + "]");
                }
                return new SoftLabels(reader.readFloats("logits"), classes, "soft labels from " + file);
            }
            TensorInfo lpInfo = tensors.get("topk_logprobs"), clsInfo = tensors.get("topk_classes");
            if (lpInfo == null || clsInfo == null || lpInfo.shape().length != 2 || lpInfo.shape()[0] != n
                    || !Arrays.equals(lpInfo.shape(), clsInfo.shape()) || lpInfo.shape()[1] >= classes) {
                throw new SafetensorsFormatException(file, "neither logits [" + n + ", " + classes
                        + "] nor top-k entries");
            }
            int k = (int) lpInfo.shape()[1];
            float[] lp = reader.readFloats("topk_logprobs"), cls = reader.readFloats("topk_classes");
            float[] out = new float[n * classes];
            for (int i = 0; i < n; i++) {
                double mass = 0;
                for (int j = 0; j < k; j++) mass += Math.exp(lp[i * k + j]);
                float rest = (float) Math.log(Math.max(1e-12, (1 - mass) / (classes - k)));
                Arrays.fill(out, i * classes, (i + 1) * classes, rest);
                for (int j = 0; j < k; j++) {
                    float cl = cls[i * k + j];
                    if (!(cl >= 0 && cl < classes) || cl != (int) cl) {
                        throw new SafetensorsFormatException(file, "class index " + cl + " out of range");
                    }
                    out[i * classes + (int) cl] = lp[i * k + j];
                }
            }
            return new SoftLabels(out, classes, "top-" + k + " soft labels from " + file);
        }
    }

    @Override
    public VisionTransformer model() {
        return null;
    }

    @Override
    public void copy(int[] indices, float[] out) {
        for (int r = 0; r < indices.length; r++) System.arraycopy(logits, indices[r] * classes, out, r * classes, classes);
    }

    @Override
    public String describe() {
        return source;
    }

    /** A teacher run on every batch (augmented inputs differ each epoch). */
    public static TrainingRun.TeacherLogits live(VisionTransformer teacher, String name) {
        return new TrainingRun.TeacherLogits() {
            @Override
            public VisionTransformer model() {
                return teacher;
            }

            @Override
            public void copy(int[] indices, float[] out) {
                throw new UnsupportedOperationException("a live teacher runs on the batch");
            }

            @Override
            public String describe() {
                return "teacher " + name + " run on every (augmented) batch";
            }
        };
    }
}
