package org.distill4j.experiments;

import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import javax.imageio.ImageIO;
import org.distill4j.data.FashionMnist;
import org.distill4j.data.Idx;

/**
 * Writes Fashion-MNIST (IDX files) out as an image folder of 8-bit grey PNG files, torchvision's layout, so an
 * experiment's images go through the decode path real data takes:
 *
 * <pre>
 *   OUT/train/0-t-shirt-top/00000.png ...   the first --train images of the training set
 *   OUT/val/9-ankle-boot/09999.png ...       the 10,000 test images
 * </pre>
 *
 * Class folders carry their index first, so the sorted names (how an image folder numbers its classes) give
 * Fashion-MNIST's own label numbers; file names are the image's index in its IDX file. The pixels are the IDX
 * bytes unchanged (PNG is lossless).
 *
 * <p>Usage: {@code ExportImageFolder [--data IDX_DIR] [--train N] OUT}
 */
public final class ExportImageFolder {
    private ExportImageFolder() {}

    public static void main(String[] args) throws IOException {
        Path data = FashionMnist.defaultDir();
        int train = 60000;
        Path out = null;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--data" -> data = Path.of(args[++i]);
                case "--train" -> train = Integer.parseInt(args[++i]);
                default -> out = Path.of(args[i]);
            }
        }
        if (out == null) throw new IllegalArgumentException("usage: ExportImageFolder [--data DIR] [--train N] OUT");
        if (Files.exists(out)) throw new IllegalArgumentException(out + " exists: give a new folder");
        int written = write(data.resolve("train-images-idx3-ubyte.gz"), data.resolve("train-labels-idx1-ubyte.gz"),
                train, out.resolve("train"));
        written += write(data.resolve("t10k-images-idx3-ubyte.gz"), data.resolve("t10k-labels-idx1-ubyte.gz"),
                Integer.MAX_VALUE, out.resolve("val"));
        System.out.println("wrote " + written + " PNG files under " + out);
    }

    private static int write(Path imagesFile, Path labelsFile, int limit, Path dir) throws IOException {
        Idx.Images images = Idx.readImages(imagesFile);
        int[] labels = Idx.readLabels(labelsFile);
        int n = Math.min(limit, images.count());
        int h = images.rows(), w = images.cols();
        Path[] classDirs = new Path[FashionMnist.CLASSES];
        for (int c = 0; c < classDirs.length; c++) {
            String name = FashionMnist.CLASS_NAMES.get(c).toLowerCase(Locale.ROOT).replaceAll("[^a-z]+", "-");
            classDirs[c] = Files.createDirectories(dir.resolve(c + "-" + name));
        }
        BufferedImage img = new BufferedImage(w, h, BufferedImage.TYPE_BYTE_GRAY);
        byte[] row = new byte[w];
        for (int i = 0; i < n; i++) {
            for (int y = 0; y < h; y++) {
                System.arraycopy(images.pixels(), (i * h + y) * w, row, 0, w);
                img.getRaster().setDataElements(0, y, w, 1, row);
            }
            ImageIO.write(img, "png", classDirs[labels[i]].resolve(String.format("%05d.png", i)).toFile());
        }
        return n;
    }
}
