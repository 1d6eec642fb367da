package org.distill4j.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.zip.GZIPOutputStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** IDX files built byte by byte from the format description (big-endian magic, sizes, then unsigned bytes). */
class IdxTest {
    @TempDir
    Path dir;

    /** Magic 0x00000803, then n, rows, cols as big-endian int32, then the pixels row-major. */
    static byte[] imagesFile(int n, int rows, int cols, byte[] pixels) {
        ByteBuffer b = ByteBuffer.allocate(16 + pixels.length); // ByteBuffer is big-endian by default
        b.putInt(0x00000803).putInt(n).putInt(rows).putInt(cols).put(pixels);
        return b.array();
    }

    /** Magic 0x00000801, then n, then the labels. */
    static byte[] labelsFile(byte[] labels) {
        ByteBuffer b = ByteBuffer.allocate(8 + labels.length);
        b.putInt(0x00000801).putInt(labels.length).put(labels);
        return b.array();
    }

    static byte[] gzip(byte[] data) throws IOException {
        ByteArrayOutputStream bos = new ByteArrayOutputStream();
        try (GZIPOutputStream gz = new GZIPOutputStream(bos)) {
            gz.write(data);
        }
        return bos.toByteArray();
    }

    private Path write(String name, byte[] bytes) throws IOException {
        Path p = dir.resolve(name);
        Files.write(p, bytes);
        return p;
    }

    private static byte[] pixels(int count) {
        byte[] p = new byte[count];
        for (int i = 0; i < count; i++) {
            p[i] = (byte) (i * 37 + 11); // covers values above 127: they must read as unsigned
        }
        return p;
    }

    @ParameterizedTest(name = "gzip={0}")
    @ValueSource(booleans = {false, true})
    void imagesAndLabelsRoundTrip(boolean compressed) throws IOException {
        int n = 3, rows = 4, cols = 5;
        byte[] px = pixels(n * rows * cols);
        byte[] lab = {2, 0, (byte) 200};
        byte[] img = imagesFile(n, rows, cols, px);
        byte[] lbl = labelsFile(lab);
        // The name does not decide compression: the magic bytes do.
        Path ip = write("images.bin", compressed ? gzip(img) : img);
        Path lp = write("labels.bin", compressed ? gzip(lbl) : lbl);

        Idx.Images images = Idx.readImages(ip);
        assertEquals(n, images.count());
        assertEquals(rows, images.rows());
        assertEquals(cols, images.cols());
        assertArrayEquals(px, images.pixels());
        assertEquals(px[(2 * rows + 3) * cols + 1] & 0xff, images.pixel(2, 3, 1));
        assertEquals(4 * 37 + 11, images.pixel(0, 0, 4), "bytes above 127 read as unsigned");
        assertArrayEquals(new int[] {2, 0, 200}, Idx.readLabels(lp));
    }

    @Test
    void readNormalisesIntoADataset() throws IOException {
        byte[] px = {0, (byte) 255, (byte) 128, 64};
        Path ip = write("i", gzip(imagesFile(1, 2, 2, px)));
        Path lp = write("l", labelsFile(new byte[] {7}));
        Dataset d = Idx.read(ip, lp, 10, 0.5f, 0.25f);
        assertEquals(1, d.size());
        assertEquals(1, d.channels());
        assertEquals(2, d.height());
        assertEquals(2, d.width());
        assertEquals(7, d.label(0));
        float[] expected = {(0 - 0.5f) / 0.25f, (1 - 0.5f) / 0.25f, (128 / 255f - 0.5f) / 0.25f,
            (64 / 255f - 0.5f) / 0.25f};
        assertArrayEquals(expected, d.images(), 1e-6f);
        assertEquals(-2f, d.black(), 1e-6f);
    }

    @Test
    void emptyFilesOfZeroItemsAreValid() throws IOException {
        Path ip = write("i", imagesFile(0, 28, 28, new byte[0]));
        assertEquals(0, Idx.readImages(ip).count());
        assertEquals(0, Idx.readLabels(write("l", labelsFile(new byte[0]))).length);
    }

    private DatasetException imagesFails(byte[] bytes) throws IOException {
        Path p = write("bad-images", bytes);
        DatasetException e = assertThrows(DatasetException.class, () -> Idx.readImages(p));
        assertTrue(e.getMessage().startsWith(p.toString()), "message names the file: " + e.getMessage());
        return e;
    }

    private static void assertMentions(Exception e, String... words) {
        for (String w : words) {
            assertTrue(e.getMessage().contains(w), "'" + w + "' in: " + e.getMessage());
        }
    }

    @Test
    void missingFileIsNamed() {
        Path p = dir.resolve("no-such-images.gz");
        DatasetException e = assertThrows(DatasetException.class, () -> Idx.readImages(p));
        assertMentions(e, p.toString(), "not found");
        e = assertThrows(DatasetException.class, () -> Idx.readLabels(p));
        assertMentions(e, p.toString(), "not found");
    }

