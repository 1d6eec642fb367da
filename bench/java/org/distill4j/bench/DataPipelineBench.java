package org.distill4j.bench;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Comparator;
import java.util.Locale;
import java.util.stream.Stream;
import org.distill4j.data.Augment;
import org.distill4j.data.ImageDecoder;
import org.distill4j.data.ImageFolder;
import org.distill4j.data.Normalization;
import org.distill4j.data.RandomResizedCrop;
import org.distill4j.data.StreamLoader;

/**
 * Images/s of the whole streamed train pipeline, as a training run uses it: {@link ImageFolder} decoding (OpenCV's
 * libjpeg-turbo when {@code org.bytedeco:opencv} is on the classpath, else JDK ImageIO: the first line says which),
 * per-channel normalisation, batches of 64 filled by {@link StreamLoader} workers, for 1 and 2 workers, with
 * either augmentation: resize of the shorter side and centre crop to 224×224, then random crop (pad 4) and flip; or
 * DeiT's random resized crop cut from the decoded image and resized to 224×224, then flip. Compare with the training
 * step's images/s ({@code distill4j bench train-step}, same machine) to see which one bounds a run.
 *
 * <p>The files: {@code count} JPEGs in an ImageFolder of two classes, written once into a temporary directory
 * (quality 0.9, smooth gradients plus noise) at 224×224 (decode only) and at 500×375, about the size of an ImageNet
 * photo (decode + resize); they are read from the page cache. Neither a backend nor libtorch is needed.
 *
 * <pre>{@code java -cp <library classes>:<bench classes> org.distill4j.bench.DataPipelineBench [count] [seconds]}</pre>
 */
public final class DataPipelineBench {
    private static final int BATCH = 64;

    private DataPipelineBench() {}

    public static void main(String[] args) throws Exception {
        int count = args.length > 0 ? Integer.parseInt(args[0]) : 256;
        double seconds = args.length > 1 ? Double.parseDouble(args[1]) : 6;
        if (count < 2 * BATCH) throw new IllegalArgumentException("count must be at least " + 2 * BATCH);
        System.out.printf(Locale.ROOT, "%d JPEGs per size, batches of %d, JPEG decoded by %s, %s %s, %d CPUs%n",
                count, BATCH, ImageDecoder.Library.best().describe(), System.getProperty("java.vm.name"),
                Runtime.version(), Runtime.getRuntime().availableProcessors());
        int[][] sizes = {{224, 224}, {500, 375}};
        Path dir = Files.createTempDirectory("pipeline-bench");
        try {
            for (int[] size : sizes) {
                Path root = dir.resolve(size[0] + "x" + size[1]);
                for (int c = 0; c < 2; c++) DecodeBench.write(Files.createDirectories(root.resolve("class" + c)),
                        count / 2, size[0], size[1]);
                ImageFolder folder = ImageFolder.open(root, 224, 3, Normalization.IMAGENET);
                Augment[] augments = {new Augment(1, 4, true),
                    Augment.resizedCrop(1, RandomResizedCrop.standard(1), true)};
                for (Augment augment : augments) {
                    for (int workers = 1; workers <= 2; workers++) {
                        double[] rates = new double[3];
                        for (int r = 0; r < rates.length; r++) {
                            rates[r] = imagesPerSecond(folder, augment, workers, seconds / 3);
                        }
                        Arrays.sort(rates);
                        System.out.printf(Locale.ROOT, "%dx%d JPEG -> 224x224, %s, %d worker%s: %6.0f images/s "
                                + "(median of 3; %.0f, %.0f)%n", size[0], size[1], augment.resizedCrop() != null
                                ? "resized crop" : "pad-4 crop", workers, workers == 1 ? " " : "s", rates[1], rates[0],
                                rates[2]);
                    }
                }
            }
        } finally {
            try (Stream<Path> all = Files.walk(dir)) {
                for (Path p : (Iterable<Path>) all.sorted(Comparator.reverseOrder())::iterator) Files.delete(p);
            }
        }
    }

    /** Batches taken for {@code seconds} (after the first, which includes the workers' start) divided by the time. */
    private static double imagesPerSecond(ImageFolder folder, Augment augment, int workers, double seconds)
            throws IOException {
        try (StreamLoader loader = StreamLoader.builder(folder, BATCH).seed(1).augment(augment)
                .workers(workers).build()) {
            loader.next();
            long t0 = System.nanoTime(), images = 0;
            while (System.nanoTime() - t0 < seconds * 1e9) {
                loader.next();
                images += BATCH;
            }
            return images / ((System.nanoTime() - t0) / 1e9);
        }
    }
}
