package org.distill4j.bench;

import java.awt.image.BufferedImage;
import java.io.IOException;
import java.lang.reflect.Method;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import javax.imageio.IIOImage;
import javax.imageio.ImageIO;
import javax.imageio.ImageReader;
import javax.imageio.ImageWriteParam;
import javax.imageio.ImageWriter;
import javax.imageio.stream.ImageInputStream;
import javax.imageio.stream.ImageOutputStream;
import org.distill4j.data.ImageDecoder;

/**
 * JPEG decoding speed on one thread, images/s per core, for the decoders on the classpath: the JDK's ImageIO reader,
 * TwelveMonkeys' ImageIO reader ({@code com.twelvemonkeys.imageio:imageio-jpeg}) and OpenCV's {@code imread}
 * (libjpeg-turbo, {@code org.bytedeco:opencv}); the last two are looked up by name, so this compiles and runs without
 * them and times only what is there. Also times our whole decode ({@link ImageDecoder}: ImageIO plus the planar float
 * conversion) and reports each decoder's pixel difference from the JDK's (JPEG decoders may round the IDCT and the
 * colour conversion differently).
 *
 * <p>The images: {@code count} 224×224 RGB JPEGs at quality 0.9, smooth gradients plus noise (about the entropy of a
 * photo), written by ImageIO into a temporary directory; each decoder reads the files (from the page cache).
 *
 * <pre>{@code java -cp <library classes>:<bench classes>[:imageio-jpeg jars][:opencv jars] \
 *     org.distill4j.bench.DecodeBench [count] [seconds]}</pre>
 */
public final class DecodeBench {
    private DecodeBench() {}

    interface Decoder {
        /** Decodes {@code file}; returns its pixels as interleaved RGB bytes (for the comparison) when asked. */
        int[] decode(Path file, boolean pixels) throws Exception;
    }

    public static void main(String[] args) throws Exception {
        int count = args.length > 0 ? Integer.parseInt(args[0]) : 64;
        double seconds = args.length > 1 ? Double.parseDouble(args[1]) : 3;
        Path dir = Files.createTempDirectory("decode-bench");
        try {
            List<Path> files = write(dir, count, 224, 224);
            long bytes = 0;
            for (Path f : files) bytes += Files.size(f);
            System.out.printf(Locale.ROOT, "%d JPEGs 224x224 q0.9, %.1f KiB on average; 1 thread, %s%n", count,
                    bytes / 1024.0 / count, System.getProperty("java.vm.name") + " " + Runtime.version());
            List<String> names = new ArrayList<>();
            List<Decoder> decoders = new ArrayList<>();
            ImageReader jdk = reader("com.sun.imageio.plugins.jpeg.");
            names.add("ImageIO (JDK)");
            decoders.add(imageIo(jdk));
            ImageReader twelve = reader("com.twelvemonkeys.");
            if (twelve != null) {
                names.add("TwelveMonkeys ImageIO");
                decoders.add(imageIo(twelve));
            } else {
                System.out.println("TwelveMonkeys imageio-jpeg: not on the classpath, skipped");
            }
            Decoder cv = openCv();
            if (cv != null) {
                names.add("OpenCV imread (libjpeg-turbo)");
                decoders.add(cv);
            } else {
                System.out.println("org.bytedeco:opencv: not on the classpath, skipped");
            }
            names.add("ImageDecoder (ImageIO + floats)");
            decoders.add((file, pixels) -> {
                ImageDecoder.decode(file);
                return null;
            });
            int[][] reference = new int[count][];
            for (int i = 0; i < count; i++) reference[i] = decoders.get(0).decode(files.get(i), true);
            for (int d = 0; d < decoders.size(); d++) {
                Decoder dec = decoders.get(d);
                String diff = "";
                if (d > 0 && d < decoders.size() - 1) {
                    long sum = 0, n = 0;
                    int max = 0;
                    for (int i = 0; i < count; i++) {
                        int[] px = dec.decode(files.get(i), true);
                        for (int k = 0; k < px.length; k++) {
                            int e = Math.abs(px[k] - reference[i][k]);
                            sum += e;
                            max = Math.max(max, e);
                            n++;
                        }
                    }
                    diff = String.format(Locale.ROOT, "  vs JDK: mean |diff| %.3f, max %d (of 255)", (double) sum / n,
                            max);
                }
                double[] rates = new double[3];
                for (Path f : files) dec.decode(f, false); // warm-up pass
                for (int r = 0; r < rates.length; r++) {
                    long t0 = System.nanoTime(), done = 0;
                    while (System.nanoTime() - t0 < seconds / rates.length * 1e9) {
                        dec.decode(files.get((int) (done % count)), false);
                        done++;
                    }
                    rates[r] = done / ((System.nanoTime() - t0) / 1e9);
                }
                Arrays.sort(rates);
                System.out.printf(Locale.ROOT, "%-34s %8.0f images/s (median of 3)%s%n", names.get(d), rates[1], diff);
            }
        } finally {
            try (var s = Files.list(dir)) {
                for (Path p : (Iterable<Path>) s::iterator) Files.delete(p);
            }
            Files.delete(dir);
        }
    }

