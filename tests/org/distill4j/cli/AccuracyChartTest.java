package org.distill4j.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.stream.Stream;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class AccuracyChartTest {
    private static final byte[] PNG_MAGIC = {(byte) 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

    private static Map<String, double[]> series() {
        Map<String, double[]> s = new LinkedHashMap<>();
        s.put("teacher", new double[] {0.71, 0.80, 0.84, 0.86, 0.88});
        s.put("student (scratch)", new double[] {0.62, 0.72, 0.76, 0.78, 0.79});
        s.put("student (distilled)", new double[] {0.66, 0.76, 0.80, 0.82, 0.83});
        return s;
    }

    @Test
    void writesAValidPngOfTheRequestedSize(@TempDir Path dir) throws IOException {
        Path png = dir.resolve("charts/accuracy.png"); // parent created on demand
        AccuracyChart.write(png, "Fashion-MNIST test accuracy", series());
        byte[] bytes = Files.readAllBytes(png);
        assertArrayEquals(PNG_MAGIC, Arrays.copyOf(bytes, 8));
        BufferedImage img = ImageIO.read(png.toFile());
        assertNotNull(img, "ImageIO reads it");
        assertEquals(AccuracyChart.DEFAULT_WIDTH, img.getWidth());
        assertEquals(AccuracyChart.DEFAULT_HEIGHT, img.getHeight());
        assertTrue(distinctColours(img) > 3, "something is drawn");

        AccuracyChart.write(png, "again, smaller", series(), 400, 300); // replaces the file
        img = ImageIO.read(png.toFile());
        assertEquals(400, img.getWidth());
        assertEquals(300, img.getHeight());
        try (Stream<Path> files = Files.list(png.getParent())) {
            assertEquals(1, files.count(), "no temporary file left behind");
        }
    }

    @Test
    void singleEpochAndSeriesOfDifferentLengths(@TempDir Path dir) throws IOException {
        Map<String, double[]> s = new LinkedHashMap<>();
        s.put("a", new double[] {0.5});
        s.put("b", new double[] {0.1, 0.2, 0.3});
        Path png = dir.resolve("c.png");
        AccuracyChart.write(png, "t", s);
        assertNotNull(ImageIO.read(png.toFile()));
    }

    @Test
    void rejectsBadInputWithoutWritingAFile(@TempDir Path dir) throws IOException {
        Path png = dir.resolve("bad.png");
        assertThrows(IllegalArgumentException.class, () -> AccuracyChart.write(png, "t", Map.of()));
        assertThrows(IllegalArgumentException.class,
                () -> AccuracyChart.write(png, "t", Map.of("percent?", new double[] {85.0})));
        assertThrows(IllegalArgumentException.class,
                () -> AccuracyChart.write(png, "t", Map.of("nan", new double[] {Double.NaN})));
        try (Stream<Path> files = Files.list(dir)) {
            assertEquals(0, files.count());
        }
    }

    private static int distinctColours(BufferedImage img) {
        java.util.Set<Integer> colours = new java.util.HashSet<>();
        for (int y = 0; y < img.getHeight(); y += 3) {
            for (int x = 0; x < img.getWidth(); x += 3) {
                colours.add(img.getRGB(x, y));
            }
        }
        return colours.size();
    }
}
