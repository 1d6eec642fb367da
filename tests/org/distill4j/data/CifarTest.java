package org.distill4j.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** CIFAR files written here, record by record as the format's description says, read back exactly. */
class CifarTest {
    @TempDir
    Path dir;

    /** Pixel k (0..3071, channel-major) of global image g: a pattern that differs per image, channel and position. */
    private static int pixel(int g, int k) {
        return (g * 37 + k * 11 + (k / 1024) * 101) & 0xff;
    }

    private static int label10(int g) {
        return (g * 3 + 1) % 10;
    }

    private static int fine(int g) {
        return (g * 13 + 5) % 100;
    }

    private static int coarse(int g) {
        return (g * 7) % 20; // deliberately unrelated to the fine label, so reading the wrong byte is caught
    }

    /** Writes {@code count} records of global images {@code first..} to {@code file}, 1 or 2 label bytes each. */
    private static void write(Path file, int first, int count, boolean cifar100) throws IOException {
        int rec = (cifar100 ? 2 : 1) + 3072;
        byte[] out = new byte[count * rec];
        for (int r = 0; r < count; r++) {
            int g = first + r, base = r * rec;
            if (cifar100) {
                out[base] = (byte) coarse(g);
                out[base + 1] = (byte) fine(g);
            } else {
                out[base] = (byte) label10(g);
            }
            int lb = cifar100 ? 2 : 1;
            for (int k = 0; k < 3072; k++) out[base + lb + k] = (byte) pixel(g, k);
        }
        Files.write(file, out);
    }

    /** CIFAR-10 with batches of 3, 2, 1, 2, 4 records (12 training images) and 3 test images (global 100..102). */
    private Path cifar10() throws IOException {
        int[] counts = {3, 2, 1, 2, 4};
        int g = 0;
        for (int f = 0; f < 5; f++) {
            write(dir.resolve("data_batch_" + (f + 1) + ".bin"), g, counts[f], false);
            g += counts[f];
        }
        write(dir.resolve("test_batch.bin"), 100, 3, false);
        return dir;
    }

    private static void assertImage(ImageSource src, int index, int g, Normalization norm) throws IOException {
        float[] got = new float[3072 + 5];
        got[3072 + 4] = 12345f;
        src.copyImage(index, got, 4);
        for (int k = 0; k < 3072; k++) {
            int c = k / 1024;
            double want = (pixel(g, k) / 255.0 - norm.mean()[c]) / norm.std()[c];
            double err = Math.abs(got[4 + k] - want);
            if (!(err <= 1e-6 * Math.max(1, Math.abs(want)))) {
                fail("image " + index + " value " + k + ": got " + got[4 + k] + ", want " + want);
            }
        }
        assertEquals(12345f, got[3072 + 4], "wrote past the image");
    }

    @Test
    void cifar10TrainAndTestReadBackExactlyAcrossBatchFiles() throws IOException {
        cifar10();
        assertEquals(Cifar.Kind.CIFAR10, Cifar.detect(dir));
        try (Cifar train = Cifar.open(dir, true); Cifar test = Cifar.open(dir, false)) {
            assertEquals(12, train.size());
            assertEquals(3, test.size());
            assertEquals(10, train.classes());
            assertEquals(3, train.channels());
            assertEquals(32, train.height());
            assertEquals(32, train.width());
            for (int i = 0; i < 12; i++) {
                assertEquals(label10(i), train.label(i), "label " + i);
                assertImage(train, i, i, Normalization.CIFAR10);
                byte[] raw = train.pixels(i);
                for (int k = 0; k < 3072; k++) assertEquals(pixel(i, k), raw[k] & 0xff);
            }
            for (int i = 0; i < 3; i++) {
                assertEquals(label10(100 + i), test.label(i));
                assertImage(test, i, 100 + i, Normalization.CIFAR10);
            }
            assertEquals(List.of("0", "1", "2", "3", "4", "5", "6", "7", "8", "9"), train.classNames());
            assertThrows(IndexOutOfBoundsException.class, () -> train.copyImage(12, new float[3072], 0));
            // Sample names (for a sample list): file and record, across the batch files of 3, 2, 1, 2, 4 records.
            List<String> names = new java.util.ArrayList<>();
            for (int i = 0; i < 12; i++) names.add(train.sampleName(i));
            assertEquals(List.of("data_batch_1.bin:0", "data_batch_1.bin:1", "data_batch_1.bin:2", "data_batch_2.bin:0",
                    "data_batch_2.bin:1", "data_batch_3.bin:0", "data_batch_4.bin:0", "data_batch_4.bin:1",
                    "data_batch_5.bin:0", "data_batch_5.bin:1", "data_batch_5.bin:2", "data_batch_5.bin:3"), names);
            assertEquals("test_batch.bin:2", test.sampleName(2));
            assertThrows(IndexOutOfBoundsException.class, () -> train.sampleName(12));
        }
    }

