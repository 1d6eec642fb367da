package org.distill4j.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import javax.imageio.ImageIO;
import org.distill4j.testing.ImageFiles;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Image folders written here with known pixels: the class mapping is torchvision's (written out by hand below), PNG
 * decodes to exactly the written values, JPEG within a stated tolerance, bad files fail naming the file.
 */
class ImageFolderTest {
    @TempDir
    Path root;

    private static final Normalization NONE3 = Normalization.identity(3);

    /** An RGB image whose channels differ: R = f(x, y), G = g(x, y), B = h(x, y), in 0..255. */
    private static int[][] rgb(int h, int w, int seed) {
        int[][] px = new int[3][h * w];
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                px[0][y * w + x] = (x * 17 + y * 3 + seed) & 0xff;
                px[1][y * w + x] = (y * 29 + x + 2 * seed) & 0xff;
                px[2][y * w + x] = (x * y + 7 * seed) & 0xff;
            }
        }
        return px;
    }

    private static BufferedImage rgbImage(int[][] px, int h, int w) {
        BufferedImage img = new BufferedImage(w, h, BufferedImage.TYPE_INT_RGB);
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                int i = y * w + x;
                img.setRGB(x, y, px[0][i] << 16 | px[1][i] << 8 | px[2][i]);
            }
        }
        return img;
    }

    private static Path png(Path file, BufferedImage img) throws IOException {
        Files.createDirectories(file.getParent());
        if (!ImageIO.write(img, "png", file.toFile())) throw new IOException("no PNG writer");
        return file;
    }

    private static Path jpeg(Path file, BufferedImage img, float quality) throws IOException {
        return ImageFiles.jpeg(file, img, quality, false);
    }

    private static Path tinyPng(Path file) throws IOException {
        return png(file, rgbImage(rgb(4, 4, 1), 4, 4));
    }

    private static float[] read(ImageSource src, int index) throws IOException {
        float[] out = new float[src.imageSize()];
        src.copyImage(index, out, 0);
        return out;
    }

    private static void assertClose(double want, float got, double tol, String what) {
        if (!(Math.abs(got - want) <= tol)) fail(what + ": got " + got + ", want " + want + " (tolerance " + tol + ")");
    }

    @Test
    void classesAndFilesInTorchvisionOrderHiddenAndUnknownSkipped() throws IOException {
        for (String c : new String[] {"zebra", "apple", "Apple", "_under", "b", ".hidden", ".ipynb_checkpoints"}) {
            tinyPng(root.resolve(c).resolve("0.png"));
        }
        Files.createDirectories(root.resolve("b/sub/deeper"));
        Files.createDirectories(root.resolve("b/sub b"));
        for (String f : new String[] {"2.png", "10.png", "a.PNG", "c.jpeg", "sub/x.png", "sub b/y.JPG",
                "sub/deeper/z.png", ".hidden.png"}) {
            Path p = root.resolve("b").resolve(f);
            if (f.toLowerCase().endsWith(".png")) {
                tinyPng(p);
            } else {
                jpeg(p, rgbImage(rgb(4, 4, 1), 4, 4), 0.9f);
            }
        }
        Files.writeString(root.resolve("b/notes.txt"), "not an image");
        Files.writeString(root.resolve("b/sub/img.bmp"), "unknown extension");
        Files.writeString(root.resolve("stray-file.png"), "a file at the root is not a class");

        ImageFolder f = ImageFolder.open(root, 4, 3, NONE3);
        // Python: sorted(["zebra", "apple", "Apple", "_under", "b"]) — code point order, upper case first.
        assertEquals(List.of("Apple", "_under", "apple", "b", "zebra"), f.classNames());
        // Python: sorted(os.walk("b")) visits "b", "b/sub", "b/sub b", "b/sub/deeper" (' ' < '/'); names sorted.
        List<String> want = new ArrayList<>(List.of("Apple/0.png", "_under/0.png", "apple/0.png"));
        want.addAll(List.of("b/0.png", "b/10.png", "b/2.png", "b/a.PNG", "b/c.jpeg", "b/sub/x.png", "b/sub b/y.JPG",
                "b/sub/deeper/z.png"));
        want.add("zebra/0.png");
        List<String> got = new ArrayList<>();
        for (int i = 0; i < f.size(); i++) got.add(root.relativize(f.file(i)).toString());
        assertEquals(want, got);
        int[] labels = new int[f.size()];
        for (int i = 0; i < f.size(); i++) labels[i] = f.label(i);
        assertEquals(Arrays.toString(new int[] {0, 1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 4}), Arrays.toString(labels));
        assertEquals(2, f.skippedFiles(), "notes.txt and img.bmp");

        Path json = root.resolve("class_index.json");
        f.writeClassIndex(json);
        JsonObject o = JsonParser.parseString(Files.readString(json)).getAsJsonObject();
        assertEquals("[\"Apple\",\"_under\",\"apple\",\"b\",\"zebra\"]", o.get("classes").toString());
        assertEquals(4, o.getAsJsonObject("class_to_idx").get("zebra").getAsInt());
        assertEquals(1, o.getAsJsonObject("class_to_idx").get("_under").getAsInt());
    }

    @Test
    void emptyRootsAndClassesAreRefusedNamingTheFolder() throws IOException {
        DatasetException e = assertThrows(DatasetException.class, () -> ImageFolder.open(root, 4, 3, NONE3));
        assertTrue(e.getMessage().startsWith(root.toString()) && e.getMessage().contains("no class folders"),
                e.getMessage());
        Files.createDirectories(root.resolve(".hidden"));
        tinyPng(root.resolve(".hidden/a.png"));
        e = assertThrows(DatasetException.class, () -> ImageFolder.open(root, 4, 3, NONE3));
        assertTrue(e.getMessage().contains("no class folders"), e.getMessage());

        tinyPng(root.resolve("cat/a.png"));
        Files.createDirectories(root.resolve("dog/sub"));
        Files.writeString(root.resolve("dog/readme.txt"), "x");
        tinyPng(root.resolve("dog/.hidden.png"));
        e = assertThrows(DatasetException.class, () -> ImageFolder.open(root, 4, 3, NONE3));
        assertTrue(e.getMessage().startsWith(root.resolve("dog").toString()) && e.getMessage().contains("'dog'"),
                e.getMessage());

        Path missing = root.resolve("nope");
        e = assertThrows(DatasetException.class, () -> ImageFolder.open(missing, 4, 3, NONE3));
        assertTrue(e.getMessage().startsWith(missing.toString()), e.getMessage());
    }

    @Test
    void trainAndValMustHaveTheSameClasses() throws IOException {
        tinyPng(root.resolve("train/cat/a.png"));
        tinyPng(root.resolve("train/dog/a.png"));
        tinyPng(root.resolve("val/cat/a.png"));
        tinyPng(root.resolve("val/cow/a.png"));
        DatasetException e = assertThrows(DatasetException.class, () -> ImageFolder.openSplit(root.resolve("train"),
                root.resolve("val"), 4, 3, NONE3, 1.0));
        assertTrue(e.getMessage().contains("[dog]") && e.getMessage().contains("[cow]"), e.getMessage());
    }

    @Test
    void pngRgbDecodesToTheWrittenPixelsNormalisedPerChannel() throws IOException {
        int h = 6, w = 6;
        int[][] px = rgb(h, w, 5);
        png(root.resolve("c/a.png"), rgbImage(px, h, w));
        Normalization norm = new Normalization(new float[] {0.1f, 0.5f, 0.9f}, new float[] {0.2f, 0.3f, 0.4f});
        ImageFolder f = ImageFolder.open(root, 6, 3, norm);
        float[] got = read(f, 0);
        for (int c = 0; c < 3; c++) {
            for (int i = 0; i < h * w; i++) {
                double want = (px[c][i] / 255.0 - norm.mean()[c]) / norm.std()[c];
                assertClose(want, got[c * h * w + i], 1e-6 * Math.max(1, Math.abs(want)), "channel " + c + " pixel " + i);
            }
        }
    }

    @Test
    void greyRgbaAnd16BitPngConvertAsDocumented() throws IOException {
        int h = 4, w = 5, n = h * w;
        BufferedImage grey = new BufferedImage(w, h, BufferedImage.TYPE_BYTE_GRAY);
        int[] g8 = new int[n];
        for (int i = 0; i < n; i++) g8[i] = (i * 13 + 1) & 0xff;
        grey.getRaster().setSamples(0, 0, w, h, 0, g8);
        BufferedImage rgba = new BufferedImage(w, h, BufferedImage.TYPE_INT_ARGB);
        int[][] px = rgb(h, w, 2);
        for (int i = 0; i < n; i++) {
            int alpha = i == 0 ? 0 : (i * 40) & 0xff; // fully transparent pixel 0 keeps its colour
            rgba.setRGB(i % w, i / w, alpha << 24 | px[0][i] << 16 | px[1][i] << 8 | px[2][i]);
        }
        BufferedImage grey16 = new BufferedImage(w, h, BufferedImage.TYPE_USHORT_GRAY);
        int[] g16 = new int[n];
        for (int i = 0; i < n; i++) g16[i] = i == 0 ? 65535 : i * 3001 + 1000; // 1000/65535 is not any k/255
        grey16.getRaster().setSamples(0, 0, w, h, 0, g16);
        // One folder per image type so the sorted order is known: class a = grey, b = rgba, c = 16-bit.
        png(root.resolve("a/0.png"), grey);
        png(root.resolve("b/0.png"), rgba);
        png(root.resolve("c/0.png"), grey16);
        assertEquals(1, ImageDecoder.decode(root.resolve("c/0.png")).channels(), "16-bit grey decodes to grey");
        assertEquals(1, ImageDecoder.decode(root.resolve("a/0.png")).channels());
        assertEquals(3, ImageDecoder.decode(root.resolve("b/0.png")).channels(), "RGBA decodes to RGB");
        // Non-square on purpose: 4×5 with size 4 crops column 0 (offset round((5 − 4)/2) = round(0.5) = 0).
        ImageFolder f = ImageFolder.open(root, 4, 3, NONE3);
        float[] a = read(f, 0), b = read(f, 1), c = read(f, 2);
        for (int y = 0; y < 4; y++) {
            for (int x = 0; x < 4; x++) {
                int i = y * w + x, o = y * 4 + x;
                for (int ch = 0; ch < 3; ch++) {
                    assertClose(g8[i] / 255.0, a[ch * 16 + o], 1e-7, "grey replicated, channel " + ch);
                    assertClose(px[ch][i] / 255.0, b[ch * 16 + o], 1e-7, "RGBA colour kept, alpha dropped");
                    assertClose(g16[i] / 65535.0, c[ch * 16 + o], 1e-7, "16-bit at full precision");
                }
            }
        }
        // A one-channel model sees Pillow's L = (299 R + 587 G + 114 B) / 1000 of a colour image.
        ImageFolder grey1 = ImageFolder.open(root, 4, 1, Normalization.identity(1));
        float[] l = read(grey1, 1);
        for (int y = 0; y < 4; y++) {
            for (int x = 0; x < 4; x++) {
                int i = y * w + x;
                double want = (299.0 * px[0][i] + 587.0 * px[1][i] + 114.0 * px[2][i]) / 1000.0 / 255.0;
                assertClose(want, l[y * 4 + x], 1e-6, "luma at " + x + "," + y);
            }
        }
    }

    @Test
    void paletteOneBitSixteenBitRgbAndGreyJpegDecodeAsDocumented() throws IOException {
        int h = 3, w = 4, n = h * w;
        // Palette: each pixel's index picks a known colour.
        byte[] red = {10, (byte) 200, 0, 33}, green = {20, 0, (byte) 255, 66}, blue = {30, 100, 7, 99};
        java.awt.image.IndexColorModel icm = new java.awt.image.IndexColorModel(2, 4, red, green, blue);
        BufferedImage pal = new BufferedImage(w, h, BufferedImage.TYPE_BYTE_INDEXED, icm);
        for (int i = 0; i < n; i++) pal.getRaster().setSample(i % w, i / w, 0, (i * 3) % 4);
        Path palette = png(root.resolve("p.png"), pal);
        // One bit per pixel: black or white.
        BufferedImage bits = new BufferedImage(w, h, BufferedImage.TYPE_BYTE_BINARY);
        for (int i = 0; i < n; i++) bits.getRaster().setSample(i % w, i / w, 0, i % 3 == 0 ? 1 : 0);
        Path oneBit = png(root.resolve("b.png"), bits);
        // 16-bit RGB.
        java.awt.image.ComponentColorModel cm16 = new java.awt.image.ComponentColorModel(
                java.awt.color.ColorSpace.getInstance(java.awt.color.ColorSpace.CS_sRGB), new int[] {16, 16, 16}, false,
                false, java.awt.Transparency.OPAQUE, java.awt.image.DataBuffer.TYPE_USHORT);
        BufferedImage rgb16 = new BufferedImage(cm16, cm16.createCompatibleWritableRaster(w, h), false, null);
        for (int i = 0; i < n; i++) {
            for (int c = 0; c < 3; c++) rgb16.getRaster().setSample(i % w, i / w, c, (i * 4099 + c * 20011) % 65536);
        }
        Path sixteen = png(root.resolve("s.png"), rgb16);
        ImageDecoder.Image p = ImageDecoder.decode(palette), b = ImageDecoder.decode(oneBit);
        ImageDecoder.Image s = ImageDecoder.decode(sixteen);
        assertEquals(3, p.channels());
        assertEquals(3, s.channels());
        for (int i = 0; i < n; i++) {
            int k = (i * 3) % 4;
            assertClose((red[k] & 0xff) / 255.0, p.pixels()[i], 1e-7, "palette red " + i);
            assertClose((green[k] & 0xff) / 255.0, p.pixels()[n + i], 1e-7, "palette green " + i);
            assertClose((blue[k] & 0xff) / 255.0, p.pixels()[2 * n + i], 1e-7, "palette blue " + i);
            double bit = i % 3 == 0 ? 1 : 0;
            for (int c = 0; c < b.channels(); c++) assertClose(bit, b.pixels()[c * n + i], 1e-7, "1-bit " + i);
            for (int c = 0; c < 3; c++) {
                assertClose(((i * 4099 + c * 20011) % 65536) / 65535.0, s.pixels()[c * n + i], 1e-7, "16-bit RGB " + i);
            }
        }
        // A grey JPEG decodes to one channel (then replicated for an RGB model): smooth content within 4/255.
        BufferedImage grey = new BufferedImage(16, 16, BufferedImage.TYPE_BYTE_GRAY);
        for (int y = 0; y < 16; y++) for (int x = 0; x < 16; x++) grey.getRaster().setSample(x, y, 0, 40 + 8 * x + 4 * y);
        ImageDecoder.Image g = ImageDecoder.decode(jpeg(root.resolve("g.jpg"), grey, 0.95f), 3);
        assertEquals(1, ImageDecoder.decode(root.resolve("g.jpg")).channels());
        for (int c = 0; c < 3; c++) {
            for (int y = 0; y < 16; y++) {
                for (int x = 0; x < 16; x++) {
                    assertClose((40 + 8 * x + 4 * y) / 255.0, g.pixels()[c * 256 + y * 16 + x], 4 / 255.0, "grey JPEG");
                }
            }
        }
    }

    @Test
    void streamedBatchesAreTheSameForOneAndThreeWorkers() throws IOException {
        // 10×12 PNGs resized to 8×8 (resampling and cropping on every image), augmented: decoding order must not matter.
        for (int k = 0; k < 30; k++) png(root.resolve("c" + k % 3).resolve(k + ".png"), rgbImage(rgb(10, 12, k), 10, 12));
        ImageFolder f = ImageFolder.open(root, 8, 3, Normalization.IMAGENET);
        List<float[]> images = new ArrayList<>();
        List<int[]> labels = new ArrayList<>();
        for (int workers : new int[] {1, 3}) {
            try (StreamLoader s = StreamLoader.builder(f, 4).seed(3).workers(workers).epochs(2).dropLast(false)
                    .augment(new Augment(1, 2, true)).build()) {
                int k = 0;
                while (s.hasNext()) {
                    BatchLoader.Batch b = s.next();
                    float[] im = Arrays.copyOf(b.images(), b.size() * f.imageSize());
                    int[] lab = Arrays.copyOf(b.labels(), b.size());
                    if (workers == 1) {
                        images.add(im);
                        labels.add(lab);
                    } else {
                        assertTrue(Arrays.equals(images.get(k), im), "batch " + k + " images");
                        assertTrue(Arrays.equals(labels.get(k), lab), "batch " + k + " labels");
                    }
                    k++;
                }
                assertEquals(2 * 8, k, "2 epochs of ceil(30/4) batches");
            }
        }
    }

    @Test
    void centerCropOffsetsRoundHalfToEvenAsPython() throws IOException {
        // Each pixel's R channel holds its column: the crop's first column is the crop offset.
        for (int w : new int[] {7, 9, 10}) {
            BufferedImage img = new BufferedImage(w, 4, BufferedImage.TYPE_INT_RGB);
            for (int y = 0; y < 4; y++) for (int x = 0; x < w; x++) img.setRGB(x, y, x * 10 << 16);
            png(root.resolve("w" + w + "/0.png"), img);
        }
        ImageFolder f = ImageFolder.open(root, 4, 3, NONE3);
        // Python: round((7-4)/2) = round(1.5) = 2, round((9-4)/2) = round(2.5) = 2, round((10-4)/2) = 3.
        int[] wantLeft = {3, 2, 2}; // classes sorted: "w10", "w7", "w9"
        for (int k = 0; k < 3; k++) {
            float[] im = read(f, k);
            for (int x = 0; x < 4; x++) assertClose((wantLeft[k] + x) * 10 / 255.0, im[x], 1e-7, "class " + k + " x " + x);
        }
    }

    @Test
    void jpegDecodesWithinTolerance() throws IOException {
        // Smooth, distinct channels; quality 0.95. Tolerance: 10/255 per value and 3/255 on average — JPEG's loss
        // on smooth content; a swapped channel order or a wrong row stride is off by far more.
        int h = 16, w = 16;
        int[][] px = new int[3][h * w];
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                px[0][y * w + x] = 20 + x * 12;
                px[1][y * w + x] = 30 + y * 10;
                px[2][y * w + x] = 200 - (x + y) * 4;
            }
        }
        jpeg(root.resolve("c/a.jpg"), rgbImage(px, h, w), 0.95f);
        float[] got = read(ImageFolder.open(root, 16, 3, NONE3), 0);
        double sum = 0;
        for (int c = 0; c < 3; c++) {
            for (int i = 0; i < h * w; i++) {
                double err = Math.abs(got[c * h * w + i] - px[c][i] / 255.0);
                assertClose(px[c][i] / 255.0, got[c * h * w + i], 10 / 255.0, "channel " + c + " pixel " + i);
                sum += err;
            }
        }
        double mean = sum / (3 * h * w);
        assertTrue(mean <= 3 / 255.0, "mean error " + mean * 255 + "/255");
    }

    @Test
    void corruptTruncatedAndUnknownFilesFailNamingTheFile() throws IOException {
        Path good = png(root.resolve("c/good.png"), rgbImage(rgb(16, 16, 3), 16, 16));
        byte[] pngBytes = Files.readAllBytes(good);
        Path truncatedPng = root.resolve("c/truncated.png");
        Files.write(truncatedPng, Arrays.copyOf(pngBytes, pngBytes.length / 2));
        Path garbage = root.resolve("c/garbage.png");
        byte[] noise = new byte[500];
        new java.util.Random(1).nextBytes(noise);
        Files.write(garbage, noise);
        Path jpg = jpeg(root.resolve("c/full.jpg"), rgbImage(rgb(64, 64, 3), 64, 64), 0.9f);
        byte[] jpgBytes = Files.readAllBytes(jpg);
        Path truncatedJpg = root.resolve("c/truncated.jpg");
        Files.write(truncatedJpg, Arrays.copyOf(jpgBytes, jpgBytes.length * 6 / 10));
        Path textJpg = root.resolve("c/text.jpg");
        Files.writeString(textJpg, "hello");
        for (Path p : new Path[] {truncatedPng, garbage, truncatedJpg, textJpg}) {
            BadImageException e = assertThrows(BadImageException.class, () -> ImageDecoder.decode(p), p.toString());
            assertTrue(e.getMessage().startsWith(p.toString() + ": "), e.getMessage());
            assertTrue(e.getMessage().lines().count() == 1, "one line: " + e.getMessage());
        }
        assertEquals(16, ImageDecoder.decode(good).height());
        assertEquals(64, ImageDecoder.decode(jpg).width());
    }

    @Test
    void cmykJpegGetsAClearError() throws IOException {
        Path file = ImageFiles.cmykJpeg(root.resolve("c/cmyk.jpg"));
        BadImageException e = assertThrows(BadImageException.class, () -> ImageDecoder.decode(file));
        assertTrue(e.getMessage().startsWith(file.toString()) && e.getMessage().contains("CMYK"), e.getMessage());
        assertInstanceOf(DatasetException.class, e);
    }

    /**
     * Pillow's bilinear resampling by its definition, in float64, one output value at a time: output o of n from
     * input size m is the triangle-weighted mean of the inputs, weight tri((i + 0.5 − c) / f) with c = (o + 0.5)·m/n
     * and f = max(m/n, 1), over every input i (Pillow's window only drops zero weights).
     */
    private static double pillowBilinear(double[] in, int n, int o) {
        int m = in.length;
        double scale = (double) m / n, f = Math.max(scale, 1), c = (o + 0.5) * scale, sum = 0, norm = 0;
        for (int i = 0; i < m; i++) {
            double t = Math.abs((i + 0.5 - c) / f), wt = t < 1 ? 1 - t : 0;
            sum += wt * in[i];
            norm += wt;
        }
        return sum / norm;
    }

    @Test
    void resizeMatchesPillowsDefinitionInFloat64() {
        java.util.Random rnd = new java.util.Random(4);
        int h = 11, w = 40;
        float[] src = new float[2 * h * w];
        for (int i = 0; i < src.length; i++) src[i] = rnd.nextFloat();
        for (int[] to : new int[][] {{11, 13}, {5, 10}, {22, 80}, {4, 17}, {11, 40}, {3, 3}}) {
            int nh = to[0], nw = to[1];
            float[] out = Resize.resize(src, 2, h, w, nh, nw);
            assertEquals(2 * nh * nw, out.length);
            for (int c = 0; c < 2; c++) {
                // Separable: rows first (as Pillow), each a 1-D resampling of the row, then the columns.
                double[][] rows = new double[h][nw];
                for (int y = 0; y < h; y++) {
                    double[] row = new double[w];
                    for (int x = 0; x < w; x++) row[x] = src[(c * h + y) * w + x];
                    for (int o = 0; o < nw; o++) rows[y][o] = nw == w ? row[o] : pillowBilinear(row, nw, o);
                }
                for (int x = 0; x < nw; x++) {
                    double[] col = new double[h];
                    for (int y = 0; y < h; y++) col[y] = rows[y][x];
                    for (int o = 0; o < nh; o++) {
                        double want = nh == h ? col[o] : pillowBilinear(col, nh, o);
                        assertClose(want, out[(c * nh + o) * nw + x], 1e-6, nh + "×" + nw + " c " + c + " (" + o + ", "
                                + x + ")");
                    }
                }
            }
        }
    }

    @Test
    void resizeKeepsLinearRampsAtIntegerScalesAndConstants() {
        // Integer down-scales and ×2 up-scales sample symmetrically about each output centre, so a linear ramp comes
        // out as the ramp at (o + 0.5)·scale − 0.5 wherever the kernel lies inside the image.
        int h = 3, w = 40;
        for (int nw : new int[] {10, 20, 80}) {
            float[] src = new float[h * w];
            for (int y = 0; y < h; y++) for (int x = 0; x < w; x++) src[y * w + x] = 0.25f + 0.01f * x;
            float[] out = Resize.resize(src, 1, h, w, h, nw);
            double scale = (double) w / nw, support = Math.max(scale, 1);
            int checked = 0;
            for (int o = 0; o < nw; o++) {
                double center = (o + 0.5) * scale;
                if (center - support < 0 || center + support > w) continue;
                double want = 0.25 + 0.01 * (center - 0.5);
                for (int y = 0; y < h; y++) assertClose(want, out[y * nw + o], 1e-5, "nw " + nw + " o " + o);
                checked++;
            }
            assertTrue(checked >= nw / 2, "interior pixels checked: " + checked);
        }
        float[] flat = new float[2 * 7 * 9];
        Arrays.fill(flat, 0.6f);
        float[] out = Resize.resize(flat, 2, 7, 9, 4, 5);
        for (float v : out) assertClose(0.6, v, 1e-6, "constant image");
        float[] same = Resize.resize(flat, 2, 7, 9, 7, 9);
        assertTrue(same == flat, "no resampling at the same size");
    }

    @Test
    void largerImagesAreResizedOnTheShorterSideThenCentreCropped() throws IOException {
        // A 20×40 constant-per-channel image at size 8: shorter side 20 → 8, longer 40 → 16, crop the centre 8×8.
        BufferedImage img = new BufferedImage(40, 20, BufferedImage.TYPE_INT_RGB);
        for (int y = 0; y < 20; y++) for (int x = 0; x < 40; x++) img.setRGB(x, y, 10 << 16 | 120 << 8 | 250);
        png(root.resolve("c/a.png"), img);
        float[] got = read(ImageFolder.open(root, 8, 3, NONE3), 0);
        assertEquals(3 * 64, got.length);
        int[] want = {10, 120, 250};
        for (int c = 0; c < 3; c++) {
            for (int i = 0; i < 64; i++) assertClose(want[c] / 255.0, got[c * 64 + i], 1e-6, "channel " + c);
        }
    }

    @Test
    void aResizedCropIsCutFromTheImageAsDecoded() throws IOException {
        // 40×20: left half (10, 120, 250), right half (200, 30, 90). At size 8 the eval path shrinks the image to
        // 16×8 first; the crop path cuts the box from the 40×20 pixels, so each half comes out pure.
        BufferedImage img = new BufferedImage(40, 20, BufferedImage.TYPE_INT_RGB);
        for (int y = 0; y < 20; y++) {
            for (int x = 0; x < 40; x++) img.setRGB(x, y, x < 20 ? 10 << 16 | 120 << 8 | 250 : 200 << 16 | 30 << 8 | 90);
        }
        png(root.resolve("c/a.png"), img);
        ImageFolder folder = ImageFolder.open(root, 8, 3, NONE3);
        int[][] want = {{10, 120, 250}, {200, 30, 90}};
        for (int half = 0; half < 2; half++) {
            int left = 20 * half;
            float[] got = new float[3 * 64];
            int[] asked = new int[2];
            folder.copyImageCropped(0, (h, w) -> {
                asked[0] = h;
                asked[1] = w;
                return new RandomResizedCrop.Box(0, left, 20, 20);
            }, got, 0);
            assertArrayEquals(new int[] {20, 40}, asked, "the box is chosen on the decoded size");
            for (int c = 0; c < 3; c++) {
                for (int i = 0; i < 64; i++) assertClose(want[half][c] / 255.0, got[c * 64 + i], 1e-6, "half " + half);
            }
        }
        // Through a subset view the file's crop is the same.
        float[] viaView = new float[3 * 64], direct = new float[3 * 64];
        RandomResizedCrop.Box box = new RandomResizedCrop.Box(3, 7, 11, 25);
        ImageSources.subset(folder, new int[] {0}).copyImageCropped(0, (h, w) -> box, viaView, 0);
        folder.copyImageCropped(0, (h, w) -> box, direct, 0);
        assertArrayEquals(direct, viaView);
    }
}