    @Test
    void directoryInsteadOfFile() {
        DatasetException e = assertThrows(DatasetException.class, () -> Idx.readImages(dir));
        assertMentions(e, dir.toString(), "directory");
    }

    @Test
    void wrongMagicSaysWhatWasFound() throws IOException {
        byte[] bad = imagesFile(1, 1, 1, new byte[] {1});
        bad[3] = 0x04; // four dimensions
        assertMentions(imagesFails(bad), "wrong magic", "0x00000804", "0x00000803");

        byte[] floats = imagesFile(1, 1, 1, new byte[] {1});
        floats[2] = 0x0d; // IDX type float
        assertMentions(imagesFails(floats), "0x0d", "not unsigned byte");

        assertMentions(imagesFails("PK\u0003\u0004 a zip, not idx".getBytes()), "wrong magic", "not an IDX file");
    }

    @Test
    void swappedImagesAndLabelsAreRecognised() throws IOException {
        Path labels = write("labels", labelsFile(new byte[] {1, 2}));
        DatasetException e = assertThrows(DatasetException.class, () -> Idx.readImages(labels));
        assertMentions(e, "labels file", "swapped");
        Path images = write("images", gzip(imagesFile(1, 1, 1, new byte[] {3})));
        e = assertThrows(DatasetException.class, () -> Idx.readLabels(images));
        assertMentions(e, "images file", "swapped");
    }

    @Test
    void truncatedHeader() throws IOException {
        byte[] full = imagesFile(2, 3, 3, pixels(18));
        assertMentions(imagesFails(Arrays.copyOf(full, 10)), "truncated header", "row count");
        assertMentions(imagesFails(new byte[0]), "truncated header", "magic");
    }

    @Test
    void truncatedPixelsPlainAndGzip() throws IOException {
        byte[] full = imagesFile(2, 3, 3, pixels(18));
        DatasetException plain = imagesFails(Arrays.copyOf(full, full.length - 5));
        assertMentions(plain, "truncated", "2 images of 3×3", "18 bytes", "only 13");

        // A gzip stream cut short: the decompressor hits the end of its input.
        byte[] gz = gzip(imagesFile(50, 28, 28, pixels(50 * 28 * 28)));
        DatasetException cut = imagesFails(Arrays.copyOf(gz, gz.length / 2));
        assertMentions(cut, "truncated");
        // A complete gzip stream whose content is short.
        assertMentions(imagesFails(gzip(Arrays.copyOf(full, full.length - 1))), "truncated", "only 17");
    }

    @Test
    void trailingBytesAreRejected() throws IOException {
        byte[] full = imagesFile(1, 2, 2, pixels(4));
        assertMentions(imagesFails(Arrays.copyOf(full, full.length + 3)), "unexpected bytes after");
    }

    @Test
    void corruptGzip() throws IOException {
        byte[] gz = gzip(imagesFile(4, 8, 8, pixels(256)));
        for (int i = 12; i < gz.length - 8; i++) {
            gz[i] ^= (byte) 0x5a;
        }
        DatasetException e = imagesFails(gz);
        assertTrue(e.getMessage().contains("gzip") || e.getMessage().contains("truncated")
                || e.getMessage().contains("magic"), e.getMessage());
    }

    @Test
    void negativeOrHugeDimensions() throws IOException {
        assertMentions(imagesFails(imagesFile(-1, 2, 2, new byte[0])), "negative image count");
        assertMentions(imagesFails(imagesFile(100_000, 1000, 1000, new byte[0])), "exceed");
    }

    @Test
    void labelImageCountMismatchNamesBothFiles() throws IOException {
        Path ip = write("imgs", imagesFile(3, 2, 2, pixels(12)));
        Path lp = write("lbls", gzip(labelsFile(new byte[] {0, 1})));
        DatasetException e = assertThrows(DatasetException.class, () -> Idx.read(ip, lp, 10, 0f, 1f));
        assertMentions(e, "mismatch", ip.toString(), lp.toString(), "3 images", "2 labels");
    }

    @Test
    void labelOutOfRange() throws IOException {
        Path ip = write("imgs", imagesFile(2, 1, 1, pixels(2)));
        Path lp = write("lbls", labelsFile(new byte[] {3, 10}));
        DatasetException e = assertThrows(DatasetException.class, () -> Idx.read(ip, lp, 10, 0f, 1f));
        assertMentions(e, lp.toString(), "label 10", "index 1", "0..9");
    }

    @Test
    void datasetExceptionIsAnIOException() {
        assertTrue(IOException.class.isAssignableFrom(DatasetException.class));
    }
}
