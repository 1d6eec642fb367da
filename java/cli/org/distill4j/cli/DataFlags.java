package org.distill4j.cli;

import java.nio.file.Path;
import org.distill4j.data.FashionMnist;
import picocli.CommandLine.Option;

/** Where the data is and how images are decoded (picocli mixin of train, distill and eval). */
final class DataFlags {
    @Option(names = "--data", paramLabel = "DIR", description = "dataset directory, recognised by its layout: an image "
            + "folder root with train/ and val/, CIFAR-10/100 binaries, or IDX files (default "
            + FashionMnist.DEFAULT_DIR + ")")
    Path data;

    @Option(names = "--train-dir", paramLabel = "DIR", description = "training image folder (root/<class>/<image>), "
            + "with --val-dir, for layouts --data does not recognise")
    Path trainDir;

    @Option(names = "--val-dir", paramLabel = "DIR", description = "validation image folder, with --train-dir")
    Path valDir;

    @Option(names = "--workers", defaultValue = "2", description = "image decoding threads (default ${DEFAULT-VALUE})")
    int workers;

    @Option(names = "--skip-bad-images", description = "leave out images that cannot be decoded (each is logged) "
            + "instead of stopping")
    boolean skipBadImages;

    @Option(names = "--mean", split = ",", paramLabel = "M", description = "per-channel normalisation mean of CIFAR or "
            + "image folders, comma-separated (default: CIFAR's own, ImageNet's for RGB folders, 0.5 for grey)")
    float[] mean;

    @Option(names = "--std", split = ",", paramLabel = "S", description = "per-channel normalisation std, with --mean")
    float[] std;

    @Option(names = "--crop-pct", defaultValue = "1", description = "image folders: resize the shorter side to "
            + "size/crop-pct, then crop the centre (timm's eval; 0.875 for DeiT) (default ${DEFAULT-VALUE})")
    double cropPct;

    DataSets.Request request() {
        return new DataSets.Request(data, trainDir, valDir, workers, skipBadImages, mean, std, cropPct);
    }
}
