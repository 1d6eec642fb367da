package org.distill4j.testing;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;
import java.util.zip.GZIPOutputStream;

/** IDX files (the MNIST format: magic, dims, unsigned bytes; gzip) written by tests. */
public final class IdxFiles {
    private IdxFiles() {}

    /** Writes one IDX file. */
    public static void write(Path file, int magic, int[] dims, byte[] data) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(4 + 4 * dims.length + data.length);
        b.putInt(magic);
        for (int d : dims) b.putInt(d);
        b.put(data);
        try (GZIPOutputStream out = new GZIPOutputStream(Files.newOutputStream(file))) {
            out.write(b.array());
        }
    }

    /**
     * Random images and labels (seeded by {@code n}) in Fashion-MNIST's four files in {@code dir} (created):
     * {@code n} training images of 28×28 and 64 test images, 10 classes.
     */
    public static Path randomFashionMnist(Path dir, int n) throws IOException {
        Path d = Files.createDirectories(dir);
        Random rng = new Random(n);
        for (String[] split : new String[][] {{"train", Integer.toString(n)}, {"t10k", "64"}}) {
            int m = Integer.parseInt(split[1]);
            byte[] images = new byte[m * 784], labels = new byte[m];
            rng.nextBytes(images);
            for (int i = 0; i < m; i++) labels[i] = (byte) rng.nextInt(10);
            write(d.resolve(split[0] + "-images-idx3-ubyte.gz"), 0x803, new int[] {m, 28, 28}, images);
            write(d.resolve(split[0] + "-labels-idx1-ubyte.gz"), 0x801, new int[] {m}, labels);
        }
        return d;
    }
}