    @Test
    void cifar100UsesTheFineLabelAndItsNames() throws IOException {
        write(dir.resolve("train.bin"), 0, 7, true);
        write(dir.resolve("test.bin"), 50, 2, true);
        List<String> names = new ArrayList<>();
        for (int i = 0; i < 100; i++) names.add("class_" + i);
        Files.write(dir.resolve("fine_label_names.txt"), names);
        assertEquals(Cifar.Kind.CIFAR100, Cifar.detect(dir));
        Normalization norm = Normalization.uniform(3, 0.5f, 0.25f);
        try (Cifar train = Cifar.open(dir, Cifar.Kind.CIFAR100, true, norm);
             Cifar test = Cifar.open(dir, false)) {
            assertEquals(100, train.classes());
            assertEquals(7, train.size());
            for (int i = 0; i < 7; i++) {
                assertEquals(fine(i), train.label(i));
                assertImage(train, i, i, norm);
            }
            assertEquals(fine(51), test.label(1));
            assertImage(test, 1, 51, Normalization.CIFAR100);
            assertEquals(names, train.classNames());
        }
    }

    @Test
    void cifar10ClassNamesFromBatchesMeta() throws IOException {
        cifar10();
        List<String> names = List.of("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                "truck");
        Files.writeString(dir.resolve("batches.meta.txt"), String.join("\n", names) + "\n\n");
        try (Cifar train = Cifar.open(dir, true)) {
            assertEquals(names, train.classNames());
        }
        Files.writeString(dir.resolve("batches.meta.txt"), "airplane\nautomobile\n");
        DatasetException e = assertThrows(DatasetException.class, () -> Cifar.open(dir, true));
        assertTrue(e.getMessage().contains("batches.meta.txt") && e.getMessage().contains("2 class names"),
                e.getMessage());
    }

    @Test
    void concurrentReadsGiveTheSameImages() throws Exception {
        cifar10();
        try (Cifar train = Cifar.open(dir, true)) {
            ExecutorService pool = Executors.newFixedThreadPool(4);
            try {
                List<Future<float[]>> futures = new ArrayList<>();
                for (int rep = 0; rep < 8; rep++) {
                    for (int i = 0; i < train.size(); i++) {
                        int idx = (i * 5 + rep) % train.size();
                        futures.add(pool.submit(() -> {
                            float[] f = new float[3072];
                            train.copyImage(idx, f, 0);
                            return f;
                        }));
                    }
                }
                for (int rep = 0, k = 0; rep < 8; rep++) {
                    for (int i = 0; i < train.size(); i++, k++) {
                        int idx = (i * 5 + rep) % train.size();
                        float[] want = new float[3072];
                        train.copyImage(idx, want, 0);
                        assertArrayEquals(want, futures.get(k).get());
                    }
                }
            } finally {
                pool.shutdownNow();
            }
        }
    }

    @Test
    void badDirectoriesAndFilesAreNamed() throws IOException {
        assertNull(Cifar.detect(dir));
        DatasetException e = assertThrows(DatasetException.class, () -> Cifar.open(dir, true));
        assertTrue(e.getMessage().startsWith(dir.toString()) && e.getMessage().contains("not a CIFAR"), e.getMessage());

        cifar10();
        Files.delete(dir.resolve("data_batch_3.bin"));
        e = assertThrows(DatasetException.class, () -> Cifar.open(dir, true));
        assertTrue(e.getMessage().contains("data_batch_3.bin") && e.getMessage().contains("missing"), e.getMessage());

        write(dir.resolve("data_batch_3.bin"), 5, 1, false);
        Path b4 = dir.resolve("data_batch_4.bin");
        byte[] bytes = Files.readAllBytes(b4);
        Files.write(b4, java.util.Arrays.copyOf(bytes, bytes.length - 1));
        e = assertThrows(DatasetException.class, () -> Cifar.open(dir, true));
        assertTrue(e.getMessage().contains("data_batch_4.bin") && e.getMessage().contains("3073"), e.getMessage());

        bytes[3073] = 10; // label of the second record: outside CIFAR-10's 0..9
        Files.write(b4, bytes);
        e = assertThrows(DatasetException.class, () -> Cifar.open(dir, true));
        assertTrue(e.getMessage().contains("data_batch_4.bin") && e.getMessage().contains("record 1")
                && e.getMessage().contains("label 10"), e.getMessage());

        Files.write(b4, new byte[0]);
        e = assertThrows(DatasetException.class, () -> Cifar.open(dir, true));
        assertTrue(e.getMessage().contains("data_batch_4.bin"), e.getMessage());
    }

    @Test
    void streamsIntoBatchesWithTheRightLabels() throws IOException {
        cifar10();
        try (Cifar train = Cifar.open(dir, true);
             StreamLoader loader = StreamLoader.builder(train, 4).seed(3).workers(2).epochs(1).build()) {
            int seen = 0;
            while (loader.hasNext()) {
                BatchLoader.Batch b = loader.next();
                for (int i = 0; i < b.size(); i++) {
                    int g = b.indices()[i];
                    assertEquals(label10(g), b.labels()[i]);
                    int k = 2000;
                    double want = (pixel(g, k) / 255.0 - Normalization.CIFAR10.mean()[1]) / Normalization.CIFAR10.std()[1];
                    assertTrue(Math.abs(b.images()[i * 3072 + k] - want) <= 1e-6, "image " + g);
                    seen++;
                }
            }
            assertEquals(12, seen);
        }
    }
}
