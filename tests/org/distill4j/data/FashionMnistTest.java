package org.distill4j.data;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class FashionMnistTest {
    private static final Path DIR = FashionMnist.defaultDir();

    private static void assumePresent() {
        assumeTrue(FashionMnist.isPresent(DIR), "Fashion-MNIST not installed in " + DIR
                + " (apt-get install dataset-fashion-mnist); skipping");
    }

    @Test
    void loadsBothSplitsWhenInstalled() throws IOException {
        assumePresent();
        FashionMnist.Split s = FashionMnist.load();
        check(s.train(), 60_000);
        check(s.test(), 10_000);
        // Balanced: 6000 / 1000 images per class.
        for (int c = 0; c < 10; c++) {
            assertEquals(6000, s.train().classCounts()[c], "train class " + c);
            assertEquals(1000, s.test().classCounts()[c], "test class " + c);
        }
        // The documented statistics are those of the training pixels.
        double sum = 0, sq = 0;
        for (float v : s.train().images()) {
            double p = v * FashionMnist.STD + FashionMnist.MEAN;
            sum += p;
            sq += p * p;
        }
        long count = s.train().images().length;
        double mean = sum / count;
        double std = Math.sqrt(sq / count - mean * mean);
        assertEquals(FashionMnist.MEAN, mean, 5e-4);
        assertEquals(FashionMnist.STD, std, 5e-4);
    }

    private static void check(Dataset d, int n) {
        assertEquals(n, d.size());
        assertEquals(1, d.channels());
        assertEquals(28, d.height());
        assertEquals(28, d.width());
        assertEquals(10, d.classes());
        assertEquals((long) n * 784, d.images().length);
        for (int label : d.labels()) {
            assertTrue(label >= 0 && label <= 9, "label " + label);
        }
        assertEquals(-FashionMnist.MEAN / FashionMnist.STD, d.black(), 1e-6);
    }

    @Test
    void missingDirectoryTellsHowToInstall(@TempDir Path tmp) {
        Path missing = tmp.resolve("nowhere");
        DatasetException e = assertThrows(DatasetException.class, () -> FashionMnist.load(missing));
        assertTrue(e.getMessage().contains(missing.toString()), e.getMessage());
        assertTrue(e.getMessage().contains("dataset-fashion-mnist"), e.getMessage());
    }

    @Test
    void missingFileIsNamed(@TempDir Path tmp) throws IOException {
        Files.write(tmp.resolve("train-images-idx3-ubyte.gz"), IdxTest.gzip(IdxTest.imagesFile(1, 28, 28,
                new byte[784])));
        assertFalse(FashionMnist.isPresent(tmp));
        DatasetException e = assertThrows(DatasetException.class, () -> FashionMnist.loadTrain(tmp));
        assertTrue(e.getMessage().contains("train-labels-idx1-ubyte"), e.getMessage());
        assertTrue(e.getMessage().contains("not found"), e.getMessage());
    }

    @Test
    void anyIdxDirectoryWithTheStandardNamesLoads(@TempDir Path tmp) throws IOException {
        // Uncompressed files are accepted too (the originals unpacked, or MNIST).
        Files.write(tmp.resolve("t10k-images-idx3-ubyte"), IdxTest.imagesFile(2, 28, 28, new byte[2 * 784]));
        Files.write(tmp.resolve("t10k-labels-idx1-ubyte.gz"), IdxTest.gzip(IdxTest.labelsFile(new byte[] {9, 0})));
        Dataset test = FashionMnist.loadTest(tmp);
        assertEquals(2, test.size());
        assertEquals(9, test.label(0));
        assertEquals("fashion-mnist/test", test.name());
    }
}
