package org.distill4j.cli;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import org.distill4j.data.Cifar;
import org.distill4j.data.DataLayout;
import org.distill4j.data.Dataset;
import org.distill4j.data.FashionMnist;
import org.distill4j.data.ImageFolder;
import org.distill4j.data.ImageSource;
import org.distill4j.data.Normalization;
import org.distill4j.data.StreamLoader;
import org.distill4j.nn.VitConfig;

/**
 * The data of train, distill and eval: {@code --data DIR} of any {@link DataLayout}, or {@code --train-dir} and
 * {@code --val-dir} image folders. CIFAR and image folders are decoded on {@code --workers} threads into the
 * in-memory {@link Dataset} the trainer takes today (a heap check first); the streamed {@link StreamLoader} path is
 * the library's, not yet the trainer's.
 */
final class DataSets {
    private DataSets() {}

    /** Where the data comes from and how images are prepared. */
    record Request(Path data, Path trainDir, Path valDir, int workers, boolean skipBadImages, float[] mean,
            float[] std, double cropPct) {}

    /** The splits, their class names (class i is the i-th), and a description for logs. */
    record Loaded(Dataset train, Dataset test, List<String> classNames, Path root, String description) {
        /** Writes {@code class_index.json} into a run's output directory. */
        void writeClassIndex(Path dir) throws IOException {
            ImageFolder.writeClassIndex(dir.resolve("class_index.json"), root, classNames);
        }
    }

    /** The layout {@code request} names, before anything is read: for a one-line error up front. */
    static DataLayout layout(Request r) throws IOException {
        if (r.trainDir() != null || r.valDir() != null) {
            if (r.data() != null) throw new IllegalArgumentException("--data and --train-dir/--val-dir both name the data: give one");
            if (r.trainDir() == null || r.valDir() == null) {
                throw new IllegalArgumentException("--train-dir and --val-dir go together (image folder roots)");
            }
            return DataLayout.IMAGE_FOLDER;
        }
        return DataLayout.detect(r.data() != null ? r.data() : FashionMnist.defaultDir());
    }

    /**
     * Loads the data for {@code model} ({@code wantTrain}: the training split too; otherwise only the test split,
     * returned as both), at most {@code trainLimit}/{@code testLimit} images (0: all).
     */
    static Loaded load(Request r, VitConfig model, boolean wantTrain, int trainLimit, int testLimit, PrintStream log)
            throws IOException {
        if (r.workers() < 1) throw new IllegalArgumentException("--workers must be >= 1, got " + r.workers());
        DataLayout layout = layout(r);
        Path dir = r.data() != null ? r.data() : FashionMnist.defaultDir();
        Loaded loaded = switch (layout) {
            case IDX -> {
                if (r.mean() != null || r.std() != null) {
                    throw new IllegalArgumentException("--mean/--std apply to CIFAR and image folders; IDX data is "
                            + "normalised with its own statistics");
                }
                Dataset test = FashionMnist.loadTest(dir);
                Dataset train = wantTrain ? FashionMnist.loadTrain(dir) : test;
                yield new Loaded(train, test, null, dir, "IDX " + dir);
            }
            case CIFAR10, CIFAR100 -> {
                Cifar.Kind kind = layout == DataLayout.CIFAR10 ? Cifar.Kind.CIFAR10 : Cifar.Kind.CIFAR100;
                Normalization norm = normalization(r, 3, kind.normalization());
                try (Cifar test = Cifar.open(dir, kind, false, norm);
                     Cifar train = wantTrain ? Cifar.open(dir, kind, true, norm) : null) {
                    checkShape(model, test, dir);
                    yield materialize(train, test, r, trainLimit, testLimit, test.classNames(), dir,
                            kind.toString().toLowerCase(Locale.ROOT) + " " + dir, log);
                }
            }
            case IMAGE_FOLDER -> {
                Path train = r.trainDir() != null ? r.trainDir() : dir.resolve("train");
                Path val = r.valDir() != null ? r.valDir() : dir.resolve("val");
                int c = model.channels();
                Normalization norm = normalization(r, c, c == 3 ? Normalization.IMAGENET
                        : Normalization.uniform(1, 0.5f, 0.5f));
                ImageFolder.Split split = ImageFolder.openSplit(train, val, model.imageSize(), c, norm, r.cropPct());
                for (ImageFolder f : List.of(split.train(), split.val())) {
                    if (f.skippedFiles() > 0) {
                        log.println(f.root() + ": skipped " + f.skippedFiles() + " files that are not .jpg/.jpeg/.png");
                    }
                }
                yield materialize(wantTrain ? split.train() : null, split.val(), r, trainLimit, testLimit,
                        split.train().classNames(), train, "image folders " + train + ", " + val + " (" + norm + ")",
                        log);
            }
        };
        return loaded;
    }

