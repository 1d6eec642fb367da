package org.distill4j.data;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * Fashion-MNIST (Xiao, Rasul, Vollgraf 2017): 60 000 training and 10 000 test images, 28×28 grey, 10 classes.
 *
 * <p>The files come from Debian's package {@code dataset-fashion-mnist}, which installs the four original IDX
 * files, gzip-compressed, in {@value #DEFAULT_DIR}: {@code train-images-idx3-ubyte.gz},
 * {@code train-labels-idx1-ubyte.gz}, {@code t10k-images-idx3-ubyte.gz}, {@code t10k-labels-idx1-ubyte.gz}. Any
 * directory with these files (compressed or not, e.g. the originals from zalandoresearch/fashion-mnist, or MNIST,
 * whose files have the same names) can be passed instead.
 *
 * <p>Pixels are normalised with the training set's statistics, mean {@value #MEAN} and standard deviation
 * {@value #STD} (of p/255 over all 60 000 × 784 training pixels; the values torchvision users quote), for both
 * splits — the test set must be normalised like the data the model was trained on.
 */
public final class FashionMnist {
    /** Where Debian's {@code dataset-fashion-mnist} installs the files. */
    public static final String DEFAULT_DIR = "/usr/share/datasets/fashion-mnist";
    /** Mean of the training pixels scaled to [0, 1]. */
    public static final float MEAN = 0.2860f;
    /** Standard deviation of the training pixels scaled to [0, 1]. */
    public static final float STD = 0.3530f;
    public static final int CLASSES = 10;
    /** Class names, by label. */
    public static final List<String> CLASS_NAMES = List.of("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot");

    private static final String[] FILES = {
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

    private FashionMnist() {}

    /** The training and test splits. */
    public record Split(Dataset train, Dataset test) {}

    /** The default directory, {@value #DEFAULT_DIR}. */
    public static Path defaultDir() {
        return Path.of(DEFAULT_DIR);
    }

    /** Whether {@code dir} holds all four files (compressed or not). */
    public static boolean isPresent(Path dir) {
        for (String f : FILES) {
            if (find(dir, f) == null) {
                return false;
            }
        }
        return true;
    }

    /** Loads both splits from {@value #DEFAULT_DIR}. */
    public static Split load() throws DatasetException {
        return load(defaultDir());
    }

    /** Loads both splits from {@code dir}. */
    public static Split load(Path dir) throws DatasetException {
        return new Split(loadTrain(dir), loadTest(dir));
    }

    /** The 60 000 training images. */
    public static Dataset loadTrain(Path dir) throws DatasetException {
        return load(dir, "train", FILES[0], FILES[1]);
    }

    /** The 10 000 test images. */
    public static Dataset loadTest(Path dir) throws DatasetException {
        return load(dir, "test", FILES[2], FILES[3]);
    }

    private static Dataset load(Path dir, String split, String imagesName, String labelsName)
            throws DatasetException {
        if (!Files.isDirectory(dir)) {
            throw new DatasetException(dir, "no such directory; install Fashion-MNIST with `apt-get install "
                    + "dataset-fashion-mnist` (files in " + DEFAULT_DIR + ") or pass a directory holding "
                    + imagesName + ".gz and its three siblings");
        }
        Path images = require(dir, imagesName);
        Path labels = require(dir, labelsName);
        Dataset d = Idx.read(images, labels, CLASSES, MEAN, STD);
        return new Dataset("fashion-mnist/" + split, d.images(), d.labels(), d.channels(), d.height(), d.width(),
                CLASSES, MEAN, STD);
    }

    private static Path require(Path dir, String name) throws DatasetException {
        Path p = find(dir, name);
        if (p == null) {
            throw new DatasetException(dir.resolve(name + ".gz"), "file not found (nor " + name + " uncompressed)");
        }
        return p;
    }

    private static Path find(Path dir, String name) {
        Path gz = dir.resolve(name + ".gz");
        if (Files.isRegularFile(gz)) {
            return gz;
        }
        Path plain = dir.resolve(name);
        return Files.isRegularFile(plain) ? plain : null;
    }
}
