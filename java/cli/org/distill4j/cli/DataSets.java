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
import org.distill4j.data.ImageDecoder;
import org.distill4j.data.ImageFolder;
import org.distill4j.data.ImageSource;
import org.distill4j.data.Normalization;
import org.distill4j.nn.VitConfig;

/**
 * The data of train, distill and eval: {@code --data DIR} of any {@link DataLayout}, or {@code --train-dir} and
 * {@code --val-dir} image folders. IDX data is loaded into memory as before; CIFAR and image folders are streamed
 * (read and decoded on {@code --workers} threads while the model trains, {@link org.distill4j.data.StreamLoader}).
 */
final class DataSets {
    private DataSets() {}

    /** Where the data comes from and how images are prepared. */
    record Request(Path data, Path trainDir, Path valDir, int workers, boolean skipBadImages, float[] mean,
            float[] std, double cropPct) {}

    /** The splits, their class names (class i is the i-th), and a description for logs. */
    record Loaded(ImageSource train, ImageSource test, List<String> classNames, Path root, String description) {
        /** Writes {@code class_index.json} into a run's output directory. */
        void writeClassIndex(Path dir) throws IOException {
            ImageFolder.writeClassIndex(dir.resolve(OutputDirectory.CLASS_INDEX), root, classNames);
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
     * Opens the data for {@code model} ({@code wantTrain}: the training split too; otherwise only the test split,
     * returned as both); IDX files are read whole, CIFAR and image folders only listed (their labels read).
     */
    static Loaded load(Request r, VitConfig model, boolean wantTrain, PrintStream log) throws IOException {
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
                // Left open for the run (read-only file channels): the process ends with the command.
                Cifar test = Cifar.open(dir, kind, false, norm);
                Cifar train = wantTrain ? Cifar.open(dir, kind, true, norm) : test;
                checkShape(model, test, dir);
                yield new Loaded(train, test, test.classNames(), dir, kind.toString().toLowerCase(Locale.ROOT)
                        + " " + dir + " (" + train.size() + " training, " + test.size() + " test images, streamed)");
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
                yield new Loaded(split.train(), split.val(), split.train().classNames(), train, "image folders "
                        + train + " (" + split.train().size() + " images), " + val + " (" + split.val().size()
                        + " images), " + norm + ", streamed, JPEG decoded by "
                        + ImageDecoder.Library.best().describe());
            }
        };
        log.println("data: " + loaded.description());
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

    /** The preset adapted to the data's class count (a new model's head), said once in the log when it changes. */
    static VitConfig withDataClasses(VitConfig config, Loaded data, String option, PrintStream log) {
        int classes = data.test().classes();
        if (config.classes() == classes) return config;
        log.println(option + " " + config.name() + ": " + classes + " classes, from the data (the preset has "
                + config.classes() + ")");
        return config.withClasses(classes);
    }
}