    private static Normalization normalization(Request r, int channels, Normalization fallback) {
        if (r.mean() == null && r.std() == null) return fallback;
        if (r.mean() == null || r.std() == null) throw new IllegalArgumentException("--mean and --std go together");
        if (r.mean().length != channels || r.std().length != channels) {
            throw new IllegalArgumentException("--mean/--std need " + channels + " values (one per channel), got "
                    + r.mean().length + " and " + r.std().length);
        }
        return new Normalization(r.mean(), r.std());
    }

    private static void checkShape(VitConfig model, ImageSource data, Path dir) {
        if (model.imageSize() != data.height() || model.imageSize() != data.width()
                || model.channels() != data.channels()) {
            throw new IllegalArgumentException("model " + model.name() + " takes " + model.imageSize() + "×"
                    + model.imageSize() + " images of " + model.channels() + " channel(s); " + dir + " holds "
                    + data.height() + "×" + data.width() + " of " + data.channels() + " (choose a preset of that shape, "
                    + "e.g. cifar-student/cifar-teacher for 32×32 RGB)");
        }
    }

    /** Checks an IDX (or any in-memory) dataset's image shape against {@code model}, one line. */
    static void checkShape(VitConfig model, Loaded data) {
        checkShape(model, data.test(), data.root());
    }

    private static Loaded materialize(ImageSource train, ImageSource test, Request r, int trainLimit, int testLimit,
            List<String> classNames, Path root, String description, PrintStream log) throws IOException {
        int nTrain = train == null ? 0 : limit(train.size(), trainLimit);
        int nTest = limit(test.size(), testLimit);
        long bytes = ((long) nTrain + nTest) * test.imageSize() * Float.BYTES;
        Runtime rt = Runtime.getRuntime();
        long free = rt.maxMemory() - (rt.totalMemory() - rt.freeMemory());
        if (bytes > free * 0.8) {
            throw new IllegalArgumentException(description + ": " + (nTrain + nTest) + " images of " + test.channels()
                    + "×" + test.height() + "×" + test.width() + " need " + (bytes >> 20) + " MiB in memory, more than "
                    + "this JVM has free (" + (free >> 20) + " MiB); use --train-limit/--test-limit or a larger -Xmx");
        }
        PrintStream bad = r.skipBadImages() ? log : null;
        long t0 = System.nanoTime();
        Dataset testSet = StreamLoader.materialize(test, r.workers(), nTest, bad);
        Dataset trainSet = train == null ? testSet : StreamLoader.materialize(train, r.workers(), nTrain, bad);
        log.println(String.format(Locale.ROOT, "%s: decoded %d training and %d test images in %.1f s on %d worker(s)",
                description, train == null ? 0 : trainSet.size(), testSet.size(), (System.nanoTime() - t0) / 1e9,
                r.workers()));
        if (r.skipBadImages() && (trainSet.size() < nTrain || testSet.size() < nTest)) {
            log.println(description + ": skipped " + (nTrain - (train == null ? 0 : trainSet.size()) + nTest
                    - testSet.size()) + " bad images (--skip-bad-images)");
        }
        return new Loaded(trainSet, testSet, classNames, root, description);
    }

    private static int limit(int size, int limit) {
        return limit > 0 && limit < size ? limit : size;
    }

    /** The preset adapted to the data's class count (a new model's head), said once in the log when it changes. */
    static VitConfig withDataClasses(VitConfig config, Loaded data, String option, PrintStream log) {
        int classes = data.test().classes();
        if (config.classes() == classes) return config;
        log.println(option + " " + config.name() + ": " + classes + " classes, from the data (the preset has "
                + config.classes() + ")");
        return config.withClasses(classes);
    }
}
