package org.distill4j.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.awt.image.BufferedImage;
import java.io.IOException;
import java.lang.reflect.InvocationTargetException;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;
import javax.imageio.ImageIO;
import org.distill4j.testing.Check;
import org.distill4j.testing.ImageFiles;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * JPEG decoding by OpenCV (libjpeg-turbo) against the JDK's ImageIO (IJG libjpeg), neither of them ours: the same
 * pixels, bit for bit, on JPEGs the JDK writes here (baseline and progressive, grey and colour, odd sizes, several
 * qualities, random content); truncated files fail naming the file; what OpenCV is not given goes to ImageIO.
 */
class OpenCvJpegTest {
    @TempDir
    Path dir;

    private static BufferedImage noise(Random rng, int w, int h, boolean grey) {
        BufferedImage img = new BufferedImage(w, h, grey ? BufferedImage.TYPE_BYTE_GRAY : BufferedImage.TYPE_INT_RGB);
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                // A gradient with noise: smooth parts and sharp ones, so both the DC and the AC paths matter.
                int r = (x * 255 / Math.max(1, w - 1) + rng.nextInt(60)) & 0xff;
                int g = (y * 255 / Math.max(1, h - 1) + rng.nextInt(60)) & 0xff;
                int b = rng.nextInt(256);
                if (grey) img.getRaster().setSample(x, y, 0, r);
                else img.setRGB(x, y, r << 16 | g << 8 | b);
            }
        }
        return img;
    }

    private Path jpeg(String name, BufferedImage img, float quality, boolean progressive) throws IOException {
        return ImageFiles.jpeg(dir.resolve(name), img, quality, progressive);
    }

    @Test
    void openCvGivesImageIosPixelsBitForBit() throws IOException {
        assertTrue(ImageDecoder.Library.OPENCV.available(), "the tests have OpenCV on the classpath");
        assertEquals(ImageDecoder.Library.OPENCV, ImageDecoder.Library.best());
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        int[][] sizes = {{1, 1}, {7, 5}, {16, 16}, {33, 17}, {17, 40}, {224, 224}};
        int files = 0;
        for (int[] s : sizes) {
            for (boolean grey : new boolean[] {false, true}) {
                for (boolean progressive : new boolean[] {false, true}) {
                    float quality = new float[] {0.3f, 0.75f, 0.9f, 1f}[rng.nextInt(4)];
                    String what = "seed=" + seed + " " + s[0] + "x" + s[1] + (grey ? " grey" : " rgb")
                            + (progressive ? " progressive" : " baseline") + " q" + quality;
                    Path f = jpeg("f" + files++ + ".jpg", noise(rng, s[0], s[1], grey), quality, progressive);
                    ImageDecoder.Image cv = OpenCvJpeg.decode(f);
                    assertNotNull(cv, what + ": OpenCV took the file");
                    ImageDecoder.Image io = ImageDecoder.decode(f, ImageDecoder.Library.IMAGEIO);
                    assertEquals(io.channels(), cv.channels(), what);
                    assertEquals(grey ? 1 : 3, cv.channels(), what);
                    assertEquals(s[1], cv.height(), what);
                    assertEquals(s[0], cv.width(), what);
                    assertArrayEquals(io.pixels(), cv.pixels(), what);
                    assertArrayEquals(cv.pixels(), ImageDecoder.decode(f).pixels(), what + ": decode() uses OpenCV");
                    for (float v : cv.pixels()) assertTrue(v >= 0 && v <= 1, what + ": value " + v);
                }
            }
        }
        // Not a constant image: a decoder that returned zeros would fail above only if ImageIO did too.
        ImageDecoder.Image last = OpenCvJpeg.decode(dir.resolve("f" + (files - 1) + ".jpg"));
        float[] p = last.pixels().clone();
        Arrays.sort(p);
        assertTrue(p[p.length - 1] - p[0] > 0.5f, "spread " + (p[p.length - 1] - p[0]));
    }

    @Test
    void truncatedJpegsFailNamingTheFileAndOthersGoToImageIo() throws IOException {
        Path good = jpeg("good.jpg", noise(new Random(3), 64, 48, false), 0.9f, false);
        byte[] b = Files.readAllBytes(good);
        for (int keep : new int[] {b.length / 2, b.length * 95 / 100, b.length - 2, 300}) {
            Path f = Files.write(dir.resolve("cut" + keep + ".jpg"), Arrays.copyOf(b, keep));
            BadImageException e = assertThrows(BadImageException.class,
                    () -> ImageDecoder.decode(f, ImageDecoder.Library.OPENCV), "kept " + keep + " of " + b.length);
            assertTrue(e.getMessage().startsWith(f + ": "), e.getMessage());
            assertEquals(1, e.getMessage().lines().count(), e.getMessage());
            assertThrows(BadImageException.class, () -> ImageDecoder.decode(f, ImageDecoder.Library.IMAGEIO));
        }
        // Corrupt entropy-coded data that libjpeg-turbo recovers from with a warning: OpenCV decodes it (as Pillow
        // does), ImageIO's path refuses it — the documented difference.
        byte[] corrupt = b.clone();
        Arrays.fill(corrupt, b.length / 2, b.length / 2 + 40, (byte) 0xff);
        Path c = Files.write(dir.resolve("corrupt.jpg"), corrupt);
        assertEquals(48, ImageDecoder.decode(c, ImageDecoder.Library.OPENCV).height());
        assertThrows(BadImageException.class, () -> ImageDecoder.decode(c, ImageDecoder.Library.IMAGEIO));

        // PNG, text named .jpg and a 4-component JPEG are not OpenCV's: ImageIO reads them, with its messages.
        Path png = dir.resolve("x.png");
        ImageIO.write(noise(new Random(4), 5, 4, false), "png", png.toFile());
        assertNull(OpenCvJpeg.decode(png));
        assertEquals(4, ImageDecoder.decode(png, ImageDecoder.Library.OPENCV).height());
        Path text = Files.writeString(dir.resolve("text.jpg"), "hello");
        assertNull(OpenCvJpeg.decode(text));
        BadImageException e = assertThrows(BadImageException.class,
                () -> ImageDecoder.decode(text, ImageDecoder.Library.OPENCV));
        assertTrue(e.getMessage().contains("not a JPEG or PNG image ImageIO recognises"), e.getMessage());
        Path cmyk = ImageFiles.cmykJpeg(dir.resolve("cmyk.jpg"));
        assertNull(OpenCvJpeg.decode(cmyk));
        e = assertThrows(BadImageException.class, () -> ImageDecoder.decode(cmyk, ImageDecoder.Library.OPENCV));
        assertTrue(e.getMessage().contains("CMYK"), e.getMessage());
        Path missing = dir.resolve("missing.jpg");
        e = assertThrows(BadImageException.class, () -> ImageDecoder.decode(missing, ImageDecoder.Library.OPENCV));
        assertTrue(e.getMessage().equals(missing + ": no such file"), e.getMessage());
    }

    /** Frame headers by hand: which files OpenCV is given. */
    @Test
    void onlyEightBitHuffmanJpegsOfOneOrThreeComponentsAreOpenCvs() {
        assertTrue(OpenCvJpeg.isPlainJpeg(jpegHeader(0xc0, 8, 3)));
        assertTrue(OpenCvJpeg.isPlainJpeg(jpegHeader(0xc1, 8, 1)));
        assertTrue(OpenCvJpeg.isPlainJpeg(jpegHeader(0xc2, 8, 3)));
        assertFalse(OpenCvJpeg.isPlainJpeg(jpegHeader(0xc0, 12, 3)), "12-bit");
        assertFalse(OpenCvJpeg.isPlainJpeg(jpegHeader(0xc0, 8, 4)), "CMYK/YCCK");
        assertFalse(OpenCvJpeg.isPlainJpeg(jpegHeader(0xc0, 8, 2)), "2 components");
        assertFalse(OpenCvJpeg.isPlainJpeg(jpegHeader(0xc3, 8, 3)), "lossless");
        assertFalse(OpenCvJpeg.isPlainJpeg(jpegHeader(0xc9, 8, 3)), "arithmetic");
        assertFalse(OpenCvJpeg.isPlainJpeg(jpegHeader(0xda, 8, 3)), "a scan before any frame");
        byte[] h = jpegHeader(0xc0, 8, 3);
        assertFalse(OpenCvJpeg.isPlainJpeg(Arrays.copyOf(h, h.length - 4)), "cut inside the frame header");
        h[0] = 0x12;
        assertFalse(OpenCvJpeg.isPlainJpeg(h), "no SOI");
        assertFalse(OpenCvJpeg.isPlainJpeg(new byte[] {(byte) 0xff, (byte) 0xd8}));
        // A DHT segment (C4, inside the SOF range) before the frame is skipped, not taken for a frame.
        byte[] dht = {(byte) 0xff, (byte) 0xd8, (byte) 0xff, (byte) 0xc4, 0, 3, 0};
        byte[] sof = jpegHeader(0xc0, 8, 1);
        byte[] both = Arrays.copyOf(dht, dht.length + sof.length - 2);
        System.arraycopy(sof, 2, both, dht.length, sof.length - 2);
        assertTrue(OpenCvJpeg.isPlainJpeg(both));
    }

    /** SOI, an APP0 segment of 4 bytes, then frame header {@code sof} (height 8, width 8). */
    private static byte[] jpegHeader(int sof, int precision, int components) {
        return new byte[] {(byte) 0xff, (byte) 0xd8, (byte) 0xff, (byte) 0xe0, 0, 4, 1, 2, (byte) 0xff, (byte) sof,
            0, (byte) (8 + 3 * components), (byte) precision, 0, 8, 0, 8, (byte) components, 1, 0x11, 0};
    }

    @Test
    void withoutOpenCvJpegsAreImageIosAndAskingForOpenCvNamesTheArtifact() throws Exception {
        Path f = jpeg("a.jpg", noise(new Random(5), 9, 6, false), 0.9f, false);
        float[] want = ImageDecoder.decode(f, ImageDecoder.Library.IMAGEIO).pixels();
        // The library's classes and JavaCPP (a dependency it always brings), without OpenCV's jars: what a user who
        // did not add them has.
        URL library = ImageDecoder.class.getProtectionDomain().getCodeSource().getLocation();
        URL javacpp = org.bytedeco.javacpp.Pointer.class.getProtectionDomain().getCodeSource().getLocation();
        try (URLClassLoader bare = new URLClassLoader(new URL[] {library, javacpp},
                ClassLoader.getPlatformClassLoader())) {
            Class<?> decoder = bare.loadClass(ImageDecoder.class.getName());
            Class<?> libs = bare.loadClass(ImageDecoder.Library.class.getName());
            Object best = libs.getMethod("best").invoke(null);
            assertEquals("IMAGEIO", best.toString());
            Object opencv = libs.getField("OPENCV").get(null);
            assertEquals(false, libs.getMethod("available").invoke(opencv));
            Object image = decoder.getMethod("decode", Path.class).invoke(null, f);
            assertArrayEquals(want, (float[]) image.getClass().getMethod("pixels").invoke(image));
            InvocationTargetException e = assertThrows(InvocationTargetException.class,
                    () -> decoder.getMethod("decode", Path.class, libs).invoke(null, f, opencv));
            IllegalStateException cause = assertInstanceOf(IllegalStateException.class, e.getCause());
            assertTrue(cause.getMessage().contains("add org.bytedeco:opencv:4.13.0-1.5.13"), cause.getMessage());
        }
    }
}