    /** {@code count} RGB JPEGs of {@code width}×{@code height} at quality 0.9 in {@code dir}, named 0.jpg, 1.jpg... */
    static List<Path> write(Path dir, int count, int width, int height) throws IOException {
        List<Path> files = new ArrayList<>();
        Random rnd = new Random(17);
        ImageWriter writer = ImageIO.getImageWritersByFormatName("jpeg").next();
        ImageWriteParam p = writer.getDefaultWriteParam();
        p.setCompressionMode(ImageWriteParam.MODE_EXPLICIT);
        p.setCompressionQuality(0.9f);
        for (int i = 0; i < count; i++) {
            BufferedImage img = new BufferedImage(width, height, BufferedImage.TYPE_INT_RGB);
            double fx = 0.01 + rnd.nextDouble() * 0.05, fy = 0.01 + rnd.nextDouble() * 0.05, ph = rnd.nextDouble() * 6;
            for (int y = 0; y < height; y++) {
                for (int x = 0; x < width; x++) {
                    int r = clamp(128 + 90 * Math.sin(fx * x + ph) + rnd.nextGaussian() * 12);
                    int g = clamp(128 + 90 * Math.cos(fy * y + ph) + rnd.nextGaussian() * 12);
                    int b = clamp(128 + 60 * Math.sin(fx * x + fy * y) + rnd.nextGaussian() * 12);
                    img.setRGB(x, y, r << 16 | g << 8 | b);
                }
            }
            Path f = dir.resolve(i + ".jpg");
            try (ImageOutputStream out = ImageIO.createImageOutputStream(f.toFile())) {
                writer.setOutput(out);
                writer.write(null, new IIOImage(img, null, null), p);
            }
            files.add(f);
        }
        writer.dispose();
        return files;
    }

    private static int clamp(double v) {
        return (int) Math.max(0, Math.min(255, Math.round(v)));
    }

    private static ImageReader reader(String classPrefix) {
        for (Iterator<ImageReader> it = ImageIO.getImageReadersByFormatName("jpeg"); it.hasNext(); ) {
            ImageReader r = it.next();
            if (r.getClass().getName().startsWith(classPrefix)) return r;
        }
        return null;
    }

    private static Decoder imageIo(ImageReader reader) {
        return (file, pixels) -> {
            try (ImageInputStream in = ImageIO.createImageInputStream(file.toFile())) {
                reader.setInput(in, true, true);
                BufferedImage img = reader.read(0);
                reader.reset();
                if (!pixels) return null;
                int w = img.getWidth(), h = img.getHeight();
                int[] out = new int[3 * w * h];
                for (int c = 0; c < 3; c++) {
                    int[] band = img.getRaster().getSamples(0, 0, w, h, c, (int[]) null);
                    for (int i = 0; i < w * h; i++) out[3 * i + c] = band[i];
                }
                return out;
            }
        };
    }

    /** OpenCV's imread through the JavaCPP preset, by reflection (no compile-time dependency); null if absent. */
    private static Decoder openCv() {
        try {
            Class<?> codecs = Class.forName("org.bytedeco.opencv.global.opencv_imgcodecs");
            Class<?> core = Class.forName("org.bytedeco.opencv.global.opencv_core");
            core.getMethod("setNumThreads", int.class).invoke(null, 1);
            Method imread = codecs.getMethod("imread", String.class);
            return (file, pixels) -> {
                Object mat = imread.invoke(null, file.toString());
                try {
                    int rows = (int) mat.getClass().getMethod("rows").invoke(mat);
                    if (rows == 0) throw new IOException("OpenCV could not decode " + file);
                    if (!pixels) return null;
                    int cols = (int) mat.getClass().getMethod("cols").invoke(mat);
                    Object ptr = mat.getClass().getMethod("data").invoke(mat); // BytePointer, BGR interleaved
                    byte[] bgr = new byte[rows * cols * 3];
                    ptr.getClass().getMethod("get", byte[].class).invoke(ptr, (Object) bgr);
                    int[] out = new int[bgr.length];
                    for (int i = 0; i < rows * cols; i++) {
                        out[3 * i] = bgr[3 * i + 2] & 0xff;
                        out[3 * i + 1] = bgr[3 * i + 1] & 0xff;
                        out[3 * i + 2] = bgr[3 * i] & 0xff;
                    }
                    return out;
                } finally {
                    mat.getClass().getMethod("close").invoke(mat);
                }
            };
        } catch (ClassNotFoundException e) {
            return null;
        } catch (ReflectiveOperationException | LinkageError e) {
            Throwable t = e.getCause() != null ? e.getCause() : e;
            System.out.println("org.bytedeco:opencv: on the classpath but not loadable: " + t);
            return null;
        }
    }
}
