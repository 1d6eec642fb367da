package org.distill4j.data;

import java.nio.file.Files;
import java.nio.file.Path;

/**
 * What a data directory holds, recognised by its files: an image folder root with {@code train/} and {@code val/}
 * (ImageNet's layout), CIFAR-10 or CIFAR-100 binaries, or IDX files (MNIST, Fashion-MNIST).
 */
public enum DataLayout {
    /** {@code dir/train/<class>/<image>} and {@code dir/val/<class>/<image>}: {@link ImageFolder}. */
    IMAGE_FOLDER,
    /** {@code data_batch_1..5.bin}, {@code test_batch.bin}: {@link Cifar}. */
    CIFAR10,
    /** {@code train.bin}, {@code test.bin}: {@link Cifar}. */
    CIFAR100,
    /** {@code train-images-idx3-ubyte[.gz]} and its three partners: {@link FashionMnist}. */
    IDX;

    /**
     * The layout of {@code dir}.
     *
     * @throws DatasetException naming the directory and the layouts it was checked against, when none fits
     */
    public static DataLayout detect(Path dir) throws DatasetException {
        if (!Files.isDirectory(dir)) throw new DatasetException(dir, "not a directory");
        Cifar.Kind cifar = Cifar.detect(dir);
        if (cifar != null) return cifar == Cifar.Kind.CIFAR10 ? CIFAR10 : CIFAR100;
        if (Files.isRegularFile(dir.resolve("train-images-idx3-ubyte"))
                || Files.isRegularFile(dir.resolve("train-images-idx3-ubyte.gz"))
                || Files.isRegularFile(dir.resolve("t10k-images-idx3-ubyte"))
                || Files.isRegularFile(dir.resolve("t10k-images-idx3-ubyte.gz"))) {
            return IDX;
        }
        boolean train = Files.isDirectory(dir.resolve("train")), val = Files.isDirectory(dir.resolve("val"));
        if (train && val) return IMAGE_FOLDER;
        String hint = train ? " (it has train/ but no val/)" : val ? " (it has val/ but no train/)" : "";
        for (String archive : new String[] {"cifar-10-batches-bin", "cifar-100-binary"}) {
            // What the CIFAR tarballs unpack to: the user most likely meant that folder.
            if (Files.isDirectory(dir.resolve(archive))) hint = " (did you mean " + dir.resolve(archive) + "?)";
        }
        throw new DatasetException(dir, "no dataset layout recognised" + hint + ": expected an image folder root with "
                + "train/ and val/, CIFAR-10 binaries (data_batch_1..5.bin, test_batch.bin), CIFAR-100 binaries "
                + "(train.bin, test.bin) or IDX files (train-images-idx3-ubyte[.gz], ...); for another layout give "
                + "--train-dir and --val-dir");
    }

    @Override
    public String toString() {
        return switch (this) {
            case IMAGE_FOLDER -> "image folder";
            case CIFAR10 -> "CIFAR-10";
            case CIFAR100 -> "CIFAR-100";
            case IDX -> "IDX";
        };
    }
}
