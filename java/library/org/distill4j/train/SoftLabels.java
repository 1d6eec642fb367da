package org.distill4j.train;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import org.distill4j.data.Augment;
import org.distill4j.data.Dataset;
import org.distill4j.data.ImageSource;
import org.distill4j.data.SampleList;
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
 * The metadata names the teacher and the dataset ({@link Dataset#digest}), so a cache is never reused for another
 * pair, and a training run refuses soft labels of other images ({@link #checkFor}). FKD's views of augmented images
 * ({@link #computeViews}) are stored the same way, with a leading views axis.
 */
public final class SoftLabels implements TrainingRun.TeacherLogits {
    private final float[] logits;
    private final int classes, images;
    private final String dataset, samples, source;  // one of dataset (pixel digest) and samples (list digest)
    private final int views;                          // > 0: logits of each augmented view, [views, images, classes]
    private final String augment;                     // the views' augmentation (Augment.toString), or null

    private SoftLabels(float[] logits, int classes, String dataset, String source) {
        this(logits, classes, dataset, null, source);
    }

    private SoftLabels(float[] logits, int classes, String dataset, String samples, String source) {
        this(logits, classes, dataset, samples, 0, null, source);
    }

    private SoftLabels(float[] logits, int classes, String dataset, String samples, int views, String augment,
            String source) {
        this.logits = logits;
        this.classes = classes;
        this.images = logits.length / classes / Math.max(1, views);
        this.dataset = dataset;
        this.samples = samples;
        this.views = views;
        this.augment = augment;
        this.source = source;
    }

    /** The metadata key of a logits file computed elsewhere: the {@link SampleList#digest} its rows follow. */
    public static final String SAMPLES_KEY = "distill4j.samples";

    /**
     * Runs {@code teacher} over every image of {@code data} (no augmentation), in batches of its size.
     *
     * @param teacherName how runs describe the teacher in their logs ("soft labels computed once from NAME"),
     *                    e.g. its file name
     */
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
        return new SoftLabels(out, c, data.digest(), "soft labels computed once from " + teacherName);
    }

    /**
     * FKD's offline cache that survives augmentation (Shen and Xing 2022): runs {@code teacher} over every fixed view
     * of every image of {@code data} — view v of image i is {@code augment} applied for epoch v, a pure function of
     * (seed, v, i), so a training run with the same augmentation replays exactly these views ({@link
     * TrainOptions#withAugmentViews}) and needs no teacher. {@code augment.views()} teacher passes over the data.
     *
     * @throws IllegalArgumentException when {@code augment} has no fixed views ({@link Augment#withViews})
     */
    public static SoftLabels computeViews(VisionTransformer teacher, Dataset data, Augment augment,
            String teacherName) {
        int views = augment.views();
        if (views <= 0 || augment.isIdentity()) {
            throw new IllegalArgumentException("views of an augmentation need one with fixed views (Augment.withViews),"
                    + " got " + augment);
        }
        int b = teacher.batch(), c = teacher.config().classes(), size = data.imageSize(), n = data.size();
        float[] out = new float[views * n * c], images = new float[b * size], batch = new float[b * c];
        for (int v = 0; v < views; v++) {
            for (int start = 0; start < n; start += b) {
                int rows = Math.min(b, n - start);
                for (int r = 0; r < rows; r++) augment.apply(data, start + r, v, images, r * size);
                if (rows < b) Arrays.fill(images, rows * size, b * size, data.black());
                teacher.forward(images);
                teacher.logits().copyTo(batch);
                System.arraycopy(batch, 0, out, (v * n + start) * c, rows * c);
            }
        }
        return new SoftLabels(out, c, data.digest(), null, views, augment.toString(), "teacher logits of " + views
                + " augmented views per image, computed once from " + teacherName);
    }

    /** Views per image (0: the logits of the unaugmented images). */
    public int views() {
        return views;
    }

    /**
     * Writes the logits (all classes when {@code topk} is 0 or &ge; C), with {@code teacherKey} (e.g. the teacher
     * file's SHA-256) and the dataset's digest in the metadata. Views are stored the same way, their tensors named
     * {@code view_logits} [views, N, C], or {@code view_topk_logprobs} and {@code view_topk_classes} [views, N, k]
     * (FKD stores its views' top-k too: at ImageNet's 1,000 classes, k = 10 is 1 % of the file).
     */
    public void save(Path file, String teacherKey, int topk) throws IOException {
        Map<String, TensorData> t = new LinkedHashMap<>();
        Map<String, String> meta = new LinkedHashMap<>();
        meta.put("distill4j.kind", "soft-labels");
        meta.put("teacher", teacherKey);
        meta.put("dataset", dataset);
        if (views > 0) meta.put("augment", augment);
        String prefix = views > 0 ? VIEW_PREFIX : "";
        long[] lead = views > 0 ? new long[] {views, images} : new long[] {images};
        if (topk <= 0 || topk >= classes) {
            t.put(prefix + "logits", new TensorData(append(lead, classes), logits));
        } else {
            int rows = logits.length / classes;
            float[] lp = new float[rows * topk], cls = new float[rows * topk];
            for (int i = 0; i < rows; i++) {
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
            t.put(prefix + "topk_logprobs", new TensorData(append(lead, topk), lp));
            t.put(prefix + "topk_classes", new TensorData(append(lead, topk), cls));
        }
        Safetensors.write(file, t, meta);
    }

    private static final String VIEW_PREFIX = "view_";

    private static long[] append(long[] lead, long last) {
        long[] shape = Arrays.copyOf(lead, lead.length + 1);
        shape[lead.length] = last;
        return shape;
    }

    /**
     * Loads a cache written by {@link #save} for this teacher and {@code data}, or returns null when the file is
     * absent or was made for another pair (the caller recomputes it). The shapes are checked on the header before
     * anything is read, so only the tensors expected, of the size expected, reach the Java heap.
     */
    public static SoftLabels load(Path file, String teacherKey, Dataset data) throws IOException {
        if (!java.nio.file.Files.exists(file)) return null;
        int n = data.size(), classes = data.classes();
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            Map<String, String> meta = reader.header().metadata();
            if (!teacherKey.equals(meta.get("teacher")) || !data.digest().equals(meta.get("dataset"))) return null;
            float[] out = readLogits(reader, file, "", new long[] {n}, classes);
            return new SoftLabels(out, classes, data.digest(), describe(reader, file, "", "soft labels"));
        }
    }

    /**
     * Loads a views cache written by {@link #save} for this teacher, {@code data} and {@code augment} (its
     * description, seed and view count), or returns null when the file is absent or was made for another triple.
     */
    public static SoftLabels loadViews(Path file, String teacherKey, Dataset data, Augment augment) throws IOException {
        if (!java.nio.file.Files.exists(file)) return null;
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            Map<String, String> meta = reader.header().metadata();
            if (!teacherKey.equals(meta.get("teacher")) || !data.digest().equals(meta.get("dataset"))
                    || !augment.toString().equals(meta.get("augment"))) {
                return null;
            }
            float[] logits = readLogits(reader, file, VIEW_PREFIX, new long[] {augment.views(), data.size()},
                    data.classes());
            return new SoftLabels(logits, data.classes(), data.digest(), null, augment.views(), augment.toString(),
                    describe(reader, file, VIEW_PREFIX, "teacher logits of " + augment.views()
                    + " augmented views per image"));
        }
    }

    /**
     * Teacher logits computed elsewhere for the images of {@code train} (the training set a run trains on, after any
     * limit), row i for image i of its {@link SampleList}: a safetensors file holding {@code logits} [N, C] (float32)
     * or the top-k pair {@code topk_logprobs}, {@code topk_classes} [N, k] as {@link #save} writes, with the list's
     * {@link SampleList#digest} as the metadata entry {@value #SAMPLES_KEY} ({@code ./distill4j dataset-index} writes
     * the list and prints its digest). Checked here, before any training: the digest against {@code train}'s own list
     * (same images, names, labels and order), the count, the classes, every value finite.
     *
     * @throws IllegalArgumentException naming what does not match
     * @throws IOException when the file cannot be read or is not safetensors
     */
    public static SoftLabels external(Path file, ImageSource train) throws IOException {
        SampleList list = SampleList.of(train);
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            String digest = reader.header().metadata().get(SAMPLES_KEY);
            if (digest == null) {
                throw new IllegalArgumentException(file + " has no " + SAMPLES_KEY + " metadata: write the digest of "
                        + "the sample list its rows follow (./distill4j dataset-index prints it) into the file's "
                        + "metadata");
            }
            if (!digest.equals(list.digest())) {
                throw new IllegalArgumentException(file + " follows the sample list " + abbrev(digest) + ", not the "
                        + "training set's (" + train.name() + ", " + list.size() + " images: " + abbrev(list.digest())
                        + "): its rows would be paired with other images");
            }
            float[] out = readLogits(reader, file, "", new long[] {list.size()}, train.classes());
            for (int i = 0; i < out.length; i++) {
                if (!Float.isFinite(out[i])) {
                    throw new IllegalArgumentException(file + ": image " + i / train.classes() + ", class "
                            + i % train.classes() + " has logit " + out[i] + " (every value must be finite)");
                }
            }
            return new SoftLabels(out, train.classes(), null, digest, describe(reader, file, "", "teacher logits"));
        }
    }

    private static String abbrev(String digest) {
        return digest.length() > 12 ? digest.substring(0, 12) + "…" : digest;
    }

    private static String describe(SafetensorsReader reader, Path file, String prefix, String what) {
        TensorInfo lp = reader.header().tensors().get(prefix + "topk_logprobs");
        return reader.header().tensors().containsKey(prefix + "logits") || lp == null ? what + " from " + file
                : "top-" + lp.shape()[lp.shape().length - 1] + " " + what + " from " + file;
    }

    /**
     * The logits [rows…, classes] from {@code prefix + "logits"}, or rebuilt from the top-k pair (shapes checked on
     * the header first); {@code lead} is the expected shape before the class axis ([N], or [views, N]).
     */
    private static float[] readLogits(SafetensorsReader reader, Path file, String prefix, long[] lead, int classes)
            throws IOException {
        Map<String, TensorInfo> tensors = reader.header().tensors();
        TensorInfo full = tensors.get(prefix + "logits");
        long[] want = append(lead, classes);
        if (full != null) {
            if (!Arrays.equals(full.shape(), want)) {
                throw new SafetensorsFormatException(file, prefix + "logits " + Arrays.toString(full.shape())
                        + ", expected " + Arrays.toString(want));
            }
            return reader.readFloats(prefix + "logits");
        }
        TensorInfo lpInfo = tensors.get(prefix + "topk_logprobs"), clsInfo = tensors.get(prefix + "topk_classes");
        if (lpInfo == null || clsInfo == null || lpInfo.shape().length != want.length
                || !Arrays.equals(Arrays.copyOf(lpInfo.shape(), lead.length), lead)
                || !Arrays.equals(lpInfo.shape(), clsInfo.shape()) || lpInfo.shape()[lead.length] >= classes) {
            throw new SafetensorsFormatException(file, "neither " + prefix + "logits " + Arrays.toString(want)
                    + " nor " + prefix + "topk_logprobs/" + prefix + "topk_classes " + Arrays.toString(lead)
                    + " + [k < " + classes + "]");
        }
        int k = (int) lpInfo.shape()[lead.length];
        float[] lp = reader.readFloats(prefix + "topk_logprobs"), cls = reader.readFloats(prefix + "topk_classes");
        int rows = lp.length / k;
        float[] out = new float[rows * classes];
        for (int i = 0; i < rows; i++) {
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
        return out;
    }

    /** Images covered. */
    public int images() {
        return images;
    }

    /** Classes per image. */
    public int classes() {
        return classes;
    }

    @Override
    public VisionTransformer model() {
        return null;
    }

    /**
     * Refuses a training set other than the one these logits were computed on (count, classes, {@link
     * Dataset#digest}), and augmentation: the logits are the teacher's on the unaugmented images, and paired with
     * cropped or flipped ones they would teach the student about images it never sees.
     */
    @Override
    public void checkFor(ImageSource train, TrainOptions options) {
        if (views > 0) {
            String now = options.augmentation().toString();
            if (options.mixup() != null || options.randomErasing() != null) {
                throw new IllegalArgumentException(source + " replay crops and flips; this run also "
                        + (options.mixup() != null ? "mixes" : "erases") + " images, which no stored view holds "
                        + "(train without Mixup/CutMix and random erasing, or run the teacher on every batch)");
            }
            if (!now.equals(augment)) {
                throw new IllegalArgumentException(source + " hold the views of " + augment + "; this run augments "
                        + "as " + now + " (the same seed, crop, flip and --augment-views are needed)");
            }
        } else if (options.augment() || options.mixup() != null || options.randomErasing() != null) {
            String what = options.augment() ? "augmentation (TrainOptions.withAugment(false))"
                    : options.mixup() != null ? "Mixup/CutMix" : "random erasing";
            throw new IllegalArgumentException(source + " hold the teacher's logits of unaugmented images, and this run "
                    + (options.augment() ? "augments them" : options.mixup() != null ? "mixes them (Mixup/CutMix)"
                    : "erases parts of them") + ": " + (samples != null ? "" : "run the teacher on every batch "
                    + "(SoftLabels.live(teacher, name)) or ") + "train without " + what);
        }
        if (train.classes() != classes) {
            throw new IllegalArgumentException(source + " have " + classes + " classes per image; the training set "
                    + train.name() + " has " + train.classes());
        }
        if (train.size() != images) {
            throw new IllegalArgumentException(source + " cover " + images + " images; the training set "
                    + train.name() + " has " + train.size() + " (compute them on the images the run trains on, "
                    + "after any limit: SoftLabels.compute(teacher, trainingSet, name))");
        }
        if (samples != null) {  // computed elsewhere: tied to the images by their sample list, streamed or not
            String own = SampleList.of(train).digest();
            if (!own.equals(samples)) {
                throw new IllegalArgumentException(source + " follow the sample list " + abbrev(samples) + ", not the "
                        + "training set's (" + train.name() + ": " + abbrev(own) + ")");
            }
            return;
        }
        if (!(train instanceof Dataset d)) {
            // The digest that ties logits to images covers every image value: it would decode the whole set.
            throw new IllegalArgumentException(source + " can only be checked against an in-memory dataset; the "
                    + "training set " + train.name() + " is streamed: run the teacher on every batch "
                    + "(SoftLabels.live(teacher, name))");
        }
        if (!d.digest().equals(dataset)) {
            throw new IllegalArgumentException(source + " were computed on other images (dataset digest "
                    + dataset.substring(0, 12) + "…) than the training set " + train.name() + " ("
                    + d.digest().substring(0, 12) + "…), though of the same count");
        }
    }

    /** Writes the stored logits of images {@code indices} (of view 0 when there are views) into {@code out}. */
    public void copy(int[] indices, float[] out) {
        copyView(0, indices, out);
    }

    private void copyView(int view, int[] indices, float[] out) {
        if (out.length != indices.length * classes) {
            throw new IllegalArgumentException("out holds " + out.length + " floats; " + indices.length + " images of "
                    + classes + " classes need " + indices.length * classes);
        }
        for (int r = 0; r < indices.length; r++) {
            if (indices[r] < 0 || indices[r] >= images) {
                throw new IndexOutOfBoundsException("image " + indices[r] + " of soft labels for " + images + " images");
            }
            System.arraycopy(logits, (view * images + indices[r]) * classes, out, r * classes, classes);
        }
    }

    /** The stored logits of the view epoch {@code epoch} shows (the only ones when there are no views). */
    @Override
    public void logits(float[] images, int[] indices, int epoch, float[] out) {
        copyView(views > 0 ? Math.floorMod(epoch, views) : 0, indices, out);
    }

    @Override
    public String describe() {
        return source;
    }

    /** A teacher run on every batch (augmented inputs differ each epoch). */
    public static TrainingRun.TeacherLogits live(VisionTransformer teacher, String name) {
        java.util.Objects.requireNonNull(teacher, "teacher");
        return new TrainingRun.TeacherLogits() {
            @Override
            public VisionTransformer model() {
                return teacher;
            }

            @Override
            public void checkFor(ImageSource train, TrainOptions options) {
                if (teacher.config().classes() != train.classes()) {
                    throw new IllegalArgumentException("the teacher " + name + " predicts " + teacher.config().classes()
                            + " classes; the training set " + train.name() + " has " + train.classes());
                }
            }

            @Override
            public String describe() {
                return "teacher " + name + " run on every (augmented) batch";
            }
        };
    }
}
