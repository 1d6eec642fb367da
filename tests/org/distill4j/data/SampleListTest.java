package org.distill4j.data;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.HexFormat;
import java.util.List;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The sample list: its lines, what its digest notices, and that it is the SHA-256 of the bytes written. */
class SampleListTest {
    @TempDir
    Path dir;

    private static final Normalization GREY = new Normalization(new float[] {0f}, new float[] {1f});

    private void png(Path file) throws IOException {
        Files.createDirectories(file.getParent());
        ImageIO.write(new BufferedImage(4, 4, BufferedImage.TYPE_BYTE_GRAY), "png", file.toFile());
    }

    private static String sha256(byte[] b) throws Exception {
        return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(b));
    }

    @Test
    void anImageFolderIsListedByRelativePathInTorchvisionsOrder() throws Exception {
        for (String f : List.of("dog/b.png", "cat/z.png", "cat/a.png", "dog/a.jpeg")) png(dir.resolve("root/" + f));
        Files.writeString(dir.resolve("root/cat/notes.txt"), "not an image");
        ImageFolder folder = ImageFolder.open(dir.resolve("root"), 4, 1, GREY);
        SampleList list = SampleList.of(folder);
        List<String> lines = list.text().lines().toList();
        assertEquals(SampleList.HEADER, lines.get(0));
        assertEquals(List.of("# images 4, classes 2", "index\tlabel\tname", "0\t0\tcat/a.png", "1\t0\tcat/z.png",
                "2\t1\tdog/a.jpeg", "3\t1\tdog/b.png"), lines.subList(1, lines.size()));
        Path written = dir.resolve("list.tsv");
        list.write(written);
        assertEquals(sha256(Files.readAllBytes(written)), list.digest(), "the digest is the file's SHA-256");
        assertEquals(list.digest(), SampleList.of(ImageFolder.open(dir.resolve("root"), 8, 1, GREY)).digest(),
                "another model size lists the same images");
        // A renamed or added image is another list; so is another order (a subset view) and a head.
        Files.move(dir.resolve("root/dog/b.png"), dir.resolve("root/dog/c.png"));
        String renamed = SampleList.of(ImageFolder.open(dir.resolve("root"), 4, 1, GREY)).digest();
        assertNotEquals(list.digest(), renamed);
        png(dir.resolve("root/cat/m.png"));
        assertNotEquals(renamed, SampleList.of(ImageFolder.open(dir.resolve("root"), 4, 1, GREY)).digest());
        SampleList reordered = SampleList.of(ImageSources.subset(folder, new int[] {1, 0, 2, 3}));
        assertTrue(reordered.text().contains("0\t0\tcat/z.png\n1\t0\tcat/a.png\n"), reordered.text());
        assertNotEquals(list.digest(), reordered.digest());
        assertEquals(2, SampleList.of(ImageSources.head(folder, 2)).size());
    }

    @Test
    void anInMemoryDatasetCarriesItsPixelDigest() {
        Dataset a = Synthetic.dataset(3, 10, 4, 8, 8), b = Synthetic.dataset(4, 10, 4, 8, 8);
        SampleList la = SampleList.of(a);
        assertTrue(la.text().contains("# pixels sha256 " + a.digest() + "\n"), la.text());
        assertTrue(la.text().contains("\n0\t" + a.label(0) + "\t#0\n"), la.text());
        assertNotEquals(la.digest(), SampleList.of(b).digest(), "same count and names, other pixels");
        assertEquals(la.digest(), SampleList.of(Synthetic.dataset(3, 10, 4, 8, 8)).digest(), "the same data");
    }

    @Test
    void aNameThatALineCannotHoldIsRefused() throws IOException {
        png(dir.resolve("root/cat/a\tb.png"));
        ImageFolder folder = ImageFolder.open(dir.resolve("root"), 4, 1, GREY);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> SampleList.of(folder));
        assertTrue(e.getMessage().contains("tab or line break"), e.getMessage());
    }

    @Test
    void listTextIsUtf8() throws Exception {
        png(dir.resolve("root/café/ü.png"));
        SampleList list = SampleList.of(ImageFolder.open(dir.resolve("root"), 4, 1, GREY));
        assertTrue(list.text().endsWith("0\t0\tcafé/ü.png\n"), list.text());
        assertEquals(sha256(list.text().getBytes(StandardCharsets.UTF_8)), list.digest());
    }
}
